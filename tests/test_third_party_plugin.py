"""A third-party plugin package, installed only on sys.path with its own entry point metadata, found and used by name."""

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mido
import pytest

from sideman import registry
from sideman.bundle import load_bundle
from sideman.sampling import Chooser
from sideman.seeding import Seeder

REPOSITORY = Path(__file__).resolve().parent.parent
SUBPROCESS_TIMEOUT = 120

PLUGIN_MODULE = textwrap.dedent('''
    """A third-party sampler and seeder for sideman."""

    import numpy as np

    from sideman.encoding import Token
    from sideman.params import Param
    from sideman.sampling import Chooser
    from sideman.seeding import PhraseSeeder


    class Lowest(Chooser):
        name = "lowest_note"
        help = "always the lowest note the model gives any mass to"

        def __init__(self, **values):
            super().__init__(**values)
            self._order = None

        def choose(self, probabilities, context):
            vocabulary = context.vocabulary
            if self._order is None:
                # Notes by pitch, lowest first, then rests: computed once per vocabulary.
                self._order = np.lexsort((vocabulary.rest_mask, vocabulary.pitches + 1000 * vocabulary.rest_mask))
            candidates = self._order[probabilities[self._order] > 0]
            return int(candidates[0]) if len(candidates) else int(np.argmax(probabilities))


    class Ascending(PhraseSeeder):
        name = "ascending"
        help = "prime with an ascending major scale"
        params = (Param("tonic", int, 60, "MIDI pitch of the first note", low=0, high=115),)

        def phrase(self, improviser):
            tonic = self.values["tonic"]
            return [Token(tonic + step, improviser.steps_per_beat) for step in (0, 2, 4, 5, 7, 9, 11, 12)]
''')

ENTRY_POINTS = textwrap.dedent('''
    [sideman.samplers]
    lowest_note = thirdparty_sideman:Lowest

    [sideman.seeders]
    ascending = thirdparty_sideman:Ascending
    broken_seeder = thirdparty_sideman_missing:Broken
''')


@pytest.fixture
def plugin_path(tmp_path) -> Path:
    """A folder holding the plugin module and its .dist-info, as `pip install --target` would leave it."""
    (tmp_path / "thirdparty_sideman.py").write_text(PLUGIN_MODULE)
    dist_info = tmp_path / "thirdparty_sideman-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-sideman\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    return tmp_path


def run_sideman(plugin_path: Path, *args: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(plugin_path))
    return subprocess.run(
        [sys.executable, "-m", "sideman.cli", *args], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, cwd=REPOSITORY, env=environment,
    )


def test_registry_finds_third_party_plugins(plugin_path, monkeypatch, caplog):
    monkeypatch.syspath_prepend(str(plugin_path))

    with caplog.at_level(logging.WARNING, logger="sideman.registry"):
        samplers, seeders = registry.load_all()

    assert issubclass(samplers["lowest_note"], Chooser)
    assert issubclass(seeders["ascending"], Seeder)
    assert "greedy" in samplers
    assert "zero" in seeders


def test_broken_seeder_left_out_and_logged(plugin_path, monkeypatch, caplog):
    monkeypatch.syspath_prepend(str(plugin_path))

    with caplog.at_level(logging.WARNING, logger="sideman.registry"):
        seeders = registry.load_seeders()

    assert "broken_seeder" not in seeders
    assert "ascending" in seeders
    warnings = [record.getMessage() for record in caplog.records if "broken_seeder" in record.getMessage()]
    assert len(warnings) == 1
    assert "ModuleNotFoundError" in warnings[0]
    assert "thirdparty_sideman_missing" in warnings[0]


def test_plugins_command_lists_third_party(plugin_path):
    completed = run_sideman(plugin_path, "plugins")

    assert completed.returncode == 0, completed.stderr
    assert "  lowest_note: always the lowest note" in completed.stdout
    assert "  ascending: prime with an ascending major scale" in completed.stdout
    assert "ascending.tonic (int, default 60, 0 to 115)" in completed.stdout
    assert "broken_seeder" in completed.stderr


def test_generate_uses_third_party_plugins(plugin_path, tmp_path):
    out = tmp_path / "lowest.mid"

    completed = run_sideman(
        plugin_path, "generate", "--notes", "12", "--sampler", "lowest_note", "--seeder", "ascending", "--param", "ascending.tonic=62", str(out),
    )

    assert completed.returncode == 0, completed.stderr
    assert "seeded the model with 'ascending': 8 tokens" in completed.stderr
    pitches = [message.note for message in mido.MidiFile(out).tracks[0] if message.type == "note_on"]
    lowest = int(min(pitch for pitch in load_bundle().vocabulary.pitches if pitch >= 0))
    assert pitches == [lowest] * 12


def test_invalid_third_party_param_rejected(plugin_path, tmp_path):
    completed = run_sideman(plugin_path, "generate", "--seeder", "ascending", "--param", "ascending.tonic=120", str(tmp_path / "out.mid"))

    assert completed.returncode == 2
    assert "ascending.tonic" in completed.stderr
    assert "0 to 115" in completed.stderr

