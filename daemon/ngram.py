"""Interpolated modified Kneser-Ney n-gram models over token indices, the baselines of `sideman evaluate`.

Tokens are indices 0 .. vocabulary_size - 1. Every sequence starts with one
begin-of-sequence id (`vocabulary_size`), which is context only and never
predicted. As in KenLM, an n-gram that starts at that id keeps its raw
count at every order, because nothing can precede it. Every other n-gram
below the highest order counts its distinct left neighbours (the
continuation count of Kneser and Ney).

The probability of a token w after a context h of length k - 1 is

    p_k(w | h) = max(a(hw) - D_k(a(hw)), 0) / a(h.) + gamma_k(h) * p_{k-1}(w | h minus its first token)

where a is the count above, a(h.) sums a(hv) over all tokens v, and
gamma_k(h) = sum over v of D_k(a(hv)) / a(h.) gives the discounted mass to
the lower order. A context never seen uses the lower order alone. The
lowest order interpolates with the uniform distribution over the
vocabulary, so every token has a nonzero probability and each p_k sums to
one over the vocabulary. The discounts D1, D2 and D3+ of each order come
from that order's count-of-counts (Chen and Goodman, "An Empirical Study of
Smoothing Techniques for Language Modeling", 1998).

N-grams are stored as integer keys in base vocabulary_size + 1, earliest
token most significant, in sorted numpy arrays, so that fitting is a few
`np.unique` calls and scoring looks up every position at once.
"""

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

# Discounts used where the count-of-counts cannot give a valid estimate
# (small or degenerate training data). They lie inside the valid ranges
# 0 < D1 <= 1, 0 < D2 <= 2, 0 < D3+ <= 3.
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)

_MAX_KEY = 2**62


def estimate_discounts(count_of_counts: Sequence[int]) -> tuple[float, float, float]:
    """Estimate the modified Kneser-Ney discounts (D1, D2, D3+) from n1, n2, n3 and n4.

    `count_of_counts[i]` is the number of n-grams seen exactly i + 1 times.
    Each estimate outside its valid range (0 < D_i <= i) is replaced by the
    single Kneser-Ney discount n1 / (n1 + 2 n2) when that one is usable,
    else by FALLBACK_DISCOUNTS.
    """
    n1, n2, n3, n4 = (float(count) for count in count_of_counts[:4])
    single = n1 / (n1 + 2 * n2) if n1 > 0 and n2 > 0 else None

    estimates: list[float | None] = [None, None, None]
    if single is not None:
        estimates[0] = 1 - 2 * single * n2 / n1
        if n3 > 0:
            estimates[1] = 2 - 3 * single * n3 / n2
            if n4 > 0:
                estimates[2] = 3 - 4 * single * n4 / n3

    discounts = []
    for count, estimate in enumerate(estimates, start=1):
        if estimate is not None and 0 < estimate <= count:
            discounts.append(estimate)
        elif single is not None and 0 < single <= 1:
            discounts.append(single)
        else:
            discounts.append(FALLBACK_DISCOUNTS[count - 1])
    return discounts[0], discounts[1], discounts[2]


@dataclass
class _OrderTable:
    """The n-grams of one order and the sums over each of their contexts."""

    ngram_keys: np.ndarray  # sorted int64 keys of the n-grams seen
    discounted: np.ndarray  # max(a - D(a), 0) per n-gram
    context_keys: np.ndarray  # sorted int64 keys of the contexts seen
    context_totals: np.ndarray  # a(h.) per context
    context_backoff: np.ndarray  # sum of D(a(hv)) per context: gamma(h) * a(h.)
    discounts: tuple[float, float, float]


