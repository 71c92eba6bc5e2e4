"""Record the MIDI messages the engine sends, with their clock times, as a standard MIDI file.

Times are written in absolute seconds: the file has one fixed tempo of
120 BPM (500000 microseconds per beat) and every message's tick is its time
since the first message at that tempo. Tempo changes during play therefore
keep their timing exactly, at the cost of a beat grid that only matches the
music while it plays at 120 BPM.
"""

import logging
import threading
from pathlib import Path

import mido

from .render import write_midi

log = logging.getLogger(__name__)

TICKS_PER_BEAT = 480
RECORDING_TEMPO = 500_000  # microseconds per beat: 120 BPM


class Recorder:
    """Collect (clock time in seconds, message) pairs and write them to `path` on `flush`.

    `record` is called from the engine thread, `flush` from any thread; each
    flush writes everything recorded so far and replaces the previous file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._events: list[tuple[float, mido.Message]] = []
        self._flush_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._events)

    def record(self, time: float, message: mido.Message) -> None:
        # list.append is atomic, so the engine thread takes no lock here.
        self._events.append((time, message))

    def to_midi(self) -> mido.MidiFile:
        """Build the type 0 file of everything recorded so far."""
        # Copy first: the engine may append while this runs. The sort is
        # stable, so messages sent at the same time keep their order.
        events = sorted(list(self._events), key=lambda event: event[0])

        track = mido.MidiTrack()
        track.append(mido.MetaMessage("set_tempo", tempo=RECORDING_TEMPO, time=0))
        if events:
            first_time = events[0][0]
            previous_tick = 0
            for time, message in events:
                # Ticks from the first event, each rounded once, so rounding never accumulates.
                tick = round(mido.second2tick(time - first_time, TICKS_PER_BEAT, RECORDING_TEMPO))
                track.append(message.copy(time=tick - previous_tick))
                previous_tick = tick
        return mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_BEAT, tracks=[track])

    def flush(self) -> None:
        """Write everything recorded so far to `path`, replacing the file; raises OSError when writing fails."""
        with self._flush_lock:
            midi = self.to_midi()
            write_midi(midi, self.path)
        log.info("recorded %d MIDI messages (%.1f s) to %s", len(midi.tracks[0]) - 1, midi.length, self.path)
