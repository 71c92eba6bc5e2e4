"""The engine in live modes, on a fake clock: call-and-response, continue, duet, respond, thru and loop-back."""

import mido
import numpy as np
import pytest

from sideman.clock import FakeClock
from sideman.commands import ApplySeeder, LiveNote, Respond, SetParam, SetTempo, Start, Stop
from sideman.encoding import Token
from sideman.engine import DEFAULT_REGISTRY, DEFAULT_SEEDERS, MAX_DROPPABLE_BACKLOG, START_MARGIN, Engine
from sideman.errors import InvalidInputError
from sideman.improviser import Improviser
from sideman.inputrouter import MAX_THRU_RATE, InputRouter
from sideman.plugins.live import LiveInput
from sideman.plugins.scale import MODES
from sideman.sampling import build_chain
from sideman.sharedoutput import SharedOutput
from tests.factories import random_bundle
from tests.test_engine import FakeOutput, assert_every_note_released

BUNDLE = random_bundle(scale=2.0)
BPM = 120.0
SECONDS_PER_BEAT = 60.0 / BPM
# Autoplay starts the transport START_MARGIN after time 0: beat 0 sounds then.
ORIGIN = START_MARGIN


def time_of(beat: float) -> float:
    return ORIGIN + beat * SECONDS_PER_BEAT


def beat_of(time: float) -> float:
    return (time - ORIGIN) / SECONDS_PER_BEAT


class LiveHarness:
    """An engine in a live mode on a fake clock, its output shared as in the daemon, and a way to play notes at beats."""

    def __init__(self, mode: str = "call-and-response", sampler=("temperature",), seed: int = 3, **live_values):
        self.clock = FakeClock()
        self.port = FakeOutput(self.clock)
        self.output = SharedOutput(self.port, self.clock)
        # As the daemon does: only the scale's values are configured; the live seeder carries its own.
        params = {"scale": {"key": "auto", "min_notes": 3}}
        self.improviser = Improviser(BUNDLE, build_chain(sampler, DEFAULT_REGISTRY, params), seed)
        seeder = LiveInput(mode=mode, **live_values)
        self.engine = Engine(
            self.improviser, self.output, self.clock, tempo=BPM, registry=DEFAULT_REGISTRY, seeders=DEFAULT_SEEDERS, params=params, seeder=seeder,
        )

    def run_to_beat(self, beat: float) -> None:
        self.engine.run_until(time_of(beat))

    def settle(self) -> None:
        """Apply the queued commands without moving the clock."""
        self.engine.run_until(self.clock.now())

    def play(self, pitch: int, onset: float, beats: float, release: bool = True) -> None:
        """Play one note at beat `onset`, held for `beats` beats, running the engine in between."""
        self.run_to_beat(onset)
        self.engine.apply([LiveNote(pitch, 100, time_of(onset))])
        if release:
            self.run_to_beat(onset + beats)
            self.engine.apply([LiveNote(pitch, 0, time_of(onset + beats))])

    def note_ons(self, start_beat: float = -1.0, end_beat: float = float("inf")) -> list[tuple[float, int]]:
        """(beat, pitch) of sideman's note_ons between two beats."""
        return [
            (beat_of(time), message.note)
            for time, message in self.port.events
            if message.type == "note_on" and message.velocity > 0 and start_beat <= beat_of(time) < end_beat
        ]

    def note_offs(self) -> list[tuple[float, int]]:
        return [(beat_of(time), message.note) for time, message in self.port.events if message.type == "note_off"]


CALL = [(64, 4.0), (66, 5.0), (68, 6.0), (71, 7.0)]  # E4 F#4 G#4 B4, one beat each, in bar 2 (beats 4-8)


def play_call(harness: LiveHarness, call=CALL, length: float = 0.9) -> None:
    for pitch, onset in call:
        harness.play(pitch, onset, length)


def test_call_and_response_answers_on_bar_line():
    harness = LiveHarness()

    harness.run_to_beat(4.0)
    assert harness.note_ons() == []

    play_call(harness)
    harness.run_to_beat(20.0)

    answer = harness.note_ons()
    assert answer, "no answer"
    # The call ends at beat 7.9; one bar (4 beats) of silence ends it at 11.9; the next bar line is beat 12.
    assert answer[0][0] == pytest.approx(12.0, abs=1e-9)
    # The call lasted one bar, so the answer does: every onset in bar 4 (beats 12-16), every note released by beat 16.
    assert all(12.0 - 1e-9 <= beat < 16.0 for beat, _ in answer)
    assert max(beat for beat, _ in harness.note_offs()) <= 16.0 + 1e-9
    status = harness.engine.status()
    assert status["live"] == "call-and-response"
    assert status["answers"] == 1
    assert status["answer_beat"] == 12.0
    assert status["answer_beats"] == 4.0
    assert status["listening"] == 1


