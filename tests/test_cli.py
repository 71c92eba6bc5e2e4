"""The `sideman` command line and the `run` lifecycle, without MIDI hardware.

Commands that need a MIDI port run in a subprocess with `open_output`
replaced by a fake that records what it was sent. End-to-end runs against
real virtual ports on a private JACK server live in the port tests.
"""

import json
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import mido
import pytest

from sideman import cli
from sideman.bundle import save_bundle
from sideman.clock import FakeClock
from sideman.daemon import NotePrinter, QueuedNotePrinter, _close_output, shutdown_signals
from sideman.encoding import Token
from sideman.engine import NoteEvent
from sideman.sharedoutput import SharedOutput

from .factories import random_bundle
from .test_engine import FakeOutput

REPOSITORY = Path(__file__).resolve().parent.parent
# Generous limits: a shared machine can be slow, and these tests check behaviour, not speed.
SUBPROCESS_TIMEOUT = 60

# Runs `sideman.cli.main` with the MIDI output replaced by a fake, then prints on
# its last stdout line what the fake received and whether TensorFlow was imported.
FAKE_OUTPUT_RUNNER = textwrap.dedent("""
    import json, sys
    import sideman.midiport

    class FakeOutput:
        name = "fake:out"

        def __init__(self):
            self.messages = []
            self.closed = False

        def send(self, message):
            self.messages.append(message.bytes() if hasattr(message, "bytes") else list(message))

        def all_notes_off(self, channel):
            self.messages.append([0xB0 | channel, 123, 0])

        def close(self):
            self.closed = True

    outputs = []

    def open_output(backend="auto", connect_to=None, client_name="sideman", port_name="out"):
        outputs.append(FakeOutput())
        return outputs[-1]

    sideman.midiport.open_output = open_output

    import sideman.cli
    code = sideman.cli.main(sys.argv[1:])
    report = {
        "code": code,
        "tensorflow": "tensorflow" in sys.modules,
        "messages": outputs[0].messages if outputs else None,
        "closed": outputs[0].closed if outputs else None,
    }
    print("REPORT " + json.dumps(report), flush=True)
""")


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "random.sideman"
    save_bundle(random_bundle(), path)
    return path


def run_sideman(*args: str, timeout: float = SUBPROCESS_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sideman.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=REPOSITORY)


def run_with_fake_output(*args: str) -> tuple[dict, subprocess.CompletedProcess]:
    """Run `sideman` with a fake MIDI output and no MIDI input, so no MIDI system is needed."""
    completed = subprocess.run(
        [sys.executable, "-c", FAKE_OUTPUT_RUNNER, *args, "--no-midi-in"], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, cwd=REPOSITORY,
    )
    report_lines = [line for line in completed.stdout.splitlines() if line.startswith("REPORT ")]
    assert report_lines, completed.stderr
    return json.loads(report_lines[-1].removeprefix("REPORT ")), completed


def note_on_count(messages: list[list[int]]) -> int:
    return sum(1 for message in messages if message[0] & 0xF0 == 0x90 and message[2] > 0)


def note_off_count(messages: list[list[int]]) -> int:
    return sum(1 for message in messages if message[0] & 0xF0 == 0x80 or message[0] & 0xF0 == 0x90 and message[2] == 0)


def is_all_notes_off(message: list[int], channel: int) -> bool:
    return message == [0xB0 | channel, 123, 0]


# Help and start-up cost

def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])

    assert exited.value.code == 0
    output = capsys.readouterr().out
    for command in ("run", "train", "generate", "evaluate", "ports"):
        assert command in output
    assert "--config FILE" in output
    assert "--log-level" in output


def test_run_help_gives_units_and_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])

    output = " ".join(capsys.readouterr().out.split())
    assert "--tempo BPM tempo in BPM, 20 to 400 (default: 120.0 BPM)" in output
    assert "--channel 1-16 MIDI channel of the output, 1 to 16 (default: 1)" in output
    assert "(default: 0.9)" in output
    assert "--velocity 1-127" in output
    assert "--duration SECONDS" in output
    assert "--osc-port PORT" in output
    assert "(default: 9000)" in output
    assert "C4 = 60" in output


