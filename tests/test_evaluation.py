"""The core of `sideman evaluate`: LSTM and n-gram bits per token, out-of-vocabulary share, piece selection, report."""

import logging

import numpy as np
import pytest

from tests.factories import random_bundle
from sideman.encoding import Token, tokenize_notes
from sideman.errors import BundleError, CorpusError, InvalidInputError
from sideman.evaluation import (
    DEFAULT_TRANSPOSE,
    EvaluationReport,
    ModelScore,
    augmented_sequences,
    default_baseline_pieces,
    evaluate,
    format_markdown,
    format_report,
    lstm_bits,
    select_pieces,
    transposition_range,
    validation_pieces,
)
from sideman.music import Note, Piece
from sideman.ngram import KneserNeyModel
from sideman.stepper import Stepper

EIGHTH = 0.5


def line_piece(name: str, events: list[tuple[int | None, float]]) -> Piece:
    """A legato line of (pitch or None for a rest, beats) events, each note lasting until the next onset."""
    notes = []
    onset = 0.0
    for pitch, beats in events:
        if pitch is not None:
            notes.append(Note(pitch, onset, beats))
        onset += beats
    return Piece(name, notes)


def eighths(name: str, pitches: list[int | None]) -> Piece:
    return line_piece(name, [(pitch, EIGHTH) for pitch in pitches])


def bundle_with_corpus(training: list[str] | None = None, validation: list[str] | None = None, transpose=None):
    bundle = random_bundle(n_a=6, seed=3)
    bundle.metadata["corpus"] = {"training_pieces": training or [], "validation_pieces": validation or []}
    if transpose is not None:
        bundle.metadata["training"] = {"transpose": transpose}
    bundle.path = "test.sideman"
    return bundle


def test_line_piece_tokens():
    # The helper must give exactly one token per event, or the counts below mean nothing.
    piece = line_piece("p", [(60, 0.5), (None, 0.5), (62, 1.0), (64, 1 / 3)])
    tokens = tokenize_notes(piece.notes, random_bundle().encoding)

    assert tokens == [Token(60, 6), Token(None, 6), Token(62, 12), Token(64, 4)]


def test_lstm_bits_match_manual_stepping():
    bundle = random_bundle(n_a=8, seed=1)
    sequences = [[0, 5, 17, 3, 36, 36, 2], [12], [7, 7]]

    expected = []
    stepper = Stepper(bundle.weights)
    for sequence in sequences:
        stepper.reset()
        probabilities = stepper.step(None)
        for token in sequence:
            expected.append(-np.log2(probabilities[token]))
            probabilities = stepper.step(token)

    assert lstm_bits(bundle, sequences) == pytest.approx(expected, abs=1e-4)


def test_lstm_bits_restart_each_sequence():
    bundle = random_bundle(n_a=8, seed=2)

    bits = lstm_bits(bundle, [[4, 9, 30], [4, 9, 30]])

    assert bits[:3] == pytest.approx(bits[3:], abs=1e-12)
    assert len(bits) == 6


def test_lstm_bits_stay_finite_for_unlikely_tokens():
    # Large weights push some probabilities below the smallest float64.
    bundle = random_bundle(n_a=8, seed=4, scale=200.0)

    bits = lstm_bits(bundle, [list(range(len(bundle.vocabulary)))])

    assert np.all(np.isfinite(bits))
    assert max(bits) > 1100


