"""One soak run: its schedule, the main loop with its status requests, live mode and port closings, and everything it measures."""

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.live import STATUS_TIMEOUT, ShownNote
from bench.soak_changes import OscChanger
from bench.soak_daemon import START_TEMPO, SoakDaemon, connect_sender
from bench.soak_memory import RSS_WARMUP_SECONDS, RssSampler, read_peak_rss_kb
from bench.soak_phrases import PhrasePlayer, PhraseSender
from bench.soak_receiver import ReceivedMessage, ReopeningReceiver

log = logging.getLogger(__name__)

PORT_AWAY_SECONDS = 2.0  # how long the receiver's port stays closed
STATUS_INTERVAL = 10.0  # seconds between two /sideman/status requests
FIRST_NOTE_TIMEOUT = 30.0  # seconds from start-up to the first note


@dataclass(frozen=True)
class Schedule:
    """When things happen, in seconds since the first note."""

    seconds: float
    live_start: float
    live_end: float
    disconnects: tuple[float, ...]

    @classmethod
    def for_minutes(cls, minutes: float, disconnect_minutes: float) -> "Schedule":
        seconds = minutes * 60.0
        interval = disconnect_minutes * 60.0
        # A closing must leave time for the port to return and for notes to arrive afterwards.
        disconnects = tuple(float(at) for at in np.arange(interval, seconds - PORT_AWAY_SECONDS - 10.0, interval))
        return cls(seconds, seconds / 3, 2 * seconds / 3, disconnects)


@dataclass
class Disconnect:
    """One closing of the receiver's port, with the daemon's note count around it."""

    closed_at: float  # seconds since the first note
    reopened_at: float
    notes_before: int | None  # the daemon's notes played just before the port closed; None when the status request timed out
    notes_after: int | None  # and just after it was open again
    first_note_after: float | None = None  # seconds from the reopening to the first note_on received; None when none came

    @property
    def notes_while_away(self) -> int | None:
        if self.notes_before is None or self.notes_after is None:
            return None
        return self.notes_after - self.notes_before


@dataclass
class SoakRun:
    """Everything measured in one soak run, before analysis."""

    schedule: Schedule
    seconds: float  # from the first note to the stop
    warmup: float
    command: list[str]
    received: list[ReceivedMessage]
    disconnects: list[Disconnect]
    shown: list[ShownNote]
    status_replies: int  # replies to the periodic /sideman/status requests
    status_timeouts: int  # requests that got no reply within STATUS_TIMEOUT
    live_statuses: list[dict[str, object]]  # the status just before the live mode ended
    final_status: dict[str, object]
    rss: list[tuple[float, int]]
    peak_rss_kb: int | None
    changes: Counter
    change_history: list[tuple[float, str]]  # (time.perf_counter() when sent, kind)
    phrases: int
    phrase_notes: int
    log_text: str
    exit_code: int | None
    jack_xruns: int | None = None  # XRun lines in the JACK server's log; None when it was not read


def run_soak(workdir: Path, schedule: Schedule, model: str | None, seed: int) -> SoakRun:
    # Both JACK clients of this process open before the daemon plays: see PhraseSender.
    sender = PhraseSender(f"sideman-soak-tx-{os.getpid()}")
    receiver = ReopeningReceiver(f"sideman-soak-rx-{os.getpid()}")
    daemon = SoakDaemon(workdir, receiver.port_name, model)
    changer = player = rss = None
    try:
        first_note = wait_for_first_note(receiver, daemon)
        rss = RssSampler(daemon.process.pid, first_note)
        rss.start()
        connect_sender(sender, daemon)
        changer = OscChanger(daemon.osc_port, seed, START_TEMPO)
        changer.start()
        player = PhrasePlayer(sender, changer, seed + 1)
        player.start()

        timeline = Timeline(first_note, schedule, daemon, receiver, changer)
        timeline.run()

        for thread in (changer, player, rss):
            thread.stop()
        final_status = timeline.poll_status() or {}
        stopped_at = time.perf_counter()
        peak_rss_kb = read_peak_rss_kb(daemon.process.pid)
        exit_code = daemon.stop()
        time.sleep(0.3)  # the note_offs sent at shutdown reach the receiver
    finally:
        # The daemon first: a daemon left running would outlive this process.
        daemon.stop()
        for thread in (changer, player, rss):
            if thread is not None:
                thread.stop()
        sender.close()
        receiver.close()

    return SoakRun(
        schedule=schedule,
        seconds=stopped_at - first_note,
        warmup=min(RSS_WARMUP_SECONDS, schedule.seconds / 4),
        command=daemon.command,
        received=receiver.received(),
        disconnects=timeline.disconnects,
        shown=daemon.shown_notes(),
        status_replies=timeline.status_replies,
        status_timeouts=timeline.status_timeouts,
        live_statuses=timeline.live_statuses,
        final_status=final_status,
        rss=rss.readings,
        peak_rss_kb=peak_rss_kb,
        changes=changer.sent,
        change_history=changer.history,
        phrases=player.phrases,
        phrase_notes=player.notes,
        log_text=daemon.log_text(),
        exit_code=exit_code,
    )


