"""The listing port keeper (ALSA, CoreMIDI and WinMM) on real python-rtmidi ports of a private JACK server.

This machine has no ALSA sequencer, CoreMIDI or WinMM. The keeper for those
backends reads nothing but python-rtmidi's port lists and reopens ports by
name through python-rtmidi, and python-rtmidi offers the same calls under
JACK. So these tests run that keeper on JACK ports, exactly as the daemon
builds it for the other backends: a synth and a keyboard go away and return,
and notes flow again without a restart.
"""

import os
import time

import mido
import pytest

from sideman.clock import MonotonicClock
from sideman.midiinput import open_input
from sideman.midiport import open_output
from sideman.portkeeper import KeptInput, KeptOutput
from sideman.portlist import listing_port_keeper
from sideman.sharedoutput import SharedOutput
from tests.jack import Receiver, wait_for_port
from tests.test_port_loss import Keyboard
from tests.test_portkeeper import wait_until

pytestmark = pytest.mark.ports

RETURN_TIMEOUT = 10.0  # seconds; the keeper lists the ports every 0.25 s


def test_output_follows_a_synth_that_leaves_and_returns():
    synth_name = f"sideman-test-synth-{os.getpid()}"
    client_name = f"sideman-test-out-{os.getpid()}"
    synth = Receiver(client_name=synth_name)

    def open_on(full_name: str | None = None):
        return open_output("jack", connect_to=full_name or synth_name, client_name=client_name, port_name="out")

    shared = SharedOutput(open_on(), MonotonicClock())
    kept_output = KeptOutput(shared, reopen=lambda: None, open_on=open_on)
    keeper = listing_port_keeper("jack", [kept_output])
    keeper.start()
    try:
        shared.send(mido.Message("note_on", note=60, velocity=90))
        synth.wait_for(lambda messages: any(m.type == "note_on" for m in messages))

        synth.close()
        connection = keeper.connections[0]
        wait_until(lambda: connection.state == "missing", RETURN_TIMEOUT)
        shared.send(mido.Message("note_on", note=62, velocity=90))
        assert shared.dropped >= 1

        synth = Receiver(client_name=synth_name)
        wait_until(lambda: connection.state == "connected", RETURN_TIMEOUT)
        assert connection.reconnections == 1
        time.sleep(0.2)  # the server applies a new connection in a later cycle
        shared.send(mido.Message("note_on", note=64, velocity=90))
        shared.send(mido.Message("note_off", note=64, velocity=0))
        received = synth.wait_for(lambda messages: any(m.type == "note_off" for m in messages))
        # Only what was sent after the return arrives: no note_off without its note_on.
        assert [(m.type, m.note) for m in received] == [("note_on", 64), ("note_off", 64)]
    finally:
        keeper.close()
        shared.port.close()
        synth.close()


def test_input_follows_a_keyboard_that_leaves_and_returns():
    keyboard_name = f"sideman-test-keys-{os.getpid()}"
    client_name = f"sideman-test-in-{os.getpid()}"
    keyboard = Keyboard(keyboard_name)
    received_messages: list[mido.Message] = []
    source = wait_for_port(f"{keyboard_name}:out")

    def open_on(full_name: str | None = None):
        return open_input("jack", connect_to=full_name or source, client_name=client_name, port_name="in", on_message=received_messages.append)

    kept_input = KeptInput(open_on(), reopen=lambda: None, open_on=open_on)
    keeper = listing_port_keeper("jack", [kept_input])
    keeper.start()
    try:
        keyboard.send(mido.Message("control_change", control=20, value=1))
        wait_until(lambda: any(m.value == 1 for m in received_messages), RETURN_TIMEOUT)

        keyboard.close()
        connection = keeper.connections[0]
        wait_until(lambda: connection.state == "missing", RETURN_TIMEOUT)

        keyboard = Keyboard(keyboard_name)
        wait_until(lambda: connection.state == "connected", RETURN_TIMEOUT)
        time.sleep(0.2)
        keyboard.send(mido.Message("control_change", control=20, value=2))
        wait_until(lambda: any(m.value == 2 for m in received_messages), RETURN_TIMEOUT)
        assert kept_input.counts()["received"] == 2
    finally:
        keeper.close()
        kept_input.close()
        keyboard.close()
