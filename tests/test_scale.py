"""The scale filter: key names, Krumhansl-Schmuckler key estimation, fixed and automatic keys."""

from collections import deque

import numpy as np
import pytest

from sideman.encoding import Token
from sideman.errors import SettingsError
from sideman.plugins.scale import Key, Scale, estimate_key, parse_key, pitch_class_histogram
from sideman.sampling import SamplerContext
from sideman.seeding import parse_phrase
from sideman.vocabulary import Vocabulary

# Every pitch from C4 to B5 as an eighth (6 steps), plus one rest.
VOCABULARY = Vocabulary([Token(pitch, 6) for pitch in range(60, 84)] + [Token(None, 12)])
REST = len(VOCABULARY) - 1


def context(recent=(), seed_tokens=()) -> SamplerContext:
    return SamplerContext(VOCABULARY, np.random.default_rng(0), deque(recent, maxlen=64), seed_tokens=tuple(seed_tokens))


def uniform() -> np.ndarray:
    return np.full(len(VOCABULARY), 1 / len(VOCABULARY), dtype=np.float32)


def kept_pitch_classes(probabilities: np.ndarray) -> set[int]:
    return {int(VOCABULARY.pitches[position]) % 12 for position in np.flatnonzero(probabilities > 0) if position != REST}


def estimate_phrase(text: str) -> Key | None:
    pairs = parse_phrase(text)
    return estimate_key(pitch_class_histogram([pitch for pitch, _ in pairs], [beats for _, beats in pairs]))


# Key names

@pytest.mark.parametrize("text, tonic, pitch_classes", [
    ("F dorian", 5, {5, 7, 8, 10, 0, 2, 3}),
    ("Bb major", 10, {10, 0, 2, 3, 5, 7, 9}),
    ("C blues", 0, {0, 3, 5, 6, 7, 10}),
    ("A minor", 9, {9, 11, 0, 2, 4, 5, 7}),
    ("A harmonic minor", 9, {9, 11, 0, 2, 4, 5, 8}),
    ("a melodic-minor", 9, {9, 11, 0, 2, 4, 6, 8}),
    ("G mixolydian", 7, {7, 9, 11, 0, 2, 4, 5}),
    ("E phrygian", 4, {4, 5, 7, 9, 11, 0, 2}),
    ("F lydian", 5, {5, 7, 9, 11, 0, 2, 4}),
    ("B locrian", 11, {11, 0, 2, 4, 5, 7, 9}),
    ("D minor pentatonic", 2, {2, 5, 7, 9, 0}),
    ("C# pentatonic", 1, {1, 3, 5, 8, 10}),
    ("Eb", 3, {3, 5, 7, 8, 10, 0, 2}),
])
def test_parse_key(text, tonic, pitch_classes):
    key = parse_key(text)

    assert key.tonic == tonic
    assert set(key.pitch_classes) == pitch_classes


def test_parse_key_auto():
    assert parse_key(" Auto ") is None


