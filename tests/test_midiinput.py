"""MIDI input port: callback robustness with a fake rtmidi port, real ports on a private JACK server."""

from __future__ import annotations

import collections
import itertools
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time

import mido
import pytest

from sideman.errors import MidiSystemError
from sideman.midiinput import SUMMARY_INTERVAL, MidiInput, RepeatedWarning, open_input
from tests.jack import CHILD_STDOUT_PRELUDE, connect_ports, jack_ports, wait_for_port
from tests.test_midiport import FakeMidiSystem

LOGGER = "sideman.midiinput"


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeRtMidiIn:
    """Records the calls MidiInput makes on an rtmidi.MidiIn and delivers events through its callback."""

    def __init__(self) -> None:
        self.ignored: dict[str, bool] | None = None
        self.callback = None
        self.cancelled = 0
        self.closed = 0
        self.deleted = 0

    def ignore_types(self, sysex: bool = True, timing: bool = True, active_sense: bool = True) -> None:
        self.ignored = {"sysex": sysex, "timing": timing, "active_sense": active_sense}

    def set_callback(self, func, data=None) -> None:
        self.callback = func

    def cancel_callback(self) -> None:
        self.cancelled += 1

    def close_port(self) -> None:
        self.closed += 1

    def delete(self) -> None:
        self.deleted += 1

    def deliver(self, data: list[int], delta: float = 0.0) -> None:
        """Call the callback as rtmidi does; its return value must be None."""
        assert self.callback((data, delta), None) is None


