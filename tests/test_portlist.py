"""Port loss under ALSA, CoreMIDI and WinMM: the port keeper over a listing of ports whose numbers change when a program restarts."""

import threading
import time

import mido
import pytest

from sideman.errors import MidiSystemError
from sideman.portkeeper import KeptConnection, PortKeeper
from sideman.portlist import ListedPair, PortListWatch, port_identity
from sideman.sharedoutput import SharedOutput
from sideman.clock import FakeClock


class FakeLister:
    """The system's port names, as python-rtmidi lists them; tests change them as programs come and go."""

    def __init__(self, sources: list[str], destinations: list[str]):
        self.source_names = sources
        self.destination_names = destinations
        self.closed = False
        self.lock = threading.Lock()

    def sources(self) -> list[str]:
        with self.lock:
            return list(self.source_names)

    def destinations(self) -> list[str]:
        with self.lock:
            return list(self.destination_names)

    def change(self, sources: list[str] | None = None, destinations: list[str] | None = None) -> None:
        with self.lock:
            if sources is not None:
                self.source_names = sources
            if destinations is not None:
                self.destination_names = destinations

    def close(self) -> None:
        self.closed = True


class FakePort:
    def __init__(self, name: str):
        self.name = name
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


@pytest.mark.parametrize("backend, listed, identity", [
    ("alsa", "FLUID Synth (1234):Synth input port (1234:0) 128:0", "FLUID Synth (1234):Synth input port (1234:0)"),
    ("alsa", "Midi Through:Midi Through Port-0 14:0", "Midi Through:Midi Through Port-0"),
    ("winmm", "loopMIDI Port 1", "loopMIDI Port"),
    ("winmm", "Microsoft GS Wavetable Synth 0", "Microsoft GS Wavetable Synth"),
    ("coremidi", "IAC Driver Bus 1", "IAC Driver Bus 1"),
    ("jack", "synth:in 2", "synth:in 2"),
])
def test_port_identity_strips_the_numbers_a_restart_changes(backend, listed, identity):
    assert port_identity(listed, backend) == identity


class SynthOutput:
    """sideman's output opened on a synth by name, with the reopen the daemon gives the keeper."""

    def __init__(self, lister: FakeLister, synth: str, fail_reopens: int = 0):
        self.shared = SharedOutput(FakePort("sideman:out"), FakeClock())
        self.reopened_on: list[str] = []
        self.fail_reopens = fail_reopens
        pair = ListedPair("sideman:out", synth, synth, "output", self.reconnect)
        self.connection = KeptConnection("sideman:out", synth, on_missing=self.shared.suspend, on_restored=self.shared.resume)
        self.watch = PortListWatch("alsa", [pair], lister=lister)
        self.keeper = PortKeeper([], [self.connection], watch_factory=lambda: self.watch)

    def reconnect(self, full_name: str) -> bool:
        if self.fail_reopens:
            self.fail_reopens -= 1
            raise MidiSystemError("the port refused the connection")
        self.reopened_on.append(full_name)
        self.shared.port_lost()
        self.shared.replace_port(FakePort(full_name))
        return True


def note_on(pitch: int) -> mido.Message:
    return mido.Message("note_on", note=pitch, velocity=90)


def test_keeper_reopens_output_on_synth_under_new_numbers():
    lister = FakeLister([], ["Midi Through:Midi Through Port-0 14:0", "FLUID Synth:Synth input port 128:0"])
    synth = SynthOutput(lister, "FLUID Synth:Synth input port 128:0")
    synth.keeper.start()
    try:
        synth.shared.send(note_on(60))
        assert synth.shared.sounding(0) == [60]

        lister.change(destinations=["Midi Through:Midi Through Port-0 14:0"])
        synth.watch.changed.set()
        wait_until(lambda: synth.connection.state == "missing")
        # The sounding note was released where the port still reached, and nothing is sent meanwhile.
        assert synth.shared.sounding(0) == []
        synth.shared.send(note_on(62))
        assert synth.shared.dropped >= 1

        lister.change(destinations=["Midi Through:Midi Through Port-0 14:0", "FLUID Synth:Synth input port 129:0"])
        synth.watch.changed.set()
        wait_until(lambda: synth.connection.state == "connected")
        assert synth.reopened_on == ["FLUID Synth:Synth input port 129:0"]
        assert synth.connection.reconnections == 1

        synth.shared.send(note_on(64))
        assert synth.shared.port.name == "FLUID Synth:Synth input port 129:0"
        assert [message.note for message in synth.shared.port.sent] == [64]
    finally:
        synth.keeper.close()
    assert lister.closed


