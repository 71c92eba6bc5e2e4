"""Offline rendering for `generate`: draw a line from the model and write it as a standard MIDI file.

The file is a function of the model, seed and settings only (no dates or
names that change between runs), so the same command writes the same bytes.
Playing settings are checked here for both rendering and the live engine.
"""

import bisect
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import mido

from .encoding import Token
from .errors import SettingsError, SidemanError
from .improviser import Improviser
from .outfiles import replacing
from .smf import MAX_TICKS_PER_BEAT, NOTE_OFF, NOTE_ON, NoteEvent, encode_type0_file, tempo_from_bpm
from .tempo import validate_tempo

log = logging.getLogger(__name__)

# Ticks per beat in written files: 480 puts every step of the 12-step grid on a whole tick (40 ticks a step).
TICKS_PER_BEAT = 480

# Gate is the fraction of a note's duration that it sounds. Above 1 the note
# overlaps the next one (legato); a repeated pitch is still released first.
MIN_GATE = 0.01
MAX_GATE = 2.0

# A model that only draws rests would keep a render going forever.
MAX_RESTS_IN_A_ROW = 1000


def validate_gate(gate: float) -> float:
    if isinstance(gate, bool) or not isinstance(gate, (int, float)) or not math.isfinite(gate):
        raise SettingsError(f"invalid gate {gate!r}: expected a number from {MIN_GATE} to {MAX_GATE} (the fraction of each note that sounds)")
    if not MIN_GATE <= gate <= MAX_GATE:
        raise SettingsError(f"gate {gate:g} is out of range: allowed {MIN_GATE} to {MAX_GATE} (the fraction of each note that sounds)")
    return float(gate)


def validate_velocity(velocity: int) -> int:
    if isinstance(velocity, bool) or not isinstance(velocity, int) or not 1 <= velocity <= 127:
        raise SettingsError(f"invalid velocity {velocity!r}: expected a whole number from 1 to 127")
    return velocity


def validate_channel(channel: int) -> int:
    """Check a 0-15 channel. Messages show it as the musician's 1-16."""
    if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel <= 15:
        shown = channel + 1 if isinstance(channel, int) and not isinstance(channel, bool) else channel
        raise SettingsError(f"invalid MIDI channel {shown!r}: expected 1 to 16")
    return channel


@dataclass
class Rendering:
    """A rendered line: the bytes of its MIDI file and every token drawn for it, rests included, in order."""

    midi_bytes: bytes
    indices: list[int]
    tokens: list[Token]

    @property
    def notes(self) -> list[Token]:
        return [token for token in self.tokens if token.pitch is not None]

    @property
    def midi(self) -> mido.MidiFile:
        """The file as mido reads it, for callers that inspect its messages. mido parses the bytes again on every access."""
        return mido.MidiFile(file=io.BytesIO(self.midi_bytes))


def draw_notes(improviser: Improviser, notes: int) -> list[int]:
    """Draw token indices until `notes` of them are notes; rests come on top.

    Raises SidemanError when the model draws MAX_RESTS_IN_A_ROW rests in a row.
    """
    if isinstance(notes, bool) or not isinstance(notes, int) or notes < 1:
        raise SettingsError(f"invalid number of notes {notes!r}: expected a whole number of 1 or more")

    indices: list[int] = []
    beat = 0.0
    drawn_notes = 0
    rests_in_a_row = 0
    while drawn_notes < notes:
        index = improviser.draw(beat)
        token = improviser.token(index)
        indices.append(index)
        beat += token.steps / improviser.steps_per_beat

        if token.pitch is None:
            rests_in_a_row += 1
            if rests_in_a_row >= MAX_RESTS_IN_A_ROW:
                raise SidemanError(f"the model drew {rests_in_a_row} rests in a row after {drawn_notes} of {notes} notes; try another seed or sampler")
        else:
            rests_in_a_row = 0
            drawn_notes += 1
    return indices


