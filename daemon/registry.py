"""The plugin registry: samplers and seeders found through entry points.

Built-in plugins are registered in pyproject.toml exactly like third-party
ones, under the entry point groups `sideman.samplers` and `sideman.seeders`.
A plugin that fails to load is logged at WARNING with its name and the error
and left out, so one broken package never stops the daemon.
"""

import logging
from importlib import metadata

logger = logging.getLogger(__name__)

SAMPLER_GROUP = "sideman.samplers"
SEEDER_GROUP = "sideman.seeders"


def load_samplers() -> dict[str, type]:
    """Return every loadable sampler class by name; the classes derive from sideman.sampling.Sampler."""
    from .sampling import Sampler

    return load_plugins(SAMPLER_GROUP, Sampler)


def load_seeders() -> dict[str, type]:
    """Return every loadable seeder class by name; the classes derive from sideman.seeding.Seeder."""
    from .seeding import Seeder

    return load_plugins(SEEDER_GROUP, Seeder)


def load_all() -> tuple[dict[str, type], dict[str, type]]:
    """Return (samplers, seeders). Both kinds share one namespace of settings, so a seeder named like a sampler is left out."""
    samplers = load_samplers()
    seeders = {}
    for name, seeder in load_seeders().items():
        if name in samplers:
            logger.warning("seeder %r (%s.%s) left out: a sampler of that name is installed and plugin names must be unique", name, seeder.__module__, seeder.__qualname__)
            continue
        seeders[name] = seeder
    return samplers, seeders


def all_plugins(samplers: dict[str, type], seeders: dict[str, type]) -> dict[str, type]:
    """Merge samplers and seeders by name, for `[plugins.<name>]` settings, `--param` and /sideman/param."""
    return {**seeders, **samplers}


def load_plugins(group: str, base: type | None) -> dict[str, type]:
    """Load the entry points of `group`; keep the classes that derive from `base` and whose `name` matches.

    A plugin's entry point name is the name used in config, CLI and OSC, so
    it must equal the class's own `name`, which the sampler chain reports.
    """
    plugins: dict[str, type] = {}
    for entry_point in metadata.entry_points(group=group):
        if entry_point.name in plugins:
            logger.warning("plugin %r (%s) skipped: another %s plugin of that name is already loaded", entry_point.name, entry_point.value, group)
            continue

        plugin = _load_entry_point(entry_point, group)
        if plugin is None:
            continue
        if base is not None and not (isinstance(plugin, type) and issubclass(plugin, base)):
            logger.warning("plugin %r (%s) skipped: it is not a subclass of %s.%s", entry_point.name, entry_point.value, base.__module__, base.__qualname__)
            continue
        declared_name = getattr(plugin, "name", entry_point.name)
        if declared_name != entry_point.name:
            logger.warning("plugin %r (%s) skipped: its class declares the name %r; the entry point name must match", entry_point.name, entry_point.value, declared_name)
            continue

        plugins[entry_point.name] = plugin

    logger.debug("loaded %s plugins: %s", group, ", ".join(sorted(plugins)) or "none")
    return plugins


def _load_entry_point(entry_point: metadata.EntryPoint, group: str) -> type | None:
    try:
        return entry_point.load()
    except Exception as error:  # a third-party plugin may raise anything while importing
        logger.warning("plugin %r (%s) of %s failed to load and is left out: %s: %s", entry_point.name, entry_point.value, group, type(error).__name__, error)
        return None
