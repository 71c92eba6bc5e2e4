"""Feel: swing, humanize and latency compensation, applied when a note is scheduled.

The model's tokens stay on the 1/12-beat grid. Feel only moves the times at
which the engine sends a note's note_on and note_off and varies its velocity,
so turning it on never changes which notes are played: the sampler's random
generator is never touched.

Engine contract. For each onset, note or rest, in increasing beat order:

- `Feel.onset_time(beat, tempo_map)` is the clock time at which to send the
  note_on. The engine calls it for rests too, so that onsets stay in order;
- `Feel.release_time(onset_beat, next_beat, gate, tempo_map)` is the clock
  time at which to send the note_off;
- `Feel.note_velocity(base)` is the note_on velocity, one call per note sent.

Both times already include latency compensation. The engine schedules
events by these times and still sends a pitch's pending note_off before a
new note_on of that pitch.

Ordering. Swing moves only off-beat onsets and humanize moves every onset a
little, so a delayed onset could pass the next one, and a humanized release
could fall after the next humanized onset. Feel resolves both where the
onsets are made: an onset is never scheduled earlier than the previous
onset plus half of the straight (unswung, unhumanized) time between them.
Each note's release lies between its onset and the next onset
(`gate` of the way, gate <= 1), so with gate <= 1 a release is never after
the next onset. Gate above 1 overlaps the next note on purpose (legato).
"""

import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import SettingsError
from .params import Param
from .tempo import TempoMap

log = logging.getLogger(__name__)

SWING_UNITS = {"1/8": 1.0, "1/16": 0.5}  # swing unit -> length of a swing pair in beats
MAX_SWING = 75.0  # percent
MAX_HUMANIZE_MS = 30.0
MAX_HUMANIZE_VELOCITY = 40
MAX_LATENCY_MS = 500.0
# An onset this close to the off-beat position, in beats, counts as on it.
OFF_BEAT_TOLERANCE = 1e-6
# Spawn key of the humanize generators under the run's seed: the sampler's
# generator is default_rng(seed), whose SeedSequence has an empty spawn key,
# so these streams are independent of it and of each other.
HUMANIZE_SPAWN_KEY = 0x5EED
# Onset beats whose humanized time is remembered: the current note and the look-ahead one, plus one spare.
REMEMBERED_ONSETS = 3

FEEL_PARAMS: tuple[Param, ...] = (
    Param("swing", float, 0.0, "swing in percent: 0 straight, 50 triplet (2:1), 75 dotted (3:1)", low=0.0, high=MAX_SWING),
    Param("swing_unit", str, "1/8", "note value that swings: eighths or sixteenths", choices=tuple(SWING_UNITS)),
    Param("humanize_ms", float, 0.0, "maximum random shift of each onset, in milliseconds", low=0.0, high=MAX_HUMANIZE_MS),
    Param("humanize_velocity", int, 0, "maximum random change of each note's velocity, in velocity steps", low=0, high=MAX_HUMANIZE_VELOCITY),
    Param("latency_ms", float, 0.0, "send every note_on and note_off this many milliseconds early, to make up for the synth's latency", low=0.0, high=MAX_LATENCY_MS),
)
_PARAMS_BY_NAME = {param.name: param for param in FEEL_PARAMS}


def convert_feel_param(name: str, value: Any) -> Any:
    """Return `value` converted for the feel setting `name`; raise SettingsError for an unknown name or a bad value."""
    if name not in _PARAMS_BY_NAME:
        raise SettingsError(f"unknown feel setting {name!r} (settings: {', '.join(_PARAMS_BY_NAME)})")
    return _convert(name, value)


def _convert(name: str, value: Any) -> Any:
    """Check one feel setting against its declaration; raise SettingsError with the allowed range."""
    return _PARAMS_BY_NAME[name].convert(value, "feel")