def test_train_help_gives_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])

    output = " ".join(capsys.readouterr().out.split())
    assert "--n-a UNITS" in output
    assert "(default: 64)" in output
    assert "--tx TOKENS" in output
    assert "(default: 30 tokens)" in output
    assert "--from-channel 1-16" in output
    assert "--from-track N" in output


def test_cli_import_stays_light():
    # `sideman --help` must start fast, so the CLI module imports none of the heavy libraries.
    code = "import sys, sideman.cli; print(sorted(name for name in ('numpy', 'mido', 'rtmidi', 'tensorflow', 'pythonosc') if name in sys.modules))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, check=True)

    assert completed.stdout.strip() == "[]"


def test_help_in_subprocess_exits_zero():
    completed = run_sideman("--help")

    assert completed.returncode == 0
    assert "usage: sideman" in completed.stdout
    assert completed.stderr == ""


# Options become settings

def test_overrides_from_options():
    args = cli.build_parser().parse_args(["run", "--tempo", "140", "--channel", "3", "--no-autoplay", "--param", "temperature.value=0.7", "--sampler", "greedy"])

    overrides = cli.settings_overrides(args)

    assert overrides == {
        "run": {"tempo": 140.0, "channel": 3, "autoplay": False, "sampler": "greedy"},
        "plugins": {"temperature": {"value": "0.7"}},
    }


def test_options_left_out_give_no_overrides():
    args = cli.build_parser().parse_args(["run"])

    assert cli.settings_overrides(args) == {}


def test_log_level_before_or_after_command():
    parser = cli.build_parser()

    before = parser.parse_args(["--log-level", "debug", "run"])
    after = parser.parse_args(["run", "--log-level", "WARNING"])

    assert cli.settings_overrides(before) == {"log": {"level": "debug"}}
    assert cli.settings_overrides(after) == {"log": {"level": "warning"}}


def test_config_before_command_kept():
    args = cli.build_parser().parse_args(["--config", "mine.toml", "run"])

    assert args.config == "mine.toml"


@pytest.mark.parametrize("text", ["temperature", "temperature.value", "value=1", ".value=1", "temperature.=1"])
def test_invalid_param_option(text, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["run", "--param", text])

    assert exited.value.code == 2
    assert "PLUGIN.NAME=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value"), [("--from-channel", "0"), ("--from-channel", "17"), ("--from-track", "0"), ("--from-track", "x")])
def test_invalid_corpus_option(option, value, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["evaluate", option, value, "corpus"])

    assert exited.value.code == 2
    assert option in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_invalid_duration(value, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["run", "--duration", value])

    assert exited.value.code == 2
    assert "--duration" in capsys.readouterr().err


def test_setting_out_of_range_is_one_line(bundle_path, capsys):
    code = cli.main(["generate", "--model", str(bundle_path), "--tempo", "1000", "out.mid"])

    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("sideman: error: command line: ")
    assert "run.tempo" in error
    assert "20 to 400" in error
    assert error.count("\n") == 1


# generate

def test_generate_same_seed_same_bytes(bundle_path, tmp_path):
    first, second, other = tmp_path / "first.mid", tmp_path / "second.mid", tmp_path / "other.mid"
    common = ["generate", "--model", str(bundle_path), "--notes", "40", "--tempo", "100", "--param", "temperature.value=0.9"]

    assert cli.main([*common, "--seed", "3", str(first)]) == 0
    assert cli.main([*common, "--seed", "3", str(second)]) == 0
    assert cli.main([*common, "--seed", "4", str(other)]) == 0

    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_generate_writes_settings(bundle_path, tmp_path):
    path = tmp_path / "line.mid"

    code = cli.main(["generate", "--model", str(bundle_path), "--notes", "25", "--channel", "5", "--velocity", "70", "--tempo", "90", str(path)])

    assert code == 0
    midi = mido.MidiFile(path)
    notes = [message for message in midi if message.type == "note_on"]
    assert len(notes) == 25
    assert {message.channel for message in notes} == {4}
    assert {message.velocity for message in notes} == {70}
    tempos = [message.tempo for message in midi if message.type == "set_tempo"]
    assert tempos == [mido.bpm2tempo(90)]