def test_evaluate_scores_every_model():
    bundle = bundle_with_corpus(transpose=[-1, 1])
    riff = [60, 62, 64, None, 60, 62, 64, None]
    baseline = [eighths("a", riff * 6), eighths("b", [67, 65, 64, 62] * 5)]
    test = [eighths("c", riff * 3), eighths("d", [65, 64, 62, 60, 62])]

    report = evaluate(bundle, test, baseline)

    assert [score.model for score in report.scores] == ["LSTM", "unigram", "bigram", "trigram"]
    assert report.test_pieces == 2
    # A rest at the end of a piece has no onset after it, so it makes no token.
    assert report.test_tokens == 23 + 5
    assert all(score.tokens == 28 for score in report.scores)
    assert report.baseline_pieces == 2
    assert report.baseline_tokens == 3 * (47 + 20)
    assert report.transpose == (-1, 1)
    assert report.out_of_vocabulary_tokens == 0

    vocabulary = bundle.vocabulary
    test_sequences = [vocabulary.indices(tokenize_notes(piece.notes, bundle.encoding)) for piece in test]
    scores = {score.model: score.bits_per_token for score in report.scores}
    assert scores["LSTM"] == pytest.approx(np.mean(lstm_bits(bundle, test_sequences)), abs=1e-12)

    baseline_lines = [tokenize_notes(piece.notes, bundle.encoding) for piece in baseline]
    training_sequences = augmented_sequences(baseline_lines, vocabulary, range(-1, 2))
    for name, order in (("unigram", 1), ("bigram", 2), ("trigram", 3)):
        expected = KneserNeyModel(order, len(vocabulary)).fit(training_sequences).corpus_bits(test_sequences).mean()
        assert scores[name] == pytest.approx(expected, abs=1e-12)

    # The riff repeats in both corpora, so context helps.
    assert scores["trigram"] < scores["bigram"] < scores["unigram"]


def test_evaluate_counts_out_of_vocabulary():
    # The small vocabulary contains C4-B4 as sixteenths, eighths and quarters, and rests of 6, 12 and 24 steps.
    bundle = bundle_with_corpus(transpose=[0, 0])
    test = [
        # Outside: pitch 50, pitch 90, and a triplet eighth (4 steps).
        line_piece("c", [(60, 0.5), (50, 0.5), (62, 1.0), (90, 0.5), (None, 0.5), (64, 1 / 3), (65, 0.25)]),
        eighths("d", [61, 63, 72]),
    ]
    baseline = [eighths("a", [60, 62, 64, 65])]

    report = evaluate(bundle, test, baseline)

    assert report.test_tokens == 10
    assert report.out_of_vocabulary_tokens == 4
    assert report.out_of_vocabulary_share == pytest.approx(0.4)
    assert all(np.isfinite(score.bits_per_token) for score in report.scores)


def test_evaluate_logs_counts(caplog):
    bundle = bundle_with_corpus(transpose=[0, 1])
    caplog.set_level(logging.INFO, logger="sideman.evaluation")

    evaluate(bundle, [eighths("c", [60, 62, 50])], [eighths("a", [60, 62])])

    messages = [record.getMessage() for record in caplog.records if record.levelno == logging.INFO]
    assert any("1 test pieces: 3 tokens, 1 of them outside the vocabulary" in message for message in messages)
    assert any("1 pieces transposed by +0 to +1 semitones: 4 tokens" in message for message in messages)


def test_evaluate_rejects_empty_test_corpus():
    bundle = bundle_with_corpus()

    with pytest.raises(InvalidInputError, match="test corpus .* contains no notes"):
        evaluate(bundle, [Piece("empty", [])], [eighths("a", [60])])


def test_evaluate_rejects_empty_baseline_corpus():
    bundle = bundle_with_corpus()

    with pytest.raises(InvalidInputError, match="--baseline-corpus"):
        evaluate(bundle, [eighths("c", [60])], [Piece("empty", [])])


def test_augmented_sequences_transpose_and_map():
    bundle = random_bundle()
    vocabulary = bundle.vocabulary
    line = [Token(60, 6), Token(None, 12), Token(71, 3)]

    sequences = [sequence.tolist() for sequence in augmented_sequences([line, []], vocabulary, range(-1, 2))]

    # B3 and C5 are outside C4-B4: octave folding maps them to B4 and C4.
    assert sequences == [
        [vocabulary.index_of(Token(71, 6)), vocabulary.index_of(Token(None, 12)), vocabulary.index_of(Token(70, 3))],
        [],
        [vocabulary.index_of(Token(60, 6)), vocabulary.index_of(Token(None, 12)), vocabulary.index_of(Token(71, 3))],
        [],
        [vocabulary.index_of(Token(61, 6)), vocabulary.index_of(Token(None, 12)), vocabulary.index_of(Token(60, 3))],
        [],
    ]


