"""Clock follower: tempo, phase and transport from a DAW's MIDI clock, fed with fake arrival times."""

import logging

import numpy as np
import pytest

from sideman.clockfollow import ClockFollower, ClockUpdate, FollowAction
from sideman.errors import InvalidInputError, SettingsError

T0 = 1000.0  # clock reading of the first pulse: far from zero, as a monotonic clock is


def pulse_interval(bpm: float) -> float:
    return 60.0 / (bpm * 24)


def feed(follower: ClockFollower, first: float, bpm: float, count: int, jitter: float = 0.0, rng=None) -> tuple[list[ClockUpdate], float]:
    """Feed `count` pulses at `bpm` from `first` on, each moved by up to +-`jitter` seconds.

    Returns the updates and the ideal time of the next pulse.
    """
    updates = []
    interval = pulse_interval(bpm)
    for index in range(count):
        offset = rng.uniform(-jitter, jitter) if jitter else 0.0
        updates.append(follower.pulse(first + index * interval + offset))
    return updates, first + count * interval


def started(bpm: float = 120.0, beats: int = 4) -> tuple[ClockFollower, float]:
    """A follower started at T0 and fed `beats` beats of steady pulses; returns it and the ideal time of the next pulse."""
    follower = ClockFollower()
    follower.start(T0 - 0.001)
    _, next_time = feed(follower, T0, bpm, beats * 24)
    return follower, next_time


@pytest.mark.parametrize("bpm", [60.0, 120.0, 240.0])
def test_steady_clock_after_one_beat(bpm):
    follower = ClockFollower()
    follower.start(T0 - 0.001)
    feed(follower, T0, bpm, 24)

    assert follower.running
    assert follower.bpm == pytest.approx(bpm, rel=0.001)
    beat_seconds = 60.0 / bpm
    for beat in (1.0, 1.25, 2.0, 4.0):
        assert follower.time_at(beat) == pytest.approx(T0 + beat * beat_seconds, abs=1e-4)
    assert follower.beat_at(T0 + 1.5 * beat_seconds) == pytest.approx(1.5, abs=1e-4 / beat_seconds)


def test_first_pulse_after_start_is_beat_zero():
    follower = ClockFollower()

    assert follower.start(T0 - 0.001).action is FollowAction.NONE
    assert not follower.running
    first = follower.pulse(T0)
    second = follower.pulse(T0 + pulse_interval(120.0))

    assert first == ClockUpdate(FollowAction.START, 0.0, T0)
    assert second.action is FollowAction.TEMPO
    assert second.beat == pytest.approx(1 / 24)


@pytest.mark.parametrize(("before", "after"), [(120.0, 140.0), (140.0, 120.0), (120.0, 90.0), (100.0, 103.0)])
def test_tempo_step_settles_within_two_beats(before, after):
    follower, step_time = started(before, beats=4)

    _, next_time = feed(follower, step_time, after, 48)

    assert follower.bpm == pytest.approx(after, rel=0.01)
    assert follower.time_at(follower.position) == pytest.approx(next_time, abs=0.001)


def test_jitter_does_not_reach_predicted_onsets():
    rng = np.random.default_rng(7)
    follower = ClockFollower()
    follower.start(T0 - 0.001)
    interval = pulse_interval(120.0)
    errors = []

    # 60 s of pulses. Each sixteenth (every 6th pulse) is predicted from the
    # pulses before its own, as the engine schedules it; the first 2 beats fill the window.
    for index in range(120 * 24):
        ideal = T0 + index * interval
        if index % 6 == 0 and index >= 48:
            errors.append(follower.time_at(index / 24) - ideal)
        follower.pulse(ideal + rng.uniform(-0.002, 0.002))

    errors_ms = np.array(errors) * 1000.0
    assert len(errors_ms) == 472
    assert errors_ms.std() < 0.5
    assert np.abs(errors_ms).max() < 1.5
    assert follower.bpm == pytest.approx(120.0, rel=0.002)
    assert follower.anomalies.burst_pulses == 0


def test_update_time_is_filtered_pulse_time():
    rng = np.random.default_rng(3)
    follower = ClockFollower()
    follower.start(T0 - 0.001)
    feed(follower, T0, 120.0, 96, jitter=0.002, rng=rng)

    # A pulse 2 ms late moves the mapping by a fraction of that.
    ideal = T0 + 96 * pulse_interval(120.0)
    update = follower.pulse(ideal + 0.002)

    assert update.action is FollowAction.TEMPO
    assert update.beat == pytest.approx(4.0)
    assert abs(update.time - ideal) < 0.001