def test_generate_reads_config_file(bundle_path, tmp_path):
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[run]\nmodel = "{bundle_path.name}"\nvelocity = 33\n')
    # The model path is relative to the settings file, so copy the bundle beside it.
    (tmp_path / bundle_path.name).write_bytes(bundle_path.read_bytes())
    path = tmp_path / "line.mid"

    code = cli.main(["--config", str(settings), "generate", "--notes", "5", str(path)])

    assert code == 0
    velocities = {message.velocity for message in mido.MidiFile(path) if message.type == "note_on"}
    assert velocities == {33}


def test_generate_unknown_sampler(bundle_path, tmp_path, capsys):
    code = cli.main(["generate", "--model", str(bundle_path), "--sampler", "nucleus", str(tmp_path / "x.mid")])

    assert code == 2
    assert "unknown sampler 'nucleus'" in capsys.readouterr().err


# train, evaluate, ports

def test_train_without_tensorflow(monkeypatch, tmp_path, capsys):
    # None in sys.modules makes `import tensorflow` raise ImportError, as when the train extra is missing.
    monkeypatch.setitem(sys.modules, "tensorflow", None)

    code = cli.main(["train", str(tmp_path), "--out", str(tmp_path / "model.sideman")])

    error = capsys.readouterr().err
    assert code == 2
    assert "pip install 'sideman[train]'" in error
    assert error.count("\n") == 1


def test_train_rejects_bad_setting(tmp_path, capsys):
    code = cli.main(["train", str(tmp_path), "--out", str(tmp_path / "model.sideman"), "--validation-share", "0.9"])

    assert code == 2
    assert "train.validation_share" in capsys.readouterr().err


def write_line(path: Path, pitches: list[int]) -> None:
    track = mido.MidiTrack()
    for pitch in pitches:
        track.append(mido.Message("note_on", note=pitch, velocity=80, time=0))
        track.append(mido.Message("note_off", note=pitch, velocity=0, time=240))
    mido.MidiFile(tracks=[track], ticks_per_beat=480).save(path)


def test_evaluate_prints_table(bundle_path, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for number in range(3):
        write_line(corpus / f"line{number}.mid", [60 + (index * (number + 2)) % 12 for index in range(40)])

    code = cli.main(["evaluate", "--model", str(bundle_path), "--baseline-corpus", str(corpus), "--", str(corpus)])

    output = capsys.readouterr().out
    assert code == 0
    assert "bits/token" in output
    assert "Test: 3 pieces" in output


def test_evaluate_missing_corpus(bundle_path, tmp_path, capsys):
    code = cli.main(["evaluate", "--model", str(bundle_path), str(tmp_path / "absent")])

    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("sideman: error: corpus ")
    assert "absent" in error


def test_ports_lists_both_directions(monkeypatch, capsys):
    import sideman.midiport

    requested = []

    def list_ports(backend="auto"):
        requested.append(backend)
        return ["sideman:out"], []

    monkeypatch.setattr(sideman.midiport, "list_ports", list_ports)

    code = cli.main(["ports", "--midi-backend", "jack"])

    assert code == 0
    assert requested == ["jack"]
    assert capsys.readouterr().out == "MIDI inputs:\n  sideman:out\nMIDI outputs:\n  (none)\n"


def test_interrupt_exits_130(bundle_path, monkeypatch, capsys):
    import sideman.corpus

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sideman.corpus, "read_corpus", interrupted)

    code = cli.main(["evaluate", "--model", str(bundle_path), "corpus"])

    assert code == 130
    assert capsys.readouterr().err == ""


# run

def test_run_plays_without_tensorflow(bundle_path):
    report, completed = run_with_fake_output(
        "run", "--model", str(bundle_path), "--duration", "0.5", "--osc-port", "0", "--tempo", "400", "--channel", "2", "--show",
    )

    assert report["code"] == 0, completed.stderr
    assert report["tensorflow"] is False
    assert report["closed"] is True
    messages = report["messages"]
    assert note_on_count(messages) >= 1
    assert note_off_count(messages) == note_on_count(messages)
    assert is_all_notes_off(messages[-1], 1)
    shown = [line for line in completed.stdout.splitlines() if line.endswith(" beats")]
    assert len(shown) == note_on_count(messages)
    assert "Traceback" not in completed.stderr


def test_run_without_autoplay_waits(bundle_path):
    report, completed = run_with_fake_output("run", "--model", str(bundle_path), "--duration", "0.3", "--osc-port", "0", "--no-autoplay")

    assert report["code"] == 0, completed.stderr
    assert note_on_count(report["messages"]) == 0
    assert is_all_notes_off(report["messages"][-1], 0)


