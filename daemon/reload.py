"""SIGHUP: read the settings again and apply what can change while sideman plays.

What the engine can change between two notes (tempo, seed, sampler chain,
plugin parameters, seeder, log level) is applied as commands, logged like an
OSC change; every other changed key (ports, model, channel, ...) is logged
as needing a restart and left as it was. An invalid settings file changes
nothing: the error is logged and play goes on.
"""

import dataclasses
import logging
from typing import Any, Callable

from sideman.config.schema import SECTIONS, Settings, file_key

from .commands import ApplySeeder, Command, Reseed, SetParam, SetSampler, SetTempo
from .errors import SidemanError

log = logging.getLogger(__name__)

# Keys applied at run time by `reload_commands` or directly (log.level).
RUNTIME_KEYS = {("run", "tempo"), ("run", "seed"), ("run", "sampler"), ("run", "seeder"), ("log", "level")}


def reload_commands(old: Settings, new: Settings) -> tuple[list[Command], list[str]]:
    """Return the commands that bring play from `old` to `new` settings, and the changed keys that need a restart."""
    commands: list[Command] = []
    if new.run.tempo != old.run.tempo:
        commands.append(SetTempo(new.run.tempo))
    if new.run.seed != old.run.seed:
        commands.append(Reseed(new.run.seed))
    if new.run.sampler != old.run.sampler:
        commands.append(SetSampler(new.run.sampler))

    for plugin, values in new.plugins.items():
        for name, value in values.items():
            if old.plugins.get(plugin, {}).get(name) != value:
                commands.append(SetParam(plugin, name, value))

    # The seeder comes last, so that parameters changed in the same file apply to it.
    if new.run.seeder != old.run.seeder:
        commands.append(ApplySeeder(new.run.seeder))

    restart = [key for key in _changed_keys(old, new) if key not in RUNTIME_KEYS]
    names = [f"{section}.{key}" for section, key in restart]
    if new.cc != old.cc:
        names.append("[cc]")
    return commands, names


def reload_settings(current: Settings, load: Callable[[], Settings], apply: Callable[[list[Command]], None]) -> Settings:
    """Load the settings again, apply what can change now, and return the settings in force afterwards."""
    try:
        new = load()
    except SidemanError as error:
        log.error("reloading the settings failed, nothing changed: %s", error)
        return current

    commands, restart = reload_commands(current, new)
    try:
        apply(commands)
    except SidemanError as error:
        log.error("reloading the settings failed, nothing changed: %s", error)
        return current

    if new.log.level != current.log.level:
        logging.getLogger("sideman").setLevel(new.log.level.upper())
    log.info("reloaded the settings: %d changes applied", len(commands) + (new.log.level != current.log.level))
    if restart:
        log.warning("changed settings that need a restart of sideman, left as they were: %s", ", ".join(restart))

    # The settings in force: the new values where they were applied, the old ones elsewhere.
    in_force = {section: getattr(current, section) for section in SECTIONS}
    in_force["run"] = dataclasses.replace(current.run, tempo=new.run.tempo, seed=new.run.seed, sampler=new.run.sampler, seeder=new.run.seeder)
    in_force["log"] = new.log
    return dataclasses.replace(current, **in_force, plugins=new.plugins)


def _changed_keys(old: Settings, new: Settings) -> list[tuple[str, str]]:
    changed = []
    for section in SECTIONS:
        old_values: Any = getattr(old, section)
        new_values: Any = getattr(new, section)
        for field in dataclasses.fields(old_values):
            if getattr(old_values, field.name) != getattr(new_values, field.name):
                changed.append((section, file_key(field.name)))
    return changed
