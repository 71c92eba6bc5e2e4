"""Clocks for the engine: a precise monotonic clock, and a fake one for tests.

The engine passes absolute deadlines in seconds and never adds up sleeps, so
a late wake-up delays one event and does not shift the ones after it.
"""

import threading
import time
from typing import Protocol

# A sleep of the operating system can end several ms late on a busy machine,
# so the clock sleeps until this many seconds before the deadline and yields
# the processor in a loop for the rest.
SPIN_SECONDS = 0.002


class Clock(Protocol):
    """Monotonic time in seconds, and a wait for an absolute deadline that a command can cut short."""

    def now(self) -> float:
        ...

    def wait_until(self, deadline: float, wake: threading.Event) -> bool:
        """Wait until `deadline`; return True when it was reached, False as soon as `wake` is set."""
        ...


class MonotonicClock:
    """The real clock: time.perf_counter, with a sleep followed by a short precise wait."""

    def now(self) -> float:
        return time.perf_counter()

    def wait_until(self, deadline: float, wake: threading.Event) -> bool:
        """Wait until `deadline`; return True when it was reached, False as soon as `wake` is set.

        A wake already set returns False at once, even after the deadline,
        so the caller applies its commands before the due events.
        """
        if wake.is_set():
            return False

        coarse = deadline - time.perf_counter() - SPIN_SECONDS
        if coarse > 0 and wake.wait(coarse):
            return False

        while time.perf_counter() < deadline:
            if wake.is_set():
                return False
            time.sleep(0)
        return True


class FakeClock:
    """A clock that moves only through `advance` and `wait_until`, which jumps to the deadline at once.

    Tests drive the engine with it to run thousands of notes without
    sleeping and to assert exact event times.
    """

    def __init__(self, start: float = 0.0):
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock cannot go back: advance({seconds}) needs 0 or more seconds")
        self._now += seconds

    def wait_until(self, deadline: float, wake: threading.Event) -> bool:
        """Jump to `deadline` (never backwards) and return True, or return False when `wake` is set."""
        if wake.is_set():
            return False
        self._now = max(self._now, deadline)
        return True
