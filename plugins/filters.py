"""Built-in filters: top_k, top_p, range and repetition.

Each filter works on the whole vocabulary at once with numpy, reading the
vocabulary's `pitches`, `steps` and `rest_mask` arrays. What depends only on
the vocabulary and the parameters is built once (`PerVocabulary`), because
the whole step has a budget of about 50 microseconds. Rest tokens
keep their mass unless a filter's `rests` parameter says otherwise, so a
filter never forces a line to play on without breathing.
"""

import itertools
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Generic, Hashable, TypeVar

import numpy as np

from sideman.notenames import pitch_name
from sideman.params import Param
from sideman.sampling import Filter, SamplerContext, nonempty_or_fallback
from sideman.vocabulary import Vocabulary

logger = logging.getLogger(__name__)

# Upper bound of a declared count over the vocabulary; the schema allows vocabularies up to this size.
MAX_VOCABULARY = 10000
# The improviser keeps this many recent tokens (improviser.RECENT_TOKENS).
MAX_WINDOW = 64
DROPPED_NAMES = 8  # notes named in the range filter's log line; the rest are counted

Cached = TypeVar("Cached")


class PerVocabulary(Generic[Cached]):
    """One value computed from a vocabulary and some parameter values, rebuilt only when either changes."""

    def __init__(self, build: Callable[..., Cached]):
        self._build = build
        self._vocabulary: Vocabulary | None = None
        self._key: Hashable = None
        self._value: Cached | None = None

    def get(self, vocabulary: Vocabulary, *key: Hashable) -> Cached:
        if vocabulary is not self._vocabulary or key != self._key:
            self._value = self._build(vocabulary, *key)
            self._vocabulary = vocabulary
            self._key = key
        return self._value


def rests_param(help: str = "keep every rest token's mass (false: rests are filtered like notes)") -> Param:
    return Param("rests", bool, True, help)


def note_weights(vocabulary: Vocabulary) -> np.ndarray:
    """1.0 for each note token and 0.0 for each rest: multiplying by it hides the rests from a ranking."""
    return (~vocabulary.rest_mask).astype(np.float32)


class TopK(Filter):
    """Keep the k most probable notes."""

    name = "top_k"
    help = "keep only the k most probable notes (rests keep their mass)"
    params = (
        Param("k", int, 10, "how many notes to keep (tokens, when rests is false); notes tied at the k-th place are all kept; more than there are keeps all", low=1, high=MAX_VOCABULARY),
        rests_param("keep every rest token's mass (false: rests compete for the k places like notes)"),
    )

    def __init__(self, **values: Any):
        super().__init__(**values)
        self._note_weights = PerVocabulary(note_weights)

    def reshape(self, probabilities: np.ndarray, context: SamplerContext) -> np.ndarray:
        k = self.values["k"]
        keep_rests = self.values["rests"]
        vocabulary = context.vocabulary
        # Rests that keep their mass do not compete: they rank as zero and are added back below.
        ranked = probabilities * self._note_weights.get(vocabulary) if keep_rests else probabilities
        candidates = len(vocabulary) - int(np.count_nonzero(vocabulary.rest_mask)) if keep_rests else len(vocabulary)
        if k >= candidates:
            return probabilities

        # np.partition is about twice as fast as argpartition; the threshold keeps ties at the k-th place.
        threshold = np.partition(ranked, -k)[-k]
        return _keep_from_threshold(self.name, probabilities, ranked, threshold, keep_rests, context)


def _keep_from_threshold(name: str, probabilities: np.ndarray, ranked: np.ndarray, threshold: float, keep_rests: bool, context: SamplerContext) -> np.ndarray:
    """Zero every token ranked below `threshold`, rests excepted when `keep_rests`; ties at the threshold stay."""
    keep = ranked >= threshold
    if keep_rests:
        keep |= context.vocabulary.rest_mask
    filtered = np.where(keep, probabilities, 0.0)
    return nonempty_or_fallback(filtered, probabilities, context, name)


