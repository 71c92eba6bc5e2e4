"""The built-in filters top_k, top_p, range and repetition, and temperature at its bounds, on hand-made distributions."""

import logging
from collections import deque

import numpy as np
import pytest

from sideman.encoding import Token
from sideman.errors import SettingsError
from sideman.plugins.filters import PitchRange, Repetition, TopK, TopP
from sideman.plugins.samplers import Greedy, Temperature
from sideman.sampling import SamplerChain, SamplerContext, build_chain
from sideman.engine import DEFAULT_REGISTRY
from sideman.vocabulary import Vocabulary
from tests.factories import small_vocabulary

VOCABULARY = small_vocabulary()  # C4-B4 in 6, 12 and 3 steps (indices 0-35), rests of 6, 12, 24 steps (36-38)
RESTS = [36, 37, 38]


def context(recent=(), vocabulary=VOCABULARY, seed=0) -> SamplerContext:
    return SamplerContext(vocabulary, np.random.default_rng(seed), deque(recent, maxlen=64))


def index(pitch, steps, vocabulary=VOCABULARY) -> int:
    return vocabulary.index_of(Token(pitch, steps))


def distribution(masses: dict[int, float], vocabulary=VOCABULARY) -> np.ndarray:
    """A float32 distribution with the given mass per index and zero elsewhere, normalised."""
    probabilities = np.zeros(len(vocabulary), dtype=np.float32)
    for position, mass in masses.items():
        probabilities[position] = mass
    return probabilities / probabilities.sum()


def kept(probabilities: np.ndarray) -> set[int]:
    return {int(position) for position in np.flatnonzero(probabilities > 0)}


# top_k

def test_top_k_keeps_k_notes_and_rests():
    probabilities = distribution({0: 0.4, 1: 0.3, 2: 0.2, 3: 0.05, 36: 0.05})

    filtered = TopK(k=2).reshape(probabilities.copy(), context())

    assert kept(filtered) == {0, 1, 36}
    assert filtered[0] == pytest.approx(probabilities[0])
    assert filtered[36] == pytest.approx(probabilities[36])


def test_top_k_rests_compete_when_told():
    probabilities = distribution({0: 0.1, 1: 0.2, 36: 0.7})

    filtered = TopK(k=1, rests=False).reshape(probabilities.copy(), context())

    assert kept(filtered) == {36}


def test_top_k_larger_than_vocabulary_keeps_all():
    probabilities = np.full(len(VOCABULARY), 1 / len(VOCABULARY), dtype=np.float32)

    filtered = TopK(k=10000).reshape(probabilities.copy(), context())

    np.testing.assert_array_equal(filtered, probabilities)


def test_top_k_of_one_with_greedy_is_argmax():
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.ones(len(VOCABULARY))).astype(np.float32)
    probabilities[RESTS] = 0.0

    chain = SamplerChain([TopK(k=1)], Temperature(value=5.0))

    assert {chain.choose(probabilities.copy(), context(seed=seed)) for seed in range(20)} == {int(np.argmax(probabilities))}


def test_top_k_rejects_zero():
    with pytest.raises(SettingsError, match="out of range"):
        TopK(k=0)


# top_p

def test_top_p_keeps_nucleus():
    probabilities = distribution({0: 0.5, 1: 0.3, 2: 0.15, 3: 0.05})

    assert kept(TopP(p=0.8).reshape(probabilities.copy(), context())) == {0, 1}
    assert kept(TopP(p=0.81).reshape(probabilities.copy(), context())) == {0, 1, 2}


def test_top_p_minimum_keeps_top_note():
    probabilities = distribution({0: 0.2, 1: 0.5, 2: 0.3})

    assert kept(TopP(p=0.01).reshape(probabilities.copy(), context())) == {1}


def test_top_p_one_keeps_everything():
    probabilities = distribution({0: 0.2, 1: 0.5, 2: 0.3, 37: 0.1})

    np.testing.assert_array_equal(TopP(p=1.0).reshape(probabilities.copy(), context()), probabilities)


def test_top_p_measures_notes_mass_and_keeps_rests():
    # Notes hold 0.5 of the mass: p = 0.5 of that is the first note alone.
    probabilities = distribution({0: 0.3, 1: 0.2, 36: 0.5})

    assert kept(TopP(p=0.5).reshape(probabilities.copy(), context())) == {0, 36}
    assert kept(TopP(p=0.5, rests=False).reshape(probabilities.copy(), context())) == {36}


