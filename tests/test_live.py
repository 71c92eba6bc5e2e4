"""`sideman run` end to end: a subprocess playing into a receiver on a private JACK server."""

import math
import signal
import statistics
import subprocess

import mido
import pytest

from sideman.bundle import save_bundle
from tests.factories import random_bundle
from tests.live import SIDEMAN, LiveDaemon

pytestmark = pytest.mark.ports

STEPS_PER_BEAT = 12


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.sideman"
    save_bundle(random_bundle(n_a=16, seed=11, scale=1.5), path)
    return str(path)


def note_on_times(messages):
    return [message.time for message in messages if message.type == "note_on" and message.velocity > 0]


def note_on_pitches(messages):
    return [message.note for message in messages if message.type == "note_on" and message.velocity > 0]


def grid_errors(times, bpm):
    """Distance in seconds of each onset from the 1/12-beat grid, phase fitted to all onsets.

    The phase is the circular mean of the onsets' positions within a grid
    step, so one late onset does not shift the grid for the others.
    """
    step = 60.0 / bpm / STEPS_PER_BEAT
    angles = [2 * math.pi * ((time - times[0]) / step % 1.0) for time in times]
    phase = math.atan2(sum(map(math.sin, angles)), sum(map(math.cos, angles))) / (2 * math.pi)
    errors = []
    for time in times:
        steps = (time - times[0]) / step - phase
        errors.append(abs(steps - round(steps)) * step)
    return errors


def test_notes_arrive_on_the_grid(tmp_path, model):
    with LiveDaemon(tmp_path, "--model", model, "--tempo", "120", "--show", autoplay=True) as daemon:
        messages = daemon.wait_for_notes(40)

        times = note_on_times(messages)
        assert max(grid_errors(times, 120.0)) < 0.010
        assert all(message.channel == 0 for message in messages if message.type == "note_on")
        assert " beats" in daemon.output()


def test_channel_option(tmp_path, model):
    with LiveDaemon(tmp_path, "--model", model, "--channel", "5") as daemon:
        messages = daemon.wait_for_notes(5)

        assert {message.channel for message in messages if message.type == "note_on"} == {4}


def test_tempo_change_applies(tmp_path, model):
    with LiveDaemon(tmp_path, "--model", model, "--tempo", "120", "--seed", "3") as daemon:
        before = note_on_times(daemon.wait_for_notes(31))[:31]
        count = len(note_on_times(daemon.receiver.messages()))

        # Replay the same notes from the zero state at double tempo: the same
        # durations then take half the time.
        daemon.send("/sideman/stop")
        daemon.send("/sideman/reset")
        daemon.send("/sideman/seed", 3)
        daemon.send("/sideman/tempo", 240.0)
        daemon.send("/sideman/start")
        after = note_on_times(daemon.wait_for_notes(count + 45))[count + 5:count + 36]

    intervals_before = [b - a for a, b in zip(before, before[1:])]
    intervals_after = [b - a for a, b in zip(after, after[1:])]
    ratio = statistics.median(intervals_after) / statistics.median(intervals_before)
    assert 0.35 <= ratio <= 0.65


def generated_pitches(tmp_path, model, seed, count=50):
    path = tmp_path / f"generated-{seed}.mid"
    subprocess.run([*SIDEMAN, "generate", "--model", model, "--seed", str(seed), "--notes", str(count), str(path)], check=True, capture_output=True)
    return [message.note for message in mido.MidiFile(str(path)) if message.type == "note_on" and message.velocity > 0]


def restart_with_seed(daemon, seed, count=50):
    """Stop, reset, reseed and start; return the pitches of the next `count` notes."""
    daemon.send("/sideman/stop")
    assert daemon.status()["running"] == 0
    already = len(note_on_pitches(daemon.receiver.messages()))
    daemon.send("/sideman/reset")
    daemon.send("/sideman/seed", seed)
    daemon.send("/sideman/start")
    messages = daemon.wait_for_notes(already + count, timeout=30)
    return note_on_pitches(messages)[already:already + count]


