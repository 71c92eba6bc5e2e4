"""Ableton Link sync: tempo, beat phase and transport of a Link session, as ClockUpdates for the engine.

The engine polls a LinkSync: it calls `check(now)` at `deadline()`, about
every 20 ms, and turns each ClockUpdate into transport moves, as it does
for the MIDI clock follower. The engine's beat positions are the session's
beats, and the session's quantum is the bar (`beats_per_bar`), so bar lines
(beats that are multiples of `beats_per_bar`) fall together with the bars
of the other peers.

Clocks: aalink 0.2.3 reports `Link.time` on Ableton Link's platform clock,
which on Linux is CLOCK_MONOTONIC_RAW: on Linux 6.18 it read within 20 us
of `time.clock_gettime(time.CLOCK_MONOTONIC_RAW)`. `time.perf_counter()` is
CLOCK_MONOTONIC. The two differ by an offset that depends on the machine
(-0.174 s on that one). Their rates differ too, because NTP slews
CLOCK_MONOTONIC by up to 500 ppm and leaves the raw clock alone. aalink
exposes the beat only at the Link clock's current time, with no
beat-at-time call. LinkSync therefore reads the beat between
two reads of the engine's clock and takes the midpoint as the beat's
time, which maps the session's timeline onto the engine's clock directly,
with the slew included. `clock_offset` measures the Link clock against the
engine's clock in the same way, for logs and checks.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Callable

from .clockfollow import ClockUpdate, FollowAction
from .errors import SettingsError
from .tempo import TempoAnchor, validate_tempo

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'sideman[link]'"
# Ableton Link's peer discovery (Ableton/link, include/ableton/discovery/IpV4Interface.hpp).
LINK_MULTICAST = "224.76.78.75, UDP port 20808"

POLL_INTERVAL = 0.02  # seconds between two checks: a session change reaches the engine this late at most
# Tempo differences up to this many BPM are not reported. Link sends a tempo
# as whole microseconds per beat, so a received tempo can differ from the
# one set by up to 0.0027 BPM (at 400 BPM). Smaller drifts still show up as
# phase drift, which PHASE_TOLERANCE bounds.
TEMPO_TOLERANCE_BPM = 0.005
# Phase drift in seconds beyond which the engine gets a new anchor. It is
# above the uncertainty of one beat reading (tens of microseconds) and below
# the 1.33 ms with which a 64-frame JACK period quantizes MIDI events.
PHASE_TOLERANCE = 0.001
# A beat jump of more than this many seconds, one that no tempo between two
# checks explains (a peer joined or forced a beat), is reported as RELOCATE
# while playing. A smaller jump goes out as TEMPO, and the engine plays its
# next onset at most this late, below its own 0.1 s limit for late onsets.
RELOCATE_THRESHOLD = 0.05
# A session transport start that a check sees began after the check before.
# The first bar line after that moment is where play starts. If that bar line
# passed more than this many seconds ago, play starts at the next one.
LATE_START_LIMIT = 0.05
BEAT_READS = 3  # reads per sample; the one with the tightest bracket of engine clock reads is kept
OFFSET_REFRESH = 1.0  # seconds between two measurements of the Link clock offset


def create_aalink_session(bpm: float) -> Any:
    """Create an aalink.Link at `bpm`, not yet enabled.

    aalink 0.2.3 takes the running asyncio loop at construction, for its
    `sync()` futures and callbacks. LinkSync uses neither, so the loop that
    constructs the object ends at once and is closed.
    """
    import aalink

    # NOTE: the aalink source after 0.2.3 (nanobind) takes the loop as a required argument; this call fits 0.2.x only.
    async def construct() -> Any:
        return aalink.Link(bpm)

    return asyncio.run(construct())


class LinkSync:
    """Tempo, beat phase and transport of an Ableton Link session, mapped onto the engine's clock.

    `bpm` is the tempo that sideman brings to a session of its own. On
    joining a session that has run for longer, sideman takes that session's
    tempo and phase, as every Link peer does. With `start_stop_sync`, the
    session's transport starts and stops play. Without it, play starts at
    the first check and `propose_transport` starts and stops sideman alone,
    always on a bar line of the session.

    `clock` is the engine's clock in seconds. `session_factory(bpm)` returns
    an object with aalink.Link's properties (tempo, beat, time, quantum,
    enabled, num_peers, playing, start_stop_sync_enabled); by default it is
    a real aalink.Link. Not thread-safe: call every method from one thread,
    the engine's.
    """

    def __init__(
        self,
        bpm: float,
        beats_per_bar: float = 4.0,
        start_stop_sync: bool = False,
        *,
        clock: Callable[[], float] = time.perf_counter,
        session_factory: Callable[..., Any] | None = None,
    ):
        if isinstance(beats_per_bar, bool) or not isinstance(beats_per_bar, (int, float)) or not math.isfinite(beats_per_bar) or beats_per_bar <= 0:
            raise SettingsError(f"invalid beats per bar {beats_per_bar!r}: expected a positive number of beats")
        if not isinstance(start_stop_sync, bool):
            raise SettingsError(f"invalid Link start/stop sync {start_stop_sync!r}: expected true or false")
        self._initial_bpm = validate_tempo(bpm)
        self._beats_per_bar = float(beats_per_bar)
        self._start_stop_sync = start_stop_sync
        self._clock = clock
        self._session_factory = session_factory if session_factory is not None else _aalink_factory()

        self._session: Any = None
        self._enabled_at = 0.0
        self._last_check: float | None = None
        self._anchor: TempoAnchor | None = None  # the timeline as last reported to the engine
        self._last_sample: TempoAnchor | None = None  # the timeline as last read, reported or not
        self._reported_playing = False  # the transport as last reported: START sent, STOP not yet
        self._start_time: float | None = None  # engine clock time of the bar line that the last START reported
        self._local_playing = True  # sideman's own transport, used without start/stop sync
        self._waiting_logged = False
        self._peers = 0
        self._clock_offset: float | None = None
        self._offset_measured_at = 0.0

    # Session lifetime.

    def enable(self) -> None:
        """Join the Link session: create the session object, set the quantum and start/stop sync, and enable it."""
        if self._session is not None:
            log.debug("Link: enable() while already in the session; nothing to do")
            return

        session = self._session_factory(self._initial_bpm)
        session.quantum = self._beats_per_bar
        session.start_stop_sync_enabled = self._start_stop_sync
        session.enabled = True
        self._session = session
        self._enabled_at = self._clock()
        self._measure_clock_offset(self._enabled_at)

        log.info(
            "Link: joined the session at %.2f BPM, %g beats per bar, start/stop sync %s; Link clock offset %+.6f s from the engine clock",
            float(session.tempo), self._beats_per_bar, "on" if self._start_stop_sync else "off", self._clock_offset,
        )
        log.warning(
            "Link: Ableton Link sends and receives UDP multicast (%s) on every network interface of this machine; "
            "any Link peer on the local network can change sideman's tempo%s",
            LINK_MULTICAST, " and start or stop it" if self._start_stop_sync else "",
        )

    def close(self) -> None:
        """Leave the session. Calling it again does nothing."""
        session = self._session
        if session is None:
            return

        self._session = None
        session.enabled = False
        self._last_check = None
        self._anchor = None
        self._last_sample = None
        self._reported_playing = False
        self._waiting_logged = False
        log.info("Link: left the session")

    def __enter__(self) -> LinkSync:
        self.enable()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # State.

    @property
    def enabled(self) -> bool:
        return self._session is not None

    @property
    def bpm(self) -> float:
        """The session tempo in BPM as last reported by `check`; before the first check, the session's, else the initial tempo."""
        if self._anchor is not None:
            return self._anchor.bpm
        if self._session is not None:
            return float(self._session.tempo)
        return self._initial_bpm

    @property
    def peers(self) -> int:
        """The number of other peers in the session; 0 while not in one."""
        return int(self._session.num_peers) if self._session is not None else 0

    @property
    def playing(self) -> bool:
        """The transport that play follows: the session's with start/stop sync, else sideman's own."""
        if self._start_stop_sync and self._session is not None:
            return bool(self._session.playing)
        return self._local_playing

    @property
    def clock_offset(self) -> float | None:
        """The Link clock minus the engine's clock in seconds, as last measured; None before `enable`."""
        return self._clock_offset

    # Polling.

    def deadline(self) -> float | None:
        """Return the engine clock time at which `check` is due next, or None while not in a session."""
        if self._session is None:
            return None
        if self._last_check is None:
            return self._enabled_at
        return self._last_check + POLL_INTERVAL

    def check(self, now: float) -> ClockUpdate:
        """Read the session and return the engine's task: START, STOP, RELOCATE, TEMPO, or NONE while nothing moved beyond the tolerances."""
        session = self._require_session("check")
        previous_check, self._last_check = self._last_check, now
        if now - self._offset_measured_at >= OFFSET_REFRESH:
            self._measure_clock_offset(now)
        self._note_peers(session)

        current = self._sample(session)
        previous_sample, self._last_sample = self._last_sample, current
        playing = self.playing

        if playing and not self._reported_playing:
            # A start of the session's transport happened after the check before; sideman's own start happens now.
            transport_began = previous_check is not None and self._start_stop_sync
            start_after = max(previous_check, now - LATE_START_LIMIT) if transport_began else now
            return self._start(current, start_after)
        if not playing and self._reported_playing:
            return self._stop(current, now)
        if not playing:
            self._log_waiting()
        return self._follow_timeline(current, previous_sample, now)

    # The session timeline in the engine's clock.

    def beat_at(self, time: float) -> float:
        """Return the session's beat at engine clock `time`, on the timeline last reported (read now before the first check)."""
        return self._timeline().beat_at(time)

    def time_at(self, beat: float) -> float:
        """Return the engine clock time at which the session reaches `beat`, on the timeline last reported."""
        return self._timeline().time_at(beat)

    # Proposals from sideman's own controls.

    def propose_tempo(self, bpm: float) -> None:
        """Set the session's tempo to `bpm` (20-400) for every peer; the next check reports it as TEMPO."""
        session = self._require_session("propose_tempo")
        bpm = validate_tempo(bpm)
        session.tempo = bpm
        log.info("Link: set the session tempo to %.2f BPM", bpm)

    def propose_transport(self, playing: bool) -> None:
        """Start or stop play; the next check reports START on a bar line, or STOP.

        With start/stop sync this starts or stops the session's transport for
        every peer that syncs start and stop. Without it only sideman starts
        or stops, and the session goes on.
        """
        if not isinstance(playing, bool):
            raise SettingsError(f"invalid transport state {playing!r}: expected true (start) or false (stop)")
        if self._start_stop_sync:
            session = self._require_session("propose_transport")
            session.playing = playing
            self._waiting_logged = False
            log.info("Link: %s the session's transport", "started" if playing else "stopped")
            return

        self._local_playing = playing
        self._waiting_logged = False
        log.info("Link: %s sideman's transport (start/stop sync is off, so the session goes on)", "started" if playing else "stopped")

    # Helpers.

    def _start(self, current: TempoAnchor, start_after: float) -> ClockUpdate:
        bar_beat = self._next_bar_line(current.beat_at(start_after))
        self._anchor = current
        self._reported_playing = True
        start_time = current.time_at(bar_beat)
        self._start_time = start_time
        log.info("Link: playing from beat %.2f (a bar line) at %.2f BPM, %d peers", bar_beat, current.bpm, self._peers)
        return ClockUpdate(FollowAction.START, bar_beat, start_time)

    def _stop(self, current: TempoAnchor, now: float) -> ClockUpdate:
        self._anchor = current
        self._reported_playing = False
        beat = current.beat_at(now)
        log.info("Link: stopped at beat %.2f", beat)
        return ClockUpdate(FollowAction.STOP, beat, now)

    def _follow_timeline(self, current: TempoAnchor, previous_sample: TempoAnchor | None, now: float) -> ClockUpdate:
        """Report TEMPO (or RELOCATE for a jump while playing) when tempo or phase left the tolerances, else NONE."""
        anchor = self._anchor
        if anchor is not None:
            tempo_moved = abs(current.bpm - anchor.bpm) > TEMPO_TOLERANCE_BPM
            phase_drift = (current.beat - anchor.beat_at(current.time)) * 60.0 / current.bpm
            if not tempo_moved and abs(phase_drift) <= PHASE_TOLERANCE:
                return ClockUpdate(FollowAction.NONE, anchor.beat_at(now), now)
            if tempo_moved:
                log.info("Link: session tempo %.2f BPM (was %.2f)", current.bpm, anchor.bpm)
            elif log.isEnabledFor(logging.DEBUG):
                log.debug("Link: phase drifted by %+.3f ms; re-anchored", phase_drift * 1000.0)

        self._anchor = current
        jump = _beat_jump_seconds(previous_sample, current) if previous_sample is not None else 0.0
        if self._reported_playing and abs(jump) > RELOCATE_THRESHOLD:
            log.info("Link: the session's beat jumped by %+.1f ms", jump * 1000.0)
            if now < self._start_time:
                # Play has not begun: a new START keeps the first onset on a bar line of the new timeline.
                return self._start(current, now)
            log.info("Link: relocating to beat %.2f", current.beat)
            return ClockUpdate(FollowAction.RELOCATE, current.beat, current.time)
        return ClockUpdate(FollowAction.TEMPO, current.beat, current.time)

    def _sample(self, session: Any) -> TempoAnchor:
        """Read the session's tempo and beat; the beat's time is the midpoint of the tightest of BEAT_READS brackets of engine clock reads."""
        bpm = float(session.tempo)
        best_span = math.inf
        best_time = best_beat = 0.0
        for _ in range(BEAT_READS):
            before = self._clock()
            beat = float(session.beat)
            after = self._clock()
            if after - before < best_span:
                best_span = after - before
                best_time = (before + after) / 2.0
                best_beat = beat
        return TempoAnchor(best_time, best_beat, bpm)

    def _measure_clock_offset(self, now: float) -> None:
        """Measure the Link clock minus the engine's clock, bracketing each Link clock read by two engine clock reads."""
        session = self._session
        best_span = math.inf
        offset = 0.0
        for _ in range(BEAT_READS):
            before = self._clock()
            link_time = session.time.total_seconds()
            after = self._clock()
            if after - before < best_span:
                best_span = after - before
                offset = link_time - (before + after) / 2.0
        self._clock_offset = offset
        self._offset_measured_at = now
        if log.isEnabledFor(logging.DEBUG):
            log.debug("Link: clock offset %+.6f s (+-%.1f us)", offset, best_span * 5e5)

    def _timeline(self) -> TempoAnchor:
        if self._anchor is not None:
            return self._anchor
        return self._sample(self._require_session("beat_at/time_at"))

    def _next_bar_line(self, beat: float) -> float:
        """Return the first bar line at or after `beat`; one within 1e-6 beats before it counts as at it."""
        return math.ceil(beat / self._beats_per_bar - 1e-6) * self._beats_per_bar

    def _note_peers(self, session: Any) -> None:
        peers = int(session.num_peers)
        if peers != self._peers:
            log.info("Link: %d other peers in the session (was %d)", peers, self._peers)
            self._peers = peers

    def _log_waiting(self) -> None:
        if self._waiting_logged:
            return
        self._waiting_logged = True
        if self._start_stop_sync:
            log.info("Link: waiting for the session's transport to start")
        else:
            log.info("Link: stopped; waiting for a start")

    def _require_session(self, method: str) -> Any:
        if self._session is None:
            raise RuntimeError(f"LinkSync.{method}() needs the Link session: call enable() first (and not after close())")
        return self._session


def _beat_jump_seconds(previous: TempoAnchor, current: TempoAnchor) -> float:
    """Return how far the beat moved between two samples beyond what a tempo change between them explains, in seconds at the current tempo.

    Link keeps the beat continuous when a peer changes the tempo, so the beat
    at `current.time` lies between the projections at the old and at the new
    tempo, whenever between the samples the change came.
    """
    elapsed = current.time - previous.time
    low, high = sorted((previous.beat + elapsed * previous.bpm / 60.0, previous.beat + elapsed * current.bpm / 60.0))
    if current.beat > high:
        return (current.beat - high) * 60.0 / current.bpm
    if current.beat < low:
        return (current.beat - low) * 60.0 / current.bpm
    return 0.0


def _aalink_factory() -> Callable[[float], Any]:
    """Return the factory of real aalink sessions, or raise SettingsError with the install hint when aalink is missing."""
    try:
        import aalink  # noqa: F401  (only checks that the package imports)
    except ImportError as error:
        raise SettingsError(f"sync = link needs the aalink package, which is not installed ({error}); install it with {INSTALL_HINT}") from error
    return create_aalink_session
