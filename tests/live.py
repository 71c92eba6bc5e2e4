"""Run `sideman run` as a subprocess against the private JACK server, and talk OSC to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mido
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from tests.jack import Receiver, Sender, check_default_server, jack_ports, wait_for_port

SIDEMAN = [sys.executable, "-m", "sideman.cli"]
DAEMON_PORT = "sideman:out"
STACK_DUMP_WAIT = 1.0  # seconds for a daemon to write its thread stacks after SIGUSR1


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def osc_message(address: str, *arguments) -> bytes:
    builder = OscMessageBuilder(address)
    for argument in arguments:
        builder.add_arg(argument)
    return builder.build().dgram


DAEMON_LOG_TAIL_CHARACTERS = 3000  # of each daemon's log in the report of a failed test

# The daemons started since the current test began; conftest.py quotes them in a failed test's report.
started_daemons: list[LiveDaemon] = []


class DaemonCrash(AssertionError):
    """The daemon ended by a signal that the test did not send: a crash, never rerun (tests/conftest.py)."""


def describe_started_daemons() -> str:
    """Describe each daemon in `started_daemons`: its exit status and the end of its log."""
    parts = []
    for daemon in started_daemons:
        parts.append(f"sideman run (pid {daemon.process.pid}) {daemon.exit_status()}; the end of its log:\n{daemon.log_tail()}")
    return "\n\n".join(parts) or "(no daemon started)"


class LiveDaemon:
    """A `sideman run` process, its receiver, and a UDP socket on 127.0.0.1 to steer it."""

    def __init__(self, tmp_path: Path, *arguments: str, autoplay: bool = False):
        """Start the daemon; without `autoplay` it starts playing once the receiver is connected."""
        self.osc_port = free_udp_port()
        self.log_path = tmp_path / "daemon.log"
        self.out_path = tmp_path / "daemon.out"
        autoplay_option = "--autoplay" if autoplay else "--no-autoplay"
        command = [*SIDEMAN, "run", "--osc-port", str(self.osc_port), "--log-level", "debug", autoplay_option, *arguments]
        with open(self.log_path, "wb") as log, open(self.out_path, "wb") as out:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=log, env=dict(os.environ))
        started_daemons.append(self)
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(5.0)
        self.receiver: Receiver | None = None
        self._signals_sent = {signal.SIGTERM}  # and SIGKILL once kill() sends it, and whatever stop_process sends

        try:
            wait_for_port(DAEMON_PORT, timeout=20.0)
            self.receiver = Receiver(DAEMON_PORT)
            if not autoplay:
                self.send("/sideman/start")
        except BaseException:
            self._dump_stacks()
            self.close()
            raise

    def connect_sender(self, input_port: str = "sideman-in:in", timeout: float = 10.0) -> Sender:
        """Open a Sender into the daemon's MIDI input and wait until the daemon hears it.

        A probe control change (CC 119 on channel 16, mapped to nothing) is
        sent until the daemon's debug log shows it; a connection made while
        the daemon's input client was still starting up is made again.
        """
        sender = Sender(input_port)
        probe = mido.Message("control_change", channel=15, control=119, value=0)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                for _ in range(10):
                    sender.send(probe)
                    time.sleep(0.05)
                    if "control=119" in self.log():
                        return sender
                sender.reconnect()
            check_default_server(f"the daemon to hear {sender.port_name}")
            raise AssertionError(f"the daemon never heard {sender.port_name} on {input_port}; log:\n{self.log()[-2000:]}")
        except BaseException:
            sender.close()
            raise

    def send(self, address: str, *arguments) -> None:
        self.socket.sendto(osc_message(address, *arguments), ("127.0.0.1", self.osc_port))

    def send_raw(self, datagram: bytes) -> None:
        self.socket.sendto(datagram, ("127.0.0.1", self.osc_port))

    def status(self) -> dict:
        """Send /sideman/status and return the reply's key/value pairs."""
        self.send("/sideman/status")
        data, _ = self.socket.recvfrom(65536)
        message = OscMessage(data)
        assert message.address == "/sideman/status"
        values = list(message.params)
        return dict(zip(values[0::2], values[1::2]))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self) -> str:
        return self.log()[-DAEMON_LOG_TAIL_CHARACTERS:]

    def exit_status(self) -> str:
        """Describe how the process ended: "still running", "exited with 0" or "ended by SIGSEGV"."""
        code = self.process.poll()
        if code is None:
            return "still running"
        if code >= 0:
            return f"exited with {code}"
        return f"ended by {signal.Signals(-code).name}"

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_for_notes(self, count: int, timeout: float = 20.0) -> list:
        assert self.receiver is not None
        return self.receiver.wait_for(lambda messages: sum(1 for m in messages if m.type == "note_on" and m.velocity > 0) >= count, timeout)

    def stop_process(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        self._signals_sent.add(signum)
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        finally:
            # Let the last messages reach the receiver before it closes.
            time.sleep(0.2)

    def kill(self) -> None:
        """End the daemon: SIGTERM first, so it closes its JACK client cleanly, then SIGKILL.

        A killed client leaves the JACK server waiting for it until its client
        timeout, which stalls every other client.
        """
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self._signals_sent.add(signal.SIGKILL)
            self.process.kill()
            self.process.wait(10)

    def close(self) -> None:
        self.kill()
        if self.receiver is not None:
            self.receiver.close()
        self.socket.close()
        # The next daemon must find the name sideman:out free again.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and DAEMON_PORT in jack_ports():
            time.sleep(0.1)
        self._check_not_crashed()

    def _dump_stacks(self) -> None:
        """Ask a running daemon for every thread's stack (SIGUSR1), so that the end of its log shows where start-up stuck."""
        if self.process.poll() is not None:
            return
        self._signals_sent.add(signal.SIGUSR1)
        self.process.send_signal(signal.SIGUSR1)
        time.sleep(STACK_DUMP_WAIT)

    def _check_not_crashed(self) -> None:
        code = self.process.returncode
        if code is not None and code < 0 and -code not in self._signals_sent:
            raise DaemonCrash(f"sideman run {self.exit_status()}; the end of its log:\n{self.log_tail()}")

    def __enter__(self) -> "LiveDaemon":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
