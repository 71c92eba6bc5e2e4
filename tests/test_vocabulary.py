from collections import Counter

import pytest

from sideman.encoding import Token
from sideman.vocabulary import Vocabulary


def make_vocabulary():
    return Vocabulary([Token(60, 6), Token(64, 6), Token(72, 12), Token(67, 12), Token(None, 6), Token(None, 24)])


def test_known_token_maps_to_itself():
    vocabulary = make_vocabulary()

    assert vocabulary.index_of(Token(64, 6)) == 1


def test_octave_folding_before_nearest_pitch():
    vocabulary = make_vocabulary()

    # 48 is two octaves below 72 but only 19 semitones from 67; octave folding wins.
    assert vocabulary[vocabulary.index_of(Token(48, 12))] == Token(72, 12)


def test_nearest_pitch_within_same_duration():
    vocabulary = make_vocabulary()

    assert vocabulary[vocabulary.index_of(Token(63, 6))] == Token(64, 6)


def test_nearest_duration_when_duration_unknown():
    vocabulary = make_vocabulary()

    assert vocabulary[vocabulary.index_of(Token(60, 5))] == Token(60, 6)
    assert vocabulary[vocabulary.index_of(Token(None, 30))] == Token(None, 24)


def test_rest_stays_rest():
    vocabulary = make_vocabulary()

    assert vocabulary[vocabulary.index_of(Token(None, 1))].is_rest


def test_from_counts_keeps_most_frequent():
    counts = Counter({Token(60, 6): 5, Token(62, 6): 9, Token(None, 6): 7, Token(64, 3): 1})

    vocabulary = Vocabulary.from_counts(counts, 3)

    assert vocabulary.tokens == [Token(62, 6), Token(None, 6), Token(60, 6)]


def test_list_round_trip():
    vocabulary = make_vocabulary()

    assert Vocabulary.from_list(vocabulary.to_list()).tokens == vocabulary.tokens


def test_duplicate_tokens_rejected():
    with pytest.raises(ValueError):
        Vocabulary([Token(60, 6), Token(60, 6)])
