"""Bad bytes at the MIDI input: the daemon keeps playing, the live mode stays consistent, every note_on gets its note_off.

Most tests feed raw byte lists into MidiInput's rtmidi callback, which
passes them through the InputRouter into a real Engine on a FakeClock in a
live mode. The `ports` tests send them through a private JACK server into a
`sideman run` process.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections import Counter

import mido
import pytest

from sideman.clock import FakeClock
from sideman.encoding import Token
from sideman.engine import DEFAULT_REGISTRY, DEFAULT_SEEDERS, MAX_DROPPABLE_BACKLOG, START_MARGIN, Engine
from sideman.improviser import Improviser
from sideman.inputrouter import MAX_LIVE_NOTE_RATE, InputRouter
from sideman.live import MAX_PHRASE_TOKENS, LiveOptions, LiveSession
from sideman.midiinput import MAX_LOGGED_BYTES, EventParser, MidiInput
from sideman.plugins.live import LiveInput
from sideman.sampling import build_chain
from sideman.sharedoutput import SharedOutput
from tests.factories import random_bundle
from tests.live import LiveDaemon
from tests.test_engine import FakeOutput
from tests.test_live import model  # noqa: F401 (the fixture: a small random model saved as a bundle)
from tests.test_midiinput import FakeRtMidiIn

BUNDLE = random_bundle(scale=2.0)
MAX_HOLD_BEATS = BUNDLE.encoding.max_beats  # the live line's default cap on a held key
BPM = 120.0
SECONDS_PER_BEAT = 60.0 / BPM
BEATS_PER_BAR = 4.0
ORIGIN = START_MARGIN  # autoplay sounds beat 0 this many seconds after time 0

NOTE_ON = 0x90
NOTE_OFF = 0x80
CLOCK = 0xF8
ACTIVE_SENSING = 0xFE

# E4 F#4 G#4 B4, one beat each in bar 2 (beats 4-8), held 0.9 beats: answered at beat 12 for one bar.
CALL = [(64, 4.0), (66, 5.0), (68, 6.0), (71, 7.0)]
HOLD = 0.9
FIRST_ANSWER = (12.0, 16.0)
# The same call four bars later is answered at beat 28.
SECOND_CALL_OFFSET = 16.0
SECOND_ANSWER = (28.0, 32.0)


def time_of(beat: float) -> float:
    return ORIGIN + beat * SECONDS_PER_BEAT


class CountingEngine:
    """The engine behind the router, counting the batches it queued or dropped, and the maximum queued while it did not run."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self.queued = 0
        self.dropped = 0
        self.queued_since_run = 0
        self.max_queued_since_run = 0

    def apply(self, commands, *, droppable: bool = False) -> bool:
        queued = self._engine.apply(commands, droppable=droppable)
        if queued:
            self.queued += 1
            self.queued_since_run += 1
            self.max_queued_since_run = max(self.max_queued_since_run, self.queued_since_run)
        else:
            self.dropped += 1
        return queued

    def __getattr__(self, name: str):
        return getattr(self._engine, name)


class Rig:
    """MidiInput on a fake rtmidi port, the InputRouter, and an engine in a live mode on a fake clock."""

    def __init__(self, mode: str = "call-and-response", seed: int = 3, **live_values):
        self.clock = FakeClock()
        self.port = FakeOutput(self.clock)
        self.output = SharedOutput(self.port, self.clock)
        improviser = Improviser(BUNDLE, build_chain(("temperature",), DEFAULT_REGISTRY, {}), seed)
        self.engine = Engine(
            improviser, self.output, self.clock, tempo=BPM, registry=DEFAULT_REGISTRY, seeders=DEFAULT_SEEDERS,
            seeder=LiveInput(mode=mode, **live_values),
        )
        self.counting = CountingEngine(self.engine)
        self.router = InputRouter(self.counting, self.output, self.clock)
        self.rtmidi = FakeRtMidiIn()
        self.midi_input = MidiInput(self.rtmidi, "sideman-in:in", "alsa", self.router, clock=self.clock.now)

    def run_to_beat(self, beat: float) -> None:
        self.engine.run_until(time_of(beat))
        self.counting.queued_since_run = 0

    def send(self, data: list[int]) -> None:
        """Deliver one rtmidi event now, then let the engine apply what it queued."""
        self.rtmidi.deliver(list(data))
        self.run_to_beat(0.0)

    def play(self, events: list[tuple[float, list[int]]]) -> None:
        """Deliver (beat, bytes) events in the order of their beats, running the engine in between."""
        for beat, data in sorted(events, key=lambda event: event[0]):
            self.run_to_beat(beat)
            self.send(data)

    def note_ons(self, start_beat: float, end_beat: float) -> list[tuple[float, int]]:
        """(beat, pitch) of sideman's note_ons from `start_beat` up to `end_beat`."""
        return [
            (round((moment - ORIGIN) / SECONDS_PER_BEAT, 6), message.note)
            for moment, message in self.port.events
            if message.type == "note_on" and message.velocity > 0 and start_beat - 1e-9 <= (moment - ORIGIN) / SECONDS_PER_BEAT < end_beat
        ]

    def status(self) -> dict:
        return self.engine.status()