@pytest.mark.parametrize("text, reason", [("H major", "unknown tonic"), ("C majestic", "unknown mode"), ("", "expected a key"), ("C# x", "unknown mode")])
def test_parse_key_rejects(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_key(text)


def test_invalid_key_setting_names_parameter():
    with pytest.raises(SettingsError, match=r"scale\.key.*unknown mode 'majestic'"):
        Scale(key="C majestic")


# Key estimation

@pytest.mark.parametrize("phrase, expected", [
    ("C4:1 D4:0.5 E4:0.5 F4:0.5 G4:1 A4:0.5 B4:0.5 C5:2 G4:1 E4:1 C4:2", "C major"),
    ("A4:2 B4:0.5 C5:1 D5:0.5 E5:1 C5:0.5 A4:2 E4:1 G#4:0.5 A4:2", "A minor"),
    ("F4:1 A4:0.5 C5:0.5 Bb4:1 A4:0.5 G4:0.5 F4:2 C5:1 F4:2", "F major"),
    ("G4:2 Bb4:1 D5:1 C5:0.5 Bb4:0.5 A4:1 F#4:0.5 G4:2 D4:1 G4:2", "G minor"),
    ("E4:1 F#4:0.5 G#4:0.5 A4:1 B4:1 C#5:0.5 D#5:0.5 E5:2 B4:1 E4:2", "E major"),
])
def test_estimate_key_of_known_phrases(phrase, expected):
    assert str(estimate_phrase(phrase)) == expected


def test_estimate_key_weights_durations():
    # The same notes; long C, E, G make it C major, long A, C, E make it A minor.
    assert str(estimate_phrase("C4:4 E4:4 G4:4 A4:0.25 C5:0.25")) == "C major"
    assert str(estimate_phrase("A4:4 C5:4 E5:4 G4:0.25 A4:0.25 B4:0.25 G#4:1")) == "A minor"


def test_estimate_key_of_nothing_is_none():
    assert estimate_key([0.0] * 12) is None


# Fixed key

def test_fixed_key_keeps_scale_and_rests():
    filtered = Scale(key="F dorian").reshape(uniform(), context())

    assert kept_pitch_classes(filtered) == set(parse_key("F dorian").pitch_classes)
    assert filtered[REST] == pytest.approx(1 / len(VOCABULARY))


def test_passing_notes_keep_their_share():
    probabilities = uniform()

    filtered = Scale(key="C major", passing=0.25).reshape(probabilities.copy(), context())

    c_sharp = VOCABULARY.index_of(Token(61, 6))
    c = VOCABULARY.index_of(Token(60, 6))
    assert filtered[c_sharp] == pytest.approx(probabilities[c_sharp] * 0.25)
    assert filtered[c] == pytest.approx(probabilities[c])


def test_all_mass_outside_scale_keeps_rests():
    probabilities = np.zeros(len(VOCABULARY), dtype=np.float32)
    probabilities[VOCABULARY.index_of(Token(61, 6))] = 0.9
    probabilities[REST] = 0.1

    filtered = Scale(key="C major").reshape(probabilities.copy(), context())

    assert np.flatnonzero(filtered > 0).tolist() == [REST]


def test_all_mass_outside_scale_without_rests_falls_back(caplog):
    probabilities = np.zeros(len(VOCABULARY), dtype=np.float32)
    probabilities[VOCABULARY.index_of(Token(61, 6))] = 1.0

    with caplog.at_level("DEBUG", logger="sideman.sampling"):
        filtered = Scale(key="C major").reshape(probabilities.copy(), context())

    np.testing.assert_array_equal(filtered, probabilities)
    assert "unfiltered" in caplog.text


# Automatic key

def phrase_indices(text: str) -> list[int]:
    return [VOCABULARY.index_of(Token(pitch, round(beats * 12))) for pitch, beats in parse_phrase(text)]


def test_auto_follows_seed_phrase():
    seed = phrase_indices("G4:1 Bb4:1 D5:1 G4:1 Bb4:1 C5:1 D5:1 G4:1 D4:1 F#4:1 G4:1")
    scale = Scale(key="auto")

    filtered = scale.reshape(uniform(), context(seed_tokens=seed))

    # Every note of the vocabulary is an eighth, so the estimate counts pitch classes only: G minor.
    assert str(scale.current_key) == "G minor"
    assert kept_pitch_classes(filtered) == set(Key(7, "minor").pitch_classes)


def test_auto_moves_to_key_of_new_phrase():
    scale = Scale(key="auto")
    scale.reshape(uniform(), context(seed_tokens=phrase_indices("G4:1 Bb4:1 D5:1 G4:1 Bb4:1 C5:1 D5:1 G4:1 D4:1 F#4:1 G4:1")))

    filtered = scale.reshape(uniform(), context(seed_tokens=phrase_indices("E4:1 G#4:1 B4:1 E5:1 F#4:1 A4:1 C#5:1 D#5:1 E4:1")))

    assert str(scale.current_key) == "E major"
    assert kept_pitch_classes(filtered) == set(Key(4, "major").pitch_classes)


def test_auto_follows_recent_notes():
    scale = Scale(key="auto", window=8)
    recent = phrase_indices("E4:1 G#4:1 B4:1 E5:1 F#4:1 A4:1 C#5:1 E4:1")

    scale.reshape(uniform(), context(recent=recent))

    assert str(scale.current_key) == "E major"


def test_auto_waits_for_enough_notes():
    scale = Scale(key="auto", min_notes=4)
    probabilities = uniform()

    filtered = scale.reshape(probabilities.copy(), context(recent=phrase_indices("C4:1 E4:1 G4:1")))

    np.testing.assert_array_equal(filtered, probabilities)
    assert scale.current_key is None

