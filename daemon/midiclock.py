"""Leading a DAW: MIDI clock at 24 pulses per quarter note, Start, Stop, Continue and Song Position Pointer.

The engine owns a ClockLeader when it runs as the clock master. Pulses fall
on beat positions (pulse k at beat k/24 of the transport), so their times
come from the same TempoMap and absolute deadlines as the notes, never from
a sleep loop: a tempo change moves the pulses exactly as it moves the
onsets, and a late wake-up does not shift the pulses after it.

MIDI transport as a follower sees it:
- Start (0xFA) plays from the top of the song, so the leader sends it when
  play starts at beat 0.
- Starting anywhere else sends Song Position Pointer (0xF2, the position in
  sixteenth notes, 0-16383) and then Continue (0xFB).
- Stop (0xFC) stops the follower; the pulses stop with it.
"""

import logging
import math

import mido

from .tempo import TempoMap

log = logging.getLogger(__name__)

PULSES_PER_BEAT = 24
SIXTEENTHS_PER_BEAT = 4
PULSES_PER_SIXTEENTH = PULSES_PER_BEAT // SIXTEENTHS_PER_BEAT
MAX_SONG_POSITION = 16383  # 14 bits of sixteenth notes
# Pulses later than this are skipped instead of sent in a burst: a burst
# would make the follower's tempo jump.
MAX_PULSE_LATENESS = 0.1

CLOCK = mido.Message("clock")
START = mido.Message("start")
CONTINUE = mido.Message("continue")
STOP = mido.Message("stop")


def song_position(beat: float) -> mido.Message:
    """Song Position Pointer for `beat`, rounded down to a sixteenth note and clipped to what the message holds."""
    sixteenths = min(MAX_SONG_POSITION, max(0, math.floor(beat * SIXTEENTHS_PER_BEAT + 1e-9)))
    return mido.Message("songpos", pos=sixteenths)


class ClockLeader:
    """The pulses and transport messages of a clock master, on the engine's tempo map."""

    def __init__(self) -> None:
        self._next_pulse: int | None = None  # index of the next pulse while running, else None
        self.pulses_sent = 0
        self.pulses_skipped = 0

    @property
    def running(self) -> bool:
        return self._next_pulse is not None

    def start(self, beat: float) -> list[mido.Message]:
        """Return the messages that start the follower at `beat`, or at the next sixteenth note when `beat` lies between two.

        Song Position Pointer counts sixteenth notes, so the first pulse after
        Continue must fall on one for the follower's position to match ours.
        """
        sixteenth = _sixteenth_at_or_after(beat)
        self._next_pulse = sixteenth * PULSES_PER_SIXTEENTH
        if sixteenth == 0:
            log.info("MIDI clock: Start")
            return [START]
        log.info("MIDI clock: Continue from beat %.2f", sixteenth / SIXTEENTHS_PER_BEAT)
        return [song_position(sixteenth / SIXTEENTHS_PER_BEAT), CONTINUE]

    def stop(self) -> list[mido.Message]:
        if self._next_pulse is None:
            return []
        self._next_pulse = None
        log.info("MIDI clock: Stop after %d pulses", self.pulses_sent)
        return [STOP]

    def next_time(self, tempo_map: TempoMap) -> float | None:
        """Clock time of the next pulse, or None while stopped."""
        if self._next_pulse is None:
            return None
        return tempo_map.time_at(self._next_pulse / PULSES_PER_BEAT)

    def due(self, now: float, tempo_map: TempoMap) -> list[mido.Message]:
        """Return the pulses due at `now`: normally one; late pulses beyond MAX_PULSE_LATENESS are skipped."""
        messages = []
        while self._next_pulse is not None:
            pulse_time = tempo_map.time_at(self._next_pulse / PULSES_PER_BEAT)
            if pulse_time > now:
                break
            if now - pulse_time > MAX_PULSE_LATENESS:
                self.pulses_skipped += 1
            else:
                messages.append(CLOCK)
                self.pulses_sent += 1
            self._next_pulse += 1
        return messages

    def relocate(self, beat: float) -> list[mido.Message]:
        """Return the messages that move a running follower to `beat`, after the transport jumped there."""
        if self._next_pulse is None:
            return []
        sixteenth = _sixteenth_at_or_after(beat)
        self._next_pulse = sixteenth * PULSES_PER_SIXTEENTH
        log.info("MIDI clock: position moved to beat %.2f", sixteenth / SIXTEENTHS_PER_BEAT)
        return [STOP, song_position(sixteenth / SIXTEENTHS_PER_BEAT), CONTINUE]


def _sixteenth_at_or_after(beat: float) -> int:
    return max(0, math.ceil(beat * SIXTEENTHS_PER_BEAT - 1e-9))