def test_top_p_out_of_range_rejected():
    with pytest.raises(SettingsError, match="0.01 to 1.0"):
        TopP(p=0.0)


# range

def test_range_folds_by_octave_into_range():
    vocabulary = Vocabulary([Token(pitch, 12) for pitch in (48, 55, 60, 64, 67, 72, 79)] + [Token(None, 12)])
    probabilities = distribution({0: 0.25, 1: 0.25, 2: 0.1, 5: 0.2, 6: 0.1, 7: 0.1}, vocabulary)

    filtered = PitchRange(low=60, high=71).reshape(probabilities.copy(), context(vocabulary=vocabulary))

    # C3 and C5 fold onto C4, G3 and G5 onto G4; the rest keeps its mass.
    assert kept(filtered) == {2, 4, 7}
    assert filtered[2] == pytest.approx(0.25 + 0.1 + 0.2)
    assert filtered[4] == pytest.approx(0.25 + 0.1)
    assert filtered[7] == pytest.approx(0.1)
    assert filtered.sum() == pytest.approx(1.0)


def test_range_keeps_duration_when_folding():
    probabilities = distribution({index(71, 3): 1.0})

    filtered = PitchRange(low=60, high=66).reshape(probabilities.copy(), context())

    # B4 has no octave inside C4-F#4, so it moves to the nearest pitch of the same duration.
    assert kept(filtered) == {index(66, 3)}


def test_range_all_outside_without_any_target_keeps_rests():
    vocabulary = Vocabulary([Token(80, 6), Token(60, 12), Token(None, 12)])
    probabilities = distribution({0: 0.9, 2: 0.1}, vocabulary)

    filtered = PitchRange(low=55, high=65).reshape(probabilities.copy(), context(vocabulary=vocabulary))

    assert kept(filtered) == {2}


def test_range_logs_notes_it_cannot_fold(caplog):
    vocabulary = Vocabulary([Token(80, 6), Token(60, 12), Token(None, 12)])
    probabilities = distribution({0: 0.5, 1: 0.5}, vocabulary)
    range_filter = PitchRange(low=55, high=65)

    with caplog.at_level(logging.INFO, logger="sideman.plugins.filters"):
        range_filter.reshape(probabilities.copy(), context(vocabulary=vocabulary))
        range_filter.reshape(probabilities.copy(), context(vocabulary=vocabulary))

    removals = [record for record in caplog.records if "removed" in record.getMessage()]
    assert len(removals) == 1
    assert removals[0].levelno == logging.INFO
    assert "Ab5 of 6 steps" in removals[0].getMessage()


def test_range_low_above_high_swapped(caplog):
    probabilities = distribution({index(71, 6): 1.0})

    filtered = PitchRange(low=64, high=60).reshape(probabilities.copy(), context())

    # B4 has no octave inside C4-E4: it moves to the nearest pitch, E4.
    assert kept(filtered) == {index(64, 6)}
    assert "above range.high" in caplog.text


# repetition

def test_repetition_forbids_run_over_limit():
    c4 = index(60, 6)
    probabilities = distribution({c4: 0.9, index(60, 12): 0.05, index(62, 6): 0.05})

    filtered = Repetition(max_repeats=2, strength=0.0).reshape(probabilities.copy(), context([c4, c4]))

    assert kept(filtered) == {index(62, 6)}


def test_repetition_by_token_allows_other_duration():
    c4 = index(60, 6)
    probabilities = distribution({c4: 0.9, index(60, 12): 0.05, index(62, 6): 0.05})

    filtered = Repetition(max_repeats=2, by="token", strength=0.0).reshape(probabilities.copy(), context([c4, c4]))

    assert kept(filtered) == {index(60, 12), index(62, 6)}


def test_repetition_rests_do_not_break_run():
    c4 = index(60, 6)
    probabilities = distribution({c4: 0.9, index(62, 6): 0.1})

    filtered = Repetition(max_repeats=2, strength=0.0).reshape(probabilities.copy(), context([c4, 36, c4, 37]))

    assert kept(filtered) == {index(62, 6)}


def test_repetition_allows_run_below_limit():
    c4 = index(60, 6)
    probabilities = distribution({c4: 0.9, index(62, 6): 0.1})

    filtered = Repetition(max_repeats=3, strength=0.0).reshape(probabilities.copy(), context([c4, c4]))

    np.testing.assert_allclose(filtered, probabilities)