def test_keeper_retries_a_failed_reopen():
    lister = FakeLister([], [])
    synth = SynthOutput(lister, "Synth:in 128:0", fail_reopens=2)
    synth.keeper.start()
    try:
        synth.watch.changed.set()
        wait_until(lambda: synth.connection.state == "missing")
        lister.change(destinations=["Synth:in 130:0"])
        synth.watch.changed.set()
        wait_until(lambda: synth.connection.state == "connected", timeout=10.0)
        assert synth.fail_reopens == 0
        assert synth.reopened_on == ["Synth:in 130:0"]
    finally:
        synth.keeper.close()


def test_watch_prefers_the_connected_name_over_a_namesake():
    reopened = []
    pair = ListedPair("sideman:out", "Synth:in 129:0", "Synth:in 129:0", "output", lambda name: reopened.append(name) or True)
    lister = FakeLister([], ["Synth:in 128:0", "Synth:in 129:0"])
    watch = PortListWatch("alsa", [pair], lister=lister)

    assert watch.connect("sideman:out", "Synth:in 129:0")
    assert reopened == ["Synth:in 129:0"]

    # Once that one is gone, a port of the same program under other numbers takes its place.
    lister.change(destinations=["Synth:in 128:0"])
    watch.refresh()
    assert watch.port_exists("Synth:in 129:0")
    assert watch.connect("sideman:out", "Synth:in 129:0")
    assert reopened == ["Synth:in 129:0", "Synth:in 128:0"]


def test_watch_reconnects_a_keyboard_under_new_numbers():
    lister = FakeLister(["Keyboard:out 20:0"], [])
    reopened = []
    pair = ListedPair("Keyboard:out 20:0", "sideman-in:in", "Keyboard:out 20:0", "input", lambda name: reopened.append(name) or True)
    watch = PortListWatch("alsa", [pair], lister=lister)

    assert watch.port_exists("sideman-in:in")
    assert watch.port_exists("Keyboard:out 20:0")
    assert watch.connected("Keyboard:out 20:0", "sideman-in:in")

    lister.change(sources=[])
    watch.refresh()
    assert not watch.port_exists("Keyboard:out 20:0")
    assert not watch.connected("Keyboard:out 20:0", "sideman-in:in")
    assert not watch.connect("Keyboard:out 20:0", "sideman-in:in")

    lister.change(sources=["Keyboard:out 24:0"])
    watch.refresh()
    assert watch.port_exists("Keyboard:out 20:0")
    assert watch.connect("Keyboard:out 20:0", "sideman-in:in")
    assert reopened == ["Keyboard:out 24:0"]
    assert watch.connected("Keyboard:out 20:0", "sideman-in:in")


def test_watch_never_reports_a_lost_server():
    watch = PortListWatch("coremidi", [], lister=FakeLister([], []))
    assert not watch.lost.is_set()
    assert watch.port_exists("sideman:out")


class FakeMidiOutput(FakePort):
    """A MidiOutput as midiport.open_output returns it under ALSA, connected to a synth by name."""

    def __init__(self, connected_to: str, client_name: str = "sideman", port_name: str = "out"):
        super().__init__(f"{client_name}:{port_name}")
        self.backend = "alsa"
        self.connected_to = connected_to
        self.client_name = client_name
        self.port_name = port_name


def test_keep_ports_reopens_alsa_output_on_returning_synth(monkeypatch):
    from contextlib import ExitStack

    import sideman.midiport
    import sideman.portlist
    from sideman.daemon import _keep_ports

    lister = FakeLister([], ["Synth:in 128:0"])
    monkeypatch.setattr(sideman.portlist, "PortLister", lambda backend: lister)
    opened = []

    def open_output(backend, connect_to=None, client_name="sideman", port_name="out"):
        opened.append((backend, connect_to, client_name, port_name))
        return FakeMidiOutput(connect_to, client_name, port_name)

    monkeypatch.setattr(sideman.midiport, "open_output", open_output)
    shared = SharedOutput(FakeMidiOutput("Synth:in 128:0"), FakeClock())

    def send_probe() -> None:
        shared.send(note_on(60))

    with ExitStack() as resources:
        _keep_ports([shared], [], resources)
        lister.change(destinations=[])
        wait_until(lambda: send_probe() or shared.dropped > 0)
        lister.change(destinations=["Synth:in 131:0"])
        wait_until(lambda: shared.port.connected_to == "Synth:in 131:0")
        wait_until(lambda: send_probe() or shared.port.sent)

    assert opened == [("alsa", "Synth:in 131:0", "sideman", "out")]
    assert [message.note for message in shared.port.sent][:1] == [60]
    assert lister.closed