class Collector:
    """An on_message handler that records messages and lets a test wait for them."""

    def __init__(self) -> None:
        self.messages: list[mido.Message] = []
        self._arrived = threading.Condition()

    def __call__(self, message: mido.Message) -> None:
        with self._arrived:
            self.messages.append(message)
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[mido.Message]:
        """Wait until `count` messages have arrived; return them, or fail listing what did arrive."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"expected {count} messages within {timeout} s; received: {self.messages}")
                self._arrived.wait(remaining)
            return list(self.messages)


def failing_handler(message: mido.Message) -> None:
    raise RuntimeError(f"handler cannot use {message.type}")


def fake_input(on_message=None, clock: FakeClock | None = None) -> tuple[MidiInput, FakeRtMidiIn]:
    # ALSA, because closing under JACK waits JACK_SETTLE_TIME.
    port = FakeRtMidiIn()
    midi_input = MidiInput(port, "sideman-in:in", "alsa", on_message or Collector(), clock=clock or FakeClock())
    return midi_input, port


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == LOGGER and record.levelno == logging.WARNING]


# --- Callback with a fake rtmidi port ------------------------------------------


def test_input_registers_callback_and_filters():
    midi_input, port = fake_input()

    assert port.callback == midi_input._receive
    assert port.ignored == {"sysex": True, "timing": False, "active_sense": True}


def test_input_passes_messages_in_order():
    collector = Collector()
    midi_input, port = fake_input(collector)

    port.deliver([0x90, 60, 100])
    port.deliver([0xB3, 74, 127], delta=0.25)
    port.deliver([0xF8], delta=0.02)
    port.deliver([0xFA])
    port.deliver([0x80, 60, 0], delta=0.5)

    assert [message.bytes() for message in collector.messages] == [[0x90, 60, 100], [0xB3, 74, 127], [0xF8], [0xFA], [0x80, 60, 0]]
    assert [message.time for message in collector.messages] == [0.0, 0.25, 0.02, 0.0, 0.5]
    assert midi_input.received == 5
    assert midi_input.malformed == 0
    assert midi_input.handler_errors == 0


@pytest.mark.parametrize(
    "data",
    [
        pytest.param([], id="empty"),
        pytest.param([0x40, 60, 100], id="data-byte-as-status"),
        pytest.param([0x90, 200, 100], id="data-byte-above-127"),
        pytest.param([0x90, 60], id="too-short"),
        pytest.param([0x90, 60, 100, 1], id="too-long"),
        pytest.param([0xF4], id="undefined-status"),
        pytest.param([0xF7], id="sysex-end-alone"),
        pytest.param([0xF0, 1, 2], id="sysex-without-end"),
        pytest.param([0x90, None, 100], id="not-an-int"),
    ],
)
def test_input_drops_malformed_bytes(data, caplog):
    collector = Collector()
    midi_input, port = fake_input(collector)

    port.deliver(data)
    port.deliver([0x90, 62, 90])

    assert [message.bytes() for message in collector.messages] == [[0x90, 62, 90]]
    assert midi_input.malformed == 1
    assert midi_input.received == 1
    assert len(warnings_of(caplog)) == 1


def test_input_malformed_warning_shows_hex_bytes(caplog):
    _, port = fake_input()

    port.deliver([0x90, 200, 1])

    [record] = warnings_of(caplog)
    message = record.getMessage()
    assert "malformed MIDI message on sideman-in:in: 90 C8 01" in message
    assert "data byte must be in range 0..127" in message


def test_input_malformed_warning_for_empty_event(caplog):
    _, port = fake_input()

    port.deliver([])

    [record] = warnings_of(caplog)
    assert "sideman-in:in: (no bytes)" in record.getMessage()


def test_input_survives_an_event_of_the_wrong_shape(caplog):
    midi_input, port = fake_input()

    assert port.callback("not an event", None) is None

    assert midi_input.malformed == 1
    assert "'not an event'" in warnings_of(caplog)[0].getMessage()


def test_input_counts_handler_errors_and_continues(caplog):
    calls = []

    def handler(message: mido.Message) -> None:
        calls.append(message.type)
        if message.type == "control_change":
            raise KeyError("no mapping for control 74")

    midi_input, port = fake_input(handler)

    port.deliver([0xB0, 74, 64])
    port.deliver([0x90, 60, 100])

    assert calls == ["control_change", "note_on"]
    assert midi_input.handler_errors == 1
    assert midi_input.received == 2
    assert midi_input.malformed == 0

    [record] = warnings_of(caplog)
    assert "MIDI input handler failed on sideman-in:in for control_change" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is KeyError
    assert "no mapping for control 74" in caplog.text


def test_input_flood_of_malformed_bytes_is_rate_limited(caplog):
    clock = FakeClock(100.0)
    midi_input, port = fake_input(clock=clock)

    # 10,000 bad messages a second for two and a half summary intervals.
    for step in range(250_000):
        clock.now = 100.0 + step / 10_000
        port.deliver([0x90, 200, 1])

    assert midi_input.malformed == 250_000
    warnings = [record.getMessage() for record in warnings_of(caplog)]
    assert len(warnings) == 3
    assert "90 C8 01" in warnings[0]
    assert warnings[1] == f"100000 more malformed MIDI messages dropped on sideman-in:in in the {SUMMARY_INTERVAL:.1f} s since the last report"
    assert warnings[2] == f"100000 more malformed MIDI messages dropped on sideman-in:in in the {SUMMARY_INTERVAL:.1f} s since the last report"


def test_input_close_reports_unsummarised_faults(caplog):
    clock = FakeClock()
    midi_input, port = fake_input(failing_handler, clock=clock)

    for _ in range(4):
        port.deliver([0x90, 60, 100])
    clock.now = 3.0
    midi_input.close()

    warnings = [record.getMessage() for record in warnings_of(caplog)]
    assert len(warnings) == 2
    assert warnings[1] == "3 more MIDI input handler errors on sideman-in:in in the 3.0 s since the last report"
    assert midi_input.handler_errors == 4


def test_input_fault_kinds_are_limited_separately(caplog):
    midi_input, port = fake_input(failing_handler)

    for _ in range(50):
        port.deliver([0x90, 200, 1])
        port.deliver([0x90, 60, 100])

    warnings = [record.getMessage() for record in warnings_of(caplog)]
    assert len(warnings) == 2
    assert "malformed MIDI message" in warnings[0]
    assert "handler failed" in warnings[1]
    assert midi_input.malformed == 50
    assert midi_input.handler_errors == 50
    assert midi_input.received == 50


def test_repeated_warning_summarises_after_a_quiet_spell(caplog):
    clock = FakeClock()
    warning = RepeatedWarning("%d more test faults", clock)

    warning.warn("first test fault: %s", "details")
    clock.now = 60.0
    warning.warn("first test fault: %s", "details")
    warning.flush()

    warnings = [record.getMessage() for record in warnings_of(caplog)]
    assert warnings == ["first test fault: details", "1 more test faults in the 60.0 s since the last report"]
    assert warning.count == 2


def test_repeated_warning_uses_given_logger(caplog):
    warning = RepeatedWarning("%d more test faults", FakeClock(), logger=logging.getLogger("sideman.test"))

    warning.warn("first test fault")

    assert [record.name for record in caplog.records] == ["sideman.test"]


def test_repeated_warning_flush_without_faults_logs_nothing(caplog):
    warning = RepeatedWarning("%d more test faults", FakeClock())

    warning.flush()
    warning.warn("first test fault")
    warning.flush()

    assert [record.getMessage() for record in warnings_of(caplog)] == ["first test fault"]


class FakeQueuedRtMidiIn(FakeRtMidiIn):
    """An rtmidi.MidiIn whose events wait in a queue until get_message takes them, as under JACK."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: collections.deque[tuple[list[int], float]] = collections.deque()
        self.read_after_close = 0

    def get_message(self) -> tuple[list[int], float] | None:
        if self.closed or self.deleted:
            self.read_after_close += 1
        try:
            return self.queue.popleft()
        except IndexError:
            return None