def test_reset_and_seed_replay_generate(tmp_path, model):
    with LiveDaemon(tmp_path, "--model", model, "--tempo", "400", "--seed", "99") as daemon:
        daemon.wait_for_notes(10)

        first = restart_with_seed(daemon, 5)
        second = restart_with_seed(daemon, 5)
        other = restart_with_seed(daemon, 6)

    assert first == generated_pitches(tmp_path, model, 5)
    assert second == first
    assert other != first


@pytest.mark.parametrize("how", ["osc-stop", "SIGTERM", "SIGINT"])
def test_every_note_released(tmp_path, model, how):
    with LiveDaemon(tmp_path, "--model", model, "--tempo", "300", "--gate", "1.0") as daemon:
        daemon.wait_for_notes(20)

        if how == "osc-stop":
            daemon.send("/sideman/stop")
            daemon.receiver.wait_for(lambda messages: any(m.is_cc(123) for m in messages), timeout=5)
            assert daemon.process.poll() is None
        else:
            exit_code = daemon.stop_process(getattr(signal, how))
            assert exit_code == 0

        messages = daemon.receiver.messages()
        assert daemon.receiver.balance() == {}
        assert any(message.is_cc(123) for message in messages)


def test_status_replies_with_tempo(tmp_path, model):
    with LiveDaemon(tmp_path, "--model", model) as daemon:
        daemon.wait_for_notes(2)

        daemon.send("/sideman/tempo", 137.5)
        status = daemon.status()

    assert status["tempo"] == pytest.approx(137.5)
    assert status["running"] == 1
    assert status["sampler"] == "temperature"
    # Nothing played into the MIDI input.
    for key in ("input_received", "input_malformed", "input_ignored", "input_rate_limited", "input_handler_errors"):
        assert status[key] == 0, key


def test_malformed_osc_logged_and_play_continues(tmp_path, model):
    with LiveDaemon(tmp_path, "--model", model, "--tempo", "300") as daemon:
        daemon.wait_for_notes(5)

        daemon.send_raw(b"/sideman/tempo\x00\x00,f\x00")
        daemon.send_raw(b"\xff\xfe garbage")
        daemon.send("/sideman/tempo", "fast")
        count = len(note_on_times(daemon.receiver.messages()))
        daemon.wait_for_notes(count + 10)
        assert daemon.status()["tempo"] == pytest.approx(300.0)

        assert daemon.log().count("WARNING") >= 3
        assert "127.0.0.1:" in daemon.log()


def test_record_written_on_sigterm(tmp_path, model):
    record = tmp_path / "take.mid"
    with LiveDaemon(tmp_path, "--model", model, "--tempo", "300", "--record", str(record)) as daemon:
        daemon.wait_for_notes(10)
        assert daemon.stop_process(signal.SIGTERM) == 0
        received = len(note_on_times(daemon.receiver.messages()))

    recorded = [message for message in mido.MidiFile(str(record)) if message.type == "note_on" and message.velocity > 0]
    assert len(recorded) == received


def test_clock_master_pulses_and_transport(tmp_path, model):
    with LiveDaemon(tmp_path, "--model", model, "--tempo", "150", "--sync", "master") as daemon:
        daemon.receiver.wait_for(lambda messages: sum(message.type == "clock" for message in messages) >= 24 * 8, timeout=20.0)
        status = daemon.status()
        assert daemon.stop_process(signal.SIGTERM) == 0
        messages = daemon.receiver.messages()

    assert status["sync"] == "master"
    transport = [message.type for message in messages if message.type in ("start", "stop", "continue", "songpos")]
    assert transport == ["start", "stop"]
    pulses = [message.time for message in messages if message.type == "clock"]
    spacing = statistics.median(later - earlier for earlier, later in zip(pulses, pulses[1:]))
    assert spacing == pytest.approx(60.0 / 150.0 / 24, rel=0.05)
    # Every pulse comes after Start and before Stop.
    start_index = next(index for index, message in enumerate(messages) if message.type == "start")
    stop_index = next(index for index, message in enumerate(messages) if message.type == "stop")
    assert all(start_index < index < stop_index for index, message in enumerate(messages) if message.type == "clock")
