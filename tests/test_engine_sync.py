"""Switching the sync source at run time (/sideman/sync), on a fake clock: no note left sounding, the tempo carried on."""

import pytest

from sideman.clockfollow import ClockUpdate, FollowAction
from sideman.commands import ClockMessage, SetSync, SetTempo, Start, Stop
from sideman.errors import InvalidInputError, SettingsError
from tests.test_engine import NOTES_BUNDLE, Harness, assert_every_note_released

PULSES_PER_BEAT = 24
POLL_SECONDS = 0.02


class FakeLink:
    """A Link session on the engine's clock: a fixed tempo and a beat grid whose beat 0 is at `origin`."""

    def __init__(self, bpm: float, origin: float = -1.37, start_stop_sync: bool = False):
        self.bpm = bpm
        self.origin = origin
        self.start_stop_sync = start_stop_sync
        self.peers = 1
        self.started = False
        self.closed = 0
        self.proposed_tempos: list[float] = []
        self.proposed_transport: list[bool] = []
        self.last_check = 0.0

    def beat_at(self, time: float) -> float:
        return (time - self.origin) * self.bpm / 60.0

    def time_at(self, beat: float) -> float:
        return self.origin + beat * 60.0 / self.bpm

    def deadline(self) -> float:
        return self.last_check + POLL_SECONDS

    def check(self, now: float) -> ClockUpdate:
        self.last_check = now
        if self.start_stop_sync or self.started:
            return ClockUpdate(FollowAction.NONE, self.beat_at(now), now)
        self.started = True
        return ClockUpdate(FollowAction.START, self.beat_at(now), now)

    def propose_tempo(self, bpm: float) -> None:
        self.proposed_tempos.append(bpm)

    def propose_transport(self, playing: bool) -> None:
        self.proposed_transport.append(playing)

    def close(self) -> None:
        self.closed += 1


class SyncHarness(Harness):
    def __init__(self, **options):
        self.links: list[FakeLink] = []
        options.setdefault("link_factory", self._new_link)
        super().__init__(seed=4, bundle=NOTES_BUNDLE, tempo=120.0, **options)

    def _new_link(self, bpm: float, beats_per_bar: float) -> FakeLink:
        link = FakeLink(132.0)
        self.links.append(link)
        return link

    def switch(self, source: str) -> None:
        self.engine.apply([SetSync(source)])
        self.engine.run_for(0.0)

    def note_ons_between(self, start: float, end: float) -> int:
        return sum(1 for time, message in self.output.events if message.type == "note_on" and start <= time < end)

    def messages(self, kind: str) -> list[float]:
        return [time for time, message in self.output.events if message.type == kind]


def test_internal_to_master_and_back():
    harness = SyncHarness()
    harness.engine.run_until(2.0)
    harness.switch("master")
    harness.engine.run_until(4.0)

    assert harness.engine.status()["sync"] == "master"
    assert harness.messages("songpos")
    assert harness.messages("continue")
    # From the current beat rounded up to a sixteenth note: 6 pulses at most are left out.
    pulses = harness.messages("clock")
    assert 4 * PULSES_PER_BEAT - 6 <= len(pulses) <= 4 * PULSES_PER_BEAT

    harness.switch("internal")
    harness.engine.run_until(6.0)
    assert harness.messages("stop")
    assert len(harness.messages("clock")) == len(pulses)
    assert harness.note_ons_between(4.0, 6.0) > 0

    harness.engine.shutdown()
    assert_every_note_released(harness.output.events)


def test_switch_to_midi_in_stops_until_start():
    harness = SyncHarness()
    harness.engine.run_until(2.0)
    harness.switch("midi-in")
    switched_at = harness.clock.now()
    harness.engine.run_until(3.0)

    assert harness.engine.status()["sync"] == "midi-in"
    assert harness.engine.status()["running"] == 0
    assert harness.note_ons_between(switched_at + 1e-9, 3.0) == 0
    assert_every_note_released(harness.output.events)

    harness.engine.apply([ClockMessage("start", 3.0)])
    spacing = 60.0 / 100.0 / PULSES_PER_BEAT
    for index in range(4 * PULSES_PER_BEAT):
        time = 3.01 + index * spacing
        harness.engine.run_until(time)
        harness.engine.apply([ClockMessage("clock", time)])
    harness.engine.run_until(3.01 + 4 * PULSES_PER_BEAT * spacing)

    assert harness.note_ons_between(3.0, 6.0) > 0
    assert harness.engine.status()["clock_bpm"] == pytest.approx(100.0, rel=1e-3)
    harness.engine.shutdown()
    assert_every_note_released(harness.output.events)


