"""Reading a training corpus that mixes good, broken and unusable MIDI files, without TensorFlow."""

import logging
import subprocess
import sys

import pytest

from sideman.corpus import read_corpus
from sideman.errors import CorpusError
from sideman.training import TrainingSettings, prepare_corpus
from tests.midi_builders import note_track, scale_phrase, write_midi

BROKEN_FILES = {
    "truncated.mid": "truncated",
    "text.mid": "not a MIDI file",
    "drums.mid": "drum notes on channel 10 are ignored",
    "silent.mid": "no notes",
    "smpte_bad.mid": "SMPTE time division with 23 frames per second",
}


def write_broken_files(folder):
    good_bytes = write_midi(folder / "scratch.mid", [note_track(scale_phrase())]).read_bytes()
    (folder / "scratch.mid").unlink()

    (folder / "truncated.mid").write_bytes(good_bytes[:-10])
    (folder / "text.mid").write_text("these are not the notes you are looking for")
    write_midi(folder / "drums.mid", [note_track([(36, index * 0.5, 0.25) for index in range(8)], channel=9)])
    write_midi(folder / "silent.mid", [note_track([])])
    # Division 0xE928: -23 frames per second, which SMPTE does not define.
    (folder / "smpte_bad.mid").write_bytes(good_bytes[:12] + b"\xe9\x28" + good_bytes[14:])


def make_corpus(folder):
    (folder / "set").mkdir()
    write_midi(folder / "good_one.mid", [note_track(scale_phrase())])
    write_midi(folder / "set" / "good_two.midi", [note_track(scale_phrase(65))])
    write_midi(folder / "one_note.mid", [note_track([(60, 0, 1)])])
    write_broken_files(folder)
    return folder


def warnings_of(caplog):
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def test_each_broken_file_warned_once(tmp_path, caplog):
    make_corpus(tmp_path)

    with caplog.at_level(logging.INFO, logger="sideman"):
        pieces = read_corpus([tmp_path])

    assert sorted(piece.name for piece in pieces) == ["good_one.mid", "one_note.mid", "set/good_two.midi"]
    warnings = warnings_of(caplog)
    assert len(warnings) == len(BROKEN_FILES)
    for name, problem in BROKEN_FILES.items():
        matching = [warning for warning in warnings if f"{tmp_path / name}:" in warning]
        assert len(matching) == 1, name
        assert problem in matching[0], matching[0]


def test_counts_read_and_skipped(tmp_path, caplog):
    make_corpus(tmp_path)

    with caplog.at_level(logging.INFO, logger="sideman"):
        read_corpus([tmp_path])

    assert f"read 3 MIDI files, skipped {len(BROKEN_FILES)} that could not be read" in caplog.text


def test_piece_with_one_note_skipped_for_training(tmp_path, caplog):
    make_corpus(tmp_path)
    pieces = read_corpus([tmp_path])
    caplog.clear()

    with caplog.at_level(logging.INFO, logger="sideman"):
        corpus = prepare_corpus(pieces, TrainingSettings(validation_share=0.0))

    assert sorted(corpus.training) == ["good_one.mid", "set/good_two.midi"]
    warnings = warnings_of(caplog)
    assert len(warnings) == 1
    assert f"skipped piece {tmp_path / 'one_note.mid'}: it has 1 note(s), training needs at least two" in warnings[0]
    assert "training on 2 of 3 pieces, skipped 1 with fewer than two notes" in caplog.text


def test_no_usable_file_fails_clearly(tmp_path):
    write_broken_files(tmp_path)

    with pytest.raises(CorpusError) as raised:
        read_corpus([tmp_path])

    message = str(raised.value)
    assert f"no readable piece in {tmp_path}" in message
    assert f"all {len(BROKEN_FILES)} MIDI files were skipped" in message


def test_only_one_note_pieces_fail_clearly(tmp_path):
    write_midi(tmp_path / "a.mid", [note_track([(60, 0, 1)])])
    write_midi(tmp_path / "b.mid", [note_track([(62, 0, 1)])])
    pieces = read_corpus([tmp_path])

    with pytest.raises(CorpusError, match="none of the corpus's 2 pieces has at least two notes"):
        prepare_corpus(pieces, TrainingSettings())


def test_single_broken_file_argument(tmp_path, caplog):
    write_broken_files(tmp_path)

    with caplog.at_level(logging.WARNING, logger="sideman"), pytest.raises(CorpusError, match="all 1 MIDI files were skipped"):
        read_corpus([tmp_path / "drums.mid"])

    assert warnings_of(caplog) == [f"skipped MIDI file {tmp_path / 'drums.mid'}: no notes; its 8 drum notes on channel 10 are ignored"]


def test_corpus_reading_needs_no_tensorflow(tmp_path):
    make_corpus(tmp_path)
    # A fresh interpreter, because another test in this process may have imported TensorFlow.
    script = (
        "import sys\n"
        "from sideman.corpus import read_corpus\n"
        "from sideman.training import TrainingSettings, prepare_corpus\n"
        f"prepare_corpus(read_corpus([{str(tmp_path)!r}]), TrainingSettings())\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('tensorflow', 'keras')))\n"
    )

    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