def test_transposition_range_default_and_stored():
    assert transposition_range(random_bundle()) == DEFAULT_TRANSPOSE
    assert transposition_range(bundle_with_corpus(transpose=[-3, 2])) == (-3, 2)


@pytest.mark.parametrize("value", [[2, -3], [0], "0..5", [0.5, 2], [True, 2]])
def test_transposition_range_rejects_invalid(value):
    with pytest.raises(BundleError, match="training.transpose"):
        transposition_range(bundle_with_corpus(transpose=value))


def test_select_pieces_keeps_corpus_order(caplog):
    pieces = [eighths(name, [60]) for name in ("one", "two", "three", "four")]

    with caplog.at_level(logging.WARNING, logger="sideman.evaluation"):
        selected = select_pieces(pieces, ["four", "two", "missing"])

    assert [piece.name for piece in selected] == ["two", "four"]
    assert "1 of 3 named pieces not found" in caplog.text
    assert "'missing'" in caplog.text


def test_validation_pieces_selected():
    bundle = bundle_with_corpus(training=["one", "two"], validation=["three"])
    pieces = [eighths(name, [60]) for name in ("one", "two", "three")]

    assert [piece.name for piece in validation_pieces(bundle, pieces)] == ["three"]
    assert [piece.name for piece in default_baseline_pieces(bundle, pieces)] == ["one", "two"]


def test_validation_pieces_missing_from_corpus():
    bundle = bundle_with_corpus(training=["one"], validation=["three"])

    with pytest.raises(CorpusError, match="none of the 1 validation pieces named in test.sideman"):
        validation_pieces(bundle, [eighths("one", [60])])


def test_validation_pieces_absent_from_bundle():
    with pytest.raises(CorpusError, match="names no validation pieces .* without --validation"):
        validation_pieces(random_bundle(), [eighths("one", [60])])


def test_training_pieces_absent_from_bundle():
    with pytest.raises(CorpusError, match="names no training pieces .* pass --baseline-corpus"):
        default_baseline_pieces(random_bundle(), [eighths("one", [60])])


def test_default_baseline_pieces_missing_asks_for_baseline_corpus():
    bundle = bundle_with_corpus(training=["one", "two"])

    with pytest.raises(CorpusError, match="pass --baseline-corpus"):
        default_baseline_pieces(bundle, [eighths("other", [60])])


def test_piece_names_must_be_strings():
    bundle = bundle_with_corpus()
    bundle.metadata["corpus"]["training_pieces"] = "one"

    with pytest.raises(BundleError, match="corpus.training_pieces"):
        default_baseline_pieces(bundle, [eighths("one", [60])])


def sample_report() -> EvaluationReport:
    scores = [ModelScore("LSTM", 2.5, 200), ModelScore("unigram", 4.25, 200), ModelScore("bigram", 3.125, 200), ModelScore("trigram", 3.0, 200)]
    return EvaluationReport(scores, test_pieces=3, test_tokens=200, out_of_vocabulary_tokens=5, baseline_pieces=10, baseline_tokens=24000, transpose=(-5, 6))


def test_format_report_table():
    lines = format_report(sample_report()).splitlines()

    assert lines[0].split() == ["model", "bits/token", "tokens"]
    assert lines[1].split() == ["LSTM", "2.5000", "200"]
    assert lines[2].split() == ["unigram", "4.2500", "200"]
    assert lines[4].split() == ["trigram", "3.0000", "200"]
    assert "Out of vocabulary: 2.50% of test tokens (5 of 200)" in lines[6]
    assert "10 pieces transposed by -5 to +6 semitones, 24000 tokens" in lines[7]


def test_format_markdown_table():
    lines = format_markdown(sample_report()).splitlines()

    assert lines[0] == "| model | bits/token | tokens |"
    assert lines[1] == "|---|---:|---:|"
    assert lines[2] == "| LSTM | 2.5000 | 200 |"
    assert lines[5] == "| trigram | 3.0000 | 200 |"
    assert lines[7].startswith("Out of vocabulary: 2.50% of test tokens")
