"""OSC packets for /sideman: datagrams parsed and translated into engine commands, and the status reply.

Parsing uses python-osc's message and bundle parsers after framing checks of
our own, because python-osc 1.10 trusts the framing: it loops forever on a
bundle element with a negative size, skips unknown type tags (shifting the
arguments after them), moves backwards on a blob with a negative size, reads a
missing float argument as 0.0 and ignores bytes after the last argument. Every
rejection carries a `RejectionKind`, the key of the rate-limited logs. Nothing
here touches a socket, so every rule can be tested with literal bytes.
"""

import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pythonosc import osc_bundle, osc_message
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.parsing import osc_types

from .commands import ApplySeeder, Command, Panic, Prime, Reseed, Reset, Respond, SetFeel, SetParam, SetSampler, SetSync, SetTempo, Start, Stop
from .errors import InvalidInputError
from .tempo import MAX_BPM as MAX_TEMPO_BPM
from .tempo import MIN_BPM as MIN_TEMPO_BPM

PREFIX = "/sideman"
STATUS_ADDRESS = f"{PREFIX}/status"

# Datagrams above this size in bytes are rejected with a warning.
MAX_DATAGRAM_BYTES = 8192
MAX_BUNDLE_DEPTH = 8
# No address takes an array, and printing a deeply nested one for the log
# would exceed Python's recursion limit, so arrays deeper than this are rejected.
MAX_ARRAY_DEPTH = 8

MAX_SEED = 2**63 - 1  # the largest OSC int64 ('h')
REST_PITCH = -1
MAX_PRIME_BEATS = 64.0  # per note or rest of a primed phrase

# The type tags python-osc 1.10 parses: those with data of a fixed size in
# bytes, and strings and blobs. python-osc logs and skips any other tag, which
# would shift the remaining arguments, so such messages are rejected up front.
_FIXED_SIZE_BYTES = {"i": 4, "f": 4, "r": 4, "m": 4, "h": 8, "d": 8, "t": 8, "T": 0, "F": 0, "N": 0, "[": 0, "]": 0}
SUPPORTED_TYPE_TAGS = frozenset(_FIXED_SIZE_BYTES) | {"s", "b"}

# python-osc 1.10 raises its own ParseError classes, but also UnicodeDecodeError
# (a ValueError) for non-UTF-8 strings. IndexError and struct.error are caught too, as a precaution.
_PARSE_ERRORS = (
    osc_types.ParseError,
    osc_message.ParseError,
    osc_bundle.ParseError,
    ValueError,
    IndexError,
    OverflowError,
    struct.error,
)

Address = tuple[str, int]


class RejectionKind(StrEnum):
    """Why OSC input was rejected, as a short stable key: rejection logs count repeats per sender and kind."""

    DATAGRAM_TOO_LARGE = "datagram too large"
    NOT_OSC = "not OSC"  # empty, or neither a message nor a bundle
    MALFORMED_BUNDLE = "malformed bundle"
    MALFORMED_MESSAGE = "malformed message"
    BAD_TYPE_TAG = "bad type tag"
    UNKNOWN_ADDRESS = "unknown address"
    WRONG_ARGUMENT_COUNT = "wrong argument count"
    WRONG_ARGUMENT_TYPE = "wrong argument type"
    NOT_FINITE = "NaN or infinite"
    OUT_OF_RANGE = "out of range"
    # Set by the dispatcher (sideman.osc), after translation.
    BUNDLE_TOO_FAR_AHEAD = "bundle too far ahead"
    BUNDLE_QUEUE_FULL = "bundle queue full"
    PATH_NOT_ALLOWED = "path outside the OSC files directory"
    ENGINE_REJECTED = "rejected by the engine"


class OscInputError(InvalidInputError):
    """An invalid OSC datagram or message, with the kind of rejection."""

    def __init__(self, kind: RejectionKind, reason: str):
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True)
class StatusRequest:
    """A /sideman/status message: the sender wants a status reply."""