class KneserNeyModel:
    """An interpolated modified Kneser-Ney model of order 1 (unigram) or higher.

    Unfitted, or fitted on nothing, it gives the uniform distribution.
    """

    def __init__(self, order: int, vocabulary_size: int, discounts: Sequence[Sequence[float]] | None = None):
        """Create an empty model.

        `discounts`, when given, fixes (D1, D2, D3+) per order, lowest order
        first, in place of the estimates from the count-of-counts.
        """
        if order < 1:
            raise ValueError(f"n-gram order must be at least 1, got {order}")
        if vocabulary_size < 1:
            raise ValueError(f"vocabulary size must be at least 1, got {vocabulary_size}")
        self.order = order
        self.vocabulary_size = vocabulary_size
        self.bos = vocabulary_size
        self._base = vocabulary_size + 1
        if self._base**order >= _MAX_KEY:
            raise ValueError(f"an order-{order} model over {vocabulary_size} tokens does not fit in 64-bit n-gram keys")

        if discounts is not None:
            discounts = [tuple(float(value) for value in row) for row in discounts]
            _check_discounts(discounts, order)
        self._fixed_discounts = discounts
        self._tables: list[_OrderTable] = []
        self.token_count = 0

    @property
    def discounts(self) -> list[tuple[float, float, float]]:
        """The (D1, D2, D3+) in use per order, lowest order first, and empty before `fit`."""
        return [table.discounts for table in self._tables]

    def fit(self, sequences: Iterable[Sequence[int]]) -> "KneserNeyModel":
        """Count the n-grams of `sequences` (lists of token indices), replacing any earlier fit."""
        tokens, starts = self._pad(sequences)
        predicted = np.flatnonzero(tokens != self.bos)
        self.token_count = len(predicted)

        ngrams_by_order = self._ngram_types(tokens, starts, predicted)
        self._tables = []
        for order in range(1, self.order + 1):
            types, raw_counts = ngrams_by_order[order - 1]
            if order == self.order:
                adjusted = raw_counts
            else:
                adjusted = self._adjusted_counts(order, types, raw_counts, ngrams_by_order[order][0])
            self._tables.append(self._build_table(order, types, adjusted))
        return self

    def log2_prob(self, context: Sequence[int], token: int) -> float:
        """Return log2 p(token | context).

        `context` lists the tokens before `token` from the start of its
        sequence, and the begin-of-sequence id is implied before context[0].
        Only the last order - 1 tokens matter.
        """
        return float(np.log2(self._probabilities(self._context_rows([context]), np.array([token]))[0]))

    def probabilities(self, context: Sequence[int]) -> np.ndarray:
        """Return p(w | context) for every token w of the vocabulary, as `log2_prob` reads `context`."""
        tokens = np.arange(self.vocabulary_size)
        rows = np.repeat(self._context_rows([context]), self.vocabulary_size, axis=0)
        return self._probabilities(rows, tokens)

    def sequence_bits(self, sequence: Sequence[int]) -> list[float]:
        """Return -log2 p of each token of one sequence, from the begin-of-sequence context."""
        return self.corpus_bits([sequence]).tolist()

    def corpus_bits(self, sequences: Iterable[Sequence[int]]) -> np.ndarray:
        """Return -log2 p of every token of every sequence, concatenated in order."""
        contexts = []
        targets = []
        width = self.order - 1
        for sequence in sequences:
            sequence = self._checked(sequence)
            if len(sequence) == 0:
                continue
            targets.append(sequence)
            if width == 0:
                contexts.append(np.empty((len(sequence), 0), dtype=np.int64))
                continue
            # -1 marks "before the sequence start", so each window's tokens are right-aligned.
            padded = np.concatenate([np.full(width, -1), [self.bos], sequence[:-1]])
            contexts.append(np.lib.stride_tricks.sliding_window_view(padded, width)[1:])
        if not targets:
            return np.empty(0)
        return -np.log2(self._probabilities(np.concatenate(contexts), np.concatenate(targets)))

    def _checked(self, sequence: Sequence[int]) -> np.ndarray:
        array = np.asarray(sequence, dtype=np.int64).reshape(-1)
        if array.size and (array.min() < 0 or array.max() >= self.vocabulary_size):
            bad = array[(array < 0) | (array >= self.vocabulary_size)][0]
            raise ValueError(f"token index {bad} is outside the vocabulary of {self.vocabulary_size} tokens (0-{self.vocabulary_size - 1})")
        return array

    def _context_rows(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        """Right-aligned context windows of width order - 1, with the implied begin-of-sequence id."""
        width = self.order - 1
        rows = np.full((len(contexts), width), -1, dtype=np.int64)
        if width == 0:
            return rows
        for row, context in zip(rows, contexts):
            window = np.concatenate([[self.bos], self._checked(context)])[-width:]
            row[width - len(window):] = window
        return rows

    def _pad(self, sequences: Iterable[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Concatenate the sequences, each after a begin-of-sequence id, and mark each position's sequence start."""
        padded_sequences = []
        starts = []
        position = 0
        for sequence in sequences:
            array = self._checked(sequence)
            padded_sequences.append(np.concatenate([[self.bos], array]))
            starts.append(np.full(len(array) + 1, position, dtype=np.int64))
            position += len(array) + 1
        if not padded_sequences:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        return np.concatenate(padded_sequences).astype(np.int64), np.concatenate(starts)

    def _ngram_types(self, tokens: np.ndarray, starts: np.ndarray, predicted: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Count the distinct n-grams of each order that end at a predicted position.

        An n-gram that would reach before its sequence's begin-of-sequence id
        does not exist, because the shorter one starting at that id replaces it.
        """
        result = []
        keys = np.zeros(len(predicted), dtype=np.int64)
        valid = np.ones(len(predicted), dtype=bool)
        for order in range(1, self.order + 1):
            first = predicted - (order - 1)
            valid &= first >= starts[predicted]
            keys = keys + tokens[np.maximum(first, 0)] * self._base ** (order - 1)
            types, counts = np.unique(keys[valid], return_counts=True)
            result.append((types, counts))
        return result

    def _adjusted_counts(self, order: int, types: np.ndarray, raw_counts: np.ndarray, longer_types: np.ndarray) -> np.ndarray:
        """Return the continuation counts of a lower order's n-grams, or the raw count for those starting at the begin-of-sequence id.

        Every n-gram that does not start at the begin-of-sequence id is the
        suffix of at least one longer n-gram, so it finds its count among
        the suffixes.
        """
        suffixes, left_neighbours = np.unique(longer_types % self._base**order, return_counts=True)
        continuation, _ = _lookup(suffixes, left_neighbours, types)
        starts_at_bos = types // self._base ** (order - 1) == self.bos
        return np.where(starts_at_bos, raw_counts, continuation).astype(np.int64)

    def _build_table(self, order: int, types: np.ndarray, adjusted: np.ndarray) -> _OrderTable:
        if self._fixed_discounts is not None:
            discounts = self._fixed_discounts[order - 1]
        else:
            discounts = estimate_discounts(np.bincount(np.minimum(adjusted, 5), minlength=6)[1:5])
        discount_per_type = np.asarray(discounts)[np.minimum(adjusted, 3) - 1]
        adjusted = adjusted.astype(np.float64)

        context_keys, inverse = np.unique(types // self._base, return_inverse=True)
        return _OrderTable(
            ngram_keys=types,
            discounted=np.maximum(adjusted - discount_per_type, 0.0),
            context_keys=context_keys,
            context_totals=np.bincount(inverse, weights=adjusted, minlength=len(context_keys)),
            context_backoff=np.bincount(inverse, weights=discount_per_type, minlength=len(context_keys)),
            discounts=discounts,
        )

    def _probabilities(self, contexts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Compute p(token | context) per row, where contexts are right-aligned windows with -1 before the sequence start."""
        tokens = self._checked(tokens)
        probabilities = np.full(len(tokens), 1.0 / self.vocabulary_size)
        context_keys = np.zeros(len(tokens), dtype=np.int64)
        usable = np.ones(len(tokens), dtype=bool)

        for order, table in enumerate(self._tables, start=1):
            if order > 1:
                # The context grows by one token to the left: the new token is the most significant digit.
                earlier = contexts[:, self.order - order]
                usable &= earlier >= 0
                context_keys = context_keys + np.maximum(earlier, 0) * self._base ** (order - 2)

            totals, context_found = _lookup(table.context_keys, table.context_totals, context_keys)
            backoff, _ = _lookup(table.context_keys, table.context_backoff, context_keys)
            discounted, _ = _lookup(table.ngram_keys, table.discounted, context_keys * self._base + tokens)

            interpolate = usable & context_found
            safe_totals = np.where(interpolate, totals, 1.0)
            higher = (discounted + backoff * probabilities) / safe_totals
            probabilities = np.where(interpolate, higher, probabilities)
        return probabilities


def _lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Look up `queries` in sorted `keys`: the values, 0 where absent, and whether each was found."""
    if len(keys) == 0:
        return np.zeros(len(queries)), np.zeros(len(queries), dtype=bool)
    positions = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    found = keys[positions] == queries
    return np.where(found, values[positions], 0.0), found


def _check_discounts(discounts: Sequence[tuple[float, ...]], order: int) -> None:
    if len(discounts) != order:
        raise ValueError(f"expected discounts for {order} order(s), got {len(discounts)}")
    for level, row in enumerate(discounts, start=1):
        if len(row) != 3:
            raise ValueError(f"order {level}: expected three discounts (D1, D2, D3+), got {len(row)}")
        for count, value in enumerate(row, start=1):
            if not 0 < value <= count:
                raise ValueError(f"order {level}: discount D{count} = {value} is outside 0 < D{count} <= {count}")