class TopP(Filter):
    """Nucleus sampling: keep the smallest set of most probable notes whose mass is share p of the notes' mass."""

    name = "top_p"
    help = "keep the most probable notes that together hold share p of the notes' mass (nucleus sampling)"
    params = (
        Param("p", float, 0.9, "share of the mass to keep, from the most probable note down; notes tied at the edge are all kept; 1.0 keeps everything", low=0.01, high=1.0),
        rests_param("keep every rest token's mass (false: rests join the nucleus like notes)"),
    )

    def __init__(self, **values: Any):
        super().__init__(**values)
        self._note_weights = PerVocabulary(note_weights)

    def reshape(self, probabilities: np.ndarray, context: SamplerContext) -> np.ndarray:
        p = self.values["p"]
        if p >= 1.0:
            return probabilities
        keep_rests = self.values["rests"]
        vocabulary = context.vocabulary

        ranked = probabilities * self._note_weights.get(vocabulary) if keep_rests else probabilities
        descending = np.sort(ranked)[::-1]
        cumulative = np.cumsum(descending)
        total = float(cumulative[-1])
        if not total > 0.0:
            return probabilities
        # The nucleus ends at the first token whose cumulative mass reaches p, that token included.
        last = min(int(np.searchsorted(cumulative, p * total, side="left")), len(descending) - 1)
        threshold = descending[last]
        return _keep_from_threshold(self.name, probabilities, ranked, threshold, keep_rests, context)


class PitchRange(Filter):
    """Keep notes between two pitches; a note outside moves its mass to the same pitch class inside."""

    name = "range"
    help = "keep notes from low to high; a note outside gives its mass to the same pitch class and duration inside"
    params = (
        Param("low", int, 48, "lowest MIDI pitch, C4 = 60 (default C3)", low=0, high=127),
        Param("high", int, 84, "highest MIDI pitch, C4 = 60 (default C6)", low=0, high=127),
    )

    def __init__(self, **values: Any):
        super().__init__(**values)
        self._folding = PerVocabulary(build_folding)

    def reshape(self, probabilities: np.ndarray, context: SamplerContext) -> np.ndarray:
        folding = self._folding.get(context.vocabulary, self.values["low"], self.values["high"])
        if len(folding.sources) == 0 and len(folding.dropped) == 0:
            return probabilities

        moved = probabilities[folding.sources]
        filtered = probabilities.copy()
        filtered[folding.sources] = 0.0
        # bincount adds up the mass of several sources that fold onto one target.
        filtered += np.bincount(folding.targets, weights=moved, minlength=len(probabilities))
        if len(folding.dropped) == 0:
            # Folding moves mass without losing any, so the result is as full as the input.
            return filtered
        filtered[folding.dropped] = 0.0
        return nonempty_or_fallback(filtered, probabilities, context, self.name)


@dataclass(frozen=True)
class Folding:
    """The moves of mass for notes outside the range: sources[i] moves to targets[i], and the dropped notes lose theirs."""

    sources: np.ndarray
    targets: np.ndarray
    dropped: np.ndarray


def build_folding(vocabulary: Vocabulary, low: int, high: int) -> Folding:
    """Map each note token outside low..high to the token its mass moves to.

    The target has the same duration and pitch class, in the nearest octave
    inside the range. Without such a token, it has the same duration and the
    nearest pitch inside. A note with neither (no note of its duration lies
    inside the range) is dropped, and the build logs how many.
    """
    if low > high:
        logger.warning("range.low %d is above range.high %d: using %d to %d", low, high, high, low)
        low, high = high, low

    pitches = vocabulary.pitches.astype(np.int32)
    steps = vocabulary.steps
    inside = (pitches >= low) & (pitches <= high)
    outside = ~vocabulary.rest_mask & ~inside

    sources: list[int] = []
    targets: list[int] = []
    dropped: list[int] = []
    for index in np.flatnonzero(outside):
        candidates = np.flatnonzero(inside & (steps == steps[index]))
        if len(candidates) == 0:
            dropped.append(int(index))
            continue
        distance = np.abs(pitches[candidates] - pitches[index])
        same_class = distance % 12 == 0
        # Same pitch class first, then the nearest pitch, then the lower one.
        rank = np.lexsort((pitches[candidates], distance, ~same_class))
        sources.append(int(index))
        targets.append(int(candidates[rank[0]]))

    if dropped:
        # Logged once per range and vocabulary (the folding is cached), so that a musician can tell which notes the range removes.
        names = ", ".join(f"{pitch_name(int(pitches[index]))} of {int(steps[index])} steps" for index in dropped[:DROPPED_NAMES])
        more = f" and {len(dropped) - DROPPED_NAMES} more" if len(dropped) > DROPPED_NAMES else ""
        logger.info(
            "range %d-%d: %d notes outside it have no note of the same duration inside to fold to, so they are removed: %s%s",
            low, high, len(dropped), names, more,
        )
    return Folding(np.array(sources, dtype=np.intp), np.array(targets, dtype=np.intp), np.array(dropped, dtype=np.intp))


