"""Gumbel noise: the Gumbel-max draw's distribution, and rows that depend only on the seed and their index."""

from collections import deque

import numpy as np
import pytest

from sideman.gumbel import GumbelNoise
from sideman.improviser import Improviser
from sideman.sampling import SamplerChain, SamplerContext
from sideman.vocabulary import Vocabulary
from sideman.encoding import Token
from plugins.samplers import Temperature
from tests.factories import random_bundle

SIZE = 12
DRAWS = 60_000
EULER_GAMMA = 0.5772156649


def rows(noise: GumbelNoise, count: int, prepare: bool = False) -> list[np.ndarray]:
    drawn_rows = []
    for _ in range(count):
        if prepare:
            noise.prepare()
        drawn_rows.append(noise.next_row().copy())
    return drawn_rows


def test_noise_is_standard_gumbel():
    noise = GumbelNoise(768, seed=1)
    values = np.concatenate(rows(noise, 200))

    assert np.isfinite(values).all()
    assert values.mean() == pytest.approx(EULER_GAMMA, abs=0.01)
    assert values.var() == pytest.approx(np.pi ** 2 / 6, rel=0.02)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_temperature_draws_follow_softmax(temperature):
    logits = np.random.default_rng(4).normal(scale=1.5, size=SIZE).astype(np.float32)
    vocabulary = Vocabulary([Token(60 + index, 1) for index in range(SIZE)])
    context = SamplerContext(vocabulary, np.random.default_rng(0), deque(maxlen=64), noise=GumbelNoise(SIZE, seed=2))
    chooser = Temperature()
    chooser.set_param("value", temperature)

    counts = np.bincount([chooser.choose_logits(logits, context) for _ in range(DRAWS)], minlength=SIZE)

    expected = np.exp(logits / temperature - np.max(logits / temperature))
    expected = expected / expected.sum() * DRAWS
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    # 11 degrees of freedom: a correct sampler exceeds 31.3 with probability 0.1 %.
    assert chi_square < 31.3
    assert np.abs(counts / DRAWS - expected / DRAWS).max() < 0.01


def test_temperature_without_noise_draws_from_softmax():
    logits = np.array([0.0, 50.0, 0.0], dtype=np.float32)
    vocabulary = Vocabulary([Token(60 + index, 1) for index in range(3)])
    context = SamplerContext(vocabulary, np.random.default_rng(0))

    assert Temperature().choose_logits(logits, context) == 1


def test_rows_same_with_and_without_prepare():
    prepared = rows(GumbelNoise(SIZE, seed=3, block_rows=4), 30, prepare=True)
    unprepared = rows(GumbelNoise(SIZE, seed=3, block_rows=4), 30)

    for with_prepare, without in zip(prepared, unprepared):
        np.testing.assert_array_equal(with_prepare, without)


def test_rewind_across_blocks_repeats_rows():
    noise = GumbelNoise(SIZE, seed=3, block_rows=4)
    first = rows(noise, 30, prepare=True)

    # Back across a block boundary, then back to blocks that prepare has dropped.
    noise.position = 3
    again_near = rows(noise, 6, prepare=True)
    noise.position = 20
    rows(noise, 5, prepare=True)
    noise.position = 1
    again_far = rows(noise, 2)

    for index, row in enumerate(again_near):
        np.testing.assert_array_equal(row, first[3 + index])
    for index, row in enumerate(again_far):
        np.testing.assert_array_equal(row, first[1 + index])


def test_prepare_keeps_at_most_three_blocks():
    noise = GumbelNoise(SIZE, seed=3, block_rows=4)
    for _ in range(40):
        noise.prepare()
        noise.next_row()

    assert len(noise._blocks) <= 3


def test_reseed_starts_over():
    noise = GumbelNoise(SIZE, seed=5)
    rows(noise, 20)
    noise.reseed(6)
    reseeded = rows(noise, 20)
    fresh = rows(GumbelNoise(SIZE, seed=6), 20)
    other_seed = rows(GumbelNoise(SIZE, seed=5), 1)

    for row, fresh_row in zip(reseeded, fresh):
        np.testing.assert_array_equal(row, fresh_row)
    assert not np.array_equal(reseeded[0], other_seed[0])


def test_rows_are_read_only():
    noise = GumbelNoise(SIZE, seed=5)
    row = noise.next_row()

    with pytest.raises(ValueError):
        row[0] = 0.0


def improviser_tokens(prepare_every: int | None, count: int = 80) -> list[int]:
    improviser = Improviser(random_bundle(scale=2.0), SamplerChain([], Temperature()), 8)
    tokens = []
    for index in range(count):
        if prepare_every is not None and index % prepare_every == 0:
            improviser.prepare()
        tokens.append(improviser.draw())
    return tokens


def test_prepare_does_not_change_tokens():
    unprepared = improviser_tokens(None)

    assert improviser_tokens(1) == unprepared
    assert improviser_tokens(7) == unprepared


def test_rollback_repeats_draw():
    improviser = Improviser(random_bundle(scale=2.0), SamplerChain([], Temperature()), 8)
    for _ in range(15):
        improviser.draw()
        improviser.prepare()
    checkpoint = improviser.checkpoint()
    ahead = [improviser.draw() for _ in range(5)]

    improviser.prepare()
    improviser.rollback(checkpoint)

    assert [improviser.draw() for _ in range(5)] == ahead
