"""Interpolated modified Kneser-Ney baselines: normalization, hand-computed values and a by-definition reference."""

from collections import Counter

import numpy as np
import pytest

from sideman.ngram import FALLBACK_DISCOUNTS, KneserNeyModel, estimate_discounts

FIXED_DISCOUNTS = (0.5, 1.0, 1.5)


def random_sequences(seed: int, vocabulary_size: int, count: int, max_length: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    # A skewed distribution, so that counts of 1, 2, 3 and more all occur.
    weights = rng.dirichlet(np.full(vocabulary_size, 0.5))
    return [rng.choice(vocabulary_size, size=rng.integers(0, max_length + 1), p=weights).tolist() for _ in range(count)]


def reference_probability(sequences, order, vocabulary_size, context, token, discounts=None):
    """p(token | context) straight from the definitions, with dicts and recursion, for small data only."""
    bos = vocabulary_size
    counts = Counter()
    for sequence in sequences:
        padded = [bos, *sequence]
        for end in range(1, len(padded)):
            for length in range(1, min(order, end + 1) + 1):
                counts[tuple(padded[end - length + 1:end + 1])] += 1

    def adjusted(ngram):
        if len(ngram) == order or ngram[0] == bos:
            return counts[ngram]
        return len({longer[0] for longer in counts if len(longer) == len(ngram) + 1 and longer[1:] == ngram})

    adjusted_by_order = {length: {ngram: adjusted(ngram) for ngram in counts if len(ngram) == length} for length in range(1, order + 1)}
    if discounts is None:
        discounts = []
        for length in range(1, order + 1):
            count_of_counts = Counter(adjusted_by_order[length].values())
            discounts.append(estimate_discounts([count_of_counts[value] for value in (1, 2, 3, 4)]))

    def probability(history, word):
        length = len(history) + 1
        lower = 1 / vocabulary_size if length == 1 else probability(history[1:], word)
        followers = {ngram[-1]: count for ngram, count in adjusted_by_order[length].items() if ngram[:-1] == history}
        total = sum(followers.values())
        if total == 0:
            return lower
        discount = discounts[length - 1]
        discounted = max(followers.get(word, 0) - discount[min(followers.get(word, 1), 3) - 1], 0) if word in followers else 0
        backoff = sum(discount[min(count, 3) - 1] for count in followers.values())
        return discounted / total + backoff / total * lower

    history = (bos, *context)[-(order - 1):] if order > 1 else ()
    return probability(tuple(history), token)


def test_bigram_hand_computed():
    # Padded: [BOS 0 1 0] and [BOS 1]. Bigrams (raw counts): BOS0, 01, 10, BOS1, one each.
    # Unigram continuation counts: 0 follows {BOS, 1} -> 2; 1 follows {0, BOS} -> 2; 2 unseen.
    # Unigram: total 4, discounted 2 - 1 = 1 each, backoff mass 2, so
    #   p1(0) = p1(1) = 1/4 + 2/4 * 1/3 = 5/12 and p1(2) = 2/4 * 1/3 = 1/6.
    # After 0: one bigram of count 1, so p(1|0) = 0.5 + 0.5 * 5/12 = 17/24, p(0|0) = 5/24, p(2|0) = 1/12.
    # At the start: two bigrams of count 1, so p(0|BOS) = 0.5/2 + 1/2 * 5/12 = 11/24.
    model = KneserNeyModel(2, 3, discounts=[FIXED_DISCOUNTS, FIXED_DISCOUNTS]).fit([[0, 1, 0], [1]])

    assert model.probabilities([0]) == pytest.approx([5 / 24, 17 / 24, 1 / 12], abs=1e-12)
    assert model.probabilities([1]) == pytest.approx([17 / 24, 5 / 24, 1 / 12], abs=1e-12)
    assert model.probabilities([]) == pytest.approx([11 / 24, 11 / 24, 1 / 12], abs=1e-12)
    # Token 2 was never seen as a context: the unigram distribution alone.
    assert model.probabilities([2]) == pytest.approx([5 / 12, 5 / 12, 1 / 6], abs=1e-12)

    expected_bits = [-np.log2(11 / 24), -np.log2(17 / 24), -np.log2(17 / 24)]
    assert model.sequence_bits([0, 1, 0]) == pytest.approx(expected_bits, abs=1e-12)


def test_unigram_hand_computed():
    # Raw counts at the highest order: 0 x3, 1 x1, over a vocabulary of 4.
    # Discounted: 3 - 1.5 = 1.5 and 1 - 0.5 = 0.5; backoff mass 2; total 4.
    model = KneserNeyModel(1, 4, discounts=[FIXED_DISCOUNTS]).fit([[0, 0, 1, 0]])

    uniform_share = 2 / 4 * 1 / 4
    assert model.probabilities([]) == pytest.approx([1.5 / 4 + uniform_share, 0.5 / 4 + uniform_share, uniform_share, uniform_share], abs=1e-12)
    # A unigram model ignores the context.
    assert model.probabilities([3, 2, 1]) == pytest.approx(model.probabilities([]), abs=1e-15)


def test_estimate_discounts_from_count_of_counts():
    # Y = 10 / (10 + 2 * 5) = 0.5; D1 = 1 - 2Y * 5/10; D2 = 2 - 3Y * 3/5; D3+ = 3 - 4Y * 2/3.
    assert estimate_discounts([10, 5, 3, 2]) == pytest.approx((0.5, 1.1, 3 - 4 / 3), abs=1e-12)


@pytest.mark.parametrize("count_of_counts", [[0, 0, 0, 0], [7, 0, 0, 0], [0, 4, 2, 1], [4, 2, 0, 0], [1, 9, 1, 9], [50, 1, 40, 1]])
def test_estimate_discounts_stay_in_range(count_of_counts):
    discounts = estimate_discounts(count_of_counts)

    for count, discount in enumerate(discounts, start=1):
        assert 0 < discount <= count


def test_estimate_discounts_fallback_without_counts():
    assert estimate_discounts([0, 0, 0, 0]) == FALLBACK_DISCOUNTS


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_probabilities_sum_to_one(order):
    vocabulary_size = 9
    # Tokens 7 and 8 never occur in training.
    model = KneserNeyModel(order, vocabulary_size).fit(random_sequences(1, 7, 40, 30))

    contexts = [[], [0], [3], [8], [0, 1], [8, 7], [2, 2, 2, 2], [6, 5, 4, 3, 2, 1, 0]]
    for context in contexts:
        probabilities = model.probabilities(context)
        assert abs(probabilities.sum() - 1) < 1e-9, context
        assert np.all(probabilities > 0), context
        summed_log_probabilities = sum(2 ** model.log2_prob(context, token) for token in range(vocabulary_size))
        assert abs(summed_log_probabilities - 1) < 1e-9, context


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("seed", [2, 3])
def test_matches_reference_definition(order, seed):
    vocabulary_size = 6
    sequences = random_sequences(seed, 5, 25, 12)
    model = KneserNeyModel(order, vocabulary_size).fit(sequences)

    for context in ([], [0], [4], [5], [1, 2], [5, 0], [3, 3, 3]):
        expected = [reference_probability(sequences, order, vocabulary_size, context, token) for token in range(vocabulary_size)]
        assert model.probabilities(context) == pytest.approx(expected, abs=1e-12), context


def test_discounts_estimated_per_order():
    model = KneserNeyModel(3, 6).fit(random_sequences(4, 6, 60, 20))

    assert len(model.discounts) == 3
    for discounts in model.discounts:
        for count, discount in enumerate(discounts, start=1):
            assert 0 < discount <= count


def test_higher_order_beats_lower_on_pattern():
    # After 0 the next token is 0 or 1 (a coin flip for a bigram model); two tokens of context decide it.
    pattern = [0, 0, 1, 2] * 50
    held_out = [0, 0, 1, 2] * 10
    mean_bits = {order: np.mean(KneserNeyModel(order, 5).fit([pattern]).sequence_bits(held_out)) for order in (1, 2, 3)}

    assert mean_bits[2] < mean_bits[1] - 0.5
    assert mean_bits[3] < mean_bits[2] - 0.2
    assert mean_bits[3] < 0.2


@pytest.mark.parametrize("order", [1, 2, 3])
def test_unseen_token_has_nonzero_probability(order):
    model = KneserNeyModel(order, 10).fit([[0, 1, 2, 3] * 20])

    for context in ([], [0, 1], [2, 9]):
        log2_probability = model.log2_prob(context, 7)
        assert np.isfinite(log2_probability)
        assert log2_probability < model.log2_prob([0, 1, 2], 3)


def test_first_token_uses_sequence_start():
    # Every sequence starts with 2, which never occurs anywhere else.
    model = KneserNeyModel(2, 4).fit([[2, 0, 1, 0, 1, 0, 1]] * 5)

    assert model.log2_prob([], 2) > np.log2(0.5)
    assert model.log2_prob([1], 2) < np.log2(0.1)


def test_sequence_bits_match_log2_prob():
    sequences = random_sequences(5, 5, 20, 15)
    model = KneserNeyModel(3, 5).fit(sequences)
    sequence = [4, 0, 0, 3, 1, 2, 2, 4]

    expected = [-model.log2_prob(sequence[:position], token) for position, token in enumerate(sequence)]
    assert model.sequence_bits(sequence) == pytest.approx(expected, abs=1e-12)


def test_corpus_bits_concatenate_sequences():
    model = KneserNeyModel(2, 5).fit(random_sequences(6, 5, 20, 15))
    first, second = [1, 2, 3], [3, 3]

    combined = model.corpus_bits([first, [], second])

    assert combined.tolist() == pytest.approx(model.sequence_bits(first) + model.sequence_bits(second), abs=1e-12)


def test_unfitted_model_is_uniform():
    for model in (KneserNeyModel(3, 8), KneserNeyModel(3, 8).fit([]), KneserNeyModel(3, 8).fit([[], []])):
        assert model.probabilities([1, 2]) == pytest.approx(np.full(8, 1 / 8), abs=1e-15)


def test_refit_replaces_counts():
    model = KneserNeyModel(2, 3).fit([[0, 0, 0, 0]])
    model.fit([[1, 1, 1, 1]])

    assert model.log2_prob([1], 1) > model.log2_prob([1], 0)
    assert model.token_count == 4


def test_rejects_tokens_outside_vocabulary():
    model = KneserNeyModel(2, 3)

    with pytest.raises(ValueError, match="token index 3"):
        model.fit([[0, 3]])
    with pytest.raises(ValueError, match="token index -1"):
        model.log2_prob([-1], 0)
    with pytest.raises(ValueError, match="token index 5"):
        model.sequence_bits([0, 5])


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((0, 5), "order must be at least 1"),
        ((2, 0), "vocabulary size must be at least 1"),
        ((2, 5, [FIXED_DISCOUNTS]), "expected discounts for 2 order"),
        ((1, 5, [(0.5, 1.0)]), "expected three discounts"),
        ((1, 5, [(1.5, 1.0, 1.5)]), "D1 = 1.5"),
        ((1, 5, [(0.5, 0.0, 1.5)]), "D2 = 0.0"),
    ],
)
def test_rejects_invalid_settings(arguments, message):
    with pytest.raises(ValueError, match=message):
        KneserNeyModel(*arguments)