@dataclass(frozen=True)
class Swing:
    """Delay of the second note of each swing pair.

    A swing pair is two eighths (one beat, unit "1/8") or two sixteenths
    (half a beat, unit "1/16"), counted from beat 0. With the pair's length P,
    an onset exactly on the pair's midpoint moves from P/2 to
    P/2 + amount/100 * (2/3) * P/2, which is P * (1/2 + amount/300).
    So 0% stays straight (1:1), and 50% is the triplet feel (2:1, the off-beat
    at 2/3 of the pair). 75% is the dotted feel (3:1, at 3/4 of the pair).
    """

    amount: float = 0.0  # percent, 0-75
    unit: str = "1/8"

    def __post_init__(self) -> None:
        object.__setattr__(self, "amount", _convert("swing", self.amount))
        object.__setattr__(self, "unit", _convert("swing_unit", self.unit))

    @property
    def pair_beats(self) -> float:
        return SWING_UNITS[self.unit]

    @property
    def delay_beats(self) -> float:
        """How far an off-beat onset moves, in beats."""
        return self.amount / 100.0 * (2.0 / 3.0) * (self.pair_beats / 2.0)

    def swung_beat(self, beat: float) -> float:
        """Return the position `beat` is played at: later when it is a pair's off-beat, else unchanged.

        Only the off-beat itself moves (within OFF_BEAT_TOLERANCE beats), so
        triplets, and sixteenths under eighth swing, stay where they are.
        """
        pair = self.pair_beats
        position_in_pair = beat - math.floor(beat / pair) * pair
        if abs(position_in_pair - pair / 2.0) <= OFF_BEAT_TOLERANCE:
            return beat + self.delay_beats
        return beat


class Humanize:
    """Random shifts of onsets and velocities, from generators of their own.

    The generators come from the run's seed through
    numpy.random.SeedSequence(seed, spawn_key=(0x5EED, stream)), stream 0 for
    onsets and 1 for velocities, so a take is reproducible from its seed and
    the sampler's generator, default_rng(seed), is never used.

    Each call draws one standard normal value, whatever the amounts, even
    when they are 0. Changing an amount mid-take therefore only rescales the
    values that follow and keeps them aligned with the notes. A value is
    the draw times amount/2 (so the standard deviation is half the amount),
    clipped to +-amount.
    """

    def __init__(self, onset_ms: float = 0.0, velocity: int = 0, seed: int = 0):
        self.onset_ms = onset_ms
        self.velocity_steps = velocity
        self.reseed(seed)

    @property
    def onset_ms(self) -> float:
        """Maximum onset shift in milliseconds, 0-30."""
        return self._onset_ms

    @onset_ms.setter
    def onset_ms(self, value: float) -> None:
        self._onset_ms = _convert("humanize_ms", value)

    @property
    def velocity_steps(self) -> int:
        """Maximum velocity change in velocity steps, 0-40."""
        return self._velocity_steps

    @velocity_steps.setter
    def velocity_steps(self, value: int) -> None:
        self._velocity_steps = _convert("humanize_velocity", value)

    def reseed(self, seed: int) -> None:
        """Restart both generators from `seed` (a whole number of 0 or more)."""
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SettingsError(f"invalid humanize seed {seed!r}: expected a whole number of 0 or more")
        self.seed = seed
        self._onset_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(HUMANIZE_SPAWN_KEY, 0)))
        self._velocity_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(HUMANIZE_SPAWN_KEY, 1)))

    def onset_offset(self) -> float:
        """Draw the next onset shift, in seconds, within +-onset_ms."""
        return _scaled_draw(self._onset_rng) * self._onset_ms / 1000.0

    def velocity(self, base: int) -> int:
        """Draw the next velocity: `base` changed by at most velocity_steps, clipped to 1-127."""
        change = round(_scaled_draw(self._velocity_rng) * self._velocity_steps)
        return min(max(base + change, 1), 127)


def _scaled_draw(rng: np.random.Generator) -> float:
    """Draw a value in [-1, 1]: a normal draw with standard deviation 1/2, clipped."""
    return min(max(rng.standard_normal() / 2.0, -1.0), 1.0)


@dataclass
class _ScheduledOnset:
    beat: float
    # Scheduled minus straight time in seconds (swing, humanize and the
    # ordering floor), fixed when the onset is first scheduled, so that a
    # tempo map restart on Start moves the onset with the map.
    deviation: float


