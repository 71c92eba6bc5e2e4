"""Port loss under ALSA, CoreMIDI and WinMM: the port keeper over a listing of ports whose names change when a program restarts."""

import logging
import threading
from contextlib import ExitStack
from dataclasses import replace

import mido
import pytest

import sideman.midiinput
import sideman.midiport
from sideman.clock import FakeClock
from sideman.errors import MidiSystemError
from sideman.portkeeper import KeptConnection, KeptInput, KeptOutput, PortKeeper
from sideman.portlist import FIRST_RETRY, ListedPair, PortListWatch, listing_port_keeper, port_identity
from sideman.sharedoutput import SharedOutput
from tests.test_portkeeper import FakeWatch, wait_until


class FakeLister:
    """The system's port names, as python-rtmidi lists them; tests change them as programs come and go."""

    def __init__(self, sources: list[str], destinations: list[str]):
        self.source_names = sources
        self.destination_names = destinations
        self.failures_to_come = 0
        self.closed = False
        self.lock = threading.Lock()

    def sources(self) -> list[str]:
        with self.lock:
            return list(self.source_names)

    def destinations(self) -> list[str]:
        with self.lock:
            if self.failures_to_come:
                self.failures_to_come -= 1
                raise MidiSystemError("listing the MIDI ports failed: a port went away while its name was read")
            return list(self.destination_names)

    def change(self, sources: list[str] | None = None, destinations: list[str] | None = None) -> None:
        with self.lock:
            if sources is not None:
                self.source_names = sources
            if destinations is not None:
                self.destination_names = destinations

    def close(self) -> None:
        self.closed = True


class FakeMidiPort:
    """A MidiOutput or MidiInput as midiport.open_output and midiinput.open_input return them, connected by name."""

    def __init__(self, connected_to: str | None, backend: str = "alsa", client_name: str = "sideman", port_name: str = "out"):
        self.name = f"{client_name}:{port_name}" if backend in ("alsa", "jack") else connected_to
        self.backend = backend
        self.connected_to = connected_to
        self.client_name = client_name
        self.port_name = port_name
        self.sent: list[mido.Message] = []
        self.closed = False
        self.received = self.malformed = self.ignored = self.handler_errors = 0

    def send(self, message: mido.Message) -> None:
        self.sent.append(message)

    def close(self) -> None:
        self.closed = True


def note_on(pitch: int) -> mido.Message:
    return mido.Message("note_on", note=pitch, velocity=90)


def fake_opener(backend: str, client_name: str, port_name: str, opened: list[str], failures: list[int] | None = None):
    """Return an `open_on(full_name)` that opens a FakeMidiPort and records the name, failing `failures[0]` times first."""

    def open_on(full_name: str) -> FakeMidiPort:
        if failures and failures[0]:
            failures[0] -= 1
            raise MidiSystemError("the port refused the connection")
        opened.append(full_name)
        return FakeMidiPort(full_name, backend, client_name, port_name)

    return open_on


class SynthRig:
    """sideman's output opened on a synth by name, kept by the listing keeper as the daemon builds it."""

    def __init__(self, synth: str, destinations: list[str], requested: str | None = None, backend: str = "alsa",
                 failures: int = 0):
        self.lister = FakeLister([], destinations)
        self.shared = SharedOutput(FakeMidiPort(synth, backend), FakeClock())
        self.opened: list[str] = []
        self.failures = [failures]
        open_on = fake_opener(backend, "sideman", "out", self.opened, self.failures)
        kept_output = KeptOutput(self.shared, reopen=lambda: None, open_on=open_on, requested=requested)
        self.keeper = listing_port_keeper(backend, [kept_output], lister_factory=lambda backend: self.lister)
        self.connection = self.keeper.connections[0]

    def change(self, destinations: list[str]) -> None:
        self.lister.change(destinations=destinations)
        self.keeper.current_watch().changed.set()


@pytest.mark.parametrize("backend, listed, identity", [
    ("alsa", "FLUID Synth (1234):Synth input port (1234:0) 128:0", "FLUID Synth (1234):Synth input port (1234:0)"),
    ("alsa", "Midi Through:Midi Through Port-0 14:0", "Midi Through:Midi Through Port-0"),
    ("winmm", "loopMIDI Port 1", "loopMIDI Port"),
    ("winmm", "Microsoft GS Wavetable Synth 0", "Microsoft GS Wavetable Synth"),
    ("coremidi", "IAC Driver Bus 1", "IAC Driver Bus 1"),
    ("jack", "synth:in 2", "synth:in 2"),
])
def test_port_identity_strips_numbers(backend, listed, identity):
    assert port_identity(listed, backend) == identity


