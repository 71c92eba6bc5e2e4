import logging
import math
import threading
from collections import Counter

import mido
import pytest

from sideman.clock import FakeClock, MonotonicClock
from sideman.commands import ApplySeeder, Panic, Prime, Reset, Reseed, SetParam, SetSampler, SetTempo, Start, Stop
from sideman.encoding import Token
from sideman.engine import MAX_PRIME_TOKENS, START_MARGIN, Engine
from sideman.errors import InvalidInputError, SettingsError
from sideman.failures import PluginFailures
from sideman.improviser import Improviser
from sideman.plugins.samplers import Greedy, Temperature
from sideman.recorder import Recorder
from sideman.render import render
from sideman.sampling import Chooser, Filter, SamplerChain
from sideman.seeding import Seeder
from sideman.vocabulary import Vocabulary
from tests.factories import random_bundle

REGISTRY = {"greedy": Greedy, "temperature": Temperature}
BUNDLE = random_bundle()
# Notes only, so that every token drawn shows up as a NoteEvent.
NOTES_BUNDLE = random_bundle(vocabulary=Vocabulary([Token(pitch, steps) for steps in (3, 6, 12) for pitch in range(60, 72)]))
ALL_NOTES_OFF = mido.Message("control_change", channel=0, control=123, value=0)


