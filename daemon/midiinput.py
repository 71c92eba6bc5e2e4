"""The MIDI input port: live notes, control changes and MIDI clock from other programs.

The input is `in` on a client named `sideman-in` (`sideman-in:in` under
JACK), a client apart from the output's because JACK would rename a second
client named `sideman`. Messages arrive through python-rtmidi's callback on
rtmidi's own thread, or under JACK through a reader thread of ours (see
MidiInput), and reach the caller as mido.Message objects.
EventParser splits each event's bytes into messages as a MIDI receiver
does: with running status, and with real-time bytes between the data bytes
of another message. Bytes that form no valid message and errors of the
caller's handler are counted and logged without flooding the log, so that
a faulty device or handler never stops the input.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import mido
import rtmidi
from mido.messages.specs import SPEC_BY_STATUS

from sideman.errors import MidiSystemError
from sideman.midiport import MidiSystem, OpenPort, NativeMidiSystem, choose_backend_for_client, find_port, new_rtmidi_port, own_port_name, wait_for_connection

log = logging.getLogger(__name__)

SUMMARY_INTERVAL = 10.0  # seconds: the shortest time between two log lines about repeated faults
# Under JACK a reader thread polls RtMidi's queue, again after this many
# seconds when it is empty. Each poll takes the GIL for a few microseconds,
# and the polling adds at most this much to an event's latency.
# NOTE: what the polling costs the engine's onset timing under load has not
# been measured side by side with the callback.
QUEUE_POLL_INTERVAL = 0.001
# Events RtMidi queues for the reader thread: 3 s of a 10,000 messages a second flood.
# RtMidi drops an event that finds the queue full and prints a line to stderr.
# NOTE: no count of sideman's shows such drops.
QUEUE_SIZE = 32768
# The counts of a MidiInput that the status reply reports, as attribute names.
INPUT_COUNTS = ("received", "malformed", "ignored", "handler_errors")
# A log line shows at most this many bytes of a malformed event; a SysEx can be 64 KiB long.
MAX_LOGGED_BYTES = 32

SYSEX_START = 0xF0
SYSEX_END = 0xF7
ACTIVE_SENSING = 0xFE
# Real-time status bytes (F8-FF) may stand between the data bytes of any
# other message (MIDI 1.0), and they leave running status as it is.
REALTIME_BYTES = bytes(range(0xF8, 0x100))
_NON_REALTIME_BYTES = bytes(range(0xF8))
# Splits bytes without real-time bytes at each status byte and keeps it: [data, status, data, status, data, ...].
_STATUS_SPLIT = re.compile(rb"([\x80-\xff])")


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
    """MIDI bytes shown as hex (`90 3C 64`) when a log line is formatted, not before; long ones are cut."""

    def __init__(self, data: object) -> None:
        self._data = data

    def __str__(self) -> str:
        # rtmidi delivers a list of ints, but a malformed event is shown
        # whatever it contains, because formatting it must not fail.
        if not isinstance(self._data, (list, tuple, bytes, bytearray)):
            return repr(self._data)
        if not self._data:
            return "(no bytes)"
        text = " ".join(f"{byte:02X}" if isinstance(byte, int) else repr(byte) for byte in self._data[:MAX_LOGGED_BYTES])
        if len(self._data) > MAX_LOGGED_BYTES:
            text += f" ... ({len(self._data)} bytes)"
        return text


class EventParser:
    """Split the bytes of rtmidi events into MIDI messages, keeping running status from one event to the next.

    rtmidi normally delivers one whole message per event, but under JACK an
    event contains whatever bytes the sender wrote. These can be data bytes
    whose status byte came in an earlier event (running status), real-time
    bytes between the data bytes of another message, or several messages.
    Not thread-safe: one parser serves one port, whose events rtmidi
    delivers one at a time.
    """

    def __init__(self) -> None:
        # The status byte of the latest channel message, which data bytes without
        # a status byte of their own continue. None after a SysEx or a system
        # common message, or after an invalid event, whose sender's status is unknown.
        self.running_status: int | None = None

    def take_realtime(self, data: bytes) -> tuple[bytes, bytes]:
        """Return (real-time bytes, the other bytes) of an event, each in their order."""
        other = data.translate(None, REALTIME_BYTES)
        if len(other) == len(data):
            return b"", data
        return data.translate(None, _NON_REALTIME_BYTES), other

    def split(self, data: bytes) -> tuple[list[mido.Message], int]:
        """Return the messages of an event without real-time bytes, and the number of SysEx messages left out of them.

        Raises ValueError, naming the bytes at fault, when the bytes do not
        split into whole valid messages. Then none of them counts, and running
        status is cleared.
        """
        try:
            return self._split(data)
        except ValueError:
            self.running_status = None
            raise

    def _split(self, data: bytes) -> tuple[list[mido.Message], int]:
        parts = _STATUS_SPLIT.split(data)
        status = self.running_status
        messages: list[mido.Message] = []
        sysex = 0

        if parts[0]:
            if status is None:
                raise ValueError(f"data byte {parts[0][0]:02X} without a status byte, and no running status to continue")
            messages.extend(_channel_messages(status, parts[0], _following_status(parts, 1)))

        index = 1
        while index < len(parts):
            status, payload = parts[index][0], parts[index + 1]
            index += 2
            if status == SYSEX_START:
                _check_sysex_end(parts, index)
                sysex += 1
                index += 2
                status = None
            elif status < SYSEX_START:
                messages.extend(_channel_messages(status, payload, _following_status(parts, index)))
            else:
                messages.append(_system_common_message(status, payload))
                status = None

        self.running_status = status
        return messages, sysex


def _following_status(parts: list[bytes], index: int) -> int | None:
    """Return the status byte at `index` of a split event, None past its end."""
    return parts[index][0] if index < len(parts) else None


def _channel_messages(status: int, payload: bytes, following: int | None) -> list[mido.Message]:
    """Return the channel messages of `status` in `payload`: one, or several in running status."""
    spec = SPEC_BY_STATUS[status]
    per_message = spec["length"] - 1
    if not payload or len(payload) % per_message:
        needs = f"{spec['type']} needs {_count_bytes(per_message)}"
        last_count = len(payload) % per_message
        if following is None:
            raise ValueError(f"{needs}, but the event ends after {last_count}")
        raise ValueError(f"{needs}, but status byte {following:02X} follows after {last_count}: a data byte must be in range 0..127")
    return [
        mido.Message.from_bytes([status, *payload[start:start + per_message]])
        for start in range(0, len(payload), per_message)
    ]


def _check_sysex_end(parts: list[bytes], index: int) -> None:
    """Check that the SysEx whose data ends before `index` of a split event ends with F7 and nothing follows F7."""
    if index >= len(parts) or parts[index][0] != SYSEX_END:
        following = "the end of the event" if index >= len(parts) else f"status byte {parts[index][0]:02X}"
        raise ValueError(f"SysEx without its end byte F7: {following} follows its data")
    trailing = parts[index + 1]
    if trailing:
        raise ValueError(f"data byte {trailing[0]:02X} after a SysEx end F7 without a status byte")


def _system_common_message(status: int, payload: bytes) -> mido.Message:
    if status == SYSEX_END:
        raise ValueError("SysEx end byte F7 without a SysEx start F0")
    spec = SPEC_BY_STATUS.get(status)
    if spec is None:
        raise ValueError(f"undefined status byte {status:02X}")
    if len(payload) != spec["length"] - 1:
        raise ValueError(f"{spec['type']} needs {_count_bytes(spec['length'] - 1)}, but it has {len(payload)}")
    return mido.Message.from_bytes([status, *payload])


def _count_bytes(count: int) -> str:
    return f"{count} data byte" if count == 1 else f"{count} data bytes"


class MidiInput(OpenPort):
    """An open MIDI input port: calls `on_message` for every message received, closes once.

    `name` is the port as other programs list it: our own port
    (`sideman-in:in`) under ALSA and JACK, the port we read from under
    CoreMIDI and WinMM when connected by name. `connected_to` is the full name
    of the existing port this input was connected to, if any. `client_name`
    and `port_name` are the names sideman opened it under.

    `on_message(message)` runs on rtmidi's thread, or under JACK on this
    input's reader thread, so it should return quickly. `message.time` is rtmidi's delta
    time: seconds since the previous event rtmidi delivered on this port,
    0 for the first, and 0 for the second and later messages of one event.
    The counts, for the status reply: `received` (valid messages passed to
    `on_message`), `malformed` (events, or undefined real-time bytes, dropped
    because their bytes form no valid message), `ignored` (SysEx and active
    sensing messages dropped, as the port's filter drops them) and
    `handler_errors` (exceptions raised by `on_message`).

    Under JACK no Python code runs in JACK's process thread: RtMidi queues
    each event there, and a reader thread of ours takes it from the queue. A
    callback there would wait for the GIL, while python-rtmidi holds the GIL
    as it opens or closes a JACK client (the output's, when it reconnects or
    closes). The JACK server then waited for this client, the client for the
    GIL and the GIL for the server: the open failed after the server's
    timeout and every other JACK program missed its cycles meanwhile.
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
        client_name: str = "sideman-in",
        port_name: str = "in",
    ) -> None:
        # `port` is an rtmidi.MidiIn or a test fake with the same methods, open
        # or not yet opened. Holding it keeps the port open for the life of this object.
        self._port = port
        self.name = name
        self.backend = backend
        self.connected_to = connected_to
        self.client_name = client_name
        self.port_name = port_name
        self._on_message = on_message
        self._parser = EventParser()
        self.received = 0
        self.ignored = 0
        self._malformed = RepeatedWarning(f"%d more malformed MIDI messages dropped on {name}", clock)
        self._handler_errors = RepeatedWarning(f"%d more MIDI input handler errors on {name}", clock)
        self._read_errors = RepeatedWarning(f"%d more errors reading {name} from RtMidi's queue", clock)

        # SysEx and active sensing can arrive by the thousand and sideman uses
        # neither. Timing messages stay, because MIDI clock, start, stop,
        # continue and song position are how a DAW leads the transport.
        # NOTE: with the JACK API, RtMidi (python-rtmidi 1.5.8) takes every event
        # after a SysEx start without its end byte F7 for part of that SysEx
        # until an event ends with F7, so such a SysEx silences this input until then.
        port.ignore_types(sysex=True, timing=False, active_sense=True)
        self._reader: threading.Thread | None = None
        self._stop_reading = threading.Event()
        if backend == "jack":
            self._reader = threading.Thread(target=self._read_queue, args=(port,), name=f"MIDI in {name}", daemon=True)
        else:
            port.set_callback(self._receive)

    def start_reading(self) -> None:
        """Start the reader thread, once the port is open; with a callback there is none to start.

        Events that arrived since the port opened wait in RtMidi's queue until then.
        """
        if self._reader is not None and self._reader.ident is None:
            self._reader.start()

    @property
    def malformed(self) -> int:
        return self._malformed.count

    @property
    def handler_errors(self) -> int:
        return self._handler_errors.count

    def _read_queue(self, port: Any) -> None:
        """Pass on each event RtMidi queued, until close(); the reader thread's loop.

        An error ends neither the loop nor the input: it is logged, and the
        next event is read.
        """
        while not self._stop_reading.is_set():
            try:
                event = port.get_message()
                if event is None:
                    self._stop_reading.wait(QUEUE_POLL_INTERVAL)
                else:
                    self._receive(event)
            except Exception:
                self._read_errors.warn(
                    "reading MIDI input %s from RtMidi's queue failed; reading on, later errors are counted and reported at most every %.0f s",
                    self.name, SUMMARY_INTERVAL, exc_info=True,
                )
                self._stop_reading.wait(QUEUE_POLL_INTERVAL)

    def _receive(self, event: tuple[list[int], float], data: object = None) -> None:
        """Pass the messages of one rtmidi event on to `on_message`; runs on rtmidi's thread or the reader thread.

        Nothing may raise from here into rtmidi, so parse errors and the
        handler's exceptions are counted and logged, never re-raised.
        Real-time messages go first: they arrived before the message around
        them was complete. The event's other bytes are passed on whole or
        not at all.
        """
        if self._port is None:
            return  # closed while an event was being delivered

        try:
            raw, delta = _event_parts(event)
        except (ValueError, TypeError) as error:
            self._warn_malformed(event, error)
            return
        realtime, other = self._parser.take_realtime(raw)

        messages = []
        for status in realtime:
            if status == ACTIVE_SENSING:
                self.ignored += 1
            elif status in SPEC_BY_STATUS:
                messages.append(mido.Message.from_bytes([status]))
            else:
                self._warn_malformed(event, ValueError(f"undefined real-time status byte {status:02X}"))

        if other:
            try:
                parsed, sysex = self._parser.split(other)
            except ValueError as error:
                self._warn_malformed(event, error)
                parsed, sysex = [], 0
            messages.extend(parsed)
            self.ignored += sysex
        elif not realtime:
            self._warn_malformed(event, ValueError("an event needs at least one byte"))

        for index, message in enumerate(messages):
            message.time = delta if index == 0 else 0.0
            self._deliver(message)

    def _deliver(self, message: mido.Message) -> None:
        self.received += 1
        log.debug("MIDI in %s: %s", self.name, message)
        try:
            self._on_message(message)
        except Exception:
            self._handler_errors.warn(
                "MIDI input handler failed on %s for %s; later errors are counted and reported at most every %.0f s",
                self.name, message, SUMMARY_INTERVAL, exc_info=True,
            )

    def _warn_malformed(self, event: object, error: Exception) -> None:
        self._malformed.warn(
            "dropped a malformed MIDI message on %s: %s (%s); later ones are counted and reported at most every %.0f s",
            self.name, _HexBytes(_event_bytes(event)), error, SUMMARY_INTERVAL,
        )

    def close(self) -> None:
        """Stop the callback or the reader thread, close the port and free its client; closing again does nothing."""
        if self._port is None:
            return
        port, self._port = self._port, None

        if self._reader is not None:
            # What RtMidi still queues goes with the port, and an event the reader
            # took as `_port` became None is dropped.
            self._stop_reading.set()
            if self._reader.is_alive():
                self._reader.join()
            self._free(port)
        else:
            # The callback stays until the port is closed: with `_port` None it drops
            # what still arrives at once. Cancelled earlier, rtmidi would queue every
            # message of a flood and print a warning for each one past its queue limit.
            self._free(port, after_close=port.cancel_callback)

        self._malformed.flush()
        self._handler_errors.flush()
        self._read_errors.flush()
        log.info(
            "closed MIDI input %s (%s): %d messages received, %d malformed, %d handler errors",
            self.name, self.backend, self.received, self.malformed, self.handler_errors,
        )


