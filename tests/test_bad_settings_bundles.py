"""Start-up on bad settings files and bad model bundles: each stops with the file, the key or array, and what is expected."""

import io
import json
import logging
import pathlib
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import sideman.bundle as bundle_module
from sideman.bundle import FORMAT_VERSION, load_bundle, save_bundle
from sideman.cli import main
from sideman.config.loader import load_settings
from sideman.errors import BundleError, SettingsError
from tests.factories import random_bundle

ARRAY_NAMES = ("kernel", "recurrent_kernel", "bias", "dense_kernel", "dense_bias")


# Settings files

def write_settings(tmp_path, text: str | bytes):
    path = tmp_path / "settings.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def warnings_of(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


@pytest.mark.parametrize(("text", "problem"), [
    ("[run]\ntempo = 120\ntempo = 130\n", "not valid TOML"),
    ("[run]\ntempo = \n", "not valid TOML"),
    (b"[run]\nseeder = \"\xff\xfe\"\n", "not UTF-8 text"),
])
def test_invalid_toml_names_file(tmp_path, text, problem):
    path = write_settings(tmp_path, text)

    with pytest.raises(SettingsError) as raised:
        load_settings(str(path), {})

    assert str(raised.value).startswith(f"settings file {path} ")
    assert problem in str(raised.value)


def test_settings_path_is_directory(tmp_path):
    with pytest.raises(SettingsError, match=f"settings file {tmp_path} could not be read"):
        load_settings(str(tmp_path), {})


@pytest.mark.parametrize(("line", "expected"), [
    ("tempo = nan", "expected a finite number (20 to 400)"),
    ("tempo = inf", "expected a finite number (20 to 400)"),
    ("tempo = 1979-05-27", "expected float (20 to 400)"),
    ("tempo = [120]", "expected float (20 to 400)"),
    ("tempo = { bpm = 120 }", "expected float (20 to 400)"),
    ("velocity = true", "expected int (1 to 127)"),
    ("channel = 1.5", "expected int (1 to 16)"),
    ("seeder = 5", "expected str"),
    ("sampler = [\"temperature\", 3]", "expected a list of plugin names"),
    ("meter = \"5/5\"", "expected a time signature"),
])
def test_wrong_type_named(tmp_path, line, expected):
    path = write_settings(tmp_path, f"[run]\n{line}\n")

    with pytest.raises(SettingsError) as raised:
        load_settings(str(path), {})

    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    assert f"run.{line.split(' ')[0]}" in message
    assert expected in message


def test_invalid_allow_entry_names_file(tmp_path):
    path = write_settings(tmp_path, '[osc]\nallow = ["300.1.1.1"]\n')

    with pytest.raises(SettingsError) as raised:
        load_settings(str(path), {})

    assert str(raised.value).startswith(f"{path}: [osc] allow: invalid entry '300.1.1.1'")
    assert "CIDR" in str(raised.value)


def test_cc_not_a_table(tmp_path):
    path = write_settings(tmp_path, "cc = 21\n")

    with pytest.raises(SettingsError, match=rf"{path}: \[cc\] must be a table of settings, not 21"):
        load_settings(str(path), {})


def test_key_outside_section_warns_with_section(tmp_path, caplog):
    path = write_settings(tmp_path, "tempo = 100\n")

    with caplog.at_level(logging.WARNING, logger="sideman.config"):
        settings = load_settings(str(path), {})

    assert settings.run.tempo == 120.0
    assert warnings_of(caplog) == [f"{path}: setting 'tempo' outside any section ignored; did you mean to write it under [run]?"]


def test_unknown_key_outside_section_lists_sections(tmp_path, caplog):
    path = write_settings(tmp_path, "loudness = 3\n")

    with caplog.at_level(logging.WARNING, logger="sideman.config"):
        load_settings(str(path), {})

    assert warnings_of(caplog) == [f"{path}: setting 'loudness' outside any section ignored; settings belong in a section: [run], [midi], [osc], [train], [log]"]


def test_key_in_wrong_section_names_its_section(tmp_path, caplog):
    path = write_settings(tmp_path, "[run]\nport = 9001\nn_a = 32\nseed = 1\n[osc]\nseed = 5\n")

    with caplog.at_level(logging.WARNING, logger="sideman.config"):
        settings = load_settings(str(path), {})

    assert settings.osc.port == 9000
    assert settings.run.seed == 1
    assert warnings_of(caplog) == [
        f"{path}: unknown setting 'port' in [run] ignored; 'port' is a setting of [osc]",
        f"{path}: unknown setting 'n_a' in [run] ignored; 'n_a' is a setting of [train]",
        f"{path}: unknown setting 'seed' in [osc] ignored; 'seed' is a setting of [run] and [train]",
    ]


