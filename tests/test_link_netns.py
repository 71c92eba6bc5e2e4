"""LinkSync against a real Ableton Link peer (aalink), both in a network namespace that each test creates and deletes.

Every Link process runs under `ip netns exec NAME`, in a namespace whose
only interface is its own loopback, so no Link packet reaches another
network. The test talks to each process over its stdin and stdout, one
JSON line per command. This module is also the processes' program:
`python -m tests.test_link_netns peer BPM SYNC` runs a plain aalink peer,
and `python -m tests.test_link_netns sideman BPM SYNC` runs a LinkSync
that checks the session every POLL_INTERVAL and records its updates.
"""

from __future__ import annotations

import itertools
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

pytestmark = pytest.mark.link

REPOSITORY = Path(__file__).resolve().parents[1]
BEATS_PER_BAR = 4.0
PEER_BPM = 132.0
SIDEMAN_BPM = 120.0
# Link joins two sessions by age: the one that started more than 0.5 s
# earlier wins (Ableton/link, Sessions.hpp, SESSION_EPS). sideman starts
# this much later than the peer, so that the peer's tempo wins.
SESSION_HEAD_START = 1.5
REPLY_TIMEOUT = 10.0  # seconds a process may take to reply to one command
CONVERGE_TIMEOUT = 15.0  # seconds the session may take to reach an expected state
EXIT_TIMEOUT = 5.0
# Two Link peers on one machine agree on the beat phase to microseconds
# once the peer measurement finished. The allowance covers the beat readings,
# each taken between two clock reads by a process that a busy 2-core machine
# can hold up for several milliseconds, and LinkSync's own 1 ms phase tolerance.
PHASE_AGREEMENT = 0.010

_namespace_numbers = itertools.count()


# The test side.


class NamespaceError(RuntimeError):
    pass


def _run_ip(*arguments: str) -> None:
    result = subprocess.run(["ip", *arguments], capture_output=True, text=True, timeout=10.0)
    if result.returncode != 0:
        raise NamespaceError(f"ip {' '.join(arguments)} failed with exit code {result.returncode}: {result.stderr.strip()}")


@pytest.fixture
def netns() -> Iterator[str]:
    """Create a network namespace with its loopback up and multicast on it, and delete it afterwards."""
    name = f"sideman-link-{os.getpid()}-{next(_namespace_numbers)}"
    try:
        _run_ip("netns", "add", name)
    except (NamespaceError, OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"cannot create a network namespace: {error}")

    try:
        # Link discovers peers by multicast on every interface with an IPv4 address; lo needs the flag.
        _run_ip("-n", name, "link", "set", "lo", "up")
        _run_ip("-n", name, "link", "set", "lo", "multicast", "on")
        yield name
    finally:
        _kill_remaining(name)
        _run_ip("netns", "delete", name)


def _kill_remaining(namespace: str) -> None:
    """Kill processes left in the namespace: only this test's Link processes can be there."""
    result = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=10.0)
    for pid in result.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


class LinkProcess:
    """A Link process in the namespace, driven by one JSON line per command."""

    def __init__(self, namespace: str, role: str, bpm: float, start_stop_sync: bool, log_path: Path):
        command = ["ip", "netns", "exec", namespace, sys.executable, "-m", "tests.test_link_netns", role, str(bpm), str(int(start_stop_sync))]
        self.role = role
        self.log_path = log_path
        with open(log_path, "w") as log_file:
            self.process = subprocess.Popen(command, cwd=REPOSITORY, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, text=True, bufsize=1)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.process.stdout, selectors.EVENT_READ)
        self.ready = self._read_line("ready")

    def request(self, *command: object) -> dict[str, Any]:
        self.process.stdin.write(" ".join(str(part) for part in command) + "\n")
        self.process.stdin.flush()
        return self._read_line(command[0])

    def _read_line(self, command: object) -> dict[str, Any]:
        if not self._selector.select(REPLY_TIMEOUT):
            raise AssertionError(f"the {self.role} process did not answer {command!r} within {REPLY_TIMEOUT:g} s; stderr: {self._stderr()}")
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"the {self.role} process ended (exit code {self.process.wait(EXIT_TIMEOUT)}) before answering {command!r}; stderr: {self._stderr()}")
        return json.loads(line)

    def _stderr(self) -> str:
        return self.log_path.read_text()[-2000:]

    def close(self) -> None:
        self._selector.close()
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(EXIT_TIMEOUT)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(EXIT_TIMEOUT)
        self.process.stdin.close()
        self.process.stdout.close()


@pytest.fixture
def start_process(netns: str, tmp_path: Path) -> Iterator[Callable[[str, float, bool], LinkProcess]]:
    """Start Link processes in the namespace; stop them all afterwards, before the namespace goes."""
    processes: list[LinkProcess] = []

    def start(role: str, bpm: float, start_stop_sync: bool) -> LinkProcess:
        process = LinkProcess(netns, role, bpm, start_stop_sync, tmp_path / f"{role}-{len(processes)}.log")
        processes.append(process)
        return process

    try:
        yield start
    finally:
        for process in reversed(processes):
            process.close()


