"""`sideman run` as a subprocess on a private JACK server, playing into a receiver in this process.

The daemon connects its output to the receiver's port itself (`--midi-out`),
so the connection exists before the first note and nothing is missed.
"""

import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mido
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from tests.jack import JackServer, Receiver

log = logging.getLogger(__name__)

SIDEMAN = [sys.executable, "-m", "sideman.cli"]
STATUS_TIMEOUT = 5.0  # seconds to wait for the reply to /sideman/status
FIRST_NOTE_TIMEOUT = 30.0  # seconds from start-up to the first note before the run counts as failed

# One `--show` line: "  12.250 s  F#4   0.50 beats".
SHOW_LINE = re.compile(r"^\s*(?P<seconds>-?\d+\.\d+) s\s+(?P<name>\S+)\s+(?P<beats>\d+\.\d+) beats$")


# jackd's --port-max for the benchmark's server: 256, the default that jackd's
# manual page states. jackd2 1.9.21 itself makes room for 2,048 ports when the
# option is left out, and every client maps the server's shared memory whole.
BENCH_PORT_MAX = 256


@contextmanager
def private_jack_server(workdir: Path, port_max: int | None = None) -> Iterator[JackServer]:
    """Start a jackd with the dummy driver under a unique name and point this process's libjack at it.

    `port_max` is jackd's --port-max; None keeps the server's own default.
    """
    suffix = "" if port_max is None else f"-ports{port_max}"
    name = f"sideman-bench-{os.getpid()}{suffix}"
    server = JackServer(name, workdir / f"jackd{suffix}.log", port_max=port_max)
    server.start()
    previous = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = name
    log.info("started the private JACK server %s (dummy driver, --port-max %s)", name, port_max or "left out")
    try:
        yield server
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = previous
        log.info("stopped the private JACK server %s", name)


class TimedReceiver(Receiver):
    """A Receiver that also keeps the time its reader thread took each message from RtMidi's queue.

    Receiver stamps messages from python-rtmidi's delta times, which RtMidi
    (python-rtmidi 1.5) takes with jack_get_time() in the receiver's JACK
    process cycle: when the message reached this client, to one period.
    `wall_times` contains time.perf_counter() in the reader thread, later by
    up to tests.jack.RECEIVER_POLL_INTERVAL and the thread's scheduling delay.
    """

    def __init__(self) -> None:
        self.wall_times: list[float] = []
        super().__init__()

    def _record(self, event: tuple[list[int], float]) -> None:
        arrival = time.perf_counter()
        super()._record(event)
        self.wall_times.append(arrival)

    def note_on_times(self) -> list[tuple[int, float, float]]:
        """Return (pitch, JACK-stamped time, wall time) of every note_on with velocity > 0, in order."""
        messages = self.messages()
        return [
            (message.note, message.time, wall)
            for message, wall in zip(messages, list(self.wall_times))
            if message.type == "note_on" and message.velocity > 0
        ]


@dataclass
class ShownNote:
    """One `--show` line: the ideal onset in seconds since play started, the note name and its duration in beats."""

    seconds: float
    name: str
    beats: float


def parse_show_output(text: str) -> list[ShownNote]:
    notes = []
    for line in text.splitlines():
        match = SHOW_LINE.match(line)
        if match:
            notes.append(ShownNote(float(match["seconds"]), match["name"], float(match["beats"])))
    return notes


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def osc_datagram(address: str, *arguments: object) -> bytes:
    builder = OscMessageBuilder(address)
    for argument in arguments:
        builder.add_arg(argument)
    return builder.build().dgram