def _event_parts(event: object) -> tuple[bytes, float]:
    """Return the bytes and delta time (seconds) of an rtmidi event; raise TypeError or ValueError when invalid."""
    data, delta = event
    if isinstance(delta, bool) or not isinstance(delta, (int, float)):
        raise TypeError(f"delta time {delta!r} is not a number of seconds")
    # bytes() checks each byte: TypeError for a non-integer, ValueError outside 0..255.
    return bytes(data), float(delta)


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
    `on_message` is called on rtmidi's thread, or under JACK on the input's
    reader thread, for every message received (see
    MidiInput). Raises MidiSystemError when no backend is usable, the port is
    not found or ambiguous, or the client name is taken under JACK.
    """
    system = system or NativeMidiSystem()
    chosen = choose_backend_for_client(backend, client_name, connect_to, NO_VIRTUAL_INPUT_HINT, system)
    port = new_rtmidi_port(rtmidi.MidiIn, chosen, client_name, queue_size_limit=QUEUE_SIZE)
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
    # Under JACK the reader thread starts once the port is open and takes
    # what arrived meanwhile from that queue.
    try:
        if connect_to is None:
            midi_input = MidiInput(port, own_port_name(client_name, port_name), backend, on_message,
                                   client_name=client_name, port_name=port_name)
            port.open_virtual_port(port_name)
            midi_input.start_reading()
            return midi_input

        available = port.get_ports()
        index = find_port(connect_to, available, "input")
        target = available[index]
        own_port_visible = backend in ("alsa", "jack")
        name = own_port_name(client_name, port_name) if own_port_visible else target
        midi_input = MidiInput(port, name, backend, on_message, connected_to=target, client_name=client_name, port_name=port_name)
        port.open_port(index, name=port_name)
        wait_for_connection(backend)
        midi_input.start_reading()
        return midi_input
    except rtmidi.RtMidiError as error:
        raise MidiSystemError(f"opening MIDI input {port_name!r} with {backend} failed: {error}") from error