def wait_for_first_note(receiver: ReopeningReceiver, daemon: SoakDaemon, timeout: float = FIRST_NOTE_TIMEOUT) -> float:
    """Wait for the first note_on; return its time.perf_counter()."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in receiver.received():
            if item.message.type == "note_on" and item.message.velocity > 0:
                return item.wall
        if not daemon.alive():
            break
        time.sleep(0.01)
    raise RuntimeError(f"no note within {timeout:g} s; daemon log {daemon.log_path}")


class Timeline:
    """The main loop of a run: status requests, the live mode's start and end, and the port's closings."""

    def __init__(self, origin: float, schedule: Schedule, daemon: SoakDaemon, receiver: ReopeningReceiver, changer: OscChanger) -> None:
        self.origin = origin
        self.schedule = schedule
        self.daemon = daemon
        self.receiver = receiver
        self.changer = changer
        self.status_replies = 0
        self.status_timeouts = 0
        self.live_statuses: list[dict[str, object]] = []
        self.disconnects: list[Disconnect] = []

    def now(self) -> float:
        return time.perf_counter() - self.origin

    def run(self) -> None:
        pending_disconnects = list(self.schedule.disconnects)
        live_started = live_ended = False
        next_status = 0.0
        last_report = 0.0
        while self.now() < self.schedule.seconds:
            if not self.daemon.alive():
                raise RuntimeError(f"the daemon ended during the soak with code {self.daemon.process.returncode}; log {self.daemon.log_path}")
            if self.now() >= next_status:
                # Only the reply matters here: status requests are part of the load a daemon sees on stage.
                self.poll_status()
                next_status += STATUS_INTERVAL
            if not live_started and self.now() >= self.schedule.live_start:
                self.changer.request_live(True)
                live_started = True
            if live_started and not live_ended and self.now() >= self.schedule.live_end:
                status = self.poll_status()
                if status is not None:
                    self.live_statuses.append(status)
                self.changer.request_live(False)
                live_ended = True
            if pending_disconnects and self.now() >= pending_disconnects[0]:
                pending_disconnects.pop(0)
                self.disconnect()
            if self.now() - last_report >= 60.0:
                last_report = self.now()
                log.info("soak: %.0f of %.0f s, %d note_ons received", last_report, self.schedule.seconds, self.receiver.note_on_count())
            self.check_first_note_after_reopening()
            time.sleep(0.05)
        self.check_first_note_after_reopening()

    def disconnect(self) -> None:
        """Close the receiver's client, keep it away PORT_AWAY_SECONDS, and open it again under the same name."""
        notes_before = self.poll_notes()
        closed_at = self.now()
        self.receiver.close()
        time.sleep(max(0.0, PORT_AWAY_SECONDS - (self.now() - closed_at)))
        self.receiver.open()
        reopened_at = self.now()
        notes_after = self.poll_notes()
        disconnect = Disconnect(closed_at, reopened_at, notes_before, notes_after)
        self.disconnects.append(disconnect)
        log.info("receiver away from %.1f s to %.1f s; the daemon played %s notes meanwhile", closed_at, reopened_at, disconnect.notes_while_away)

    def poll_status(self) -> dict[str, object] | None:
        """Request the daemon's status; return None, after a warning, when the reply does not come within STATUS_TIMEOUT."""
        try:
            status = self.daemon.status()
        except TimeoutError:
            self.status_timeouts += 1
            log.warning("the daemon sent no status reply within %g s at %.1f s of the run; going on without it", STATUS_TIMEOUT, self.now())
            return None
        self.status_replies += 1
        return status

    def poll_notes(self) -> int | None:
        status = self.poll_status()
        return None if status is None else int(status["notes"])

    def check_first_note_after_reopening(self) -> None:
        if not self.disconnects or self.disconnects[-1].first_note_after is not None:
            return
        disconnect = self.disconnects[-1]
        segment = self.receiver.segment
        for item in self.receiver.received():
            if item.segment == segment and item.message.type == "note_on" and item.message.velocity > 0:
                disconnect.first_note_after = item.wall - self.origin - disconnect.reopened_at
                log.info("first note after the port returned: %.3f s later", disconnect.first_note_after)
                return