def note_balance(events) -> dict[tuple[int, int], int]:
    """Return {(channel, pitch): note_ons without a note_off}; empty when every note_on got its note_off.

    A note_on with velocity 0 counts as a note_off. A note_off with no
    note_on sounding counts for nothing.
    """
    sounding: Counter[tuple[int, int]] = Counter()
    for _, message in events:
        if message.type not in ("note_on", "note_off"):
            continue
        key = (message.channel, message.note)
        if message.type == "note_on" and message.velocity > 0:
            sounding[key] += 1
        elif sounding[key] > 0:
            sounding[key] -= 1
    return {key: count for key, count in sounding.items() if count > 0}


def repeated_note_ons(events) -> list[tuple[int, int]]:
    """Return the (channel, pitch) of every note_on sent while the same pitch still sounded on that channel."""
    sounding: set[tuple[int, int]] = set()
    repeated = []
    for _, message in events:
        if message.type not in ("note_on", "note_off"):
            continue
        key = (message.channel, message.note)
        if message.type == "note_on" and message.velocity > 0:
            if key in sounding:
                repeated.append(key)
            sounding.add(key)
        else:
            sounding.discard(key)
    return repeated


def assert_balanced_after_shutdown(rig: Rig) -> None:
    rig.engine.shutdown()
    assert rig.engine.failure is None
    assert note_balance(rig.port.events) == {}
    assert repeated_note_ons(rig.port.events) == []


def call_events(call=CALL, offset: float = 0.0, release=lambda pitch: [NOTE_OFF, pitch, 64]) -> list[tuple[float, list[int]]]:
    """The (beat, bytes) events of a call: each note's note_on, and its release as `release(pitch)` gives it."""
    events = []
    for pitch, onset in call:
        events.append((onset + offset, [NOTE_ON, pitch, 100]))
        events.append((onset + offset + HOLD, release(pitch)))
    return events


def assert_second_call_answered(rig: Rig) -> None:
    """A clean call after the bad input is answered on time, so no key is left held and the session listens again."""
    answers_before = rig.status()["answers"]
    rig.play(call_events(offset=SECOND_CALL_OFFSET))
    rig.run_to_beat(SECOND_ANSWER[1] + 4.0)

    status = rig.status()
    assert status["answers"] == answers_before + 1
    assert status["answer_beat"] == SECOND_ANSWER[0]
    assert status["answer_beats"] == BEATS_PER_BAR
    assert status["listening"] == 1
    assert status["running"] == 1
    assert rig.note_ons(*SECOND_ANSWER)


def reference_answer() -> list[tuple[float, int]]:
    rig = Rig()
    rig.play(call_events())
    rig.run_to_beat(FIRST_ANSWER[1] + 4.0)
    answer = rig.note_ons(*FIRST_ANSWER)
    assert answer, "the clean call got no answer"
    return answer


REFERENCE_ANSWER = reference_answer()


# --- Bad input that must change nothing that sideman plays ---------------------

def between_notes(*events: list[int]) -> list[tuple[float, list[int]]]:
    """Events at beats where no key of CALL changes: before, between and after its notes."""
    beats = [0.5, 4.5, 5.95, 7.95, 9.0]
    return [(beats[index % len(beats)], data) for index, data in enumerate(events)]


def with_realtime(pitch: int) -> list[int]:
    return [NOTE_ON, CLOCK, pitch, ACTIVE_SENSING, 100]


