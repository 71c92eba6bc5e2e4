"""The project's exceptions: one base, each subclass also a matching builtin."""


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
