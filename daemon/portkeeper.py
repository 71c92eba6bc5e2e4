"""Keeping sideman's MIDI connections through port loss, and through JACK server restarts.

On stage a synth is switched off and on, a DAW closes and opens its
project, or the JACK server restarts. The keeper runs a thread that
watches the ports and:
- when a port that sideman connected to (`--midi-out`, `--midi-in`,
  `--clock-in`, `--clock-out`) disappears, logs it, sends a note_off for
  each sounding note where the output still reaches, and connects again
  within CHECK_INTERVAL (0.25 s) of a port of that name returning;
- under JACK, when the server stops, logs it and tries to reach a server
  again with backoff (0.5 s, doubling up to 5 s). Meanwhile SharedOutput
  drops and counts what the engine sends. Once a server runs, the keeper
  opens every port again and restores the connections, and play goes on
  without a restart.

Under JACK the keeper reads the graph (sideman.jackwatch) and connects
ports there; a connection that someone removes while both ports exist (in
a patchbay) stays removed: that was a choice, not a loss. Under ALSA,
CoreMIDI and WinMM it lists the ports (sideman.portlist) and connects
again by opening sideman's port anew on the returning one
(`listing_port_keeper`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .errors import MidiSystemError
from .jackwatch import JackWatch
from .midiinput import INPUT_COUNTS
from .portlist import ListedPair, PortListWatch

log = logging.getLogger(__name__)

FIRST_RETRY = 0.5  # seconds before the first attempt to reach a stopped JACK server again
MAX_RETRY = 5.0  # seconds between attempts at most
# Seconds between two reads of the JACK graph. The watch client registers no
# graph callbacks (the sideman.jackwatch docstring gives the reason), so a port that returns is
# reconnected within this time. Each read is a few lookups in JACK's shared memory.
CHECK_INTERVAL = 0.25


class Endpoint(Protocol):
    """A port of sideman's that the keeper opens again after a server restart."""

    description: str

    def lost(self) -> None:
        """Stop using the port: its server went away."""
        ...

    def reopen(self) -> None:
        """Open the port again on the server that now runs; raise MidiSystemError on failure."""
        ...


@dataclass
class KeptConnection:
    """A connection between two ports by full name, and what the keeper last saw of it."""

    source: str
    destination: str
    # "connected"; "missing": a port is gone, connect when it returns; "removed": someone disconnected them.
    state: str = "connected"
    reconnections: int = 0
    on_missing: Callable[[], Any] | None = None  # called once when a port goes missing
    on_restored: Callable[[], Any] | None = None  # called once it is connected again

    def describe(self) -> str:
        return f"{self.source} -> {self.destination}"


class KeptOutput:
    """sideman's output port: the SharedOutput keeps sending, to nothing while the port is lost.

    `reopen()` opens the port again after a JACK server restart;
    `open_on(full_name)` opens it on the existing port of that name, for the
    listing keeper. While the port it sends to is missing, the output
    releases its notes and then drops and counts (SharedOutput.suspend).
    """

    kind = "output"

    def __init__(self, shared: Any, reopen: Callable[[], Any], open_on: Callable[[str], Any] | None = None):
        self._shared = shared
        self._reopen = reopen
        self._open_on = open_on
        self.name = shared.name
        self.connected_to: str | None = getattr(shared.port, "connected_to", None)
        self.description = f"MIDI output {shared.name}"
        self.on_missing: Callable[[], Any] | None = shared.suspend
        self.on_restored: Callable[[], Any] | None = shared.resume

    def lost(self) -> None:
        _close_quietly(self._shared.port_lost(), self.description)

    def reopen(self) -> None:
        self._shared.replace_port(self._reopen())

    def reconnect(self, full_name: str) -> bool:
        """Close the port and open it anew on the existing port `full_name`; raise MidiSystemError on failure."""
        if self._open_on is None:
            return False
        # Closed first: under JACK a second client of the same name would be renamed.
        self.lost()
        self._shared.replace_port(self._open_on(full_name))
        return True


