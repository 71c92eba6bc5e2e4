"""The tempo map: beat position <-> absolute time, across tempo changes.

Times are seconds on the engine's clock, positions are beats, tempos are
BPM. The map is a list of anchors (time, beat, bpm), each starting a stretch
of constant tempo that lasts until the next anchor. Changing the tempo adds
an anchor at the time the old tempo reaches that beat, so the beat position
is continuous: no beat is skipped or repeated.
"""

import bisect
import math
from operator import attrgetter
from dataclasses import dataclass

from .errors import SettingsError

MIN_BPM = 20.0
MAX_BPM = 400.0

_BEAT = attrgetter("beat")


def validate_tempo(bpm: float) -> float:
    """Return `bpm` as a float, or raise SettingsError when it is not a number in 20-400 BPM."""
    if isinstance(bpm, bool) or not isinstance(bpm, (int, float)):
        raise SettingsError(f"invalid tempo {bpm!r}: expected a number of BPM from {MIN_BPM:g} to {MAX_BPM:g}")
    if not math.isfinite(bpm):
        raise SettingsError(f"invalid tempo {bpm!r}: expected a finite number of BPM from {MIN_BPM:g} to {MAX_BPM:g}")
    if not MIN_BPM <= bpm <= MAX_BPM:
        raise SettingsError(f"tempo {bpm:g} BPM is out of range: allowed {MIN_BPM:g} to {MAX_BPM:g} BPM")
    return float(bpm)


@dataclass(frozen=True)
class TempoAnchor:
    """The start of a stretch of constant tempo: at `time` seconds the position is `beat`."""

    time: float
    beat: float
    bpm: float

    def time_at(self, beat: float) -> float:
        return self.time + (beat - self.beat) * 60.0 / self.bpm

    def beat_at(self, time: float) -> float:
        return self.beat + (time - self.time) * self.bpm / 60.0


class TempoMap:
    """Convert between beats and seconds with tempo changes at given beats.

    Positions before the first anchor use the first anchor's tempo. The
    anchors are an immutable tuple that every change replaces whole, so a
    thread reading the map sees either the old or the new map, never a mix.
    """

    def __init__(self, bpm: float, time: float = 0.0, beat: float = 0.0):
        self._anchors: tuple[TempoAnchor, ...] = (TempoAnchor(time, beat, validate_tempo(bpm)),)

    @property
    def anchors(self) -> tuple[TempoAnchor, ...]:
        return self._anchors

    def _anchor_for_beat(self, beat: float) -> TempoAnchor:
        anchors = self._anchors
        index = bisect.bisect_right(anchors, beat, key=_BEAT) - 1
        return anchors[max(index, 0)]

    def bpm_at(self, beat: float) -> float:
        """Return the tempo in effect at `beat`."""
        return self._anchor_for_beat(beat).bpm

    def time_at(self, beat: float) -> float:
        """Return the time in seconds at which the position reaches `beat`."""
        return self._anchor_for_beat(beat).time_at(beat)

    def beat_at(self, time: float) -> float:
        """Return the beat position at `time` seconds."""
        anchors = self._anchors
        for anchor in reversed(anchors):
            if anchor.time <= time:
                return anchor.beat_at(time)
        return anchors[0].beat_at(time)

    def set_tempo(self, bpm: float, at_beat: float) -> None:
        """Play at `bpm` from `at_beat` on; replaces every tempo change at or after `at_beat`.

        The time of `at_beat` stays what the tempo before it gives, which
        keeps the beat position continuous.
        """
        bpm = validate_tempo(bpm)
        time = self.time_at(at_beat)
        kept = tuple(anchor for anchor in self._anchors if anchor.beat < at_beat)
        self._anchors = kept + (TempoAnchor(time, at_beat, bpm),)

    def restart(self, time: float, beat: float) -> None:
        """Place `beat` at `time`, keeping the tempo in effect at `beat` and dropping every other anchor.

        Used when play resumes after a stop: the beat position continues
        but the time jumps.
        """
        self._anchors = (TempoAnchor(time, beat, self.bpm_at(beat)),)

    def discard_before(self, beat: float) -> None:
        """Forget the anchors that only matter for positions before `beat`, so the map stays small."""
        anchors = self._anchors
        index = bisect.bisect_right(anchors, beat, key=_BEAT) - 1
        if index > 0:
            self._anchors = anchors[index:]