class Feel:
    """Swing, humanize and latency compensation together: the times and velocity of each note.

    Not thread-safe: the engine thread alone calls it.
    """

    def __init__(self, swing: Swing | None = None, humanize: Humanize | None = None, latency_ms: float = 0.0):
        self.swing = swing if swing is not None else Swing()
        self.humanize = humanize if humanize is not None else Humanize()
        self._latency_ms = _convert("latency_ms", latency_ms)
        self._onsets: deque[_ScheduledOnset] = deque(maxlen=REMEMBERED_ONSETS)

    @classmethod
    def from_values(cls, values: dict[str, Any], seed: int = 0) -> "Feel":
        """Make a Feel from settings named as in FEEL_PARAMS; missing ones take their defaults."""
        unknown = sorted(set(values) - set(_PARAMS_BY_NAME))
        if unknown:
            known = ", ".join(_PARAMS_BY_NAME)
            raise SettingsError(f"unknown feel setting {unknown[0]!r} (settings: {known})")

        settings = {param.name: values.get(param.name, param.default) for param in FEEL_PARAMS}
        return cls(
            Swing(settings["swing"], settings["swing_unit"]),
            Humanize(settings["humanize_ms"], settings["humanize_velocity"], seed),
            settings["latency_ms"],
        )

    @property
    def latency_ms(self) -> float:
        return self._latency_ms

    def set_param(self, name: str, value: Any) -> Any:
        """Change one setting named as in FEEL_PARAMS; return the converted value.

        Swing and humanize changes apply from the first onset scheduled after
        the change, because a scheduled onset keeps its shift. A latency
        change applies to every time computed after it. Raises SettingsError
        for an unknown name or a value out of range.
        """
        if name not in _PARAMS_BY_NAME:
            known = ", ".join(_PARAMS_BY_NAME)
            raise SettingsError(f"unknown feel setting {name!r} (settings: {known})")

        converted = _convert(name, value)
        if name == "swing":
            self.swing = Swing(converted, self.swing.unit)
        elif name == "swing_unit":
            self.swing = Swing(self.swing.amount, converted)
        elif name == "humanize_ms":
            self.humanize.onset_ms = converted
        elif name == "humanize_velocity":
            self.humanize.velocity_steps = converted
        else:
            self._latency_ms = converted
        log.info("feel setting %s changed to %s", name, converted)
        return converted

    def send_time(self, ideal_time: float) -> float:
        """Return the clock time at which to send an event meant to sound at `ideal_time` (seconds)."""
        return ideal_time - self._latency_ms / 1000.0

    def onset_time(self, beat: float, tempo_map: TempoMap) -> float:
        """Return the clock time at which to send the note_on of the onset at `beat`.

        The first request for an onset later than every earlier one draws its
        humanize shift. Later requests for one of the latest REMEMBERED_ONSETS
        onsets return the same time, moved with the tempo map. An onset
        earlier than the latest one replaces the onsets after it, which the
        engine moved before they were played.
        """
        return self.send_time(self._sounding_time(beat, tempo_map))

    def release_time(self, onset_beat: float, next_beat: float, gate: float, tempo_map: TempoMap) -> float:
        """Return the clock time at which to send the note_off of the note from `onset_beat` to `next_beat`.

        The release lies `gate` of the way from the note's onset to the next
        onset, both swung and humanized, so with gate <= 1 it is never after
        the next onset. `gate` is the checked fraction of render.validate_gate.
        """
        if next_beat <= onset_beat:
            raise ValueError(f"next onset at beat {next_beat} is not after the note's onset at beat {onset_beat}")

        onset = self._sounding_time(onset_beat, tempo_map)
        next_onset = self._sounding_time(next_beat, tempo_map)
        release = onset + gate * (next_onset - onset)
        if gate <= 1.0:
            release = min(release, next_onset)
        return self.send_time(release)

    def note_velocity(self, base: int) -> int:
        """Return the velocity of the next note sent, from the configured `base` (1-127)."""
        return self.humanize.velocity(base)

    def _sounding_time(self, beat: float, tempo_map: TempoMap) -> float:
        """Return the time at which the onset at `beat` should sound, before latency compensation."""
        scheduled = self._find(beat)
        if scheduled is None:
            scheduled = self._schedule(beat, tempo_map)
        return tempo_map.time_at(beat) + scheduled.deviation

    def _find(self, beat: float) -> _ScheduledOnset | None:
        for scheduled in self._onsets:
            if abs(scheduled.beat - beat) <= OFF_BEAT_TOLERANCE:
                return scheduled
        # An onset before the latest scheduled one means the engine moved its
        # line (a live answer, a restart): the later onsets were never played, so they go.
        while self._onsets and beat < self._onsets[-1].beat:
            self._onsets.pop()
        return None

    def _schedule(self, beat: float, tempo_map: TempoMap) -> _ScheduledOnset:
        """Fix the shift of a new onset: swing, then humanize, then no earlier than the ordering floor."""
        straight = tempo_map.time_at(beat)
        sounding = tempo_map.time_at(self.swing.swung_beat(beat)) + self.humanize.onset_offset()

        if self._onsets:
            previous = self._onsets[-1]
            previous_straight = tempo_map.time_at(previous.beat)
            floor = previous_straight + previous.deviation + (straight - previous_straight) / 2.0
            sounding = max(sounding, floor)

        scheduled = _ScheduledOnset(beat, sounding - straight)
        self._onsets.append(scheduled)
        return scheduled