class KeptInput:
    """One of sideman's MIDI input ports; `close` closes whichever port is current.

    `reopen()` and `open_on(full_name)` as for KeptOutput.
    """

    kind = "input"
    on_missing: Callable[[], Any] | None = None
    on_restored: Callable[[], Any] | None = None

    def __init__(self, midi_input: Any, reopen: Callable[[], Any], open_on: Callable[[str], Any] | None = None):
        self._input = midi_input
        self._reopen = reopen
        self._open_on = open_on
        self.name = midi_input.name
        # The existing port this input reads from, by full name, if any.
        self.connected_to: str | None = midi_input.connected_to
        self.backend = midi_input.backend
        self.description = f"MIDI input {midi_input.name}"
        # The counts of the ports this input closed, so that the status reply keeps them.
        # The lock makes a port's move from `_input` into these counts one step for counts().
        self._closed_counts = dict.fromkeys(INPUT_COUNTS, 0)
        self._counts_lock = threading.Lock()

    def lost(self) -> None:
        with self._counts_lock:
            midi_input, self._input = self._input, None
            _close_quietly(midi_input, self.description)
            self._add_to_closed(midi_input)

    def reopen(self) -> None:
        self._replace(self._reopen())

    def reconnect(self, full_name: str) -> bool:
        """Close the port and open it anew on the existing port `full_name`; raise MidiSystemError on failure."""
        if self._open_on is None:
            return False
        self.lost()
        self._replace(self._open_on(full_name))
        return True

    def _replace(self, midi_input: Any) -> None:
        # Opened outside the lock, because opening waits for the MIDI system; counts() reads `_input` under it.
        with self._counts_lock:
            self._input = midi_input

    def close(self) -> None:
        with self._counts_lock:
            midi_input, self._input = self._input, None
            if midi_input is not None:
                # Closed first: the reader thread delivers until close() returns.
                midi_input.close()
                self._add_to_closed(midi_input)

    def counts(self) -> dict[str, int]:
        """Return the messages received, malformed, ignored and failed in the handler, over every port this input opened."""
        with self._counts_lock:
            totals = dict(self._closed_counts)
            midi_input = self._input
            if midi_input is not None:
                for key, value in _input_counts(midi_input).items():
                    totals[key] += value
            return totals

    def _add_to_closed(self, midi_input: Any) -> None:
        if midi_input is None:
            return
        for key, value in _input_counts(midi_input).items():
            self._closed_counts[key] += value


def _input_counts(midi_input: Any) -> dict[str, int]:
    return {key: getattr(midi_input, key) for key in INPUT_COUNTS}