def running_status_call() -> list[tuple[float, list[int]]]:
    # One status byte, then every note_on and release (velocity 0) as data bytes only.
    events = []
    for index, (pitch, onset) in enumerate(CALL):
        events.append((onset, [NOTE_ON, pitch, 100] if index == 0 else [pitch, 100]))
        events.append((onset + HOLD, [pitch, 0]))
    return events


def clock_pulses(start: float, end: float) -> list[tuple[float, list[int]]]:
    pulses = [(start + index / 24, [CLOCK]) for index in range(int((end - start) * 24))]
    return pulses + [(start + 0.01, [0xFB]), (end - 0.5, [0xFC]), (end - 0.4, [0xF2, 0, 1])]


# (scenario, events, expected malformed count, expected ignored count)
TRANSPARENT = [
    ("sysex-no-payload", call_events() + between_notes([0xF0, 0xF7]), 0, 1),
    ("sysex-64-kib", call_events() + between_notes([0xF0, *[0x11] * 65536, 0xF7], [0xF0, *[0x7F] * 127, 0xF7]), 0, 2),
    ("sysex-unterminated", call_events() + between_notes([0xF0, 1, 2], [3, 4, 0xF7], [0xF0, *[0x22] * 65536], [0xF0]), 4, 0),
    ("sysex-with-clock-inside", call_events() + between_notes([0xF0, 1, CLOCK, 2, 0xF7]), 0, 1),
    ("running-status", running_status_call(), 0, 0),
    ("velocity-zero-release", call_events(release=lambda pitch: [NOTE_ON, pitch, 0]), 0, 0),
    ("realtime-between-data-bytes", [(beat, with_realtime(data[1]) if data[0] == NOTE_ON else data) for beat, data in call_events()], 0, 4),
    ("note-off-without-note-on", call_events() + between_notes([NOTE_OFF, 50, 0], [NOTE_ON, 51, 0], [NOTE_OFF, 64, 0], [0x83, 66, 0]), 0, 0),
    ("out-of-range-data", call_events() + between_notes([NOTE_ON, 200, 100], [NOTE_ON, 60, 128], [NOTE_ON, 300, 1], [NOTE_ON, -5, 1], [0xB0, 7, 999]), 5, 0),
    ("clock-without-start", call_events() + clock_pulses(0.0, 10.0), 0, 0),
    ("undefined-status", call_events() + between_notes([0xF4], [0xF5, 64, 100], [0xFD], [0xF9], [0xF4, 1], [60, 100]), 6, 0),
]


@pytest.mark.parametrize("events, malformed, ignored", [pytest.param(*case[1:], id=case[0]) for case in TRANSPARENT])
def test_bad_input_leaves_answer_unchanged(events, malformed, ignored):
    rig = Rig()

    rig.play(events)
    rig.run_to_beat(FIRST_ANSWER[1] + 4.0)

    assert rig.note_ons(0.0, FIRST_ANSWER[0]) == [], "sideman played while it should listen"
    assert rig.note_ons(*FIRST_ANSWER) == REFERENCE_ANSWER
    status = rig.status()
    assert status["answers"] == 1
    assert status["answer_beat"] == FIRST_ANSWER[0]
    assert status["live_notes"] == len(CALL)
    assert status["running"] == 1
    assert rig.midi_input.malformed == malformed
    assert rig.midi_input.ignored == ignored
    assert rig.midi_input.handler_errors == 0

    assert_second_call_answered(rig)
    assert_balanced_after_shutdown(rig)


def test_clock_without_start_moves_no_transport():
    rig = Rig(mode="duet")
    rig.run_to_beat(4.0)
    playing_before = rig.note_ons(0.0, 4.0)

    rig.play(clock_pulses(4.0, 12.0))
    rig.run_to_beat(16.0)

    status = rig.status()
    assert playing_before
    assert rig.note_ons(4.0, 16.0), "the line stopped during the clock pulses"
    assert status["tempo"] == BPM
    assert status["sync"] == "internal"
    assert status["running"] == 1
    assert_balanced_after_shutdown(rig)


# --- Keys never released --------------------------------------------------------