class FakeOutput:
    """Records (clock time, message); All Notes Off is recorded as its CC 123 message."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.events: list[tuple[float, mido.Message]] = []

    def send(self, message: mido.Message) -> None:
        self.events.append((self.clock.now(), message))

    def all_notes_off(self, channel: int) -> None:
        self.events.append((self.clock.now(), mido.Message("control_change", channel=channel, control=123, value=0)))

    def notes(self, kind: str | None = None) -> list[tuple[float, str, int]]:
        return [
            (time, message.type, message.note)
            for time, message in self.events
            if message.type in ("note_on", "note_off") and (kind is None or message.type == kind)
        ]


class Harness:
    """An engine on a fake clock and a fake output, with the NoteEvents it reported."""

    def __init__(self, seed: int = 1, bundle=BUNDLE, chooser=None, registry=REGISTRY, **options):
        self.clock = FakeClock()
        self.output = FakeOutput(self.clock)
        self.shown = []
        chain = SamplerChain([], chooser if chooser is not None else Temperature())
        self.improviser = Improviser(bundle, chain, seed)
        options.setdefault("on_note", self.shown.append)
        self.engine = Engine(self.improviser, self.output, self.clock, registry=registry, **options)

    @property
    def tokens(self) -> list[Token]:
        return [event.token for event in self.shown]


def reference_tokens(seed: int, count: int, bundle=BUNDLE, chooser=None) -> list[Token]:
    """The first `count` tokens (rests included) a fresh improviser draws."""
    improviser = Improviser(bundle, SamplerChain([], chooser if chooser is not None else Temperature()), seed)
    return [improviser.token(improviser.draw()) for _ in range(count)]


def expected_schedule(tokens: list[Token], start: float, bpm: float, gate: float) -> list[tuple[float, str, int]]:
    events = []
    beat = 0.0
    for token in tokens:
        beats = token.steps / 12
        if token.pitch is not None:
            onset = start + beat * 60 / bpm
            events.append((onset, "note_on", token.pitch))
            events.append((onset + gate * beats * 60 / bpm, "note_off", token.pitch))
        beat += beats
    return sorted(events, key=lambda event: (event[0], event[1] == "note_on"))


def assert_events_equal(actual, expected):
    assert [(kind, pitch) for _, kind, pitch in actual] == [(kind, pitch) for _, kind, pitch in expected]
    for (actual_time, _, _), (expected_time, _, _) in zip(actual, expected):
        assert actual_time == pytest.approx(expected_time, abs=1e-9)


def assert_every_note_released(events):
    sounding = Counter()
    for _, message in events:
        if message.type == "note_on":
            assert sounding[message.note] == 0, f"note_on of {message.note} while it still sounds"
            sounding[message.note] += 1
        elif message.type == "note_off":
            sounding[message.note] -= 1
    assert all(count == 0 for count in sounding.values()), sounding


# Scheduling


def test_onsets_on_grid_with_gate():
    harness = Harness(seed=4, tempo=120.0, gate=0.5)

    harness.engine.run_until(30.0)

    tokens = reference_tokens(4, 400)
    expected = [event for event in expected_schedule(tokens, START_MARGIN, 120.0, 0.5) if event[0] < 29.9]
    actual = [event for event in harness.output.notes() if event[0] < 29.9]
    assert len(actual) > 100
    assert_events_equal(actual, expected)


def test_rests_send_nothing():
    harness = Harness(seed=4, gate=0.5)

    harness.engine.run_until(60.0)

    played = harness.engine.status()["notes"]
    tokens = reference_tokens(4, 1000)
    drawn_notes = 0
    rests = 0
    for token in tokens:
        if drawn_notes == played:
            break
        if token.pitch is None:
            rests += 1
        else:
            drawn_notes += 1
    assert rests > 0
    assert len(harness.output.notes("note_on")) == played
    assert harness.tokens == [token for token in tokens if token.pitch is not None][:played]


def test_note_events_report_time_and_beat():
    harness = Harness(seed=2, bundle=NOTES_BUNDLE, tempo=90.0)

    harness.engine.run_until(10.0)

    beat = 0.0
    for event in harness.shown:
        assert event.beat == pytest.approx(beat)
        assert event.seconds == pytest.approx(beat * 60 / 90)
        assert event.beats == event.token.steps / 12
        assert event.name[:-1] in ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
        beat += event.beats


def test_tempo_change_from_next_onset():
    harness = Harness(seed=6, gate=0.5, tempo=120.0)
    change_time = 10.2
    harness.engine.run_until(change_time)

    harness.engine.apply([SetTempo(60.0)])
    harness.engine.run_until(40.0)

    # The next onset (note or rest) after the change keeps its time at the old
    # tempo; every later beat is one second long.
    tokens = reference_tokens(6, 400)
    beat = 0.0
    change_beat = None
    expected = []
    for token in tokens:
        beats = token.steps / 12
        old_time = START_MARGIN + beat * 0.5
        if change_beat is None and old_time > change_time:
            change_beat, change_at = beat, old_time
        if change_beat is None:
            onset, length = old_time, beats * 0.5
        else:
            onset, length = change_at + (beat - change_beat), beats * 1.0
        if token.pitch is not None:
            expected += [(onset, "note_on", token.pitch), (onset + 0.5 * length, "note_off", token.pitch)]
        beat += beats
    expected = sorted((event for event in expected if event[0] < 39.9), key=lambda event: (event[0], event[1] == "note_on"))

    assert_events_equal([event for event in harness.output.notes() if event[0] < 39.9], expected)
    assert harness.engine.status()["tempo"] == 60.0


def test_tempo_change_keeps_beat_continuous():
    harness = Harness(seed=6, bundle=NOTES_BUNDLE)
    harness.engine.run_until(5.0)

    for bpm in (200.0, 45.0, 133.0):
        harness.engine.apply([SetTempo(bpm)])
        harness.engine.run_for(5.0)

    beat = 0.0
    for event in harness.shown:
        assert event.beat == pytest.approx(beat)
        beat += event.beats
    onsets = [time for time, _, _ in harness.output.notes("note_on")]
    assert all(later > earlier for earlier, later in zip(onsets, onsets[1:]))


def test_tempo_change_does_not_redraw():
    harness = Harness(seed=6, bundle=NOTES_BUNDLE)
    harness.engine.run_until(5.0)

    harness.engine.apply([SetTempo(300.0)])
    harness.engine.run_until(15.0)

    assert harness.tokens == reference_tokens(6, len(harness.shown), NOTES_BUNDLE)


def test_late_onset_restarts_grid():
    harness = Harness(seed=3, bundle=NOTES_BUNDLE, tempo=120.0, gate=0.5)
    harness.engine.run_until(5.0)
    played_before = len(harness.shown)

    harness.clock.advance(3.0)
    resumed = harness.clock.now()
    harness.engine.run_until(20.0)

    assert harness.engine.status()["late_onsets"] == 1
    late = harness.shown[played_before:]
    onsets = [time for time, _, _ in harness.output.notes("note_on")][played_before:]
    assert onsets[0] == resumed
    for index in range(1, len(late)):
        assert onsets[index] - onsets[index - 1] == pytest.approx(late[index - 1].beats * 0.5)
    assert harness.tokens == reference_tokens(3, len(harness.shown), NOTES_BUNDLE)


# Look-ahead: a change applies from the very next onset.


def set_temperature(improviser):
    improviser.chain.chooser.set_param("value", 0.05)


def use_greedy(improviser):
    improviser.chain = SamplerChain([], Greedy())


PRIME_PHRASE = ((60, 1.0), (None, 0.5), (64, 0.25), (67, 0.3))

CHANGES = {
    "param": ([SetParam("temperature", "value", 0.05)], set_temperature),
    "seed": ([Reseed(99)], lambda improviser: improviser.reseed(99)),
    "sampler": ([SetSampler(("greedy",))], use_greedy),
    "reset": ([Reset()], lambda improviser: improviser.reset()),
    "prime": ([Prime(PRIME_PHRASE)], lambda improviser: improviser.prime([Token(60, 12), Token(None, 6), Token(64, 3), Token(67, 4)])),
    "batch": ([Reseed(7), SetParam("temperature", "value", 3.0)], lambda improviser: (improviser.reseed(7), improviser.chain.chooser.set_param("value", 3.0))),
}


# With this seed, every change above gives a look-ahead note other than the one drawn before it.
LOOK_AHEAD_SEED = 5


@pytest.mark.parametrize("name", CHANGES)
def test_change_applies_from_next_onset(name):
    commands, change_reference = CHANGES[name]
    harness = Harness(seed=LOOK_AHEAD_SEED, bundle=NOTES_BUNDLE)
    harness.engine.run_until(7.3)
    played = len(harness.shown)

    harness.engine.apply(commands)
    harness.engine.run_until(20.0)

    reference = Improviser(NOTES_BUNDLE, SamplerChain([], Temperature()), LOOK_AHEAD_SEED)
    before = [reference.token(reference.draw()) for _ in range(played)]
    change_reference(reference)
    after = [reference.token(reference.draw()) for _ in range(len(harness.shown) - played)]
    unchanged = reference_tokens(LOOK_AHEAD_SEED, len(harness.shown), NOTES_BUNDLE)[played:]

    assert harness.tokens[:played] == before
    assert harness.tokens[played:] == after
    # Seed and time are chosen so that the drawn look-ahead note differs from
    # the one the change gives: a missed redraw then fails the check above.
    assert after[0] != unchanged[0]


def test_change_while_stopped_applies_on_start():
    harness = Harness(seed=5, bundle=NOTES_BUNDLE)
    harness.engine.run_until(4.0)
    harness.engine.apply([Stop()])
    harness.engine.run_for(1.0)
    played = len(harness.shown)

    harness.engine.apply([Reseed(42)])
    harness.engine.apply([Start()])
    harness.engine.run_for(10.0)

    reference = Improviser(NOTES_BUNDLE, SamplerChain([], Temperature()), 5)
    for _ in range(played):
        reference.draw()
    reference.reseed(42)
    assert harness.tokens[played:] == [reference.token(reference.draw()) for _ in range(len(harness.shown) - played)]


# Transport


def test_stop_reset_seed_start_equals_render():
    harness = Harness(seed=8, gate=0.8, tempo=140.0)
    harness.engine.run_until(5.3)

    harness.engine.apply([Stop()])
    harness.engine.run_for(2.0)
    harness.engine.apply([Reset()])
    harness.engine.apply([Reseed(31)])
    harness.engine.run_for(1.0)
    harness.engine.apply([Start()])
    start = harness.clock.now()
    played = len(harness.shown)
    harness.engine.run_for(60.0)

    rendering = render(Improviser(BUNDLE, SamplerChain([], Temperature()), 31), 50, 140.0, 0.8, 90, 0)
    assert harness.tokens[played:played + 50] == rendering.notes

    # The same rhythm: the engine's onsets after Start are the file's, in seconds.
    ticks = 0
    file_onsets = []
    for message in rendering.midi.tracks[0]:
        ticks += message.time
        if message.type == "note_on":
            file_onsets.append(mido.tick2second(ticks, 480, mido.bpm2tempo(140.0)))
    engine_onsets = [time - (start + START_MARGIN) for time, _, _ in harness.output.notes("note_on")[played:played + 50]]
    assert engine_onsets == pytest.approx(file_onsets, abs=1e-4)


def test_stop_releases_and_keeps_silent():
    harness = Harness(seed=2, gate=0.9, channel=5)
    harness.engine.run_until(6.1)

    harness.engine.apply([Stop()])
    harness.engine.run_for(0.0)
    stopped_at = harness.clock.now()
    events_at_stop = len(harness.output.events)
    harness.engine.run_for(30.0)

    assert len(harness.output.events) == events_at_stop, "nothing plays while stopped"
    assert harness.output.events[-1] == (stopped_at, ALL_NOTES_OFF.copy(channel=5))
    assert_every_note_released(harness.output.events)
    assert harness.engine.status()["running"] == 0


def test_stop_when_note_sounds_sends_its_note_off():
    harness = Harness(seed=2, bundle=NOTES_BUNDLE, gate=1.0)
    harness.engine.run_until(3.01)
    sounding = harness.shown[-1].token.pitch

    harness.engine.apply([Stop()])
    harness.engine.run_for(0.0)

    assert harness.output.notes()[-1] == (3.01, "note_off", sounding)


def test_start_continues_with_drawn_note():
    harness = Harness(seed=9, bundle=NOTES_BUNDLE)
    harness.engine.run_until(4.0)
    harness.engine.apply([Stop()])
    harness.engine.run_for(10.0)
    played = len(harness.shown)
    next_beat = harness.shown[-1].beat + harness.shown[-1].beats
    assert harness.engine.status()["beat"] == pytest.approx(next_beat)

    harness.engine.apply([Start()])
    restart = harness.clock.now()
    harness.engine.run_for(5.0)

    assert harness.output.notes("note_on")[played][0] == pytest.approx(restart + START_MARGIN)
    assert harness.shown[played].beat == pytest.approx(next_beat)
    assert harness.tokens == reference_tokens(9, len(harness.shown), NOTES_BUNDLE)


def test_start_while_running_changes_nothing():
    plain = Harness(seed=9)
    plain.engine.run_until(20.0)
    restarted = Harness(seed=9)
    restarted.engine.run_until(7.0)

    restarted.engine.apply([Start()])
    restarted.engine.run_until(20.0)

    assert restarted.output.events == plain.output.events


def test_autoplay_off_waits_for_start():
    harness = Harness(seed=1, autoplay=False)
    harness.engine.run_until(10.0)

    assert harness.output.events == []
    assert harness.engine.status()["running"] == 0

    harness.engine.apply([Start()])
    harness.engine.run_until(20.0)
    assert harness.output.notes("note_on")[0][0] >= 10.0
    assert harness.tokens == [token for token in reference_tokens(1, 300) if token.pitch is not None][:len(harness.shown)]


def test_reset_keeps_transport():
    harness = Harness(seed=4, bundle=NOTES_BUNDLE)
    harness.engine.run_until(5.0)
    next_onset = START_MARGIN + (harness.shown[-1].beat + harness.shown[-1].beats) * 0.5
    played = len(harness.shown)

    harness.engine.apply([Reset()])
    harness.engine.run_until(10.0)

    assert harness.engine.status()["running"] == 1
    assert harness.output.notes("note_on")[played][0] == pytest.approx(next_onset)
    zero_state = reference_tokens(4, len(harness.shown) - played, NOTES_BUNDLE)
    assert harness.tokens[played:] != zero_state, "reset keeps the generator's position, so the line differs from a fresh start"


def test_panic_releases_and_keeps_playing():
    harness = Harness(seed=3, bundle=NOTES_BUNDLE, gate=1.0)
    harness.engine.run_until(4.02)
    sounding = harness.shown[-1].token.pitch
    next_onset = START_MARGIN + (harness.shown[-1].beat + harness.shown[-1].beats) * 0.5
    played = len(harness.shown)

    harness.engine.apply([Panic()])
    harness.engine.run_until(10.0)

    panic_events = [(time, message) for time, message in harness.output.events if time == 4.02]
    assert [message for _, message in panic_events] == [mido.Message("note_off", note=sounding, velocity=0), ALL_NOTES_OFF]
    assert harness.output.notes("note_on")[played][0] == pytest.approx(next_onset)
    assert harness.tokens == reference_tokens(3, len(harness.shown), NOTES_BUNDLE)
    assert_every_note_released(harness.output.events + [(10.0, mido.Message("note_off", note=harness.shown[-1].token.pitch))])


@pytest.mark.parametrize("gate", [1.0, 2.0])
def test_note_off_before_same_pitch_note_on(gate):
    one_pitch = random_bundle(vocabulary=Vocabulary([Token(60, steps) for steps in (3, 6, 12)]))
    harness = Harness(seed=1, bundle=one_pitch, gate=gate)

    harness.engine.run_until(10.0)

    notes = harness.output.notes()
    kinds = [kind for _, kind, _ in notes]
    assert len(kinds) > 20
    assert kinds[::2] == ["note_on"] * len(kinds[::2])
    assert kinds[1::2] == ["note_off"] * len(kinds[1::2])
    for index in range(1, len(notes) - 1, 2):
        assert notes[index][0] == pytest.approx(notes[index + 1][0]), "each note sounds until the next onset"


def test_gate_above_one_overlaps_other_pitch():
    two_pitches = random_bundle(vocabulary=Vocabulary([Token(pitch, 12) for pitch in (60, 62)]))
    harness = Harness(seed=1, bundle=two_pitches, gate=1.5)

    harness.engine.run_until(10.0)

    sounding = set()
    overlaps = 0
    for _, kind, pitch in harness.output.notes():
        if kind == "note_on":
            overlaps += bool(sounding)
            sounding.add(pitch)
        else:
            sounding.discard(pitch)
    assert_every_note_released(harness.output.events + [(10.0, mido.Message("note_off", note=pitch)) for pitch in sounding])
    assert overlaps > 0


def test_shutdown_releases_everything():
    harness = Harness(seed=2, gate=0.9, channel=15)
    harness.engine.run_until(7.77)

    harness.engine.shutdown()
    harness.engine.shutdown()
    harness.engine.run_until(20.0)

    assert harness.output.events[-1][1] == ALL_NOTES_OFF.copy(channel=15)
    assert sum(message.type == "control_change" for _, message in harness.output.events) == 1
    assert_every_note_released(harness.output.events)
    assert harness.output.events[-1][0] == 7.77


def test_every_note_released_over_long_run():
    harness = Harness(seed=10, gate=0.95)
    harness.engine.run_until(600.0)

    harness.engine.shutdown()

    assert harness.engine.status()["notes"] > 1000
    assert_every_note_released(harness.output.events)


# Samplers and parameters


class BrokenChooser(Chooser):
    name = "broken"

    def choose(self, probabilities, context):
        raise RuntimeError("broken on purpose")


class BrokenFilter(Filter):
    name = "broken_filter"

    def reshape(self, probabilities, context):
        raise ZeroDivisionError("broken on purpose")


def test_sampler_exception_falls_back_to_greedy(caplog):
    harness = Harness(seed=1, chooser=BrokenChooser(), registry=REGISTRY | {"broken": BrokenChooser})

    with caplog.at_level(logging.DEBUG, logger="sideman.engine"):
        harness.engine.run_until(60.0)

    played = len(harness.shown)
    assert played > 20
    assert harness.tokens == [token for token in reference_tokens(1, 500, chooser=Greedy()) if token.pitch is not None][:played]
    # One error with the traceback, one when the sampler is disabled, one naming the new chain.
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 3
    assert "'broken' failed, so" in errors[0]
    assert "disabled" in errors[1]
    assert "'greedy'" in errors[2]
    status = harness.engine.status()
    assert status["sampler_errors"] == PluginFailures().limit
    # Disabled after repeated failures: the chooser gave way to greedy.
    assert status["sampler"] == "greedy"


def test_failing_filter_named_in_log(caplog):
    harness = Harness(seed=1, registry=REGISTRY | {"broken_filter": BrokenFilter})
    harness.improviser.chain = SamplerChain([BrokenFilter()], Temperature())

    with caplog.at_level(logging.ERROR, logger="sideman.engine"):
        harness.engine.apply([Reseed(3)])
        harness.engine.run_until(5.0)

    assert len(harness.shown) > 3
    assert any("'broken_filter'" in record.getMessage() for record in caplog.records)


def test_param_kept_for_plugin_not_in_chain():
    harness = Harness(seed=1, chooser=Greedy())
    harness.engine.run_until(1.0)

    harness.engine.apply([SetParam("temperature", "value", 0.25)])
    harness.engine.apply([SetSampler(("temperature",))])
    harness.engine.run_until(2.0)

    assert harness.improviser.chain.chooser.name == "temperature"
    assert harness.improviser.chain.chooser.values["value"] == 0.25


def test_param_persists_across_chain_changes():
    harness = Harness(seed=1)
    harness.engine.apply([SetParam("temperature", "value", 1.5)])
    harness.engine.apply([SetSampler(("greedy",))])
    harness.engine.apply([SetSampler(("temperature",))])
    harness.engine.run_until(1.0)

    assert harness.improviser.chain.chooser.values["value"] == 1.5


def test_configured_params_used_by_new_chain():
    harness = Harness(seed=1, chooser=Greedy(), params={"temperature": {"value": 0.5}})

    # A chain given as one string is split at spaces.
    harness.engine.apply([SetSampler("temperature")])
    harness.engine.run_until(1.0)

    assert harness.improviser.chain.chooser.values["value"] == 0.5
    assert harness.engine.status()["sampler"] == "temperature"


def test_param_value_converted():
    harness = Harness(seed=1)

    harness.engine.apply([SetParam("temperature", "value", 2)])
    harness.engine.run_until(1.0)

    value = harness.improviser.chain.chooser.values["value"]
    assert value == 2.0
    assert isinstance(value, float)


# Validation


INVALID = [
    (SetTempo(500.0), SettingsError, "out of range"),
    (SetTempo(19.9), SettingsError, "out of range"),
    (SetTempo(math.nan), SettingsError, "finite"),
    (Reseed(-1), InvalidInputError, "seed"),
    (Reseed(1.5), InvalidInputError, "seed"),
    (Prime(()), InvalidInputError, "at least one"),
    (Prime(((60, 0.0),)), InvalidInputError, "duration"),
    (Prime(((60, math.inf),)), InvalidInputError, "duration"),
    (Prime(((128, 1.0),)), InvalidInputError, "pitch"),
    (Prime(((60,),)), InvalidInputError, "phrase item 1"),
    (Prime(((60, 1.0),) * (MAX_PRIME_TOKENS + 1)), InvalidInputError, "too long"),
    (SetSampler(("nonesuch",)), SettingsError, "unknown sampler 'nonesuch'"),
    (SetSampler(()), SettingsError, "at least one sampler"),
    (SetSampler(("greedy", "temperature")), SettingsError, "can only come last"),
    (SetParam("nonesuch", "value", 1.0), SettingsError, "unknown sampler"),
    (SetParam("temperature", "nonesuch", 1.0), SettingsError, "no parameter 'nonesuch'"),
    (SetParam("temperature", "value", 9.0), SettingsError, "out of range: allowed 0.05 to 5.0"),
    (SetParam("temperature", "value", "hot"), SettingsError, "invalid value"),
    ("start", InvalidInputError, "unknown engine command"),
]


@pytest.mark.parametrize("command, error, reason", INVALID, ids=[str(case[0])[:40] for case in INVALID])
def test_invalid_command_rejected(command, error, reason):
    harness = Harness(seed=1)

    with pytest.raises(error, match=reason):
        harness.engine.apply([command])


def test_invalid_batch_applies_nothing():
    harness = Harness(seed=1)
    harness.engine.run_until(2.0)

    with pytest.raises(SettingsError):
        harness.engine.apply([SetTempo(90.0), Reseed(4), SetTempo(1000.0)])
    harness.engine.run_until(10.0)

    assert harness.engine.status()["tempo"] == 120.0
    assert harness.engine.status()["seed"] == 1


def test_accepted_changes_described(caplog):
    harness = Harness(seed=1)

    with caplog.at_level(logging.DEBUG, logger="sideman.engine"):
        harness.engine.apply([SetTempo(97.5), Reseed(12), SetSampler(("greedy",)), Prime(((62, 0.5), (None, 1.0)))])

    messages = [record.getMessage() for record in caplog.records if record.levelno == logging.DEBUG]
    assert any("97.5 BPM" in message for message in messages)
    assert any("seed 12" in message for message in messages)
    assert any("'greedy'" in message for message in messages)
    assert any("D4:0.5 r:1" in message for message in messages)


def test_constructor_rejects_bad_settings():
    clock = FakeClock()
    improviser = Improviser(BUNDLE, SamplerChain([], Greedy()), 0)

    for options, reason in [(dict(tempo=401.0), "tempo"), (dict(gate=0.0), "gate"), (dict(velocity=0), "velocity"), (dict(channel=16), "channel")]:
        with pytest.raises(SettingsError, match=reason):
            Engine(improviser, FakeOutput(clock), clock, **options)


# Status, threads and recording


def test_status_values():
    harness = Harness(seed=3, bundle=NOTES_BUNDLE, tempo=100.0, channel=2, model_name="test model")
    harness.engine.run_until(6.0)

    status = harness.engine.status()

    assert status["tempo"] == 100.0
    assert status["running"] == 1
    assert status["sampler"] == "temperature"
    assert status["seed"] == 3
    assert status["notes"] == len(harness.shown)
    assert status["model"] == "test model"
    assert status["channel"] == 3
    last = harness.shown[-1]
    assert last.beat <= status["beat"] <= last.beat + last.beats
    assert status["beat"] == pytest.approx((6.0 - START_MARGIN) * 100 / 60)
    for key, value in status.items():
        assert isinstance(value, (int, float, str)), key


def test_status_model_defaults_to_bundle_name():
    harness = Harness(seed=3)

    assert harness.engine.status()["model"] == "random test model"


def test_thread_plays_until_shutdown(tmp_path):
    clock = FakeClock()
    output = FakeOutput(clock)
    enough = threading.Event()
    shown = []

    def on_note(event):
        shown.append(event)
        if len(shown) >= 300:
            enough.set()

    recorder = Recorder(tmp_path / "take.mid")
    improviser = Improviser(BUNDLE, SamplerChain([], Temperature()), 4)
    engine = Engine(improviser, output, clock, on_note=on_note, recorder=recorder)
    engine.start_thread()
    with pytest.raises(RuntimeError):
        engine.start_thread()

    assert enough.wait(timeout=60.0)
    engine.apply([SetTempo(200.0)])
    engine.shutdown(timeout=10.0)

    assert engine.failure is None
    assert not engine._thread.is_alive()
    assert_every_note_released(output.events)
    assert output.events[-1][1] == ALL_NOTES_OFF
    recorded = mido.MidiFile(tmp_path / "take.mid")
    assert sum(message.type == "note_on" for message in recorded.tracks[0]) == len(output.notes("note_on"))


def test_recording_matches_output(tmp_path):
    path = tmp_path / "take.mid"
    harness = Harness(seed=5, recorder=Recorder(path))
    harness.engine.run_until(20.0)

    harness.engine.shutdown()

    recorded = []
    seconds = 0.0
    for message in mido.MidiFile(path):
        seconds += message.time
        if not message.is_meta:
            recorded.append((seconds, message.copy(time=0)))
    first = harness.output.events[0][0]
    assert [message for _, message in recorded] == [message for _, message in harness.output.events]
    assert [time for time, _ in recorded] == pytest.approx([time - first for time, _ in harness.output.events], abs=1e-3)


def test_note_display_failure_does_not_stop_play(caplog):
    def broken_display(event):
        raise BrokenPipeError("display gone")

    harness = Harness(seed=1, on_note=broken_display)
    with caplog.at_level(logging.ERROR, logger="sideman.engine"):
        harness.engine.run_until(10.0)

    assert harness.engine.status()["notes"] > 5
    assert sum("note display" in record.getMessage() for record in caplog.records) == 1



def test_thread_on_real_clock_releases_notes():
    clock = MonotonicClock()
    sent: list[mido.Message] = []
    played = threading.Event()

    class ListOutput:
        def send(self, message):
            sent.append(message)

        def all_notes_off(self, channel):
            sent.append(mido.Message("control_change", channel=channel, control=123, value=0))

    def on_note(event):
        if event.token.pitch is not None and sum(message.type == "note_on" for message in sent) >= 10:
            played.set()

    improviser = Improviser(NOTES_BUNDLE, SamplerChain([], Temperature()), 1)
    engine = Engine(improviser, ListOutput(), clock, tempo=400.0, on_note=on_note)
    engine.start_thread()

    # No timing is asserted: the wait only bounds a hung engine.
    assert played.wait(timeout=30.0)
    engine.shutdown(timeout=10.0)

    assert engine.failure is None
    assert sent[-1] == ALL_NOTES_OFF
    assert_every_note_released([(0.0, message) for message in sent])


def test_status_waits_for_commands_before_it():
    clock = MonotonicClock()
    sounded = threading.Event()
    release = threading.Event()

    def hold_engine_thread(event):
        sounded.set()
        release.wait(5)

    engine = Engine(Improviser(NOTES_BUNDLE, SamplerChain([], Temperature()), 1), FakeOutput(clock), clock, on_note=hold_engine_thread)
    engine.start_thread()
    try:
        assert sounded.wait(5)
        engine.apply([SetTempo(200.0)])
        threading.Timer(0.05, release.set).start()

        status = engine.status()
    finally:
        release.set()
        engine.shutdown()

    assert status["tempo"] == pytest.approx(200.0)


def test_failing_command_does_not_stop_play(monkeypatch, caplog):
    def broken_reset(engine, command):
        raise RuntimeError("broken reset")

    monkeypatch.setitem(Engine._appliers, Reset, broken_reset)
    harness = Harness()
    harness.engine.run_for(1.0)
    played = len(harness.output.notes("note_on"))

    with caplog.at_level(logging.ERROR):
        harness.engine.apply([Reset(), SetTempo(240.0)])
        harness.engine.run_for(2.0)

    assert len(harness.output.notes("note_on")) > played
    assert harness.engine.status()["tempo"] == pytest.approx(240.0)
    assert "could not apply reset" in caplog.text


class BrokenSeeder(Seeder):
    name = "broken_seeder"

    def prepare(self, improviser):
        raise KeyError("broken on purpose")


def test_sampler_disabled_after_repeated_failures(caplog):
    harness = Harness(seed=1, registry=REGISTRY | {"broken_filter": BrokenFilter})
    harness.improviser.chain = SamplerChain([BrokenFilter()], Temperature())

    with caplog.at_level(logging.ERROR, logger="sideman"):
        harness.engine.apply([Reseed(3)])
        harness.engine.run_until(30.0)

    status = harness.engine.status()
    assert status["sampler_errors"] == PluginFailures().limit
    assert status["disabled_plugins"] == "broken_filter"
    assert status["sampler"] == "temperature"
    assert any("disabled" in record.getMessage() for record in caplog.records)
    with pytest.raises(InvalidInputError, match="disabled"):
        harness.engine.apply([SetSampler(("broken_filter", "temperature"))])


def test_seeder_failures_rejected_then_disabled():
    harness = Harness(seed=1, seeders={"broken_seeder": BrokenSeeder})

    for _ in range(PluginFailures().limit):
        with pytest.raises(InvalidInputError, match="failed"):
            harness.engine.apply([ApplySeeder("broken_seeder")])

    with pytest.raises(InvalidInputError, match="disabled"):
        harness.engine.apply([ApplySeeder("broken_seeder")])
    harness.engine.run_until(5.0)
    assert len(harness.shown) > 3