def request_status(osc_port: int) -> dict[str, object]:
    """Send /sideman/status to 127.0.0.1:`osc_port` from a socket of its own and return the reply's key/value pairs.

    Raises TimeoutError when no reply comes within STATUS_TIMEOUT.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        client.settimeout(STATUS_TIMEOUT)
        client.sendto(osc_datagram("/sideman/status"), ("127.0.0.1", osc_port))
        data, _ = client.recvfrom(65536)
    values = list(OscMessage(data).params)
    return dict(zip(values[0::2], values[1::2]))


class DaemonRun:
    """One `sideman run --show` process playing into a TimedReceiver, steered over OSC on 127.0.0.1."""

    def __init__(self, workdir: Path, label: str, arguments: list[str]):
        self.label = label
        self.receiver = TimedReceiver()
        self.osc_port = free_udp_port()
        self.out_path = workdir / f"{label}.out"
        self.log_path = workdir / f"{label}.log"
        self.record_path = workdir / f"{label}.mid"
        command = [
            *SIDEMAN, "run", "--midi-backend", "jack", "--midi-out", self.receiver.port_name,
            "--osc-port", str(self.osc_port), "--show", "--record", str(self.record_path), *arguments,
        ]
        log.info("%s: %s", label, " ".join(command[1:]))
        self.started = time.perf_counter()
        with open(self.out_path, "wb") as out, open(self.log_path, "wb") as errors:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=errors)
        self.peak_rss_kb: int | None = None

    def wait_for_first_note(self, timeout: float = FIRST_NOTE_TIMEOUT) -> float:
        """Wait for the first note_on; return its wall time (time.perf_counter)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            notes = self.receiver.note_on_times()
            if notes:
                return notes[0][2]
            if self.process.poll() is not None:
                break
            time.sleep(0.005)
        raise RuntimeError(f"{self.label}: no note within {timeout:g} s; daemon log {self.log_path}:\n{self.log_tail()}")

    def status(self) -> dict[str, object]:
        """Send /sideman/status and return the reply's key/value pairs."""
        return request_status(self.osc_port)

    def read_peak_rss(self) -> int | None:
        """Read the daemon's peak resident set size (VmHWM) in kB from /proc, while it runs."""
        try:
            with open(f"/proc/{self.process.pid}/status", encoding="utf-8") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        self.peak_rss_kb = int(line.split()[1])
        except OSError as error:
            log.warning("%s: cannot read the peak RSS of process %d: %s", self.label, self.process.pid, error)
        return self.peak_rss_kb

    def stop(self, timeout: float = 10.0) -> None:
        """End the daemon with SIGTERM (it releases its notes and closes its JACK client), then SIGKILL if needed."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("%s: the daemon ignored SIGTERM for %g s: killing it", self.label, timeout)
                self.process.kill()
                self.process.wait(timeout)
        # Let the last messages reach the receiver before it closes.
        time.sleep(0.2)
        self.receiver.close()

    def shown_notes(self) -> list[ShownNote]:
        return parse_show_output(self.out_path.read_text(errors="replace"))

    def recorded_note_on_times(self) -> list[float]:
        """Return the times in seconds, since the first message sent, at which the engine sent each note_on.

        They come from the `--record` file, which the daemon writes when it
        stops, in ticks of about 1 ms (480 per beat at 120 BPM).
        """
        if not self.record_path.exists():
            return []
        seconds = 0.0
        times = []
        for message in mido.MidiFile(self.record_path):
            seconds += message.time
            if message.type == "note_on" and message.velocity > 0:
                times.append(seconds)
        return times

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> "DaemonRun":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Spinner:
    """A process that keeps one core busy: a Python loop that never sleeps."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", "while True:\n    pass"], stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)

    def __enter__(self) -> "Spinner":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class OscFlood:
    """A thread that sends `rate` /sideman/param messages per second to 127.0.0.1:`port`, alternating two values.

    Messages go out in groups of `rate / 100` every 10 ms, at absolute
    deadlines, so the rate stays the same even when a sleep ends late.
    """

    def __init__(self, port: int, rate: int, plugin: str, name: str, values: tuple[float, float]):
        self.port = port
        self.rate = rate
        self.datagrams = [osc_datagram("/sideman/param", plugin, name, float(value)) for value in values]
        self.sent = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, name="osc-flood", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _send(self) -> None:
        interval = 0.01
        group = max(1, round(self.rate * interval))
        started = time.perf_counter()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            deadline = started
            while not self._stop.is_set():
                for _ in range(group):
                    sender.sendto(self.datagrams[self.sent % 2], ("127.0.0.1", self.port))
                    self.sent += 1
                deadline += interval
                pause = deadline - time.perf_counter()
                if pause > 0:
                    self._stop.wait(pause)
        self.seconds = time.perf_counter() - started

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def measured_rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0
