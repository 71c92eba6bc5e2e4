"""The clock sync benchmark's pure parts: matching onsets to the nearest pulse, pulse spacing and pulses per beat.

No ports and no sleeps: the arrivals are made up from known pulse times.
"""

import math

import numpy as np
import pytest

from bench.clocksync import PULSE_INTERVAL, circular_mean_phase, match_nearest_pulses, pulses_per_beat, spacing_errors_ms

FIRST_PULSE = 1000.0  # seconds: ideal time of the first pulse after Start


def pulse_time(pulse: int) -> float:
    return FIRST_PULSE + pulse * PULSE_INTERVAL


def test_circular_mean_wraps_around_whole_pulses():
    assert circular_mean_phase(np.array([3.98, 7.02])) == pytest.approx(0.0, abs=1e-9)
    assert circular_mean_phase(np.array([1.25, 2.25])) == pytest.approx(0.25)
    assert circular_mean_phase(np.array([5.9, 6.9])) == pytest.approx(-0.1)


def test_constant_latency_matches_exact_pulses():
    pulses = np.array([0, 2, 6, 8, 12, 20, 24, 30])
    arrivals = np.array([pulse_time(pulse) for pulse in pulses]) + 0.003

    match = match_nearest_pulses(arrivals, FIRST_PULSE, PULSE_INTERVAL)

    assert match.pulses.tolist() == pulses.tolist()
    assert match.latency == pytest.approx(0.003)
    assert np.abs(match.errors_ms).max() == pytest.approx(0.0, abs=1e-6)


def test_errors_are_offsets_around_median():
    pulses = np.arange(0, 200, 2)
    noise = np.random.default_rng(1).uniform(-0.002, 0.002, pulses.size)
    arrivals = np.array([pulse_time(pulse) for pulse in pulses]) + 0.004 + noise

    match = match_nearest_pulses(arrivals, FIRST_PULSE, PULSE_INTERVAL)

    assert match.pulses.tolist() == pulses.tolist()
    assert match.latency == pytest.approx(0.004 + np.median(noise))
    np.testing.assert_allclose(match.errors_ms, (noise - np.median(noise)) * 1000.0, atol=1e-6)


def test_latency_near_half_pulse_with_wrapping_phases():
    # Arrivals 9 and 11 ms after their pulse straddle half the 20.83 ms
    # interval: rounding each one on its own would split them between two pulses.
    pulses = np.arange(0, 96, 4)
    noise = np.tile([-0.001, 0.001], pulses.size // 2)
    arrivals = np.array([pulse_time(pulse) for pulse in pulses]) + 0.010 + noise

    match = match_nearest_pulses(arrivals, FIRST_PULSE, PULSE_INTERVAL)

    assert len(set((match.pulses - pulses).tolist())) == 1
    np.testing.assert_allclose(np.abs(match.errors_ms), 1.0, atol=1e-6)


def test_latency_over_half_pulse_keeps_errors():
    pulses = np.arange(0, 60, 2)
    noise = np.random.default_rng(2).uniform(-0.001, 0.001, pulses.size)
    ideal = np.array([pulse_time(pulse) for pulse in pulses])

    short = match_nearest_pulses(ideal + 0.002 + noise, FIRST_PULSE, PULSE_INTERVAL)
    long = match_nearest_pulses(ideal + 0.015 + noise, FIRST_PULSE, PULSE_INTERVAL)

    # 15 ms is more than half of the 20.83 ms interval: every onset goes to the next pulse, a whole interval apart.
    assert (long.pulses - pulses).tolist() == [1] * pulses.size
    assert long.latency == pytest.approx(0.015 + np.median(noise) - PULSE_INTERVAL)
    np.testing.assert_allclose(long.errors_ms, short.errors_ms, atol=1e-6)


def test_skip_pulses_leaves_out_early_onsets():
    pulses = np.arange(0, 120, 6)
    arrivals = np.array([pulse_time(pulse) for pulse in pulses]) + 0.002
    arrivals[:4] += 0.005  # the first onsets, before pulse 24, are off by 5 ms

    match = match_nearest_pulses(arrivals, FIRST_PULSE, PULSE_INTERVAL, skip_pulses=24)

    assert match.pulses.tolist() == pulses[4:].tolist()
    assert match.latency == pytest.approx(0.002)
    assert np.abs(match.errors_ms).max() == pytest.approx(0.0, abs=1e-6)


def test_no_arrivals_match_nothing():
    match = match_nearest_pulses([], FIRST_PULSE, PULSE_INTERVAL)

    assert match.pulses.size == 0
    assert match.errors_ms.size == 0
    assert math.isnan(match.latency)


def test_all_arrivals_skipped_match_nothing():
    match = match_nearest_pulses([pulse_time(2), pulse_time(10)], FIRST_PULSE, PULSE_INTERVAL, skip_pulses=48)

    assert match.pulses.size == 0
    assert math.isnan(match.latency)


def test_spacing_errors_of_even_pulses_are_zero():
    times = [pulse_time(pulse) for pulse in range(50)]

    errors = spacing_errors_ms(times, PULSE_INTERVAL)

    assert errors.size == 49
    assert np.abs(errors).max() == pytest.approx(0.0, abs=1e-6)


def test_spacing_errors_show_a_late_pulse_twice():
    times = [pulse_time(pulse) for pulse in range(6)]
    times[3] += 0.004

    errors = spacing_errors_ms(times, PULSE_INTERVAL)

    np.testing.assert_allclose(errors, [0.0, 0.0, 4.0, -4.0, 0.0], atol=1e-6)


def test_pulses_per_beat_counts_between_notes():
    # Pulse 0 is beat 0; notes at beats 0, 0.5 and 2, each after the pulse of its beat.
    kinds = ["start"]
    note_pulses = {0, 12, 48}
    for pulse in range(60):
        kinds.append("clock")
        if pulse in note_pulses:
            kinds.append("note_on")
        if pulse == 30:
            kinds.append("note_off")
    kinds.append("stop")

    pulses, beats = pulses_per_beat(kinds, [0.0, 0.5, 2.0])

    assert pulses == 48
    assert beats == 2.0


def test_pulses_per_beat_uses_only_paired_notes():
    kinds = ["clock", "note_on"] + ["clock"] * 24 + ["note_on"] + ["clock"] * 24 + ["note_on"]

    pulses, beats = pulses_per_beat(kinds, [0.0, 1.0])

    assert (pulses, beats) == (24, 1.0)


def test_pulses_per_beat_shows_a_missing_pulse():
    kinds = ["clock", "note_on"] + ["clock"] * 23 + ["note_on"]

    pulses, beats = pulses_per_beat(kinds, [0.0, 1.0])

    assert pulses / beats == 23


@pytest.mark.parametrize(("kinds", "beats", "message"), [
    (["clock", "note_on"], [0.0, 1.0], "from 1 notes"),
    (["clock", "note_on", "clock", "note_on"], [0.0], "from 1 notes"),
    (["note_on", "clock", "note_on"], [1.0, 1.0], "is not after the first"),
])
def test_pulses_per_beat_rejects_too_few_notes(kinds, beats, message):
    with pytest.raises(ValueError, match=message):
        pulses_per_beat(kinds, beats)
