"""Port loss on a private JACK server: the synth, the musician's keyboard or the server itself goes away and returns.

sideman must keep playing, connect again by itself and leave no note
sounding at the receivers it reaches.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import mido
import pytest
import rtmidi

from tests.jack import CHILD_STDOUT_PRELUDE, Receiver, wait_for_port
from tests.live import DAEMON_PORT, LiveDaemon

pytestmark = pytest.mark.ports

RETURN_TIMEOUT = 15.0  # seconds for sideman to reach a returning port; its backoff is at most 5 s


def wait_for_log(daemon: LiveDaemon, text: str, timeout: float = RETURN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while text not in daemon.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the daemon's log:\n{daemon.log()[-3000:]}")
        time.sleep(0.1)


def assert_nothing_sounds(receiver: Receiver) -> None:
    assert receiver.balance() == {}, f"notes left sounding: {receiver.balance()}"


def test_synth_leaves_and_returns(tmp_path):
    synth_name = f"sideman-test-synth-{os.getpid()}"
    synth = Receiver(client_name=synth_name)
    daemon = LiveDaemon(tmp_path, "--tempo", "240", "--midi-out", synth_name, autoplay=True)
    try:
        synth.wait_for(lambda messages: sum(1 for m in messages if m.type == "note_on") >= 4, timeout=20)
        synth.close()
        wait_for_log(daemon, "lost: a port is gone")

        time.sleep(1.0)
        synth = Receiver(client_name=synth_name)
        wait_for_log(daemon, "restored")
        synth.wait_for(lambda messages: sum(1 for m in messages if m.type == "note_on") >= 4, timeout=RETURN_TIMEOUT)

        assert daemon.status()["running"] == 1
        assert daemon.stop_process() == 0
        assert_nothing_sounds(synth)
    finally:
        daemon.close()
        synth.close()


class Keyboard:
    """A JACK MIDI output port under a fixed client name, as a keyboard's driver would register it."""

    def __init__(self, client_name: str):
        self._port: rtmidi.MidiOut | None = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=client_name)
        self._port.open_virtual_port("out")

    def send(self, message: mido.Message) -> None:
        self._port.send_message(message.bytes())

    def close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            port.close_port()
            port.delete()


def probe_heard(daemon: LiveDaemon, keyboard: Keyboard, value: int) -> bool:
    """Send an unmapped control change until the daemon's debug log shows it arrived."""
    deadline = time.monotonic() + RETURN_TIMEOUT
    while time.monotonic() < deadline:
        keyboard.send(mido.Message("control_change", channel=15, control=119, value=value))
        time.sleep(0.1)
        if f"control=119 value={value}" in daemon.log():
            return True
    return False


def test_keyboard_leaves_and_returns(tmp_path):
    keyboard_name = f"sideman-test-keys-{os.getpid()}"
    keyboard = Keyboard(keyboard_name)
    daemon = LiveDaemon(tmp_path, "--midi-in", keyboard_name)
    try:
        assert probe_heard(daemon, keyboard, 1)
        keyboard.close()
        wait_for_log(daemon, "lost: a port is gone")

        keyboard = Keyboard(keyboard_name)
        wait_for_log(daemon, "restored")
        assert probe_heard(daemon, keyboard, 2)
        assert daemon.stop_process() == 0
        assert_nothing_sounds(daemon.receiver)
    finally:
        daemon.close()
        keyboard.close()


def test_jack_server_restarts(tmp_path, own_jack_server):
    daemon = LiveDaemon(tmp_path, "--tempo", "240", autoplay=True)
    try:
        daemon.wait_for_notes(4)
        daemon.receiver.close()
        daemon.receiver = None

        own_jack_server.stop()
        wait_for_log(daemon, "the JACK server stopped")
        own_jack_server.start()
        wait_for_log(daemon, "the JACK server runs again", timeout=30.0)

        wait_for_port(DAEMON_PORT, timeout=RETURN_TIMEOUT)
        daemon.receiver = Receiver(DAEMON_PORT)
        daemon.wait_for_notes(4)
        status = daemon.status()
        assert status["running"] == 1
        assert daemon.stop_process(signal.SIGINT) == 0
        assert_nothing_sounds(daemon.receiver)
    finally:
        daemon.close()


def test_sigterm_while_jack_server_is_gone(tmp_path, own_jack_server):
    daemon = LiveDaemon(tmp_path, "--tempo", "240", autoplay=True)
    try:
        daemon.wait_for_notes(2)
        daemon.receiver.close()
        daemon.receiver = None
        own_jack_server.stop()
        wait_for_log(daemon, "the JACK server stopped")

        assert daemon.process.poll() is None
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(15.0) == 0
        assert "sideman stopped" in daemon.log()
    finally:
        daemon.kill()
        own_jack_server.start()
        daemon.close()


# Sends notes through SharedOutput with a SendBudget, as the daemon does, and
# prints how many went out and how many were dropped. It runs in a process of
# its own because, without the budget, python-rtmidi would block it for good.
STALLED_SENDER = CHILD_STDOUT_PRELUDE + """
import time
import mido
from sideman.jackwatch import JackWatch
from sideman.midiport import open_output
from sideman.sendbudget import SendBudget
from sideman.sharedoutput import SharedOutput
from sideman.clock import MonotonicClock

watch = JackWatch("sideman-test-watch")
output = SharedOutput(open_output("jack", client_name="sideman-test-stall"), MonotonicClock())
output.set_send_guard(SendBudget(lambda: watch).allows)
print("ready", flush=True)
sys.stdin.readline()
started = time.perf_counter()
for index in range(20000):
    output.send(mido.Message("note_on" if index % 2 == 0 else "note_off", note=60, velocity=90 if index % 2 == 0 else 0))
print("sent", 20000 - output.dropped, "dropped", output.dropped, "seconds", round(time.perf_counter() - started, 3), flush=True)
"""


def test_stalled_jack_server_drops_instead_of_freezing(own_jack_server):
    sender = subprocess.Popen([sys.executable, "-c", STALLED_SENDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert sender.stdout.readline().strip() == "ready"
        os.kill(own_jack_server.pid, signal.SIGSTOP)
        try:
            sender.stdin.write("go\n")
            sender.stdin.flush()
            # Frozen, the sender would never print; the read then waits for the kill below.
            line = _read_line_within(sender, 30.0)
        finally:
            os.kill(own_jack_server.pid, signal.SIGCONT)
        # Closing its JACK client needs the server running again.
        assert sender.wait(30.0) == 0
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait(10)
        sender.stdin.close()
        sender.stdout.close()

    words = line.split()
    assert words[0] == "sent", line
    assert int(words[3]) > 0, f"nothing was dropped while the server was stopped: {line}"


def _read_line_within(process: subprocess.Popen, timeout: float) -> str:
    """Return the next line of the process's stdout, or kill the process and fail after `timeout` seconds."""
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        line = process.stdout.readline()
    finally:
        timer.cancel()
    assert line, f"no output within {timeout:g} s: the sender froze"
    return line
