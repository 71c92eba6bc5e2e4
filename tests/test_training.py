import logging

import numpy as np
import pytest

from sideman.bundle import load_bundle
from sideman.corpus import read_corpus
from sideman.encoding import Token
from sideman.music import Note, Piece
from sideman.training import TrainingSettings, make_windows, prepare_corpus, split_pieces
from tests.midi_builders import note_track, scale_phrase, write_midi


def pieces(count):
    return [Piece(f"piece{index}", [Note(60 + index % 7 + step % 5, step * 0.5, 0.4) for step in range(20)]) for index in range(count)]


def test_split_is_by_piece_and_seeded():
    training, validation = split_pieces(pieces(20), 0.1, seed=3)
    again_training, again_validation = split_pieces(pieces(20), 0.1, seed=3)

    assert len(validation) == 2
    assert {p.name for p in training}.isdisjoint({p.name for p in validation})
    assert [p.name for p in validation] == [p.name for p in again_validation]


def test_windows_start_from_zero_input():
    sequence = np.arange(10, dtype=np.int32)

    inputs, targets = make_windows([sequence], 4, None)

    assert inputs.tolist() == [[-1, 0, 1, 2], [-1, 4, 5, 6], [-1, 8, -1, -1]]
    assert targets.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, -1, -1]]


def test_vocabulary_counts_transpositions():
    settings = TrainingSettings(validation_share=0.0, transpose_low=-1, transpose_high=1)

    corpus = prepare_corpus([Piece("a", [Note(60, 0, 0.5), Note(62, 0.5, 0.5)])], settings)

    assert Token(59, 6) in corpus.vocabulary
    assert Token(63, 6) in corpus.vocabulary


@pytest.mark.tensorflow
def test_train_writes_loadable_bundle(tmp_path, caplog):
    pytest.importorskip("tensorflow")
    from sideman.training import train

    for index in range(4):
        write_midi(tmp_path / f"solo{index}.mid", [note_track(scale_phrase(60 + index, count=24, length=0.25))])
    (tmp_path / "broken.mid").write_bytes(b"MThd")
    settings = TrainingSettings(n_a=8, tx=8, max_epochs=3, validation_share=0.25, batch_size=4, seed=1)

    with caplog.at_level(logging.INFO):
        corpus = read_corpus([tmp_path])
        train(corpus, settings, tmp_path / "out.sideman", sources=[str(tmp_path)])

    bundle = load_bundle(tmp_path / "out.sideman")
    assert bundle.n_a == 8
    assert len(bundle.metadata["corpus"]["validation_pieces"]) == 1
    assert "skipped 1" in caplog.text
    assert bundle.metadata["training"]["epochs_run"] >= 1
