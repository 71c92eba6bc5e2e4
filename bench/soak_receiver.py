"""The soak run's JACK MIDI receiver, which closes its whole client and opens it again under the same name."""

import logging
import subprocess
import threading
import time
from dataclasses import dataclass

import mido
import rtmidi

from sideman.midiport import JACK_SETTLE_TIME
from tests.jack import RECEIVER_POLL_INTERVAL, RECEIVER_QUEUE_SIZE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceivedMessage:
    segment: int  # counts the receiver's openings from 0
    message: mido.Message  # `time` is the JACK-stamped arrival in seconds, on this opening's own time origin
    wall: float  # time.perf_counter() when the reader thread took the message


class ReopeningReceiver:
    """A JACK MIDI input under a fixed client name that can close its whole client and open it again.

    Arrival times follow tests.jack.Receiver: perf_counter at an opening's
    first message plus python-rtmidi's delta times, which RtMidi takes in
    JACK's process cycle. Each opening starts a new segment with its own
    origin. As there, a reader thread takes the messages from RtMidi's
    queue, so that no Python code runs in JACK's process thread.
    """

    def __init__(self, client_name: str) -> None:
        self.client_name = client_name
        self.port_name = f"{client_name}:in"
        self.segment = -1
        self.opened_at: list[float] = []  # time.perf_counter() of each opening
        self.closed_at: list[float] = []
        self._received: list[ReceivedMessage] = []
        self._clock: float | None = None
        self._lock = threading.Lock()
        self._port: rtmidi.MidiIn | None = None
        self._reader: threading.Thread | None = None
        self._stop_reading = threading.Event()
        self.open()

    def open(self) -> None:
        """Open the client and its port `in`; raise RuntimeError when JACK gives the port another name."""
        with self._lock:
            self.segment += 1
            self._clock = None
        port = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=self.client_name, queue_size_limit=RECEIVER_QUEUE_SIZE)
        port.ignore_types(sysex=False, timing=False, active_sense=True)
        port.open_virtual_port("in")
        self._port = port
        self._stop_reading.clear()
        self._reader = threading.Thread(target=self._read, args=(port, self.segment), name=f"{self.client_name} reader", daemon=True)
        self._reader.start()
        wait_for_port_state(self.port_name, present=True)
        self.opened_at.append(time.perf_counter())
        log.info("receiver %s opened (opening %d)", self.port_name, self.segment + 1)

    def _read(self, port: rtmidi.MidiIn, segment: int) -> None:
        while not self._stop_reading.is_set():
            event = port.get_message()
            if event is None:
                time.sleep(RECEIVER_POLL_INTERVAL)
            else:
                self._record(event, segment)

        # What arrived before close() is recorded too, up to one queue's worth.
        for _ in range(RECEIVER_QUEUE_SIZE):
            event = port.get_message()
            if event is None:
                break
            self._record(event, segment)

    def _record(self, event: tuple[list[int], float], segment: int) -> None:
        wall = time.perf_counter()
        data, delta = event
        with self._lock:
            self._clock = wall if self._clock is None else self._clock + delta
            self._received.append(ReceivedMessage(segment, mido.Message.from_bytes(data, time=self._clock), wall))

    def close(self, timeout: float = 10.0) -> None:
        """Close the port and the client, and wait until the port has left the JACK server."""
        if self._port is None:
            return
        port, self._port = self._port, None
        self._stop_reading.set()
        if self._reader is not None:
            self._reader.join()
        time.sleep(JACK_SETTLE_TIME)
        port.close_port()
        port.delete()
        self.closed_at.append(time.perf_counter())
        wait_for_port_state(self.port_name, present=False, timeout=timeout)
        log.info("receiver %s closed", self.port_name)

    def received(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._received)

    def note_on_count(self) -> int:
        return sum(1 for item in self.received() if item.message.type == "note_on" and item.message.velocity > 0)


def wait_for_port_state(port_name: str, present: bool, timeout: float = 10.0) -> None:
    """Wait until the JACK port with the full name `port_name` is there (or gone); raise RuntimeError after `timeout` s.

    jack_lsp is itself a JACK client. It fails now and then while the server
    (started with --sync) waits for a slow client, so a failed call is retried.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(["jack_lsp"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode == 0 and (port_name in result.stdout.splitlines()) == present:
            return
        if result.returncode != 0:
            log.debug("jack_lsp failed with code %d: %s", result.returncode, result.stderr.strip())
        if time.monotonic() > deadline:
            state = "appear" if present else "leave the server"
            raise RuntimeError(f"the JACK port {port_name} did not {state} within {timeout:g} s; jack_lsp printed:\n{result.stdout}{result.stderr}")
        time.sleep(0.05)