def test_repetition_damps_recent_notes():
    c4, d4, e4 = index(60, 6), index(62, 6), index(64, 6)
    probabilities = distribution({c4: 0.4, d4: 0.4, e4: 0.2})

    filtered = Repetition(max_repeats=8, strength=0.5, window=4).reshape(probabilities.copy(), context([c4, d4, c4, 36]))

    assert filtered[c4] == pytest.approx(probabilities[c4] * 0.25)
    assert filtered[d4] == pytest.approx(probabilities[d4] * 0.5)
    assert filtered[e4] == pytest.approx(probabilities[e4])


def test_repetition_window_bounds_damping():
    c4, d4 = index(60, 6), index(62, 6)
    probabilities = distribution({c4: 0.5, d4: 0.5})

    filtered = Repetition(max_repeats=8, strength=0.5, window=1).reshape(probabilities.copy(), context([c4, d4]))

    assert filtered[c4] == pytest.approx(probabilities[c4])
    assert filtered[d4] == pytest.approx(probabilities[d4] * 0.5)


def test_repetition_only_repeated_note_left_lifts_limit():
    vocabulary = Vocabulary([Token(60, 6), Token(62, 6)])
    probabilities = distribution({0: 1.0}, vocabulary)

    filtered = Repetition(max_repeats=1, strength=0.0).reshape(probabilities.copy(), context([0], vocabulary=vocabulary))

    assert kept(filtered) == {0}


def test_repetition_stops_greedy_locking():
    c4, d4 = index(60, 6), index(62, 6)
    # A model that always prefers C4: greedy alone would play C4 forever.
    probabilities = distribution({c4: 0.7, d4: 0.2, index(64, 6): 0.1})
    chain = SamplerChain([Repetition(max_repeats=2)], Greedy())
    played = context()

    for _ in range(30):
        played.recent.append(chain.choose(probabilities.copy(), played))

    longest = max(len(run) for run in "".join("x" if token == c4 else " " for token in played.recent).split())
    assert longest <= 2
    assert set(played.recent) != {c4}


# temperature at its bounds

def test_temperature_low_bound_sharpens():
    probabilities = distribution({0: 0.4, 1: 0.35, 2: 0.25})
    chooser = Temperature(value=0.05)
    rng_context = context(seed=5)

    draws = [chooser.choose(probabilities, rng_context) for _ in range(2000)]

    # p ** 20 normalised: 0.4 ** 20 / (0.4 ** 20 + 0.35 ** 20 + 0.25 ** 20) is about 0.935.
    assert 0.91 < draws.count(0) / len(draws) < 0.96
    assert draws.count(2) < 5


def test_temperature_high_bound_flattens():
    probabilities = distribution({0: 0.9, 1: 0.1})
    chooser = Temperature(value=5.0)
    rng_context = context(seed=4)

    draws = [chooser.choose(probabilities, rng_context) for _ in range(2000)]

    # p ** (1/5) normalised: 0.9 ** 0.2 / (0.9 ** 0.2 + 0.1 ** 0.2) is about 0.61.
    assert 0.55 < draws.count(0) / len(draws) < 0.67
    assert set(draws) == {0, 1}


@pytest.mark.parametrize("value", [0.049, 5.01])
def test_temperature_outside_bounds_rejected(value):
    with pytest.raises(SettingsError, match="0.05 to 5.0"):
        Temperature(value=value)


# chains

def test_chain_accepts_every_builtin_filter():
    chain = build_chain(["scale", "range", "repetition", "top_k", "top_p", "temperature"], DEFAULT_REGISTRY)

    assert chain.describe() == "scale range repetition top_k top_p temperature"


@pytest.mark.parametrize("names, reason", [
    (["top_p"], "must end with a chooser"),
    (["temperature", "top_p"], "must end with a chooser"),
    (["greedy", "temperature"], "can only come last"),
])
def test_chain_order_rule(names, reason):
    with pytest.raises(SettingsError, match=reason):
        build_chain(names, DEFAULT_REGISTRY)


def test_chain_never_produces_nan():
    # Every filter at its harshest on a distribution with all its mass on one note outside the range and scale.
    probabilities = distribution({index(61, 3): 1.0})
    chain = build_chain(
        ["scale", "range", "repetition", "top_k", "top_p", "temperature"], DEFAULT_REGISTRY,
        {"scale": {"key": "C major"}, "range": {"low": 60, "high": 60}, "repetition": {"max_repeats": 1, "strength": 1.0}, "top_k": {"k": 1}, "top_p": {"p": 0.01}},
    )

    for seed in range(5):
        token = chain.choose(probabilities.copy(), context([index(61, 3)], seed=seed))
        assert 0 <= token < len(VOCABULARY)