Action = Command | StatusRequest


@dataclass(frozen=True)
class TranslatedMessage:
    """One valid message: its text for logs, its action and its address, the key of the accepted-message log."""

    text: str
    action: Action
    address: str


@dataclass(frozen=True)
class RejectedMessage:
    """One invalid message: its text for logs, the reason it is rejected and the kind of that reason."""

    text: str
    reason: str
    kind: RejectionKind


@dataclass(frozen=True)
class Packet:
    """The translated messages of one datagram, with the time at which the valid ones apply."""

    sender: Address
    # Seconds since the Unix epoch, or None for a lone message. python-osc reports
    # the "immediately" timetag as 0, which is in the past and so applies at once.
    timetag: float | None
    messages: tuple[TranslatedMessage, ...]
    rejected: tuple[RejectedMessage, ...] = ()

    @property
    def commands(self) -> list[Command]:
        return [message.action for message in self.messages if not isinstance(message.action, StatusRequest)]

    @property
    def wants_status(self) -> bool:
        return any(isinstance(message.action, StatusRequest) for message in self.messages)


# --- Arguments -----------------------------------------------------------

_OSC_TYPE_NAMES = {bool: "boolean", int: "int", float: "float", str: "string", bytes: "blob", list: "array"}


def _describe(value: Any) -> str:
    type_name = _OSC_TYPE_NAMES.get(type(value), type(value).__name__)
    return f"{type_name} {cut_text(repr(value), 80)}"


def _count_arguments(args: list[Any]) -> str:
    return "1 argument" if len(args) == 1 else f"{len(args)} arguments"


def _check_count(args: list[Any], count: int, expected: str) -> None:
    if len(args) != count:
        raise OscInputError(RejectionKind.WRONG_ARGUMENT_COUNT, f"expected {expected}, got {_count_arguments(args)}")