def test_key_held_forever_is_released_by_line():
    rig = Rig(thru=True)

    # E4 goes down at beat 4 and its note_off never comes.
    rig.play([(4.0, [NOTE_ON, 64, 100])])
    # The line releases it after MAX_HOLD_BEATS, at beat 12. More than a bar has passed since
    # the note_on, so the phrase ends at once and the answer starts at that bar line.
    answer_at = 4.0 + MAX_HOLD_BEATS
    rig.run_to_beat(answer_at + 2 * BEATS_PER_BAR)

    status = rig.status()
    assert status["answers"] == 1
    assert status["answer_beat"] == answer_at
    assert rig.note_ons(answer_at, answer_at + BEATS_PER_BAR)
    assert rig.note_ons(0.0, answer_at) == [(4.0, 64)]  # only the note passed through by MIDI thru
    assert status["running"] == 1

    # The key is still down at the keyboard; the next call is answered all the same.
    assert_second_call_answered(rig)
    assert_balanced_after_shutdown(rig)


def test_keys_held_forever_in_duet_keep_line_playing():
    rig = Rig(mode="duet")

    rig.play([(2.0 + index, [NOTE_ON, 60 + index, 90]) for index in range(6)])
    rig.run_to_beat(40.0)

    # Sideman's line plays on through the held keys and after the line released them.
    assert rig.note_ons(2.0, 10.0)
    assert rig.note_ons(20.0, 40.0)
    status = rig.status()
    assert status["running"] == 1
    assert status["live_notes"] == 6
    assert_balanced_after_shutdown(rig)


def test_release_after_line_released_key_is_expected(caplog):
    rig = Rig()
    rig.play([(4.0, [NOTE_ON, 64, 100])])
    rig.run_to_beat(4.0 + MAX_HOLD_BEATS + 1.0)

    with caplog.at_level(logging.DEBUG, logger="sideman.liveline"):
        rig.play([(4.0 + MAX_HOLD_BEATS + 1.5, [NOTE_OFF, 64, 0])])

    messages = [record.getMessage() for record in caplog.records if record.name == "sideman.liveline"]
    assert "note_off of pitch 64, already counted as released" in messages
    assert not any("ignored note_off" in message for message in messages)
    assert_balanced_after_shutdown(rig)


def test_endless_phrase_keeps_bounded_tokens():
    session = LiveSession(LiveOptions(mode="duet"), BUNDLE.encoding, BEATS_PER_BAR)

    # 2,000 notes a sixteenth apart: the phrase never pauses long enough to end.
    for index in range(2000):
        beat = index * 0.25
        session.note_on(60 + index % 12, beat)
        session.note_off(60 + index % 12, beat + 0.2)

    assert len(session.phrase_tokens) == MAX_PHRASE_TOKENS
    assert all(isinstance(token, Token) and token.pitch is not None for token in session.phrase_tokens[-8:])
    assert session.notes == 2000


# --- A flood ---------------------------------------------------------------------

FLOOD_RATE = 10_000  # messages a second
FLOOD_SECONDS = 3.0
FLOOD_START_BEAT = 20.0
# The engine does not run for this long after the flood starts, as on a stalled machine, so its queue fills up.
ENGINE_STALL = 0.2  # seconds
ENGINE_STEP = 0.005  # seconds of fake time between two runs of the engine during the flood


def flood_event(rng: random.Random) -> list[int]:
    """One random event of a flood: mostly notes, with clock, running status, SysEx and garbage among them."""
    roll = rng.random()
    pitch = rng.randrange(36, 96)
    if roll < 0.35:
        return [NOTE_ON | rng.randrange(2), pitch, rng.randrange(1, 128)]
    if roll < 0.6:
        return [rng.choice((NOTE_OFF, NOTE_ON)) | rng.randrange(2), pitch, 0]
    if roll < 0.7:
        return [pitch, rng.randrange(128)]  # running status
    if roll < 0.8:
        return [CLOCK]
    if roll < 0.85:
        return [0xF0, *[rng.randrange(128) for _ in range(rng.randrange(64))], 0xF7]
    if roll < 0.9:
        return [0xB0, rng.randrange(128), rng.randrange(128)]
    return [rng.randrange(256) for _ in range(rng.randrange(1, 5))]


