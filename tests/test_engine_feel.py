"""Swing, humanize and latency in the engine: when notes are sent moves, which notes are played does not."""

import pytest

from sideman.commands import Reseed, SetFeel
from sideman.engine import START_MARGIN
from sideman.errors import SettingsError
from sideman.feel import Feel, Humanize, Swing
from sideman.osc_packets import translate_datagram
from tests.live import osc_message
from sideman.encoding import Token
from sideman.vocabulary import Vocabulary
from tests.factories import random_bundle
from tests.test_engine import NOTES_BUNDLE, Harness, assert_every_note_released

# Eighths and quarters only, so every onset is on a beat or on an off-beat eighth.
EIGHTHS_BUNDLE = random_bundle(vocabulary=Vocabulary([Token(pitch, steps) for steps in (6, 12) for pitch in range(60, 72)]))
SENDER = ("127.0.0.1", 50000)

BPM = 120.0


def played(harness: Harness) -> list[tuple[float, int, int]]:
    """(send time, pitch, velocity) of every note_on."""
    return [(time, message.note, message.velocity) for time, message in harness.output.events if message.type == "note_on"]


def beat_positions(harness: Harness) -> list[float]:
    return [event.beat for event in harness.shown]


def run(feel: Feel | None, seconds: float = 20.0, seed: int = 5, bundle=NOTES_BUNDLE) -> Harness:
    harness = Harness(seed=seed, bundle=bundle, tempo=BPM, feel=feel)
    harness.engine.run_until(seconds)
    return harness


def test_feel_never_changes_the_notes():
    straight = run(None)
    felt = run(Feel(Swing(60.0), Humanize(20.0, 15, seed=5), latency_ms=30.0))
    count = min(len(straight.tokens), len(felt.tokens))
    assert count > 20
    assert straight.tokens[:count] == felt.tokens[:count]
    felt.engine.shutdown()
    assert_every_note_released(felt.output.events)


def test_swing_delays_the_off_beat_eighths_only():
    straight = run(None, bundle=EIGHTHS_BUNDLE)
    swung = run(Feel(Swing(50.0)), bundle=EIGHTHS_BUNDLE)
    seconds_per_beat = 60.0 / BPM

    count = min(len(straight.shown), len(swung.shown))
    moved = 0
    for beat, (straight_time, _, _), (swung_time, _, _) in zip(beat_positions(straight), played(straight)[:count], played(swung)[:count]):
        if abs(beat % 1.0 - 0.5) < 1e-9:
            # Triplet feel: the off-beat eighth sounds at 2/3 of the beat instead of 1/2.
            assert swung_time == pytest.approx(straight_time + seconds_per_beat / 6, abs=1e-9)
            moved += 1
        else:
            assert swung_time == pytest.approx(straight_time, abs=1e-9)
    assert moved > 0


def test_humanize_is_reproducible_and_bounded():
    first = run(Feel(humanize=Humanize(15.0, 20, seed=5)))
    second = run(Feel(humanize=Humanize(15.0, 20, seed=5)))
    straight = run(None)

    assert played(first) == played(second)
    for (time, _, velocity), (straight_time, _, _) in zip(played(first), played(straight)):
        assert abs(time - straight_time) <= 0.015 + 1e-9
        assert 70 <= velocity <= 110
    assert {velocity for _, _, velocity in played(first)} != {90}


def test_latency_sends_every_event_earlier():
    straight = run(None)
    early = run(Feel(latency_ms=40.0))
    # The first onset moves later by the latency (so it is not sent in the past), and every event is then sent 40 ms early.
    for (time, pitch, _), (straight_time, straight_pitch, _) in zip(played(early), played(straight)):
        assert pitch == straight_pitch
        assert time == pytest.approx(straight_time, abs=1e-9)
    assert played(early)[0][0] == pytest.approx(START_MARGIN, abs=1e-9)


def test_feel_changes_over_commands():
    harness = Harness(seed=5, bundle=NOTES_BUNDLE, tempo=BPM)
    harness.engine.apply([SetFeel("swing", 66), SetFeel("humanize_velocity", 10), Reseed(9)])
    harness.engine.run_until(5.0)
    assert {velocity for _, _, velocity in played(harness)} != {90}
    with pytest.raises(SettingsError, match="swing"):
        harness.engine.apply([SetFeel("swing", 90)])
    with pytest.raises(SettingsError, match="unknown feel setting"):
        harness.engine.apply([SetFeel("shuffle", 10)])


def test_osc_swing_and_feel_messages():
    swing = translate_datagram(osc_message("/sideman/swing", 55.0), SENDER)
    feel = translate_datagram(osc_message("/sideman/feel", "latency_ms", 12.0), SENDER)
    assert swing.commands == [SetFeel("swing", 55.0)]
    assert feel.commands == [SetFeel("latency_ms", 12.0)]
