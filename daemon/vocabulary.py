"""The model's vocabulary: the most frequent tokens of a corpus, and the nearest-token map."""

import math
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from .encoding import Token


class Vocabulary:
    """An ordered list of tokens; a token's index is its row in the model's one-hot input.

    Any token, in the vocabulary or not, maps to an index through `index_of`:
    tokens outside map to the nearest one (same duration, nearest pitch with
    octave folding first), so nothing outside the vocabulary is an error.
    """

    def __init__(self, tokens: Sequence[Token]):
        if not tokens:
            raise ValueError("a vocabulary needs at least one token")
        self.tokens = list(tokens)
        self._index = {token: index for index, token in enumerate(self.tokens)}
        if len(self._index) != len(self.tokens):
            raise ValueError("vocabulary tokens must be unique")

        # Pitch per index, -1 for a rest, and duration in grid steps: samplers read these.
        self.pitches = np.array([-1 if t.pitch is None else t.pitch for t in self.tokens], dtype=np.int16)
        self.steps = np.array([t.steps for t in self.tokens], dtype=np.int32)
        self.rest_mask = self.pitches < 0

        self._notes_by_steps: dict[int, dict[int, int]] = {}
        self._rests_by_steps: dict[int, int] = {}
        for index, token in enumerate(self.tokens):
            if token.pitch is None:
                self._rests_by_steps[token.steps] = index
            else:
                self._notes_by_steps.setdefault(token.steps, {})[token.pitch] = index
        self._nearest_cache: dict[Token, int] = {}

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> Token:
        return self.tokens[index]

    def __contains__(self, token: Token) -> bool:
        return token in self._index

    def index_of(self, token: Token) -> int:
        """Return the index of `token`, or of its nearest token when it is not in the vocabulary."""
        index = self._index.get(token)
        if index is not None:
            return index
        cached = self._nearest_cache.get(token)
        if cached is None:
            cached = self._find_nearest(token)
            self._nearest_cache[token] = cached
        return cached

    def indices(self, tokens: Iterable[Token]) -> list[int]:
        return [self.index_of(token) for token in tokens]

    def _find_nearest(self, token: Token) -> int:
        if token.pitch is None:
            if self._rests_by_steps:
                return self._rests_by_steps[_nearest_steps(token.steps, self._rests_by_steps)]
            # A vocabulary without rests: the rest becomes the note of nearest length.
            token = Token(60, token.steps)

        steps = _nearest_steps(token.steps, self._notes_by_steps)
        pitches = self._notes_by_steps[steps]
        return pitches[_nearest_pitch(token.pitch, pitches)]

    def to_list(self) -> list[list]:
        return [[token.pitch, token.steps] for token in self.tokens]

    @classmethod
    def from_list(cls, rows: Sequence[Sequence]) -> "Vocabulary":
        return cls([Token(None if pitch is None else int(pitch), int(steps)) for pitch, steps in rows])

    @classmethod
    def from_counts(cls, counts: Counter, max_size: int) -> "Vocabulary":
        """Keep the `max_size` most frequent tokens; ties go to the lower pitch, then the shorter token."""
        ranked = sorted(counts.items(), key=lambda item: (-item[1], _sort_pitch(item[0]), item[0].steps))
        return cls([token for token, _ in ranked[:max_size]])


def _sort_pitch(token: Token) -> int:
    return -1 if token.pitch is None else token.pitch


def _nearest_steps(steps: int, available: dict) -> int:
    """Return the available duration nearest to `steps` on a log scale, the shorter on a tie."""
    return min(available, key=lambda candidate: (abs(math.log(candidate / steps)), candidate))


def _nearest_pitch(pitch: int, available: dict) -> int:
    """Octave folding first (the same pitch class, nearest octave), then the nearest pitch."""
    same_class = [candidate for candidate in available if (candidate - pitch) % 12 == 0]
    if same_class:
        return min(same_class, key=lambda candidate: (abs(candidate - pitch), candidate))
    return min(available, key=lambda candidate: (abs(candidate - pitch), candidate))