def test_jack_input_reads_queue_on_thread(monkeypatch):
    monkeypatch.setattr("sideman.midiport.JACK_SETTLE_TIME", 0.0)
    port = FakeQueuedRtMidiIn()
    threads = []
    collector = Collector()

    def on_message(message: mido.Message) -> None:
        threads.append(threading.current_thread().name)
        collector(message)

    midi_input = MidiInput(port, "sideman-in:in", "jack", on_message)
    # Queued before the port opened: read once the reader starts.
    port.queue.append(([0x90, 60, 100], 0.0))

    midi_input.start_reading()
    port.queue.append(([0xF8, 0x80, 60, 0], 0.25))

    messages = collector.wait_for(3)
    assert port.callback is None
    assert [message.bytes() for message in messages] == [[0x90, 60, 100], [0xF8], [0x80, 60, 0]]
    assert [message.time for message in messages] == [0.0, 0.25, 0.0]
    assert set(threads) == {"MIDI in sideman-in:in"}

    midi_input.close()
    assert not midi_input._reader.is_alive()
    assert (port.closed, port.deleted, port.cancelled) == (1, 1, 0)
    assert port.read_after_close == 0
    midi_input.start_reading()  # after close: starts nothing and raises nothing


def test_jack_input_reads_on_after_error(monkeypatch, caplog):
    monkeypatch.setattr("sideman.midiport.JACK_SETTLE_TIME", 0.0)
    port = FakeQueuedRtMidiIn()
    reads = iter([RuntimeError("RtMidi failed"), ([0x90, 60, 100], 0.0)])

    def get_message():
        item = next(reads, None)
        if isinstance(item, Exception):
            raise item
        return item

    port.get_message = get_message
    collector = Collector()
    midi_input = MidiInput(port, "sideman-in:in", "jack", collector)

    midi_input.start_reading()
    messages = collector.wait_for(1)
    midi_input.close()

    assert [message.bytes() for message in messages] == [[0x90, 60, 100]]
    errors = [record for record in caplog.records if record.name == LOGGER and record.levelno == logging.WARNING]
    assert len(errors) == 1
    assert "from RtMidi's queue failed" in errors[0].getMessage()
    assert errors[0].exc_info is not None


def test_jack_input_closes_without_starting(monkeypatch):
    monkeypatch.setattr("sideman.midiport.JACK_SETTLE_TIME", 0.0)
    port = FakeQueuedRtMidiIn()
    port.queue.append(([0x90, 60, 100], 0.0))
    collector = Collector()

    MidiInput(port, "sideman-in:in", "jack", collector).close()

    assert collector.messages == []
    assert (port.closed, port.deleted) == (1, 1)
    assert list(port.queue) == [([0x90, 60, 100], 0.0)]