class Repetition(Filter):
    """Limit repeats in a row and penalise recently played notes, so greedy play does not lock onto one note."""

    name = "repetition"
    help = "forbid more than max_repeats of the same pitch (or token) in a row and damp recently played notes"
    params = (
        Param("max_repeats", int, 2, "most times the same pitch (or token) may sound in a row; rests in between do not count", low=1, high=MAX_WINDOW),
        Param("by", str, "pitch", "what counts as the same: pitch (any duration) or token (pitch and duration)", choices=("pitch", "token")),
        Param("strength", float, 0.3, "damping of a recently played note: each time it occurs in the window multiplies its probability by 1 - strength", low=0.0, high=1.0),
        Param("window", int, 8, "how many recent tokens the damping looks at", low=1, high=MAX_WINDOW),
    )

    def __init__(self, **values: Any):
        super().__init__(**values)
        self._tables = PerVocabulary(build_repetition_tables)

    def reshape(self, probabilities: np.ndarray, context: SamplerContext) -> np.ndarray:
        recent = context.recent
        if not recent:
            return probabilities
        tables = self._tables.get(context.vocabulary)
        by_pitch = self.values["by"] == "pitch"
        # The latest tokens, newest first, notes only: rests are never damped or limited.
        window = [index for index in itertools.islice(reversed(recent), self.values["window"]) if tables.pitches[index] >= 0]

        filtered = self._damp(probabilities, window, tables, by_pitch)
        banned = self._banned(recent, tables, by_pitch)
        if banned is not None:
            kept = filtered[banned].copy()
            filtered[banned] = 0.0
            if float(filtered.sum()) > 0.0:
                return filtered
            logger.debug("repetition: every token left repeats the last note, so the limit is lifted for this note")
            filtered[banned] = kept
        return nonempty_or_fallback(filtered, probabilities, context, self.name)

    def _damp(self, probabilities: np.ndarray, window: list[int], tables: "RepetitionTables", by_pitch: bool) -> np.ndarray:
        """Multiply each recently played note (or every token of its pitch) by (1 - strength) per occurrence."""
        damping = 1.0 - self.values["strength"]
        filtered = probabilities.copy()
        if not window or damping == 1.0:
            return filtered
        if by_pitch:
            for pitch, count in Counter(tables.pitches[index] for index in window).items():
                filtered[tables.tokens_of_pitch[pitch]] *= damping ** count
        else:
            for index, count in Counter(window).items():
                filtered[index] *= damping ** count
        return filtered

    def _banned(self, recent, tables: "RepetitionTables", by_pitch: bool) -> np.ndarray | int | None:
        """Return the tokens that would exceed max_repeats (indices, or one index), or None when the last run is shorter."""
        limit = self.values["max_repeats"]
        last = None
        run = 0
        # Walk back from the latest token; rests neither count nor break the run.
        for index in reversed(recent):
            pitch = tables.pitches[index]
            if pitch < 0:
                continue
            key = pitch if by_pitch else index
            if last is None:
                last = key
            elif key != last:
                return None
            run += 1
            if run >= limit:
                return tables.tokens_of_pitch[last] if by_pitch else last
        return None


@dataclass(frozen=True)
class RepetitionTables:
    """Per vocabulary: each token's pitch (-1 for a rest) as a list, and the tokens of each pitch."""

    pitches: list[int]
    tokens_of_pitch: dict[int, np.ndarray]


def build_repetition_tables(vocabulary: Vocabulary) -> RepetitionTables:
    pitches = [int(pitch) for pitch in vocabulary.pitches]
    tokens_of_pitch = {pitch: np.flatnonzero(vocabulary.pitches == pitch) for pitch in set(pitches) if pitch >= 0}
    return RepetitionTables(pitches, tokens_of_pitch)