def _number(value: Any, label: str) -> float:
    """Return an int or float argument as a finite float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OscInputError(RejectionKind.WRONG_ARGUMENT_TYPE, f"{label} must be a number, got {_describe(value)}")
    if not math.isfinite(value):
        raise OscInputError(RejectionKind.NOT_FINITE, f"{label} must be a finite number, got {value}")
    return float(value)


def _integer(value: Any, label: str) -> int:
    """Return an int argument, or a float argument with an integral value, as an int."""
    if isinstance(value, float) and not math.isfinite(value):
        raise OscInputError(RejectionKind.NOT_FINITE, f"{label} must be an integer, got {_describe(value)}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise OscInputError(RejectionKind.WRONG_ARGUMENT_TYPE, f"{label} must be an integer, got {_describe(value)}")
    return value


def _name(value: Any, label: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise OscInputError(RejectionKind.WRONG_ARGUMENT_TYPE,
                            f"{label} must be a non-empty string, got {_describe(value)}")
    return value.strip()


def _check_range(value: float, low: float, high: float, label: str) -> None:
    if not low <= value <= high:
        raise OscInputError(RejectionKind.OUT_OF_RANGE, f"{label} {value} is out of range: allowed {low} to {high}")


# --- Messages ------------------------------------------------------------


def _tempo(args: list[Any]) -> SetTempo:
    _check_count(args, 1, "1 argument (tempo in BPM)")
    bpm = _number(args[0], "tempo")
    _check_range(bpm, MIN_TEMPO_BPM, MAX_TEMPO_BPM, "tempo in BPM")
    return SetTempo(bpm)


def _seed(args: list[Any]) -> Reseed:
    _check_count(args, 1, "1 argument (integer seed)")
    seed = _integer(args[0], "seed")
    _check_range(seed, 0, MAX_SEED, "seed")
    return Reseed(seed)


def _swing(args: list[Any]) -> SetFeel:
    """Translate a swing amount in percent; the engine checks the range (0-75)."""
    _check_count(args, 1, "1 argument (swing in percent, 0-75)")
    return SetFeel("swing", _number(args[0], "swing"))


def _feel(args: list[Any]) -> SetFeel:
    """Translate a feel setting by name (swing, swing_unit, humanize_ms, humanize_velocity, latency_ms)."""
    _check_count(args, 2, "2 arguments (feel setting name, value)")
    return SetFeel(_name(args[0], "feel setting name"), args[1])


def _prime(args: list[Any]) -> Prime:
    if not args or len(args) % 2 != 0:
        raise OscInputError(RejectionKind.WRONG_ARGUMENT_COUNT,
                            f"expected pairs of pitch and beats (i f i f ...), got {_count_arguments(args)}")

    phrase = tuple(_prime_event(args[index], args[index + 1], index // 2 + 1) for index in range(0, len(args), 2))
    return Prime(phrase)


def _prime_event(pitch_argument: Any, beats_argument: Any, position: int) -> tuple[int | None, float]:
    """Return one (MIDI pitch or None for a rest, beats) pair of a primed phrase. `position` counts from 1."""
    pitch = _integer(pitch_argument, f"pitch of event {position}")
    if pitch != REST_PITCH:
        _check_range(pitch, 0, 127, f"pitch of event {position} (MIDI note, or -1 for a rest)")

    beats = _number(beats_argument, f"beats of event {position}")
    if not 0 < beats <= MAX_PRIME_BEATS:
        raise OscInputError(RejectionKind.OUT_OF_RANGE, f"beats of event {position} {beats} is out of range: "
                                                        f"allowed above 0 up to {MAX_PRIME_BEATS}")

    return (None if pitch == REST_PITCH else pitch, beats)


def _sampler(args: list[Any]) -> SetSampler:
    """Translate a sampler chain given as one space-separated string, several strings, or a mix."""
    names: list[str] = []
    for position, argument in enumerate(args, start=1):
        if not isinstance(argument, str):
            raise OscInputError(RejectionKind.WRONG_ARGUMENT_TYPE,
                                f"sampler name {position} must be a string, got {_describe(argument)}")
        names.extend(argument.split())

    if not names:
        raise OscInputError(RejectionKind.WRONG_ARGUMENT_COUNT,
                            "expected at least one sampler name, e.g. \"scale top_p temperature\"")
    return SetSampler(tuple(names))


def _param(args: list[Any]) -> SetParam:
    """Translate a plugin parameter. The engine checks the value against the plugin's declaration."""
    _check_count(args, 3, "3 arguments (plugin, parameter name, value)")
    plugin = _name(args[0], "plugin name")
    name = _name(args[1], "parameter name")

    # A boolean (type tag T or F) is meant for a bool parameter, and Param.convert rejects it for other types.
    value = args[2]
    if isinstance(value, float):
        value = _number(value, f"value of {plugin}.{name}")
    elif not isinstance(value, bool | int | str):
        raise OscInputError(RejectionKind.WRONG_ARGUMENT_TYPE, f"value of {plugin}.{name} must be an int, float, "
                                                               f"string or boolean, got {_describe(value)}")

    return SetParam(plugin, name, value)


def _seeder(args: list[Any]) -> ApplySeeder:
    """Translate a seeder request. Its parameters come from /sideman/param messages, e.g. in the same bundle."""
    _check_count(args, 1, "1 argument (seeder name, e.g. \"phrase\")")
    return ApplySeeder(_name(args[0], "seeder name"))


def _sync(args: list[Any]) -> SetSync:
    """Translate a sync source name; the engine checks it (internal, master, midi-in or link)."""
    _check_count(args, 1, "1 argument (sync source: internal, master, midi-in or link)")
    return SetSync(_name(args[0], "sync source"))


