"""Live input end to end: a musician's port plays into sideman-in:in of a `sideman run` on a private JACK server."""

import threading
import time

import mido
import pytest

from sideman.plugins.scale import MODES
from tests.jack import Sender, connect_ports
from tests.live import DAEMON_PORT, LiveDaemon
from tests.test_live import model  # noqa: F401 (the fixture: a small random model saved as a bundle)

pytestmark = pytest.mark.ports

BPM = 120.0
SECONDS_PER_BEAT = 60.0 / BPM
BEATS_PER_BAR = 4
INPUT_PORT = "sideman-in:in"
# One bar of eighth notes in E major: E4 G#4 B4 C#5 D#5 E5 B4 E4.
E_MAJOR_CALL = [(64, 0.5), (68, 0.5), (71, 0.5), (73, 0.5), (75, 0.5), (76, 0.5), (71, 0.5), (64, 0.5)]
E_MAJOR = {(4 + step) % 12 for step in MODES["major"]}
# Timing tolerance of these behavioural checks: JACK periods, thread wake-ups, a busy machine.
TOLERANCE = 0.08


def note_ons(messages):
    return [message for message in messages if message.type == "note_on" and message.velocity > 0]


def beat_clock(daemon: LiveDaemon) -> tuple[float, float]:
    """Return (time.perf_counter(), beat) of one moment of the daemon's transport, from a status round trip."""
    sent = time.perf_counter()
    status = daemon.status()
    received = time.perf_counter()
    return (sent + received) / 2, status["beat"]


def test_call_gets_bar_aligned_answer_in_key(tmp_path, model):
    arguments = ("--model", model, "--tempo", str(BPM), "--seeder", "live", "--sampler", "scale temperature", "--param", "scale.key=auto")
    with LiveDaemon(tmp_path, *arguments) as daemon, daemon.connect_sender(INPUT_PORT) as keyboard:
        moment, beat = beat_clock(daemon)
        time.sleep(0.5)
        assert note_ons(daemon.receiver.messages()) == [], "sideman plays while it should listen"

        onsets = keyboard.play(E_MAJOR_CALL, SECONDS_PER_BEAT, gate=0.8)
        call_end = onsets[-1] + 0.8 * 0.5 * SECONDS_PER_BEAT
        daemon.receiver.wait_for(lambda messages: note_ons(messages), timeout=10.0)
        time.sleep(BEATS_PER_BAR * SECONDS_PER_BEAT + 0.5)
        status = daemon.status()
        answer = note_ons(daemon.receiver.messages())

        # The engine's answer: one bar, the length of the call, starting on a bar line.
        assert status["answers"] == 1
        assert status["answer_beats"] == float(BEATS_PER_BAR)
        assert status["answer_beat"] % BEATS_PER_BAR == 0
        assert status["live_notes"] == len(E_MAJOR_CALL)

        # What the receiver heard: the first note on that bar line, the first after one bar of silence.
        bar_line = moment + (status["answer_beat"] - beat) * SECONDS_PER_BEAT
        assert answer[0].time == pytest.approx(bar_line, abs=TOLERANCE)
        silence_end = call_end + BEATS_PER_BAR * SECONDS_PER_BEAT
        assert silence_end - TOLERANCE <= answer[0].time <= silence_end + BEATS_PER_BAR * SECONDS_PER_BEAT + TOLERANCE
        bar_seconds = BEATS_PER_BAR * SECONDS_PER_BEAT
        assert all(message.time < answer[0].time + bar_seconds + TOLERANCE for message in answer)
        assert daemon.receiver.balance() == {}

        # scale auto found E major in the call.
        assert {message.note % 12 for message in answer} <= E_MAJOR


def test_routing_loop_not_a_call(tmp_path, model):
    arguments = ("--model", model, "--tempo", str(BPM), "--seeder", "live", "--param", "live.bars=2", "--sampler", "greedy")
    with LiveDaemon(tmp_path, *arguments) as daemon:
        connect_ports(DAEMON_PORT, INPUT_PORT)
        daemon.send("/sideman/respond")
        daemon.receiver.wait_for(lambda messages: note_ons(messages), timeout=10.0)
        time.sleep(2 * BEATS_PER_BAR * SECONDS_PER_BEAT + 0.5)

        status = daemon.status()
        assert status["answers"] == 1
        assert status["live_notes"] == 0, "sideman took its own notes for the musician's"
        assert "stops its answer" not in daemon.log()
        assert daemon.receiver.balance() == {}


