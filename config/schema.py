"""The settings schema: every key of default.toml with its type, default, unit, allowed range and help.

Each section of default.toml is one frozen dataclass below, and each key is
one field declared with `setting(...)`. The loader checks every value of
every layer (default.toml, the `--config` file, CLI flags) against these
declarations. `[plugins.<name>]` tables are checked separately, through
the parameters (`Param`) that each plugin declares.
"""

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from sideman.errors import SettingsError
from sideman.params import Param

# Seeds are non-negative because numpy's SeedSequence rejects negative seeds.
# Keras seeds training with a 32-bit integer; the sampler takes any 64-bit seed, as OSC int64 does.
MAX_SEED = 2**32 - 1
MAX_RUN_SEED = 2**63 - 1
MIDI_BACKENDS = ("auto", "alsa", "jack", "coremidi", "winmm")
LOG_LEVELS = ("debug", "info", "warning", "error")
SYNC_SOURCES = ("internal", "master", "midi-in", "link")


@dataclass(frozen=True)
class Spec:
    """The declaration of one setting: key, type, default, unit, allowed range or choices, and help."""

    key: str
    type: Any  # int, float, str, bool, or tuple[str, ...] for a list of names
    default: Any
    help: str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    # Raises ValueError for a value that a range cannot describe, as Param.check does.
    check: Any = None

    @property
    def is_name_list(self) -> bool:
        return typing.get_origin(self.type) is tuple

    def describe_range(self) -> str:
        if self.is_name_list:
            return "a list of names"
        return self._as_param().describe_range()

    def describe_default(self) -> str:
        if self.is_name_list:
            return " ".join(self.default)
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if self.default == "":
            return "none"
        return f"{self.default} {self.unit}".strip()

    def convert(self, value: Any, section: str) -> Any:
        """Return `value` as this setting's type, or raise SettingsError naming `section.key` and the allowed range."""
        if self.is_name_list:
            return _convert_name_list(value, f"{section}.{self.key}")

        # String choices (backend, log level) are matched case-insensitively and stored lower-case.
        if self.choices is not None and isinstance(value, str):
            value = value.lower()
        return self._as_param().convert(value, section)

    def _as_param(self) -> Param:
        return Param(self.key, self.type, self.default, self.help, self.low, self.high, self.choices, self.check)


def setting(default: Any, help: str, *, unit: str = "", low: float | None = None, high: float | None = None, choices: tuple | None = None, check: Any = None) -> Any:
    """Declare one setting as a dataclass field; `spec_of` turns it back into a Spec."""
    metadata = {"help": help, "unit": unit, "low": low, "high": high, "choices": choices, "check": check}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class RunSettings:
    """[run]: what `sideman run` and `sideman generate` play."""

    tempo: float = setting(120.0, "tempo", unit="BPM", low=20, high=400)
    seed: int = setting(0, "seed of the sampler's random generator: the same seed and settings give the same notes", low=0, high=MAX_RUN_SEED)
    sampler: tuple[str, ...] = setting(("temperature",), 'sampler chain by plugin name, filters first and one chooser last, e.g. "top_p temperature"')
    seeder: str = setting("zero", 'seeder applied before play starts, e.g. "zero", "phrase", "file" or "live" (the MIDI input); its [plugins.<name>] table sets it')
    gate: float = setting(0.9, "share of each note's duration that sounds before its note_off", low=0.05, high=1.0)
    velocity: int = setting(90, "MIDI velocity of every note", low=1, high=127)
    channel: int = setting(1, "MIDI channel of the output", low=1, high=16)
    autoplay: bool = setting(True, "start playing as soon as the daemon starts (false: wait for /sideman/start)")
    model: str = setting("builtin", 'model bundle: "builtin" or the path of a .sideman file')
    sync: str = setting("internal", "clock source: internal (sideman's own tempo), master (also send MIDI clock, Start, Stop and Song Position Pointer, so a DAW follows), midi-in (follow the MIDI clock and transport of the input) or link (join an Ableton Link session on the local network; needs the aalink package)", choices=SYNC_SOURCES)
    sync_autostart: bool = setting(False, "with sync midi-in, start playing on the first clock pulse even without a Start message")
    link_start_stop: bool = setting(False, "with sync link, start and stop with the Link session's transport (Link's start/stop sync), and share sideman's own start and stop")
    swing: float = setting(0.0, "swing: delay of every second eighth (or sixteenth, swing_unit) note; 50 is a triplet feel, 75 dotted", unit="percent", low=0.0, high=75.0)
    swing_unit: str = setting("1/8", "note value that swings: 1/8 or 1/16", choices=("1/8", "1/16"))
    humanize_ms: float = setting(0.0, "largest random shift of each onset, from a generator of its own seeded from seed", unit="ms", low=0.0, high=30.0)
    humanize_velocity: int = setting(0, "largest random change of each note's velocity, in steps", low=0, high=40)
    latency_ms: float = setting(0.0, "send every note this much earlier, for a synth with a known output latency", unit="ms", low=0.0, high=500.0)
    meter: str = setting("4/4", 'time signature, e.g. "4/4", "3/4" or "6/8": bars align responses to the musician', check=lambda text: parse_meter(text))


