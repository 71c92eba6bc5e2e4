import numpy as np

from sideman.stepper import Stepper
from tests.factories import random_bundle


def reference_step(weights, token, a, c):
    """The LSTM equations written out plainly, in Keras's gate order i, f, c, o."""
    n_a = weights.n_a
    x = np.zeros(weights.vocabulary_size)
    if token is not None:
        x[token] = 1.0
    z = x @ weights.kernel + a @ weights.recurrent_kernel + weights.bias
    sigmoid = lambda v: 1 / (1 + np.exp(-v))
    i, f, g, o = sigmoid(z[:n_a]), sigmoid(z[n_a:2 * n_a]), np.tanh(z[2 * n_a:3 * n_a]), sigmoid(z[3 * n_a:])
    c = f * c + i * g
    a = o * np.tanh(c)
    logits = a @ weights.dense_kernel + weights.dense_bias
    probabilities = np.exp(logits - logits.max())
    return probabilities / probabilities.sum(), a, c


def test_stepper_matches_lstm_equations():
    bundle = random_bundle(n_a=16, seed=3)
    stepper = Stepper(bundle.weights)
    a = np.zeros(16)
    c = np.zeros(16)

    for token in [None, 4, 17, 0, 35, 35, 2]:
        expected, a, c = reference_step(bundle.weights, token, a, c)
        probabilities = stepper.step(token)
        np.testing.assert_allclose(probabilities, expected, atol=1e-6)
        np.testing.assert_allclose(stepper.a, a, atol=1e-6)


def test_snapshot_restore_and_reset():
    stepper = Stepper(random_bundle().weights)
    stepper.step(None)
    snapshot = stepper.snapshot()
    first = stepper.step(3)

    stepper.restore(snapshot)
    again = stepper.step(3)
    stepper.reset()

    np.testing.assert_array_equal(first, again)
    assert not stepper.a.any()
    assert not stepper.c.any()


def test_probabilities_sum_to_one():
    stepper = Stepper(random_bundle(scale=5.0).weights)

    probabilities = stepper.step(None)

    assert abs(probabilities.sum() - 1.0) < 1e-5
    assert (probabilities >= 0).all()


def test_logits_weights_and_probabilities_agree():
    stepper = Stepper(random_bundle(scale=3.0).weights)
    stepper.advance(None)
    snapshot = stepper.snapshot()

    logits = stepper.logits().copy()
    stepper.restore(snapshot)
    weights = stepper.weights(0.5).copy()
    stepper.restore(snapshot)
    probabilities = stepper.probabilities()

    np.testing.assert_allclose(weights / weights.sum(), np.exp(0.5 * logits) / np.exp(0.5 * logits).sum(), rtol=1e-5)
    np.testing.assert_allclose(probabilities, np.exp(logits) / np.exp(logits).sum(), rtol=1e-5)
    assert int(logits.argmax()) == int(probabilities.argmax())


def test_cached_gates_match_a_fresh_step():
    # advance() reuses the gates of the last logits() call; after a restore it computes them itself.
    stepper = Stepper(random_bundle().weights)
    stepper.advance(None)
    snapshot = stepper.snapshot()
    stepper.logits()
    stepper.advance(5)
    cached = stepper.a.copy()

    stepper.restore(snapshot)
    stepper.advance(5)

    np.testing.assert_array_equal(stepper.a, cached)
