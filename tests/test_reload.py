"""SIGHUP: the settings file is read again and what can change during play is applied."""

import signal
import subprocess
import sys

import pytest

from sideman.commands import ApplySeeder, Reseed, SetParam, SetSampler, SetTempo
from sideman.config.loader import load_settings
from sideman.engine import DEFAULT_REGISTRY, DEFAULT_SEEDERS
from sideman.errors import SettingsError
from sideman.reload import reload_commands, reload_settings
from tests.test_cli import FAKE_OUTPUT_RUNNER, REPOSITORY, stop_with_signal, wait_for_line

PLUGINS = DEFAULT_REGISTRY | DEFAULT_SEEDERS


def settings_from(path, text: str):
    path.write_text(text)
    return load_settings(str(path), plugins=PLUGINS)


def test_runtime_changes_become_commands(tmp_path):
    old = settings_from(tmp_path / "a.toml", "")
    new = settings_from(tmp_path / "b.toml", """
[run]
tempo = 150
seed = 4
sampler = ["top_p", "greedy"]
seeder = "phrase"
channel = 3
[midi]
in = "Keystation"
[plugins.phrase]
notes = "C4:1"
[plugins.top_p]
p = 0.5
""")

    commands, restart = reload_commands(old, new)

    assert commands[:3] == [SetTempo(150.0), Reseed(4), SetSampler(("top_p", "greedy"))]
    assert set(commands[3:5]) == {SetParam("phrase", "notes", "C4:1"), SetParam("top_p", "p", 0.5)}
    assert commands[-1] == ApplySeeder("phrase")
    assert restart == ["run.channel", "midi.in"]


def test_unchanged_settings_give_nothing(tmp_path):
    settings = settings_from(tmp_path / "a.toml", "[run]\ntempo = 99\n")
    assert reload_commands(settings, settings) == ([], [])


def test_invalid_file_changes_nothing(tmp_path, caplog):
    current = settings_from(tmp_path / "a.toml", "")
    applied = []

    def broken():
        raise SettingsError("settings file x.toml is not valid TOML")

    assert reload_settings(current, broken, applied.append) is current
    assert applied == []
    assert "nothing changed" in caplog.text


def test_settings_in_force_after_reload(tmp_path, caplog):
    current = settings_from(tmp_path / "a.toml", "")
    path = tmp_path / "b.toml"
    path.write_text("[run]\ntempo = 133\nvelocity = 50\n")
    applied = []

    in_force = reload_settings(current, lambda: load_settings(str(path), plugins=PLUGINS), applied.append)

    assert applied == [[SetTempo(133.0)]]
    assert in_force.run.tempo == 133.0
    # Velocity needs a restart: it keeps the old value, and the log names it.
    assert in_force.run.velocity == current.run.velocity
    assert "run.velocity" in caplog.text


def test_sighup_reloads_running_daemon(tmp_path):
    model = tmp_path / "model.sideman"
    from sideman.bundle import save_bundle
    from tests.factories import random_bundle

    save_bundle(random_bundle(), model)
    config = tmp_path / "live.toml"
    config.write_text("[run]\ntempo = 120\n")
    command = [sys.executable, "-c", FAKE_OUTPUT_RUNNER, "run", "--model", str(model), "--config", str(config), "--osc-port", "0", "--no-midi-in", "--log-level", "debug"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPOSITORY)
    try:
        wait_for_line(process, "sideman is running")
        config.write_text('[run]\ntempo = 200\nsampler = ["greedy"]\n')
        process.send_signal(signal.SIGHUP)
        log = wait_for_line(process, "reloaded the settings")
        _, rest = stop_with_signal(process, signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0, log + rest
    assert "reloaded the settings: 2 changes applied" in log
    assert "tempo 200 BPM" in log
    assert "sampler chain 'greedy'" in log


@pytest.mark.parametrize("text", ["[run]\ntempo = 1000\n", "[run\n"])
def test_sighup_with_bad_file_keeps_playing(tmp_path, text):
    current = settings_from(tmp_path / "a.toml", "")
    path = tmp_path / "b.toml"
    path.write_text(text)
    applied = []
    assert reload_settings(current, lambda: load_settings(str(path), plugins=PLUGINS), applied.append) is current
    assert applied == []
