"""MIDI CC mapping: hardware knobs and buttons that steer the tempo, plugin parameters and the transport.

The settings file's `[cc]` table maps control change (CC) numbers to targets:

    [cc]
    temperature = 21                             # a plugin with one numeric parameter
    "top_p.p" = 22                               # plugin.parameter
    tempo = { cc = 20, low = 60, high = 180 }    # a narrower range inside the declared one
    start = 64                                   # buttons: start, stop, panic, respond
    channel = 0                                  # 0 = any MIDI channel, 1-16 = that channel only

A knob's CC value 0-127 is scaled linearly over the target's declared range,
or over the narrower `low`/`high` given, and rounded for int parameters. A
button fires when its CC value rises from below 64 to 64 or more. The keys
tempo, start, stop, panic, respond and channel win over plugins of the same
name, which stay reachable as "name.parameter".
"""

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import mido

from .commands import Command, Panic, Respond, SetParam, SetTempo, Start, Stop
from .errors import SettingsError, did_you_mean
from .params import Param
from .registry import all_plugins
from .tempo import MAX_BPM, MIN_BPM

logger = logging.getLogger(__name__)

# CC 120-127 are channel mode messages (All Notes Off and the like), never knobs.
MAX_CC = 119
MAX_CC_VALUE = 127
# A button counts as pressed from this CC value up, as a sustain pedal does.
BUTTON_THRESHOLD = 64
# A knob change after this many seconds without a change is logged at INFO.
# The changes that follow it while the knob keeps moving go to DEBUG.
STILLNESS_SECONDS = 1.0
ANY_CHANNEL = 0

TEMPO_KEY = "tempo"
CHANNEL_KEY = "channel"
BUTTON_COMMANDS: dict[str, Command] = {"start": Start(), "stop": Stop(), "panic": Panic(), "respond": Respond()}
RESERVED_KEYS = (TEMPO_KEY, *BUTTON_COMMANDS, CHANNEL_KEY)
# The keys an inline table may hold, e.g. tempo = { cc = 20, low = 60, high = 180 }.
KNOB_TABLE_KEYS = ("cc", "low", "high")
BUTTON_TABLE_KEYS = ("cc",)
NUMERIC_TYPES = (int, float)

_FLOAT_MOVE = "CC %d moves %s: %.2f%s"
_INT_MOVE = "CC %d moves %s: %d%s"


@dataclass(frozen=True)
class Knob:
    """A CC scaled onto the tempo (`plugin` None) or onto one numeric plugin parameter."""

    cc: int
    # "tempo" or "plugin.parameter", for logs.
    target: str
    plugin: str | None
    param: str | None
    # The range CC values 0 and 127 map to, in the target's unit.
    low: float
    high: float
    integer: bool
    unit: str = ""

    def scale(self, cc_value: int) -> float | int:
        """Return the target value for a CC value 0-127, rounded for an int target."""
        fraction = cc_value / MAX_CC_VALUE

        # This form gives exactly `low` at 0 and exactly `high` at 127, and the
        # clamp keeps float rounding from stepping outside the declared range.
        scaled = self.low * (1.0 - fraction) + self.high * fraction
        scaled = min(max(scaled, self.low), self.high)

        if self.integer:
            return round(scaled)
        return scaled

    def command(self, value: float | int) -> Command:
        if self.plugin is None:
            return SetTempo(value)
        return SetParam(self.plugin, self.param, value)

    def describe(self) -> str:
        return f"CC {self.cc} -> {self.target} ({self.low:g}-{self.high:g}{self.unit})"


@dataclass(frozen=True)
class Button:
    """A CC that sends one command each time its value rises to 64 or more."""

    cc: int
    name: str
    command: Command

    def describe(self) -> str:
        return f"CC {self.cc} -> {self.name} (button, fires at {BUTTON_THRESHOLD} or more)"


