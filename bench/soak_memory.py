"""The daemon's memory during a soak run: VmRSS sampling from /proc, the peak (VmHWM) and the verdict on whether VmRSS stayed flat."""

import logging
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

RSS_WARMUP_SECONDS = 30.0  # the start value of VmRSS is read this long after the first note
RSS_TOLERANCE = 0.10  # VmRSS after the warm-up counts as flat while it stays within 10% of its start value
RSS_INTERVAL = 1.0  # seconds between two VmRSS readings


@dataclass(frozen=True)
class RssVerdict:
    """VmRSS of the daemon after its warm-up, in kB, and whether it stayed flat."""

    start_kb: int
    end_kb: int
    max_kb: int
    min_kb: int
    tolerance: float  # a share of start_kb

    @property
    def flat(self) -> bool:
        """True when every reading after the warm-up lies within `tolerance` of the start value."""
        low = self.start_kb * (1.0 - self.tolerance)
        high = self.start_kb * (1.0 + self.tolerance)
        return low <= self.min_kb and self.max_kb <= high

    @property
    def end_change(self) -> float:
        """Change from the start value to the end value, as a share of the start value."""
        return (self.end_kb - self.start_kb) / self.start_kb


def rss_verdict(readings: list[tuple[float, int]], warmup: float, tolerance: float = RSS_TOLERANCE) -> RssVerdict:
    """Judge (seconds, VmRSS kB) readings: the first one at or after `warmup` seconds is the start value.

    Raises ValueError when no reading lies after the warm-up.
    """
    after_warmup = [kb for seconds, kb in readings if seconds >= warmup]
    if not after_warmup:
        last = readings[-1][0] if readings else None
        raise ValueError(f"no VmRSS reading after the warm-up of {warmup:g} s (last reading at {last} s): run longer")
    return RssVerdict(after_warmup[0], after_warmup[-1], max(after_warmup), min(after_warmup), tolerance)


def read_vm_rss_kb(pid: int) -> int | None:
    """Return VmRSS of process `pid` in kB from /proc, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """A thread that reads the daemon's VmRSS every RSS_INTERVAL seconds: (seconds since `origin`, kB)."""

    def __init__(self, pid: int, origin: float) -> None:
        self.pid = pid
        self.origin = origin
        self.readings: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="soak-rss", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            kb = read_vm_rss_kb(self.pid)
            if kb is None:
                log.warning("VmRSS of process %d is unreadable: the daemon has ended", self.pid)
                return
            self.readings.append((time.perf_counter() - self.origin, kb))
            self._stop.wait(RSS_INTERVAL)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(5)


def read_peak_rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
