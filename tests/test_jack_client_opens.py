"""JACK clients open and close while a MIDI input of the same process receives a stream.

python-rtmidi holds the GIL while it opens, activates or closes a JACK
client, and the JACK server runs a cycle of every client before the open
completes. A Python callback in an input's JACK process thread then waited
for the GIL while the GIL's holder waited for the server: the open failed
("Cannot open ... client", "JACK server not running?") and the server
replayed stale buffers meanwhile. Both tests here failed that way with
callbacks; the daemon's input and the test receiver now read RtMidi's queue
from a thread of their own.
"""

import subprocess
import sys
import time

import mido
import pytest

from sideman.midiinput import open_input
from sideman.midiport import open_output
from tests.jack import CHILD_STDOUT_PRELUDE, CLIENT_TIMEOUT_MS, Receiver, Sender, connect_ports, wait_for_port

pytestmark = pytest.mark.ports

OPENS = 20  # clients opened and closed while the stream plays
CLIENT_TIMEOUT = CLIENT_TIMEOUT_MS / 1000.0  # seconds: an open that took this long waited for the server's timeout
STREAM_INTERVAL = 0.005  # seconds between the stream's messages: note_on and note_off in turn

# Streams note_on/note_off pairs of A4 on the port `out` of the client named by
# its first argument until its stdin closes, then prints how many pairs it sent.
STREAM = CHILD_STDOUT_PRELUDE + f"""
import threading, time
import rtmidi
out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=sys.argv[1])
out.open_virtual_port("out")
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
print("ready", flush=True)
pairs = 0
while not done.is_set():
    out.send_message([0x90, 69, 100])
    time.sleep({STREAM_INTERVAL})
    out.send_message([0x80, 69, 0])
    time.sleep({STREAM_INTERVAL})
    pairs += 1
time.sleep(0.2)
print(pairs, flush=True)
out.close_port()
out.delete()
"""


class Stream:
    """A subprocess that plays the stream on the port `out` of client `client_name` until stopped."""

    def __init__(self, client_name: str) -> None:
        self.client_name = client_name
        self.process = subprocess.Popen(
            [sys.executable, "-c", STREAM, client_name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.process.stdout.readline().strip() == "ready"

    def connect(self, destination: str) -> None:
        connect_ports(wait_for_port(f"{self.client_name}:out"), destination)

    def stop(self) -> int:
        """Stop the stream and return how many note pairs it sent."""
        self.process.stdin.close()
        try:
            pairs = int(self.process.stdout.readline())
            assert self.process.wait(15) == 0
            return pairs
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
            self.process.stdout.close()


def open_and_close_outputs(prefix: str) -> None:
    for number in range(OPENS):
        started = time.monotonic()
        output = open_output("jack", client_name=f"{prefix}-{number}")
        output.close()
        assert time.monotonic() - started < CLIENT_TIMEOUT, f"open and close {number} took the server's client timeout"


def test_daemon_input_during_output_opens(own_jack_server):
    received: list[mido.Message] = []
    stream = Stream("sideman-test-stream")
    try:
        with open_input("jack", client_name="sideman-test-in", on_message=received.append) as midi_input:
            stream.connect(midi_input.name)
            time.sleep(0.2)

            open_and_close_outputs("sideman-test-out")

            pairs = stream.stop()
            time.sleep(0.1)
    finally:
        if stream.process.poll() is None:
            stream.stop()

    # The connection is made while the stream plays: what arrived may begin with a note_off.
    kinds = [message.type for message in received]
    if kinds[:1] == ["note_off"]:
        kinds = kinds[1:]
    assert 0 < kinds.count("note_on") <= pairs
    assert kinds == ["note_on", "note_off"] * kinds.count("note_on"), "a message of the stream was lost or repeated"


def test_receiver_during_sender_opens(own_jack_server):
    stream = Stream("sideman-test-stream")
    receiver = Receiver()
    # The senders play into a receiver of their own: when a port connected to an
    # input closes, JACK drops that cycle's events from every source of the input
    # ("MidiBufferMixdown - invalid source buffer").
    sink = Receiver()
    try:
        stream.connect(receiver.port_name)
        time.sleep(0.2)

        for number in range(OPENS):
            started = time.monotonic()
            with Sender(sink.port_name):
                pass
            assert time.monotonic() - started < CLIENT_TIMEOUT, f"sender {number} took the server's client timeout"

        pairs = stream.stop()
        time.sleep(0.1)
        note_ons = receiver.note_ons()
        assert 0 < len(note_ons) <= pairs
        assert receiver.balance() == {}
    finally:
        if stream.process.poll() is None:
            stream.stop()
        receiver.close()
        sink.close()