@pytest.mark.parametrize("mode", ["duet", "call-and-response"])
def test_flood_is_bounded_and_play_continues(mode, caplog):
    caplog.set_level(logging.ERROR, logger="sideman.liveline")  # thousands of ignored note_offs
    rig = Rig(mode=mode)
    rig.run_to_beat(FLOOD_START_BEAT)
    rng = random.Random(7)
    flood_start = rig.clock.now()

    messages = int(FLOOD_RATE * FLOOD_SECONDS)
    for index in range(messages):
        rig.clock.advance(1.0 / FLOOD_RATE)
        rig.rtmidi.deliver(flood_event(rng))
        elapsed = rig.clock.now() - flood_start
        if elapsed >= ENGINE_STALL and index % int(FLOOD_RATE * ENGINE_STEP) == 0:
            rig.engine.run_until(rig.clock.now())
            rig.counting.queued_since_run = 0
    flood_end_beat = (rig.clock.now() - ORIGIN) / SECONDS_PER_BEAT
    rig.run_to_beat(flood_end_beat + 6 * BEATS_PER_BAR)

    # Each message the router sent on was queued or dropped by the engine's backlog, or the router dropped it over the rate limit.
    counting = rig.counting
    notes_and_clock = rig.midi_input.received
    assert counting.dropped > 0, "the stalled engine's backlog never filled"
    assert rig.engine.dropped_batches == counting.dropped
    assert rig.status()["input_dropped"] == counting.dropped
    assert rig.router.rate_limited > 0
    assert counting.queued + counting.dropped + rig.router.rate_limited <= notes_and_clock
    assert counting.max_queued_since_run <= MAX_DROPPABLE_BACKLOG
    # About MAX_LIVE_NOTE_RATE note_ons a second reach the engine, plus their releases, plus one second's burst.
    assert counting.queued <= 2 * MAX_LIVE_NOTE_RATE * (FLOOD_SECONDS + 1)
    assert rig.midi_input.malformed > 0
    assert rig.midi_input.handler_errors == 0

    status = rig.status()
    assert status["running"] == 1
    if mode == "duet":
        assert rig.note_ons(FLOOD_START_BEAT, flood_end_beat), "the line stopped during the flood"
        assert rig.note_ons(flood_end_beat, flood_end_beat + 6 * BEATS_PER_BAR)
    else:
        # The flood was one long call; the answer came after it, and the session listens again.
        assert status["answers"] >= 1
        assert status["answer_beat"] >= flood_end_beat
        assert rig.note_ons(flood_end_beat, flood_end_beat + 6 * BEATS_PER_BAR)
        assert status["listening"] == 1
    assert_balanced_after_shutdown(rig)


def test_release_of_fed_key_passes_rate_limit():
    rig = Rig()
    rig.run_to_beat(4.0)

    # One second's burst of note_ons uses the whole budget; their releases still reach the engine.
    pitches = [36 + index % 60 for index in range(int(MAX_LIVE_NOTE_RATE))]
    for pitch in pitches:
        rig.send([NOTE_ON, pitch, 100])
        rig.send([NOTE_OFF, pitch, 0])
    over_budget = rig.counting.queued
    rig.send([NOTE_ON, 100, 100])

    assert over_budget == 2 * len(pitches)
    assert rig.counting.queued == over_budget
    assert rig.router.rate_limited == 1
    rig.run_to_beat(30.0)
    assert rig.status()["answers"] == 1
    assert_balanced_after_shutdown(rig)


# --- The parser on its own ---------------------------------------------------------


def deliver_all(events: list[list[int]]) -> tuple[MidiInput, list[mido.Message]]:
    received: list[mido.Message] = []
    port = FakeRtMidiIn()
    midi_input = MidiInput(port, "sideman-in:in", "alsa", received.append, clock=FakeClock().now)
    for data in events:
        port.deliver(data, delta=0.25)
    return midi_input, received


def test_realtime_bytes_go_first_with_event_time():
    _, received = deliver_all([[NOTE_ON, CLOCK, 60, 0xFA, 100]])

    assert [message.bytes() for message in received] == [[CLOCK], [0xFA], [NOTE_ON, 60, 100]]
    assert [message.time for message in received] == [0.25, 0.0, 0.0]


