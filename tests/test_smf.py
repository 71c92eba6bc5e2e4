import io

import mido
import pytest
from hypothesis import given, settings, strategies as st
from mido.midifiles.meta import encode_variable_int

from sideman.smf import (
    MAX_TEMPO,
    MAX_TICKS_PER_BEAT,
    MAX_VARIABLE_LENGTH,
    NOTE_OFF,
    NOTE_ON,
    encode_header,
    encode_note_track,
    encode_type0_file,
    encode_variable_length,
    tempo_from_bpm,
)

HEADER_480 = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0"
TEMPO_120 = b"\x00\xff\x51\x03\x07\xa1\x20"  # set_tempo 500000 microseconds per beat at tick 0
END_OF_TRACK = b"\xff\x2f\x00"


def saved_by_mido(ticks_per_beat: int, microseconds_per_beat: int, events: list[tuple[int, int, int, int]]) -> bytes:
    """Build the same type 0 file from mido messages and return the bytes mido saves."""
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=microseconds_per_beat, time=0)])
    previous = 0
    for tick, status, note, velocity in events:
        track.append(mido.Message.from_bytes([status, note, velocity], time=tick - previous))
        previous = tick

    buffer = io.BytesIO()
    mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat, tracks=[track]).save(file=buffer)
    return buffer.getvalue()


def track_chunk(body: bytes) -> bytes:
    return b"MTrk" + len(body).to_bytes(4, "big") + body


@st.composite
def note_event_lists(draw):
    """Note events in time order: one channel or several, ties, and delta times of 1 to 4 bytes."""
    channels = draw(st.lists(st.integers(0, 15), min_size=1, max_size=3))
    delta = st.one_of(st.just(0), st.integers(1, 0x7F), st.integers(0x80, 0x3FFF), st.integers(0x4000, 0x3FFFFF))
    events = []
    tick = 0
    for _ in range(draw(st.integers(0, 40))):
        tick += draw(delta)
        status = draw(st.sampled_from((NOTE_ON, NOTE_OFF))) | draw(st.sampled_from(channels))
        events.append((tick, status, draw(st.integers(0, 127)), draw(st.integers(0, 127))))
    return events


@pytest.mark.parametrize(
    "value, encoded",
    [
        # The shortest and longest values of 1, 2, 3 and 4 bytes, and values between.
        (0x00, b"\x00"),
        (0x40, b"\x40"),
        (0x7F, b"\x7f"),
        (0x80, b"\x81\x00"),
        (0x2000, b"\xc0\x00"),
        (0x3FFF, b"\xff\x7f"),
        (0x4000, b"\x81\x80\x00"),
        (0x100000, b"\xc0\x80\x00"),
        (0x1FFFFF, b"\xff\xff\x7f"),
        (0x200000, b"\x81\x80\x80\x00"),
        (0x8000000, b"\xc0\x80\x80\x00"),
        (0x0FFFFFFF, b"\xff\xff\xff\x7f"),
    ],
)
def test_variable_length_known_values(value, encoded):
    assert encode_variable_length(value) == encoded


@given(st.integers(0, MAX_VARIABLE_LENGTH))
def test_variable_length_matches_mido(value):
    assert encode_variable_length(value) == bytes(encode_variable_int(value))


@pytest.mark.parametrize("value", [-1, MAX_VARIABLE_LENGTH + 1])
def test_variable_length_rejects_out_of_range(value):
    with pytest.raises(ValueError, match=f"invalid variable-length quantity {value}"):
        encode_variable_length(value)


def test_header_type0():
    assert encode_header(0, 1, 480) == HEADER_480


@pytest.mark.parametrize("file_type, tracks, ticks_per_beat", [(0, 1, 1), (1, 3, 96), (1, 2, MAX_TICKS_PER_BEAT)])
def test_header_matches_mido(file_type, tracks, ticks_per_beat):
    buffer = io.BytesIO()
    mido.MidiFile(type=file_type, ticks_per_beat=ticks_per_beat, tracks=[mido.MidiTrack() for _ in range(tracks)]).save(file=buffer)

    assert buffer.getvalue().startswith(encode_header(file_type, tracks, ticks_per_beat))


