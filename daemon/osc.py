"""The OSC control surface: UDP datagrams under /sideman turned into engine commands.

The server reads datagrams in its own loop on one thread and parses them with
python-osc's message and bundle parsers. python-osc's own servers are not used
because they drop malformed datagrams without a word and sleep inside the
receive path on bundles time-tagged in the future. Every rejected datagram or
message is logged at WARNING with the sender and the reason (at most
`MAX_WARNINGS_PER_WINDOW` per `WARNING_WINDOW_SECONDS`, then a count of the
rest), and every accepted message at INFO.

Bundles: the messages of one bundle, nested bundles flattened in order, reach
the engine in one `apply` call. A message with bad arguments (wrong types,
count or range) is logged and left out, and the valid rest of its bundle still
applies together. The engine then checks the commands as a whole (sampler and
plugin names, parameter ranges): when it rejects one, nothing of that bundle
applies, so a bundle never applies half of a change it checks. A datagram that
cannot be parsed is rejected as a whole, because its remaining bytes cannot be
trusted. Only the outermost timetag counts: "immediately" or a time in the past
applies at once, a time within `MAX_BUNDLE_DELAY_SECONDS` waits in a bounded
queue, and a later time is rejected.

Address patterns (`*`, `?`, `[...]`, `{...}`) are not expanded: each address
must be spelled out in full.
"""

import heapq
import ipaddress
import itertools
import logging
import math
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pythonosc import osc_bundle, osc_message
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.parsing import osc_types

from .commands import ApplySeeder, Command, Panic, Prime, Reseed, Reset, SetParam, SetSampler, SetTempo, Start, Stop
from .errors import InvalidInputError

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9000
PREFIX = "/sideman"
STATUS_ADDRESS = f"{PREFIX}/status"

# Large enough for any UDP datagram over IPv4, so the kernel never truncates one
# silently. Anything above MAX_DATAGRAM_BYTES is then rejected with a warning.
RECEIVE_BUFFER_BYTES = 65536
MAX_DATAGRAM_BYTES = 8192
# Kernel receive buffer requested for the socket, in bytes, so that a burst of
# messages waits in the kernel instead of being dropped there unseen.
SOCKET_BUFFER_BYTES = 1 << 20
# Seconds `close` waits for the receive thread before it gives up on it.
CLOSE_TIMEOUT = 2.0
MAX_BUNDLE_DEPTH = 8

MAX_BUNDLE_DELAY_SECONDS = 10.0
MAX_PENDING_BUNDLES = 256

MIN_TEMPO_BPM = 20.0
MAX_TEMPO_BPM = 400.0
MAX_SEED = 2**63 - 1  # the largest OSC int64 ('h')
REST_PITCH = -1
MAX_PRIME_BEATS = 64.0  # per note or rest of a primed phrase

# The type tags python-osc 1.10 parses. It logs and skips any other tag, which
# would shift the remaining arguments, so such messages are rejected up front.
SUPPORTED_TYPE_TAGS = frozenset("ihfdsbrmtTFN[]")

# How long the receive loop waits for a datagram before it checks for close()
# and for queued bundles that have come due, in seconds.
POLL_SECONDS = 0.05

# A controller stuck on a bad value (a fader past 400 BPM, say) can send dozens
# of invalid messages a second, so rejection warnings are rate-limited.
MAX_WARNINGS_PER_WINDOW = 20
WARNING_WINDOW_SECONDS = 10.0

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


class Controller(Protocol):
    """Interface of the engine that the OSC server steers (a fake in tests)."""

    def apply(self, commands: list[Command]) -> None:
        """Apply the commands together. Raise InvalidInputError with the reason when one is rejected."""

    def status(self) -> dict[str, int | float | str]:
        """Return the values that a /sideman/status reply reports."""


@dataclass(frozen=True)
class StatusRequest:
    """A /sideman/status message: the sender wants a status reply."""


Action = Command | StatusRequest


@dataclass(frozen=True)
class TranslatedMessage:
    """One valid message: its text for logs and its action."""

    text: str
    action: Action


@dataclass(frozen=True)
class RejectedMessage:
    """One invalid message: its text for logs and the reason it is rejected."""

    text: str
    reason: str


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
    return f"{type_name} {value!r}"