def test_keeper_reopens_output_on_synth_under_new_numbers(caplog):
    caplog.set_level(logging.INFO)
    rig = SynthRig("Synth:Synth input port 128:0", ["Midi Through:Midi Through Port-0 14:0", "Synth:Synth input port 128:0"])
    rig.keeper.start()
    try:
        rig.shared.send(note_on(60))
        old_port = rig.shared.port

        rig.change(["Midi Through:Midi Through Port-0 14:0"])
        wait_until(lambda: rig.connection.state == "missing")
        # The note was released where the port still reached, and nothing is sent meanwhile.
        assert rig.shared.sounding(0) == []
        rig.shared.send(note_on(62))
        assert rig.shared.dropped == 1

        rig.change(["Midi Through:Midi Through Port-0 14:0", "Synth:Synth input port 129:0"])
        wait_until(lambda: rig.connection.state == "connected")
        rig.shared.send(note_on(64))
    finally:
        rig.keeper.close()

    assert rig.opened == ["Synth:Synth input port 129:0"]
    assert old_port.closed
    assert [message.note for message in rig.shared.port.sent] == [64]
    assert rig.connection.reconnections == 1
    assert rig.lister.closed
    assert "sideman:out -> Synth:Synth input port 128:0 lost" in caplog.text
    assert "reopened the MIDI output on 'Synth:Synth input port 129:0'" in caplog.text
    assert "restored" in caplog.text


def test_keeper_reopens_output_by_requested_name():
    # FluidSynth puts its process ID in its ALSA names; the name the musician gave finds it again.
    first = "FLUID Synth (1234):Synth input port (1234:0) 128:0"
    rig = SynthRig(first, [first], requested="FLUID")
    rig.keeper.start()
    try:
        rig.change([])
        wait_until(lambda: rig.connection.state == "missing")
        rig.change(["FLUID Synth (5678):Synth input port (5678:0) 128:0"])
        wait_until(lambda: rig.connection.state == "connected")
    finally:
        rig.keeper.close()
    assert rig.opened == ["FLUID Synth (5678):Synth input port (5678:0) 128:0"]


def test_watch_waits_while_requested_name_is_ambiguous():
    first = "FLUID Synth (1234):Synth input port (1234:0) 128:0"
    opened: list[str] = []
    pair = ListedPair("sideman:out", first, first, "FLUID", "output", lambda name: opened.append(name) or True)
    lister = FakeLister([], [first])
    watch = PortListWatch("alsa", [pair], lister_factory=lambda backend: lister)

    lister.change(destinations=["FLUID Synth (5):Synth input port (5:0) 128:0", "FLUID Synth (6):Synth input port (6:0) 129:0"])
    watch.refresh()
    assert not watch.ports_exist("sideman:out", first)
    assert not watch.connect("sideman:out", first)
    assert opened == []


def test_keeper_backs_off_after_failed_reopen(caplog):
    clock = FakeClock(100.0)
    opened: list[str] = []
    failures = [2]
    open_on = fake_opener("alsa", "sideman", "out", opened, failures)
    pair = ListedPair("sideman:out", "Synth:in 128:0", "Synth:in 128:0", "Synth", "output", lambda name: open_on(name) is not None)
    lister = FakeLister([], [])
    watch = PortListWatch("alsa", [pair], lister_factory=lambda backend: lister, clock=clock.now)
    watch.refresh()
    assert not watch.connected("sideman:out", "Synth:in 128:0")

    lister.change(destinations=["Synth:in 130:0"])
    watch.refresh()
    assert not watch.connect("sideman:out", "Synth:in 128:0")
    # Within the back-off nothing is tried, so a device that refuses is not opened four times a second.
    assert not watch.connect("sideman:out", "Synth:in 128:0")
    assert failures == [1]

    clock.advance(FIRST_RETRY)
    assert not watch.connect("sideman:out", "Synth:in 128:0")
    clock.advance(FIRST_RETRY)
    assert not watch.connect("sideman:out", "Synth:in 128:0")
    clock.advance(FIRST_RETRY)
    assert watch.connect("sideman:out", "Synth:in 128:0")
    assert opened == ["Synth:in 130:0"]
    assert caplog.text.count("reopening the MIDI output on 'Synth:in 130:0' failed") == 1


