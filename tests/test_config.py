"""Settings: schema, default.toml, layer precedence, validation messages, plugin parameters and the plugin registry."""

import logging
import re
import tomllib
from dataclasses import asdict
from importlib import metadata

import pytest

from sideman import registry
from sideman.config import schema
from sideman.config.loader import DEFAULT_FILE, load_settings, validate_plugin_params
from sideman.encoding import EncodingSettings
from sideman.errors import SettingsError
from sideman.plugins.samplers import Greedy, Temperature
from sideman.seeding import Seeder
from sideman.sampling import Sampler
from sideman.training import TrainingSettings

SAMPLERS = {"greedy": Greedy, "temperature": Temperature}


def write_settings(tmp_path, text: str, name: str = "settings.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# default.toml and the schema

def test_default_file_matches_schema_keys():
    document = tomllib.loads(DEFAULT_FILE.read_text())

    for section in schema.SECTIONS:
        declared = [spec.key for spec in schema.specs(section)]
        assert sorted(document[section]) == sorted(declared), section
    assert set(document) == {*schema.SECTIONS, "plugins"}


def test_default_file_matches_schema_defaults():
    document = tomllib.loads(DEFAULT_FILE.read_text())

    for section in schema.SECTIONS:
        for spec in schema.specs(section):
            value = document[section][spec.key]
            expected = list(spec.default) if spec.is_name_list else spec.default
            assert value == expected, f"[{section}] {spec.key}"
            assert type(value) is type(expected), f"[{section}] {spec.key}"


def default_file_comments() -> dict[tuple[str, str], str]:
    """Map each (section, key) of default.toml to the comment block above it."""
    lines = DEFAULT_FILE.read_text().splitlines()
    key_line = re.compile(r"^(\w+)\s*=")
    section_line = re.compile(r"^\[([\w.]+)\]")
    comments = {}
    section = ""
    for number, line in enumerate(lines):
        if match := section_line.match(line):
            section = match.group(1)
            continue
        match = key_line.match(line)
        if not match:
            continue
        # Walk up over neighbouring keys (transpose_low and transpose_high share one comment) to the comment block.
        above = number - 1
        while above >= 0 and key_line.match(lines[above]):
            above -= 1
        block = []
        while above >= 0 and lines[above].startswith("#"):
            block.append(lines[above].lstrip("# "))
            above -= 1
        comments[(section, match.group(1))] = " ".join(reversed(block))
    return comments


def test_default_file_documents_every_key():
    comments = default_file_comments()

    for (section, key), comment in comments.items():
        assert "Default" in comment, f"[{section}] {key} has no documented default"


def test_default_file_documents_ranges():
    comments = default_file_comments()

    for section in schema.SECTIONS:
        for spec in schema.specs(section):
            comment = comments[(section, spec.key)]
            if spec.low is not None or spec.high is not None:
                assert "Allowed" in comment or "from 0 to" in comment, f"[{section}] {spec.key} has no documented range"
            for choice in spec.choices or ():
                assert f'"{choice}"' in comment, f"[{section}] {spec.key} does not document {choice!r}"


def test_default_plugin_values_valid():
    settings = load_settings(None, {}, SAMPLERS)

    assert settings.plugins == {"temperature": {"value": 1.0}}


def test_train_defaults_match_training_settings():
    train = schema.TrainSettings()
    reference = TrainingSettings()

    for key, value in asdict(reference).items():
        if key == "encoding":
            continue
        assert getattr(train, key) == value, key


def test_encoding_defaults_match_encoding_settings():
    train = schema.TrainSettings()
    reference = EncodingSettings()

    assert train.steps_per_beat == reference.steps_per_beat
    assert train.rest_threshold == reference.rest_threshold
    assert train.max_beats == reference.max_beats


# Precedence

def test_defaults_without_file_or_flags():
    settings = load_settings(None, {})

    assert settings.run == schema.RunSettings()
    assert settings.midi == schema.MidiSettings()
    assert settings.osc == schema.OscSettings()
    assert settings.train == schema.TrainSettings()
    assert settings.log == schema.LogSettings()


def test_file_overrides_defaults(tmp_path):
    path = write_settings(tmp_path, '[run]\ntempo = 90\nsampler = ["greedy"]\n[osc]\nport = 9100\n')

    settings = load_settings(str(path), {})

    assert settings.run.tempo == 90.0
    assert isinstance(settings.run.tempo, float)
    assert settings.run.sampler == ("greedy",)
    assert settings.osc.port == 9100
    assert settings.run.velocity == 90
    assert settings.osc.host == "127.0.0.1"


def test_flags_override_file(tmp_path):
    path = write_settings(tmp_path, "[run]\ntempo = 90\nseed = 7\n[plugins.temperature]\nvalue = 0.5\n")

    settings = load_settings(str(path), {"run": {"tempo": 150.0}, "plugins": {"temperature": {"value": "0.8"}}}, SAMPLERS)

    assert settings.run.tempo == 150.0
    assert settings.run.seed == 7
    assert settings.plugins["temperature"]["value"] == 0.8


def test_sampler_chain_from_string():
    settings = load_settings(None, {"run": {"sampler": "top_p  temperature"}})

    assert settings.run.sampler == ("top_p", "temperature")


def test_choices_ignore_case(tmp_path):
    path = write_settings(tmp_path, '[midi]\nbackend = "JACK"\n[log]\nlevel = "Debug"\n')

    settings = load_settings(str(path), {})

    assert settings.midi.backend == "jack"
    assert settings.log.level == "debug"


def test_relative_model_path_from_file(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    path = write_settings(folder, '[run]\nmodel = "models/solo.sideman"\n')

    settings = load_settings(str(path), {})

    assert settings.run.model == str(folder / "models" / "solo.sideman")


def test_model_path_from_flag_unchanged(tmp_path):
    path = write_settings(tmp_path, '[run]\nmodel = "a.sideman"\n')

    settings = load_settings(str(path), {"run": {"model": "b.sideman"}})

    assert settings.run.model == "b.sideman"


# Invalid values

INVALID_VALUES = [
    ("run", "tempo", "500", "20 to 400"),
    ("run", "tempo", "10.0", "20 to 400"),
    ("run", "channel", "0", "1 to 16"),
    ("run", "channel", "17", "1 to 16"),
    ("run", "velocity", "128", "1 to 127"),
    ("run", "gate", "0.01", "0.05 to 1.0"),
    ("run", "gate", '"long"', "float"),
    ("run", "seed", "-1", "0 to 9223372036854775807"),
    ("run", "seed", "1.5", "int"),
    ("run", "autoplay", '"sometimes"', "bool"),
    ("run", "sampler", "5", "list of plugin names"),
    ("run", "sampler", "[]", "at least one plugin name"),
    ("midi", "backend", '"pulse"', "auto, alsa, jack, coremidi, winmm"),
    ("osc", "port", "70000", "0 to 65535"),
    ("train", "n_a", "0", "1 to 1024"),
    ("train", "transpose_low", "3", "-12 to 0"),
    ("train", "validation_share", "0.9", "0.0 to 0.5"),
    ("log", "level", '"loud"', "debug, info, warning, error"),
]


@pytest.mark.parametrize(("section", "key", "value", "allowed"), INVALID_VALUES)
def test_invalid_value_in_file(tmp_path, section, key, value, allowed):
    path = write_settings(tmp_path, f"[{section}]\n{key} = {value}\n")

    with pytest.raises(SettingsError) as raised:
        load_settings(str(path), {})

    message = str(raised.value)
    assert str(path) in message
    assert f"{section}.{key}" in message
    assert value.strip('"') in message
    assert allowed in message
    assert "\n" not in message


def test_invalid_value_names_unit(tmp_path):
    path = write_settings(tmp_path, "[run]\ntempo = 1000\n")

    with pytest.raises(SettingsError, match=r"\(BPM\)"):
        load_settings(str(path), {})


def test_invalid_flag_names_command_line():
    with pytest.raises(SettingsError) as raised:
        load_settings(None, {"run": {"velocity": 0}})

    assert str(raised.value).startswith("command line: ")
    assert "run.velocity" in str(raised.value)
    assert "1 to 127" in str(raised.value)


def test_section_not_a_table(tmp_path):
    path = write_settings(tmp_path, "run = 5\n")

    with pytest.raises(SettingsError, match=r"\[run\] must be a table"):
        load_settings(str(path), {})


def test_missing_settings_file(tmp_path):
    path = tmp_path / "absent.toml"

    with pytest.raises(SettingsError, match="settings file .*absent.toml not found"):
        load_settings(str(path), {})


def test_invalid_toml(tmp_path):
    path = write_settings(tmp_path, "[run\ntempo = \n")

    with pytest.raises(SettingsError) as raised:
        load_settings(str(path), {})

    assert str(path) in str(raised.value)
    assert "not valid TOML" in str(raised.value)


# Unknown keys

def test_unknown_key_warns_nearest(tmp_path, caplog):
    path = write_settings(tmp_path, "[run]\ntempp = 100\n")

    with caplog.at_level(logging.WARNING, logger="sideman.config"):
        settings = load_settings(str(path), {})

    assert settings.run.tempo == 120.0
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0]
    assert "'tempp'" in warnings[0]
    assert "did you mean 'tempo'?" in warnings[0]


def test_unknown_section_warns_nearest(tmp_path, caplog):
    path = write_settings(tmp_path, "[oscc]\nport = 9001\n")

    with caplog.at_level(logging.WARNING, logger="sideman.config"):
        settings = load_settings(str(path), {})

    assert settings.osc.port == 9000
    assert any("unknown section [oscc]" in record.getMessage() and "'osc'" in record.getMessage() for record in caplog.records)


def test_unknown_key_without_near_match_lists_keys(tmp_path, caplog):
    path = write_settings(tmp_path, "[osc]\nzzzzzz = 1\n")

    with caplog.at_level(logging.WARNING, logger="sideman.config"):
        load_settings(str(path), {})

    assert any("valid names: host, port" in record.getMessage() for record in caplog.records)


# Plugin parameters

def test_plugin_param_converted_from_text():
    settings = load_settings(None, {"plugins": {"temperature": {"value": "0.25"}}}, SAMPLERS)

    assert settings.plugins["temperature"]["value"] == 0.25


def test_plugin_param_out_of_range(tmp_path):
    path = write_settings(tmp_path, "[plugins.temperature]\nvalue = 9.0\n")

    with pytest.raises(SettingsError) as raised:
        load_settings(str(path), {}, SAMPLERS)

    message = str(raised.value)
    assert str(path) in message
    assert "plugins.temperature.value" in message
    assert "9.0" in message
    assert "0.05 to 5.0" in message


def test_plugin_param_wrong_type_from_flag():
    with pytest.raises(SettingsError) as raised:
        load_settings(None, {"plugins": {"temperature": {"value": "hot"}}}, SAMPLERS)

    assert str(raised.value).startswith("command line: ")
    assert "'hot'" in str(raised.value)


def test_unknown_plugin_param_warns_nearest(tmp_path, caplog):
    path = write_settings(tmp_path, "[plugins.temperature]\nvalu = 0.5\n")

    with caplog.at_level(logging.WARNING, logger="sideman.config"):
        settings = load_settings(str(path), {}, SAMPLERS)

    assert settings.plugins["temperature"] == {"value": 1.0}
    assert any("'valu'" in record.getMessage() and "did you mean 'value'?" in record.getMessage() for record in caplog.records)


def test_uninstalled_plugin_warns(tmp_path, caplog):
    path = write_settings(tmp_path, "[plugins.temprature]\nvalue = 0.5\n")

    with caplog.at_level(logging.WARNING, logger="sideman.config"):
        settings = load_settings(str(path), {}, SAMPLERS)

    assert "temprature" not in settings.plugins
    assert any("'temprature'" in record.getMessage() and "did you mean 'temperature'?" in record.getMessage() for record in caplog.records)


def test_plugin_values_kept_until_validated():
    settings = load_settings(None, {"plugins": {"temperature": {"value": "0.5"}}})

    assert settings.plugins["temperature"]["value"] == "0.5"
    assert validate_plugin_params(settings, SAMPLERS).plugins["temperature"]["value"] == 0.5


def test_plugin_table_not_a_table(tmp_path):
    path = write_settings(tmp_path, "[plugins]\ntemperature = 0.5\n")

    with pytest.raises(SettingsError, match=r"\[plugins.temperature\] must be a table"):
        load_settings(str(path), {})


# The registry

class FakeEntryPoint:
    """An entry point whose load returns `target`, or raises it when it is an exception."""

    def __init__(self, name: str, target, value: str = "fake.module:Thing"):
        self.name = name
        self.value = value
        self._target = target

    def load(self):
        if isinstance(self._target, BaseException):
            raise self._target
        return self._target


class Misnamed(Greedy):
    name = "other"


def fake_entry_points(monkeypatch, entry_points_by_group):
    def entry_points(*, group):
        return entry_points_by_group.get(group, [])

    monkeypatch.setattr(metadata, "entry_points", entry_points)


def test_registry_loads_builtins():
    samplers = registry.load_samplers()

    assert samplers["greedy"] is Greedy
    assert samplers["temperature"] is Temperature
    assert all(issubclass(plugin, Sampler) for plugin in samplers.values())


def test_registry_skips_broken_plugin(monkeypatch, caplog):
    fake_entry_points(monkeypatch, {registry.SAMPLER_GROUP: [
        FakeEntryPoint("broken", ImportError("No module named 'numpyy'"), "broken_pkg:Broken"),
        FakeEntryPoint("greedy", Greedy),
    ]})

    with caplog.at_level(logging.WARNING, logger="sideman.registry"):
        samplers = registry.load_samplers()

    assert samplers == {"greedy": Greedy}
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'broken'" in warnings[0].getMessage()
    assert "ImportError" in warnings[0].getMessage()
    assert "No module named" in warnings[0].getMessage()


def test_registry_skips_plugin_raising_anything(monkeypatch):
    fake_entry_points(monkeypatch, {registry.SAMPLER_GROUP: [FakeEntryPoint("odd", RuntimeError("boom")), FakeEntryPoint("temperature", Temperature)]})

    assert registry.load_samplers() == {"temperature": Temperature}


def test_registry_skips_non_sampler(monkeypatch, caplog):
    fake_entry_points(monkeypatch, {registry.SAMPLER_GROUP: [FakeEntryPoint("greedy", Greedy), FakeEntryPoint("notone", dict)]})

    with caplog.at_level(logging.WARNING, logger="sideman.registry"):
        samplers = registry.load_samplers()

    assert samplers == {"greedy": Greedy}
    assert any("not a subclass" in record.getMessage() for record in caplog.records)


def test_registry_skips_mismatched_name(monkeypatch, caplog):
    fake_entry_points(monkeypatch, {registry.SAMPLER_GROUP: [FakeEntryPoint("fancy", Misnamed)]})

    with caplog.at_level(logging.WARNING, logger="sideman.registry"):
        samplers = registry.load_samplers()

    assert samplers == {}
    assert any("'other'" in record.getMessage() for record in caplog.records)


def test_registry_keeps_first_duplicate(monkeypatch, caplog):
    class SecondGreedy(Greedy):
        name = "greedy"

    fake_entry_points(monkeypatch, {registry.SAMPLER_GROUP: [FakeEntryPoint("greedy", Greedy), FakeEntryPoint("greedy", SecondGreedy)]})

    with caplog.at_level(logging.WARNING, logger="sideman.registry"):
        samplers = registry.load_samplers()

    assert samplers == {"greedy": Greedy}
    assert any("already loaded" in record.getMessage() for record in caplog.records)


def test_registry_loads_seeders_group(monkeypatch):
    class ZeroSeeder(Seeder):
        name = "zero"

    fake_entry_points(monkeypatch, {registry.SEEDER_GROUP: [FakeEntryPoint("zero", ZeroSeeder)]})

    assert registry.load_seeders() == {"zero": ZeroSeeder}
    assert registry.load_samplers() == {}
