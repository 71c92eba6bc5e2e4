"""A private JACK server for tests, and a receiver that records what arrives on a JACK MIDI port.

The server uses the dummy driver (`jackd -n NAME -d dummy -r 48000 -p 64`),
so it needs no sound card; JACK_DEFAULT_SERVER=NAME points libjack, the
jack_* tools and subprocesses at it.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import mido
import rtmidi

from sideman.midiport import JACK_SETTLE_TIME

SAMPLE_RATE = 48000
PERIOD_FRAMES = 64
START_TIMEOUT = 15.0  # seconds for jackd to accept clients
# Seconds for jackd to exit after SIGTERM. A killed jackd stays in JACK's
# registry of servers, which has room for 8, so every kill brings "Too many servers
# already active" closer on a developer's machine.
STOP_TIMEOUT = 15.0
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
CLIENT_TIMEOUT_MS = 5000  # jackd's default of 500 ms is too short on a busy machine
# SIDEMAN_JACKD_VERBOSE=1 starts every test server with jackd's -v: each client
# request is logged (about 100 lines for each client), for tracing refused clients.
VERBOSE_VARIABLE = "SIDEMAN_JACKD_VERBOSE"
LOG_TAIL_LINES = 60  # lines of a server's log quoted in a JackServerError


# The first lines of a Python child script that talks to the test over its
# standard output and opens JACK clients. libjack prints to file descriptor 1 as
# well (every request, on a server started with --verbose), and a JACK thread
# that writes into a full pipe stalls the server's cycle. The script keeps the
# pipe for its own lines and points file descriptor 1 at /dev/null.
CHILD_STDOUT_PRELUDE = """import os, sys
sys.stdout = os.fdopen(os.dup(1), "w")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
"""


class JackServerError(RuntimeError):
    """jackd is missing, the server did not start, or it stopped serving clients.

    A --sync server whose cycle waited for a client longer than the client
    timeout logs "engine may now behave abnormally". In CI such a server then
    refused every new client ("Driver is not running") until the test ended.
    A ports test that fails with this error runs once more on a fresh server
    (tests/conftest.py).
    """


# Lines in a server's log after its cycle waited for a client past the client timeout.
STOPPED_SERVER_SIGNS = ("engine may now behave abnormally", "Driver is not running")


class JackServer:
    """A jackd process with the dummy driver, under its own server name."""

    def __init__(self, name: str, log_path: Path, port_max: int | None = None) -> None:
        self.name = name
        self.log_path = log_path
        # jackd's --port-max: the size of the shared memory that every client maps grows with it.
        self.port_max = port_max
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start jackd and wait until it accepts clients; raise JackServerError with its log otherwise."""
        jackd = shutil.which("jackd")
        if jackd is None:
            raise JackServerError("jackd not found; install the Debian package jackd2")

        # Containers and CI machines rarely grant realtime priority, hence
        # --no-realtime. On a busy machine clients then run late: --sync makes the
        # server wait for them so that no MIDI event is dropped, and a long
        # client timeout keeps slow clients from being thrown out. Without
        # --sync, a run of the ports tests beside a spinning process lost
        # note_offs and notes. The price: a client that misses a cycle by the
        # timeout can leave the server refusing clients (see JackServerError).
        command = [jackd, "--no-realtime", "--sync", "--timeout", str(CLIENT_TIMEOUT_MS), "-n", self.name]
        if os.environ.get(VERBOSE_VARIABLE) == "1":
            command.append("--verbose")
        if self.port_max is not None:
            command += ["--port-max", str(self.port_max)]
        command += ["-d", "dummy", "-r", str(SAMPLE_RATE), "-p", str(PERIOD_FRAMES)]
        with open(self.log_path, "wb") as log_file:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=_end_with_parent,
            )
        _running_servers[self.name] = self

        deadline = time.monotonic() + timeout
        while not self.accepts_clients():
            if self._process.poll() is not None:
                raise JackServerError(f"jackd exited with code {self._process.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise JackServerError(f"jackd accepted no client within {timeout:.0f} s: {self.log()}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        """The jackd process's id, for tests that stop it with a signal."""
        assert self._process is not None, "the JACK server is not running"
        return self._process.pid

    def accepts_clients(self) -> bool:
        result = subprocess.run(["jack_lsp", "-s", self.name], capture_output=True, stdin=subprocess.DEVNULL)
        return result.returncode == 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace").strip()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self) -> None:
        if self._process is None:
            return
        _running_servers.pop(self.name, None)
        process, self._process = self._process, None
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# The servers started by this process and not yet stopped, by server name.
_running_servers: dict[str, JackServer] = {}


def _default_server() -> JackServer | None:
    """Return the server that JACK_DEFAULT_SERVER names, if this process started it and it runs."""
    return _running_servers.get(os.environ.get("JACK_DEFAULT_SERVER", ""))


def default_server_log_tail() -> str:
    """The end of the log of the server that JACK_DEFAULT_SERVER names, if this process started it."""
    server = _default_server()
    if server is None:
        return "(not a server these tests started)"
    return server.log_tail()


def check_default_server(waited_for: str) -> None:
    """Raise JackServerError if the server that JACK_DEFAULT_SERVER names has stopped serving clients.

    Called where a wait for `waited_for` timed out, so that the failure
    names a stopped server rather than the daemon. A server whose log shows
    a cycle past the client timeout but that still accepts clients has
    recovered, so the caller raises its own failure.
    """
    server = _default_server()
    if server is None:
        return
    log = server.log()
    if not any(sign in log for sign in STOPPED_SERVER_SIGNS):
        return
    if server.accepts_clients():
        return
    raise JackServerError(f"the JACK server refused clients while the test waited for {waited_for}; the end of its log:\n{server.log_tail()}")


def _end_with_parent() -> None:
    """In the child before exec: have the kernel send SIGTERM when the test process dies.

    A test run killed from outside (a timeout, Ctrl-C twice) never reaches
    the fixture's `stop`, and an orphaned jackd keeps counting towards
    JACK's limit of servers per machine.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


JACK_LSP_TIMEOUT = 15.0  # seconds of failed jack_lsp runs before jack_ports raises


def jack_ports() -> list[str]:
    """Return every port of the JACK server that JACK_DEFAULT_SERVER names, audio ones included.

    jack_lsp opens a new JACK client each time, and such an open fails
    while the server waits for a late client, so a failure is retried until
    JACK_LSP_TIMEOUT. The error quotes jack_lsp's last stderr and the end of
    the server's log.
    """
    deadline = time.monotonic() + JACK_LSP_TIMEOUT
    pause = 0.1
    while True:
        result = subprocess.run(["jack_lsp"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode == 0:
            return result.stdout.splitlines()
        if time.monotonic() > deadline:
            raise JackServerError(
                f"jack_lsp failed for {JACK_LSP_TIMEOUT:.0f} s; its last stderr: {result.stderr.strip()!r}; "
                f"the end of the server's log:\n{default_server_log_tail()}"
            )
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


def wait_for_port(name_part: str, timeout: float = 10.0) -> str:
    """Wait until a JACK port has the full name `name_part`, or exactly one contains it; return its full name."""
    deadline = time.monotonic() + timeout
    while True:
        ports = jack_ports()
        if name_part in ports:
            return name_part
        matches = [port for port in ports if name_part in port]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise AssertionError(f"JACK port name part {name_part!r} is ambiguous: {matches}")
        if time.monotonic() > deadline:
            check_default_server(f"a port containing {name_part!r}")
            raise AssertionError(f"no JACK port containing {name_part!r} after {timeout} s; ports: {jack_ports()}")
        time.sleep(0.1)


def connect_ports(source: str, destination: str) -> None:
    """Connect two JACK ports by full name with jack_connect."""
    subprocess.run(["jack_connect", source, destination], check=True, capture_output=True, stdin=subprocess.DEVNULL)


_receiver_numbers = itertools.count(1)
RECEIVER_QUEUE_SIZE = 65536  # messages RtMidi queues until the reading thread takes them
RECEIVER_POLL_INTERVAL = 0.0005  # seconds the reading thread sleeps when RtMidi's queue is empty


class Receiver:
    """A virtual JACK MIDI input that records every message it receives.

    Each recorded message is a mido.Message whose `time` is its arrival time
    in seconds, not mido's usual delta: the time.perf_counter() value at the
    first message plus the sum of python-rtmidi's delta times since. Under JACK
    those deltas are read in JACK's process cycle, so the times keep the
    accuracy of one JACK period even when the reading thread runs late.

    A thread of the receiver's own reads RtMidi's queue; no Python callback
    runs in JACK's process thread. Such a callback waits for the GIL, and
    python-rtmidi holds the GIL while it opens, activates or closes a JACK
    client. A test that opened a Sender while a note arrived here then left
    the --sync server waiting for this client until its 5 s timeout, after
    which the server replayed stale buffers and refused new clients.
    """

    def __init__(self, source: str | None = None, client_name: str | None = None) -> None:
        self.client_name = client_name or f"sideman-test-rx-{os.getpid()}-{next(_receiver_numbers)}"
        self.port_name = f"{self.client_name}:in"
        self._received: list[mido.Message] = []
        self._clock: float | None = None
        self._arrived = threading.Condition()
        self._stop_reading = threading.Event()
        self._read_error: BaseException | None = None  # raised again by messages() and wait_for()

        self._port = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=self.client_name, queue_size_limit=RECEIVER_QUEUE_SIZE)
        # Record clock and SysEx too; active sensing is only noise here.
        self._port.ignore_types(sysex=False, timing=False, active_sense=True)
        self._port.open_virtual_port("in")
        self._reader = threading.Thread(target=self._read, args=(self._port,), name=f"{self.client_name} reader", daemon=True)
        self._reader.start()
        if source is None:
            return
        try:
            self.connect(source)
        except BaseException:
            self.close()
            raise

    def connect(self, source: str) -> None:
        """Connect the JACK output port named by `source` (full name or unique part) to this receiver."""
        connect_ports(wait_for_port(source), self.port_name)

    def _read(self, port: rtmidi.MidiIn) -> None:
        try:
            while not self._stop_reading.is_set():
                event = port.get_message()
                if event is None:
                    time.sleep(RECEIVER_POLL_INTERVAL)
                    continue
                self._record(event)

            # What arrived before close() is recorded too, up to one queue's worth.
            for _ in range(RECEIVER_QUEUE_SIZE):
                event = port.get_message()
                if event is None:
                    break
                self._record(event)
        except BaseException as error:
            with self._arrived:
                self._read_error = error
                self._arrived.notify_all()

    def _record(self, event: tuple[list[int], float]) -> None:
        data_bytes, delta = event
        if self._clock is None:
            self._clock = time.perf_counter()
        else:
            self._clock += delta
        message = mido.Message.from_bytes(data_bytes, time=self._clock)
        with self._arrived:
            self._received.append(message)
            self._arrived.notify_all()

    def _raise_read_error(self) -> None:
        if self._read_error is not None:
            raise AssertionError(f"the receiver {self.port_name} stopped reading") from self._read_error

    def messages(self) -> list[mido.Message]:
        with self._arrived:
            self._raise_read_error()
            return list(self._received)

    def note_ons(self) -> list[mido.Message]:
        """Return the note_on messages with velocity > 0."""
        return [message for message in self.messages() if message.type == "note_on" and message.velocity > 0]

    def wait_for(self, predicate: Callable[[list[mido.Message]], bool], timeout: float = 5.0) -> list[mido.Message]:
        """Wait until `predicate(messages)` is true; return the messages, or fail listing them."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while not predicate(list(self._received)):
                self._raise_read_error()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.wait(remaining)
            else:
                return list(self._received)
            received = list(self._received)

        # Outside the lock: the check runs jack_lsp, and the reading thread goes on recording meanwhile.
        check_default_server(f"messages on {self.port_name}")
        raise AssertionError(f"condition not met within {timeout} s; received: {received}")

    def balance(self) -> dict[tuple[int, int], int]:
        """Return {(channel, pitch): count} of note_ons with no note_off yet; empty when balanced.

        A note_on with velocity 0 counts as a note_off, as in MIDI running status.
        """
        sounding: dict[tuple[int, int], int] = {}
        for message in self.messages():
            if message.type not in ("note_on", "note_off"):
                continue
            key = (message.channel, message.note)
            if message.type == "note_on" and message.velocity > 0:
                sounding[key] = sounding.get(key, 0) + 1
            elif sounding.get(key, 0) > 0:
                sounding[key] -= 1
        return {key: count for key, count in sounding.items() if count > 0}

    def close(self) -> None:
        if self._port is None:
            return
        port, self._port = self._port, None
        self._stop_reading.set()
        self._reader.join()
        # As MidiOutput.close does: let libjack finish its latency updates before the port goes.
        time.sleep(JACK_SETTLE_TIME)
        port.close_port()
        port.delete()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_sender_numbers = itertools.count(1)


class Sender:
    """A virtual JACK MIDI output, as a musician's keyboard or a controller, connected to a port of the daemon."""

    def __init__(self, destination: str) -> None:
        self.client_name = f"sideman-test-tx-{os.getpid()}-{next(_sender_numbers)}"
        self.port_name = f"{self.client_name}:out"
        self._port = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=self.client_name)
        self._port.open_virtual_port("out")
        self.destination = destination
        try:
            connect_ports(self.port_name, wait_for_port(destination))
        except BaseException:
            self.close()
            raise

    def reconnect(self) -> None:
        """Disconnect from the destination and connect again."""
        destination = wait_for_port(self.destination)
        subprocess.run(["jack_disconnect", self.port_name, destination], capture_output=True, stdin=subprocess.DEVNULL)
        connect_ports(self.port_name, destination)

    def send(self, message: mido.Message) -> None:
        self._port.send_message(message.bytes())

    def play(self, notes: list[tuple[int, float]], seconds_per_beat: float, gate: float = 0.9, channel: int = 0) -> list[float]:
        """Play (pitch, beats) pairs one after the other in real time; return each note_on's time.perf_counter()."""
        onsets = []
        start = time.perf_counter()
        beat = 0.0
        for pitch, beats in notes:
            onset = start + beat * seconds_per_beat
            _sleep_until(onset)
            onsets.append(time.perf_counter())
            self.send(mido.Message("note_on", channel=channel, note=pitch, velocity=100))
            _sleep_until(onset + gate * beats * seconds_per_beat)
            self.send(mido.Message("note_off", channel=channel, note=pitch, velocity=0))
            beat += beats
        return onsets

    def close(self) -> None:
        if self._port is None:
            return
        port, self._port = self._port, None
        time.sleep(JACK_SETTLE_TIME)
        port.close_port()
        port.delete()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _sleep_until(deadline: float) -> None:
    remaining = deadline - time.perf_counter()
    if remaining > 0:
        time.sleep(remaining)
