"""LinkSync against a fake Link session and a fake clock: no network, no sleeps."""

from __future__ import annotations

import logging
import math
import sys
from datetime import timedelta

import pytest

from sideman.clockfollow import FollowAction
from sideman.errors import SettingsError
from sideman.link import (
    BEAT_READS,
    LATE_START_LIMIT,
    LINK_MULTICAST,
    PHASE_TOLERANCE,
    POLL_INTERVAL,
    RELOCATE_THRESHOLD,
    TEMPO_TOLERANCE_BPM,
    LinkSync,
)

CLOCK_START = 1000.0
# The Link clock (CLOCK_MONOTONIC_RAW on Linux) minus the engine's clock, as measured on one machine.
LINK_CLOCK_OFFSET = -0.1744
BEAT_TOLERANCE = 1e-6


class FakeClock:
    """The engine's clock: it moves when a test advances it, and by `tick` seconds around every read.

    A read returns the middle of its tick, so that a reading of the session
    between two clock reads lies exactly at the midpoint of their results.
    `stalls` maps a read's number (from 0) to extra seconds that pass after
    it, as when the thread is preempted.
    """

    def __init__(self, start: float = CLOCK_START, tick: float = 0.0):
        self.time = start
        self.tick = tick
        self.reads = 0
        self.stalls: dict[int, float] = {}

    def __call__(self) -> float:
        now = self.time + self.tick / 2.0
        self.time += self.tick + self.stalls.get(self.reads, 0.0)
        self.reads += 1
        return now

    def advance(self, seconds: float) -> float:
        self.time += seconds
        return self.time


class FakeSession:
    """A Link session with aalink.Link's properties, on its own clock: engine clock + offset, running `drift` faster.

    The timeline is a line through (link time, beat) at a tempo. A tempo
    change keeps the beat continuous at the time of the change, as Link does.
    """

    def __init__(self, clock: FakeClock, bpm: float, *, offset: float = LINK_CLOCK_OFFSET, drift: float = 0.0, beat: float = 0.0):
        self._clock = clock
        self._offset = offset
        self._drift = drift
        self._tempo = float(bpm)
        self._origin_time = self._link_now()
        self._origin_beat = float(beat)
        self.quantum = 1.0
        self.enabled = False
        self.start_stop_sync_enabled = False
        self.playing = False
        self.num_peers = 0
        self.tempo_sets: list[float] = []

    def _link_now(self) -> float:
        return self._offset + self._clock.time * (1.0 + self._drift)

    def link_time_of(self, engine_time: float) -> float:
        return self._offset + engine_time * (1.0 + self._drift)

    def beat_at_engine_time(self, engine_time: float) -> float:
        return self._origin_beat + (self.link_time_of(engine_time) - self._origin_time) * self._tempo / 60.0

    @property
    def time(self) -> timedelta:
        return timedelta(seconds=self._link_now())

    @property
    def beat(self) -> float:
        return self.beat_at_engine_time(self._clock.time)

    @property
    def tempo(self) -> float:
        return self._tempo

    @tempo.setter
    def tempo(self, bpm: float) -> None:
        self._origin_beat = self.beat
        self._origin_time = self._link_now()
        self._tempo = float(bpm)
        self.tempo_sets.append(float(bpm))

    def jump(self, beats: float) -> None:
        """Move the beat at once, as when the session realigns on joining another one."""
        self._origin_beat += beats


class Harness:
    def __init__(self, bpm: float = 120.0, beats_per_bar: float = 4.0, start_stop_sync: bool = False, *, tick: float = 0.0, session_beat: float = 0.3, **session_options):
        self.clock = FakeClock(tick=tick)
        self.session = FakeSession(self.clock, bpm, beat=session_beat, **session_options)
        self.created_with: list[float] = []
        self.link = LinkSync(bpm, beats_per_bar, start_stop_sync, clock=self.clock, session_factory=self._factory)

    def _factory(self, bpm: float) -> FakeSession:
        self.created_with.append(bpm)
        return self.session

    def check_after(self, seconds: float):
        return self.link.check(self.clock.advance(seconds))

    def run_until_quiet(self, seconds: float) -> list:
        """Check every POLL_INTERVAL for `seconds`; return the updates other than NONE."""
        updates = []
        for _ in range(round(seconds / POLL_INTERVAL)):
            update = self.check_after(POLL_INTERVAL)
            if update.action is not FollowAction.NONE:
                updates.append(update)
        return updates


