"""The MIDI file reader on damaged, unusual and hostile files, built from raw bytes or with mido."""

import logging
import struct
import time

import mido
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sideman.midifile as midifile
from sideman.encoding import EncodingSettings, tokenize_notes
from sideman.errors import InvalidInputError, MidiFileError
from sideman.midifile import MAX_NOTE_BEATS, MAX_SILENCE_BEATS, read_midi_file
from tests.midi_builders import note_track, scale_phrase, write_midi

END_OF_TRACK = b"\x00\xff\x2f\x00"


def vlq(value: int) -> bytes:
    """Encode a variable-length quantity as SMF delta times and lengths are."""
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(groups))


def header(track_count: int, division: int = 480, smf_format: int = 1) -> bytes:
    return b"MThd" + struct.pack(">LHHH", 6, smf_format, track_count, division)


def chunk(body: bytes, chunk_type: bytes = b"MTrk", length: int | None = None) -> bytes:
    return chunk_type + struct.pack(">L", len(body) if length is None else length) + body


def smf(*bodies: bytes, division: int = 480, smf_format: int = 1) -> bytes:
    return header(len(bodies), division, smf_format) + b"".join(chunk(body) for body in bodies)


def note(pitch: int, delta: int, length: int, channel: int = 0) -> bytes:
    """A note_on after `delta` ticks and its note_off `length` ticks later."""
    return vlq(delta) + bytes((0x90 | channel, pitch, 80)) + vlq(length) + bytes((0x80 | channel, pitch, 0))


