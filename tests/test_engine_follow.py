"""Following an external MIDI clock in the engine, on a fake clock: onsets on the pulses, Start, Stop, Continue, stalls."""

import numpy as np
import pytest

from sideman.clockfollow import ClockFollower
from sideman.commands import ClockMessage
from tests.test_engine import NOTES_BUNDLE, Harness, assert_every_note_released

PULSES_PER_BEAT = 24


class FollowHarness(Harness):
    """An engine following a clock that this harness sends, pulse by pulse, with the engine run in between."""

    def __init__(self, autostart: bool = False):
        super().__init__(seed=4, bundle=NOTES_BUNDLE, tempo=100.0, autoplay=False, follower=ClockFollower(4.0, autostart, fallback_bpm=100.0))
        self.pulse_times: list[float] = []

    def send(self, kind: str, time: float, position: int = 0) -> None:
        self.engine.run_until(time)
        self.engine.apply([ClockMessage(kind, time, position)])
        self.engine.run_until(time)  # applies it
        if kind == "clock":
            self.pulse_times.append(time)

    def pulses(self, start: float, bpm: float, beats: float, jitter: float = 0.0, seed: int = 0) -> float:
        """Send pulses from `start` for `beats` beats at `bpm`, each moved by up to +-`jitter` seconds; return the end time."""
        spacing = 60.0 / bpm / PULSES_PER_BEAT
        offsets = np.random.default_rng(seed).uniform(-jitter, jitter, int(beats * PULSES_PER_BEAT))
        for index, offset in enumerate(offsets):
            self.send("clock", start + index * spacing + offset)
        return start + len(offsets) * spacing

    def onset_times(self) -> list[float]:
        return [time for time, message in self.output.events if message.type == "note_on"]


def test_no_notes_without_start_and_notes_after_it():
    harness = FollowHarness()
    end = harness.pulses(0.0, 120.0, 4)
    assert harness.onset_times() == []

    harness.send("start", end)
    harness.pulses(end + 0.001, 120.0, 8)
    assert len(harness.onset_times()) > 4
    assert harness.engine.status()["sync"] == "midi-in"
    assert harness.engine.status()["clock_bpm"] == pytest.approx(120.0, rel=1e-3)


def test_autostart_plays_on_the_first_pulse():
    harness = FollowHarness(autostart=True)
    harness.pulses(0.0, 120.0, 4)
    assert harness.onset_times()


@pytest.mark.parametrize(("bpm", "jitter", "limit"), [(120.0, 0.0, 1e-6), (90.0, 0.0, 1e-6), (120.0, 0.002, 0.0015)])
def test_onsets_land_on_the_pulses(bpm, jitter, limit):
    harness = FollowHarness()
    harness.send("start", 0.0)
    first = 0.01
    harness.pulses(first, bpm, 16, jitter=jitter, seed=3)

    # Pulse k after Start is beat k/24: an onset at beat b belongs at the ideal time of pulse 24b.
    spacing = 60.0 / bpm / PULSES_PER_BEAT
    errors = []
    for event in harness.shown:
        pulse = event.beat * PULSES_PER_BEAT
        if event.beat >= 2.0 and abs(pulse - round(pulse)) < 1e-9:
            sent = harness.onset_times()[harness.shown.index(event)]
            errors.append(abs(sent - (first + round(pulse) * spacing)))
    assert len(errors) > 5
    assert max(errors) < limit


def test_stop_then_continue_from_position():
    harness = FollowHarness()
    harness.send("start", 0.0)
    end = harness.pulses(0.01, 120.0, 4)
    harness.send("stop", end)
    notes_at_stop = len(harness.onset_times())
    assert_every_note_released(harness.output.events)

    harness.send("songpos", end + 0.5, position=32)  # beat 8
    harness.send("continue", end + 0.6)
    harness.pulses(end + 0.61, 120.0, 4)
    assert len(harness.onset_times()) > notes_at_stop
    assert min(event.beat for event in harness.shown[notes_at_stop:]) >= 8.0


def test_clock_stall_stops_play():
    harness = FollowHarness()
    harness.send("start", 0.0)
    end = harness.pulses(0.01, 120.0, 4)
    harness.engine.run_until(end + 2.0)  # no pulse for four beats
    notes = len(harness.onset_times())
    harness.engine.run_until(end + 5.0)
    assert len(harness.onset_times()) == notes
    assert harness.engine.status()["running"] == 0
    assert_every_note_released(harness.output.events)