@dataclass(frozen=True)
class MidiSettings:
    """[midi]: the MIDI system and the output port."""

    backend: str = setting("auto", "MIDI API; auto probes ALSA, then JACK, then the platform's own", choices=MIDI_BACKENDS)
    out: str = setting("", "existing output port to connect to, by full name or a unique part of it; none opens the virtual port sideman:out")
    # "in" is a Python keyword, so the field is `input`. The settings file and the CLI use the key `in`.
    input: str = setting("", "existing port to read live notes and mapped CCs from, by full name or a unique part of it; none opens the virtual port sideman-in:in")
    listen: bool = setting(True, "open the MIDI input; false runs without live notes and CC control")
    clock_in: str = setting("", "with sync midi-in, existing port to read MIDI clock from, by full name or a unique part of it; none reads it from the MIDI input")
    clock_out: str = setting("", "with sync master, existing port to send MIDI clock to, by full name or a unique part of it; none sends it on the output port")


@dataclass(frozen=True)
class OscSettings:
    """[osc]: where the OSC server listens, which sources it accepts, and which files OSC may name."""

    host: str = setting("127.0.0.1", "address the OSC server binds to; any address other than loopback lets other machines reach it")
    port: int = setting(9000, "UDP port of the OSC server; 0 lets the system pick a free port", low=0, high=65535)
    allow: tuple[str, ...] = setting(("127.0.0.0/8", "::1"), 'source addresses or CIDR networks whose OSC datagrams are accepted, e.g. ["192.168.1.0/24", "10.0.0.5"]; others are dropped')
    files: str = setting("", "directory whose files OSC messages may name (e.g. file.path); none lets OSC set no file path")

    def __post_init__(self) -> None:
        # Parsed here too, so that a bad entry stops start-up with the settings, before any port opens.
        from sideman.osc_access import Allowlist

        Allowlist.parse(self.allow)


@dataclass(frozen=True)
class TrainSettings:
    """[train]: model size, optimizer, early stopping and the encoding of a training run."""

    n_a: int = setting(64, "LSTM state size (units of the shared LSTM cell)", low=1, high=1024)
    tx: int = setting(30, "length of a training sequence", unit="tokens", low=2, high=1000)
    max_epochs: int = setting(200, "maximum number of training epochs; early stopping normally ends training sooner", low=1, high=100000)
    batch_size: int = setting(64, "sequences per training batch", low=1, high=65536)
    learning_rate: float = setting(0.01, "starting learning rate of the Adam optimizer", low=1e-6, high=1.0)
    lr_patience: int = setting(2, "epochs without a better validation loss before the learning rate halves", low=1, high=1000)
    patience: int = setting(6, "epochs without a better validation loss before training stops", low=1, high=1000)
    validation_share: float = setting(0.1, "share of the corpus's pieces held out for validation", low=0.0, high=0.5)
    seed: int = setting(0, "seed of the weight initialization, the validation split and the batch order", low=0, high=MAX_SEED)
    max_vocab: int = setting(768, "maximum vocabulary size; rarer tokens map to the nearest kept token", unit="tokens", low=2, high=10000)
    transpose_low: int = setting(-5, "lowest transposition used for augmentation", unit="semitones", low=-12, high=0)
    transpose_high: int = setting(6, "highest transposition used for augmentation", unit="semitones", low=0, high=12)
    rest_threshold: float = setting(0.5, "shortest silence after a note's release that becomes a rest token", unit="beats", low=0.0, high=8.0)
    max_beats: float = setting(8.0, "longest token: longer notes are capped, longer rests split", unit="beats", low=1.0, high=64.0)
    steps_per_beat: int = setting(12, "grid steps per beat; 12 holds sixteenths and triplets", low=1, high=96)