class CcMap:
    """Translate control_change messages into engine commands.

    It keeps the last value of each CC, so it must be called from one thread only.
    """

    def __init__(self, knobs: Iterable[Knob] = (), buttons: Iterable[Button] = (), channel: int | None = None, clock: Callable[[], float] = time.monotonic):
        """Map knobs and buttons by CC number.

        `channel` is the MIDI channel 1-16 to read CCs from, or None for every
        channel. `clock` returns the time in seconds, for the log levels.
        """
        self._knobs = {knob.cc: knob for knob in knobs}
        self._buttons = {button.cc: button for button in buttons}
        shared = sorted(self._knobs.keys() & self._buttons.keys())
        if shared:
            raise ValueError(f"CC {shared[0]} is mapped to both a knob and a button")
        self.channel = channel
        self._clock = clock

        # Button CC -> its last CC value, for the rising edge.
        self._button_values: dict[int, int] = {}
        # Knob CC -> the last value sent, and the clock time it was sent.
        self._knob_values: dict[int, float | int] = {}
        self._knob_times: dict[int, float] = {}

    @property
    def empty(self) -> bool:
        """True when no CC is mapped."""
        return not self._knobs and not self._buttons

    def __bool__(self) -> bool:
        return not self.empty

    def describe(self) -> list[str]:
        """Return one line per mapping, in CC order, e.g. "CC 21 -> temperature.value (0.05-5)"."""
        mappings: list[Knob | Button] = [*self._knobs.values(), *self._buttons.values()]
        return [mapping.describe() for mapping in sorted(mappings, key=lambda mapping: mapping.cc)]

    def translate(self, message: mido.Message) -> list[Command]:
        """Return the commands for one MIDI message: [] for other messages, unmapped CCs and unchanged values."""
        if message.type != "control_change":
            return []
        if self.channel is not None and message.channel != self.channel - 1:
            logger.debug("CC %d on channel %d ignored: CCs are read from channel %d only", message.control, message.channel + 1, self.channel)
            return []

        knob = self._knobs.get(message.control)
        if knob is not None:
            return self._turn(knob, message.value)
        button = self._buttons.get(message.control)
        if button is not None:
            return self._press(button, message.value)

        logger.debug("CC %d = %d ignored: it is not mapped", message.control, message.value)
        return []

    def _turn(self, knob: Knob, cc_value: int) -> list[Command]:
        # The engine redraws its look-ahead note on every SetParam, so a value
        # equal to the last one this knob sent is dropped. Several CC values
        # can round to the same int, and a knob may repeat a value.
        # NOTE: the comparison is with this knob's last value, not the engine's,
        # so after an OSC change the knob takes over at its next different value.
        value = knob.scale(cc_value)
        if self._knob_values.get(knob.cc) == value:
            return []

        now = self._clock()
        last_change = self._knob_times.get(knob.cc)
        self._knob_values[knob.cc] = value
        self._knob_times[knob.cc] = now

        level = logging.INFO if last_change is None or now - last_change > STILLNESS_SECONDS else logging.DEBUG
        logger.log(level, _INT_MOVE if knob.integer else _FLOAT_MOVE, knob.cc, knob.target, value, knob.unit)
        return [knob.command(value)]

    def _press(self, button: Button, cc_value: int) -> list[Command]:
        previous = self._button_values.get(button.cc)
        self._button_values[button.cc] = cc_value

        # The first message seen for a button has no previous value and fires when it is at or above the threshold.
        rising = cc_value >= BUTTON_THRESHOLD and (previous is None or previous < BUTTON_THRESHOLD)
        if not rising:
            return []

        logger.info("CC %d presses %s", button.cc, button.name)
        return [button.command]


class _InvalidEntry(Exception):
    """The reason one `[cc]` entry is invalid; parse_cc_map adds the file, key and value."""