def test_midi_in_to_internal_keeps_tempo():
    harness = SyncHarness(sync="midi-in", autoplay=False)
    harness.engine.apply([ClockMessage("start", 0.0)])
    spacing = 60.0 / 90.0 / PULSES_PER_BEAT
    for index in range(4 * PULSES_PER_BEAT):
        time = 0.01 + index * spacing
        harness.engine.run_until(time)
        harness.engine.apply([ClockMessage("clock", time)])

    harness.switch("internal")
    harness.engine.run_until(8.0)

    status = harness.engine.status()
    assert status["sync"] == "internal"
    assert status["running"] == 1
    assert status["tempo"] == pytest.approx(90.0, rel=1e-3)
    assert harness.note_ons_between(4.0, 8.0) > 0
    harness.engine.shutdown()
    assert_every_note_released(harness.output.events)


def test_master_to_midi_in_sends_stop_and_releases():
    harness = SyncHarness(sync="master")
    harness.engine.run_until(2.0)
    harness.switch("midi-in")
    harness.engine.run_until(3.0)

    assert harness.messages("stop")
    assert max(harness.messages("clock")) <= 2.0
    assert_every_note_released(harness.output.events)


def test_tempo_while_following_is_rejected():
    harness = SyncHarness(sync="midi-in", autoplay=False)

    with pytest.raises(InvalidInputError, match="MIDI clock"):
        harness.engine.apply([SetTempo(140.0)])


@pytest.mark.parametrize(("options", "source", "message"), [
    ({}, "midi", "invalid sync source"),
    ({}, 3, "invalid sync source"),
    ({"clock_input": False}, "midi-in", "needs a MIDI input"),
    ({"link_factory": None}, "link", "aalink"),
])
def test_invalid_switch_is_rejected(options, source, message):
    harness = SyncHarness(**options)

    with pytest.raises(InvalidInputError, match=message):
        harness.engine.apply([SetSync(source)])

    assert harness.engine.status()["sync"] == "internal"


def test_sync_link_without_aalink_stops_start_up():
    with pytest.raises(SettingsError, match="aalink"):
        SyncHarness(sync="link", link_factory=None)


def test_link_plays_on_session_grid():
    harness = SyncHarness()
    harness.engine.run_until(1.0)
    harness.switch("link")
    harness.engine.run_until(4.0)

    link = harness.links[0]
    status = harness.engine.status()
    assert status["sync"] == "link"
    assert status["clock_bpm"] == pytest.approx(132.0)
    assert status["link_peers"] == 1
    assert status["tempo"] == pytest.approx(132.0)

    # Onsets after the switch fall on the session's sixteenth-note grid at its tempo.
    onsets = [time for time in harness.messages("note_on") if time > 1.1]
    assert onsets
    for time in onsets:
        position = link.beat_at(time) * 12
        assert position == pytest.approx(round(position), abs=1e-6)

    harness.engine.apply([SetTempo(150.0)])
    harness.engine.run_for(0.0)
    assert link.proposed_tempos == [150.0]

    harness.switch("internal")
    assert link.closed == 1
    harness.engine.shutdown()
    assert_every_note_released(harness.output.events)


def test_link_start_stop_sync_proposes_transport():
    harness = SyncHarness(autoplay=False, link_factory=lambda bpm, bar: FakeLink(bpm, start_stop_sync=True))
    harness.switch("link")

    harness.engine.apply([Start()])
    harness.engine.run_for(0.5)
    harness.engine.apply([Stop()])
    harness.engine.run_for(0.0)

    link = harness.engine._link
    assert link.proposed_transport == [True, False]
    assert harness.engine.status()["running"] == 0
