"""The daemon under soak: `sideman run --show` as a subprocess, its status requests, and the phrase sender's connection to its MIDI input."""

import logging
import shlex
import subprocess
import time
from pathlib import Path

import mido

from bench.live import SIDEMAN, ShownNote, free_udp_port, parse_show_output, request_status
from bench.soak_phrases import PhraseSender
from bench.soak_receiver import wait_for_port_state
from tests.jack import connect_ports

log = logging.getLogger(__name__)

START_TEMPO = 208.0  # BPM
DAEMON_INPUT = "sideman-in:in"
SENDER_TIMEOUT = 10.0  # seconds for the daemon's MIDI input to hear the sender


class SoakDaemon:
    """`sideman run --show` playing into the receiver, on the private JACK server, with its log in `workdir`."""

    def __init__(self, workdir: Path, receiver_port: str, model: str | None) -> None:
        self.osc_port = free_udp_port()
        self.out_path = workdir / "soak.out"
        self.log_path = workdir / "soak.log"
        self.command = [
            *SIDEMAN, "run", "--midi-backend", "jack", "--midi-out", receiver_port, "--osc-port", str(self.osc_port),
            "--tempo", f"{START_TEMPO:g}", "--log-level", "info", "--show",
        ]
        if model:
            self.command += ["--model", model]
        log.info("starting %s", shlex.join(self.command[1:]))
        with open(self.out_path, "wb") as out, open(self.log_path, "wb") as errors:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=errors)

    def status(self) -> dict[str, object]:
        """Send /sideman/status from a socket of its own and return the reply's key/value pairs."""
        return request_status(self.osc_port)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """End the daemon with SIGTERM (it releases its notes), then SIGKILL; return its exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("the daemon ignored SIGTERM for %g s: killing it", timeout)
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def shown_notes(self) -> list[ShownNote]:
        return parse_show_output(self.out_path.read_text(errors="replace"))


def connect_sender(sender: "PhraseSender", daemon: SoakDaemon, timeout: float = SENDER_TIMEOUT) -> None:
    """Connect the sender to sideman-in:in and wait until the daemon counts an ignored live note from it.

    Outside a live mode the daemon ignores live notes and counts them in its
    status (live_notes_ignored), which shows that the connection works. A
    connection made while the input client was starting up is made again.
    """
    destination = DAEMON_INPUT
    wait_for_port_state(destination, present=True, timeout=timeout)
    connect_ports(sender.port_name, destination)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sender.send(mido.Message("note_on", channel=0, note=0, velocity=1))
        sender.send(mido.Message("note_off", channel=0, note=0, velocity=0))
        time.sleep(0.2)
        if int(daemon.status().get("live_notes_ignored", 0)) > 0:
            log.info("sender %s connected to %s", sender.port_name, destination)
            return
        subprocess.run(["jack_disconnect", sender.port_name, destination], capture_output=True, stdin=subprocess.DEVNULL)
        connect_ports(sender.port_name, destination)
    raise RuntimeError(f"the daemon never heard {sender.port_name} on {destination} within {timeout:g} s; log {daemon.log_path}")