def parse_cc_map(table: Mapping[str, Any], samplers: dict[str, type], seeders: dict[str, type], source: str, clock: Callable[[], float] = time.monotonic) -> CcMap:
    """Validate a `[cc]` settings table and build its CcMap.

    `samplers` and `seeders` map plugin names to plugin classes with declared
    `params`. Raises SettingsError naming `source`, the key, the value and
    what is expected.
    """
    if not isinstance(table, Mapping):
        raise SettingsError(f"{source}: [cc] must be a table of CC mappings, not {table!r}")
    plugins = all_plugins(samplers, seeders)

    knobs: list[Knob] = []
    buttons: list[Button] = []
    channel: int | None = None
    # CC number -> the key that maps it.
    owners: dict[int, str] = {}
    for key, value in table.items():
        try:
            if key == CHANNEL_KEY:
                channel = _parse_channel(value)
                continue
            mapping = _parse_mapping(key, value, plugins)
            if mapping.cc in owners:
                raise _InvalidEntry(f"CC {mapping.cc} is already mapped by {owners[mapping.cc]!r}; map each CC number once")
        except _InvalidEntry as error:
            raise SettingsError(f"{source}: invalid [cc] entry {key!r} = {value!r}: {error}") from error

        owners[mapping.cc] = key
        if isinstance(mapping, Knob):
            knobs.append(mapping)
        else:
            buttons.append(mapping)

    logger.debug("%s: %d CC mappings read, channel %s", source, len(owners), channel or "any")
    return CcMap(knobs, buttons, channel, clock)


def _parse_mapping(key: str, value: Any, plugins: Mapping[str, type]) -> Knob | Button:
    if key in BUTTON_COMMANDS:
        cc, _ = _split_entry(value, BUTTON_TABLE_KEYS)
        return Button(cc, key, BUTTON_COMMANDS[key])

    cc, bounds = _split_entry(value, KNOB_TABLE_KEYS)
    if key == TEMPO_KEY:
        low, high = _knob_range(bounds, MIN_BPM, MAX_BPM, integer=False, unit=" BPM")
        return Knob(cc, TEMPO_KEY, None, None, low, high, integer=False, unit=" BPM")

    plugin, param = _find_numeric_param(key, plugins)
    integer = param.type is int
    low, high = _knob_range(bounds, param.low, param.high, integer=integer, unit="")
    return Knob(cc, f"{plugin}.{param.name}", plugin, param.name, low, high, integer=integer)


def _split_entry(value: Any, table_keys: tuple[str, ...]) -> tuple[int, dict[str, Any]]:
    """Return the CC number and the other keys of an entry, given as a CC number or as an inline table."""
    if not isinstance(value, Mapping):
        return _check_cc(value), {}

    for table_key in value:
        if table_key not in table_keys:
            raise _InvalidEntry(f"unknown key {table_key!r} in the inline table{_did_you_mean_key(table_key, table_keys)}")
    if "cc" not in value:
        raise _InvalidEntry(f"the inline table has no cc key; expected keys: {', '.join(table_keys)}")
    options = {table_key: option for table_key, option in value.items() if table_key != "cc"}
    return _check_cc(value["cc"]), options


def _check_cc(number: Any) -> int:
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= MAX_CC:
        raise _InvalidEntry(f"expected a CC number from 0 to {MAX_CC} ({MAX_CC + 1}-{MAX_CC_VALUE} are channel mode messages)")
    return number