def _session(start_process, start_stop_sync: bool = False) -> tuple[LinkProcess, LinkProcess]:
    """Start a peer at PEER_BPM, then sideman at SIDEMAN_BPM, and wait until sideman follows the peer's tempo."""
    peer = start_process("peer", PEER_BPM, start_stop_sync)
    time.sleep(SESSION_HEAD_START)
    sideman = start_process("sideman", SIDEMAN_BPM, start_stop_sync)
    _wait_for(sideman, lambda state: state["peers"] == 1 and abs(state["bpm"] - PEER_BPM) < 0.01, "sideman joined the peer's session at its tempo")
    return peer, sideman


def _wait_for(process: LinkProcess, condition: Callable[[dict[str, Any]], bool], description: str) -> dict[str, Any]:
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    state = process.request("state")
    while not condition(state):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {CONVERGE_TIMEOUT:g} s waiting until {description}; last {process.role} state: {state}")
        time.sleep(0.05)
        state = process.request("state")
    return state


def _actions(state: dict[str, Any]) -> list[str]:
    return [update[0] for update in state["updates"]]


def _phase_difference(beat: float, other: float, bpm: float) -> float:
    """Return how far `beat` is from `other` within a bar, in seconds at `bpm`, from -half a bar to +half a bar."""
    difference = (beat - other + BEATS_PER_BAR / 2) % BEATS_PER_BAR - BEATS_PER_BAR / 2
    return difference * 60.0 / bpm


# Tests.


def test_sideman_takes_the_peer_tempo(start_process):
    peer, sideman = _session(start_process)

    state = sideman.request("state")
    peer_state = peer.request("state")

    assert peer_state["tempo"] == pytest.approx(PEER_BPM, abs=0.01)
    assert state["bpm"] == pytest.approx(PEER_BPM, abs=0.01)
    assert "start" in _actions(state)


def test_beat_phase_agrees_with_the_peer(start_process):
    peer, sideman = _session(start_process)
    time.sleep(0.5)  # let a few checks pass after the join

    differences = []
    for _ in range(5):
        peer_state = peer.request("state")
        sideman_beat = sideman.request("beat_at", peer_state["time"])["beat"]
        differences.append(_phase_difference(sideman_beat, peer_state["beat"], PEER_BPM))

    assert max(abs(difference) for difference in differences) <= PHASE_AGREEMENT, differences


def test_play_lands_on_the_peer_timeline_after_joining(start_process):
    peer, sideman = _session(start_process)

    updates = sideman.request("state")["updates"]
    last_start = max(index for index, update in enumerate(updates) if update[0] == "start")
    moves = [update for update in updates[last_start + 1:] if update[0] in ("relocate", "tempo")]

    # sideman starts at once on its own timeline; the join then moves the
    # phase: before the start that gives a new START on a bar line, after it
    # a RELOCATE, or a TEMPO when the tempo changed with it. The latest of
    # them places sideman's beats, and they must agree with the peer's.
    if moves:
        action, beat, time_ = moves[-1]
    else:
        action, beat, time_ = updates[last_start]
        assert beat % BEATS_PER_BAR == pytest.approx(0.0)
    peer_beat = peer.request("beat_at_time", time_)["beat"]
    assert _phase_difference(peer_beat, beat, PEER_BPM) == pytest.approx(0.0, abs=PHASE_AGREEMENT), action


def test_propose_tempo_changes_the_peer(start_process):
    peer, sideman = _session(start_process)

    sideman.request("propose_tempo", 100.0)
    peer_state = _wait_for(peer, lambda state: abs(state["tempo"] - 100.0) < 0.01, "the peer took the proposed tempo")
    state = _wait_for(sideman, lambda state: abs(state["bpm"] - 100.0) < 0.01, "sideman reports the proposed tempo")

    assert peer_state["tempo"] == pytest.approx(100.0, abs=0.01)
    assert "tempo" in _actions(state)


def test_peer_tempo_change_reaches_sideman(start_process):
    peer, sideman = _session(start_process)

    peer.request("tempo", 90.0)
    state = _wait_for(sideman, lambda state: abs(state["bpm"] - 90.0) < 0.01, "sideman follows the peer's new tempo")

    assert "tempo" in _actions(state)


def test_peer_transport_starts_and_stops_sideman(start_process):
    peer, sideman = _session(start_process, start_stop_sync=True)
    state = sideman.request("state")
    assert "start" not in _actions(state)
    assert state["playing"] is False

    peer.request("play", 1)
    started = _wait_for(sideman, lambda state: "start" in _actions(state), "sideman starts with the peer's transport")
    peer.request("play", 0)
    stopped = _wait_for(sideman, lambda state: "stop" in _actions(state), "sideman stops with the peer's transport")

    start = next(update for update in started["updates"] if update[0] == "start")
    peer_beat_at_start = peer.request("beat_at_time", start[2])["beat"]
    assert start[1] % BEATS_PER_BAR == pytest.approx(0.0)
    assert _phase_difference(peer_beat_at_start, 0.0, PEER_BPM) == pytest.approx(0.0, abs=PHASE_AGREEMENT)
    assert stopped["playing"] is False


