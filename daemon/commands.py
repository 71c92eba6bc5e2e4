"""Commands that steer the engine, sent by OSC (and later by MIDI input and signals).

The engine applies the commands of one `Engine.apply` call together,
between two notes. Each is plain data; validation happens in `Engine.apply`.
"""

from dataclasses import dataclass
from typing import Any


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


Command = SetTempo | Reseed | Prime | Start | Stop | Panic | Reset | SetSampler | SetParam | ApplySeeder
