"""The `scale` filter: keep notes in a key and mode, or in a key estimated from what was played.

Key estimation is the Krumhansl-Schmuckler algorithm: correlate a
duration-weighted pitch-class histogram with the Krumhansl-Kessler major
and minor key profiles rotated to all 12 tonics, and take the best of the
24 keys. Profiles from C. L. Krumhansl, "Cognitive Foundations of Musical
Pitch" (1990), table 2.1.
"""

import itertools
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from sideman.notenames import PITCH_CLASS_NAMES
from sideman.params import Param
from sideman.sampling import Filter, SamplerContext, nonempty_or_fallback
from sideman.vocabulary import Vocabulary

from .filters import MAX_WINDOW, PerVocabulary

logger = logging.getLogger(__name__)

AUTO = "auto"

KRUMHANSL_KESSLER_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KRUMHANSL_KESSLER_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)

# Semitones above the tonic of each mode's notes.
MODES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "ionian": (0, 2, 4, 5, 7, 9, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "natural minor": (0, 2, 3, 5, 7, 8, 10),
    "aeolian": (0, 2, 3, 5, 7, 8, 10),
    "locrian": (0, 1, 3, 5, 6, 8, 10),
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11),
    "melodic minor": (0, 2, 3, 5, 7, 9, 11),
    "pentatonic": (0, 2, 4, 7, 9),
    "major pentatonic": (0, 2, 4, 7, 9),
    "minor pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
    "major blues": (0, 2, 3, 4, 7, 9),
    "whole tone": (0, 2, 4, 6, 8, 10),
    "chromatic": tuple(range(12)),
}
# The scales `auto` keeps: major keys use the major scale, minor keys the natural minor.
AUTO_MODES = ("major", "minor")

_TONICS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


@dataclass(frozen=True)
class Key:
    """A tonic pitch class (0 = C) and a mode name from MODES."""

    tonic: int
    mode: str

    @property
    def pitch_classes(self) -> tuple[int, ...]:
        return tuple(sorted((self.tonic + step) % 12 for step in MODES[self.mode]))

    def __str__(self) -> str:
        return f"{PITCH_CLASS_NAMES[self.tonic]} {self.mode}"


def parse_key(text: str) -> Key | None:
    """Parse "F dorian", "Bb major", "C# harmonic minor" or "C" (major); "auto" gives None.

    Raises ValueError naming the accepted tonics and modes.
    """
    words = text.strip().replace("-", " ").replace("_", " ").split()
    if len(words) == 1 and words[0].lower() == AUTO:
        return None
    if not words:
        raise ValueError('expected a key such as "F dorian" or "Bb major", or "auto"')

    tonic_text, mode_words = words[0], words[1:]
    letter, accidentals = tonic_text[:1].upper(), tonic_text[1:]
    if letter not in _TONICS or any(sign not in "#b" for sign in accidentals):
        raise ValueError(f"unknown tonic {tonic_text!r}: expected a letter A-G with optional # or b, e.g. F#, Bb")
    tonic = (_TONICS[letter] + accidentals.count("#") - accidentals.count("b")) % 12

    mode = " ".join(word.lower() for word in mode_words) or "major"
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    return Key(tonic, mode)


def _rotated_profiles() -> np.ndarray:
    """Build the 24 key profiles (12 major tonics, then 12 minor), each centered and scaled to unit length."""
    rows = []
    for profile in (KRUMHANSL_KESSLER_MAJOR, KRUMHANSL_KESSLER_MINOR):
        for tonic in range(12):
            rows.append(np.roll(np.asarray(profile), tonic))
    profiles = np.array(rows)
    profiles -= profiles.mean(axis=1, keepdims=True)
    profiles /= np.linalg.norm(profiles, axis=1, keepdims=True)
    return profiles


PROFILES = _rotated_profiles()