def _without_arguments(make_action: Callable[[], Action]) -> Callable[[list[Any]], Action]:
    def translate(args: list[Any]) -> Action:
        _check_count(args, 0, "no arguments")
        return make_action()

    return translate


_TRANSLATORS: dict[str, Callable[[list[Any]], Action]] = {
    f"{PREFIX}/tempo": _tempo,
    f"{PREFIX}/seed": _seed,
    f"{PREFIX}/prime": _prime,
    f"{PREFIX}/start": _without_arguments(Start),
    f"{PREFIX}/stop": _without_arguments(Stop),
    f"{PREFIX}/panic": _without_arguments(Panic),
    f"{PREFIX}/reset": _without_arguments(Reset),
    f"{PREFIX}/respond": _without_arguments(Respond),
    f"{PREFIX}/swing": _swing,
    f"{PREFIX}/feel": _feel,
    f"{PREFIX}/sampler": _sampler,
    f"{PREFIX}/param": _param,
    f"{PREFIX}/seeder": _seeder,
    f"{PREFIX}/sync": _sync,
    STATUS_ADDRESS: _without_arguments(StatusRequest),
}


def translate_message(message: OscMessage) -> Action:
    """Translate one parsed message. Raise OscInputError naming the reason when it is invalid."""
    translate = _TRANSLATORS.get(message.address)
    if translate is None:
        raise OscInputError(RejectionKind.UNKNOWN_ADDRESS, _unknown_address_reason(message.address))
    return translate(message.params)


def _unknown_address_reason(address: str) -> str:
    known = ", ".join(sorted(_TRANSLATORS))
    pattern = any(character in address for character in _PATTERN_CHARACTERS)
    hint = " Address patterns (*, ?, [...], {...}) are not expanded: spell out one address." if pattern else ""
    return f"unknown address {cut_text(repr(address), 80)}.{hint} Known addresses: {known}"


def describe_message(message: OscMessage, max_chars: int = 200) -> str:
    """Return the address and arguments as received, cut to `max_chars` for logs."""
    arguments = " ".join(repr(value) if isinstance(value, str) else str(value) for value in message.params)
    return cut_text(f"{message.address} {arguments}".rstrip(), max_chars)


def cut_text(text: str, max_chars: int) -> str:
    """Return `text` cut to `max_chars` characters, ending in "..." when it was longer."""
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


# --- Datagrams -----------------------------------------------------------

_BUNDLE_HEADER_BYTES = 16  # "#bundle\0" and a 64-bit timetag
# Characters that make an OSC 1.0 address pattern. "!" counts only inside [...], where it negates.
_PATTERN_CHARACTERS = frozenset("*?[]{}")


def translate_datagram(datagram: bytes, sender: Address) -> Packet:
    """Parse one datagram and translate its messages.

    Raise OscInputError when the datagram as a whole is empty, too large or
    malformed. An invalid message inside it goes to `Packet.rejected` with the reason.
    """
    if not datagram:
        raise OscInputError(RejectionKind.NOT_OSC, "empty datagram")
    if len(datagram) > MAX_DATAGRAM_BYTES:
        raise OscInputError(RejectionKind.DATAGRAM_TOO_LARGE,
                            f"datagram of {len(datagram)} bytes is larger than the limit of {MAX_DATAGRAM_BYTES}")

    timetag, parsed_messages = _parse_datagram(datagram)

    messages: list[TranslatedMessage] = []
    rejected: list[RejectedMessage] = []
    for message in parsed_messages:
        text = describe_message(message)
        try:
            messages.append(TranslatedMessage(text, translate_message(message), message.address))
        except OscInputError as error:
            rejected.append(RejectedMessage(text, str(error), error.kind))

    return Packet(sender, timetag, tuple(messages), tuple(rejected))


