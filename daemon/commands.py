"""Commands that steer the engine, sent by OSC, by the MIDI input (live notes, mapped CCs) and by signals.

The engine applies the commands of one `Engine.apply` call together,
between two notes. Each is plain data. `Engine.apply` validates them, with
the checks below for the commands whose values need no engine state, and
`describe_command` words them for the log.
"""

import math
from dataclasses import dataclass
from typing import Any, Sequence

from .errors import InvalidInputError
from .notenames import pitch_name

# A phrase is fed into the state between two notes, at one LSTM step a
# token: a longer one would delay the next onset.
MAX_PRIME_TOKENS = 1024
PRIME_ITEMS_LOGGED = 16


@dataclass(frozen=True)
class SetTempo:
    bpm: float


@dataclass(frozen=True)
class Reseed:
    seed: int


@dataclass(frozen=True)
class Prime:
    # (MIDI pitch or None for a rest, duration in beats) pairs.
    phrase: tuple[tuple[int | None, float], ...]


@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Panic:
    pass


@dataclass(frozen=True)
class Reset:
    pass


@dataclass(frozen=True)
class SetSampler:
    names: tuple[str, ...]


@dataclass(frozen=True)
class SetParam:
    plugin: str
    name: str
    value: Any


@dataclass(frozen=True)
class ApplySeeder:
    """Apply a seeder by name, with its parameter values as set by config, CLI and SetParam."""

    seeder: str
    # The seeder instance, prepared by the engine's validation; None as sent.
    prepared: Any = None


@dataclass(frozen=True)
class SetFeel:
    """Change swing, humanize or latency compensation (sideman.feel.FEEL_PARAMS names them)."""

    name: str
    value: Any


@dataclass(frozen=True)
class ClockMessage:
    """A MIDI clock or transport message from the input: "clock", "start", "continue", "stop" or "songpos".

    `time` is when it arrived, in seconds on the engine's clock; `position`
    is the Song Position Pointer in sixteenth notes (0-16383).
    """

    kind: str
    time: float
    position: int = 0


@dataclass(frozen=True)
class SetSync:
    """Switch the transport's sync source: "internal", "master", "midi-in" or "link".

    `prepared` is the joined Link session for "link", made while the
    command is checked so that the engine thread never waits for the network.
    """

    source: str
    prepared: Any = None


@dataclass(frozen=True)
class Respond:
    """Answer the musician's call now: the response starts at the next bar line."""


@dataclass(frozen=True)
class LiveNote:
    """A note_on (velocity 1-127) or note_off (velocity 0) played into the MIDI input.

    `time` is when it arrived, in seconds on the engine's clock.
    """

    pitch: int
    velocity: int
    time: float
    channel: int = 0  # 0-15


Command = SetTempo | Reseed | Prime | Start | Stop | Panic | Reset | SetSampler | SetParam | ApplySeeder | Respond | LiveNote | SetFeel | ClockMessage | SetSync


def validate_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInputError(f"invalid seed {seed!r}: expected a whole number of 0 or more")
    return seed


def validate_phrase(phrase: Sequence[tuple[int | None, float]]) -> tuple[tuple[int | None, float], ...]:
    """Check a phrase of (MIDI pitch or None for a rest, duration in beats) pairs."""
    phrase = tuple(phrase)
    if not phrase:
        raise InvalidInputError("invalid phrase: expected at least one (pitch, beats) pair")
    if len(phrase) > MAX_PRIME_TOKENS:
        raise InvalidInputError(f"phrase of {len(phrase)} notes and rests is too long: at most {MAX_PRIME_TOKENS}")

    for position, pair in enumerate(phrase, start=1):
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise InvalidInputError(f"invalid phrase item {position}: {pair!r}, expected (pitch or None for a rest, beats)")
        pitch, beats = pair
        if pitch is not None and (isinstance(pitch, bool) or not isinstance(pitch, int) or not 0 <= pitch <= 127):
            raise InvalidInputError(f"invalid pitch {pitch!r} in phrase item {position}: expected a MIDI pitch 0-127 or a rest")
        if isinstance(beats, bool) or not isinstance(beats, (int, float)) or not math.isfinite(beats) or beats <= 0:
            raise InvalidInputError(f"invalid duration {beats!r} beats in phrase item {position}: expected a number above 0")
    return phrase


def validate_live_note(command: LiveNote) -> LiveNote:
    for name, value, high in (("pitch", command.pitch, 127), ("velocity", command.velocity, 127), ("channel", command.channel, 15)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
            raise InvalidInputError(f"invalid live note {name} {value!r}: expected 0-{high}")
    if not isinstance(command.time, (int, float)) or not math.isfinite(command.time):
        raise InvalidInputError(f"invalid live note time {command.time!r}: expected seconds on the engine's clock")
    return command


def describe_command(command: Command) -> str:
    """Describe a command for the log, in the musician's words."""
    if isinstance(command, SetTempo):
        return f"tempo {command.bpm:g} BPM from the next note"
    if isinstance(command, Reseed):
        return f"seed {command.seed}"
    if isinstance(command, Prime):
        shown = " ".join(f"{pitch_name(pitch)}:{beats:g}" for pitch, beats in command.phrase[:PRIME_ITEMS_LOGGED])
        more = " ..." if len(command.phrase) > PRIME_ITEMS_LOGGED else ""
        return f"prime with {len(command.phrase)} notes and rests (pitch:beats): {shown}{more}"
    if isinstance(command, SetSampler):
        return f"sampler chain {' '.join(command.names)!r}"
    if isinstance(command, SetParam):
        return f"plugin parameter {command.plugin}.{command.name} = {command.value!r}"
    if isinstance(command, ApplySeeder):
        return f"seeder {command.seeder!r}"
    if isinstance(command, SetFeel):
        return f"feel {command.name} = {command.value!r}"
    if isinstance(command, SetSync):
        return f"sync source {command.source}"
    if isinstance(command, LiveNote):
        return f"live {'note_on' if command.velocity else 'note_off'} {pitch_name(command.pitch)} velocity {command.velocity} on channel {command.channel + 1}"
    return type(command).__name__.lower()