@pytest.fixture
def harness() -> Harness:
    harness = Harness()
    harness.link.enable()
    return harness


# Joining and leaving.


def test_enable_sets_quantum_sync_and_enabled():
    harness = Harness(bpm=97.0, beats_per_bar=3.0, start_stop_sync=True)
    assert not harness.session.enabled

    harness.link.enable()

    assert harness.created_with == [97.0]
    assert harness.session.quantum == 3.0
    assert harness.session.start_stop_sync_enabled is True
    assert harness.session.enabled is True
    assert harness.link.enabled


def test_enable_warns_about_the_local_network(caplog):
    harness = Harness()
    with caplog.at_level(logging.INFO, logger="sideman.link"):
        harness.link.enable()

    warnings = [record.getMessage() for record in caplog.records if record.name == "sideman.link" and record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert LINK_MULTICAST in warnings[0]
    assert "local network" in warnings[0]


def test_enable_twice_creates_one_session(harness):
    harness.link.enable()

    assert harness.created_with == [120.0]


def test_close_is_idempotent(harness):
    harness.link.check(harness.clock.time)

    harness.link.close()
    harness.link.close()

    assert harness.session.enabled is False
    assert not harness.link.enabled
    assert harness.link.deadline() is None
    assert harness.link.peers == 0


def test_check_after_close_raises(harness):
    harness.link.close()

    with pytest.raises(RuntimeError, match="enable"):
        harness.link.check(harness.clock.time)


def test_context_manager_joins_and_leaves():
    harness = Harness()

    with harness.link as link:
        assert harness.session.enabled is True
        assert link is harness.link

    assert harness.session.enabled is False


def test_missing_aalink_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "aalink", None)  # makes `import aalink` raise ImportError

    with pytest.raises(SettingsError, match=r"pip install 'sideman\[link\]'") as caught:
        LinkSync(120.0)

    assert isinstance(caught.value.__cause__, ImportError)


@pytest.mark.parametrize("beats_per_bar", [0, -4, float("nan"), True, "4"])
def test_invalid_beats_per_bar_rejected(beats_per_bar):
    with pytest.raises(SettingsError, match="beats per bar"):
        LinkSync(120.0, beats_per_bar, session_factory=lambda bpm: None)


@pytest.mark.parametrize("bpm", [10.0, 500.0, float("inf"), "fast"])
def test_invalid_initial_tempo_rejected(bpm):
    with pytest.raises(SettingsError):
        LinkSync(bpm, session_factory=lambda bpm: None)


# Polling.


def test_deadline_follows_checks(harness):
    enabled_at = harness.clock.time

    assert harness.link.deadline() == pytest.approx(enabled_at)

    now = harness.clock.advance(0.003)
    harness.link.check(now)

    assert harness.link.deadline() == pytest.approx(now + POLL_INTERVAL)


def test_deadline_none_before_enable():
    harness = Harness()

    assert harness.link.deadline() is None


# Transport without start/stop sync.


def test_first_check_starts_on_the_next_bar_line(harness):
    now = harness.clock.advance(0.01)

    update = harness.link.check(now)

    expected_beat = 4.0  # the session is at beat 0.32 now, so the next bar line is beat 4
    assert update.action is FollowAction.START
    assert update.beat == pytest.approx(expected_beat)
    assert harness.session.beat_at_engine_time(update.time) == pytest.approx(expected_beat, abs=BEAT_TOLERANCE)
    assert update.time > now


def test_start_on_a_bar_line_starts_there():
    harness = Harness(session_beat=8.0)
    harness.link.enable()

    update = harness.link.check(harness.clock.time)

    assert update.action is FollowAction.START
    assert update.beat == pytest.approx(8.0)


def test_steady_session_reports_nothing(harness):
    harness.link.check(harness.clock.time)

    updates = harness.run_until_quiet(10.0)

    assert updates == []


def test_propose_transport_without_sync_stops_and_starts_locally(harness):
    harness.link.check(harness.clock.time)

    harness.link.propose_transport(False)
    stop = harness.check_after(POLL_INTERVAL)
    quiet = harness.run_until_quiet(1.0)
    harness.link.propose_transport(True)
    now = harness.clock.advance(POLL_INTERVAL)
    start = harness.link.check(now)

    assert stop.action is FollowAction.STOP
    assert stop.time == pytest.approx(now - 1.0 - POLL_INTERVAL)
    assert quiet == []
    assert harness.session.playing is False  # the session's transport is not touched
    assert harness.link.playing is True
    assert start.action is FollowAction.START
    assert start.beat % 4.0 == pytest.approx(0.0)
    assert start.time >= now
    assert start.beat - harness.session.beat_at_engine_time(now) <= 4.0


