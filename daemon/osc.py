"""The OSC control surface: UDP datagrams under /sideman turned into engine commands.

The server reads datagrams in its own loop on one thread and parses them with
python-osc's message and bundle parsers. python-osc's own servers are not used
because they drop malformed datagrams without a word and sleep inside the
receive path on bundles time-tagged in the future.

Logs (sideman.rejections.RepeatLog): the first rejection of each kind
(`RejectionKind`) from each sender is logged at WARNING with the sender and the
reason, and its repeats are counted and summarised every
`rejections.SUMMARY_SECONDS`. Accepted messages are logged at INFO the same way,
per sender and address, so that a fader sending a tempo a hundred times a
second cannot fill the disk either. Each summary quotes the latest message it
counts, so the log still shows the value set last.

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

Access (sideman.osc_access): a datagram from a source outside the allowlist
is dropped before it is parsed, and counted for the status reply
(`osc_dropped`). A /sideman/param message that sets a path parameter
(`Param.path`) has its value replaced by the resolved real path inside the
OSC files directory before the engine receives it. A path outside it, or any path
when no directory is configured, rejects the message's whole datagram, so a
seeder in the same bundle never reads a file the sender did not name.
"""
import heapq
import ipaddress
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Protocol

from .commands import Command, SetParam
from .errors import InvalidInputError
from .osc_access import LOOPBACK_ONLY, Allowlist, OscFiles, SourceFilter
from .osc_packets import (
    Address,
    OscInputError,
    Packet,
    RejectionKind,
    StatusRequest,
    TranslatedMessage,
    build_status_reply,
    cut_text,
    format_address,
    translate_datagram,
)
from .params import Plugin
from .rejections import RepeatLog

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9000

# Large enough for any UDP datagram over IPv4, so the kernel never truncates one
# silently. Anything above osc_packets.MAX_DATAGRAM_BYTES is then rejected with a warning.
RECEIVE_BUFFER_BYTES = 65536
# Kernel receive buffer requested for the socket, in bytes, so that a burst of
# messages waits in the kernel instead of being dropped there unseen.
SOCKET_BUFFER_BYTES = 1 << 20
# Seconds `close` waits for the receive thread before it gives up on it.
CLOSE_TIMEOUT = 2.0

MAX_BUNDLE_DELAY_SECONDS = 10.0
MAX_PENDING_BUNDLES = 256

# How long the receive loop waits for a datagram before it checks for close()
# and for queued bundles that have come due, in seconds.
POLL_SECONDS = 0.05

# Reasons in log lines are cut to this many characters: a reason can quote a
# value of the datagram, which may be a string of several kilobytes.
MAX_REASON_CHARS = 500


class Controller(Protocol):
    """Interface of the engine that the OSC server steers (a fake in tests)."""

    def apply(self, commands: list[Command]) -> None:
        """Apply the commands together. Raise InvalidInputError with the reason when one is rejected."""

    def status(self) -> dict[str, int | float | str]:
        """Return the values that a /sideman/status reply reports."""


# --- Dispatch ------------------------------------------------------------


