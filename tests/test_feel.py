import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sideman.errors import SettingsError
from sideman.feel import FEEL_PARAMS, Feel, Humanize, Swing
from sideman.tempo import TempoMap

STEPS_PER_BEAT = 12


def schedule_line(feel: Feel, tempo_map: TempoMap, step_counts: list[int], gate: float) -> list[tuple[float, float]]:
    """Schedule a line as the engine does, one onset after another; return (onset, release) send times."""
    events = []
    beat = 0.0
    for steps in step_counts:
        next_beat = beat + steps / STEPS_PER_BEAT
        onset = feel.onset_time(beat, tempo_map)
        release = feel.release_time(beat, next_beat, gate, tempo_map)
        events.append((onset, release))
        beat = next_beat
    return events


@pytest.mark.parametrize(
    "amount, eighth_off_beat, sixteenth_off_beat",
    [
        (0.0, 0.5, 0.25),
        (50.0, 2 / 3, 1 / 3),  # triplet: 2:1 within the pair
        (66.0, 0.72, 0.36),
        (75.0, 0.75, 0.375),  # dotted: 3:1 within the pair
    ],
)
def test_swing_moves_off_beats_exactly(amount, eighth_off_beat, sixteenth_off_beat):
    eighths = Swing(amount, "1/8")
    sixteenths = Swing(amount, "1/16")

    assert eighths.swung_beat(0.5) == pytest.approx(eighth_off_beat, abs=1e-12)
    assert sixteenths.swung_beat(0.25) == pytest.approx(sixteenth_off_beat, abs=1e-12)
    assert sixteenths.swung_beat(0.75) == pytest.approx(0.5 + sixteenth_off_beat, abs=1e-12)


@pytest.mark.parametrize("beat", [0.0, 1.0, 0.25, 0.75, 1 / 3, 2 / 3, 7 / 12, 5 / 12, 0.5 + 2e-6, 0.5 - 2e-6])
def test_eighth_swing_keeps_other_positions(beat):
    assert Swing(75.0, "1/8").swung_beat(beat) == beat


@pytest.mark.parametrize("beat", [0.0, 0.5, 1 / 3, 1 / 6, 1 / 12, 0.25 + 2e-6])
def test_sixteenth_swing_keeps_other_positions(beat):
    assert Swing(75.0, "1/16").swung_beat(beat) == beat


def test_swing_tolerates_float_error():
    swing = Swing(50.0, "1/8")

    assert swing.swung_beat(0.5 + 5e-7) == pytest.approx(0.5 + 5e-7 + 1 / 6)
    assert swing.swung_beat(sum([1 / 12] * 6)) == pytest.approx(2 / 3)


@pytest.mark.parametrize("bar_beat", [4.0, 16.0, 1000.0, 12345.0])
def test_swing_across_bars(bar_beat):
    eighths = Swing(50.0, "1/8")
    sixteenths = Swing(50.0, "1/16")

    assert eighths.swung_beat(bar_beat + 0.5) == pytest.approx(bar_beat + 2 / 3)
    assert eighths.swung_beat(bar_beat + 3.5) == pytest.approx(bar_beat + 3 + 2 / 3)
    assert eighths.swung_beat(bar_beat) == bar_beat
    assert sixteenths.swung_beat(bar_beat + 2.75) == pytest.approx(bar_beat + 2.5 + 1 / 3)
    assert sixteenths.swung_beat(bar_beat + 2.5) == bar_beat + 2.5


@pytest.mark.parametrize("amount, unit", [(-1.0, "1/8"), (75.5, "1/8"), (math.nan, "1/8"), (50.0, "1/4"), (50.0, "8")])
def test_swing_rejects_invalid_settings(amount, unit):
    with pytest.raises(SettingsError):
        Swing(amount, unit)


def test_feel_onset_time_follows_swing_and_tempo():
    tempo_map = TempoMap(120.0, time=10.0)
    feel = Feel(Swing(50.0))

    assert feel.onset_time(0.0, tempo_map) == pytest.approx(10.0)
    assert feel.onset_time(0.5, tempo_map) == pytest.approx(10.0 + (2 / 3) * 0.5)
    assert feel.onset_time(1.0, tempo_map) == pytest.approx(10.5)


def test_release_gates_swung_duration():
    tempo_map = TempoMap(60.0)
    feel = Feel(Swing(50.0))

    # Onset on the beat, next onset on the swung off-beat: 2/3 beat long.
    assert feel.release_time(0.0, 0.5, 0.5, tempo_map) == pytest.approx(1 / 3)
    # Onset on the swung off-beat, next onset on the beat: 1/3 beat long.
    assert feel.release_time(0.5, 1.0, 0.9, tempo_map) == pytest.approx(2 / 3 + 0.9 / 3)


def test_release_after_next_onset_only_with_legato():
    tempo_map = TempoMap(60.0)
    feel = Feel()

    assert feel.release_time(0.0, 1.0, 1.0, tempo_map) == pytest.approx(1.0)
    assert feel.release_time(1.0, 2.0, 1.5, tempo_map) == pytest.approx(2.5)


