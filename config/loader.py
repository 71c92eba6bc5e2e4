"""Load settings: default.toml, then the `--config` file, then CLI flags, each later layer winning.

Every layer is validated on its own against the schema, so an invalid value
is reported with the file (or "command line") it came from. Unknown keys
stop nothing: they are logged at WARNING with the nearest valid key and
ignored. `[plugins.<name>]` tables are kept as read until
`validate_plugin_params` checks them against the installed plugins' declared
parameters.
"""

import dataclasses
import logging
import tomllib
from pathlib import Path
from typing import Any, Mapping

from sideman.errors import SettingsError, did_you_mean

from .schema import SECTIONS, Settings, field_name, spec_of, specs

logger = logging.getLogger(__name__)

DEFAULT_FILE = Path(__file__).with_name("default.toml")
COMMAND_LINE = "command line"
PLUGINS_SECTION = "plugins"
CC_SECTION = "cc"


def load_settings(user_file: str | None, overrides: Mapping[str, Any] | None = None, plugins: Mapping[str, type] | None = None) -> Settings:
    """Merge default.toml < `user_file` < `overrides` into Settings.

    `overrides` has the shape of a settings file, e.g.
    {"run": {"tempo": 140.0}, "plugins": {"temperature": {"value": "0.8"}}}.
    When `plugins` (name -> plugin class with declared `params`) is given,
    the `[plugins.<name>]` values are validated and converted too.
    Raises SettingsError naming the file, the key, the value and the allowed range.
    """
    layers = [(str(DEFAULT_FILE), read_settings_file(DEFAULT_FILE))]
    if user_file is not None:
        layers.append((str(user_file), read_settings_file(Path(user_file))))
    if overrides:
        layers.append((COMMAND_LINE, overrides))

    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    plugin_values: dict[str, dict[str, Any]] = {}
    plugin_sources: dict[str, dict[str, str]] = {}
    cc_values: dict[str, Any] = {}
    cc_sources: dict[str, str] = {}
    for source, document in layers:
        _merge_layer(document, source, sections, plugin_values, plugin_sources)
        if CC_SECTION in document:
            _require_table(document[CC_SECTION], f"[{CC_SECTION}]", source)
            cc_values.update(document[CC_SECTION])
            cc_sources.update({key: source for key in document[CC_SECTION]})

    settings = Settings(
        **{name: section_class(**sections[name]) for name, section_class in SECTIONS.items()},
        cc=cc_values,
        cc_sources=cc_sources,
        plugins=plugin_values,
        plugin_sources=plugin_sources,
    )
    if plugins is not None:
        settings = validate_plugin_params(settings, plugins)
    return settings