def test_keeper_survives_a_failed_listing():
    rig = SynthRig("Synth:in 128:0", ["Synth:in 128:0"])
    rig.lister.failures_to_come = 3
    rig.keeper.start()
    try:
        wait_until(lambda: rig.lister.failures_to_come == 0)
        rig.change([])
        wait_until(lambda: rig.connection.state == "missing")
        rig.change(["Synth:in 129:0"])
        wait_until(lambda: rig.connection.state == "connected")
    finally:
        rig.keeper.close()
    assert rig.opened == ["Synth:in 129:0"]


def test_watch_prefers_the_connected_name_over_a_namesake():
    opened: list[str] = []
    pair = ListedPair("sideman:out", "Synth:in 129:0", "Synth:in 129:0", "Synth", "output", lambda name: opened.append(name) or True)
    lister = FakeLister([], ["Synth:in 128:0", "Synth:in 129:0"])
    watch = PortListWatch("alsa", [pair], lister_factory=lambda backend: lister)
    watch.refresh()
    assert watch.connected("sideman:out", "Synth:in 129:0")

    # The port sideman is open on goes; a namesake that stays does not hide the loss.
    lister.change(destinations=["Synth:in 128:0"])
    watch.refresh()
    assert not watch.connected("sideman:out", "Synth:in 129:0")
    assert watch.connect("sideman:out", "Synth:in 129:0")
    assert opened == ["Synth:in 128:0"]


def test_watch_reconnects_a_keyboard_under_new_numbers():
    opened: list[str] = []
    pair = ListedPair("Keyboard:out 20:0", "sideman-in:in", "Keyboard:out 20:0", "Keyboard", "input", lambda name: opened.append(name) or True)
    lister = FakeLister(["Keyboard:out 20:0"], [])
    watch = PortListWatch("alsa", [pair], lister_factory=lambda backend: lister)
    watch.refresh()
    assert watch.ports_exist("Keyboard:out 20:0", "sideman-in:in")
    assert watch.connected("Keyboard:out 20:0", "sideman-in:in")

    lister.change(sources=[])
    watch.refresh()
    assert not watch.ports_exist("Keyboard:out 20:0", "sideman-in:in")
    assert not watch.connect("Keyboard:out 20:0", "sideman-in:in")

    lister.change(sources=["Keyboard:out 24:0"])
    watch.refresh()
    assert watch.connect("Keyboard:out 20:0", "sideman-in:in")
    assert opened == ["Keyboard:out 24:0"]
    assert watch.connected("Keyboard:out 20:0", "sideman-in:in")


def test_watch_never_reports_a_lost_server():
    watch = PortListWatch("coremidi", [], lister_factory=lambda backend: FakeLister([], []))
    watch.refresh()
    assert not watch.lost.is_set()
    assert not watch.shows_removals


@pytest.mark.parametrize("backend, device", [
    ("alsa", "Keystation:Keystation MIDI 1 24:0"),
    ("coremidi", "Keystation"),
])
def test_keeper_reopens_input_and_output_on_one_device(backend, device):
    """A keyboard with a synth inside: `--midi-in` and `--midi-out` name the same device, which is unplugged and plugged in again."""
    lister = FakeLister([device], [device])
    opened_outputs: list[str] = []
    opened_inputs: list[str] = []
    shared = SharedOutput(FakeMidiPort(device, backend), FakeClock())
    kept_output = KeptOutput(shared, lambda: None, fake_opener(backend, "sideman", "out", opened_outputs), requested="Keystation")
    kept_input = KeptInput(FakeMidiPort(device, backend, "sideman-in", "in"), lambda: None,
                           fake_opener(backend, "sideman-in", "in", opened_inputs), requested="Keystation")
    keeper = listing_port_keeper(backend, [kept_output, kept_input], lister_factory=lambda backend: lister)
    keeper.start()
    try:
        lister.change(sources=[], destinations=[])
        keeper.current_watch().changed.set()
        wait_until(lambda: all(connection.state == "missing" for connection in keeper.connections))

        lister.change(sources=[device], destinations=[device])
        keeper.current_watch().changed.set()
        wait_until(lambda: all(connection.state == "connected" for connection in keeper.connections))
        shared.send(note_on(60))
    finally:
        keeper.close()
        kept_input.close()

    assert opened_outputs == [device]
    assert opened_inputs == [device]
    assert [message.note for message in shared.port.sent] == [60]


