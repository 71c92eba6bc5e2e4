"""The MIDI output as the engine and the MIDI input share it: one sender at a time, and a memory of what was sent.

Two threads send: the engine's (sideman's notes) and the MIDI input's
(MIDI thru of the musician's notes). SharedOutput serializes them and keeps:

- the notes sounding on each channel, so that All Notes Off also sends an
  explicit note_off for each of them (some synths ignore CC 123) and a
  note_on of a pitch that already sounds is preceded by its note_off;
- the notes sent in the last moments, so that the MIDI input can tell
  sideman's own notes coming back through a routing loop from the
  musician's (`is_echo`).

The port behind it can go away (sideman.portkeeper): while it is lost,
messages are dropped and counted, and `replace_port` puts a reopened one in
its place. A send that fails is dropped and counted too, never raised into
the engine's thread.
"""

import logging
from typing import Callable

import threading
from collections import deque

import mido

from .clock import Clock
from .errors import MidiSystemError

log = logging.getLogger(__name__)

ALL_NOTES_OFF = 123  # MIDI control change number
# Seconds between two warnings about failed sends; the failures in between are counted.
SEND_FAILURE_WARNING_INTERVAL = 10.0
# A note that comes back into the input within this many seconds of being
# sent, with the same channel and pitch, is our own. JACK delivers a looped
# message one or two periods later (1.3 ms each at 64 frames, 48 kHz).
ECHO_WINDOW = 0.02
# Notes passed through by MIDI thru come back through a loop behind the
# musician's own notes, which may keep the input busy: they get a longer window.
THRU_ECHO_WINDOW = 0.1
SENT_REMEMBERED = 512


