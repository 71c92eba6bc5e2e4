"""Watching MIDI ports by listing them, for the backends without a graph to watch: ALSA, CoreMIDI and WinMM.

Under JACK the port keeper reads the graph (sideman.jackwatch). The other
backends tell python-rtmidi nothing when a port goes away, and a connection
that sideman made by opening a port by name (`--midi-out NAME`,
`--midi-in NAME`, `--clock-in`, `--clock-out`) dies with that port. So this
watch lists the system's ports through two clients of its own, one MidiIn
and one MidiOut, and the port keeper calls the same methods on it as on
JackWatch. "Connecting" a pair again means opening sideman's port anew on
the returning port (`ListedPair.reconnect`, given by the daemon).

A program that restarts often comes back under other numbers. RtMidi's ALSA
backend ends every name with the client and port numbers
(`Synth:Synth input port 128:0`), and its WinMM backend appends the device
index (`loopMIDI Port 1` is the port `loopMIDI Port` at index 1).
`port_identity` strips those. Some programs also put their process ID in
their names (FluidSynth by default: `FLUID Synth (1234)`). For those, the name
the musician gave (`--midi-out FLUID`) finds the returning port, as it found
the first one.

NOTE: this watch has only the listing to go on. A port that leaves and returns
between two listings (0.25 s apart) leaves a connection that looks alive
and is not. Under CoreMIDI and WinMM this watch is tested only through
python-rtmidi's JACK backend, which offers the same calls.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import rtmidi

from .errors import MidiSystemError
from .midiport import find_port, new_rtmidi_port
from .portkeeper import KeptConnection, PortKeeper

log = logging.getLogger(__name__)

WATCH_CLIENT_NAME = "sideman-watch"
# `client:port` numbers that RtMidi's ALSA backend adds at the end of every port name.
_ALSA_NUMBERS = re.compile(r" \d+:\d+$")
# The device index that RtMidi's WinMM backend adds at the end of every port name.
_WINMM_INDEX = re.compile(r" \d+$")
FIRST_RETRY = 0.5  # seconds before reopening a port again after a failed attempt
MAX_RETRY = 5.0  # seconds between attempts at most

PortKind = Literal["output", "input"]


def port_identity(name: str, backend: str) -> str:
    """Return the part of a listed port name that stays the same when its program restarts."""
    if backend == "alsa":
        return _ALSA_NUMBERS.sub("", name)
    if backend == "winmm":
        return _WINMM_INDEX.sub("", name)
    return name


@dataclass
class ListedPair:
    """A connection that sideman made by opening its port on an existing one, and how to make it again.

    `source` and `destination` name it as its KeptConnection does: sideman's
    own port by its client and port name, the existing port by its full name
    when sideman connected (`external`). `requested` is the name the musician
    gave, a full name or a unique part of it. `kind` is "output" for a port
    sideman sends to, "input" for one it reads from. `reconnect(full_name)`
    opens sideman's port anew on the port listed under `full_name`, returns
    whether that worked and raises MidiSystemError when it failed.
    """

    source: str
    destination: str
    external: str
    requested: str
    kind: PortKind
    reconnect: Callable[[str], bool]
    # The full name sideman's port is open on now.
    current: str = field(init=False)
    # Failed reopens since the last success, and when the next attempt may run (time.monotonic seconds).
    failures: int = field(default=0, init=False)
    retry_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.current = self.external

    @property
    def key(self) -> tuple[str, str]:
        return self.source, self.destination


class PortLister:
    """The system's port names through python-rtmidi: `sources()` send MIDI, `destinations()` receive it."""

    def __init__(self, backend: str, client_name: str = WATCH_CLIENT_NAME):
        self._reader = new_rtmidi_port(rtmidi.MidiIn, backend, client_name)
        try:
            self._writer = new_rtmidi_port(rtmidi.MidiOut, backend, client_name)
        except BaseException:
            self._reader.delete()
            raise

    def sources(self) -> list[str]:
        return self._list(self._reader)

    def destinations(self) -> list[str]:
        return self._list(self._writer)

    def close(self) -> None:
        self._reader.delete()
        self._writer.delete()

    @staticmethod
    def _list(client: Any) -> list[str]:
        # python-rtmidi reads the names one by one, so a port that goes away
        # meanwhile makes it raise. The caller keeps its last listing and lists again later.
        try:
            return [name for name in client.get_ports() if name]
        except rtmidi.RtMidiError as error:
            raise MidiSystemError(f"listing the MIDI ports failed: {error}") from error