def test_listing_keeper_needs_a_port_connected_by_name():
    shared = SharedOutput(FakeMidiPort(None), FakeClock())
    assert listing_port_keeper("alsa", [KeptOutput(shared, lambda: None)]) is None


def test_kept_input_closes_a_port_opened_after_close():
    late_port = FakeMidiPort("Keyboard:out 20:0", client_name="sideman-in", port_name="in")
    kept_input = KeptInput(FakeMidiPort("Keyboard:out 20:0", client_name="sideman-in", port_name="in"), lambda: None,
                           lambda name: late_port)
    kept_input.close()
    assert kept_input.reconnect("Keyboard:out 21:0")
    assert late_port.closed


def test_portkeeper_restores_a_connection_someone_else_made():
    """Under JACK a patchbay may connect the returning port before the keeper does: the output must resume all the same."""
    watch = FakeWatch({"sideman:out", "synth:in"}, {("sideman:out", "synth:in")})
    resumed = []
    connection = KeptConnection("sideman:out", "synth:in", on_restored=lambda: resumed.append(True))
    keeper = PortKeeper([], [connection], watch_factory=lambda: watch)
    keeper.start()
    try:
        watch.ports.discard("synth:in")
        watch.connections.clear()
        watch.changed.set()
        wait_until(lambda: connection.state == "missing")

        # The patchbay connects before the keeper's next look; the keeper never calls connect.
        watch.connect = lambda source, destination: False
        watch.ports.add("synth:in")
        watch.connections.add(("sideman:out", "synth:in"))
        watch.changed.set()
        wait_until(lambda: connection.state == "connected")
    finally:
        keeper.close()
    assert resumed == [True]
    assert connection.reconnections == 1


def test_keep_ports_reopens_alsa_ports_on_returning_devices(monkeypatch):
    """The daemon's wiring: the output, the clock output and the input each reopen under their own client name."""
    from sideman.config.schema import Settings
    from sideman.daemon import _keep_ports

    lister = FakeLister(["Keys:out 20:0"], ["Synth:in 128:0", "Clock:in 40:0"])
    monkeypatch.setattr("sideman.portlist.PortLister", lambda backend: lister)
    opened = []

    def open_output(backend, connect_to=None, client_name="sideman", port_name="out"):
        opened.append(("output", backend, connect_to, client_name))
        return FakeMidiPort(connect_to, backend, client_name, port_name)

    def open_input(backend, connect_to=None, client_name="sideman-in", port_name="in", *, on_message):
        opened.append(("input", backend, connect_to, client_name))
        return FakeMidiPort(connect_to, backend, client_name, port_name)

    monkeypatch.setattr(sideman.midiport, "open_output", open_output)
    monkeypatch.setattr(sideman.midiinput, "open_input", open_input)
    defaults = Settings()
    settings = replace(defaults, midi=replace(defaults.midi, out="Synth", clock_out="Clock", input="Keys"))
    output = SharedOutput(FakeMidiPort("Synth:in 128:0"), FakeClock())
    clock_output = SharedOutput(FakeMidiPort("Clock:in 40:0", client_name="sideman-clock"), FakeClock())
    old_output_port = output.port

    def reopen_input():
        raise AssertionError("a virtual port is reopened only after a JACK server restart")

    def open_input_on(full_name):
        return sideman.midiinput.open_input("alsa", connect_to=full_name, client_name="sideman-in", port_name="in", on_message=print)

    kept_input = KeptInput(FakeMidiPort("Keys:out 20:0", client_name="sideman-in", port_name="in"), reopen_input, open_input_on, requested="Keys")

    with ExitStack() as resources:
        _keep_ports(settings, [output, clock_output], [kept_input], resources)
        lister.change(sources=[], destinations=[])
        wait_until(lambda: output.send(note_on(60)) or output.dropped > 0)
        lister.change(sources=["Keys:out 21:0"], destinations=["Synth:in 131:0", "Clock:in 41:0"])
        wait_until(lambda: len(opened) == 3)
        wait_until(lambda: output.send(note_on(62)) or output.port.sent)

    assert sorted(opened) == [
        ("input", "alsa", "Keys:out 21:0", "sideman-in"),
        ("output", "alsa", "Clock:in 41:0", "sideman-clock"),
        ("output", "alsa", "Synth:in 131:0", "sideman"),
    ]
    assert old_output_port.closed
    assert output.port.sent[0].note == 62
    assert lister.closed
