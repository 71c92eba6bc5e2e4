"""The port keeper's decisions with a fake JACK graph: reconnect what was lost, leave what was removed, back off while the server is away."""

import threading
import time

import mido
import pytest

from sideman.clock import FakeClock
from sideman.errors import MidiSystemError
from sideman.portkeeper import KeptConnection, KeptInput, KeptOutput, PortKeeper
from sideman.sharedoutput import SharedOutput


class FakeWatch:
    """A JACK graph of port names and connections; `changed` and `lost` as JackWatch sets them."""

    def __init__(self, ports: set[str], connections: set[tuple[str, str]]):
        self.ports = ports
        self.connections = connections
        self.changed = threading.Event()
        self.lost = threading.Event()
        self.closed = False

    shows_removals = True

    def refresh(self) -> None:
        """Nothing to do: the fake graph is read as it is, like JackWatch's."""

    def ports_exist(self, source: str, destination: str) -> bool:
        return source in self.ports and destination in self.ports

    def connected(self, source: str, destination: str) -> bool:
        return (source, destination) in self.connections

    def connect(self, source: str, destination: str) -> bool:
        self.connections.add((source, destination))
        return True

    def close(self) -> None:
        self.closed = True


class FakePort:
    def __init__(self, name: str = "sideman:out"):
        self.name = name
        self.client_name, self.port_name = name.split(":", 1)
        self.sent: list[mido.Message] = []
        self.closed = False

    def send(self, message: mido.Message) -> None:
        self.sent.append(message)

    def close(self) -> None:
        self.closed = True


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def graph_change(watch: FakeWatch, change) -> None:
    change()
    watch.changed.set()


@pytest.fixture
def synth_graph():
    watch = FakeWatch({"sideman:out", "synth:in"}, {("sideman:out", "synth:in")})
    connection = KeptConnection("sideman:out", "synth:in")
    keeper = PortKeeper([], [connection], watch_factory=lambda: watch)
    keeper.start()
    yield watch, connection
    keeper.close()


def test_reconnects_a_returning_port(synth_graph):
    watch, connection = synth_graph

    graph_change(watch, lambda: (watch.ports.discard("synth:in"), watch.connections.clear()))
    wait_until(lambda: connection.state == "missing")
    graph_change(watch, lambda: watch.ports.add("synth:in"))
    wait_until(lambda: connection.state == "connected")

    assert ("sideman:out", "synth:in") in watch.connections
    assert connection.reconnections == 1


def test_leaves_a_removed_connection_alone(synth_graph):
    watch, connection = synth_graph

    graph_change(watch, watch.connections.clear)
    wait_until(lambda: connection.state == "removed")
    time.sleep(0.1)

    assert watch.connections == set()
    assert connection.reconnections == 0


def test_server_restart_reopens_and_drops_meanwhile():
    clock = FakeClock()
    old_port, new_port = FakePort(), FakePort()
    shared = SharedOutput(old_port, clock)
    watches = [FakeWatch({"sideman:out"}, set())]
    attempts = []

    def watch_factory() -> FakeWatch:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            return watches[0]
        if len(attempts) < 4:
            raise MidiSystemError("no JACK server to watch")
        watches.append(FakeWatch({"sideman:out"}, set()))
        return watches[-1]

    keeper = PortKeeper([KeptOutput(shared, lambda: new_port)], [], watch_factory=watch_factory, first_retry=0.01, max_retry=0.04)
    keeper.start()
    try:
        graph_change(watches[0], watches[0].lost.set)
        wait_until(lambda: shared.lost or keeper.server_restarts == 1)
        shared.send(mido.Message("note_on", note=60, velocity=90))
        wait_until(lambda: keeper.server_restarts == 1)
    finally:
        keeper.close()

    assert old_port.closed
    assert watches[0].closed
    assert shared.port is new_port
    assert not shared.lost
    # Two failed attempts, each waiting longer than the one before.
    assert len(attempts) == 4
    assert attempts[3] - attempts[2] >= attempts[2] - attempts[1]


def test_lost_output_drops_and_counts():
    clock = FakeClock()
    port = FakePort()
    shared = SharedOutput(port, clock)
    shared.send(mido.Message("note_on", note=60, velocity=90))

    shared.port_lost()
    shared.send(mido.Message("note_off", note=60, velocity=0))
    shared.all_notes_off(0)

    # The note_off is not even dropped: after the loss, no note sounds to release.
    assert [message.type for message in port.sent] == ["note_on"]
    assert shared.dropped == 1
    assert shared.sounding(0) == []


def test_failed_send_is_dropped_not_raised(caplog):
    class BrokenPort(FakePort):
        def send(self, message: mido.Message) -> None:
            raise MidiSystemError("sending to MIDI output sideman:out failed: broken")

    shared = SharedOutput(BrokenPort(), FakeClock())
    for _ in range(5):
        shared.send(mido.Message("note_on", note=60, velocity=90))

    assert shared.dropped == 5
    warnings = [record for record in caplog.records if "dropped" in record.getMessage()]
    assert len(warnings) == 1


def test_suspended_output_sends_nothing_until_resumed():
    port = FakePort()
    shared = SharedOutput(port, FakeClock())
    shared.send(mido.Message("note_on", note=60, velocity=90))

    assert shared.suspend() == 1
    shared.send(mido.Message("note_on", note=62, velocity=90))
    shared.send(mido.Message("note_off", note=62, velocity=0))
    shared.resume()
    shared.send(mido.Message("note_off", note=60, velocity=0))
    shared.send(mido.Message("note_on", note=64, velocity=90))

    sent = [(message.type, message.note) for message in port.sent]
    # The dropped note_on of 62 leaves no note_off to send; 60 was released by suspend.
    assert sent == [("note_on", 60), ("note_off", 60), ("note_on", 64)]
    assert shared.dropped == 1


def test_restored_connection_resumes(synth_graph):
    watch, connection = synth_graph
    calls = []
    connection.on_missing = lambda: calls.append("missing")
    connection.on_restored = lambda: calls.append("restored")

    graph_change(watch, lambda: (watch.ports.discard("synth:in"), watch.connections.clear()))
    wait_until(lambda: connection.state == "missing")
    graph_change(watch, lambda: watch.ports.add("synth:in"))
    wait_until(lambda: connection.state == "connected")

    assert calls == ["missing", "restored"]


class FakeInput:
    """A MidiInput's counts and close, for KeptInput."""

    def __init__(self, received: int, malformed: int = 0, ignored: int = 0, handler_errors: int = 0):
        self.name = "sideman-in:in"
        self.client_name, self.port_name = "sideman-in", "in"
        self.connected_to = None
        self.backend = "jack"
        self.received = received
        self.malformed = malformed
        self.ignored = ignored
        self.handler_errors = handler_errors
        self.closed = False

    def close(self) -> None:
        # As the reader thread does: it delivers until close() returns.
        self.received += 1
        self.closed = True


def test_input_counts_survive_a_reopen():
    first = FakeInput(received=10, malformed=2, ignored=1)
    second = FakeInput(received=5, handler_errors=1)
    kept = KeptInput(first, reopen=lambda: second)

    kept.lost()
    assert first.closed
    assert kept.counts() == {"received": 11, "malformed": 2, "ignored": 1, "handler_errors": 0}

    kept.reopen()
    second.received += 1
    assert kept.counts() == {"received": 17, "malformed": 2, "ignored": 1, "handler_errors": 1}

    kept.close()
    assert second.closed
    assert kept.counts() == {"received": 18, "malformed": 2, "ignored": 1, "handler_errors": 1}