def _parse_channel(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 16:
        raise _InvalidEntry(f"expected {ANY_CHANNEL} (CCs from any MIDI channel) or a MIDI channel from 1 to 16")
    return None if value == ANY_CHANNEL else value


def _find_numeric_param(key: str, plugins: Mapping[str, type]) -> tuple[str, Param]:
    """Return the plugin name and the int or float parameter that `key` ("plugin" or "plugin.parameter") names."""
    plugin_name, dot, param_name = key.partition(".")
    plugin = plugins.get(plugin_name)
    if plugin is None:
        raise _InvalidEntry(f"no plugin or control named {plugin_name!r}{_did_you_mean_key(key, _valid_keys(plugins))}")
    numeric = [param for param in plugin.params if param.type in NUMERIC_TYPES]
    numeric_keys = [f"{plugin_name}.{param.name}" for param in numeric]

    if not dot:
        if len(numeric) == 1:
            return plugin_name, numeric[0]
        if not numeric:
            raise _InvalidEntry(f"{plugin.kind} {plugin_name!r} has no int or float parameter that a knob could set")
        quoted_keys = ", ".join(f'"{numeric_key}"' for numeric_key in numeric_keys)
        raise _InvalidEntry(f"{plugin.kind} {plugin_name!r} has {len(numeric)} int or float parameters; name one as a quoted key: {quoted_keys}")

    param = next((param for param in plugin.params if param.name == param_name), None)
    if param is None:
        raise _InvalidEntry(f"{plugin.kind} {plugin_name!r} has no parameter {param_name!r}{_did_you_mean_key(key, numeric_keys)}")
    if param not in numeric:
        raise _InvalidEntry(f"{key} is a {param.type.__name__} parameter; a knob can set only int and float parameters")
    return plugin_name, param


def _knob_range(bounds: Mapping[str, Any], declared_low: float | None, declared_high: float | None, integer: bool, unit: str) -> tuple[float, float]:
    """Return the (low, high) a knob spans: the given bounds, else the declared ones."""
    declared = _describe_range(declared_low, declared_high, unit)
    for side, value in bounds.items():
        _check_bound(side, value, declared_low, declared_high, integer, declared)

    low = bounds.get("low", declared_low)
    high = bounds.get("high", declared_high)
    for side, value in (("low", low), ("high", high)):
        if value is None:
            raise _InvalidEntry(f"the parameter declares no {side} limit, so the entry needs one, e.g. {{ cc = 21, low = 0, high = 1 }}")

    # An int parameter's knob stays on whole numbers inside the declared range.
    if integer:
        low, high = math.ceil(low), math.floor(high)
    else:
        low, high = float(low), float(high)
    if low >= high:
        raise _InvalidEntry(f"low {low:g} must be less than high {high:g}")
    return low, high


def _check_bound(side: str, value: Any, declared_low: float | None, declared_high: float | None, integer: bool, declared: str) -> None:
    within = f" within {declared}" if declared else ""
    if isinstance(value, bool) or not isinstance(value, NUMERIC_TYPES) or not math.isfinite(value):
        raise _InvalidEntry(f"{side} {value!r} is not a number; expected a finite number{within}")
    if integer and not float(value).is_integer():
        raise _InvalidEntry(f"{side} {value!r} is not a whole number; expected a whole number{within} because the parameter is an int")
    if declared_low is not None and value < declared_low or declared_high is not None and value > declared_high:
        raise _InvalidEntry(f"{side} {value:g} is outside the declared range {declared}")


def _describe_range(low: float | None, high: float | None, unit: str) -> str:
    """Describe a declared range for messages; "" when neither end is declared."""
    if low is not None and high is not None:
        return f"{low:g} to {high:g}{unit}"
    if low is not None:
        return f"at least {low:g}{unit}"
    if high is not None:
        return f"at most {high:g}{unit}"
    return ""


def _valid_keys(plugins: Mapping[str, type]) -> list[str]:
    """Return every key a `[cc]` table accepts: the reserved ones, plugin names with one numeric parameter, plugin.parameter."""
    keys = list(RESERVED_KEYS)
    for name in sorted(plugins):
        numeric = [param.name for param in plugins[name].params if param.type in NUMERIC_TYPES]
        if len(numeric) == 1:
            keys.append(name)
        keys.extend(f"{name}.{param}" for param in numeric)
    return keys


def _did_you_mean_key(name: str, valid: Iterable[str]) -> str:
    return did_you_mean(name, valid, "keys")