def read_settings_file(path: Path) -> dict[str, Any]:
    """Parse a TOML settings file; raise SettingsError naming the file when it is missing or not valid TOML."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError as error:
        raise SettingsError(f"settings file {path} not found") from error
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"settings file {path} is not valid TOML: {error}") from error
    except UnicodeDecodeError as error:
        raise SettingsError(f"settings file {path} is not valid TOML: not UTF-8 text ({error.reason} at byte {error.start})") from error
    except OSError as error:
        raise SettingsError(f"settings file {path} could not be read: {error.strerror or error}") from error

    logger.debug("read settings file %s", path)
    return document


def validate_plugin_params(settings: Settings, plugins: Mapping[str, type]) -> Settings:
    """Check every `[plugins.<name>]` value against the plugin's declared parameters and convert it.

    Tables for plugins that are not installed, and parameters a plugin does not
    declare, are logged at WARNING with the nearest valid name and dropped.
    Raises SettingsError naming the source, the parameter, the value and the range.
    """
    validated: dict[str, dict[str, Any]] = {}
    for plugin_name, values in settings.plugins.items():
        plugin = plugins.get(plugin_name)
        if plugin is None:
            sources = ", ".join(sorted(set(settings.plugin_sources.get(plugin_name, {}).values())))
            logger.warning("%s: settings for plugin %r ignored: no plugin of that name is installed%s", sources, plugin_name, did_you_mean(plugin_name, plugins))
            continue

        declared = {param.name: param for param in plugin.params}
        converted = {}
        for key, value in values.items():
            source = settings.plugin_sources.get(plugin_name, {}).get(key, COMMAND_LINE)
            param = declared.get(key)
            if param is None:
                logger.warning("%s: unknown parameter %r of plugin %r ignored%s", source, key, plugin_name, did_you_mean(key, declared))
                continue
            try:
                converted[key] = param.convert(value, f"plugins.{plugin_name}")
            except SettingsError as error:
                raise SettingsError(f"{source}: {error}") from error
        validated[plugin_name] = converted

    return dataclasses.replace(settings, plugins=validated)


def _merge_layer(document: Mapping[str, Any], source: str, sections: dict[str, dict[str, Any]], plugin_values: dict, plugin_sources: dict) -> None:
    for section, table in document.items():
        if section == PLUGINS_SECTION:
            _merge_plugin_tables(table, source, plugin_values, plugin_sources)
            continue
        if section == CC_SECTION:
            continue
        if section not in SECTIONS:
            _warn_unknown_section(section, table, source)
            continue

        _require_table(table, f"[{section}]", source)
        for key, value in table.items():
            _merge_value(section, key, value, source, sections[section])


def _merge_value(section: str, key: str, value: Any, source: str, target: dict[str, Any]) -> None:
    try:
        spec = spec_of(section, key)
    except KeyError:
        owners = _sections_with_key(key)
        if owners:
            hint = f"; {key!r} is a setting of " + " and ".join(f"[{owner}]" for owner in owners)
        else:
            hint = did_you_mean(key, [spec.key for spec in specs(section)])
        logger.warning("%s: unknown setting %r in [%s] ignored%s", source, key, section, hint)
        return

    try:
        converted = spec.convert(value, section)
        _check_in_section(section, key, converted)
    except SettingsError as error:
        raise SettingsError(f"{source}: {error}{_unit_note(spec.unit)}") from error

    if section == "run" and key == "model":
        converted = _resolve_model_path(converted, source)
    target[field_name(key)] = converted
    if source != str(DEFAULT_FILE):
        logger.debug("setting %s.%s = %r from %s", section, key, converted, source)


def _check_in_section(section: str, key: str, value: Any) -> None:
    # Some sections check values in __post_init__, such as the [osc] allow list.
    # Building the section with this one value runs that check while the layer
    # the value came from is still known, so the error can name it.
    SECTIONS[section](**{field_name(key): value})


def _warn_unknown_section(name: str, value: Any, source: str) -> None:
    if isinstance(value, Mapping):
        hint = did_you_mean(name, [*SECTIONS, PLUGINS_SECTION, CC_SECTION])
        logger.warning("%s: unknown section [%s] ignored%s", source, name, hint)
        return

    # A key above every section header, such as `tempo = 100` written before [run].
    owners = _sections_with_key(name)
    hint = f"; did you mean to write it under [{owners[0]}]?" if owners else f"; settings belong in a section: {', '.join(f'[{section}]' for section in SECTIONS)}"
    logger.warning("%s: setting %r outside any section ignored%s", source, name, hint)


def _sections_with_key(key: str) -> list[str]:
    return [section for section in SECTIONS if any(spec.key == key for spec in specs(section))]


def _merge_plugin_tables(tables: Any, source: str, plugin_values: dict, plugin_sources: dict) -> None:
    _require_table(tables, "[plugins]", source)
    for plugin_name, table in tables.items():
        _require_table(table, f"[plugins.{plugin_name}]", source)
        for key, value in table.items():
            plugin_values.setdefault(plugin_name, {})[key] = value
            plugin_sources.setdefault(plugin_name, {})[key] = source


def _require_table(value: Any, name: str, source: str) -> None:
    if not isinstance(value, Mapping):
        raise SettingsError(f"{source}: {name} must be a table of settings, not {value!r}")


def _resolve_model_path(model: str, source: str) -> str:
    # A relative model path in a settings file means relative to that file, so a
    # project folder with its config and model works from any working directory.
    if model == "builtin" or source in (COMMAND_LINE, str(DEFAULT_FILE)):
        return model
    path = Path(model).expanduser()
    if path.is_absolute():
        return str(path)
    return str(Path(source).parent / path)


def _unit_note(unit: str) -> str:
    return f" ({unit})" if unit else ""