def test_running_status_continues_across_events():
    midi_input, received = deliver_all([[0xB2, 7, 100], [10, 64], [0xE0, 0, 64], [1, 2, 3, 4]])

    assert [message.bytes() for message in received] == [[0xB2, 7, 100], [0xB2, 10, 64], [0xE0, 0, 64], [0xE0, 1, 2], [0xE0, 3, 4]]
    assert midi_input.malformed == 0


@pytest.mark.parametrize(
    "clearing",
    [
        pytest.param([0xF0, 1, 0xF7], id="sysex"),
        pytest.param([0xF2, 0, 0], id="system-common"),
        pytest.param([NOTE_ON, 60], id="invalid-event"),
    ],
)
def test_running_status_cleared(clearing):
    midi_input, received = deliver_all([[NOTE_ON, 60, 100], clearing, [62, 100]])

    assert [62, 100] not in [message.bytes()[1:] for message in received]
    assert received[0].bytes() == [NOTE_ON, 60, 100]
    assert midi_input.malformed == (2 if clearing == [NOTE_ON, 60] else 1)


def test_realtime_keeps_running_status():
    _, received = deliver_all([[NOTE_ON, 60, 100], [CLOCK], [62, 100]])

    assert [message.bytes() for message in received] == [[NOTE_ON, 60, 100], [CLOCK], [NOTE_ON, 62, 100]]


def test_invalid_event_passes_nothing_on():
    midi_input, received = deliver_all([[NOTE_ON, 60, 100, NOTE_OFF, 60]])

    assert received == []
    assert midi_input.malformed == 1


def test_parser_names_the_fault():
    parser = EventParser()
    cases = {
        b"\x90\xc8\x01": "note_on needs 2 data bytes, but status byte C8 follows after 0",
        b"\x90\x3c": "note_on needs 2 data bytes, but the event ends after 1",
        b"\x3c\x40": "data byte 3C without a status byte, and no running status to continue",
        b"\xf0\x01\x02": "SysEx without its end byte F7: the end of the event follows its data",
        b"\xf0\x01\x90\x3c\x40\xf7": "SysEx without its end byte F7: status byte 90 follows its data",
        b"\xf7": "SysEx end byte F7 without a SysEx start F0",
        b"\xf4": "undefined status byte F4",
        b"\xf2\x01": "songpos needs 2 data bytes, but it has 1",
    }
    for data, expected in cases.items():
        with pytest.raises(ValueError) as raised:
            parser.split(data)
        assert expected in str(raised.value)


def test_long_malformed_event_logged_short(caplog):
    deliver_all([[0xF0, *[0x11] * 65536]])

    [record] = [record for record in caplog.records if record.levelno == logging.WARNING]
    message = record.getMessage()
    assert " ".join(["F0"] + ["11"] * (MAX_LOGGED_BYTES - 1)) + " ... (65537 bytes)" in message
    assert len(message) < 400


# --- Through a private JACK server ----------------------------------------------


class RawBytes:
    """Bytes for tests.jack.Sender.send, which sends `message.bytes()`: lets a test send what no mido.Message holds."""

    def __init__(self, *data: int):
        self.data = list(data)

    def bytes(self) -> list[int]:
        return self.data


def jack_call(pitch_offset: int = 0) -> list[RawBytes]:
    """A call whose releases use running status, with a clock pulse in the middle of each note_on."""
    messages = []
    for pitch, _ in CALL:
        messages.append(RawBytes(NOTE_ON, CLOCK, pitch + pitch_offset))  # cut short by the pulse: malformed
        messages.append(RawBytes(NOTE_ON, pitch + pitch_offset, 100))
        messages.append(RawBytes(pitch + pitch_offset, 0))  # running status, velocity 0
    return messages


JACK_GARBAGE = [
    RawBytes(0xF0, 0xF7),
    RawBytes(0xF0, *[0x11] * 1000, 0xF7),
    RawBytes(0xF4), RawBytes(0xF5), RawBytes(0xFD), RawBytes(0xF9),
    RawBytes(NOTE_ON, 200, 100),
    RawBytes(NOTE_OFF, 50, 0), RawBytes(NOTE_ON, 51, 0),
    RawBytes(CLOCK), RawBytes(ACTIVE_SENSING), RawBytes(0xFC),
]


# The 8 note_ons cut short by a pulse, F4, F5, FD, F9 and the note_on with data byte C8.
# The SysEx and active sensing never reach sideman's parser: RtMidi filters them.
JACK_MALFORMED = 13