def estimate_key(histogram: Sequence[float]) -> Key | None:
    """Return the key whose profile correlates best with a 12-bin pitch-class histogram; None when it is flat or empty."""
    if max(histogram) == min(histogram):
        return None
    # Each profile row is centered and of unit length, so this product is the Pearson
    # correlation times the histogram's spread, which is the same for all 24 keys.
    best = int(np.argmax(PROFILES @ np.asarray(histogram, dtype=np.float64)))
    return Key(best % 12, AUTO_MODES[best // 12])


def pitch_class_histogram(pitches: Iterable[int | None], durations: Iterable[float]) -> np.ndarray:
    """Duration-weighted pitch-class histogram of notes given as MIDI pitches (None for rests, skipped)."""
    histogram = np.zeros(12)
    for pitch, duration in zip(pitches, durations):
        if pitch is not None:
            histogram[pitch % 12] += duration
    return histogram


@dataclass(frozen=True)
class ScaleTables:
    """Per vocabulary: each token's pitch class (12 for rests) and duration, and one weight row per key."""

    pitch_class_list: list[int]  # 12 for a rest
    step_list: list[int]  # grid steps
    # Factor per token for each scale: 1 in the scale and for rests, `passing` outside.
    weights: np.ndarray  # (number of keys, vocabulary size)
    keys: tuple[Key, ...]


def build_tables(vocabulary: Vocabulary, key: Key | None, passing: float) -> ScaleTables:
    keys = (key,) if key is not None else tuple(Key(tonic, mode) for mode in AUTO_MODES for tonic in range(12))
    pitch_classes = np.where(vocabulary.rest_mask, 12, vocabulary.pitches % 12).astype(np.intp)

    weights = np.empty((len(keys), len(vocabulary)))
    for row, scale_key in enumerate(keys):
        in_scale = np.zeros(13, dtype=bool)
        in_scale[list(scale_key.pitch_classes)] = True
        in_scale[12] = True  # rests keep their mass
        weights[row] = np.where(in_scale[pitch_classes], 1.0, passing)
    return ScaleTables(pitch_classes.tolist(), vocabulary.steps.tolist(), weights, keys)


class Scale(Filter):
    """Keep the notes of a key and mode; chromatic passing notes keep a share of their mass."""

    name = "scale"
    help = 'keep notes in a key, e.g. "F dorian", "Bb major", "C blues", or "auto" to follow the key of the seed phrase or the musician\'s live phrase'
    params = (
        Param("key", str, AUTO, f'tonic and mode, e.g. "F dorian" or "A harmonic minor", or "auto"; modes: {", ".join(MODES)}', check=parse_key),
        Param("passing", float, 0.0, "share of its mass a note outside the scale keeps (chromatic passing notes); 0 removes them", low=0.0, high=1.0),
        Param("window", int, 32, "auto: how many recent tokens the key estimate looks at while the seed phrase has fewer than min_notes notes", low=1, high=MAX_WINDOW),
        Param("min_notes", int, 4, "auto: notes needed before the key is estimated; until then every note passes", low=1, high=MAX_WINDOW),
    )

    def __init__(self, **values: Any):
        super().__init__(**values)
        self._tables = PerVocabulary(lambda vocabulary, key_text, passing: build_tables(vocabulary, parse_key(key_text), passing))
        self.current_key: Key | None = None
        # The histogram of the seed phrase, rebuilt when the context contains another phrase.
        self._seed_tokens: tuple[int, ...] | None = None
        self._seed_histogram = [0.0] * 12
        self._seed_notes = 0

    def reshape(self, probabilities: np.ndarray, context: SamplerContext) -> np.ndarray:
        tables = self._tables.get(context.vocabulary, self.values["key"], self.values["passing"])
        if len(tables.keys) == 1:
            row = 0
        else:
            row = self._estimate_row(tables, context)
            if row is None:
                return probabilities

        key = tables.keys[row]
        if key != self.current_key:
            logger.debug("scale: playing in %s", key)
            self.current_key = key
        filtered = probabilities * tables.weights[row]
        return nonempty_or_fallback(filtered, probabilities, context, self.name)

    def _estimate_row(self, tables: ScaleTables, context: SamplerContext) -> int | None:
        """Return the row of the key estimated from the seed phrase, or with a short seed also the recent tokens; None with too few notes.

        A seed phrase (a primed phrase, or the musician's phrase in a live
        mode) of `min_notes` notes or more decides alone: sideman's own notes,
        already filtered into the key, would otherwise pull the estimate
        towards a neighbouring key they happen to fit too, and the line would
        drift away from the musician's key.
        """
        if context.seed_tokens is not self._seed_tokens:
            self._seed_tokens = context.seed_tokens
            self._seed_histogram, self._seed_notes = _histogram(tables, context.seed_tokens)
        if self._seed_notes >= self.values["min_notes"]:
            key = estimate_key(self._seed_histogram)
            return None if key is None else AUTO_MODES.index(key.mode) * 12 + key.tonic

        recent_histogram, recent_notes = _histogram(tables, itertools.islice(reversed(context.recent), self.values["window"]))
        if self._seed_notes + recent_notes < self.values["min_notes"]:
            return None

        key = estimate_key([seed + recent for seed, recent in zip(self._seed_histogram, recent_histogram)])
        if key is None:
            return None
        return AUTO_MODES.index(key.mode) * 12 + key.tonic


def _histogram(tables: ScaleTables, indices: Iterable[int]) -> tuple[list[float], int]:
    """Duration-weighted pitch-class histogram of token indices, and the number of notes among them."""
    # A plain loop: for the few dozen tokens of a window it is faster than numpy's per-call cost.
    bins = [0.0] * 13
    notes = 0
    pitch_classes = tables.pitch_class_list
    steps = tables.step_list
    for index in indices:
        pitch_class = pitch_classes[index]
        bins[pitch_class] += steps[index]
        notes += pitch_class < 12
    return bins[:12], notes
