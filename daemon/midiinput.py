"""The MIDI input port: live notes, control changes and MIDI clock from other programs.

The input is `in` on a client named `sideman-in` (`sideman-in:in` under
JACK), a client apart from the output's because JACK would rename a second
client named `sideman`. Messages arrive through python-rtmidi's callback,
on rtmidi's own thread, and reach the caller as mido.Message objects. Bytes
that form no valid message and errors of the caller's handler are counted
and logged without flooding the log, so that a faulty device or handler
never stops the input.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import mido
import rtmidi

from sideman.errors import MidiSystemError
from sideman.midiport import MidiSystem, OpenPort, NativeMidiSystem, choose_backend_for_client, find_port, new_rtmidi_port, own_port_name, wait_for_connection

log = logging.getLogger(__name__)

SUMMARY_INTERVAL = 10.0  # seconds: the shortest time between two log lines about repeated faults


NO_VIRTUAL_INPUT_HINT = (
    "Windows has no virtual MIDI ports: pass an existing MIDI input port with --midi-in NAME "
    "(for example a loopMIDI port), or turn the MIDI input off"
)

MessageHandler = Callable[[mido.Message], None]


class RepeatedWarning:
    """A warning about a fault that may repeat thousands of times a second.

    The first occurrence is logged in full. Later ones are counted and
    summarised in one line at most once per `interval` seconds of `clock`
    (a monotonic clock), so a flood of faults adds at most one line per
    interval to the log of `logger`. `flush` logs the count that no summary
    has reported yet. Safe to call from several threads.
    """

    def __init__(
        self,
        summary: str,
        clock: Callable[[], float] = time.monotonic,
        interval: float = SUMMARY_INTERVAL,
        logger: logging.Logger = log,
    ) -> None:
        # `summary` is a %-format taking the count of unreported faults first,
        # e.g. "%d more malformed MIDI messages dropped on sideman-in:in".
        self._summary = summary
        self._logger = logger
        self._clock = clock
        self._interval = interval
        self._lock = threading.Lock()
        self.count = 0  # every occurrence, the first one included
        self._unreported = 0
        self._reported_at: float | None = None

    def warn(self, message: str, *args: object, exc_info: bool = False) -> None:
        """Count one occurrence; log `message % args` if it is the first, else a summary when one is due."""
        summary = None
        with self._lock:
            self.count += 1
            now = self._clock()
            first = self._reported_at is None
            if first:
                self._reported_at = now
            else:
                self._unreported += 1
                if now - self._reported_at >= self._interval:
                    summary = self._take_summary(now)

        # Logged outside the lock, so a slow log handler holds up only this thread.
        if first:
            self._logger.warning(message, *args, exc_info=exc_info)
        elif summary is not None:
            self._logger.warning(self._summary + " in the %.1f s since the last report", *summary)

    def flush(self) -> None:
        """Log the count of occurrences that no summary has reported yet, if any."""
        with self._lock:
            summary = self._take_summary(self._clock()) if self._unreported else None
        if summary is not None:
            self._logger.warning(self._summary + " in the %.1f s since the last report", *summary)

    def _take_summary(self, now: float) -> tuple[int, float]:
        """Return (unreported count, seconds since the last report) and start a new interval; hold the lock."""
        reported_at = now if self._reported_at is None else self._reported_at
        summary = (self._unreported, now - reported_at)
        self._unreported = 0
        self._reported_at = now
        return summary


class _HexBytes:
    """MIDI bytes shown as hex (`90 3C 64`) when a log line is formatted, not before."""

    def __init__(self, data: object) -> None:
        self._data = data

    def __str__(self) -> str:
        # rtmidi delivers a list of ints, but a malformed event is shown
        # whatever it contains, because formatting it must not fail.
        if not isinstance(self._data, (list, tuple, bytes, bytearray)):
            return repr(self._data)
        if not self._data:
            return "(no bytes)"
        return " ".join(f"{byte:02X}" if isinstance(byte, int) else repr(byte) for byte in self._data)


class MidiInput(OpenPort):
    """An open MIDI input port: calls `on_message` for every message received, closes once.

    `name` is the port as other programs list it: our own port
    (`sideman-in:in`) under ALSA and JACK, the port we read from under
    CoreMIDI and WinMM when connected by name. `connected_to` is the full name
    of the existing port this input was connected to, if any.

    `on_message(message)` runs on rtmidi's thread (under JACK, JACK's process
    thread), so it should return quickly. `message.time` is rtmidi's delta
    time: seconds since the previous message rtmidi delivered on this port,
    0 for the first. The counts, for the status reply: `received` (valid
    messages passed to `on_message`), `malformed` (events dropped because
    their bytes form no valid message) and `handler_errors` (exceptions
    raised by `on_message`).
    """

    def __init__(
        self,
        port: Any,
        name: str,
        backend: str,
        on_message: MessageHandler,
        connected_to: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # `port` is an rtmidi.MidiIn or a test fake with the same methods, open
        # or not yet opened. Holding it keeps the port open for the life of this object.
        self._port = port
        self.name = name
        self.backend = backend
        self.connected_to = connected_to
        self._on_message = on_message
        self.received = 0
        self._malformed = RepeatedWarning(f"%d more malformed MIDI messages dropped on {name}", clock)
        self._handler_errors = RepeatedWarning(f"%d more MIDI input handler errors on {name}", clock)

        # SysEx and active sensing can arrive by the thousand and sideman uses
        # neither. Timing messages stay, because MIDI clock, start, stop,
        # continue and song position are how a DAW leads the transport.
        port.ignore_types(sysex=True, timing=False, active_sense=True)
        port.set_callback(self._receive)

    @property
    def malformed(self) -> int:
        return self._malformed.count

    @property
    def handler_errors(self) -> int:
        return self._handler_errors.count

    def _receive(self, event: tuple[list[int], float], data: object = None) -> None:
        """Pass one rtmidi event on to `on_message`; rtmidi calls this on its thread.

        Nothing may raise from here into rtmidi, so parse errors and the
        handler's exceptions are counted and logged, never re-raised.
        """
        if self._port is None:
            return  # closed while rtmidi was delivering

        try:
            message = _parse_event(event)
        except (ValueError, TypeError) as error:
            self._malformed.warn(
                "dropped a malformed MIDI message on %s: %s (%s); later ones are counted and reported at most every %.0f s",
                self.name, _HexBytes(_event_bytes(event)), error, SUMMARY_INTERVAL,
            )
            return

        self.received += 1
        log.debug("MIDI in %s: %s", self.name, message)
        try:
            self._on_message(message)
        except Exception:
            self._handler_errors.warn(
                "MIDI input handler failed on %s for %s; later errors are counted and reported at most every %.0f s",
                self.name, message, SUMMARY_INTERVAL, exc_info=True,
            )

    def close(self) -> None:
        """Stop the callback, close the port and free its client; closing again does nothing."""
        if self._port is None:
            return
        port, self._port = self._port, None

        # The callback stays until the port is closed: with `_port` None it drops
        # what still arrives at once. Cancelled earlier, rtmidi would queue every
        # message of a flood and print a warning for each one past its queue limit.
        self._free(port, after_close=port.cancel_callback)

        self._malformed.flush()
        self._handler_errors.flush()
        log.info(
            "closed MIDI input %s (%s): %d messages received, %d malformed, %d handler errors",
            self.name, self.backend, self.received, self.malformed, self.handler_errors,
        )


def _parse_event(event: tuple[list[int], float]) -> mido.Message:
    """Return the mido.Message of an rtmidi event (bytes, delta time); raise ValueError or TypeError when invalid."""
    data, delta = event
    return mido.Message.from_bytes(data, time=delta)


def _event_bytes(event: object) -> object:
    if isinstance(event, tuple) and event:
        return event[0]
    return event


def open_input(
    backend: str = "auto",
    connect_to: str | None = None,
    client_name: str = "sideman-in",
    port_name: str = "in",
    *,
    on_message: MessageHandler,
    system: MidiSystem | None = None,
) -> MidiInput:
    """Open the MIDI input: a virtual port, or a connection from the existing port `connect_to`.

    `connect_to` is a full port name or a unique part of it (CLI `--midi-in`).
    Windows has no virtual ports, so there `connect_to` is required.
    `on_message` is called on rtmidi's thread for every message received (see
    MidiInput). Raises MidiSystemError when no backend is usable, the port is
    not found or ambiguous, or the client name is taken under JACK.
    """
    system = system or NativeMidiSystem()
    chosen = choose_backend_for_client(backend, client_name, connect_to, NO_VIRTUAL_INPUT_HINT, system)
    port = new_rtmidi_port(rtmidi.MidiIn, chosen, client_name)
    try:
        midi_input = _open_on(port, chosen, connect_to, client_name, port_name, on_message)
    except BaseException:
        port.delete()
        raise

    if midi_input.connected_to is None:
        log.info("opened MIDI input %s (%s, virtual port)", midi_input.name, chosen)
    else:
        log.info("opened MIDI input %s connected to %r (%s)", midi_input.name, midi_input.connected_to, chosen)
    return midi_input


def _open_on(
    port: Any, backend: str, connect_to: str | None, client_name: str, port_name: str, on_message: MessageHandler
) -> MidiInput:
    # MidiInput registers the callback before the port opens. A message that
    # arrived before that would wait in rtmidi's queue, which nothing reads.
    try:
        if connect_to is None:
            midi_input = MidiInput(port, own_port_name(client_name, port_name), backend, on_message)
            port.open_virtual_port(port_name)
            return midi_input

        available = port.get_ports()
        index = find_port(connect_to, available, "input")
        target = available[index]
        own_port_visible = backend in ("alsa", "jack")
        name = own_port_name(client_name, port_name) if own_port_visible else target
        midi_input = MidiInput(port, name, backend, on_message, connected_to=target)
        port.open_port(index, name=port_name)
        wait_for_connection(backend)
        return midi_input
    except rtmidi.RtMidiError as error:
        raise MidiSystemError(f"opening MIDI input {port_name!r} with {backend} failed: {error}") from error
