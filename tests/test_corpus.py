import io
import logging
import zipfile

import numpy as np
import pytest

from sideman.corpus import read_corpus
from sideman.errors import CorpusError
from sideman.wjazzd import estimate_tempo, read_wjazzd
from tests.midi_builders import note_track, scale_phrase, write_midi


def test_folder_searched_recursively(tmp_path):
    (tmp_path / "sub").mkdir()
    write_midi(tmp_path / "one.mid", [note_track(scale_phrase())])
    write_midi(tmp_path / "sub" / "two.MIDI", [note_track(scale_phrase(65))])
    (tmp_path / "notes.txt").write_text("not midi")

    pieces = read_corpus([tmp_path])

    assert sorted(piece.name for piece in pieces) == ["one.mid", "sub/two.MIDI"]


def test_unreadable_file_skipped_and_counted(tmp_path, caplog):
    write_midi(tmp_path / "good.mid", [note_track(scale_phrase())])
    (tmp_path / "broken.mid").write_bytes(b"MThd\x00\x00")

    with caplog.at_level(logging.INFO):
        pieces = read_corpus([tmp_path])

    assert [piece.name for piece in pieces] == ["good.mid"]
    assert "broken.mid" in caplog.text
    assert "read 1 MIDI files, skipped 1" in caplog.text


def test_missing_path(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        read_corpus([tmp_path / "absent"])


def test_nothing_readable(tmp_path):
    (tmp_path / "broken.mid").write_bytes(b"junk")

    with pytest.raises(CorpusError, match="no readable piece"):
        read_corpus([tmp_path])


def make_wjazzd(folder, solos, tempos):
    with zipfile.ZipFile(folder / "score_csv.zip", "w") as archive:
        for name, rows in solos.items():
            text = "".join(f"{pitch:.18e},{onset:.18e},{duration:.18e}\n" for pitch, onset, duration in rows)
            archive.writestr(f"{name}_solo.csv", text)
    table = io.StringIO()
    table.write(",avgtempo,base_name,instrument\n")
    for name, tempo in tempos.items():
        table.write(f"{name},{tempo},{name},ts\n")
    (folder / "df_solos.csv").write_text(table.getvalue())


def test_wjazzd_folder_read_with_tempo(tmp_path):
    rows = [(60 + index % 5, index * 0.25, 0.2) for index in range(40)]
    make_wjazzd(tmp_path, {"Player_Tune_FINAL": rows, "Other_Tune's_FINAL": rows}, {"Player_Tune_FINAL": 120.0})

    pieces = read_corpus([tmp_path])

    by_name = {piece.name: piece for piece in pieces}
    assert by_name["Player_Tune_FINAL"].tempo == 120.0
    assert by_name["Player_Tune_FINAL"].notes[1].onset == pytest.approx(0.5)
    assert by_name["Other_Tune's_FINAL"].tempo is not None


def test_wjazzd_logs_estimated_count(tmp_path, caplog):
    rows = [(60, index * 0.25, 0.2) for index in range(40)]
    make_wjazzd(tmp_path, {"A_FINAL": rows, "B_FINAL": rows}, {"A_FINAL": 120.0})

    with caplog.at_level(logging.INFO):
        read_wjazzd(tmp_path)

    assert "estimated from the notes for 1" in caplog.text


def test_wjazzd_simultaneous_onsets_keep_top_note(tmp_path):
    rows = [(60, 0.0, 0.2), (67, 0.0, 0.2), (62, 0.5, 0.2)]
    make_wjazzd(tmp_path, {"A_FINAL": rows}, {"A_FINAL": 60.0})

    piece = read_wjazzd(tmp_path)[0]

    assert [note.pitch for note in piece.notes] == [67, 62]


@pytest.mark.parametrize("bpm", [100.0, 160.0, 220.0])
def test_tempo_estimate_on_swung_eighths(bpm):
    beat = 60.0 / bpm
    # Swung eighths (2:1), so the rhythm itself marks the beat.
    onsets = np.array([(index // 2 + (2 / 3) * (index % 2)) * beat for index in range(200)])

    estimate = estimate_tempo(onsets)

    ratios = [estimate / bpm, estimate / (2 * bpm), estimate / (bpm / 2)]
    assert min(abs(ratio - 1) for ratio in ratios) < 0.05