def write(tmp_path, data: bytes, name: str = "edge.mid"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def lines_of(piece):
    return [(n.pitch, n.onset, n.length) for n in piece.notes]


# Damaged structure

def test_every_truncation_is_clear_error(tmp_path):
    data = smf(note(60, 0, 480) + note(62, 0, 480) + END_OF_TRACK, note(48, 0, 960) + END_OF_TRACK)

    for size in range(len(data)):
        path = write(tmp_path, data[:size], "cut.mid")
        with pytest.raises(MidiFileError, match="cut.mid"):
            read_midi_file(path)


def test_truncated_track_names_lengths(tmp_path):
    body = note(60, 0, 480) + note(62, 0, 480) + END_OF_TRACK
    path = write(tmp_path, smf(body)[:-5])

    with pytest.raises(MidiFileError, match=rf"track 1 declares {len(body)} bytes but the file ends after {len(body) - 5} of them \(truncated"):
        read_midi_file(path)


def test_chunk_length_too_short(tmp_path):
    body = note(60, 0, 480) + END_OF_TRACK
    path = write(tmp_path, header(1) + chunk(body, length=6) + b"\x00" * 10)

    with pytest.raises(MidiFileError, match=r"edge.mid: track 1, byte \d+: .*chunk length of 6 bytes is probably wrong"):
        read_midi_file(path)


def test_chunk_length_ending_between_events(tmp_path):
    # The declared length ends the first track after one note, so the rest of
    # its events are read where the next chunk header belongs.
    body = note(60, 0, 480) + note(62, 0, 480) + END_OF_TRACK
    path = write(tmp_path, header(2) + chunk(body, length=9) + chunk(END_OF_TRACK))

    with pytest.raises(MidiFileError, match="expected a chunk at byte 31.*length of the chunk before it is probably wrong"):
        read_midi_file(path)


def test_chunk_length_too_long(tmp_path):
    body = note(60, 0, 480) + END_OF_TRACK
    path = write(tmp_path, header(1) + chunk(body, length=len(body) + 100))

    with pytest.raises(MidiFileError, match=f"declares {len(body) + 100} bytes but the file ends after {len(body)} of them"):
        read_midi_file(path)


def test_fewer_tracks_than_header_declares(tmp_path):
    path = write(tmp_path, header(3) + chunk(note(60, 0, 480) + END_OF_TRACK))

    with pytest.raises(MidiFileError, match="ends after 1 of the 3 tracks its header declares"):
        read_midi_file(path)


def test_unknown_chunk_skipped(tmp_path):
    track = chunk(note(60, 0, 480) + END_OF_TRACK)
    path = write(tmp_path, header(1) + chunk(b"vendor data", chunk_type=b"XFIH") + track)

    piece = read_midi_file(path)

    assert lines_of(piece) == [(60, 0.0, 1.0)]


def test_bytes_after_last_track_ignored(tmp_path):
    path = write(tmp_path, smf(note(60, 0, 480) + END_OF_TRACK) + b"\x00\x00garbage")

    assert lines_of(read_midi_file(path)) == [(60, 0.0, 1.0)]


@pytest.mark.parametrize(("data", "problem"), [
    (b"", "starts with b'', expected b'MThd'"),
    (b"RIFF\x00\x00\x00\x00RMID", "starts with b'RIFF'"),
    (b"MThd\x00\x00\x00\x06\x00\x01", "header chunk is cut off after 10 bytes"),
    (b"MThd\x00\x00\x00\x04\x00\x01\x00\x01\x01\xe0", "declares 4 bytes, expected at least 6"),
    (header(1, smf_format=3) + chunk(END_OF_TRACK), "format 3, expected 0, 1 or 2"),
    (header(1, division=0) + chunk(END_OF_TRACK), "0 ticks per beat"),
])
def test_bad_header(tmp_path, data, problem):
    path = write(tmp_path, data)

    with pytest.raises(MidiFileError, match="edge.mid") as raised:
        read_midi_file(path)

    assert problem in str(raised.value)


def test_end_of_track_missing(tmp_path):
    # The last note has no note_off either: it ends with the track's last event.
    body = note(60, 0, 480) + b"\x00\x90\x3e\x50" + b"\x83\x60\xb0\x07\x64"
    path = write(tmp_path, smf(body))

    piece = read_midi_file(path)

    assert lines_of(piece) == [(60, 0.0, 1.0), (62, 1.0, 1.0)]


def test_events_after_end_of_track_ignored(tmp_path):
    path = write(tmp_path, smf(note(60, 0, 480) + END_OF_TRACK + note(72, 0, 480)))

    assert lines_of(read_midi_file(path)) == [(60, 0.0, 1.0)]


# Formats and time divisions

def test_format_2_reads_one_track(tmp_path):
    first = note(60, 0, 480) + note(62, 0, 480) + note(64, 0, 480) + END_OF_TRACK
    second = note(72, 960, 480) + END_OF_TRACK
    path = write(tmp_path, smf(first, second, smf_format=2))

    assert [n.pitch for n in read_midi_file(path).notes] == [60, 62, 64]
    assert lines_of(read_midi_file(path, from_track=2)) == [(72, 2.0, 1.0)]


@pytest.mark.parametrize("ticks_per_beat", [1, 32767])
def test_extreme_ticks_per_beat(tmp_path, ticks_per_beat):
    body = note(60, 0, ticks_per_beat) + note(62, ticks_per_beat, 2 * ticks_per_beat) + END_OF_TRACK
    path = write(tmp_path, smf(body, division=ticks_per_beat))

    assert lines_of(read_midi_file(path)) == [(60, 0.0, 1.0), (62, 2.0, 2.0)]


def smpte_division(frames_per_second: int, ticks_per_frame: int) -> int:
    return ((256 - frames_per_second) << 8) | ticks_per_frame


def set_tempo(bpm: float, delta: int = 0) -> bytes:
    return vlq(delta) + b"\xff\x51\x03" + mido.bpm2tempo(bpm).to_bytes(3, "big")


def test_smpte_at_default_tempo(tmp_path):
    # 25 frames per second x 40 ticks per frame: a tick is a millisecond, a second is 2 beats at 120 BPM.
    body = note(60, 0, 500) + note(62, 500, 250) + END_OF_TRACK
    path = write(tmp_path, smf(body, division=smpte_division(25, 40)))

    piece = read_midi_file(path)

    assert lines_of(piece) == [(60, 0.0, 1.0), (62, 2.0, 0.5)]
    assert piece.tempo == pytest.approx(120)


def test_smpte_follows_tempo_map(tmp_path):
    # 90 BPM for the first second (1.5 beats), then 60 BPM: a second later is 2.5 beats.
    conductor = set_tempo(90) + set_tempo(60, delta=1000) + END_OF_TRACK
    melody = note(60, 0, 1000) + note(62, 0, 1000) + END_OF_TRACK
    path = write(tmp_path, smf(conductor, melody, division=smpte_division(25, 40)))

    piece = read_midi_file(path)

    assert [n.onset for n in piece.notes] == pytest.approx([0.0, 1.5])
    assert [n.length for n in piece.notes] == pytest.approx([1.5, 1.0])
    assert piece.tempo == pytest.approx(90)


def test_smpte_drop_frame_rate(tmp_path):
    # 29.97 frames per second x 100 ticks: 2997 ticks are very nearly one second, 2 beats at 120 BPM.
    path = write(tmp_path, smf(note(60, 0, 10) + note(62, 2987, 10) + END_OF_TRACK, division=smpte_division(29, 100)))

    assert read_midi_file(path).notes[1].onset == pytest.approx(2 * 2997 * 1001 / 30000 / 100, rel=1e-9)


@pytest.mark.parametrize(("division", "problem"), [
    (smpte_division(23, 40), "23 frames per second, expected 24, 25, 29 (29.97 drop-frame) or 30"),
    (smpte_division(25, 0), "0 ticks per frame"),
])
def test_invalid_smpte_division(tmp_path, division, problem):
    path = write(tmp_path, smf(note(60, 0, 10) + END_OF_TRACK, division=division))

    with pytest.raises(MidiFileError, match="edge.mid: SMPTE") as raised:
        read_midi_file(path)

    assert problem in str(raised.value)


def test_zero_tempo_ignored(tmp_path, caplog):
    body = b"\x00\xff\x51\x03\x00\x00\x00" + note(60, 0, 480) + END_OF_TRACK
    path = write(tmp_path, smf(body, division=smpte_division(25, 40)))

    with caplog.at_level(logging.WARNING, logger="sideman.midifile"):
        piece = read_midi_file(path)

    assert piece.tempo == pytest.approx(120)
    assert "ignored a set_tempo event of 0 microseconds" in caplog.text


# Long times

def test_enormous_delta_time_shortened(tmp_path, caplog):
    # At 1 tick per beat the largest delta time, 0x0FFFFFFF, is 268 million beats.
    body = note(60, 0, 1) + note(62, 0x0FFFFFFF, 1) + note(64, 0x0FFFFFFF, 1) + END_OF_TRACK
    path = write(tmp_path, smf(body, division=1))

    with caplog.at_level(logging.WARNING, logger="sideman.midifile"):
        piece = read_midi_file(path)

    assert lines_of(piece) == [(60, 0.0, 1.0), (62, 1.0 + MAX_SILENCE_BEATS, 1.0), (64, 2.0 + 2 * MAX_SILENCE_BEATS, 1.0)]
    assert "edge.mid: 2 silences longer than 64 beats" in caplog.text
    assert len(tokenize_notes(piece.notes, EncodingSettings())) <= 3 + 2 * MAX_SILENCE_BEATS / 8


def test_enormous_leading_silence_shortened(tmp_path):
    path = write(tmp_path, smf(note(60, 0x0FFFFFFF, 1) + END_OF_TRACK, division=1))

    assert lines_of(read_midi_file(path)) == [(60, MAX_SILENCE_BEATS, 1.0)]


def test_hours_long_note_cut(tmp_path, caplog):
    body = note(72, 0, 0x0FFFFFFF) + note(60, 0, 1) + END_OF_TRACK
    path = write(tmp_path, smf(body, division=1))

    with caplog.at_level(logging.WARNING, logger="sideman.midifile"):
        piece = read_midi_file(path)

    assert lines_of(piece) == [(72, 0.0, MAX_NOTE_BEATS), (60, 2 * MAX_SILENCE_BEATS, 1.0)]
    assert "edge.mid: 1 notes longer than 64 beats cut" in caplog.text


def test_many_enormous_delta_times_stay_small(tmp_path):
    # A thousand notes hours apart: the line stays a thousand notes with bounded rests.
    body = b"".join(note(60 + index % 12, 0x0FFFFFFF, 1) for index in range(1000)) + END_OF_TRACK
    path = write(tmp_path, smf(body, division=1))

    started = time.monotonic()
    tokens = tokenize_notes(read_midi_file(path).notes, EncodingSettings())

    assert len(tokens) <= 1000 * (1 + MAX_SILENCE_BEATS / 8)
    # Generous: the point is seconds, not the hours a rest per 8 beats would take.
    assert time.monotonic() - started < 60


def test_stuck_note_capped_in_skyline(tmp_path):
    # A note_on with no note_off sounds to the end of the track; the skyline
    # reduction drops lower notes under it for MAX_NOTE_BEATS only.
    stuck = vlq(0) + bytes((0x90, 96, 80))
    later = note(60, 10, 1) + note(62, int(MAX_NOTE_BEATS), 1)
    path = write(tmp_path, smf(stuck + later + END_OF_TRACK, division=1))

    assert [n.pitch for n in read_midi_file(path).notes] == [96, 62]


# Notes

def test_zero_length_note_read_and_encoded(tmp_path):
    body = note(60, 0, 0) + note(62, 480, 480) + END_OF_TRACK
    path = write(tmp_path, smf(body))

    piece = read_midi_file(path)
    tokens = tokenize_notes(piece.notes, EncodingSettings())

    assert lines_of(piece) == [(60, 0.0, 0.0), (62, 1.0, 1.0)]
    assert [token.pitch for token in tokens if token.pitch is not None] == [60, 62]
    assert all(token.steps >= 1 for token in tokens)


def test_overlapping_same_pitch_retriggers(tmp_path):
    # on 60 at beat 0, on 60 at beat 1, off at beat 2, off at beat 3.
    body = b"\x00\x90\x3c\x50" + b"\x83\x60\x90\x3c\x50" + b"\x83\x60\x80\x3c\x00" + b"\x83\x60\x80\x3c\x00" + END_OF_TRACK
    path = write(tmp_path, smf(body))

    assert lines_of(read_midi_file(path)) == [(60, 0.0, 1.0), (60, 1.0, 1.0)]


def test_duplicate_note_on_same_tick_is_one_note(tmp_path):
    body = b"\x00\x90\x3c\x50" + b"\x00\x90\x3c\x50" + b"\x83\x60\x80\x3c\x00" + END_OF_TRACK
    path = write(tmp_path, smf(body))

    assert lines_of(read_midi_file(path)) == [(60, 0.0, 1.0)]


def test_note_off_without_note_on_ignored(tmp_path):
    body = b"\x00\x80\x40\x00" + note(60, 0, 480) + END_OF_TRACK
    path = write(tmp_path, smf(body))

    assert lines_of(read_midi_file(path)) == [(60, 0.0, 1.0)]


def test_no_notes_is_clear_error(tmp_path):
    body = b"\x00\xff\x03\x05Empty" + b"\x00\xb0\x07\x64" + END_OF_TRACK
    path = write(tmp_path, smf(body))

    with pytest.raises(MidiFileError, match=r"edge.mid: no notes \(drums on channel 10 are ignored\)"):
        read_midi_file(path)


def test_no_tracks_is_clear_error(tmp_path):
    path = write(tmp_path, header(0))

    with pytest.raises(MidiFileError, match="edge.mid: no notes"):
        read_midi_file(path)


def test_drums_only_counts_drum_notes(tmp_path):
    drums = b"".join(note(36, 0, 120, channel=9) for _ in range(5)) + END_OF_TRACK
    path = write(tmp_path, smf(drums))

    with pytest.raises(MidiFileError, match="drums.mid: no notes; its 5 drum notes on channel 10 are ignored"):
        read_midi_file(write(tmp_path, path.read_bytes(), "drums.mid"))


# Running status, sysex and other events

def test_running_status(tmp_path):
    # One note_on status, then data pairs only; velocity 0 ends a note.
    body = b"\x00\x90\x3c\x50" + b"\x83\x60\x3c\x00" + b"\x00\x3e\x50" + b"\x83\x60\x3e\x00" + END_OF_TRACK
    path = write(tmp_path, smf(body))

    assert lines_of(read_midi_file(path)) == [(60, 0.0, 1.0), (62, 1.0, 1.0)]


def test_running_status_across_meta_and_sysex(tmp_path):
    meta = b"\x00\xff\x01\x04text"
    sysex = b"\x00\xf0\x05\x7e\x7f\x09\x01\xf7"
    body = b"\x00\x90\x3c\x50" + meta + sysex + b"\x83\x60\x3c\x00" + END_OF_TRACK
    path = write(tmp_path, smf(body))

    assert lines_of(read_midi_file(path)) == [(60, 0.0, 1.0)]


def test_running_status_without_status_is_error(tmp_path):
    path = write(tmp_path, smf(b"\x00\x3c\x50" + END_OF_TRACK))

    with pytest.raises(MidiFileError, match="edge.mid: track 1, byte 23: data byte 0x3C with no status byte"):
        read_midi_file(path)


def test_sysex_and_escape_skipped(tmp_path):
    # Sysex payloads may hold any byte, including ones that look like status bytes.
    sysex = b"\x00\xf0\x06\x43\x90\x3c\x7f\x00\xf7"
    escape = b"\x00\xf7\x03\x90\x40\x50"
    body = sysex + escape + note(60, 0, 480) + END_OF_TRACK
    path = write(tmp_path, smf(body))

    assert lines_of(read_midi_file(path)) == [(60, 0.0, 1.0)]


def test_sysex_past_chunk_end_is_error(tmp_path):
    path = write(tmp_path, smf(b"\x00\xf0\x7f\x01\x02" + END_OF_TRACK))

    with pytest.raises(MidiFileError, match="sysex data of 127 bytes runs past the end of the track chunk"):
        read_midi_file(path)


def test_other_channel_messages_skipped(tmp_path):
    body = b"\x00\xc0\x05" + b"\x00\xd0\x40" + b"\x00\xe0\x00\x40" + b"\x00\xa0\x3c\x10" + note(60, 0, 480) + END_OF_TRACK
    path = write(tmp_path, smf(body))

    assert lines_of(read_midi_file(path)) == [(60, 0.0, 1.0)]


def test_undefined_status_is_error(tmp_path):
    path = write(tmp_path, smf(b"\x00\xf4" + END_OF_TRACK))

    with pytest.raises(MidiFileError, match="edge.mid: track 1, byte 23: undefined status byte 0xF4"):
        read_midi_file(path)


def test_overlong_delta_time_is_quick_error(tmp_path):
    # mido 1.3.3 takes quadratic time on such a run of continuation bytes.
    path = write(tmp_path, smf(b"\xff" * 200_000 + b"\x00"))

    with pytest.raises(MidiFileError, match="edge.mid: track 1, byte 22: delta time longer than 4 bytes"):
        read_midi_file(path)


# Size limits

def test_file_over_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(midifile, "MAX_FILE_BYTES", 64)
    path = write(tmp_path, smf(b"".join(note(60, 0, 10) for _ in range(10)) + END_OF_TRACK))

    with pytest.raises(MidiFileError, match="edge.mid: larger than"):
        read_midi_file(path)


def test_note_count_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(midifile, "MAX_NOTES", 10)
    first = b"".join(note(60, 0, 10) for _ in range(6)) + END_OF_TRACK
    path = write(tmp_path, smf(first, first))

    with pytest.raises(MidiFileError, match="edge.mid: track 2: the file contains more than 10 notes"):
        read_midi_file(path)


def test_file_name_with_nul_is_clear_error():
    with pytest.raises(MidiFileError, match="NUL character"):
        read_midi_file("seed\0.mid")


def test_unopenable_file_is_clear_error(tmp_path):
    # A path through a regular file fails to open with an OSError even for root, unlike a chmod.
    parent = write(tmp_path, smf(note(60, 0, 480) + END_OF_TRACK))

    with pytest.raises(MidiFileError, match="edge.mid/inner.mid: could not be read: Not a directory"):
        read_midi_file(parent / "inner.mid")


# Any bytes at all

VALID_FILE = smf(note(60, 0, 480) + set_tempo(100) + note(62, 0, 240) + END_OF_TRACK, note(48, 0, 960) + END_OF_TRACK)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, len(VALID_FILE) - 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_damaged_bytes_read_or_clear_error(tmp_path, changes):
    data = bytearray(VALID_FILE)
    for position, value in changes:
        data[position] = value
    path = write(tmp_path, bytes(data), "fuzz.mid")

    try:
        piece = read_midi_file(path)
    except MidiFileError as error:
        assert "fuzz.mid" in str(error)
    else:
        assert all(0 <= n.pitch <= 127 and n.length >= 0 for n in piece.notes)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_random_track_bytes_read_or_clear_error(tmp_path, body):
    path = write(tmp_path, smf(body), "fuzz.mid")

    try:
        read_midi_file(path)
    except MidiFileError as error:
        assert "fuzz.mid" in str(error)


# Callers: the file seeder behind --prime

def test_prime_file_seeder_reports_bad_file(tmp_path):
    from sideman.plugins.seeders import MidiFilePhrase
    from sideman.improviser import Improviser
    from sideman.sampling import SamplerChain
    from sideman.plugins.samplers import Temperature
    from tests.factories import random_bundle

    improviser = Improviser(random_bundle(), SamplerChain([], Temperature()), 0)
    path = write(tmp_path, smf(note(60, 0, 480) + END_OF_TRACK)[:-3], "seed.mid")

    with pytest.raises(InvalidInputError, match="seed.mid: track 1 declares"):
        MidiFilePhrase(path=str(path)).phrase(improviser)


def test_prime_file_seeder_bounded_on_huge_gaps(tmp_path):
    from sideman.plugins.seeders import MidiFilePhrase
    from sideman.improviser import Improviser
    from sideman.sampling import SamplerChain
    from sideman.plugins.samplers import Temperature
    from tests.factories import random_bundle

    improviser = Improviser(random_bundle(), SamplerChain([], Temperature()), 0)
    path = write(tmp_path, smf(note(60, 0, 1) + note(62, 0x0FFFFFFF, 1) + END_OF_TRACK, division=1), "seed.mid")

    tokens = MidiFilePhrase(path=str(path)).phrase(improviser)

    assert [token.pitch for token in tokens if token.pitch is not None] == [60, 62]
    assert len(tokens) <= 2 + MAX_SILENCE_BEATS / improviser.bundle.encoding.max_beats + 1


def test_mido_written_file_with_running_status_and_sysex(tmp_path):
    track = note_track(scale_phrase())
    track.insert(0, mido.Message("sysex", data=[0x7E, 0x7F, 0x09, 0x01], time=0))
    path = write_midi(tmp_path / "mido.mid", [track])

    assert [n.pitch for n in read_midi_file(path).notes] == [60, 62, 64, 65, 67, 69, 71, 72]