def test_sideman_transport_starts_and_stops_the_peer(start_process):
    peer, sideman = _session(start_process, start_stop_sync=True)

    sideman.request("propose_transport", 1)
    playing = _wait_for(peer, lambda state: state["playing"], "the peer's transport started")
    started = _wait_for(sideman, lambda state: "start" in _actions(state), "sideman reports START")
    sideman.request("propose_transport", 0)
    stopped_peer = _wait_for(peer, lambda state: not state["playing"], "the peer's transport stopped")
    stopped = _wait_for(sideman, lambda state: "stop" in _actions(state), "sideman reports STOP")

    start = next(update for update in started["updates"] if update[0] == "start")
    peer_beat_at_start = peer.request("beat_at_time", start[2])["beat"]
    assert playing["playing"] is True
    assert _phase_difference(peer_beat_at_start, 0.0, PEER_BPM) == pytest.approx(0.0, abs=PHASE_AGREEMENT)
    assert stopped_peer["playing"] is False
    assert "stop" in _actions(stopped)


def test_clock_offset_is_the_raw_monotonic_clock(start_process):
    _, sideman = _session(start_process)

    state = sideman.request("state")

    # Link's Linux clock is CLOCK_MONOTONIC_RAW, so its offset from perf_counter equals the raw clock's.
    assert state["clock_offset"] == pytest.approx(state["raw_clock_offset"], abs=0.001)


# The processes' side.


def _reply(values: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(values) + "\n")
    sys.stdout.flush()


def _bracketed(read: Callable[[], float]) -> tuple[float, float]:
    """Return (perf_counter time, value) of one read, the time being the midpoint of two clock reads around it."""
    before = time.perf_counter()
    value = read()
    after = time.perf_counter()
    return (before + after) / 2.0, value


def run_peer(bpm: float, start_stop_sync: bool) -> None:
    """Run a plain aalink peer that handles the commands state, tempo BPM, play 0/1, beat_at_time T and quit."""
    from sideman.link import create_aalink_session

    link = create_aalink_session(bpm)
    link.quantum = BEATS_PER_BAR
    link.start_stop_sync_enabled = start_stop_sync
    link.enabled = True
    _reply({"ready": True})

    for line in sys.stdin:
        command, *arguments = line.split()
        if command == "quit":
            break
        if command == "tempo":
            link.tempo = float(arguments[0])
        elif command == "play":
            link.playing = bool(int(arguments[0]))
        if command == "beat_at_time":
            now, beat = _bracketed(lambda: link.beat)
            _reply({"beat": beat + (float(arguments[0]) - now) * link.tempo / 60.0})
            continue
        now, beat = _bracketed(lambda: link.beat)
        _reply({"time": now, "beat": beat, "tempo": link.tempo, "playing": link.playing, "peers": link.num_peers})
    link.enabled = False


def run_sideman(bpm: float, start_stop_sync: bool) -> None:
    """Run a LinkSync, polled as the engine polls it, that handles the commands state, beat_at T, propose_tempo BPM, propose_transport 0/1 and quit."""
    from sideman.link import LinkSync

    link = LinkSync(bpm, BEATS_PER_BAR, start_stop_sync)
    link.enable()
    updates: list[list[Any]] = []
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin, selectors.EVENT_READ)
    _reply({"ready": True})

    try:
        while True:
            due = link.deadline()
            if due <= time.perf_counter():
                update = link.check(time.perf_counter())
                if update.action.value != "none":
                    updates.append([update.action.value, update.beat, update.time])
                continue
            if not selector.select(max(0.0, due - time.perf_counter())):
                continue

            command, *arguments = sys.stdin.readline().split() or ["quit"]
            if command == "quit":
                break
            if command == "beat_at":
                _reply({"beat": link.beat_at(float(arguments[0]))})
                continue
            if command == "propose_tempo":
                link.propose_tempo(float(arguments[0]))
            elif command == "propose_transport":
                link.propose_transport(bool(int(arguments[0])))
            raw_offset = time.clock_gettime(time.CLOCK_MONOTONIC_RAW) - time.perf_counter()
            _reply({"bpm": link.bpm, "peers": link.peers, "playing": link.playing, "updates": updates, "clock_offset": link.clock_offset, "raw_clock_offset": raw_offset})
    finally:
        selector.close()
        link.close()


if __name__ == "__main__":
    role, bpm_argument, sync_argument = sys.argv[1:4]
    {"peer": run_peer, "sideman": run_sideman}[role](float(bpm_argument), bool(int(sync_argument)))