def test_propose_transport_before_first_check_stops_play(harness):
    harness.link.propose_transport(False)

    update = harness.link.check(harness.clock.time)

    assert update.action is FollowAction.TEMPO
    assert harness.run_until_quiet(1.0) == []


def test_propose_transport_rejects_non_bool(harness):
    with pytest.raises(SettingsError):
        harness.link.propose_transport("stop")


# Tempo and phase.


def test_peer_tempo_change_reported(harness):
    harness.link.check(harness.clock.time)
    harness.clock.advance(0.5)

    harness.session.tempo = 132.0
    update = harness.check_after(0.005)

    assert update.action is FollowAction.TEMPO
    assert harness.link.bpm == pytest.approx(132.0)
    assert harness.session.beat_at_engine_time(update.time) == pytest.approx(update.beat, abs=BEAT_TOLERANCE)
    later = update.time + 10.0
    assert harness.link.beat_at(later) == pytest.approx(harness.session.beat_at_engine_time(later), abs=BEAT_TOLERANCE)


def test_tempo_change_within_tolerance_not_reported(harness):
    harness.link.check(harness.clock.time)

    harness.session.tempo = 120.0 + TEMPO_TOLERANCE_BPM / 2
    update = harness.check_after(POLL_INTERVAL)

    assert update.action is FollowAction.NONE
    assert harness.link.bpm == pytest.approx(120.0)


def test_phase_drift_beyond_tolerance_reported():
    harness = Harness()
    harness.link.enable()
    harness.link.check(harness.clock.time)

    harness.session.jump(2 * PHASE_TOLERANCE * 120.0 / 60.0)  # 2 ms at 120 BPM
    update = harness.check_after(POLL_INTERVAL)

    assert update.action is FollowAction.TEMPO
    assert harness.session.beat_at_engine_time(update.time) == pytest.approx(update.beat, abs=BEAT_TOLERANCE)


def test_phase_drift_within_tolerance_not_reported(harness):
    harness.link.check(harness.clock.time)

    harness.session.jump(0.5 * PHASE_TOLERANCE * 120.0 / 60.0)
    update = harness.check_after(POLL_INTERVAL)

    assert update.action is FollowAction.NONE


def test_beat_jump_while_playing_relocates(harness):
    start = harness.link.check(harness.clock.time)
    harness.clock.advance(start.time - harness.clock.time + 1.0)

    harness.session.jump(0.5)  # 250 ms at 120 BPM
    update = harness.check_after(POLL_INTERVAL)

    assert start.action is FollowAction.START
    assert update.action is FollowAction.RELOCATE
    assert harness.session.beat_at_engine_time(update.time) == pytest.approx(update.beat, abs=BEAT_TOLERANCE)


def test_jump_before_start_restarts_on_bar(harness):
    start = harness.link.check(harness.clock.time)

    harness.session.jump(2.5)  # the session realigns, as on joining another one, before play began
    now = harness.clock.advance(POLL_INTERVAL)
    update = harness.link.check(now)

    assert start.time > now
    assert update.action is FollowAction.START
    assert update.beat == pytest.approx(4.0 * math.ceil(harness.session.beat_at_engine_time(now) / 4.0))
    assert harness.session.beat_at_engine_time(update.time) == pytest.approx(update.beat, abs=BEAT_TOLERANCE)
    assert update.time >= now


def test_small_beat_jump_while_playing_is_tempo(harness):
    harness.link.check(harness.clock.time)

    harness.session.jump(0.5 * RELOCATE_THRESHOLD * 120.0 / 60.0)
    update = harness.check_after(POLL_INTERVAL)

    assert update.action is FollowAction.TEMPO


def test_beat_jump_while_stopped_is_tempo(harness):
    harness.link.propose_transport(False)
    harness.link.check(harness.clock.time)

    harness.session.jump(0.5)
    update = harness.check_after(POLL_INTERVAL)

    assert update.action is FollowAction.TEMPO


def test_late_check_after_tempo_change_is_tempo(harness):
    harness.link.check(harness.clock.time)

    harness.session.tempo = 240.0
    update = harness.check_after(0.5)  # a check half a second late: the beat moved far, but continuously

    assert update.action is FollowAction.TEMPO


