"""Watching MIDI ports by listing them, for the backends without a graph to watch: ALSA, CoreMIDI and WinMM.

Under JACK the port keeper reads the graph (sideman.jackwatch). The other
backends tell python-rtmidi nothing when a port goes away, and a connection
that sideman made by opening a port by name (`--midi-out NAME`,
`--midi-in NAME`, `--clock-in`, `--clock-out`) dies with that port. So this
watch lists the system's ports through two clients of its own, one MidiIn
and one MidiOut, and the port keeper calls the same methods on it as on
JackWatch. "Connecting" a pair again means opening sideman's port anew on
the returning port (`reconnect`, given by the daemon).

A program that restarts often comes back under other numbers: ALSA lists
`FLUID Synth (1234):Synth input port (1234:0) 128:0`, with the client and
port numbers last, and RtMidi's WinMM backend appends the device index
(`loopMIDI Port 1`). `port_identity` strips those, so that the same program
is recognised by its name.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import rtmidi

from .errors import MidiSystemError
from .midiport import new_rtmidi_port

log = logging.getLogger(__name__)

WATCH_CLIENT_NAME = "sideman-watch"
# `client:port` numbers that ALSA adds at the end of every port name.
_ALSA_NUMBERS = re.compile(r" \d+:\d+$")
# The device index that RtMidi adds at the end of every WinMM port name.
_WINMM_INDEX = re.compile(r" \d+$")


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

    `external` is the existing port's full name as listed when sideman connected.
    `kind` is "output" for a port sideman sends to, "input" for one it reads from.
    `reconnect(full_name)` opens sideman's port anew on the port listed under
    `full_name`. It returns whether that succeeded.
    """

    source: str
    destination: str
    external: str
    kind: str
    reconnect: Callable[[str], bool]


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
        try:
            return list(client.get_ports())
        except rtmidi.RtMidiError as error:
            raise MidiSystemError(f"listing the MIDI ports failed: {error}") from error


class PortListWatch:
    """The port keeper's view of a backend without a graph: ports by listing, connections as sideman made them.

    sideman's own ports count as present: under ALSA, CoreMIDI and WinMM
    they last as long as the daemon. A pair counts as connected from the
    start until its external port is missing from a listing, and again after
    `connect` reopened sideman's port on it. A connection that someone
    removes in a patchbay is not seen. `lost` is never set: these backends
    have no server that stops.
    """

    def __init__(self, backend: str, pairs: Sequence[ListedPair], lister: Any | None = None):
        self.backend = backend
        self.changed = threading.Event()
        self.lost = threading.Event()
        self._lister = lister if lister is not None else PortLister(backend)
        self._pairs = {(pair.source, pair.destination): pair for pair in pairs}
        self._external = {pair.external: pair for pair in pairs}
        self._connected = set(self._pairs)
        # kind -> identity -> the full names listed under it, in listing order.
        self._listing: dict[str, dict[str, list[str]]] = {}
        log.debug("watching %d MIDI connections by listing the %s ports", len(self._pairs), backend)

    def port_exists(self, name: str) -> bool:
        pair = self._external.get(name)
        if pair is None:
            return True
        present = self._listed(pair) is not None
        if not present:
            # The connection died with the port; `connect` makes it again.
            self._connected.discard((pair.source, pair.destination))
        return present

    def connected(self, source: str, destination: str) -> bool:
        return (source, destination) in self._connected

    def connect(self, source: str, destination: str) -> bool:
        """Open sideman's port anew on the returning port of the pair; return whether that worked."""
        pair = self._pairs.get((source, destination))
        if pair is None:
            return False
        full_name = self._listed(pair)
        if full_name is None:
            return False

        try:
            connected = pair.reconnect(full_name)
        except MidiSystemError as error:
            log.warning("reopening the MIDI %s on %r failed: %s; trying again", pair.kind, full_name, error)
            return False
        if connected:
            self._connected.add((source, destination))
        return connected

    def refresh(self) -> None:
        """List the ports again; the port keeper calls it once before each round of questions."""
        listing: dict[str, dict[str, list[str]]] = {}
        for kind, names in (("output", self._lister.destinations()), ("input", self._lister.sources())):
            by_identity = listing[kind] = {}
            for name in names:
                by_identity.setdefault(port_identity(name, self.backend), []).append(name)
        self._listing = listing

    def close(self) -> None:
        self._lister.close()

    def _listed(self, pair: ListedPair) -> str | None:
        """Return the full name under which the pair's external port is listed now, or None when it is not.

        The name it had when sideman connected wins; else the first port listed under the same identity.
        """
        if pair.kind not in self._listing:
            self.refresh()
        names = self._listing[pair.kind].get(port_identity(pair.external, self.backend), [])
        if pair.external in names:
            return pair.external
        return names[0] if names else None
