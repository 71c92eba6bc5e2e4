import os
import mido
import pytest

from sideman.errors import MidiFileError
from sideman.midifile import read_midi_file
from tests.midi_builders import note_track, scale_phrase, write_midi


def test_type0_reads_notes_in_beats(tmp_path):
    path = write_midi(tmp_path / "a.mid", [note_track(scale_phrase(), tempo_bpm=90)], midi_type=0)

    piece = read_midi_file(path)

    assert [note.pitch for note in piece.notes] == [60, 62, 64, 65, 67, 69, 71, 72]
    assert [note.onset for note in piece.notes] == [index * 0.5 for index in range(8)]
    assert piece.tempo == pytest.approx(90)


@pytest.mark.parametrize("ticks_per_beat", [1, 96, 480, 32767])
def test_any_ticks_per_beat(tmp_path, ticks_per_beat):
    notes = [(60, 0, 1), (62, 1, 1), (64, 2, 2)]
    path = write_midi(tmp_path / "a.mid", [note_track(notes, ticks_per_beat=ticks_per_beat)], ticks_per_beat=ticks_per_beat)

    piece = read_midi_file(path)

    assert [(note.pitch, note.onset, note.length) for note in piece.notes] == [(60, 0, 1), (62, 1, 1), (64, 2, 2)]


def test_tempo_change_keeps_beats(tmp_path):
    track = note_track([(60, 0, 1), (62, 1, 1), (64, 2, 1)], tempo_bpm=120)
    track.insert(2, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(60), time=0))
    path = write_midi(tmp_path / "a.mid", [track])

    piece = read_midi_file(path)

    assert [note.onset for note in piece.notes] == [0, 1, 2]


def test_track_with_most_notes_chosen(tmp_path):
    bass = note_track([(40, 0, 2), (43, 2, 2)], channel=1)
    melody = note_track(scale_phrase(72), channel=0)
    path = write_midi(tmp_path / "a.mid", [bass, melody])

    piece = read_midi_file(path)

    assert piece.notes[0].pitch == 72
    assert piece.info == {"track": 2, "channel": 1}


def test_from_track_and_channel(tmp_path):
    bass = note_track([(40, 0, 2), (43, 2, 2)], channel=1)
    melody = note_track(scale_phrase(72), channel=0)
    path = write_midi(tmp_path / "a.mid", [bass, melody])

    assert [n.pitch for n in read_midi_file(path, from_track=1).notes] == [40, 43]
    assert [n.pitch for n in read_midi_file(path, from_channel=2).notes] == [40, 43]
    with pytest.raises(MidiFileError, match="channel 5"):
        read_midi_file(path, from_channel=5)


def test_drums_ignored(tmp_path):
    drums = note_track([(36, index * 0.25, 0.1) for index in range(32)], channel=9)
    melody = note_track(scale_phrase(), channel=0)
    path = write_midi(tmp_path / "a.mid", [drums, melody])

    piece = read_midi_file(path)

    assert all(note.pitch >= 60 for note in piece.notes)


def test_drums_only_is_clear_error(tmp_path):
    path = write_midi(tmp_path / "drums.mid", [note_track([(36, 0, 1)], channel=9)])

    with pytest.raises(MidiFileError, match="drums.mid.*no notes"):
        read_midi_file(path)


def test_chord_reduced_to_top_note(tmp_path):
    chords = [(60, 0, 1), (64, 0, 1), (67, 0, 1), (62, 1, 1), (65, 1, 1), (69, 1, 1)]
    path = write_midi(tmp_path / "a.mid", [note_track(chords)])

    piece = read_midi_file(path)

    assert [note.pitch for note in piece.notes] == [67, 69]


def test_note_under_higher_sounding_note_dropped(tmp_path):
    notes = [(72, 0, 4), (48, 1, 1), (74, 4, 1)]
    path = write_midi(tmp_path / "a.mid", [note_track(notes)])

    piece = read_midi_file(path)

    assert [note.pitch for note in piece.notes] == [72, 74]


def test_unterminated_note_ends_at_track_end(tmp_path):
    track = note_track([(60, 0, 1)])
    track.append(mido.Message("note_on", note=62, velocity=80, time=0))
    track.append(mido.MetaMessage("end_of_track", time=960))
    path = write_midi(tmp_path / "a.mid", [track])

    piece = read_midi_file(path)

    assert piece.notes[-1].pitch == 62
    assert piece.notes[-1].length == 2


def test_truncated_file_is_clear_error(tmp_path):
    path = write_midi(tmp_path / "a.mid", [note_track(scale_phrase())])
    path.write_bytes(path.read_bytes()[:30])

    with pytest.raises(MidiFileError, match="a.mid"):
        read_midi_file(path)


def test_not_midi_is_clear_error(tmp_path):
    path = tmp_path / "text.mid"
    path.write_text("hello")

    with pytest.raises(MidiFileError, match="text.mid"):
        read_midi_file(path)


def test_fifo_rejected_without_blocking(tmp_path):
    path = tmp_path / "pipe.mid"
    os.mkfifo(path)

    with pytest.raises(MidiFileError, match="not a regular file"):
        read_midi_file(path)
