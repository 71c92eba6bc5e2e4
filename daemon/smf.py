"""Encode a Standard MIDI File of note events straight to bytes, as mido 1.3's writer would.

A file is a header chunk (MThd) and track chunks (MTrk). Every event in a
track starts with its delta time, the ticks since the previous event, as a
variable-length quantity. A channel event with the same status byte as the
channel event before it leaves the status byte out (running status), and a
meta event cancels running status. mido's `write_track` makes the same
choices, so the bytes equal what mido saves for the same messages.

`generate` writes tens of thousands of notes, and building one checked
mido.Message per event took longer than drawing the notes from the model,
so this module works on plain integers.
"""

import struct
from collections.abc import Iterable

# Status bytes of note_off and note_on on channel 0. OR in the channel (0-15) for the others.
NOTE_OFF = 0x80
NOTE_ON = 0x90

MAX_TICKS_PER_BEAT = 0x7FFF  # the header's division has 15 bits when it counts ticks per beat
MAX_TEMPO = 0xFFFFFF  # set_tempo stores microseconds per beat in 3 bytes
MAX_VARIABLE_LENGTH = 0x0FFFFFFF  # the standard allows 4 bytes of 7 bits

MICROSECONDS_PER_MINUTE = 60_000_000

# (absolute tick, status byte, note 0-127, velocity 0-127) of a note_on or note_off.
NoteEvent = tuple[int, int, int, int]

_SET_TEMPO = b"\xff\x51\x03"
_END_OF_TRACK = b"\xff\x2f\x00"


def tempo_from_bpm(bpm: float) -> int:
    """Convert BPM to set_tempo's microseconds per beat, rounded as mido.bpm2tempo rounds it."""
    return round(MICROSECONDS_PER_MINUTE / bpm)


def encode_variable_length(value: int) -> bytes:
    """Encode a delta time or length as a variable-length quantity: 7 bits a byte, most significant first.

    Every byte but the last has bit 7 set. Raises ValueError outside 0 to
    MAX_VARIABLE_LENGTH. mido 1.3 writes longer quantities, which the
    standard does not allow.
    """
    if not 0 <= value <= MAX_VARIABLE_LENGTH:
        raise ValueError(f"invalid variable-length quantity {value}: allowed 0 to {MAX_VARIABLE_LENGTH}")

    encoded = bytearray((value & 0x7F,))
    value >>= 7
    while value:
        encoded.append(0x80 | value & 0x7F)
        value >>= 7
    encoded.reverse()
    return bytes(encoded)


def encode_header(file_type: int, track_count: int, ticks_per_beat: int) -> bytes:
    """Encode the MThd chunk: its length 6, the file type, the number of tracks and the ticks per beat."""
    if file_type not in (0, 1, 2):
        raise ValueError(f"invalid MIDI file type {file_type}: expected 0, 1 or 2")
    if file_type == 0 and track_count != 1:
        raise ValueError(f"a type 0 MIDI file has exactly 1 track, not {track_count}")
    if not 0 <= track_count <= 0xFFFF:
        raise ValueError(f"invalid number of tracks {track_count}: allowed 0 to {0xFFFF}")
    if not 1 <= ticks_per_beat <= MAX_TICKS_PER_BEAT:
        raise ValueError(f"invalid ticks per beat {ticks_per_beat}: allowed 1 to {MAX_TICKS_PER_BEAT}")
    return b"MThd" + struct.pack(">LHHH", 6, file_type, track_count, ticks_per_beat)


def encode_note_track(events: Iterable[NoteEvent], microseconds_per_beat: int) -> bytes:
    """Encode an MTrk chunk: a set_tempo meta event at tick 0, the note events, then end_of_track at the last event's tick.

    `events` must be in time order. Raises ValueError for a tempo outside 1
    to MAX_TEMPO, an event before the one preceding it, a status byte that is
    not a note_on or note_off, or a note or velocity outside 0-127.
    """
    if not 1 <= microseconds_per_beat <= MAX_TEMPO:
        raise ValueError(f"invalid tempo {microseconds_per_beat} microseconds per beat: allowed 1 to {MAX_TEMPO}")

    data = bytearray(b"\x00" + _SET_TEMPO + microseconds_per_beat.to_bytes(3, "big"))
    append = data.append
    running_status = None  # the set_tempo meta event cancels running status
    previous_tick = 0
    for tick, status, note, velocity in events:
        delta = tick - previous_tick
        if delta < 0:
            raise ValueError(f"note event at tick {tick} comes after one at tick {previous_tick}: events must be in time order")
        if not NOTE_OFF <= status <= NOTE_ON | 0x0F or not 0 <= note <= 127 or not 0 <= velocity <= 127:
            raise ValueError(f"invalid note event {(tick, status, note, velocity)}: expected a note_on or note_off status byte and a note and velocity from 0 to 127")

        # Deltas below 2**14 ticks take one or two bytes, written inline because this loop runs once per event.
        if delta < 0x80:
            append(delta)
        elif delta < 0x4000:
            append(0x80 | delta >> 7)
            append(delta & 0x7F)
        else:
            data += encode_variable_length(delta)

        if status != running_status:
            append(status)
            running_status = status
        append(note)
        append(velocity)
        previous_tick = tick

    data += b"\x00" + _END_OF_TRACK
    return b"MTrk" + struct.pack(">L", len(data)) + data


def encode_type0_file(ticks_per_beat: int, microseconds_per_beat: int, events: Iterable[NoteEvent]) -> bytes:
    """Encode a type 0 file: the header and one track of a set_tempo meta event and the note events, in time order."""
    return encode_header(0, 1, ticks_per_beat) + encode_note_track(events, microseconds_per_beat)