@pytest.mark.parametrize(
    "file_type, tracks, ticks_per_beat, message",
    [
        (3, 1, 480, "invalid MIDI file type 3"),
        (0, 2, 480, "exactly 1 track, not 2"),
        (1, 0x10000, 480, "invalid number of tracks"),
        (0, 1, 0, "invalid ticks per beat 0"),
        (0, 1, MAX_TICKS_PER_BEAT + 1, "invalid ticks per beat 32768"),
    ],
)
def test_header_rejects_invalid(file_type, tracks, ticks_per_beat, message):
    with pytest.raises(ValueError, match=message):
        encode_header(file_type, tracks, ticks_per_beat)


def test_empty_track_has_tempo_and_end():
    assert encode_note_track([], 500_000) == track_chunk(TEMPO_120 + b"\x00" + END_OF_TRACK)


def test_running_status_only_within_one_status_byte():
    events = [
        (0, NOTE_ON, 60, 90),
        (0, NOTE_ON, 64, 90),  # same status: left out
        (240, NOTE_OFF, 60, 0),
        (240, NOTE_OFF, 64, 0),  # same status: left out
        (240, NOTE_ON | 1, 67, 100),  # another channel: written
        (480, NOTE_OFF | 1, 67, 0),
    ]

    body = encode_note_track(events, 500_000)

    expected = TEMPO_120 + (
        b"\x00\x90\x3c\x5a"
        b"\x00\x40\x5a"
        b"\x81\x70\x80\x3c\x00"
        b"\x00\x40\x00"
        b"\x00\x91\x43\x64"
        b"\x81\x70\x81\x43\x00"
        b"\x00" + END_OF_TRACK
    )
    assert body == track_chunk(expected)


def test_type0_file_equals_header_and_track():
    events = [(0, NOTE_ON, 60, 90), (480, NOTE_OFF, 60, 0)]

    assert encode_type0_file(480, 500_000, events) == HEADER_480 + encode_note_track(events, 500_000)


@settings(max_examples=300, deadline=None)
@given(
    note_event_lists(),
    st.integers(1, MAX_TICKS_PER_BEAT),
    st.integers(1, MAX_TEMPO),
)
def test_type0_file_matches_mido(events, ticks_per_beat, microseconds_per_beat):
    encoded = encode_type0_file(ticks_per_beat, microseconds_per_beat, events)

    assert encoded == saved_by_mido(ticks_per_beat, microseconds_per_beat, events)


@settings(max_examples=100, deadline=None)
@given(note_event_lists())
def test_type0_file_reads_back_in_mido(events):
    midi = mido.MidiFile(file=io.BytesIO(encode_type0_file(480, 500_000, events)))

    ticks = 0
    read_back = []
    for message in midi.tracks[0]:
        ticks += message.time
        if not message.is_meta:
            read_back.append((ticks, *message.bytes()))
    assert midi.type == 0
    assert midi.tracks[0][0].type == "set_tempo"
    assert midi.tracks[0][-1].type == "end_of_track"
    assert read_back == events


@pytest.mark.parametrize(
    "events, message",
    [
        ([(480, NOTE_ON, 60, 90), (240, NOTE_OFF, 60, 0)], "tick 240 comes after one at tick 480"),
        ([(0, 0xB0, 7, 100)], "invalid note event"),  # control change
        ([(0, 0x7F, 60, 90)], "invalid note event"),  # a data byte, not a status byte
        ([(0, NOTE_ON, 128, 90)], "invalid note event"),
        ([(0, NOTE_ON, 60, -1)], "invalid note event"),
        ([(MAX_VARIABLE_LENGTH + 1, NOTE_ON, 60, 90)], "invalid variable-length quantity"),
    ],
)
def test_note_track_rejects_invalid_events(events, message):
    with pytest.raises(ValueError, match=message):
        encode_note_track(events, 500_000)


@pytest.mark.parametrize("microseconds_per_beat", [0, MAX_TEMPO + 1])
def test_note_track_rejects_tempo_out_of_range(microseconds_per_beat):
    with pytest.raises(ValueError, match="invalid tempo"):
        encode_note_track([], microseconds_per_beat)


@given(st.one_of(st.floats(20.0, 400.0), st.integers(20, 400)))
def test_tempo_from_bpm_matches_mido(bpm):
    assert tempo_from_bpm(bpm) == mido.bpm2tempo(bpm)
