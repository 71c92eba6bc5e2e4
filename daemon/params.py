"""Declared plugin parameters: name, type, default, allowed range or choices, help.

Config, CLI and OSC all set a plugin's parameters through its declaration,
so an out-of-range value is rejected with the allowed range in the message.
"""

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from .errors import SettingsError


@dataclass(frozen=True)
class Param:
    """One parameter of a plugin."""

    name: str
    type: type  # int, float, str or bool
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    # Checks a converted value that a range cannot describe, such as a key name;
    # raises ValueError with the reason, which the SettingsError then quotes.
    check: Callable[[Any], None] | None = None
    # A file path (type str). OSC may set it only to a file inside the [osc] files
    # directory, and not at all when none is configured. Config and CLI values are not limited.
    path: bool = False

    def __post_init__(self) -> None:
        if self.path and self.type is not str:
            raise TypeError(f"parameter {self.name!r} is a path, so its type must be str, not {self.type.__name__}")

    def describe_range(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(str(choice) for choice in self.choices)
        if self.low is not None and self.high is not None:
            return f"{self.low} to {self.high}"
        if self.low is not None:
            return f"at least {self.low}"
        if self.high is not None:
            return f"at most {self.high}"
        return self.type.__name__

    def convert(self, value: Any, owner: str) -> Any:
        """Return `value` as this parameter's type, or raise SettingsError naming `owner.name` and the range."""
        label = f"{owner}.{self.name}"
        try:
            converted = _convert_type(value, self.type)
        except (TypeError, ValueError) as error:
            raise SettingsError(f"invalid value {value!r} for {label}: expected {self.type.__name__} ({self.describe_range()})") from error

        if isinstance(converted, float) and not math.isfinite(converted):
            raise SettingsError(f"invalid value {value!r} for {label}: expected a finite number ({self.describe_range()})")
        if self.choices is not None and converted not in self.choices:
            raise SettingsError(f"invalid value {value!r} for {label}: expected {self.describe_range()}")
        if self.low is not None and converted < self.low or self.high is not None and converted > self.high:
            raise SettingsError(f"value {value!r} for {label} is out of range: allowed {self.describe_range()}")
        if self.check is not None:
            try:
                self.check(converted)
            except ValueError as error:
                raise SettingsError(f"invalid value {value!r} for {label}: {error}") from error
        return converted


class Plugin:
    """Base of samplers and seeders: a name, declared parameters and their current values."""

    # "sampler" or "seeder", for messages.
    kind: ClassVar[str] = "plugin"
    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    help: ClassVar[str] = ""

    def __init__(self, **values: Any):
        self.values = {param.name: param.default for param in self.params}
        for key, value in values.items():
            self.set_param(key, value)

    def set_param(self, key: str, value: Any) -> Any:
        """Set one declared parameter; raise SettingsError for an unknown key or a bad value."""
        param = find_param(type(self), key)
        converted = param.convert(value, self.name)
        self.values[key] = converted
        return converted


def find_param(plugin: type[Plugin], key: str) -> Param:
    """Return the declared parameter `key` of `plugin`; raise SettingsError listing the declared ones."""
    for param in plugin.params:
        if param.name == key:
            return param
    known = ", ".join(param.name for param in plugin.params) or "none"
    raise SettingsError(f"{plugin.kind} {plugin.name!r} has no parameter {key!r} (parameters: {known})")


def _convert_type(value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(value)
    if kind is int:
        if isinstance(value, bool):
            raise TypeError(value)
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(value)
            return int(value)
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            raise TypeError(value)
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    raise TypeError(f"unsupported parameter type {kind}")