def test_input_close_is_idempotent(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    port = FakeRtMidiIn()

    with MidiInput(port, "sideman-in:in", "alsa", Collector()) as midi_input:
        assert not midi_input.closed
    midi_input.close()

    assert midi_input.closed
    assert port.cancelled == 1
    assert port.closed == 1
    assert port.deleted == 1
    closing = [record.getMessage() for record in caplog.records if record.getMessage().startswith("closed MIDI input")]
    assert closing == ["closed MIDI input sideman-in:in (alsa): 0 messages received, 0 malformed, 0 handler errors"]


def test_input_drops_events_delivered_after_close():
    collector = Collector()
    midi_input, port = fake_input(collector)
    midi_input.close()

    port.deliver([0x90, 60, 100])

    assert collector.messages == []
    assert midi_input.received == 0


def test_open_input_on_windows_needs_midi_in():
    system = FakeMidiSystem(platform="win32", compiled=frozenset({"winmm"}))

    with pytest.raises(MidiSystemError, match="Windows has no virtual MIDI ports") as raised:
        open_input(on_message=Collector(), system=system)

    assert "--midi-in NAME" in str(raised.value)
    assert "turn the MIDI input off" in str(raised.value)


def test_open_input_jack_client_name_taken():
    system = FakeMidiSystem(jack=None, clients={"sideman-in"})

    with pytest.raises(MidiSystemError, match="JACK already has a client named 'sideman-in'"):
        open_input("jack", on_message=Collector(), system=system)


# --- Real ports on the private JACK server ------------------------------------

# The sender runs in its own process. libjack (the copy in python-rtmidi
# 1.5.8's wheel) can crash a process that unregisters a port while its
# notification thread recomputes port latencies after another client's change.
# Closing a second client in the test process right after the input made these
# tests crash now and then. A crash of the sender's process fails no test.
SENDER_SCRIPT = CHILD_STDOUT_PRELUDE + textwrap.dedent(
    """
    import time

    import rtmidi

    port = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=sys.argv[1])
    port.open_virtual_port("out")
    print("ready", flush=True)
    for line in sys.stdin:
        port.send_message(bytes.fromhex(line))
        print("sent", flush=True)

    # The input closed just before, so JACK may still be recomputing latencies.
    time.sleep(0.2)
    port.close_port()
    port.delete()
    """
)

_sender_numbers = itertools.count(1)


class Sender:
    """A virtual JACK MIDI output in a child process, under a client name unique to this test run."""

    def __init__(self, prefix: str = "sideman-test-tx") -> None:
        self.client_name = f"{prefix}-{os.getpid()}-{next(_sender_numbers)}"
        self.port_name = f"{self.client_name}:out"
        self._process = subprocess.Popen(
            [sys.executable, "-c", SENDER_SCRIPT, self.client_name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        try:
            self._expect("ready")
            wait_for_port(self.port_name)
        except BaseException:
            self.close()
            raise

    def send(self, *messages: mido.Message | list[int]) -> None:
        """Send each message, a mido.Message or its bytes, and wait until the child has passed it to JACK."""
        for message in messages:
            data = message.bytes() if isinstance(message, mido.Message) else message
            self._process.stdin.write(bytes(data).hex() + "\n")
            self._process.stdin.flush()
            self._expect("sent")

    def _expect(self, reply: str) -> None:
        line = self._process.stdout.readline().strip()
        if line != reply:
            raise AssertionError(f"MIDI sender {self.client_name} replied {line!r}, expected {reply!r}")

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process.stdout.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


LIVE_MESSAGES = [
    mido.Message("note_on", channel=0, note=60, velocity=100),
    mido.Message("control_change", channel=3, control=74, value=127),
    mido.Message("clock"),
    mido.Message("start"),
    mido.Message("songpos", pos=16),
    mido.Message("note_off", channel=0, note=60, velocity=0),
    mido.Message("stop"),
    mido.Message("continue"),
]


@pytest.mark.ports
def test_virtual_input_receives_in_order():
    collector = Collector()

    with Sender() as sender, open_input("jack", on_message=collector) as midi_input:
        assert midi_input.name == "sideman-in:in"
        assert midi_input.backend == "jack"
        assert midi_input.connected_to is None
        connect_ports(sender.port_name, "sideman-in:in")

        sender.send(*LIVE_MESSAGES)
        received = collector.wait_for(len(LIVE_MESSAGES))

    assert [message.bytes() for message in received] == [message.bytes() for message in LIVE_MESSAGES]
    assert midi_input.received == len(LIVE_MESSAGES)


@pytest.mark.ports
def test_input_ignores_sysex_and_active_sensing():
    collector = Collector()

    with Sender() as sender, open_input("jack", on_message=collector) as midi_input:
        connect_ports(sender.port_name, "sideman-in:in")

        sender.send([0xF0, 0x7E, 0x7F, 0x06, 0x01, 0xF7], [0xFE], [0x90, 64, 80], [0xF8])
        # JACK keeps the order of events, so once the clock sent last has
        # arrived, SysEx or active sensing let through would have arrived before it.
        received = collector.wait_for(2)

    assert [message.type for message in collector.messages] == ["note_on", "clock"]
    assert received[0].bytes() == [0x90, 64, 80]
    assert midi_input.malformed == 0


@pytest.mark.ports
def test_midi_in_connects_by_unique_part():
    collector = Collector()

    with Sender() as sender:
        unique_part = sender.client_name.removeprefix("sideman-test-")

        with open_input("jack", connect_to=unique_part, on_message=collector) as midi_input:
            assert midi_input.connected_to == sender.port_name
            assert midi_input.name == "sideman-in:in"

            sender.send(mido.Message("note_on", channel=1, note=67, velocity=90))
            received = collector.wait_for(1)

    assert received[0].bytes() == [0x91, 67, 90]


@pytest.mark.ports
def test_midi_in_ambiguous_part():
    with Sender() as first, Sender() as second:
        with pytest.raises(MidiSystemError) as raised:
            open_input("jack", connect_to="sideman-test-tx", on_message=Collector())

    message = str(raised.value)
    assert "MIDI input port name 'sideman-test-tx' is ambiguous" in message
    assert first.port_name in message
    assert second.port_name in message
    assert "sideman-in:in" not in jack_ports()


@pytest.mark.ports
def test_midi_in_not_found_lists_ports():
    with Sender() as sender:
        with pytest.raises(MidiSystemError) as raised:
            open_input("jack", connect_to="no-such-keyboard", on_message=Collector())

    message = str(raised.value)
    assert "MIDI input port 'no-such-keyboard' not found" in message
    assert sender.port_name in message


@pytest.mark.ports
def test_input_close_frees_client_name():
    first = open_input("jack", on_message=Collector())
    first.close()
    assert "sideman-in:in" not in jack_ports()

    with open_input("jack", on_message=Collector()) as second:
        ports = jack_ports()
        assert second.name == "sideman-in:in"
        assert "sideman-in:in" in ports
        assert not any(port.startswith("sideman-in-") for port in ports)

    assert "sideman-in:in" not in jack_ports()


@pytest.mark.ports
def test_second_input_with_same_client_name():
    with open_input("jack", on_message=Collector()):
        with pytest.raises(MidiSystemError, match="already has a client named 'sideman-in'"):
            open_input("jack", on_message=Collector())


@pytest.mark.ports
def test_input_open_and_close_are_logged(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)

    with Sender() as sender:
        with open_input("jack", on_message=Collector()):
            pass
        with open_input("jack", connect_to=sender.port_name, on_message=Collector()):
            pass

    messages = [record.getMessage() for record in caplog.records if record.name == LOGGER]
    assert messages == [
        "opened MIDI input sideman-in:in (jack, virtual port)",
        "closed MIDI input sideman-in:in (jack): 0 messages received, 0 malformed, 0 handler errors",
        f"opened MIDI input sideman-in:in connected to {sender.port_name!r} (jack)",
        "closed MIDI input sideman-in:in (jack): 0 messages received, 0 malformed, 0 handler errors",
    ]