def test_stop_and_continue_resume_after_last_pulse():
    follower, next_time = started(120.0, beats=2)

    stop = follower.stop(next_time)
    assert stop.action is FollowAction.STOP
    assert stop.beat == pytest.approx(2.0)
    assert not follower.running

    # Pulses while stopped feed the tempo but do not move the position.
    updates, next_time = feed(follower, next_time, 120.0, 24)
    assert all(update.action is FollowAction.NONE for update in updates)
    assert follower.position == pytest.approx(2.0)
    assert follower.anomalies.pulses_before_start == 0

    assert follower.continue_(next_time - 0.001).action is FollowAction.NONE
    resumed = follower.pulse(next_time)
    assert resumed.action is FollowAction.CONTINUE
    assert resumed.beat == pytest.approx(2.0)
    assert follower.running


def test_continue_after_song_position_16_is_beat_4():
    follower, next_time = started(120.0, beats=1)
    follower.stop(next_time)

    located = follower.song_position(16, next_time + 0.01)
    assert located.action is FollowAction.NONE
    assert follower.position == 4.0

    follower.continue_(next_time + 0.02)
    resumed = follower.pulse(next_time + 0.03)
    assert resumed.action is FollowAction.CONTINUE
    assert resumed.beat == 4.0
    assert follower.anomalies.positions_while_running == 0


def test_start_after_stop_goes_to_top():
    follower, next_time = started(120.0, beats=3)
    follower.stop(next_time)

    follower.start(next_time + 0.5)
    restarted = follower.pulse(next_time + 0.6)

    assert restarted.action is FollowAction.START
    assert restarted.beat == 0.0
    assert follower.anomalies.duplicate_starts == 0


def test_pause_restarts_tempo_estimate():
    follower, next_time = started(100.0, beats=2)
    follower.stop(next_time)

    # Three seconds later the DAW plays on at another tempo: the fit starts again from the new pulses.
    follower.continue_(next_time + 3.0)
    updates, resume_next = feed(follower, next_time + 3.0, 150.0, 3)

    assert updates[0].action is FollowAction.CONTINUE
    assert follower.bpm == pytest.approx(150.0, rel=1e-6)
    assert follower.time_at(follower.position) == pytest.approx(resume_next, abs=1e-6)


def test_pulses_before_start_do_not_start(caplog):
    follower = ClockFollower()

    with caplog.at_level(logging.WARNING, logger="sideman.clockfollow"):
        updates, _ = feed(follower, T0, 120.0, 48)

    assert all(update.action is FollowAction.NONE for update in updates)
    assert not follower.running
    assert follower.position == 0.0
    assert follower.bpm == pytest.approx(120.0, rel=1e-6)
    assert follower.pulses == 48
    assert follower.anomalies.pulses_before_start == 48
    assert len([record for record in caplog.records if record.levelno >= logging.WARNING]) == 1


def test_autostart_starts_on_first_pulse():
    follower = ClockFollower(autostart=True)

    first = follower.pulse(T0)
    feed(follower, T0 + pulse_interval(120.0), 120.0, 23)

    assert first.action is FollowAction.START
    assert first.beat == 0.0
    assert follower.running
    assert follower.position == pytest.approx(1.0)
    assert follower.anomalies.pulses_before_start == 0


def test_autostart_does_not_override_stop():
    follower = ClockFollower(autostart=True)
    follower.stop(T0 - 0.5)

    updates, _ = feed(follower, T0, 120.0, 24)

    assert all(update.action is FollowAction.NONE for update in updates)
    assert not follower.running


def test_duplicate_start_restarts_from_zero(caplog):
    follower, next_time = started(120.0, beats=2)

    with caplog.at_level(logging.WARNING, logger="sideman.clockfollow"):
        relocated = follower.start(next_time - 0.005)
        first = follower.pulse(next_time)
        _, later = feed(follower, next_time + pulse_interval(120.0), 120.0, 23)
        follower.start(later - 0.005)

    assert relocated.action is FollowAction.RELOCATE
    assert relocated.beat == 0.0
    assert relocated.time == pytest.approx(next_time, abs=1e-6)
    assert first.action is FollowAction.TEMPO
    assert first.beat == 0.0
    assert follower.running
    assert follower.anomalies.duplicate_starts == 2
    assert len([record for record in caplog.records if record.levelno >= logging.WARNING]) == 1