def test_answer_length_follows_call_or_bars():
    long_call = [(60 + index, 4.0 + 2 * index) for index in range(4)]  # beats 4-11.9: two bars
    harness = LiveHarness()
    play_call(harness, long_call, length=1.9)
    harness.run_to_beat(40.0)
    assert harness.engine.status()["answer_beats"] == 8.0
    assert all(16.0 - 1e-9 <= beat < 24.0 for beat, _ in harness.note_ons())

    fixed = LiveHarness(bars=3)
    play_call(fixed)
    fixed.run_to_beat(40.0)
    assert fixed.engine.status()["answer_beats"] == 12.0
    assert all(12.0 - 1e-9 <= beat < 24.0 for beat, _ in fixed.note_ons())


def test_call_notes_feed_the_state():
    """The answer depends on the call: two different calls give two different answers from the same seed."""
    answers = []
    for call in (CALL, [(pitch - 5, onset) for pitch, onset in CALL]):
        harness = LiveHarness(sampler=("greedy",))
        play_call(harness, call)
        harness.run_to_beat(16.0)
        answers.append([pitch for _, pitch in harness.note_ons()])
    assert answers[0]
    assert answers[1]
    assert answers[0] != answers[1]


def test_same_call_same_answer():
    answers = []
    for _ in range(2):
        harness = LiveHarness(seed=9)
        play_call(harness)
        harness.run_to_beat(16.0)
        answers.append(harness.note_ons())
    assert answers[0] == answers[1]


def test_answer_in_key_of_call():
    e_major = {(4 + step) % 12 for step in MODES["major"]}
    call = [(64, 4.0), (68, 4.5), (71, 5.0), (73, 5.5), (75, 6.0), (76, 6.5), (71, 7.0), (64, 7.5)]
    harness = LiveHarness(sampler=("scale", "temperature"))
    play_call(harness, call, length=0.45)
    harness.run_to_beat(16.0)

    answer = [pitch for _, pitch in harness.note_ons()]
    assert len(answer) >= 3
    assert {pitch % 12 for pitch in answer} <= e_major


def test_second_call_answered_in_its_key():
    f_major = {(5 + step) % 12 for step in MODES["major"]}
    e_major_call = [(64, 4.0), (68, 4.5), (71, 5.0), (73, 5.5), (75, 6.0), (76, 6.5), (71, 7.0), (64, 7.5)]
    f_major_call = [(65, 20.0), (69, 20.5), (72, 21.0), (70, 21.5), (69, 22.0), (67, 22.5), (64, 23.0), (65, 23.5)]
    harness = LiveHarness(sampler=("scale", "temperature"))
    play_call(harness, e_major_call, length=0.45)
    harness.run_to_beat(20.0)

    play_call(harness, f_major_call, length=0.45)
    harness.run_to_beat(36.0)

    # The second call ends at beat 23.95; a bar of silence, then its answer from the bar line at beat 28.
    second_answer = [pitch for beat, pitch in harness.note_ons(24.0)]
    assert harness.note_ons(24.0)[0][0] == pytest.approx(28.0, abs=1e-9)
    assert len(second_answer) >= 3
    assert {pitch % 12 for pitch in second_answer} <= f_major


def test_playing_interrupts_the_answer():
    harness = LiveHarness()
    play_call(harness)
    harness.run_to_beat(13.0)
    assert harness.note_ons(12.0, 13.0)

    harness.play(60, 13.0, 0.5)
    harness.run_to_beat(15.9)
    assert harness.note_ons(13.0 + 1e-6, 15.9) == []
    assert_every_note_released(harness.port.events)
    # The interruption is a new call: bar 4 (13-13.5), so the next answer starts at beat 20.
    harness.run_to_beat(24.0)
    assert harness.note_ons(15.9)[0][0] == pytest.approx(20.0, abs=1e-9)


def test_respond_answers_at_next_bar():
    harness = LiveHarness(bars=2)
    play_call(harness)
    harness.engine.apply([Respond()])
    harness.run_to_beat(20.0)
    # Respond came at beat 7.9 (the call's last release): next bar line 8, two bars.
    ons = harness.note_ons()
    assert ons[0][0] == pytest.approx(8.0, abs=1e-9)
    assert all(beat < 16.0 for beat, _ in ons)


def test_respond_without_live_mode_rejected():
    clock = FakeClock()
    engine = Engine(Improviser(BUNDLE, build_chain(["greedy"], DEFAULT_REGISTRY), 0), FakeOutput(clock), clock, registry=DEFAULT_REGISTRY, seeders=DEFAULT_SEEDERS)
    with pytest.raises(InvalidInputError, match="live seeder"):
        engine.apply([Respond()])