def live_daemon_status(daemon, key: str, expected, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    status = daemon.status()
    while status[key] != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        status = daemon.status()
    return status


@pytest.mark.ports
def test_jack_bad_bytes_then_call_answered(tmp_path, model, own_jack_server):
    arguments = ("--model", model, "--tempo", "240", "--seeder", "live", "--sampler", "temperature")
    with LiveDaemon(tmp_path, *arguments) as daemon, daemon.connect_sender("sideman-in:in") as keyboard:
        for message in JACK_GARBAGE:
            keyboard.send(message)
        for message in jack_call():
            keyboard.send(message)
            time.sleep(0.05)

        status = live_daemon_status(daemon, "answers", 1)
        assert status["answers"] == 1
        assert status["live_notes"] == len(CALL)
        assert status["running"] == 1
        daemon.receiver.wait_for(lambda messages: any(m.type == "note_on" and m.velocity > 0 for m in messages), timeout=10.0)
        # One bar at 240 BPM is 1 s: the answer is over, so the next call is answered again.
        time.sleep(2.0)
        for message in jack_call(pitch_offset=-5):
            keyboard.send(message)
            time.sleep(0.05)
        status = live_daemon_status(daemon, "answers", 2)
        assert status["answers"] == 2
        assert status["live_notes"] == 2 * len(CALL)
        assert status["input_malformed"] == JACK_MALFORMED
        assert status["input_handler_errors"] == 0

        daemon.stop_process()
        assert daemon.receiver.balance() == {}
        log = daemon.log()
        assert re.search(rf"closed MIDI input sideman-in:in \(jack\): \d+ messages received, {JACK_MALFORMED} malformed, 0 handler errors", log)
        assert "Traceback" not in log


JACK_FLOOD_RATE = FLOOD_RATE


@pytest.mark.ports
def test_jack_flood_keeps_line_playing(tmp_path, model, own_jack_server):
    arguments = ("--model", model, "--tempo", "120", "--seeder", "live", "--param", "live.mode=duet", "--sampler", "temperature")
    with LiveDaemon(tmp_path, *arguments) as daemon, daemon.connect_sender("sideman-in:in") as keyboard:
        daemon.wait_for_notes(2, timeout=10.0)
        rng = random.Random(11)
        # The daemon's own count: the receiver shares this process's time with the flood loop and may lag.
        notes_before = daemon.status()["notes"]

        # Up to JACK_FLOOD_RATE messages a second for 2 s: fewer where sending is slower on a busy machine.
        start = time.perf_counter()
        sent = 0
        while (elapsed := time.perf_counter() - start) < 2.0:
            if sent < elapsed * JACK_FLOOD_RATE:
                pitch = rng.randrange(36, 96)
                keyboard.send(mido.Message("note_on", note=pitch, velocity=rng.randrange(128)))
                sent += 1
            else:
                time.sleep(0.0005)
        status = daemon.status()
        during = status["notes"] - notes_before
        assert status["running"] == 1
        # 2 s at 120 BPM is 4 beats: sideman's own line went on during the flood.
        assert during >= 1, "sideman's line stopped during the flood"
        assert status["input_received"] > 0
        assert status["input_rate_limited"] > 0
        after = len(daemon.receiver.note_ons())
        daemon.wait_for_notes(after + 2, timeout=10.0)

        daemon.stop_process()
        assert daemon.receiver.balance() == {}
        log = daemon.log()
        assert "over the rate limit" in log
        assert "Traceback" not in log


@pytest.mark.ports
@pytest.mark.xfail(strict=True, reason="RtMidi's JACK backend takes every event after a SysEx without F7 for part of it until an event ends with F7")
def test_jack_note_after_unterminated_sysex_arrives(tmp_path, model):
    arguments = ("--model", model, "--seeder", "live")
    with LiveDaemon(tmp_path, *arguments) as daemon, daemon.connect_sender("sideman-in:in") as keyboard:
        keyboard.send(RawBytes(0xF0, 1, 2))
        keyboard.send(mido.Message("note_on", note=60, velocity=100))
        status = live_daemon_status(daemon, "live_notes", 1, timeout=3.0)
        assert status["live_notes"] == 1
