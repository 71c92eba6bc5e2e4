import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sideman.errors import SettingsError
from sideman.tempo import MAX_BPM, MIN_BPM, TempoMap, validate_tempo


def test_constant_tempo_converts_both_ways():
    tempo_map = TempoMap(120.0, time=10.0, beat=4.0)

    assert tempo_map.time_at(4.0) == 10.0
    assert tempo_map.time_at(6.0) == pytest.approx(11.0)
    assert tempo_map.beat_at(11.5) == pytest.approx(7.0)
    assert tempo_map.bpm_at(100.0) == 120.0


def test_positions_before_first_anchor_extrapolate():
    tempo_map = TempoMap(60.0, time=10.0, beat=4.0)

    assert tempo_map.time_at(2.0) == pytest.approx(8.0)
    assert tempo_map.beat_at(9.0) == pytest.approx(3.0)


def test_set_tempo_keeps_beat_position_continuous():
    tempo_map = TempoMap(120.0)
    before = tempo_map.time_at(3.0)

    tempo_map.set_tempo(60.0, at_beat=3.0)

    assert tempo_map.time_at(3.0) == pytest.approx(before)
    assert tempo_map.time_at(2.0) == pytest.approx(1.0)
    assert tempo_map.time_at(4.0) == pytest.approx(2.5)
    assert tempo_map.beat_at(2.5) == pytest.approx(4.0)
    assert tempo_map.bpm_at(2.99) == 120.0
    assert tempo_map.bpm_at(3.0) == 60.0


def test_set_tempo_replaces_later_changes():
    tempo_map = TempoMap(120.0)
    tempo_map.set_tempo(60.0, at_beat=8.0)
    tempo_map.set_tempo(240.0, at_beat=16.0)

    tempo_map.set_tempo(90.0, at_beat=8.0)

    assert [anchor.bpm for anchor in tempo_map.anchors] == [120.0, 90.0]
    assert tempo_map.time_at(8.0) == pytest.approx(4.0)
    assert tempo_map.time_at(17.0) == pytest.approx(4.0 + 9 * 60 / 90)


def test_set_tempo_earlier_drops_later_anchor():
    tempo_map = TempoMap(120.0)
    tempo_map.set_tempo(60.0, at_beat=8.0)

    tempo_map.set_tempo(240.0, at_beat=4.0)

    assert [anchor.beat for anchor in tempo_map.anchors] == [0.0, 4.0]
    assert tempo_map.time_at(12.0) == pytest.approx(2.0 + 8 * 0.25)


def test_restart_moves_time_keeps_tempo_at_beat():
    tempo_map = TempoMap(120.0)
    tempo_map.set_tempo(60.0, at_beat=8.0)

    tempo_map.restart(100.0, 8.0)

    assert len(tempo_map.anchors) == 1
    assert tempo_map.time_at(8.0) == 100.0
    assert tempo_map.time_at(9.0) == pytest.approx(101.0)


def test_discard_before_keeps_later_positions():
    tempo_map = TempoMap(120.0)
    for index, bpm in enumerate((60.0, 90.0, 180.0), start=1):
        tempo_map.set_tempo(bpm, at_beat=4.0 * index)
    expected = [tempo_map.time_at(beat) for beat in (9.0, 12.0, 20.0)]

    tempo_map.discard_before(10.0)

    assert [anchor.bpm for anchor in tempo_map.anchors] == [90.0, 180.0]
    assert [tempo_map.time_at(beat) for beat in (9.0, 12.0, 20.0)] == pytest.approx(expected)


def test_discard_before_first_anchor_keeps_all():
    tempo_map = TempoMap(120.0, beat=4.0)

    tempo_map.discard_before(1.0)

    assert len(tempo_map.anchors) == 1


@pytest.mark.parametrize("bpm", [MIN_BPM, MAX_BPM, 20, 400, 133.3])
def test_validate_tempo_accepts_range(bpm):
    assert validate_tempo(bpm) == float(bpm)


@pytest.mark.parametrize("bpm", [19.99, 400.01, 0, -120, math.nan, math.inf, True, "120", None])
def test_validate_tempo_rejects(bpm):
    with pytest.raises(SettingsError, match="tempo"):
        validate_tempo(bpm)


def test_out_of_range_message_names_limits():
    with pytest.raises(SettingsError, match="500 BPM is out of range: allowed 20 to 400 BPM"):
        validate_tempo(500)


def test_set_tempo_validates():
    tempo_map = TempoMap(120.0)

    with pytest.raises(SettingsError):
        tempo_map.set_tempo(401.0, at_beat=1.0)

    assert len(tempo_map.anchors) == 1


changes = st.lists(
    st.tuples(st.floats(min_value=20, max_value=400), st.floats(min_value=0.1, max_value=8)),
    max_size=8,
)


@given(changes, st.floats(min_value=0, max_value=100))
def test_beat_and_time_are_inverse(tempo_changes, beat):
    tempo_map = TempoMap(120.0)
    at_beat = 0.0
    for bpm, gap in tempo_changes:
        at_beat += gap
        tempo_map.set_tempo(bpm, at_beat)

    assert tempo_map.beat_at(tempo_map.time_at(beat)) == pytest.approx(beat, abs=1e-9)


@given(changes)
def test_time_grows_with_beat(tempo_changes):
    tempo_map = TempoMap(120.0)
    at_beat = 0.0
    for bpm, gap in tempo_changes:
        at_beat += gap
        tempo_map.set_tempo(bpm, at_beat)

    times = [tempo_map.time_at(beat / 4) for beat in range(0, 300)]
    assert all(later > earlier for earlier, later in zip(times, times[1:]))