def test_thru_and_mapped_controls(tmp_path, model):
    config = tmp_path / "controls.toml"
    config.write_text('[cc]\ntempo = { cc = 20, low = 60, high = 180 }\nrespond = 67\nchannel = 2\n')
    arguments = ("--model", model, "--config", str(config), "--seeder", "live", "--param", "live.thru=true", "--channel", "3")
    with LiveDaemon(tmp_path, *arguments) as daemon, daemon.connect_sender(INPUT_PORT) as controller:
        controller.send(mido.Message("note_on", channel=1, note=50, velocity=70))
        controller.send(mido.Message("note_off", channel=1, note=50, velocity=0))
        thru = daemon.receiver.wait_for(lambda messages: any(m.type == "note_off" for m in messages), timeout=5.0)
        assert [(m.type, m.note, m.channel) for m in thru if m.type in ("note_on", "note_off")][:2] == [("note_on", 50, 2), ("note_off", 50, 2)]

        controller.send(mido.Message("control_change", channel=1, control=20, value=127))
        controller.send(mido.Message("control_change", channel=0, control=20, value=0))  # another channel: ignored
        controller.send(mido.Message("control_change", channel=1, control=67, value=127))
        deadline = time.monotonic() + 5.0
        status = daemon.status()
        while (status["tempo"], status["answers"]) != (180.0, 1) and time.monotonic() < deadline:
            time.sleep(0.1)
            status = daemon.status()
        assert status["tempo"] == 180.0
        assert status["answers"] == 1


class PulseSender:
    """Send MIDI clock pulses at a tempo from a thread of its own, recording each pulse's send time."""

    def __init__(self, sender: Sender, bpm: float):
        self._sender = sender
        self._spacing = 60.0 / bpm / 24
        self._stop = threading.Event()
        self.times: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        start = time.perf_counter()
        index = 0
        while not self._stop.is_set():
            deadline = start + index * self._spacing
            remaining = deadline - time.perf_counter()
            if remaining > 0:
                time.sleep(remaining)
            self.times.append(time.perf_counter())
            try:
                self._sender.send(mido.Message("clock"))
            except AttributeError:
                return  # the sender closed: the test ended early
            index += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)


def test_follows_midi_clock_start_stop_and_stall(tmp_path, model):
    with LiveDaemon(tmp_path, "--model", model, "--sync", "midi-in", autoplay=True) as daemon, daemon.connect_sender(INPUT_PORT) as clock_source:
        pulses = PulseSender(clock_source, 120.0)
        pulses.start()
        time.sleep(1.0)
        assert note_ons(daemon.receiver.messages()) == [], "sideman played before Start"

        clock_source.send(mido.Message("start"))
        daemon.receiver.wait_for(lambda messages: len(note_ons(messages)) >= 8, timeout=10.0)
        assert daemon.status()["clock_bpm"] == pytest.approx(120.0, rel=0.02)
        clock_source.send(mido.Message("stop"))
        time.sleep(0.5)
        stopped_at = len(note_ons(daemon.receiver.messages()))
        time.sleep(1.0)
        assert len(note_ons(daemon.receiver.messages())) == stopped_at, "notes after Stop"
        assert daemon.receiver.balance() == {}

        # Continue, then the pulses stop without a Stop: sideman stops by itself after 2 beats.
        clock_source.send(mido.Message("continue"))
        daemon.receiver.wait_for(lambda messages: len(note_ons(messages)) >= stopped_at + 4, timeout=10.0)
        pulses.stop()
        time.sleep(2.0)
        status = daemon.status()
        assert status["running"] == 0
        assert daemon.receiver.balance() == {}
        assert "MIDI clock: no pulse" in daemon.log()
