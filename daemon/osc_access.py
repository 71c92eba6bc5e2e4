"""Access rules of the OSC server: the sources it accepts and the files an OSC message may name.

OSC has no authentication: anyone who can send a UDP datagram to the port
can steer the daemon. Two rules limit what such a sender can do:

- The allowlist (`[osc] allow`): a datagram from a source address outside
  the allowed networks is dropped before it is parsed (`SourceFilter`).
- The files directory (`[osc] files`, `--osc-files`): a plugin parameter
  declared with `Param(..., path=True)` may be set over OSC only to a file
  inside that directory, and to nothing when none is configured
  (`OscFiles`). Paths from the settings file or the command line are the
  user's own and are not checked here.
"""

import ipaddress
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInputError, SettingsError
from .rejections import SUMMARY_SECONDS, RepeatLog

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The default allowlist: this machine only.
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1")

# The kind under which the drop log counts the datagrams from each source.
NOT_ALLOWED = "not in the allowlist"
# Sources counted one by one. UDP source addresses can be forged, so the table
# is bounded and drops from further sources are counted together. In each
# summary window the drop log writes at most one first line and one summary per
# tracked source, plus two lines for the others. A flood from forged addresses
# therefore writes at most 2 * MAX_TRACKED_SOURCES + 2 lines per window.
MAX_TRACKED_SOURCES = 16


# --- Allowlist -----------------------------------------------------------


@dataclass(frozen=True)
class Allowlist:
    """The networks whose source addresses may send OSC datagrams."""

    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> "Allowlist":
        """Parse addresses and CIDR networks such as "10.0.0.5" or "192.168.1.0/24".

        Raise SettingsError naming the first invalid entry, or when there is none at all.
        """
        networks = tuple(parse_network(entry) for entry in entries)
        if not networks:
            raise SettingsError('[osc] allow is empty, so no datagram would be accepted: '
                                'name at least one address, e.g. ["127.0.0.1"]')
        return cls(networks)

    def allows(self, host: str) -> bool:
        """Return whether a datagram from `host`, an address as recvfrom reports it, is accepted."""
        candidates = _source_addresses(host)
        return any(address in network for address in candidates for network in self.networks)

    def describe(self) -> str:
        return ", ".join(network.with_prefixlen for network in self.networks)


def parse_network(entry: Any) -> Network:
    """Parse one allowlist entry; a bare address is a network of one address (/32 or /128)."""
    if not isinstance(entry, str):
        raise SettingsError(f"[osc] allow: invalid entry {entry!r}: expected a string such as \"10.0.0.5\" or \"192.168.1.0/24\"")

    text = entry.strip()
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        pass

    # An entry with host bits set, "192.168.1.5/24", may mean one address or the
    # whole network. Guessing would widen or narrow the allowlist, so the user chooses.
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise SettingsError(f"[osc] allow: invalid entry {entry!r}: expected an IP address or a network in CIDR form, "
                            f"e.g. \"10.0.0.5\" or \"192.168.1.0/24\" (host names are not accepted)") from None
    address = text.partition("/")[0]
    raise SettingsError(f"[osc] allow: invalid entry {entry!r}: the address has bits set beyond the /{network.prefixlen} "
                        f"prefix; write \"{network.with_prefixlen}\" for the network or \"{address}\" for the one address")


LOOPBACK_ONLY = Allowlist.parse(LOOPBACK_NETWORKS)