def test_misspelt_key_warns_nearest(tmp_path, caplog):
    path = write_settings(tmp_path, "[train]\nlearning_rat = 0.1\n")

    with caplog.at_level(logging.WARNING, logger="sideman.config"):
        load_settings(str(path), {})

    assert warnings_of(caplog) == [f"{path}: unknown setting 'learning_rat' in [train] ignored; did you mean 'learning_rate'?"]


def test_cli_stops_on_bad_settings_without_traceback(tmp_path, capsys):
    path = write_settings(tmp_path, "[run]\nvelocity = 300\n")

    code = main(["generate", "--config", str(path), str(tmp_path / "out.mid")])

    error = capsys.readouterr().err
    assert code == 2
    assert f"sideman: error: {path}: value 300 for run.velocity is out of range: allowed 1 to 127" in error
    assert "Traceback" not in error


# Bundles: helpers

def saved_bundle(tmp_path):
    bundle = random_bundle()
    path = tmp_path / "model.sideman"
    save_bundle(bundle, path)
    return bundle, path


def members_of(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_members(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def replace_model_json(path, change) -> None:
    members = members_of(path)
    document = json.loads(members["model.json"])
    change(document)
    members["model.json"] = json.dumps(document).encode()
    write_members(path, members)


def replace_arrays(path, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    members = members_of(path)
    members["weights.npz"] = buffer.getvalue()
    write_members(path, members)


def arrays_of(bundle) -> dict[str, np.ndarray]:
    return {name: getattr(bundle.weights, name) for name in ARRAY_NAMES}


def load_error(path) -> str:
    with pytest.raises(BundleError) as raised:
        load_bundle(path)
    message = str(raised.value)
    assert str(path) in message
    return message


# Bundles: arrays

@pytest.mark.parametrize("name", ARRAY_NAMES)
def test_wrong_shape_names_array(tmp_path, name):
    bundle, path = saved_bundle(tmp_path)
    arrays = arrays_of(bundle)
    expected = arrays[name].shape
    arrays[name] = np.zeros(expected[:-1] + (expected[-1] + 1,), dtype=np.float32)
    replace_arrays(path, arrays)

    message = load_error(path)

    assert f"array {name} has shape {arrays[name].shape}, expected {expected}" in message
    assert "n_a = 8" in message


@pytest.mark.parametrize("name", ARRAY_NAMES)
def test_missing_array_names_it(tmp_path, name):
    bundle, path = saved_bundle(tmp_path)
    arrays = arrays_of(bundle)
    del arrays[name]
    replace_arrays(path, arrays)

    assert f"weights.npz lacks the array(s) {name}; expected {', '.join(ARRAY_NAMES)}" in load_error(path)


def test_integer_array_rejected(tmp_path):
    bundle, path = saved_bundle(tmp_path)
    arrays = arrays_of(bundle)
    arrays["bias"] = arrays["bias"].astype(np.int32)
    replace_arrays(path, arrays)

    assert "array bias has dtype int32, expected floating point" in load_error(path)


def test_nan_weights_rejected(tmp_path):
    bundle, path = saved_bundle(tmp_path)
    arrays = arrays_of(bundle)
    arrays["dense_kernel"] = arrays["dense_kernel"].copy()
    arrays["dense_kernel"][0, 0] = np.nan
    replace_arrays(path, arrays)

    assert "array dense_kernel contains NaN or infinite values" in load_error(path)


def test_huge_declared_array_rejected_before_allocation(tmp_path):
    # A .npy header can declare any shape; numpy allocates it before reading the data.
    bundle, path = saved_bundle(tmp_path)
    huge_header = io.BytesIO()
    np.lib.format.write_array_header_1_0(huge_header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as npz:
        for name, array in arrays_of(bundle).items():
            member = io.BytesIO()
            np.lib.format.write_array(member, array)
            npz.writestr(f"{name}.npy", huge_header.getvalue() if name == "bias" else member.getvalue())
    members = members_of(path)
    members["weights.npz"] = buffer.getvalue()
    write_members(path, members)

    assert "array bias has shape (1000000000000,), expected (32,)" in load_error(path)


class _Canary:
    """Unpickling this touches a file, so a test can see whether any pickle was loaded."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.parametrize("shape_matches", [True, False])
def test_object_array_rejected_without_unpickling(tmp_path, shape_matches):
    bundle, path = saved_bundle(tmp_path)
    marker = tmp_path / "unpickled"
    arrays = arrays_of(bundle)
    size = arrays["dense_bias"].shape[0] if shape_matches else 1
    payload = np.empty(size, dtype=object)
    payload[:] = [_Canary(marker) for _ in range(size)]
    arrays["dense_bias"] = payload
    replace_arrays(path, arrays)

    message = load_error(path)

    assert "sideman loads no pickled objects" in message
    assert "allow_pickle" not in message
    assert not marker.exists()


def test_np_load_called_without_pickle(tmp_path, monkeypatch):
    _, path = saved_bundle(tmp_path)
    calls = []
    real_load = np.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(bundle_module.np, "load", recording_load)
    load_bundle(path)

    assert calls
    assert all(call.get("allow_pickle") is False for call in calls)


def test_load_path_imports_no_keras(tmp_path):
    _, path = saved_bundle(tmp_path)
    # A fresh interpreter, because another test in this process may have imported TensorFlow.
    script = (
        "import sys\n"
        "from sideman.bundle import load_bundle\n"
        f"load_bundle({str(path)!r})\n"
        "load_bundle(None)\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('tensorflow', 'keras')))\n"
    )

    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# Bundles: model.json

@pytest.mark.parametrize("key", ["format_version", "n_a", "tx", "vocabulary", "encoding"])
def test_missing_key_named(tmp_path, key):
    _, path = saved_bundle(tmp_path)
    replace_model_json(path, lambda document: document.pop(key))

    assert f"model.json lacks the key {key!r}" in load_error(path)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("format_version", "1", "expected int"),
    ("format_version", 0, "invalid format version 0, expected 1-1"),
    ("format_version", FORMAT_VERSION + 1, f"newer than this sideman reads ({FORMAT_VERSION}); upgrade sideman"),
    ("n_a", 8.0, "expected int"),
    ("n_a", True, "expected int"),
    ("n_a", 0, "'n_a' is 0, expected a positive integer"),
    ("tx", -3, "'tx' is -3, expected a positive integer"),
    ("vocabulary", {"60": 12}, "expected list"),
    ("encoding", [12, 0.5, 8.0], "expected dict"),
])
def test_wrong_key_value_named(tmp_path, key, value, expected):
    _, path = saved_bundle(tmp_path)
    replace_model_json(path, lambda document: document.update({key: value}))

    message = load_error(path)

    assert f"{key!r}" in message or "format version" in message
    assert expected in message


def test_huge_n_a_rejected_before_reading_arrays(tmp_path):
    _, path = saved_bundle(tmp_path)
    replace_model_json(path, lambda document: document.update(n_a=10**6))

    assert "n_a = 1000000 and a vocabulary of 39 tokens need up to" in load_error(path)


@pytest.mark.parametrize(("entry", "index"), [
    ([200, 12], 0),
    ([-1, 12], 0),
    ([60, 0], 0),
    ([60, 1.5], 0),
    ([60], 0),
    ("C4", 0),
    ([True, 12], 0),
])
def test_invalid_vocabulary_entry_named(tmp_path, entry, index):
    _, path = saved_bundle(tmp_path)
    replace_model_json(path, lambda document: document["vocabulary"].__setitem__(index, entry))

    message = load_error(path)

    assert f"vocabulary entry {index} is {entry!r}, expected [pitch, steps]" in message


def test_duplicate_vocabulary_tokens(tmp_path):
    _, path = saved_bundle(tmp_path)
    replace_model_json(path, lambda document: document["vocabulary"].__setitem__(1, document["vocabulary"][0]))

    assert "invalid vocabulary in model.json (vocabulary tokens must be unique)" in load_error(path)


def test_vocabulary_shorter_than_weights(tmp_path):
    bundle, path = saved_bundle(tmp_path)
    replace_model_json(path, lambda document: document["vocabulary"].pop())
    size = len(bundle.vocabulary)

    assert f"array kernel has shape ({size}, 32), expected ({size - 1}, 32)" in load_error(path)


@pytest.mark.parametrize(("encoding", "problem"), [
    ({"steps_per_beat": 12, "rest_threshold": 0.5, "max_beats": 0.0}, "invalid encoding"),
    ({"steps_per_beat": 0, "rest_threshold": 0.5, "max_beats": 8.0}, "invalid encoding"),
    ({"steps_per_beat": "12", "rest_threshold": 0.5, "max_beats": 8.0}, "invalid encoding"),
    ({"steps_per_beat": 12, "rest_threshold": -1, "max_beats": 8.0}, "invalid encoding"),
    ({"steps_per_beat": 12, "rest_threshold": float("nan"), "max_beats": 8.0}, "invalid encoding"),
    ({"steps_per_beat": 12, "rest_threshold": 0.5, "max_beats": 8.0, "swing": 0.5}, "unexpected keyword argument 'swing'"),
    ({"steps_per_beat": 12}, "the encoding in model.json lacks rest_threshold, max_beats"),
])
def test_invalid_encoding_named(tmp_path, encoding, problem):
    _, path = saved_bundle(tmp_path)
    replace_model_json(path, lambda document: document.update(encoding=encoding))

    message = load_error(path)

    assert problem in message
    assert "expected steps_per_beat (an integer of at least 1)" in message


@pytest.mark.parametrize(("text", "problem"), [
    (b"[" * 100_000 + b"]" * 100_000, "model.json is not valid JSON (nested too deeply)"),
    (b"{\"n_a\": ", "model.json is not valid JSON"),
    (b"\xff\xfe{}", "model.json is not valid JSON"),
    (b"[1, 2]", "model.json must contain a JSON object"),
])
def test_unreadable_model_json(tmp_path, text, problem):
    _, path = saved_bundle(tmp_path)
    members = members_of(path)
    members["model.json"] = text
    write_members(path, members)

    assert problem in load_error(path)


def test_missing_weights(tmp_path):
    _, path = saved_bundle(tmp_path)
    members = members_of(path)
    del members["weights.npz"]
    write_members(path, members)

    assert "has no weights.npz" in load_error(path)


def test_member_over_size_limit(tmp_path, monkeypatch):
    _, path = saved_bundle(tmp_path)
    monkeypatch.setattr(bundle_module, "MAX_MODEL_JSON_BYTES", 100)

    assert "model.json unpacks to" in load_error(path)
    assert "more than the 100 sideman reads" in load_error(path)


def set_central_directory_field(path, member: str, offset: int, value: bytes) -> None:
    """Overwrite a field of one member's entry in the zip's central directory."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        entry_names = [info.filename for info in archive.infolist()]
    position = data.index(b"PK\x01\x02")
    for name in entry_names:
        name_length = int.from_bytes(data[position + 28:position + 30], "little")
        extra_length = int.from_bytes(data[position + 30:position + 32], "little")
        comment_length = int.from_bytes(data[position + 32:position + 34], "little")
        if name == member:
            data[position + offset:position + offset + len(value)] = value
        position += 46 + name_length + extra_length + comment_length
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("offset", "value", "problem"), [
    (8, b"\x01\x00", "encrypted"),
    (10, b"\x63\x00", "compression method"),
])
def test_unsupported_zip_member(tmp_path, offset, value, problem):
    # Offset 8 of a central directory entry holds the flag bits (bit 0: encrypted), offset 10 the compression method.
    _, path = saved_bundle(tmp_path)
    set_central_directory_field(path, "model.json", offset, value)

    message = load_error(path)

    assert "could not be unpacked" in message
    assert problem in message


def test_cli_stops_on_bad_bundle_without_traceback(tmp_path, capsys):
    _, path = saved_bundle(tmp_path)
    replace_model_json(path, lambda document: document.update(format_version=FORMAT_VERSION + 1))

    code = main(["generate", "--model", str(path), str(tmp_path / "out.mid")])

    error = capsys.readouterr().err
    assert code == 2
    assert f"sideman: error: model bundle {path} has format version {FORMAT_VERSION + 1}" in error
    assert "Traceback" not in error


def test_cli_stops_on_bad_prime_file_without_traceback(tmp_path, capsys):
    prime = tmp_path / "phrase.mid"
    prime.write_bytes(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk\x00\x00\x01\x00\x00\x90")

    code = main(["generate", "--prime", str(prime), str(tmp_path / "out.mid")])

    error = capsys.readouterr().err
    assert code == 2
    assert f"sideman: error: {prime}: track 1 declares 256 bytes but the file ends after 2 of them" in error
    assert "Traceback" not in error