def _parse_datagram(datagram: bytes) -> tuple[float | None, list[OscMessage]]:
    # The framing checks come first and give each rejection its kind. python-osc's
    # own errors after them mean a malformed message, e.g. a string that is not UTF-8.
    try:
        _check_element(datagram, depth=0)
        if OscBundle.dgram_is_bundle(datagram):
            bundle = OscBundle(datagram)
            return bundle.timestamp, list(_flatten(bundle))
        return None, [OscMessage(datagram)]
    except OscInputError as error:
        raise OscInputError(error.kind, f"malformed OSC datagram: {error}") from error
    except _PARSE_ERRORS as error:
        reason = "; ".join(str(argument) for argument in error.args) or type(error).__name__
        raise OscInputError(RejectionKind.MALFORMED_MESSAGE, f"malformed OSC datagram: {reason}") from error


def _check_element(element: bytes, depth: int) -> None:
    """Check the framing that python-osc 1.10 trusts: bundle element sizes and nesting, type tags and argument sizes."""
    if OscBundle.dgram_is_bundle(element):
        _check_bundle_elements(element, depth)
    elif OscMessage.dgram_is_message(element):
        _check_message(element)
    else:
        raise OscInputError(RejectionKind.NOT_OSC,
                            "content is neither an OSC message (starting with '/') nor a bundle ('#bundle')")


def _check_bundle_elements(bundle: bytes, depth: int) -> None:
    """Reject what python-osc's bundle parser mishandles: it loops forever on a negative element size."""
    if depth >= MAX_BUNDLE_DEPTH:
        raise OscInputError(RejectionKind.MALFORMED_BUNDLE, f"bundles are nested deeper than {MAX_BUNDLE_DEPTH} levels")
    if len(bundle) < _BUNDLE_HEADER_BYTES:
        raise OscInputError(RejectionKind.MALFORMED_BUNDLE,
                            f"bundle of {len(bundle)} bytes is shorter than its {_BUNDLE_HEADER_BYTES}-byte header")

    index = _BUNDLE_HEADER_BYTES
    while index < len(bundle):
        if index + 4 > len(bundle):
            raise OscInputError(RejectionKind.MALFORMED_BUNDLE,
                                f"bundle element size at byte {index} is cut off by the end of the bundle")
        size, index = osc_types.get_int(bundle, index)
        if size <= 0 or size % 4 != 0 or index + size > len(bundle):
            raise OscInputError(RejectionKind.MALFORMED_BUNDLE,
                                f"bundle element size {size} at byte {index - 4} is not a positive multiple of 4 "
                                f"within the {len(bundle)}-byte bundle")
        _check_element(bundle[index : index + size], depth + 1)
        index += size


def _check_message(message: bytes) -> None:
    """Check that the type tags describe the argument data exactly, byte for byte.

    python-osc 1.10 would otherwise skip unknown tags, step backwards on a blob
    with a negative size, read a missing float as 0.0 and ignore bytes after
    the last argument. The missing float alone made "/sideman/seed ,f" a valid seed 0.
    """
    _, index = osc_types.get_string(message, 0)
    if index >= len(message):
        return  # no type tag string: a message without arguments

    type_tags, index = osc_types.get_string(message, index)
    _check_type_tags(type_tags)

    for position, tag in enumerate(type_tags[1:], start=1):
        index = _skip_argument(message, index, tag, position)
    if index < len(message):
        raise OscInputError(RejectionKind.BAD_TYPE_TAG,
                            f"{len(message) - index} bytes follow the arguments that the type tags "
                            f"{cut_text(repr(type_tags), 40)} describe")