def test_swung_onset_never_passes_next_onset():
    tempo_map = TempoMap(60.0)
    feel = Feel(Swing(75.0))

    # The off-beat note at 0.5 moves to 0.75, past the straight sixteenth-triplet at 7/12.
    off_beat = feel.onset_time(0.5, tempo_map)
    release = feel.release_time(0.5, 7 / 12, 1.0, tempo_map)
    following = feel.onset_time(7 / 12, tempo_map)

    assert off_beat == pytest.approx(0.75)
    assert following > off_beat
    assert following == pytest.approx(0.75 + 1 / 24)
    assert off_beat < release <= following


@settings(max_examples=200, deadline=None)
@given(
    step_counts=st.lists(st.integers(min_value=1, max_value=24), min_size=2, max_size=60),
    amount=st.sampled_from([0.0, 50.0, 66.0, 75.0]),
    unit=st.sampled_from(["1/8", "1/16"]),
    humanize_ms=st.sampled_from([0.0, 10.0, 30.0]),
    gate=st.floats(min_value=0.01, max_value=1.0),
    bpm=st.sampled_from([20.0, 120.0, 400.0]),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_line_keeps_order_and_nonnegative_durations(step_counts, amount, unit, humanize_ms, gate, bpm, seed):
    feel = Feel(Swing(amount, unit), Humanize(humanize_ms, 0, seed), latency_ms=20.0)
    events = schedule_line(feel, TempoMap(bpm), step_counts, gate)

    for (onset, release), (next_onset, _) in zip(events, events[1:]):
        assert release - onset >= 0.0
        assert release <= next_onset
        assert next_onset > onset


def test_onset_time_fixed_once_scheduled():
    tempo_map = TempoMap(120.0)
    feel = Feel(Swing(50.0), Humanize(30.0, 0, seed=7))

    first = feel.onset_time(0.5, tempo_map)
    again = feel.onset_time(0.5, tempo_map)
    tempo_map.restart(100.0, 0.0)
    after_restart = feel.onset_time(0.5, tempo_map)

    assert again == first
    assert after_restart == pytest.approx(first + 100.0)


def test_onset_before_scheduled_ones_replaces_them():
    tempo_map = TempoMap(120.0)
    feel = Feel(humanize=Humanize(onset_ms=10.0, seed=1))
    for beat in (1.0, 2.0, 3.0, 4.0):
        feel.onset_time(beat, tempo_map)
    fourth = feel.onset_time(4.0, tempo_map)

    # The line moved back to beat 2.5: onsets after it were never played and are drawn again.
    feel.onset_time(2.5, tempo_map)
    assert feel.onset_time(4.0, tempo_map) != fourth
    with pytest.raises(ValueError):
        feel.release_time(4.0, 4.0, 0.9, tempo_map)


def test_humanize_reproducible_for_seed():
    first = Humanize(20.0, 10, seed=42)
    second = Humanize(20.0, 10, seed=42)
    other = Humanize(20.0, 10, seed=43)

    first_draws = [(first.onset_offset(), first.velocity(64)) for _ in range(200)]
    second_draws = [(second.onset_offset(), second.velocity(64)) for _ in range(200)]
    other_draws = [(other.onset_offset(), other.velocity(64)) for _ in range(200)]

    assert first_draws == second_draws
    assert first_draws != other_draws


def test_humanize_reseed_restarts_sequence():
    humanize = Humanize(20.0, 10, seed=5)
    draws = [humanize.onset_offset() for _ in range(20)]

    humanize.reseed(5)

    assert [humanize.onset_offset() for _ in range(20)] == draws


def test_humanize_sequence_independent_of_amount():
    small = Humanize(5.0, 4, seed=9)
    large = Humanize(30.0, 40, seed=9)

    for _ in range(500):
        assert small.onset_offset() / 5.0 == pytest.approx(large.onset_offset() / 30.0)


def test_humanize_amount_change_keeps_alignment():
    steady = Humanize(30.0, 0, seed=3)
    changing = Humanize(0.0, 0, seed=3)

    zero_draws = [changing.onset_offset() for _ in range(50)]
    steady_draws = [steady.onset_offset() for _ in range(50)]
    changing.onset_ms = 30.0

    assert zero_draws == [0.0] * 50
    assert [changing.onset_offset() for _ in range(50)] == [steady.onset_offset() for _ in range(50)]
    assert any(value != 0.0 for value in steady_draws)


def test_humanize_velocity_alignment_independent_of_onsets():
    velocities_only = Humanize(0.0, 20, seed=11)
    interleaved = Humanize(30.0, 20, seed=11)

    expected = [velocities_only.velocity(64) for _ in range(100)]
    actual = []
    for _ in range(100):
        interleaved.onset_offset()
        interleaved.onset_offset()
        actual.append(interleaved.velocity(64))

    assert actual == expected


def test_humanize_leaves_sampler_stream_alone():
    sampler_rng = np.random.default_rng(8)
    expected = np.random.default_rng(8).random(20)
    humanize = Humanize(30.0, 40, seed=8)

    for _ in range(100):
        humanize.onset_offset()
        humanize.velocity(64)

    assert list(sampler_rng.random(20)) == list(expected)


def test_humanize_bounds_over_many_draws():
    humanize = Humanize(30.0, 40, seed=1)

    offsets = np.array([humanize.onset_offset() for _ in range(10_000)])
    velocities = np.array([humanize.velocity(64) for _ in range(10_000)])

    assert np.all(np.abs(offsets) <= 0.030)
    assert offsets.min() < -0.025
    assert offsets.max() > 0.025
    assert np.all(np.abs(velocities - 64) <= 40)
    assert velocities.min() == 24
    assert velocities.max() == 104


def test_humanize_zero_amounts_change_nothing():
    humanize = Humanize(0.0, 0, seed=1)

    assert all(humanize.onset_offset() == 0.0 for _ in range(1000))
    assert all(humanize.velocity(90) == 90 for _ in range(1000))


@pytest.mark.parametrize("base, low, high", [(1, 1, 41), (127, 87, 127)])
def test_humanize_velocity_clipped(base, low, high):
    humanize = Humanize(0.0, 40, seed=2)

    velocities = [humanize.velocity(base) for _ in range(10_000)]

    assert min(velocities) == low
    assert max(velocities) == high
    assert velocities.count(base) > 100


@pytest.mark.parametrize("onset_ms, velocity", [(-1.0, 0), (30.5, 0), (0.0, -1), (0.0, 41), (0.0, 2.5)])
def test_humanize_rejects_invalid_amounts(onset_ms, velocity):
    with pytest.raises(SettingsError):
        Humanize(onset_ms, velocity)


def test_humanize_rejects_invalid_seed():
    with pytest.raises(SettingsError):
        Humanize(seed=-1)


def test_latency_shifts_every_time():
    tempo_map = TempoMap(140.0)
    steps = [6, 6, 3, 1, 2, 12, 4, 4, 4, 6, 6]
    prompt = Feel(Swing(66.0), Humanize(25.0, 10, seed=4))
    early = Feel(Swing(66.0), Humanize(25.0, 10, seed=4), latency_ms=120.0)

    prompt_events = schedule_line(prompt, tempo_map, steps, 0.8)
    early_events = schedule_line(early, tempo_map, steps, 0.8)

    for (onset, release), (early_onset, early_release) in zip(prompt_events, early_events):
        assert onset - early_onset == pytest.approx(0.120, abs=1e-9)
        assert release - early_release == pytest.approx(0.120, abs=1e-9)
    assert early.send_time(10.0) == pytest.approx(9.88)


def test_latency_change_applies_to_scheduled_onsets():
    tempo_map = TempoMap(120.0)
    feel = Feel(Swing(50.0), Humanize(10.0, 0, seed=6))
    before = feel.onset_time(0.5, tempo_map)

    feel.set_param("latency_ms", 250.0)

    assert feel.onset_time(0.5, tempo_map) == pytest.approx(before - 0.25)


def test_note_velocity_uses_humanize():
    feel = Feel(humanize=Humanize(0.0, 10, seed=12))
    reference = Humanize(0.0, 10, seed=12)

    assert [feel.note_velocity(80) for _ in range(50)] == [reference.velocity(80) for _ in range(50)]


def test_feel_params_declared():
    ranges = {param.name: (param.low, param.high, param.choices) for param in FEEL_PARAMS}

    assert ranges == {
        "swing": (0.0, 75.0, None),
        "swing_unit": (None, None, ("1/8", "1/16")),
        "humanize_ms": (0.0, 30.0, None),
        "humanize_velocity": (0, 40, None),
        "latency_ms": (0.0, 500.0, None),
    }


def test_set_param_changes_settings():
    feel = Feel()

    feel.set_param("swing", 60)
    feel.set_param("swing_unit", "1/16")
    feel.set_param("humanize_ms", "12.5")
    feel.set_param("humanize_velocity", 7)

    assert feel.swing == Swing(60.0, "1/16")
    assert feel.humanize.onset_ms == 12.5
    assert feel.humanize.velocity_steps == 7


@pytest.mark.parametrize("name, value", [("swing", 80), ("swing_unit", "1/4"), ("latency_ms", 501), ("humanize_velocity", 41), ("groove", 1)])
def test_set_param_rejects_invalid(name, value):
    feel = Feel()

    with pytest.raises(SettingsError):
        feel.set_param(name, value)
    assert feel.swing == Swing()
    assert feel.latency_ms == 0.0


def test_from_values_uses_defaults_and_seed():
    feel = Feel.from_values({"swing": 50, "humanize_ms": 10}, seed=21)

    assert feel.swing == Swing(50.0, "1/8")
    assert feel.humanize.onset_ms == 10.0
    assert feel.humanize.velocity_steps == 0
    assert feel.latency_ms == 0.0
    assert feel.humanize.onset_offset() == Humanize(10.0, 0, seed=21).onset_offset()
    with pytest.raises(SettingsError):
        Feel.from_values({"shuffle": 50})