class PortListWatch:
    """The port keeper's view of a backend without a graph: ports by listing, connections as sideman made them.

    sideman's own ports count as present: under ALSA, CoreMIDI and WinMM
    they last as long as the daemon. A pair counts as connected from the
    start until the port it is open on is missing from a listing, and again
    after `connect` reopened sideman's port. A connection that someone
    removes in a patchbay is not seen. `lost` is never set: these backends
    have no server that stops.

    The lister's clients are created at the first `refresh`, on the keeper's
    thread: CoreMIDI delivers a client's notifications through the run loop of
    the thread that created it.
    """

    shows_removals = False

    def __init__(self, backend: str, pairs: Sequence[ListedPair], lister_factory: Callable[[str], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.backend = backend
        self.changed = threading.Event()
        self.lost = threading.Event()
        self._lister_factory = lister_factory or PortLister
        self._lister: Any = None
        self._clock = clock
        self._pairs = {pair.key: pair for pair in pairs}
        self._connected = set(self._pairs)
        # The full names listed now, by kind, in listing order.
        self._listing: dict[str, list[str]] = {"output": [], "input": []}
        log.debug("watching %d MIDI connections by listing the %s ports", len(self._pairs), backend)

    def refresh(self) -> None:
        """List the ports again, and mark the pairs whose port is gone as not connected; the keeper calls it before each round."""
        try:
            if self._lister is None:
                self._lister = self._lister_factory(self.backend)
            self._listing = {"output": self._lister.destinations(), "input": self._lister.sources()}
        except MidiSystemError as error:
            log.debug("listing the %s MIDI ports failed: %s; keeping the last listing", self.backend, error)
            return

        for key in list(self._connected):
            if not self._still_listed(self._pairs[key]):
                self._connected.discard(key)

    def ports_exist(self, source: str, destination: str) -> bool:
        """Return whether both ports of a pair are there: the one sideman's port is open on, or a port to reopen it on."""
        pair = self._pairs.get((source, destination))
        if pair is None:
            return False
        return pair.key in self._connected or self._candidate(pair) is not None

    def connected(self, source: str, destination: str) -> bool:
        """Return whether sideman's port of the pair is open on a port that is still listed."""
        return (source, destination) in self._connected

    def connect(self, source: str, destination: str) -> bool:
        """Open sideman's port of the pair anew on its returning port; return whether that worked.

        After a failure the pair waits FIRST_RETRY seconds, doubling up to
        MAX_RETRY, before the next attempt, and only the first failure of a
        row is logged at WARNING.
        """
        pair = self._pairs.get((source, destination))
        if pair is None or self._clock() < pair.retry_at:
            return False
        full_name = self._candidate(pair)
        if full_name is None:
            return False

        try:
            connected = pair.reconnect(full_name)
        except MidiSystemError as error:
            self._reopen_failed(pair, full_name, error)
            return False
        if not connected:
            return False

        if pair.failures:
            log.info("reopened the MIDI %s on %r after %d failed attempts", pair.kind, full_name, pair.failures)
        else:
            log.info("reopened the MIDI %s on %r", pair.kind, full_name)
        pair.current = full_name
        pair.failures = 0
        pair.retry_at = 0.0
        self._connected.add(pair.key)
        return True

    def close(self) -> None:
        if self._lister is not None:
            self._lister.close()
            self._lister = None

    def _reopen_failed(self, pair: ListedPair, full_name: str, error: MidiSystemError) -> None:
        pair.failures += 1
        delay = min(FIRST_RETRY * 2 ** (pair.failures - 1), MAX_RETRY)
        pair.retry_at = self._clock() + delay
        if pair.failures == 1:
            log.warning("reopening the MIDI %s on %r failed: %s; trying again every %.1f-%.0f s",
                        pair.kind, full_name, error, FIRST_RETRY, MAX_RETRY)
        else:
            log.debug("reopening the MIDI %s on %r failed again (%d attempts): %s", pair.kind, full_name, pair.failures, error)

    def _still_listed(self, pair: ListedPair) -> bool:
        """Return whether the port that the pair's port is open on is still listed.

        Under WinMM the index in a name moves when another device goes, while
        the open handle keeps working, so there the identity decides.
        """
        names = self._listing[pair.kind]
        if self.backend == "winmm":
            identity = port_identity(pair.current, self.backend)
            return any(port_identity(name, self.backend) == identity for name in names)
        return pair.current in names

    def _candidate(self, pair: ListedPair) -> str | None:
        """Return the full name of the port to reopen the pair's port on, or None while none is listed.

        Ports that another pair of the same kind is open on are left out. In
        order: the name the pair was open on, a port of the same identity,
        then the name the musician gave, when it matches exactly one port.
        """
        held_by_others = {other.current for other in self._pairs.values()
                 if other is not pair and other.kind == pair.kind and other.key in self._connected}
        names = [name for name in self._listing[pair.kind] if name not in held_by_others]
        if pair.current in names:
            return pair.current

        identities = {port_identity(pair.current, self.backend), port_identity(pair.external, self.backend)}
        for name in names:
            if port_identity(name, self.backend) in identities:
                return name

        try:
            return names[find_port(pair.requested, names, pair.kind)]
        except MidiSystemError as error:
            log.debug("no port to reopen the MIDI %s on yet: %s", pair.kind, error)
            return None


def listing_port_keeper(backend: str, endpoints: Sequence[Any],
                        lister_factory: Callable[[str], Any] | None = None) -> PortKeeper | None:
    """Return a keeper for ALSA, CoreMIDI or WinMM, or None when no endpoint is connected to an existing port.

    `endpoints` are KeptOutput and KeptInput objects: the keeper lists the
    ports and reopens each endpoint on its port when that returns. Virtual
    ports need no keeping. `lister_factory(backend)` replaces PortLister in tests.
    """
    pairs = []
    connections = []
    for endpoint in endpoints:
        target = endpoint.connected_to
        if target is None:
            continue
        own = endpoint.own_name
        source, destination = (own, target) if endpoint.kind == "output" else (target, own)
        pairs.append(ListedPair(source, destination, target, endpoint.requested or target, endpoint.kind, endpoint.reconnect))
        connections.append(KeptConnection(source, destination, on_missing=endpoint.on_missing, on_restored=endpoint.on_restored))

    if not pairs:
        return None
    return PortKeeper([], connections, watch_factory=lambda: PortListWatch(backend, pairs, lister_factory))