@dataclass(frozen=True)
class LogSettings:
    """[log]: logging to stderr."""

    level: str = setting("info", "lowest level of log lines written to stderr", choices=LOG_LEVELS)


SECTIONS: dict[str, type] = {
    "run": RunSettings,
    "midi": MidiSettings,
    "osc": OscSettings,
    "train": TrainSettings,
    "log": LogSettings,
}


@dataclass(frozen=True)
class Settings:
    """All settings after merging default.toml, the `--config` file and CLI flags."""

    run: RunSettings = field(default_factory=RunSettings)
    midi: MidiSettings = field(default_factory=MidiSettings)
    osc: OscSettings = field(default_factory=OscSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    log: LogSettings = field(default_factory=LogSettings)
    # MIDI CC mappings as read from `[cc]` (checked against the plugins by sideman.ccmap), and their source files.
    cc: dict[str, Any] = field(default_factory=dict)
    cc_sources: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    # Parameter values per plugin name, as in `[plugins.<name>] <param> = value`.
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Where each plugin value came from (a file path or "command line"), for error messages.
    plugin_sources: dict[str, dict[str, str]] = field(default_factory=dict, repr=False, compare=False)


# Note values a time signature's lower number may name: whole note (1) to 1/32.
METER_DENOMINATORS = (1, 2, 4, 8, 16, 32)


def parse_meter(text: str) -> tuple[int, int]:
    """Parse a time signature "4/4", "3/4", "6/8", "7/8" into (beats in the bar, note value); raise ValueError."""
    numerator, slash, denominator = text.strip().partition("/")
    try:
        counted, value = int(numerator), int(denominator)
    except ValueError:
        raise ValueError('expected a time signature such as "4/4", "3/4" or "6/8"') from None
    if not slash or not 1 <= counted <= 32 or value not in METER_DENOMINATORS:
        raise ValueError(f'expected a time signature such as "4/4", "3/4" or "6/8": 1 to 32 over one of {", ".join(map(str, METER_DENOMINATORS))}')
    return counted, value


def beats_per_bar(meter: str) -> float:
    """Length of a bar in beats, a beat being a quarter note as in the model's tokens: 4/4 gives 4, 6/8 gives 3."""
    counted, value = parse_meter(meter)
    return counted * 4 / value


def spec_of(section: str, key: str) -> Spec:
    """Return the declaration of `[section] key`; raise KeyError when there is none."""
    for declared in dataclasses.fields(SECTIONS[section]):
        if file_key(declared.name) == key:
            return Spec(key, declared.type, declared.default, **declared.metadata)
    raise KeyError(f"{section}.{key}")


def specs(section: str) -> list[Spec]:
    """Return the declarations of every key of a section, in file order."""
    return [spec_of(section, file_key(declared.name)) for declared in dataclasses.fields(SECTIONS[section])]


def file_key(field_name: str) -> str:
    """Return the key of a field in settings files: `input` is written `in`, which Python cannot name."""
    return "in" if field_name == "input" else field_name


def field_name(key: str) -> str:
    """Return the dataclass field of a settings file key, the inverse of `file_key`."""
    return "input" if key == "in" else key


def _convert_name_list(value: Any, label: str) -> tuple[str, ...]:
    # A list of names may also be written as one string, "top_p temperature", as on the command line and over OSC.
    if isinstance(value, str):
        names = value.replace(",", " ").split()
    elif isinstance(value, (list, tuple)) and all(isinstance(name, str) for name in value):
        names = [name.strip() for name in value]
    else:
        raise SettingsError(f"invalid value {value!r} for {label}: expected a list of plugin names, e.g. [\"top_p\", \"temperature\"]")

    if not names or not all(names):
        raise SettingsError(f"invalid value {value!r} for {label}: expected at least one plugin name, e.g. [\"temperature\"]")
    return tuple(names)
