"""MIDI output ports: backend probe and name matching with fakes, real ports on a private JACK server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field

import mido
import pytest
import rtmidi

from sideman import midiport
from sideman.errors import MidiSystemError, SettingsError
from sideman.midiport import MidiOutput, find_port, list_ports, open_output, probe_backend
from tests.jack import Receiver, jack_ports


@dataclass
class FakeMidiSystem:
    platform: str = "linux"
    compiled: frozenset[str] = frozenset({"alsa", "jack"})
    alsa: str | None = "no ALSA sequencer (/dev/snd/seq not found)"
    jack: str | None = "no JACK server 'default' running"
    clients: set[str] = field(default_factory=set)
    probed: list[str] = field(default_factory=list)

    def compiled_backends(self) -> frozenset[str]:
        return self.compiled

    def alsa_problem(self) -> str | None:
        self.probed.append("alsa")
        return self.alsa

    def jack_problem(self) -> str | None:
        self.probed.append("jack")
        return self.jack

    def jack_client_exists(self, client_name: str) -> bool:
        return client_name in self.clients


class FakeRtMidiOut:
    def __init__(self, error: Exception | None = None) -> None:
        self.sent: list[list[int]] = []
        self.closed = 0
        self.deleted = 0
        self.error = error

    def send_message(self, data: list[int]) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append(list(data))

    def close_port(self) -> None:
        self.closed += 1

    def delete(self) -> None:
        self.deleted += 1


# --- Probe ------------------------------------------------------------------


def test_probe_auto_prefers_alsa_without_probing_jack():
    system = FakeMidiSystem(alsa=None, jack=None)

    assert probe_backend("auto", system) == "alsa"
    assert system.probed == ["alsa"]


def test_probe_auto_falls_back_to_jack():
    system = FakeMidiSystem(jack=None)

    assert probe_backend("auto", system) == "jack"
    assert system.probed == ["alsa", "jack"]


def test_probe_auto_nothing_available_says_how_to_fix():
    with pytest.raises(MidiSystemError) as raised:
        probe_backend("auto", FakeMidiSystem())

    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("no MIDI system found")
    assert "/dev/snd/seq" in message
    assert "no JACK server 'default' running" in message
    assert "jackd --no-realtime -d dummy -r 48000 -p 64" in message
    assert "jackd2" in message
    assert "modprobe snd-seq" in message


def test_probe_auto_on_macos_and_windows():
    macos = FakeMidiSystem(platform="darwin", compiled=frozenset({"coremidi"}))
    windows = FakeMidiSystem(platform="win32", compiled=frozenset({"winmm"}))

    assert probe_backend("auto", macos) == "coremidi"
    assert probe_backend("auto", windows) == "winmm"
    assert macos.probed == []
    assert windows.probed == []


def test_probe_auto_running_jack_wins_on_macos():
    system = FakeMidiSystem(platform="darwin", compiled=frozenset({"jack", "coremidi"}), jack=None)

    assert probe_backend("auto", system) == "jack"


def test_probe_auto_no_compiled_backend():
    with pytest.raises(MidiSystemError, match="no MIDI backend for sunos5"):
        probe_backend("auto", FakeMidiSystem(platform="sunos5", compiled=frozenset()))


def test_probe_explicit_backend_usable():
    system = FakeMidiSystem(jack=None)

    assert probe_backend("jack", system) == "jack"
    assert system.probed == ["jack"]


def test_probe_explicit_jack_without_server():
    with pytest.raises(MidiSystemError) as raised:
        probe_backend("jack", FakeMidiSystem())

    message = str(raised.value)
    assert message.startswith("MIDI backend 'jack' is unusable: no JACK server 'default' running")
    assert "jackd --no-realtime -d dummy" in message


def test_probe_explicit_alsa_without_sequencer():
    with pytest.raises(MidiSystemError, match="'alsa' is unusable: no ALSA sequencer .*modprobe snd-seq"):
        probe_backend("alsa", FakeMidiSystem(jack=None))


@pytest.mark.parametrize(
    ("backend", "platform", "expected"),
    [
        ("coremidi", "linux", "coremidi exists only on macOS"),
        ("winmm", "darwin", "winmm exists only on Windows"),
        ("alsa", "win32", "alsa exists only on Linux"),
    ],
)
def test_probe_explicit_backend_of_other_platform(backend, platform, expected):
    system = FakeMidiSystem(platform=platform, compiled=frozenset(midiport.BACKENDS), alsa=None, jack=None)

    with pytest.raises(MidiSystemError, match=expected):
        probe_backend(backend, system)


def test_probe_explicit_backend_not_compiled():
    system = FakeMidiSystem(compiled=frozenset({"alsa"}), jack=None)

    with pytest.raises(MidiSystemError, match="built without jack support"):
        probe_backend("jack", system)


def test_probe_unknown_backend_name():
    with pytest.raises(SettingsError, match="unknown MIDI backend 'pulse'.*auto, alsa, jack, coremidi, winmm"):
        probe_backend("pulse", FakeMidiSystem())


def test_probe_jack_without_server_prints_nothing(capfd, monkeypatch):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"sideman-absent-{os.getpid()}")

    problem = midiport.NativeMidiSystem().jack_problem()

    assert problem == f"no JACK server 'sideman-absent-{os.getpid()}' running"
    assert capfd.readouterr().err == ""


@pytest.mark.skipif(os.path.exists(midiport.ALSA_SEQUENCER), reason="this machine has an ALSA sequencer")
def test_alsa_failure_prints_nothing(capfd):
    assert midiport.silence_alsa()

    with pytest.raises(rtmidi.SystemError):
        rtmidi.MidiOut(rtmidi.API_LINUX_ALSA)

    assert capfd.readouterr().err == ""


def test_probe_in_fresh_process_prints_one_line():
    # A fresh interpreter also checks that the handlers restored at exit do not crash it.
    script = textwrap.dedent(
        """
        from sideman.midiport import probe_backend
        from sideman.errors import MidiSystemError
        try:
            probe_backend("jack")
        except MidiSystemError as error:
            print(error)
        """
    )
    environment = {**os.environ, "JACK_DEFAULT_SERVER": f"sideman-absent-{os.getpid()}"}

    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=60)

    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.count("\n") == 1
    assert "no JACK server 'sideman-absent-" in result.stdout


def test_quiet_jack_messages_nests_and_restores():
    library = midiport._libjack()
    if library is None:
        pytest.skip("libjack not found")
    loud = midiport._read_jack_handlers(library)
    noop = midiport._noop_handler_address()
    assert loud and noop is not None
    assert noop not in loud.values()

    with midiport.quiet_jack_messages(library):
        with midiport.quiet_jack_messages(library):
            assert midiport._read_jack_handlers(library) == dict.fromkeys(loud, noop)
        assert midiport._read_jack_handlers(library) == dict.fromkeys(loud, noop)

    assert midiport._read_jack_handlers(library) == loud


# --- Port names -------------------------------------------------------------

PORTS = ["system:midi_playback_1", "system:midi_playback_2", "fluidsynth:midi_00", "Synth:in", "Synth:in 2"]


def test_find_port_full_name():
    assert find_port("system:midi_playback_2", PORTS) == 1


def test_find_port_unique_part_ignores_case():
    assert find_port("FLUID", PORTS) == 2


def test_find_port_full_name_beats_longer_names():
    assert find_port("Synth:in", PORTS) == 3


def test_find_port_ambiguous_part_lists_matches():
    with pytest.raises(MidiSystemError) as raised:
        find_port("playback", PORTS)

    message = str(raised.value)
    assert "ambiguous" in message
    assert "'system:midi_playback_1'" in message
    assert "'system:midi_playback_2'" in message
    assert "fluidsynth" not in message


def test_find_port_not_found_lists_available():
    with pytest.raises(MidiSystemError) as raised:
        find_port("qsynth", PORTS)

    message = str(raised.value)
    assert "'qsynth' not found" in message
    for name in PORTS:
        assert repr(name) in message


def test_find_port_no_ports_at_all():
    with pytest.raises(MidiSystemError, match="there are no MIDI output ports"):
        find_port("loopMIDI", [])


def test_find_port_empty_name():
    with pytest.raises(MidiSystemError, match="empty MIDI output port name"):
        find_port("", PORTS)


def test_find_port_duplicate_full_names_are_ambiguous():
    with pytest.raises(MidiSystemError, match="ambiguous"):
        find_port("a:b", ["a:b", "a:b"])


# --- MidiOutput with a fake rtmidi port ---------------------------------------


def test_output_sends_mido_message_and_bytes():
    port = FakeRtMidiOut()
    output = MidiOutput(port, "sideman:out", "jack")

    output.send(mido.Message("note_on", channel=2, note=60, velocity=100))
    output.send([0x82, 60, 0])

    assert port.sent == [[0x92, 60, 100], [0x82, 60, 0]]


def test_output_all_notes_off():
    port = FakeRtMidiOut()
    output = MidiOutput(port, "sideman:out", "jack")

    output.all_notes_off(0)
    output.all_notes_off(15)

    assert port.sent == [[0xB0, 123, 0], [0xBF, 123, 0]]


@pytest.mark.parametrize("channel", [-1, 16])
def test_output_all_notes_off_channel_range(channel):
    output = MidiOutput(FakeRtMidiOut(), "sideman:out", "jack")

    with pytest.raises(ValueError, match=f"channel {channel} out of range: expected 0-15"):
        output.all_notes_off(channel)


def test_output_close_is_idempotent():
    port = FakeRtMidiOut()

    with MidiOutput(port, "sideman:out", "jack") as output:
        assert not output.closed
    output.close()

    assert output.closed
    assert port.closed == 1
    assert port.deleted == 1


def test_output_send_after_close():
    output = MidiOutput(FakeRtMidiOut(), "sideman:out", "jack")
    output.close()

    with pytest.raises(MidiSystemError, match="sideman:out is closed"):
        output.send([0x90, 60, 100])


def test_output_send_failure_becomes_midi_system_error():
    output = MidiOutput(FakeRtMidiOut(error=rtmidi.SystemError("port gone")), "sideman:out", "jack")

    with pytest.raises(MidiSystemError, match="sending to MIDI output sideman:out failed: port gone"):
        output.send([0x90, 60, 100])


def test_open_output_on_windows_needs_midi_out():
    system = FakeMidiSystem(platform="win32", compiled=frozenset({"winmm"}))

    with pytest.raises(MidiSystemError, match="loopMIDI") as raised:
        open_output(system=system)

    assert "--midi-out" in str(raised.value)


def test_open_output_jack_client_name_taken():
    system = FakeMidiSystem(jack=None, clients={"sideman"})

    with pytest.raises(MidiSystemError, match="JACK already has a client named 'sideman'"):
        open_output("jack", system=system)


# --- Real ports on the private JACK server ------------------------------------


@pytest.mark.ports
def test_virtual_output_delivers_bytes():
    with open_output("jack") as output, Receiver(source="sideman:out") as receiver:
        assert output.name == "sideman:out"
        assert output.backend == "jack"
        assert output.connected_to is None

        output.send(mido.Message("note_on", channel=0, note=60, velocity=100))
        output.send([0x80, 60, 0])
        output.all_notes_off(0)
        received = receiver.wait_for(lambda messages: len(messages) >= 3)

    assert [message.bytes() for message in received] == [[0x90, 60, 100], [0x80, 60, 0], [0xB0, 123, 0]]
    assert receiver.balance() == {}


class NativeMidiSystemWithoutAlsa(midiport.NativeMidiSystem):
    # Machines with a sound card have an ALSA sequencer, which auto prefers.
    def alsa_problem(self) -> str | None:
        return "no ALSA sequencer (hidden by the test)"


@pytest.mark.ports
def test_auto_backend_chooses_running_jack():
    with open_output(system=NativeMidiSystemWithoutAlsa()) as output:
        assert output.backend == "jack"
        assert "sideman:out" in jack_ports()


@pytest.mark.ports
def test_close_frees_client_name():
    first = open_output("jack")
    first.close()

    with open_output("jack") as second:
        assert "sideman:out" in jack_ports()
        assert second.name == "sideman:out"

    assert "sideman:out" not in jack_ports()


@pytest.mark.ports
def test_second_output_with_same_client_name():
    with open_output("jack"):
        with pytest.raises(MidiSystemError, match="already has a client named 'sideman'"):
            open_output("jack")


@pytest.mark.ports
def test_midi_out_connects_by_unique_part():
    with Receiver() as receiver:
        unique_part = receiver.client_name.removeprefix("sideman-test-")

        with open_output("jack", connect_to=unique_part) as output:
            assert output.connected_to == receiver.port_name
            assert output.name == "sideman:out"

            output.send([0x91, 64, 90])
            received = receiver.wait_for(lambda messages: len(messages) >= 1)

    assert received[0].bytes() == [0x91, 64, 90]


@pytest.mark.ports
def test_midi_out_ambiguous_part():
    with Receiver() as first, Receiver() as second:
        with pytest.raises(MidiSystemError) as raised:
            open_output("jack", connect_to="sideman-test-rx")

    message = str(raised.value)
    assert "ambiguous" in message
    assert first.port_name in message
    assert second.port_name in message
    assert "sideman:out" not in jack_ports()


@pytest.mark.ports
def test_midi_out_not_found_lists_ports():
    with Receiver() as receiver:
        with pytest.raises(MidiSystemError) as raised:
            open_output("jack", connect_to="no-such-synth")

    message = str(raised.value)
    assert "'no-such-synth' not found" in message
    assert receiver.port_name in message


@pytest.mark.ports
def test_list_ports_sees_both_directions():
    with open_output("jack"), Receiver() as receiver:
        inputs, outputs = list_ports("jack")

    assert "sideman:out" in inputs
    assert receiver.port_name in outputs
    assert receiver.port_name not in inputs


@pytest.mark.ports
def test_open_and_close_are_logged(caplog):
    caplog.set_level("INFO", logger="sideman.midiport")

    with open_output("jack"):
        pass

    messages = [record.getMessage() for record in caplog.records]
    assert "MIDI backend: jack" in messages
    assert "opened MIDI output sideman:out (jack, virtual port)" in messages
    assert "closed MIDI output sideman:out (jack)" in messages
