"""How much sideman may send to a JACK port before python-rtmidi would block.

python-rtmidi's JACK output writes each message into a ring buffer of
16,384 bytes that its client drains once per JACK process cycle, and when
the buffer is full it waits for space while holding Python's global lock.
If the server stalls (a client holding up a `--sync` server, a server
stopped by a debugger or SIGSTOP), that wait never ends and the whole
daemon freezes: no notes, no OSC, no signals.

A SendBudget prevents it. It counts the bytes written since the JACK
server last began a process cycle (libjack's jack_last_frame_time, read
through the port keeper's watch client) and rejects a message once they
reach BUDGET_BYTES. The output then drops and counts it. A cycle that
runs drains the buffer and restores the budget. A period of a healthy
server carries a few messages, not hundreds, so it drops none.
"""

from __future__ import annotations

import logging
from typing import Callable, Protocol

log = logging.getLogger(__name__)

# RtMidi stores 4 bytes of length before each message in the ring buffer.
MESSAGE_OVERHEAD_BYTES = 4
# A third of the 16,384-byte buffer: bytes written in the cycle before the
# last frame change may not be drained yet, so two budgets must fit with room to spare.
BUDGET_BYTES = 5_000


class FrameClock(Protocol):
    def last_frame_time(self) -> int | None:
        """Return the frame time at which the JACK server began its latest process cycle, or None without a server."""
        ...


class SendBudget:
    """Allow sends while the bytes written since the latest JACK process cycle stay below BUDGET_BYTES."""

    def __init__(self, frames: Callable[[], FrameClock | None], budget_bytes: int = BUDGET_BYTES):
        self._frames = frames
        self._budget_bytes = budget_bytes
        self._frame: int | None = None
        self._written = 0
        self.refused = 0
        self._stalled = False

    def allows(self, message_bytes: int) -> bool:
        """Return whether a message of `message_bytes` bytes may be sent now, and count it when it may."""
        clock = self._frames()
        frame = clock.last_frame_time() if clock is not None else None
        if frame is None:
            # No watch on the server (being reached again, or sideman shutting
            # down): the port keeper decides, unless the server was seen stalled.
            return not self._stalled
        if frame != self._frame:
            if self._stalled:
                log.warning("the JACK server runs its cycles again; %d MIDI messages were dropped while it stalled", self.refused)
                self._stalled = False
            self._frame = frame
            self._written = 0

        cost = message_bytes + MESSAGE_OVERHEAD_BYTES
        if self._written + cost > self._budget_bytes:
            self.refused += 1
            if not self._stalled:
                self._stalled = True
                log.warning("the JACK server has run no cycle while %d bytes of MIDI waited: dropping messages "
                            "until it runs again, instead of freezing sideman", self._written)
            return False
        self._written += cost
        return True