def test_song_position_while_running_relocates():
    follower, next_time = started(120.0, beats=2)

    relocated = follower.song_position(32, next_time - 0.005)
    moved = follower.pulse(next_time)

    assert relocated.action is FollowAction.RELOCATE
    assert relocated.beat == 8.0
    assert relocated.time == pytest.approx(next_time, abs=1e-6)
    assert follower.time_at(8.5) == pytest.approx(next_time + 0.25, abs=1e-6)
    assert moved.beat == 8.0
    assert follower.anomalies.positions_while_running == 1


@pytest.mark.parametrize("sixteenths", [-1, 16384, 2.0, True])
def test_song_position_out_of_range_raises(sixteenths):
    with pytest.raises(InvalidInputError, match="Song Position Pointer"):
        ClockFollower().song_position(sixteenths, T0)


def test_burst_after_short_stall():
    follower, next_time = started(120.0, beats=2)
    interval = pulse_interval(120.0)

    # Five pulses held up by the sender arrive within 2 ms, just after the last of them was due.
    burst_start = next_time + 4 * interval + 0.0005
    for index in range(5):
        follower.pulse(burst_start + index * 0.0004)
    _, after = feed(follower, next_time + 5 * interval, 120.0, 24)

    assert follower.anomalies.burst_pulses == 4
    assert follower.anomalies.stalls == 0
    assert follower.running
    assert follower.position == pytest.approx(2.0 + 29 / 24)
    assert follower.bpm == pytest.approx(120.0, rel=1e-6)
    assert follower.time_at(follower.position) == pytest.approx(after, abs=1e-6)


def test_burst_does_not_move_tempo_during_burst():
    follower, next_time = started(120.0, beats=2)

    follower.pulse(next_time + 0.1)
    for index in range(1, 6):
        follower.pulse(next_time + 0.1 + index * 0.0005)
        assert follower.bpm == pytest.approx(120.0, rel=1e-6)


def test_tempo_four_times_faster_resynchronises():
    follower, next_time = started(60.0, beats=2)

    _, after = feed(follower, next_time, 250.0, 24)

    assert follower.anomalies.burst_pulses > 0
    assert follower.bpm == pytest.approx(250.0, rel=0.01)
    assert follower.time_at(follower.position) == pytest.approx(after, abs=1e-4)


def test_stall_after_two_beats_stops_until_pulses_return():
    follower, next_time = started(120.0, beats=2)
    last_pulse = next_time - pulse_interval(120.0)

    assert follower.deadline() == pytest.approx(last_pulse + 1.0)
    assert follower.check(last_pulse + 0.99).action is FollowAction.NONE
    stall = follower.check(last_pulse + 1.01)

    assert stall.action is FollowAction.STOP
    assert stall.stalled
    assert stall.beat == pytest.approx(2.0)
    assert not follower.running
    assert follower.deadline() is None
    assert follower.anomalies.stalls == 1
    assert follower.check(last_pulse + 5.0).action is FollowAction.NONE

    resumed = follower.pulse(last_pulse + 1.5)
    assert resumed.action is FollowAction.CONTINUE
    assert resumed.beat == pytest.approx(2.0)
    assert follower.running


def test_deadline_follows_tempo():
    follower, _ = started(60.0, beats=1)

    assert follower.deadline() - T0 == pytest.approx(23 * pulse_interval(60.0) + 2.0)


def test_stop_while_stopped_does_nothing():
    follower = ClockFollower()

    assert follower.stop(T0).action is FollowAction.NONE
    follower.start(T0 + 0.1)
    assert follower.stop(T0 + 0.2).action is FollowAction.NONE
    assert follower.pulse(T0 + 0.3).action is FollowAction.NONE


def test_anomalies_counted_in_dict():
    follower = ClockFollower()
    feed(follower, T0, 120.0, 3)

    assert follower.anomalies.as_dict() == {
        "pulses_before_start": 3,
        "duplicate_starts": 0,
        "positions_while_running": 0,
        "burst_pulses": 0,
        "stalls": 0,
    }


@pytest.mark.parametrize("beats_per_bar", [0, -3.0, float("nan"), True])
def test_invalid_beats_per_bar_raises(beats_per_bar):
    with pytest.raises(SettingsError, match="beats per bar"):
        ClockFollower(beats_per_bar=beats_per_bar)
