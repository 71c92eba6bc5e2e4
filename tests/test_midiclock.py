"""Clock master: 24 pulses per quarter note from the engine's deadlines, and the transport messages a DAW follows."""

import pytest

from sideman.clock import FakeClock
from sideman.commands import SetTempo, Start, Stop
from sideman.engine import START_MARGIN
from sideman.midiclock import MAX_SONG_POSITION, ClockLeader, song_position
from sideman.tempo import TempoMap
from tests.test_engine import FakeOutput, Harness


class ClockHarness(Harness):
    def __init__(self, **options):
        self.clock_port = FakeOutput(FakeClock())
        super().__init__(seed=2, clock_output=self.clock_port, **options)
        self.clock_port.clock = self.clock

    def pulse_times(self) -> list[float]:
        return [time for time, message in self.clock_port.events if message.type == "clock"]

    def transport(self) -> list[str]:
        return [message.type for _, message in self.clock_port.events if message.type != "clock"]


@pytest.mark.parametrize(("beat", "sixteenths"), [(0.0, 0), (1.0, 4), (2.74, 10), (1e6, MAX_SONG_POSITION)])
def test_song_position_in_sixteenths(beat, sixteenths):
    assert song_position(beat).pos == sixteenths


def test_leader_start_or_continue():
    leader = ClockLeader()
    assert [message.type for message in leader.start(0.0)] == ["start"]
    assert leader.stop()[0].type == "stop"
    assert leader.stop() == []
    assert [message.type for message in leader.start(2.5)] == ["songpos", "continue"]


def test_late_pulses_are_skipped_not_burst():
    leader = ClockLeader()
    tempo_map = TempoMap(120.0)
    leader.start(0.0)
    # One second late: the pulses of the first 0.9 s are skipped, those of the last 0.1 s sent.
    sent = leader.due(1.0, tempo_map)
    assert len(sent) == 5
    assert leader.pulses_skipped == 44


def test_engine_pulses_on_tempo_grid():
    harness = ClockHarness(tempo=120.0)
    harness.engine.run_until(START_MARGIN + 2.0 - 1e-9)

    times = harness.pulse_times()
    assert harness.transport() == ["start"]
    assert len(times) == 96  # 4 beats at 120 BPM
    spacing = 60.0 / 120.0 / 24
    for index, time in enumerate(times):
        assert time == pytest.approx(START_MARGIN + index * spacing, abs=1e-9)


def test_pulses_follow_tempo_change():
    harness = ClockHarness(tempo=120.0)
    harness.engine.run_until(1.0)
    harness.engine.apply([SetTempo(60.0)])
    harness.engine.run_until(6.0)

    times = harness.pulse_times()
    gaps = {round(later - earlier, 9) for earlier, later in zip(times, times[1:])}
    assert gaps == {round(0.5 / 24, 9), round(1.0 / 24, 9)}
    assert harness.engine.status()["clock_pulses"] == len(times)


def test_stop_then_start_continues():
    harness = ClockHarness(tempo=120.0)
    harness.engine.run_until(1.0)
    harness.engine.apply([Stop()])
    harness.engine.run_until(2.0)
    pulses_at_stop = len(harness.pulse_times())
    harness.engine.run_until(3.0)
    assert len(harness.pulse_times()) == pulses_at_stop

    harness.engine.apply([Start()])
    harness.engine.run_until(4.0)
    assert harness.transport() == ["start", "stop", "songpos", "continue"]
    assert len(harness.pulse_times()) > pulses_at_stop


def test_shutdown_sends_stop():
    harness = ClockHarness(tempo=120.0)
    harness.engine.run_until(1.0)
    harness.engine.shutdown()
    assert harness.transport() == ["start", "stop"]