class SharedOutput:
    """Wraps a MessageOutput (`send`, `all_notes_off`); safe to call from several threads."""

    def __init__(self, output, clock: Clock, echo_window: float = ECHO_WINDOW):
        self._output = output
        self._clock = clock
        self._echo_window = echo_window
        self._lock = threading.Lock()
        # (clock time, echo window in seconds, message bytes) of recent note messages, oldest first.
        self._sent: deque[tuple[float, float, tuple[int, ...]]] = deque(maxlen=SENT_REMEMBERED)
        self._sounding: set[tuple[int, int]] = set()  # (channel, pitch)
        self._owed_offs: set[tuple[int, int]] = set()  # sounding notes whose note_off the port refused
        self.echoes = 0
        self._lost = False  # the port went away with its server
        self._suspended = False  # the port's only listener went away
        self.dropped = 0  # messages dropped while the port was lost or because sending failed
        self._failures_unreported = 0
        self._failure_warned_at: float | None = None
        # Decides from a message's size whether sending it now could block (sideman.sendbudget); None allows all.
        self._send_guard: Callable[[int], bool] | None = None

    @property
    def clock(self) -> Clock:
        """The clock that times what was sent, and so the clock for echo checks."""
        return self._clock

    @property
    def name(self) -> str:
        return getattr(self._output, "name", "output")

    def send(self, message: mido.Message, echo_window: float | None = None) -> None:
        """Send a message; a note_on of a pitch that sounds on its channel is preceded by that pitch's note_off.

        `echo_window` (seconds, default ECHO_WINDOW) is how long the note counts as ours if it comes back.
        """
        with self._lock:
            if _is_note(message):
                self._send_note(message, self._echo_window if echo_window is None else echo_window)
            else:
                self._send_bytes(message)

    def all_notes_off(self, channel: int) -> None:
        """Send a note_off for every note sounding on `channel` (0-15), then All Notes Off (CC 123)."""
        with self._lock:
            for sounding_channel, pitch in sorted(self._sounding):
                if sounding_channel == channel:
                    self._send_note(mido.Message("note_off", channel=channel, note=pitch, velocity=0), self._echo_window)
            self._send_bytes(mido.Message("control_change", channel=channel, control=ALL_NOTES_OFF, value=0))

    def release_sounding(self) -> int:
        """Send a note_off for every sounding note on every channel, as far as the port still reaches; return how many."""
        with self._lock:
            notes = sorted(self._sounding)
            for channel, pitch in notes:
                self._send_note(mido.Message("note_off", channel=channel, note=pitch, velocity=0), self._echo_window)
        return len(notes)

    def suspend(self) -> int:
        """Release every sounding note, then drop and count what is sent until `resume`: the port's only listener went away. Return the notes released."""
        released = self.release_sounding()
        with self._lock:
            self._suspended = True
        return released

    def resume(self) -> None:
        """Send again after `suspend`, with no note sounding."""
        with self._lock:
            self._suspended = False
            self._sounding.clear()
            self._owed_offs.clear()

    def set_send_guard(self, guard: Callable[[int], bool] | None) -> None:
        with self._lock:
            self._send_guard = guard

    def port_lost(self) -> object:
        """Stop sending to the port, which went away: messages are dropped and counted until `replace_port`. Return the old port."""
        with self._lock:
            self._lost = True
            self._sounding.clear()
            self._owed_offs.clear()
            return self._output

    def replace_port(self, output) -> object:
        """Send to `output` from now on, with no note sounding on it; return the old port, for the caller to close."""
        with self._lock:
            old, self._output = self._output, output
            self._lost = False
            self._sounding.clear()
            self._owed_offs.clear()
            return old

    @property
    def lost(self) -> bool:
        return self._lost

    @property
    def port(self):
        """The port messages go to now (the port keeper may replace it)."""
        return self._output

    def sounding(self, channel: int) -> list[int]:
        """Pitches sounding on `channel` (0-15), as far as this output sent them."""
        with self._lock:
            return sorted(pitch for sounding_channel, pitch in self._sounding if sounding_channel == channel)

    def is_echo(self, message: mido.Message, time: float) -> bool:
        """Return whether a note message received at `time` is one we sent moments ago, coming back; each sent note explains one echo.

        The bytes must be equal (type, channel, pitch and velocity), so a
        musician's note of the same pitch at the same moment, which almost
        never has sideman's velocity, still counts as theirs.
        """
        if not _is_note(message):
            return False
        received = tuple(message.bytes())
        with self._lock:
            for index in range(len(self._sent) - 1, -1, -1):
                sent_time, window, sent = self._sent[index]
                if time - sent_time > THRU_ECHO_WINDOW:
                    return False
                if time - sent_time <= window and sent == received:
                    del self._sent[index]
                    self.echoes += 1
                    return True
        return False

    def _send_note(self, message: mido.Message, echo_window: float) -> None:
        if self._owed_offs:
            self._send_owed_offs(echo_window)
        key = (message.channel, message.note)
        on = _turns_on(message)
        if not on and key not in self._sounding:
            # Already released (All Notes Off, a lost port) or never sent: a
            # second note_off would reach a returning synth without its note_on.
            return
        if on and key in self._sounding:
            self._send_and_remember(mido.Message("note_off", channel=message.channel, note=message.note, velocity=0), echo_window)
        sent = self._send_and_remember(message, echo_window)
        if on and sent:
            self._sounding.add(key)
        elif not on and (sent or self._lost or self._suspended):
            self._sounding.discard(key)
            self._owed_offs.discard(key)
        elif not on:
            # The port is there but refused the note_off (a stalled server, a
            # failed send): the note still sounds, so its note_off goes out first
            # once the port takes messages again.
            self._owed_offs.add(key)

    def _send_owed_offs(self, echo_window: float) -> None:
        for channel, pitch in sorted(self._owed_offs):
            if not self._send_and_remember(mido.Message("note_off", channel=channel, note=pitch, velocity=0), echo_window):
                return
            self._owed_offs.discard((channel, pitch))
            self._sounding.discard((channel, pitch))

    def _send_and_remember(self, message: mido.Message, echo_window: float) -> bool:
        if not self._send_bytes(message):
            return False
        self._sent.append((self._clock.now(), echo_window, tuple(message.bytes())))
        return True

    def _send_bytes(self, message: mido.Message) -> bool:
        """Send under the lock; drop and count the message when the port is lost or the send fails. Return whether it went out."""
        if self._lost or self._suspended:
            self.dropped += 1
            return False
        if self._send_guard is not None and not self._send_guard(len(message.bytes())):
            self.dropped += 1
            return False
        try:
            self._output.send(message)
        except MidiSystemError as error:
            self.dropped += 1
            self._report_failure(error)
            return False
        return True

    def _report_failure(self, error: MidiSystemError) -> None:
        now = self._clock.now()
        if self._failure_warned_at is not None and now - self._failure_warned_at < SEND_FAILURE_WARNING_INTERVAL:
            self._failures_unreported += 1
            return
        more = f" ({self._failures_unreported} more failed sends since the last warning)" if self._failures_unreported else ""
        log.warning("MIDI output %s: %s; the message is dropped%s", self.name, error, more)
        self._failure_warned_at = now
        self._failures_unreported = 0


def _is_note(message: mido.Message) -> bool:
    return message.type in ("note_on", "note_off")


def _turns_on(message: mido.Message) -> bool:
    return message.type == "note_on" and message.velocity > 0