class PortKeeper:
    """A thread that restores `connections` when their ports return and reopens `endpoints` after a JACK server restart.

    `watch_factory` returns a JackWatch, or a PortListWatch for the other backends.
    """

    def __init__(
        self,
        endpoints: list[Endpoint],
        connections: list[KeptConnection],
        *,
        watch_factory: Callable[[], Any] = JackWatch,
        first_retry: float = FIRST_RETRY,
        max_retry: float = MAX_RETRY,
    ):
        self._endpoints = endpoints
        self.connections = connections
        self._watch_factory = watch_factory
        self._first_retry = first_retry
        self._max_retry = max_retry
        self._watch: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.server_restarts = 0

    def current_watch(self) -> Any:
        """Return the watch client on the running server, or None while the server is being reached again."""
        return self._watch

    def start(self) -> None:
        """Watch from now on; raise MidiSystemError when no JACK server runs."""
        self._watch = self._watch_factory()
        self._thread = threading.Thread(target=self._run, name="sideman-portkeeper", daemon=True)
        self._thread.start()
        log.info("keeping %d MIDI connections through port loss%s", len(self.connections),
                 f", and {len(self._endpoints)} ports through JACK restarts" if self._endpoints else "")

    def close(self) -> None:
        self._stop.set()
        watch = self._watch
        if watch is not None:
            watch.changed.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                watch = self._watch
                if watch is None:
                    self._reach_server()
                    continue
                if watch.lost.is_set():
                    self._server_lost(watch)
                    continue
                watch.changed.clear()
                watch.refresh()
                self._keep_connections(watch)
                watch.changed.wait(CHECK_INTERVAL)
        except Exception:
            log.exception("the MIDI port keeper failed; lost ports are no longer reopened")

    def _server_lost(self, watch: Any) -> None:
        log.error("the JACK server stopped: sideman's notes go nowhere until it runs again; retrying every %.1f-%.0f s",
                  self._first_retry, self._max_retry)
        for endpoint in self._endpoints:
            endpoint.lost()
        watch.close()
        self._watch = None
        for connection in self.connections:
            if connection.state != "missing" and connection.on_missing is not None:
                connection.on_missing()
            connection.state = "missing"

    def _reach_server(self) -> None:
        """Try to reach a JACK server with backoff, then reopen every port on it."""
        delay = self._first_retry
        while not self._stop.is_set():
            try:
                watch = self._watch_factory()
            except MidiSystemError as error:
                log.debug("JACK server not back yet: %s", error)
                self._stop.wait(delay)
                delay = min(2 * delay, self._max_retry)
                continue

            try:
                for endpoint in self._endpoints:
                    endpoint.reopen()
            except MidiSystemError as error:
                log.warning("reopening sideman's MIDI ports failed: %s; retrying in %.1f s", error, delay)
                for endpoint in self._endpoints:
                    endpoint.lost()
                watch.close()
                self._stop.wait(delay)
                delay = min(2 * delay, self._max_retry)
                continue

            self._watch = watch
            self.server_restarts += 1
            log.warning("the JACK server runs again: reopened %s", ", ".join(endpoint.description for endpoint in self._endpoints) or "nothing")
            return

    def _keep_connections(self, watch: Any) -> None:
        for connection in self.connections:
            present = watch.port_exists(connection.source) and watch.port_exists(connection.destination)
            if not present:
                if connection.state != "missing":
                    connection.state = "missing"
                    log.warning("MIDI connection %s lost: a port is gone; connecting again when it returns", connection.describe())
                    if connection.on_missing is not None:
                        connection.on_missing()
                continue

            if watch.connected(connection.source, connection.destination):
                connection.state = "connected"
            elif connection.state == "missing":
                if watch.connect(connection.source, connection.destination):
                    connection.state = "connected"
                    connection.reconnections += 1
                    log.warning("MIDI connection %s restored", connection.describe())
                    if connection.on_restored is not None:
                        connection.on_restored()
            elif connection.state == "connected":
                connection.state = "removed"
                log.info("MIDI connection %s was removed while both ports exist; leaving it removed", connection.describe())


def listing_port_keeper(backend: str, endpoints: list[Any], lister: Any | None = None) -> PortKeeper:
    """Return a keeper for ALSA, CoreMIDI or WinMM: it lists the ports and reopens each endpoint on its port when that returns.

    `endpoints` are KeptOutput and KeptInput objects; those not connected to
    an existing port (virtual ports) need no keeping. `lister` replaces the
    python-rtmidi port lists in tests.
    """
    pairs = []
    connections = []
    for endpoint in endpoints:
        target = endpoint.connected_to
        if target is None:
            continue
        source, destination = (endpoint.name, target) if endpoint.kind == "output" else (target, endpoint.name)
        pairs.append(ListedPair(source, destination, target, endpoint.kind, endpoint.reconnect))
        connections.append(KeptConnection(source, destination, on_missing=endpoint.on_missing, on_restored=endpoint.on_restored))
    return PortKeeper([], connections, watch_factory=lambda: PortListWatch(backend, pairs, lister))


def _close_quietly(port: Any, description: str) -> None:
    if port is None:
        return
    try:
        port.close()
    except Exception:
        log.exception("closing the lost %s failed", description)