def test_run_records_to_file(bundle_path, tmp_path):
    record = tmp_path / "take.mid"

    report, completed = run_with_fake_output("run", "--model", str(bundle_path), "--duration", "0.5", "--osc-port", "0", "--tempo", "400", "--record", str(record))

    assert report["code"] == 0, completed.stderr
    recorded = [message for message in mido.MidiFile(record) if message.type == "note_on" and message.velocity > 0]
    assert len(recorded) == note_on_count(report["messages"])


# Arms the daemon's dump for a hung shutdown with a short delay, then hangs.
HUNG_SHUTDOWN = """
import time
import sideman.daemon

sideman.daemon.SHUTDOWN_STACKS_AFTER = 0.2
sideman.daemon._dump_stacks_if_shutdown_hangs()
time.sleep(3)
"""


def test_hung_shutdown_writes_thread_stacks():
    completed = subprocess.run([sys.executable, "-c", HUNG_SHUTDOWN], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, cwd=REPOSITORY)

    assert completed.returncode == 0, completed.stderr
    assert "most recent call first" in completed.stderr
    sleeping_line = HUNG_SHUTDOWN.splitlines().index("time.sleep(3)") + 1
    assert f'File "<string>", line {sleeping_line}' in completed.stderr


def test_run_stops_cleanly_on_sigterm(bundle_path):
    process = subprocess.Popen(
        [sys.executable, "-c", FAKE_OUTPUT_RUNNER, "run", "--model", str(bundle_path), "--osc-port", "0", "--tempo", "300", "--no-midi-in"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPOSITORY,
    )
    try:
        stderr = wait_for_line(process, "sideman is running")
        stdout, rest = stop_with_signal(process, signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0, stderr + rest
    report = json.loads(stdout.splitlines()[-1].removeprefix("REPORT "))
    assert report["code"] == 0
    assert note_off_count(report["messages"]) == note_on_count(report["messages"])
    assert is_all_notes_off(report["messages"][-1], 0)
    assert "received SIGTERM" in rest


def test_sigusr1_writes_thread_stacks_and_plays_on(bundle_path):
    process = subprocess.Popen(
        [sys.executable, "-c", FAKE_OUTPUT_RUNNER, "run", "--model", str(bundle_path), "--osc-port", "0", "--tempo", "300", "--no-midi-in"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPOSITORY,
    )
    try:
        wait_for_line(process, "sideman is running")
        process.send_signal(signal.SIGUSR1)
        stacks = wait_for_line(process, "most recent call first")
        assert process.poll() is None
        stdout, rest = stop_with_signal(process, signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert "Current thread" in stacks or "Thread 0x" in stacks
    assert process.returncode == 0, rest
    report = json.loads(stdout.splitlines()[-1].removeprefix("REPORT "))
    assert note_off_count(report["messages"]) == note_on_count(report["messages"])


def stop_with_signal(process: subprocess.Popen, signum: int) -> tuple[str, str]:
    """Send `signum` and return the process's remaining (stdout, stderr) once it exits.

    A process still running after SUBPROCESS_TIMEOUT is killed, and the
    failure quotes the end of its stderr: a hung daemon writes every
    thread's stack there (sideman.daemon.SHUTDOWN_STACKS_AFTER).
    """
    process.send_signal(signum)
    try:
        return process.communicate(timeout=SUBPROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        name = signal.Signals(signum).name
        raise AssertionError(f"the process did not exit within {SUBPROCESS_TIMEOUT} s of {name}; the end of its stderr:\n{stderr[-6000:]}") from None


def wait_for_line(process: subprocess.Popen, marker: str) -> str:
    """Read the process's stderr until a line contains `marker`; return what was read."""
    seen = []
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=1.0):
                continue
            line = process.stderr.readline()
            if not line:
                break
            seen.append(line)
            if marker in line:
                return "".join(seen)
    raise AssertionError(f"{marker!r} never appeared on stderr:\n{''.join(seen)}")


@pytest.mark.parametrize("content", [None, b"not a zip at all", b"PK\x03\x04broken"])
def test_run_bad_bundle_is_one_line(tmp_path, content):
    path = tmp_path / "model.sideman"
    if content is not None:
        path.write_bytes(content)

    completed = run_sideman("run", "--model", str(path), "--osc-port", "0")

    assert completed.returncode == 2
    error_lines = [line for line in completed.stderr.splitlines() if " INFO " not in line]
    assert len(error_lines) == 1, completed.stderr
    assert error_lines[0].startswith("sideman: error: model bundle ")
    assert str(path) in error_lines[0]
    assert "Traceback" not in completed.stderr


def test_run_unusable_backend_is_one_line(bundle_path):
    # The ALSA backend needs /dev/snd/seq; on a machine with ALSA the backend works and this case does not apply.
    if os.path.exists("/dev/snd/seq"):
        pytest.skip("this machine has an ALSA sequencer")

    completed = run_sideman("run", "--model", str(bundle_path), "--midi-backend", "alsa", "--osc-port", "0", "--log-level", "warning")

    assert completed.returncode == 2
    assert completed.stderr.startswith("sideman: error: ")
    assert completed.stderr.count("\n") == 1
    assert "ALSA" in completed.stderr


# Signals and --show

def test_shutdown_signals_set_event_and_restore():
    previous_int = signal.getsignal(signal.SIGINT)
    previous_term = signal.getsignal(signal.SIGTERM)
    requested = threading.Event()

    with shutdown_signals(requested):
        os.kill(os.getpid(), signal.SIGTERM)
        # The handler runs in the main thread at the next bytecode boundary; wait returns once it has.
        assert requested.wait(SUBPROCESS_TIMEOUT)

    assert signal.getsignal(signal.SIGINT) is previous_int
    assert signal.getsignal(signal.SIGTERM) is previous_term


def test_shutdown_signals_outside_main_thread():
    requested = threading.Event()
    errors = []

    def enter():
        try:
            with shutdown_signals(requested):
                pass
        except Exception as error:
            errors.append(error)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()

    assert errors == []


class ListStream:
    def __init__(self):
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_note_printer_format():
    stream = ListStream()
    printer = NotePrinter(stream)

    printer(NoteEvent(seconds=12.25, beat=24.5, token=Token(66, 6), name="F#4", beats=0.5))
    printer(NoteEvent(seconds=13.0, beat=26.0, token=Token(60, 12), name="C4", beats=1.0))

    assert stream.text == "  12.250 s  F#4   0.50 beats\n  13.000 s  C4    1.00 beats\n"


def test_queued_printer_prints_in_order():
    stream = ListStream()
    printer = QueuedNotePrinter(NotePrinter(stream))
    printer.start()

    for index in range(5):
        printer(NoteEvent(seconds=float(index), beat=float(index), token=Token(60, 12), name="C4", beats=1.0))
    printer.close()

    assert stream.text.count("C4") == 5
    assert stream.text.splitlines()[0] == "   0.000 s  C4    1.00 beats"


def test_queued_printer_drops_when_blocked():
    release = threading.Event()

    class BlockedStream(ListStream):
        def write(self, text):
            release.wait(5)
            super().write(text)

    stream = BlockedStream()
    printer = QueuedNotePrinter(NotePrinter(stream), max_pending=2)
    printer.start()
    event = NoteEvent(seconds=0.0, beat=0.0, token=Token(60, 12), name="C4", beats=1.0)

    for _ in range(10):
        printer(event)
    release.set()
    printer.close()

    assert printer.dropped >= 7
    assert stream.text.count("C4") == 10 - printer.dropped


def test_note_printer_survives_closed_stream():
    class ClosedStream:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    printer = NotePrinter(ClosedStream())

    printer(NoteEvent(seconds=0.0, beat=0.0, token=Token(60, 12), name="C4", beats=1.0))


class ClosingOutput(FakeOutput):
    """A FakeOutput that records when it is closed."""

    def __init__(self, clock: FakeClock):
        super().__init__(clock)
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_closing_output_releases_thru_notes_first():
    clock = FakeClock()
    port = ClosingOutput(clock)
    output = SharedOutput(port, clock)
    # A note the MIDI input passed through after the engine had released its own.
    output.send(mido.Message("note_on", channel=2, note=64, velocity=90))

    _close_output(output)

    assert port.notes() == [(0.0, "note_on", 64), (0.0, "note_off", 64)]
    assert port.closed
