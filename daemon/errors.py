"""The project's exceptions: one base, each subclass also a matching builtin; and the "did you mean" hint of their messages."""

import difflib
from typing import Iterable


class SidemanError(Exception):
    """Base of every error sideman raises on purpose."""


class InvalidInputError(SidemanError, ValueError):
    """A file, setting or message that cannot be used as it is."""


class MidiFileError(InvalidInputError):
    """A MIDI file that cannot be read."""


class CorpusError(InvalidInputError):
    """A corpus argument that names nothing readable."""


class BundleError(InvalidInputError):
    """A model bundle that is missing, damaged or does not match itself."""


class SettingsError(InvalidInputError):
    """A setting with an unknown key, a wrong type or a value out of range."""


class MidiSystemError(SidemanError, OSError):
    """No usable MIDI system or port."""


def did_you_mean(name: str, valid: Iterable[str], noun: str = "names") -> str:
    """Return a hint to append to a message about an unknown `name`: the nearest valid one, else all of them."""
    valid = list(valid)
    nearest = difflib.get_close_matches(name, valid, n=1)
    if nearest:
        return f"; did you mean {nearest[0]!r}?"
    if valid:
        return f"; valid {noun}: {', '.join(valid)}"
    return ""
