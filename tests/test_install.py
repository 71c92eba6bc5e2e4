"""The built wheel works on its own: installed without -e into a fresh venv, it generates from the built-in model.

An editable install imports straight from the source tree, so it hides files missing from
the wheel (an unlisted subpackage, package data). This test builds the wheel
from a copy of the source tree, installs it with its dependencies from the
package index into a throwaway venv, and runs `sideman generate` from outside
the repository. It takes about a minute, more when pip's cache is empty.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mido

REPOSITORY = Path(__file__).resolve().parent.parent
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "tests"
)
GENERATED_NOTES = 20

INSPECT_INSTALL = """
import importlib.metadata, importlib.resources, sideman, sideman.config, sideman.plugins
print(sideman.__file__)
print(importlib.resources.files("sideman").joinpath("data/builtin.sideman").is_file())
for entry_point in importlib.metadata.entry_points(group="sideman.samplers"):
    entry_point.load()
"""


def _run(command: list[str | Path], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    # No PYTHONPATH, and a working directory outside the repository, so that
    # only the installed copy of sideman can be imported.
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd, env=environment, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
    )
    assert result.returncode == 0, f"{command} failed with code {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def test_wheel_installs_and_generates(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPOSITORY, source, ignore=NOT_SOURCE)
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"

    _run([sys.executable, "-m", "venv", venv], tmp_path)
    _run([python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", tmp_path / "wheels", source], tmp_path)
    wheels = list((tmp_path / "wheels").glob("sideman-*.whl"))
    assert len(wheels) == 1, wheels
    _run([python, "-m", "pip", "install", "--quiet", wheels[0]], tmp_path)

    installed_file, has_builtin_model = _run([python, "-c", INSPECT_INSTALL], tmp_path).stdout.split()
    assert Path(installed_file).is_relative_to(venv)
    assert has_builtin_model == "True"

    _run([venv / "bin" / "sideman", "generate", "--notes", str(GENERATED_NOTES), "out.mid"], tmp_path)
    written = mido.MidiFile(tmp_path / "out.mid")
    note_ons = [message for message in written if message.type == "note_on" and message.velocity > 0]
    assert len(note_ons) == GENERATED_NOTES
