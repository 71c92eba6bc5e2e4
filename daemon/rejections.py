"""Logs of repeated events that cannot flood: the first of each (sender, kind) at once, repeats as counts.

A controller stuck on a bad value can send hundreds of invalid messages a
second, and a fader can send as many valid ones. `RepeatLog` logs the first
event of each (sender, kind) at once, in full, and only counts its repeats.
Every `summary_seconds` one line per (sender, kind) reports the count, e.g.
"OSC 127.0.0.1:5000: 1,234 more 'bad type tag' rejections in the last 10 s".
A (sender, kind) that had no repeats in a window is forgotten, so its next
event is logged in full again.

Nothing runs on a timer: the owner calls `flush_due` from its own loop, and
`record` calls it too, so a summary is written when the next event arrives or
when the loop polls, whichever comes first. `flush` writes every pending count
at once, for close. The table is bounded, because UDP sender addresses can be
forged: events from further (sender, kind) pairs are counted together.
"""

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# How often repeats are summarised, in seconds.
SUMMARY_SECONDS = 10.0
# (sender, kind) pairs tracked one by one. With the summary period this also
# bounds the log to about this many lines per window.
MAX_TRACKED = 256


@dataclass
class _Entry:
    """The repeats of one (sender, kind) in the current window."""

    repeats: int = 0
    latest: str = ""  # detail of the latest repeat, quoted by the summary
    events: int = 1  # events since the pair was last logged in full, that one included


class RepeatLog:
    """Log the first event of each (sender, kind) at `level`, and summarise its repeats every `summary_seconds`.

    `prefix` starts every line ("OSC"), and `events` is the plural noun that
    summaries count ("rejections"). `clock` returns seconds. A lock guards the
    table, so that close may flush while a stuck receive thread still records.
    """

    def __init__(self, log: logging.Logger, clock: Callable[[], float], *, prefix: str, events: str,
                 level: int = logging.WARNING, summary_seconds: float = SUMMARY_SECONDS,
                 max_tracked: int = MAX_TRACKED):
        if max_tracked < 1:
            raise ValueError(f"max_tracked must be at least 1, got {max_tracked}")
        self._log = log
        self._clock = clock
        self._prefix = prefix
        self._events = events
        self._level = level
        self._summary_seconds = summary_seconds
        self._max_tracked = max_tracked

        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._untracked = 0  # events this window from pairs beyond `max_tracked`
        # Clock time at which the current window began, or inf while nothing is tracked.
        self._window_start = math.inf
        self.total = 0  # every event recorded, logged or counted

    @property
    def tracked(self) -> int:
        """The number of (sender, kind) pairs in the table now."""
        return len(self._entries)

    def count(self, sender: str, kind: str) -> int:
        """Return the events of (sender, kind) since it was last logged in full, or 0 while it is not tracked.

        The count survives summaries. It ends when a window without repeats
        removes the pair from the table. Events of pairs beyond `max_tracked`
        are not counted here.
        """
        with self._lock:
            entry = self._entries.get((sender, kind))
            return entry.events if entry is not None else 0

    def record(self, sender: str, kind: str, message: str, *args: Any, detail: str = "") -> bool:
        """Log `message % args` when it is the first event of (sender, kind), else count it.

        `detail` is a short text of this event that a summary quotes when it was
        the latest repeat. Returns whether the event was logged in full.
        """
        self.flush_due()
        with self._lock:
            self.total += 1
            if not self._entries and not self._untracked:
                self._window_start = self._clock()

            entry = self._entries.get((sender, kind))
            if entry is not None:
                entry.repeats += 1
                entry.events += 1
                entry.latest = detail
                return False

            if len(self._entries) >= self._max_tracked:
                self._count_untracked()
                return False

            self._entries[(sender, kind)] = _Entry()
            self._log.log(self._level, message, *args)
            return True

    def flush_due(self) -> None:
        """Write the summaries when the current window is `summary_seconds` old."""
        if self._clock() - self._window_start >= self._summary_seconds:
            self.flush()

    def flush(self) -> None:
        """Write one summary line per (sender, kind) with repeats now, then start a new window.

        Pairs without repeats in the window are forgotten. The others stay, so a
        steady flood gives one line per window and no repeated first lines.
        """
        with self._lock:
            now = self._clock()
            seconds = max(0.0, now - self._window_start) if math.isfinite(self._window_start) else 0.0
            for (sender, kind), entry in list(self._entries.items()):
                if entry.repeats == 0:
                    del self._entries[(sender, kind)]
                    continue
                self._write_summary(sender, kind, entry, seconds)
                entry.repeats = 0
                entry.latest = ""

            if self._untracked:
                self._log.log(self._level, "%s: %s more %s from further senders in the last %.0f s",
                              self._prefix, f"{self._untracked:,}", self._events, seconds)
                self._untracked = 0
            self._window_start = now if self._entries else math.inf

    def _write_summary(self, sender: str, kind: str, entry: _Entry, seconds: float) -> None:
        latest = f", the latest: {entry.latest}" if entry.latest else ""
        self._log.log(self._level, "%s %s: %s more '%s' %s in the last %.0f s%s", self._prefix, sender,
                      f"{entry.repeats:,}", kind, self._events, seconds, latest)

    def _count_untracked(self) -> None:
        if not self._untracked:
            self._log.log(self._level, "%s: %s from more than %d senders and kinds within %.0f s: further ones are "
                          "counted together until the next summary", self._prefix, self._events,
                          self._max_tracked, self._summary_seconds)
        self._untracked += 1