# Transport with start/stop sync.


@pytest.fixture
def synced() -> Harness:
    harness = Harness(start_stop_sync=True)
    harness.link.enable()
    return harness


def test_sync_waits_for_the_session_transport(synced):
    first = synced.link.check(synced.clock.time)

    updates = synced.run_until_quiet(2.0)

    assert first.action is FollowAction.TEMPO
    assert updates == []
    assert synced.link.playing is False


def test_sync_session_start_on_bar_line(synced):
    synced.link.check(synced.clock.time)
    # Place the clock just after a check, with the next bar line 0.3 s ahead.
    previous_check = synced.clock.advance(synced.link.time_at(4.0) - 0.3 - synced.clock.time)
    synced.link.check(previous_check)

    synced.session.playing = True
    now = synced.clock.advance(POLL_INTERVAL)
    update = synced.link.check(now)

    assert update.action is FollowAction.START
    assert update.beat == pytest.approx(4.0)
    assert update.time == pytest.approx(now + 0.3 - POLL_INTERVAL, abs=1e-6)


def test_sync_start_keeps_passed_bar_line(synced):
    synced.link.check(synced.clock.time)
    bar_time = synced.link.time_at(4.0)
    previous_check = synced.clock.advance(bar_time - 0.01 - synced.clock.time)
    synced.link.check(previous_check)

    synced.session.playing = True  # the transport started at the bar line, 10 ms after the check before
    now = synced.clock.advance(POLL_INTERVAL)
    update = synced.link.check(now)

    assert update.action is FollowAction.START
    assert update.beat == pytest.approx(4.0)
    assert update.time == pytest.approx(bar_time, abs=1e-6)
    assert update.time < now


def test_sync_late_check_starts_next_bar(synced):
    synced.link.check(synced.clock.time)
    previous_check = synced.clock.advance(synced.link.time_at(4.0) - 0.01 - synced.clock.time)
    synced.link.check(previous_check)

    synced.session.playing = True
    now = synced.clock.advance(2 * LATE_START_LIMIT)  # the engine checked late: the bar line passed 90 ms ago
    update = synced.link.check(now)

    assert update.action is FollowAction.START
    assert update.beat == pytest.approx(8.0)
    assert update.time > now


def test_sync_session_stop_reports_stop(synced):
    synced.session.playing = True
    start = synced.link.check(synced.clock.time)

    synced.session.playing = False
    now = synced.clock.advance(3.0)
    stop = synced.link.check(now)

    assert start.action is FollowAction.START
    assert stop.action is FollowAction.STOP
    assert stop.time == pytest.approx(now)
    assert stop.beat == pytest.approx(synced.session.beat_at_engine_time(now), abs=BEAT_TOLERANCE)


def test_sync_playing_session_starts_next_bar(synced):
    synced.session.playing = True
    now = synced.clock.time

    update = synced.link.check(now)

    assert update.action is FollowAction.START
    assert update.beat == pytest.approx(4.0)
    assert update.time > now


def test_sync_propose_transport_sets_the_session(synced):
    synced.link.check(synced.clock.time)

    synced.link.propose_transport(True)
    start = synced.check_after(POLL_INTERVAL)
    synced.link.propose_transport(False)
    stopped_session = synced.session.playing
    stop = synced.check_after(POLL_INTERVAL)

    assert start.action is FollowAction.START
    assert start.beat % 4.0 == pytest.approx(0.0)
    assert stopped_session is False
    assert stop.action is FollowAction.STOP


def test_sync_propose_transport_before_enable_raises():
    harness = Harness(start_stop_sync=True)

    with pytest.raises(RuntimeError, match="enable"):
        harness.link.propose_transport(True)


# Proposing a tempo.


def test_propose_tempo_sets_the_session_tempo(harness):
    harness.link.check(harness.clock.time)

    harness.link.propose_tempo(140)
    update = harness.check_after(POLL_INTERVAL)

    assert harness.session.tempo_sets == [140.0]
    assert harness.session.tempo == 140.0
    assert update.action is FollowAction.TEMPO
    assert harness.link.bpm == pytest.approx(140.0)


@pytest.mark.parametrize("bpm", [19.9, 400.1, float("nan"), True])
def test_propose_tempo_out_of_range_rejected(harness, bpm):
    with pytest.raises(SettingsError):
        harness.link.propose_tempo(bpm)

    assert harness.session.tempo_sets == []


