"""Offline rendering for `generate`: draw a line from the model and write it as a standard MIDI file.

The file is a function of the model, seed and settings only (no dates or
names that change between runs), so the same command writes the same bytes.
Playing settings are checked here for both rendering and the live engine.
"""

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import mido

from .encoding import Token
from .errors import SettingsError, SidemanError
from .improviser import Improviser
from .outfiles import replacing
from .tempo import validate_tempo

log = logging.getLogger(__name__)

# Ticks per beat in written files: 480 puts every step of the 12-step grid on a whole tick (40 ticks a step).
TICKS_PER_BEAT = 480
MAX_TICKS_PER_BEAT = 0x7FFF  # the MIDI header's 15-bit division

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
    """A rendered line: the MIDI file and every token drawn for it, rests included, in order."""

    midi: mido.MidiFile
    indices: list[int]
    tokens: list[Token]

    @property
    def notes(self) -> list[Token]:
        return [token for token in self.tokens if token.pitch is not None]


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


def tokens_to_midi(tokens: list[Token], steps_per_beat: int, tempo: float, gate: float, velocity: int, channel: int) -> mido.MidiFile:
    """Write tokens as a type 0 MIDI file: a tempo meta event, then note_on/note_off pairs.

    Each note sounds for `gate` times its duration, at least one tick.
    Rests become silence. A note still sounding when the same pitch starts
    again is released at that onset.
    """
    tempo = validate_tempo(tempo)
    gate = validate_gate(gate)
    velocity = validate_velocity(velocity)
    channel = validate_channel(channel)

    ticks_per_beat = math.lcm(TICKS_PER_BEAT, steps_per_beat)
    if ticks_per_beat > MAX_TICKS_PER_BEAT:
        raise SettingsError(f"a grid of {steps_per_beat} steps per beat needs {ticks_per_beat} ticks per beat, more than the MIDI file header allows ({MAX_TICKS_PER_BEAT})")
    ticks_per_step = ticks_per_beat // steps_per_beat

    # (tick, message) in time order; pending note_offs by pitch until their tick comes.
    events: list[tuple[int, mido.Message]] = []
    pending_offs: dict[int, int] = {}
    onset = 0
    for token in tokens:
        length = token.steps * ticks_per_step
        if token.pitch is not None:
            _release_due(pending_offs, onset, events, channel, token.pitch)
            events.append((onset, mido.Message("note_on", channel=channel, note=token.pitch, velocity=velocity)))
            pending_offs[token.pitch] = onset + max(1, round(gate * length))
        onset += length
    _release_due(pending_offs, math.inf, events, channel, None)

    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo), time=0))
    previous = 0
    for tick, message in events:
        track.append(message.copy(time=tick - previous))
        previous = tick
    return mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat, tracks=[track])


def _release_due(pending_offs: dict[int, int], until: float, events: list, channel: int, repeated_pitch: int | None) -> None:
    """Append the note_offs due by `until`, in time order, and cut `repeated_pitch` short at `until`."""
    due = sorted((tick, pitch) for pitch, tick in pending_offs.items() if tick <= until or pitch == repeated_pitch)
    for tick, pitch in due:
        del pending_offs[pitch]
        events.append((int(min(tick, until)), mido.Message("note_off", channel=channel, note=pitch, velocity=0)))


def render(improviser: Improviser, notes: int, tempo: float, gate: float, velocity: int, channel: int) -> Rendering:
    """Draw exactly `notes` notes from the improviser's current state and write them as a MIDI file.

    `channel` is 0-15. The same model, state, seed and settings give the same file byte for byte.
    """
    validate_tempo(tempo)
    validate_gate(gate)
    validate_velocity(velocity)
    validate_channel(channel)

    indices = draw_notes(improviser, notes)
    tokens = [improviser.token(index) for index in indices]
    midi = tokens_to_midi(tokens, improviser.steps_per_beat, tempo, gate, velocity, channel)
    return Rendering(midi, indices, tokens)


def write_midi(midi: mido.MidiFile, path: str | Path) -> None:
    """Save `midi` to `path` through a temporary file beside it, so a failed write leaves the old file whole."""
    with replacing(path, "MIDI file") as file:
        midi.save(file=file)
    log.debug("wrote %s", path)