def _source_addresses(host: str) -> tuple[IpAddress, ...]:
    """Return the address of `host`, and its IPv4 form when it is IPv4-mapped (a dual-stack socket's "::ffff:a.b.c.d")."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])  # without an IPv6 scope such as "%eth0"
    except ValueError:
        return ()  # not an IP address: never allowed

    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address, address.ipv4_mapped
    return (address,)


# --- Dropped datagrams ---------------------------------------------------


class SourceFilter:
    """Admit datagrams from the allowlist, and count and log the others per source address through a `RepeatLog`.

    The first drop from each source is logged at WARNING with the address and
    the allowlist. Later drops are counted and summarised every `summary_seconds`,
    one line per source. A source without drops for a whole window is removed
    from the table, so its next drop is logged in full again. `admit` runs on
    the OSC receive thread, and the repeat log's lock lets close summarise
    while that thread still admits. `clock` returns seconds.
    """

    def __init__(self, allowlist: Allowlist, clock: Callable[[], float], summary_seconds: float = SUMMARY_SECONDS,
                 max_sources: int = MAX_TRACKED_SOURCES):
        self.allowlist = allowlist
        self._summary_seconds = summary_seconds
        self._drops = RepeatLog(logger, clock, prefix="OSC", events="dropped datagrams", level=logging.WARNING,
                                summary_seconds=summary_seconds, max_tracked=max_sources)

    @property
    def dropped(self) -> int:
        """The datagrams dropped since the filter was made, from all sources."""
        return self._drops.total

    def admit(self, host: str) -> bool:
        """Return True for an allowed source. Otherwise count and log the drop and return False."""
        if self.allowlist.allows(host):
            return True

        self._drops.record(host, NOT_ALLOWED,
                           "OSC datagram from %s dropped: the address is not in the allowlist (%s). "
                           "Add it to [osc] allow to let it steer sideman. Further datagrams from it are counted "
                           "and summarised every %.0f s.", host, self.allowlist.describe(), self._summary_seconds)
        return False

    def dropped_from(self, host: str) -> int:
        """Return the drops from `host` since its drop last logged in full, or 0 while the source is not tracked."""
        return self._drops.count(host, NOT_ALLOWED)

    def summarize_due(self) -> None:
        """Log the drop summaries when the current window is `summary_seconds` old."""
        self._drops.flush_due()

    def summarize(self) -> None:
        """Log every pending drop summary now."""
        self._drops.flush()


# --- Files ---------------------------------------------------------------


class OscFiles:
    """The directory whose files OSC messages may name, or none, in which case OSC may set no path."""

    def __init__(self, directory: str | os.PathLike[str] | None):
        """Raise SettingsError when `directory` is given but is not an existing directory."""
        self.root: str | None = None
        if directory is None or os.fspath(directory) == "":
            return

        root = os.path.realpath(directory)
        if not os.path.isdir(root):
            raise SettingsError(f"[osc] files: {os.fspath(directory)!r} is not an existing directory "
                                f"(--osc-files DIR); create it or name another")
        self.root = root

    def resolve(self, value: Any) -> str:
        """Return the real absolute path of `value` inside the directory; raise InvalidInputError naming the path otherwise.

        `value` is relative to the directory, or absolute. Symbolic links are
        resolved first, so a link that points out of the directory is rejected
        too. The file need not exist: reading it reports that later.
        """
        if self.root is None:
            raise InvalidInputError(f"OSC may not set file paths such as {value!r}: no directory is configured "
                                    "for them (--osc-files DIR or [osc] files)")
        if not isinstance(value, str) or not value:
            raise InvalidInputError(f"a file path must be a non-empty string, got {value!r}")
        if "\0" in value:
            raise InvalidInputError(f"file path {value!r} contains a NUL character")

        resolved = os.path.realpath(os.path.join(self.root, value))
        if not self._contains(resolved):
            raise InvalidInputError(f"file path {value!r} resolves to {resolved}, outside the OSC files directory {self.root}")
        return resolved

    def _contains(self, path: str) -> bool:
        """Return whether `path`, a real path, lies strictly inside the root (the root itself names no file)."""
        assert self.root is not None
        root = os.path.normcase(self.root)
        path = os.path.normcase(path)
        try:
            return path != root and os.path.commonpath([root, path]) == root
        except ValueError:
            return False  # Windows: paths on different drives