class OscDispatcher:
    """Apply translated datagrams to the controller at once, or queue them until their timetag.

    Not thread-safe: the server calls it from its receive thread only, and
    `flush_logs` from close() after joining that thread. The repeat logs have a
    lock of their own for a join that times out.
    `clock` returns seconds since the Unix epoch, the scale of OSC timetags; the
    logs' summary periods use it too. `plugins` (name to plugin class) must be
    the plugins the controller uses, because their declarations mark the
    parameters that are file paths. None loads the installed plugins.
    """

    def __init__(
        self,
        controller: Controller,
        send_reply: Callable[[bytes, Address], None],
        clock: Callable[[], float] = time.time,
        max_pending: int = MAX_PENDING_BUNDLES,
        max_delay_seconds: float = MAX_BUNDLE_DELAY_SECONDS,
        *,
        allowlist: Allowlist = LOOPBACK_ONLY,
        files: OscFiles | None = None,
        plugins: Mapping[str, type[Plugin]] | None = None,
    ):
        self._controller = controller
        self._send_reply = send_reply
        self._clock = clock
        self._max_pending = max_pending
        self._max_delay_seconds = max_delay_seconds
        self.rejections = RepeatLog(logger, clock, prefix="OSC", events="rejections", level=logging.WARNING)
        # Keyed by address: the first /sideman/tempo from a sender is logged in
        # full, the next ones in the window only as a count and the latest value.
        self.accepted = RepeatLog(logger, clock, prefix="OSC", events="accepted", level=logging.INFO)
        self.sources = SourceFilter(allowlist, clock)
        self.files = files if files is not None else OscFiles(None)
        self._plugins = dict(plugins) if plugins is not None else _installed_plugins()

        # Heap of (timetag, arrival number, packet): the arrival number keeps
        # bundles with equal timetags in the order they arrived.
        self._pending: list[tuple[float, int, Packet]] = []
        self._arrivals = itertools.count()

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def handle_datagram(self, datagram: bytes, sender: Address) -> None:
        """Drop a datagram from a source outside the allowlist; translate any other and apply it now, queue it, or log why it is rejected."""
        if not self.sources.admit(sender[0]):
            return

        try:
            packet = translate_datagram(datagram, sender)
        except OscInputError as error:
            self._reject(sender, error.kind, f"datagram of {len(datagram)} bytes", str(error))
            return

        for rejected in packet.rejected:
            self._reject(sender, rejected.kind, rejected.text, rejected.reason)
        self._schedule(self._confine_paths(packet))

    def serve_due(self) -> None:
        """Apply every queued bundle whose timetag has come, earliest first, and write the log summaries that are due."""
        self.sources.summarize_due()
        self.rejections.flush_due()
        self.accepted.flush_due()
        now = self._clock()
        while self._pending and self._pending[0][0] <= now:
            _, _, packet = heapq.heappop(self._pending)
            self._apply(packet)

    def flush_logs(self) -> None:
        """Write every pending log summary now: the counts of repeated rejections, acceptances and drops."""
        self.rejections.flush()
        self.accepted.flush()
        self.sources.summarize()

    def seconds_until_due(self) -> float | None:
        """Return the seconds until the earliest queued bundle is due, or None when none waits."""
        if not self._pending:
            return None
        return max(0.0, self._pending[0][0] - self._clock())

    def _reject(self, sender: Address, kind: RejectionKind, subject: str, reason: str, rejected_by: str = "") -> None:
        """Log "OSC <sender> <subject> rejected<rejected_by>: <reason>" through the rejection log."""
        reason = cut_text(reason, MAX_REASON_CHARS)
        source = format_address(sender)
        self.rejections.record(source, kind, "OSC %s %s rejected%s: %s", source, subject, rejected_by, reason,
                               detail=reason)

    def _confine_paths(self, packet: Packet) -> Packet:
        """Return the packet with each path parameter set to its real path inside the OSC files directory.

        When one path is rejected, every command of the packet is left out and only a status request stays.
        """
        confined: list[TranslatedMessage] = []
        for message in packet.messages:
            action = message.action
            if isinstance(action, SetParam) and self._is_path_param(action):
                try:
                    action = replace(action, value=self.files.resolve(action.value))
                except InvalidInputError as error:
                    others = " Nothing of its datagram applies." if len(packet.messages) > 1 else ""
                    self._reject(packet.sender, RejectionKind.PATH_NOT_ALLOWED, message.text, f"{error}.{others}")
                    status_only = tuple(kept for kept in packet.messages if isinstance(kept.action, StatusRequest))
                    return replace(packet, messages=status_only)
                logger.debug("OSC %s %s.%s resolved to %s", format_address(packet.sender), action.plugin,
                             action.name, action.value)
            confined.append(replace(message, action=action))
        return replace(packet, messages=tuple(confined))

    def _is_path_param(self, command: SetParam) -> bool:
        # An unknown plugin or parameter is no path here, and the engine rejects it.
        plugin = self._plugins.get(command.plugin)
        if plugin is None:
            return False
        return any(param.name == command.name and param.path for param in plugin.params)

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
            self._reject(packet.sender, RejectionKind.BUNDLE_TOO_FAR_AHEAD, "bundle",
                         f"its timetag is {delay:.1f} s ahead, more than the limit of {self._max_delay_seconds:.1f} s. "
                         f"Send it closer to its time.")
        elif len(self._pending) >= self._max_pending:
            self._reject(packet.sender, RejectionKind.BUNDLE_QUEUE_FULL, "bundle",
                         f"the queue for time-tagged bundles is full ({len(self._pending)} bundles)")
        else:
            heapq.heappush(self._pending, (packet.timetag, next(self._arrivals), packet))
            # DEBUG: its messages are logged as accepted, rate-limited, when they apply.
            logger.debug("OSC %s bundle of %d messages queued for %.3f s from now", sender, len(packet.messages), delay)

    def _apply(self, packet: Packet) -> None:
        """Apply the packet's commands in one controller call, then reply to a status request."""
        sender = format_address(packet.sender)
        if packet.commands:
            self._apply_commands(packet, sender)

        if packet.wants_status:
            status = {**self._controller.status(), "osc_dropped": self.sources.dropped}
            self._send_reply(build_status_reply(status), packet.sender)
            logger.debug("OSC %s status reply sent", sender)

    def _apply_commands(self, packet: Packet, sender: str) -> None:
        applied = [message for message in packet.messages if not isinstance(message.action, StatusRequest)]
        try:
            self._controller.apply(packet.commands)
        except InvalidInputError as error:
            texts = cut_text(" | ".join(message.text for message in applied), MAX_REASON_CHARS)
            self._reject(packet.sender, RejectionKind.ENGINE_REJECTED, texts, str(error), " by the engine")
            return

        for message in applied:
            self.accepted.record(sender, message.address, "OSC %s %s accepted", sender, message.text,
                                 detail=message.text)