def test_propose_tempo_before_enable_raises():
    harness = Harness()

    with pytest.raises(RuntimeError, match="enable"):
        harness.link.propose_tempo(100.0)


# Clock mapping.


def test_clock_offset_measured(harness):
    assert harness.link.clock_offset == pytest.approx(LINK_CLOCK_OFFSET, abs=1e-9)


def test_clock_offset_at_bracket_midpoint():
    # Each engine clock read takes 1 ms; the Link clock is read between two of them.
    harness = Harness(tick=1e-3)
    harness.link.enable()

    assert harness.link.clock_offset == pytest.approx(LINK_CLOCK_OFFSET, abs=1e-9)


@pytest.mark.parametrize("stalled_read", [0, 2 * (BEAT_READS - 1)])
def test_clock_offset_skips_a_stalled_read(stalled_read):
    harness = Harness(tick=1e-5)
    # 5 ms pass between an engine clock read and the Link clock read after it, in the first or the last bracket.
    # enable() reads the clock once before it measures the offset.
    harness.clock.stalls = {1 + stalled_read: 0.005}
    harness.link.enable()

    assert harness.link.clock_offset == pytest.approx(LINK_CLOCK_OFFSET, abs=1e-9)


def test_beat_at_and_time_at_follow_the_session():
    harness = Harness(tick=1e-3)
    harness.link.enable()
    harness.link.check(harness.clock.time)

    for seconds in (0.0, 0.37, 5.0, 60.0):
        time = harness.clock.time + seconds
        assert harness.link.beat_at(time) == pytest.approx(harness.session.beat_at_engine_time(time), abs=BEAT_TOLERANCE)
    for beat in (4.0, 17.5, 200.0):
        assert harness.session.beat_at_engine_time(harness.link.time_at(beat)) == pytest.approx(beat, abs=BEAT_TOLERANCE)


@pytest.mark.parametrize("stalled_read", [0, 2 * (BEAT_READS - 1)])
def test_beat_sample_skips_a_stalled_read(harness, stalled_read):
    harness.clock.tick = 1e-5
    # The first or the last beat read of the check comes 5 ms after the engine clock read before it.
    harness.clock.stalls = {harness.clock.reads + stalled_read: 0.005}

    harness.link.check(harness.clock.time)

    time = harness.clock.time
    assert harness.link.beat_at(time) == pytest.approx(harness.session.beat_at_engine_time(time), abs=BEAT_TOLERANCE)


def test_beat_at_before_first_check_reads_the_session(harness):
    time = harness.clock.time + 2.0

    assert harness.link.beat_at(time) == pytest.approx(harness.session.beat_at_engine_time(time), abs=BEAT_TOLERANCE)


def test_drifting_link_clock_stays_within_phase_tolerance():
    # CLOCK_MONOTONIC may run up to 500 ppm off the raw clock while NTP slews it.
    harness = Harness(drift=500e-6)
    harness.link.enable()
    harness.link.check(harness.clock.time)

    worst = 0.0
    updates = []
    for _ in range(round(30.0 / POLL_INTERVAL)):
        update = harness.check_after(POLL_INTERVAL)
        if update.action is not FollowAction.NONE:
            updates.append(update)
        error_beats = harness.link.beat_at(harness.clock.time) - harness.session.beat_at_engine_time(harness.clock.time)
        worst = max(worst, abs(error_beats) * 60.0 / 120.0)

    assert worst <= PHASE_TOLERANCE + POLL_INTERVAL * 500e-6 + 1e-9
    assert {update.action for update in updates} == {FollowAction.TEMPO}
    # 0.5 ms of drift per second and a re-anchor every 1 ms of drift: about one update every 2 s.
    assert 10 <= len(updates) <= 20


# Peers and logs.


def test_peers_follow_the_session(harness, caplog):
    harness.session.num_peers = 2

    with caplog.at_level(logging.INFO, logger="sideman.link"):
        harness.link.check(harness.clock.time)

    assert harness.link.peers == 2
    assert any("2 other peers" in record.getMessage() for record in caplog.records if record.name == "sideman.link")


def test_steady_checks_log_nothing_above_debug(harness, caplog):
    harness.link.check(harness.clock.time)
    # The first check logs the start; an earlier test may have left the logger at INFO.
    caplog.clear()

    with caplog.at_level(logging.DEBUG, logger="sideman.link"):
        harness.run_until_quiet(5.0)

    assert [record.getMessage() for record in caplog.records if record.name == "sideman.link" and record.levelno > logging.DEBUG] == []
