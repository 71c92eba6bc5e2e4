"""The daemon's numpy stepping against the notebook's Keras models (needs TensorFlow)."""

import numpy as np
import pytest

from sideman.improviser import Improviser
from sideman.plugins.samplers import Greedy
from sideman.sampling import SamplerChain
from tests.factories import random_bundle

pytestmark = pytest.mark.tensorflow
tensorflow = pytest.importorskip("tensorflow")

from sideman.reference import djmodel, music_inference_model, notebook_layers  # noqa: E402
from sideman.training import build_sequence_model  # noqa: E402


def test_greedy_stepping_matches_music_inference_model():
    bundle = random_bundle(n_a=16, seed=5, scale=2.0)
    lstm_cell, densor, _ = notebook_layers(bundle.weights)
    ty = 40
    model = music_inference_model(lstm_cell, densor, ty)
    size = len(bundle.vocabulary)

    outputs = model.predict([np.zeros((1, 1, size)), np.zeros((1, 16)), np.zeros((1, 16))], verbose=0)
    expected_tokens = [int(np.argmax(output[0])) for output in outputs]

    improviser = Improviser(bundle, SamplerChain([], Greedy()), seed=0)
    tokens = []
    for output in outputs:
        probabilities = improviser.stepper.step(improviser.last_token)
        np.testing.assert_allclose(probabilities, output[0], atol=1e-5)
        improviser.last_token = int(np.argmax(probabilities))
        tokens.append(improviser.last_token)

    assert tokens == expected_tokens
    assert len(set(tokens)) > 1


def test_improviser_greedy_draws_match_reference():
    bundle = random_bundle(n_a=12, seed=8, scale=2.0)
    lstm_cell, densor, _ = notebook_layers(bundle.weights)
    size = len(bundle.vocabulary)
    outputs = music_inference_model(lstm_cell, densor, 25).predict([np.zeros((1, 1, size)), np.zeros((1, 12)), np.zeros((1, 12))], verbose=0)

    improviser = Improviser(bundle, SamplerChain([], Greedy()), seed=0)

    assert [improviser.draw() for _ in range(25)] == [int(np.argmax(output[0])) for output in outputs]


def test_sequence_model_matches_unrolled_djmodel():
    bundle = random_bundle(n_a=10, seed=2)
    tx = 12
    size = len(bundle.vocabulary)
    lstm_cell, densor, reshaper = notebook_layers(bundle.weights)
    unrolled = djmodel(tx, lstm_cell, densor, reshaper)

    sequence_model = build_sequence_model(10, size, tx)
    sequence_model.get_layer("LSTM_cell").set_weights([bundle.weights.kernel, bundle.weights.recurrent_kernel, bundle.weights.bias])
    sequence_model.get_layer("densor").set_weights([bundle.weights.dense_kernel, bundle.weights.dense_bias])

    rng = np.random.default_rng(0)
    indices = rng.integers(0, size, size=(4, tx)).astype(np.int32)
    indices[:, 0] = -1
    one_hot = np.zeros((4, tx, size), dtype=np.float32)
    for row in range(4):
        for t in range(1, tx):
            one_hot[row, t, indices[row, t]] = 1.0

    expected = np.stack(unrolled.predict([one_hot, np.zeros((4, 10)), np.zeros((4, 10))], verbose=0), axis=1)
    actual = sequence_model.predict(indices, verbose=0)

    np.testing.assert_allclose(actual, expected, atol=1e-5)