# --- Server --------------------------------------------------------------


class OscServer:
    """A UDP OSC server on its own thread, steering `controller`.

    The receive thread only parses, queues and calls the controller, so the note
    clock's thread waits for OSC only inside whatever `controller.apply` shares with it.
    Port 0 binds an ephemeral port, which `address` then returns.
    `allowlist`, `files` and `plugins` are as for OscDispatcher: by default only
    this machine may send, OSC may set no file path, and the installed plugins are used.
    """

    def __init__(self, controller: Controller, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 *, clock: Callable[[], float] = time.time, allowlist: Allowlist = LOOPBACK_ONLY,
                 files: OscFiles | None = None, plugins: Mapping[str, type[Plugin]] | None = None):
        self._host = host
        self._port = port
        self._dispatcher = OscDispatcher(controller, self._send, clock, allowlist=allowlist, files=files,
                                         plugins=plugins)
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
        allowed = self._dispatcher.sources.allowlist.describe()
        logger.info("OSC listening on udp %s, accepting datagrams from %s", format_address((host, port)), allowed)
        if self._dispatcher.files.root is None:
            logger.info("OSC may set no file path: no directory is configured for them (--osc-files DIR)")
        else:
            logger.info("OSC may set file paths only inside %s", self._dispatcher.files.root)
        if not _is_loopback(host):
            logger.warning("OSC listens on %s, which other machines can reach. OSC has no authentication: anyone who "
                           "can reach udp port %d can steer sideman. Datagrams are accepted only from the allowlist "
                           "in force ([osc] allow): %s", host, port, allowed)

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
        self._dispatcher.flush_logs()
        logger.info("OSC stopped listening on udp %s, %d queued bundles dropped, %d datagrams dropped "
                    "from sources outside the allowlist", address, self._dispatcher.pending_count,
                    self._dispatcher.sources.dropped)

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


def _installed_plugins() -> dict[str, type[Plugin]]:
    from .registry import all_plugins, load_all

    return all_plugins(*load_all())


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