def _check_type_tags(type_tags: str) -> None:
    if not type_tags.startswith(","):
        raise OscInputError(RejectionKind.BAD_TYPE_TAG,
                            f"type tag string {cut_text(repr(type_tags), 40)} does not start with ','")

    unsupported = sorted(set(type_tags[1:]) - SUPPORTED_TYPE_TAGS)
    if unsupported:
        raise OscInputError(RejectionKind.BAD_TYPE_TAG,
                            f"unsupported OSC type tag {''.join(unsupported)!r} in {cut_text(repr(type_tags), 40)}")

    depth = 0
    for tag in type_tags:
        depth += {"[": 1, "]": -1}.get(tag, 0)
        if depth < 0:
            raise OscInputError(RejectionKind.BAD_TYPE_TAG, "type tag ']' closes an array that was not opened")
        if depth > MAX_ARRAY_DEPTH:
            raise OscInputError(RejectionKind.BAD_TYPE_TAG, f"arrays are nested deeper than {MAX_ARRAY_DEPTH} levels")
    if depth != 0:
        raise OscInputError(RejectionKind.BAD_TYPE_TAG, "type tag '[' opens an array that is not closed")


def _skip_argument(message: bytes, index: int, tag: str, position: int) -> int:
    """Return the index after the data of argument `position` (counted from 1), whose type tag is `tag`."""
    remaining = len(message) - index
    if tag == "s":
        if remaining <= 0:
            raise _missing_data(tag, position)
        return osc_types.get_string(message, index)[1]
    if tag == "b":
        return _skip_blob(message, index, position)

    size = _FIXED_SIZE_BYTES[tag]
    if tag == "f" and 0 < remaining < size:
        # python-osc pads a float cut short at the end of a datagram, because Reaktor
        # leaves off its trailing zero bytes. Such a float is accepted; a missing one is not.
        return len(message)
    if remaining < size:
        raise _missing_data(tag, position, size, remaining)
    return index + size


def _skip_blob(message: bytes, index: int, position: int) -> int:
    if len(message) - index < 4:
        raise _missing_data("b", position, 4, len(message) - index)
    size, index = osc_types.get_int(message, index)
    if size < 0:
        raise OscInputError(RejectionKind.MALFORMED_MESSAGE, f"argument {position} is a blob of negative size {size}")

    padded = size + (-size % 4)  # blob data is padded with zero bytes to a multiple of 4
    if index + padded > len(message):
        raise OscInputError(RejectionKind.MALFORMED_MESSAGE,
                            f"argument {position} is a blob of {size} bytes, more than the {len(message) - index} "
                            f"bytes left")
    return index + padded


def _missing_data(tag: str, position: int, size: int = 1, remaining: int = 0) -> OscInputError:
    return OscInputError(RejectionKind.MALFORMED_MESSAGE,
                         f"argument {position} (type tag {tag!r}) needs {size} bytes, but {max(remaining, 0)} are left")


def _flatten(bundle: OscBundle) -> Iterator[OscMessage]:
    for content in bundle:
        if isinstance(content, OscBundle):
            yield from _flatten(content)
        else:
            yield content


def format_address(address: Address) -> str:
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- Status reply --------------------------------------------------------


def build_status_reply(status: dict[str, int | float | str]) -> bytes:
    """Build the /sideman/status reply: a string key, then an int, float or string value, per entry."""
    builder = OscMessageBuilder(STATUS_ADDRESS)
    for key, value in status.items():
        builder.add_arg(str(key), OscMessageBuilder.ARG_TYPE_STRING)
        builder.add_arg(*_status_argument(key, value))
    return builder.build().dgram


def _status_argument(key: str, value: Any) -> tuple[Any, str]:
    if isinstance(value, bool):
        return int(value), OscMessageBuilder.ARG_TYPE_INT  # 1 or 0: not every OSC client reads T and F
    if isinstance(value, int):
        fits_int32 = -(2**31) <= value < 2**31
        return value, OscMessageBuilder.ARG_TYPE_INT if fits_int32 else OscMessageBuilder.ARG_TYPE_INT64
    if isinstance(value, float):
        return value, OscMessageBuilder.ARG_TYPE_FLOAT
    if isinstance(value, str):
        return value, OscMessageBuilder.ARG_TYPE_STRING
    raise TypeError(f"status value {key!r} must be an int, float or string, got {type(value).__name__}")