def _count_arguments(args: list[Any]) -> str:
    return "1 argument" if len(args) == 1 else f"{len(args)} arguments"


def _check_count(args: list[Any], count: int, expected: str) -> None:
    if len(args) != count:
        raise InvalidInputError(f"expected {expected}, got {_count_arguments(args)}")


def _number(value: Any, label: str) -> float:
    """Return an int or float argument as a finite float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{label} must be a number, got {_describe(value)}")
    if not math.isfinite(value):
        raise InvalidInputError(f"{label} must be a finite number, got {value}")
    return float(value)


def _integer(value: Any, label: str) -> int:
    """Return an int argument, or a float argument with an integral value, as an int."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{label} must be an integer, got {_describe(value)}")
    return value


def _name(value: Any, label: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{label} must be a non-empty string, got {_describe(value)}")
    return value.strip()


def _check_range(value: float, low: float, high: float, label: str) -> None:
    if not low <= value <= high:
        raise InvalidInputError(f"{label} {value} is out of range: allowed {low} to {high}")


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


def _prime(args: list[Any]) -> Prime:
    if not args or len(args) % 2 != 0:
        raise InvalidInputError(f"expected pairs of pitch and beats (i f i f ...), got {_count_arguments(args)}")

    phrase = tuple(_prime_event(args[index], args[index + 1], index // 2 + 1) for index in range(0, len(args), 2))
    return Prime(phrase)


def _prime_event(pitch_argument: Any, beats_argument: Any, position: int) -> tuple[int | None, float]:
    """Return one (MIDI pitch or None for a rest, beats) pair of a primed phrase. `position` counts from 1."""
    pitch = _integer(pitch_argument, f"pitch of event {position}")
    if pitch != REST_PITCH:
        _check_range(pitch, 0, 127, f"pitch of event {position} (MIDI note, or -1 for a rest)")

    beats = _number(beats_argument, f"beats of event {position}")
    if not 0 < beats <= MAX_PRIME_BEATS:
        raise InvalidInputError(f"beats of event {position} {beats} is out of range: "
                                f"allowed above 0 up to {MAX_PRIME_BEATS}")

    return (None if pitch == REST_PITCH else pitch, beats)


def _sampler(args: list[Any]) -> SetSampler:
    """Translate a sampler chain given as one space-separated string, several strings, or a mix."""
    names: list[str] = []
    for position, argument in enumerate(args, start=1):
        if not isinstance(argument, str):
            raise InvalidInputError(f"sampler name {position} must be a string, got {_describe(argument)}")
        names.extend(argument.split())

    if not names:
        raise InvalidInputError("expected at least one sampler name, e.g. \"scale top_p temperature\"")
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
        raise InvalidInputError(f"value of {plugin}.{name} must be an int, float, string or boolean, "
                                f"got {_describe(value)}")

    return SetParam(plugin, name, value)


def _seeder(args: list[Any]) -> ApplySeeder:
    """Translate a seeder request. Its parameters come from /sideman/param messages, e.g. in the same bundle."""
    _check_count(args, 1, "1 argument (seeder name, e.g. \"phrase\")")
    return ApplySeeder(_name(args[0], "seeder name"))


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
    f"{PREFIX}/sampler": _sampler,
    f"{PREFIX}/param": _param,
    f"{PREFIX}/seeder": _seeder,
    STATUS_ADDRESS: _without_arguments(StatusRequest),
}


def translate_message(message: OscMessage) -> Action:
    """Translate one parsed message. Raise InvalidInputError naming the reason when it is invalid."""
    translate = _TRANSLATORS.get(message.address)
    if translate is None:
        known = ", ".join(sorted(_TRANSLATORS))
        raise InvalidInputError(f"unknown address {message.address!r}. Known addresses: {known}")
    return translate(message.params)


def describe_message(message: OscMessage, max_chars: int = 200) -> str:
    """Return the address and arguments as received, cut to `max_chars` for logs."""
    arguments = " ".join(repr(value) if isinstance(value, str) else str(value) for value in message.params)
    text = f"{message.address} {arguments}".rstrip()
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


# --- Datagrams -----------------------------------------------------------

_BUNDLE_HEADER_BYTES = 16  # "#bundle\0" and a 64-bit timetag


def translate_datagram(datagram: bytes, sender: Address) -> Packet:
    """Parse one datagram and translate its messages.

    Raise InvalidInputError when the datagram as a whole is empty, too large or
    malformed. An invalid message inside it goes to `Packet.rejected` with the reason.
    """
    if not datagram:
        raise InvalidInputError("empty datagram")
    if len(datagram) > MAX_DATAGRAM_BYTES:
        raise InvalidInputError(f"datagram of {len(datagram)} bytes is larger than the limit of {MAX_DATAGRAM_BYTES}")

    timetag, parsed_messages = _parse_datagram(datagram)

    messages: list[TranslatedMessage] = []
    rejected: list[RejectedMessage] = []
    for message in parsed_messages:
        text = describe_message(message)
        try:
            messages.append(TranslatedMessage(text, translate_message(message)))
        except InvalidInputError as error:
            rejected.append(RejectedMessage(text, str(error)))

    return Packet(sender, timetag, tuple(messages), tuple(rejected))


def _parse_datagram(datagram: bytes) -> tuple[float | None, list[OscMessage]]:
    try:
        _check_element(datagram, depth=0)
        if OscBundle.dgram_is_bundle(datagram):
            bundle = OscBundle(datagram)
            return bundle.timestamp, list(_flatten(bundle))
        return None, [OscMessage(datagram)]
    except _PARSE_ERRORS as error:
        # The framing checks raise InvalidInputError, a ValueError too, so their reasons get the same prefix.
        reason = "; ".join(str(argument) for argument in error.args) or type(error).__name__
        raise InvalidInputError(f"malformed OSC datagram: {reason}") from error


def _check_element(element: bytes, depth: int) -> None:
    """Check the framing that python-osc 1.10 trusts: bundle element sizes, nesting and type tags.

    python-osc's bundle parser loops forever on a negative element size and skips
    unknown content with only a root-logger warning, so both are rejected here first.
    """
    if OscBundle.dgram_is_bundle(element):
        _check_bundle_elements(element, depth)
    elif OscMessage.dgram_is_message(element):
        _check_type_tags(element)
    else:
        raise InvalidInputError("content is neither an OSC message (starting with '/') nor a bundle ('#bundle')")


def _check_bundle_elements(bundle: bytes, depth: int) -> None:
    if depth >= MAX_BUNDLE_DEPTH:
        raise InvalidInputError(f"bundles are nested deeper than {MAX_BUNDLE_DEPTH} levels")
    if len(bundle) < _BUNDLE_HEADER_BYTES:
        raise InvalidInputError(f"bundle of {len(bundle)} bytes is shorter than its {_BUNDLE_HEADER_BYTES}-byte header")

    index = _BUNDLE_HEADER_BYTES
    while index < len(bundle):
        size, index = osc_types.get_int(bundle, index)
        if size <= 0 or size % 4 != 0 or index + size > len(bundle):
            raise InvalidInputError(f"bundle element size {size} at byte {index - 4} is not a positive multiple of 4 "
                                    f"within the {len(bundle)}-byte bundle")
        _check_element(bundle[index : index + size], depth + 1)
        index += size


def _check_type_tags(message: bytes) -> None:
    _, index = osc_types.get_string(message, 0)
    if index >= len(message):
        return  # no type tag string: a message without arguments

    type_tags, _ = osc_types.get_string(message, index)
    unsupported = sorted(set(type_tags[1:]) - SUPPORTED_TYPE_TAGS)
    if type_tags.startswith(",") and unsupported:
        raise InvalidInputError(f"unsupported OSC type tag {''.join(unsupported)!r} in {type_tags!r}")


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


# --- Dispatch ------------------------------------------------------------


class RateLimitedWarnings:
    """Log at most `max_per_window` warnings per window, then the count of those left out."""

    def __init__(self, clock: Callable[[], float], max_per_window: int = MAX_WARNINGS_PER_WINDOW,
                 window_seconds: float = WARNING_WINDOW_SECONDS):
        self._clock = clock
        self._max_per_window = max_per_window
        self._window_seconds = window_seconds
        self._window_start = -math.inf
        self._logged = 0
        self._left_out = 0

    def warning(self, message: str, *args: Any) -> None:
        now = self._clock()
        if now - self._window_start >= self._window_seconds:
            self._start_window(now)

        if self._logged < self._max_per_window:
            self._logged += 1
            logger.warning(message, *args)
        else:
            self._left_out += 1

    def _start_window(self, now: float) -> None:
        if self._left_out:
            logger.warning("OSC %d more rejections in the last %.0f s were not logged",
                           self._left_out, now - self._window_start)
        self._window_start = now
        self._logged = 0
        self._left_out = 0


class OscDispatcher:
    """Apply translated datagrams to the controller at once, or queue them until their timetag.

    Not thread-safe: the server calls it from its receive thread only.
    `clock` returns seconds since the Unix epoch, the scale of OSC timetags.
    """

    def __init__(
        self,
        controller: Controller,
        send_reply: Callable[[bytes, Address], None],
        clock: Callable[[], float] = time.time,
        max_pending: int = MAX_PENDING_BUNDLES,
        max_delay_seconds: float = MAX_BUNDLE_DELAY_SECONDS,
    ):
        self._controller = controller
        self._send_reply = send_reply
        self._clock = clock
        self._max_pending = max_pending
        self._max_delay_seconds = max_delay_seconds
        self._warnings = RateLimitedWarnings(clock)

        # Heap of (timetag, arrival number, packet): the arrival number keeps
        # bundles with equal timetags in the order they arrived.
        self._pending: list[tuple[float, int, Packet]] = []
        self._arrivals = itertools.count()

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def handle_datagram(self, datagram: bytes, sender: Address) -> None:
        """Translate one datagram and apply it now, queue it, or log why it is rejected."""
        try:
            packet = translate_datagram(datagram, sender)
        except InvalidInputError as error:
            self._warnings.warning("OSC %s datagram of %d bytes rejected: %s", format_address(sender),
                                   len(datagram), error)
            return

        for rejected in packet.rejected:
            self._warnings.warning("OSC %s %s rejected: %s", format_address(sender), rejected.text, rejected.reason)
        self._schedule(packet)

    def serve_due(self) -> None:
        """Apply every queued bundle whose timetag has come, earliest first."""
        now = self._clock()
        while self._pending and self._pending[0][0] <= now:
            _, _, packet = heapq.heappop(self._pending)
            self._apply(packet)

    def seconds_until_due(self) -> float | None:
        """Return the seconds until the earliest queued bundle is due, or None when none waits."""
        if not self._pending:
            return None
        return max(0.0, self._pending[0][0] - self._clock())

    def _schedule(self, packet: Packet) -> None:
        if not packet.messages:
            return  # every message was rejected, or the bundle was empty

        now = self._clock()
        if packet.timetag is None or packet.timetag <= now:
            self._apply(packet)
            return

        sender = format_address(packet.sender)
        delay = packet.timetag - now
        if delay > self._max_delay_seconds:
            self._warnings.warning("OSC %s bundle rejected: its timetag is %.1f s ahead, more than the limit of "
                                   "%.1f s. Send it closer to its time.", sender, delay, self._max_delay_seconds)
        elif len(self._pending) >= self._max_pending:
            self._warnings.warning("OSC %s bundle rejected: the queue for time-tagged bundles is full (%d bundles)",
                                   sender, len(self._pending))
        else:
            heapq.heappush(self._pending, (packet.timetag, next(self._arrivals), packet))
            logger.info("OSC %s bundle of %d messages queued for %.3f s from now", sender, len(packet.messages), delay)

    def _apply(self, packet: Packet) -> None:
        """Apply the packet's commands in one controller call, then reply to a status request."""
        sender = format_address(packet.sender)
        if packet.commands:
            self._apply_commands(packet, sender)

        if packet.wants_status:
            self._send_reply(build_status_reply(self._controller.status()), packet.sender)
            logger.debug("OSC %s status reply sent", sender)

    def _apply_commands(self, packet: Packet, sender: str) -> None:
        texts = [message.text for message in packet.messages if not isinstance(message.action, StatusRequest)]
        try:
            self._controller.apply(packet.commands)
        except InvalidInputError as error:
            self._warnings.warning("OSC %s %s rejected by the engine: %s", sender, " | ".join(texts), error)
            return

        for text in texts:
            logger.info("OSC %s %s accepted", sender, text)


# --- Server --------------------------------------------------------------


class OscServer:
    """A UDP OSC server on its own thread, steering `controller`.

    The receive thread only parses, queues and calls the controller, so the note
    clock's thread waits for OSC only inside whatever `controller.apply` shares with it.
    Port 0 binds an ephemeral port, which `address` then returns.
    """

    def __init__(self, controller: Controller, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 *, clock: Callable[[], float] = time.time):
        self._host = host
        self._port = port
        self._dispatcher = OscDispatcher(controller, self._send, clock)
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def address(self) -> Address:
        """The bound (host, port). Raises RuntimeError before start()."""
        if self._socket is None:
            raise RuntimeError("the OSC server is not listening: call start() first")
        host, port = self._socket.getsockname()[:2]
        return host, port

    def start(self) -> None:
        """Bind the UDP socket and start the receive thread. Raise OSError when the address cannot be bound."""
        if self._thread is not None or self._stopping.is_set():
            raise RuntimeError("the OSC server was already started. Create a new OscServer.")

        self._socket = _bind_udp(self._host, self._port)
        host, port = self.address
        logger.info("OSC listening on udp %s", format_address((host, port)))
        if not _is_loopback(host):
            logger.warning("OSC listens on %s, which other machines can reach, and OSC has no authentication", host)

        self._thread = threading.Thread(target=self._serve, name="sideman-osc", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the receive thread and close the socket, dropping queued bundles. Safe to call twice."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(CLOSE_TIMEOUT)
            if self._thread.is_alive():
                # A controller call is stuck; the thread is a daemon thread and ends with the process.
                logger.error("OSC receive thread did not stop within %.1f s; closing its socket anyway", CLOSE_TIMEOUT)
        if self._socket is None:
            return

        address = format_address(self.address)
        self._socket.close()
        self._socket = None
        logger.info("OSC stopped listening on udp %s, %d queued bundles dropped", address,
                    self._dispatcher.pending_count)

    def __enter__(self) -> "OscServer":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _serve(self) -> None:
        """Receive datagrams until close(), serving queued bundles as they come due."""
        while not self._stopping.is_set():
            try:
                self._dispatcher.serve_due()
                received = self._receive(self._poll_timeout())
                if received is not None:
                    self._dispatcher.handle_datagram(*received)
            except Exception:
                # A bug in translation or in the controller must not stop the control surface.
                logger.exception("OSC internal error while handling a datagram. Still listening.")

    def _poll_timeout(self) -> float:
        due_in = self._dispatcher.seconds_until_due()
        timeout = POLL_SECONDS if due_in is None else min(POLL_SECONDS, due_in)
        return max(timeout, 0.001)  # a zero timeout would make the socket non-blocking

    def _receive(self, timeout: float) -> tuple[bytes, Address] | None:
        assert self._socket is not None
        self._socket.settimeout(timeout)
        try:
            datagram, sender = self._socket.recvfrom(RECEIVE_BUFFER_BYTES)
        except TimeoutError:
            return None
        except OSError as error:
            # Windows can report an earlier reply to a closed port here (WSAECONNRESET).
            # The pause keeps an error that repeats from spinning the loop.
            logger.warning("OSC receive failed: %s. Still listening.", error)
            self._stopping.wait(POLL_SECONDS)
            return None
        return datagram, (sender[0], sender[1])

    def _send(self, datagram: bytes, address: Address) -> None:
        if self._socket is None:
            logger.warning("OSC reply to %s dropped: the server is closed", format_address(address))
            return
        try:
            self._socket.sendto(datagram, address)
        except OSError as error:
            logger.warning("OSC reply to %s failed: %s", format_address(address), error)


def _bind_udp(host: str, port: int) -> socket.socket:
    try:
        family, kind, protocol, _, bind_address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        udp = socket.socket(family, kind, protocol)
    except OSError as error:
        raise OSError(error.errno, f"cannot listen for OSC on {host}:{port}: {error}") from error

    try:
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
    except OSError as error:
        logger.debug("could not enlarge the OSC receive buffer: %s", error)

    try:
        udp.bind(bind_address)
    except OSError as error:
        udp.close()
        raise OSError(error.errno, f"cannot listen for OSC on {host}:{port}: {error.strerror}. "
                                   f"Choose another address or port (--osc-host, --osc-port).") from error
    return udp


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