def test_continue_takes_over_and_yields():
    harness = LiveHarness(mode="continue", handover=1.0)
    play_call(harness)
    harness.run_to_beat(12.0)
    ons = harness.note_ons()
    # The last note ends at beat 7.9, one beat of silence: sideman takes over on the sixteenth at 9.0.
    assert ons[0][0] == pytest.approx(9.0, abs=1e-9)
    assert ons[-1][0] > 11.0, "continue plays on until the musician plays again"

    harness.play(60, 12.0, 0.5, release=False)
    harness.run_to_beat(12.5)
    # An onset of sideman's at beat 12.0 itself played before the musician's note arrived.
    assert [beat for beat, _ in harness.note_ons(12.0, 12.5) if beat > 12.0] == []


def test_duet_replaces_own_notes_in_state():
    harness = LiveHarness(mode="duet")
    harness.play(50, 3.0, 0.5)
    harness.play(52, 3.5, 0.5, release=False)  # this onset determines the first live token, D3 for half a beat
    harness.settle()
    first = harness.engine._duet_anchor
    assert first.last_token == BUNDLE.vocabulary.index_of(Token(50, 6))

    # Sideman plays on (its notes go into the state), then the musician's next tokens arrive.
    harness.run_to_beat(4.0)
    harness.engine.apply([LiveNote(52, 0, time_of(4.0))])
    harness.play(55, 5.0, 0.5, release=False)
    harness.settle()
    assert harness.note_ons(3.5, 5.0), "sideman kept playing"

    # The state is the first live token's plus the musician's later tokens, E3 then a beat of rest:
    # sideman's notes since the first live token no longer count.
    expected = Improviser(BUNDLE, build_chain(("temperature",), DEFAULT_REGISTRY), 3)
    expected.rollback(first)
    expected.prime([Token(52, 6), Token(None, 12)])
    latest = harness.engine._duet_anchor
    assert latest.last_token == expected.last_token
    np.testing.assert_allclose(latest.state.a, expected.stepper.snapshot().a, atol=1e-6)
    np.testing.assert_allclose(latest.state.c, expected.stepper.snapshot().c, atol=1e-6)
    # The random draws were not rolled back with the state: the noise went on from where sideman's own notes left it.
    assert latest.noise_position > first.noise_position


def test_duet_plays_and_follows():
    plain = LiveHarness(mode="duet", sampler=("greedy",))
    plain.run_to_beat(16.0)
    with_musician = LiveHarness(mode="duet", sampler=("greedy",))
    play_call(with_musician, [(40, 4.0), (41, 4.5), (42, 5.0), (43, 5.5)], length=0.45)
    with_musician.run_to_beat(16.0)

    # Sideman plays from the start in both, and the same line until the musician's notes enter the state.
    assert plain.note_ons(0.0, 4.0) != []
    assert plain.note_ons(0.0, 4.0) == with_musician.note_ons(0.0, 4.0)
    assert with_musician.note_ons(8.0, 16.0), "sideman keeps playing after the musician's phrase"
    assert plain.note_ons(4.0, 16.0) != with_musician.note_ons(4.0, 16.0)


def test_stop_releases_answer_seeder_ends_live():
    harness = LiveHarness()
    play_call(harness)
    harness.run_to_beat(13.0)
    harness.engine.apply([Stop()])
    harness.run_to_beat(14.0)
    assert_every_note_released(harness.port.events)
    assert harness.engine.status()["listening"] == 1

    harness.engine.apply([ApplySeeder("zero")])
    harness.settle()
    assert harness.engine.status()["live"] == "off"


def test_tempo_change_while_listening():
    harness = LiveHarness()
    harness.run_to_beat(6.0)
    harness.engine.apply([SetTempo(60.0)])
    harness.settle()
    assert harness.engine.status()["beat"] == pytest.approx(6.0, abs=1e-6)

    harness.engine.run_for(1.0)
    assert harness.engine.status()["beat"] == pytest.approx(7.0, abs=1e-6)


def test_stop_start_while_listening():
    harness = LiveHarness()
    harness.run_to_beat(10.0)
    harness.engine.apply([Stop()])
    harness.settle()
    harness.engine.run_for(3.0)
    harness.engine.apply([Start()])
    harness.settle()
    assert harness.engine.status()["beat"] == pytest.approx(10.0, abs=0.02)