def tokens_to_midi_bytes(tokens: list[Token], steps_per_beat: int, tempo: float, gate: float, velocity: int, channel: int) -> bytes:
    """Encode tokens as a type 0 MIDI file: a set_tempo meta event, then note_on/note_off pairs.

    Each note sounds for `gate` times its duration, at least one tick.
    Rests become silence. A note still sounding when the same pitch starts
    again is released at that onset. The bytes equal what mido 1.3 saves for
    the same messages, running status included.
    """
    tempo = validate_tempo(tempo)
    gate = validate_gate(gate)
    velocity = validate_velocity(velocity)
    channel = validate_channel(channel)

    ticks_per_beat = math.lcm(TICKS_PER_BEAT, steps_per_beat)
    if ticks_per_beat > MAX_TICKS_PER_BEAT:
        raise SettingsError(f"a grid of {steps_per_beat} steps per beat needs {ticks_per_beat} ticks per beat, more than the MIDI file header allows ({MAX_TICKS_PER_BEAT})")

    events = _note_events(tokens, ticks_per_beat // steps_per_beat, gate, velocity, channel)
    return encode_type0_file(ticks_per_beat, tempo_from_bpm(tempo), events)


def _note_events(tokens: list[Token], ticks_per_step: int, gate: float, velocity: int, channel: int) -> list[NoteEvent]:
    """List the note_on and note_off events of `tokens` in time order, in absolute ticks.

    At one tick the note_offs come before the note_on, in pitch order,
    except that a note cut short by its pitch starting again comes last.
    """
    note_on = NOTE_ON | channel
    note_off = NOTE_OFF | channel

    events: list[NoteEvent] = []
    # (tick, pitch) of each sounding note's note_off, in time order. A gate
    # above 1 keeps several notes sounding at once.
    pending_offs: list[tuple[int, int]] = []
    onset = 0
    for token in tokens:
        length = token.steps * ticks_per_step
        pitch = token.pitch
        if pitch is not None:
            if pending_offs:
                _release_due(pending_offs, onset, pitch, events, note_off)
            events.append((onset, note_on, pitch, velocity))
            bisect.insort(pending_offs, (onset + max(1, round(gate * length)), pitch))
        onset += length

    events.extend((tick, note_off, pitch, 0) for tick, pitch in pending_offs)
    return events


def _release_due(pending_offs: list[tuple[int, int]], onset: int, pitch: int, events: list[NoteEvent], note_off: int) -> None:
    """Move the note_offs due by `onset` from `pending_offs` to `events`, and cut a sounding `pitch` short at `onset`."""
    due = 0
    for tick, sounding_pitch in pending_offs:
        if tick > onset:
            break
        events.append((tick, note_off, sounding_pitch, 0))
        due += 1
    del pending_offs[:due]

    # The same pitch starting again releases the one still sounding first.
    for index, (_, sounding_pitch) in enumerate(pending_offs):
        if sounding_pitch == pitch:
            del pending_offs[index]
            events.append((onset, note_off, pitch, 0))
            break


def render(improviser: Improviser, notes: int, tempo: float, gate: float, velocity: int, channel: int) -> Rendering:
    """Draw exactly `notes` notes from the improviser's current state and encode them as a MIDI file.

    `channel` is 0-15. The same model, state, seed and settings give the same file byte for byte.
    """
    validate_tempo(tempo)
    validate_gate(gate)
    validate_velocity(velocity)
    validate_channel(channel)

    indices = draw_notes(improviser, notes)
    tokens = [improviser.token(index) for index in indices]
    midi_bytes = tokens_to_midi_bytes(tokens, improviser.steps_per_beat, tempo, gate, velocity, channel)
    return Rendering(midi_bytes, indices, tokens)


def write_midi(midi: mido.MidiFile, path: str | Path) -> None:
    """Save `midi` to `path` through a temporary file beside it, so a failed write leaves the old file whole."""
    with replacing(path, "MIDI file") as file:
        midi.save(file=file)
    log.debug("wrote %s", path)


def write_midi_bytes(midi_bytes: bytes, path: str | Path) -> None:
    """Save the bytes of a MIDI file to `path` through a temporary file beside it, so a failed write leaves the old file whole."""
    with replacing(path, "MIDI file") as file:
        file.write(midi_bytes)
    log.debug("wrote %s", path)
