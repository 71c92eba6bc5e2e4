"""Failures of plugins during a run: counted per plugin, and a plugin that keeps failing is disabled.

A sampler that raises costs one note its choice (the engine draws that note
greedily instead); a seeder that raises loses its request. Either way the
music goes on, but a plugin that fails again and again would fill the log and
the status with its failures, so after `limit` failures it is disabled for
the rest of the run: it leaves the sampler chain, and requests for it are
rejected with a message that says so.
"""

import logging

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 8


class PluginFailures:
    """Failure counts per plugin name, and the plugins disabled because of them."""

    def __init__(self, limit: int = DEFAULT_LIMIT):
        self.limit = limit
        self.counts: dict[str, int] = {}
        self.disabled: set[str] = set()

    def record(self, name: str, error: BaseException, kind: str, consequence: str) -> bool:
        """Count one failure of the plugin `name`; return True when it has just reached the limit and is disabled.

        The first failure is logged at ERROR with its traceback, later ones at
        DEBUG, so a broken plugin cannot flood the log. `kind` ("sampler",
        "seeder") and `consequence` ("this note is greedy") word the message.
        """
        count = self.counts.get(name, 0) + 1
        self.counts[name] = count
        if count == 1:
            log.error("%s %r failed, so %s; later failures are counted in status", kind, name, consequence, exc_info=error)
        else:
            log.debug("%s %r failed again (%d times): %s", kind, name, count, error)

        if count < self.limit or name in self.disabled:
            return False
        self.disabled.add(name)
        log.error("%s %r failed %d times and is disabled until sideman restarts", kind, name, count)
        return True

    def check_enabled(self, name: str, kind: str) -> None:
        """Raise ValueError naming the plugin when it is disabled."""
        if name in self.disabled:
            raise ValueError(f"{kind} {name!r} is disabled after {self.counts[name]} failures; restart sideman to use it again")

    @property
    def total(self) -> int:
        return sum(self.counts.values())