def test_live_param_changes_apply():
    harness = LiveHarness()
    harness.engine.apply([SetParam("live", "bars", 2)])
    harness.engine.apply([SetParam("live", "silence", 2.0)])
    play_call(harness)
    harness.run_to_beat(24.0)
    # Two bars of silence after the release at 7.9 end the call at 15.9; the answer lasts two bars from 16.
    assert harness.engine.status()["answer_beat"] == 16.0
    assert harness.engine.status()["answer_beats"] == 8.0

    harness.engine.apply([SetParam("live", "mode", "duet")])
    harness.run_to_beat(26.0)
    assert harness.engine.status()["live"] == "duet"
    assert harness.note_ons(24.0), "duet plays at once"


def test_live_param_keeps_look_ahead():
    harness = LiveHarness(mode="duet")
    harness.run_to_beat(2.0)
    checkpoint = harness.engine._checkpoint
    harness.engine.apply([SetParam("live", "silence", 3.0)])
    harness.settle()
    assert harness.engine._checkpoint is checkpoint


def test_stopped_transport_gives_no_answer():
    harness = LiveHarness()
    harness.run_to_beat(2.0)
    harness.engine.apply([Stop()])
    play_call(harness)
    harness.run_to_beat(20.0)
    status = harness.engine.status()
    assert status["answers"] == 0
    assert status["live_notes"] == len(CALL)
    assert harness.note_ons() == []


def test_other_channels_ignored():
    harness = LiveHarness(channel=2)
    for pitch, onset in CALL:
        harness.run_to_beat(onset)
        harness.engine.apply([LiveNote(pitch, 100, time_of(onset), channel=0)])
    harness.run_to_beat(20.0)
    assert harness.note_ons() == []
    assert harness.engine.status()["live_notes"] == 0


def test_router_echoes_and_thru():
    harness = LiveHarness(mode="duet", thru=True)
    router = InputRouter(harness.engine, harness.output, harness.clock)
    harness.run_to_beat(2.0)
    sent = [message for _, message in harness.port.events if message.type == "note_on"]
    assert sent

    # Sideman's latest note comes back through a loop 2 ms later: ignored.
    harness.clock.advance(0.002)
    router(sent[-1])
    harness.settle()
    assert harness.output.echoes == 1
    assert harness.engine.status()["live_notes"] == 0

    # The same pitch at another velocity is the musician's.
    router(sent[-1].copy(velocity=sent[-1].velocity - 1))
    harness.settle()
    assert harness.engine.status()["live_notes"] == 1

    # The musician's note on channel 5 goes through, moved to sideman's channel 1.
    router(mido.Message("note_on", channel=4, note=30, velocity=80))
    thru = harness.port.events[-1][1]
    assert (thru.type, thru.note, thru.channel) == ("note_on", 30, 0)

    # Thru turned off while the key is down: its note_off still goes through, so nothing hangs.
    harness.engine.apply([SetParam("live", "thru", False)])
    harness.settle()
    router(mido.Message("note_off", channel=4, note=30, velocity=0))
    released = harness.port.events[-1][1]
    assert (released.type, released.note, released.channel) == ("note_off", 30, 0)
    router(mido.Message("note_on", channel=4, note=31, velocity=80))
    assert harness.port.events[-1][1].note != 31


def test_live_flood_is_dropped_not_queued():
    harness = LiveHarness()
    harness.settle()  # the autoplay Start
    queued = [harness.engine.apply([LiveNote(60, 100, 0.0)], droppable=True) for _ in range(MAX_DROPPABLE_BACKLOG + 50)]
    assert queued.count(False) == 50
    assert harness.engine.status()["input_dropped"] == 50
    # A command that is not droppable still goes through.
    assert harness.engine.apply([Respond()]) is True


def test_musicians_release_is_not_taken_for_an_echo():
    harness = LiveHarness(mode="duet")
    router = InputRouter(harness.engine, harness.output, harness.clock)
    harness.run_to_beat(2.0)
    pitch = next(message.note for _, message in harness.port.events if message.type == "note_on")

    # The musician holds the pitch sideman just played, and releases it as sideman does.
    router(mido.Message("note_on", channel=0, note=pitch, velocity=77))
    harness.output.send(mido.Message("note_off", channel=0, note=pitch, velocity=0))
    router(mido.Message("note_off", channel=0, note=pitch, velocity=0))
    harness.settle()
    assert harness.engine.status()["live_notes"] == 1
    assert harness.output.echoes == 0


def test_thru_is_rate_limited():
    harness = LiveHarness(mode="duet", thru=True)
    router = InputRouter(harness.engine, harness.output, harness.clock)
    sent_before = len(harness.port.events)
    for index in range(3000):
        router(mido.Message("note_on", channel=3, note=index % 128, velocity=1 + index % 100))
    thru = [message for _, message in harness.port.events[sent_before:] if message.type == "note_on" and message.channel == 0]
    assert len(thru) == MAX_THRU_RATE
