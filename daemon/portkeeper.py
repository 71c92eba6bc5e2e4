"""Keeping sideman's MIDI connections through port loss, and through JACK server restarts.

On stage a synth is switched off and on, a DAW closes and opens its
project, or the JACK server restarts. The keeper runs a thread that
watches the ports and:
- when a port that sideman connected to (`--midi-out`, `--midi-in`,
  `--clock-in`, `--clock-out`) disappears, logs it, sends a note_off for
  each sounding note where the output still reaches, and connects again
  within CHECK_INTERVAL (0.25 s) of the port returning;
- under JACK, when the server stops, logs it and tries to reach a server
  again with backoff (0.5 s, doubling up to 5 s). Meanwhile SharedOutput
  drops and counts what the engine sends. Once a server runs, the keeper
  opens every port again and restores the connections, and play goes on
  without a restart.

Under JACK the keeper reads the graph (sideman.jackwatch) and connects
ports there; a connection that someone removes while both ports exist (in
a patchbay) stays removed: that was a choice, not a loss. Under ALSA,
CoreMIDI and WinMM it lists the ports (sideman.portlist) and connects
again by opening sideman's port anew on the returning one.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .errors import MidiSystemError
from .jackwatch import JackWatch
from .midiinput import INPUT_COUNTS
from .midiport import own_port_name

log = logging.getLogger(__name__)

FIRST_RETRY = 0.5  # seconds before the first attempt to reach a stopped JACK server again
MAX_RETRY = 5.0  # seconds between attempts at most
# Seconds between two looks at the ports. The JACK watch client registers no
# graph callbacks (the sideman.jackwatch docstring gives the reason), and the
# other backends give no notice at all, so a port that returns is reconnected
# within this time. Under JACK each look is a few lookups in JACK's shared
# memory; elsewhere it is one listing of the ports.
CHECK_INTERVAL = 0.25


class PortWatch(Protocol):
    """The keeper's view of the ports: JackWatch, or PortListWatch for the other backends.

    `changed` wakes the keeper early; `lost` is set when the server stops.
    `shows_removals` is whether `connected` also turns False for a
    connection that someone removed while both ports exist.
    """

    changed: threading.Event
    lost: threading.Event
    shows_removals: bool

    def refresh(self) -> None:
        ...

    def ports_exist(self, source: str, destination: str) -> bool:
        ...

    def connected(self, source: str, destination: str) -> bool:
        ...

    def connect(self, source: str, destination: str) -> bool:
        ...

    def close(self) -> None:
        ...


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

    `reopen()` opens the port again as a virtual port, after a JACK server
    restart; `open_on(full_name)` opens it on the existing port of that name,
    for the listing keeper. While the port it sends to is missing, the output
    releases its notes and then drops and counts (SharedOutput.suspend).
    `requested` is the name of that port as the musician gave it.
    """

    kind = "output"

    def __init__(self, shared: Any, reopen: Callable[[], Any], open_on: Callable[[str], Any] | None = None,
                 requested: str | None = None):
        self._shared = shared
        self._reopen = reopen
        self._open_on = open_on
        port = shared.port
        self.name = shared.name
        self.own_name = own_port_name(port.client_name, port.port_name)
        self.connected_to: str | None = getattr(port, "connected_to", None)
        self.requested = requested or self.connected_to
        self.description = f"MIDI output {shared.name}"
        self.on_missing: Callable[[], Any] | None = shared.suspend
        self.on_restored: Callable[[], Any] | None = shared.resume

    def lost(self) -> None:
        _close_quietly(self._shared.port_lost(), self.description)

    def reopen(self) -> None:
        self._shared.replace_port(self._reopen())

    def reconnect(self, full_name: str) -> bool:
        """Close the port and open it anew on the existing port `full_name`; raise MidiSystemError on failure.

        After a failure the output stays lost (dropping and counting) with no port, until a later call succeeds.
        """
        if self._open_on is None:
            return False
        # Closed first: a WinMM device usually takes one client at a time, and under JACK a
        # second client of the same name would be renamed.
        self.lost()
        self._shared.replace_port(self._open_on(full_name))
        return True


class KeptInput:
    """One of sideman's MIDI input ports; `close` closes whichever port is current.

    `reopen()`, `open_on(full_name)` and `requested` as for KeptOutput. A
    port opened after `close` (a reopen that outlasted the keeper's shutdown)
    is closed at once.
    """

    kind = "input"
    on_missing: Callable[[], Any] | None = None
    on_restored: Callable[[], Any] | None = None

    def __init__(self, midi_input: Any, reopen: Callable[[], Any], open_on: Callable[[str], Any] | None = None,
                 requested: str | None = None):
        self._input = midi_input
        self._reopen = reopen
        self._open_on = open_on
        self._closed = False
        self.name = midi_input.name
        self.own_name = own_port_name(midi_input.client_name, midi_input.port_name)
        # The existing port this input reads from, by full name, if any.
        self.connected_to: str | None = midi_input.connected_to
        self.requested = requested or self.connected_to
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
        """Close the port and open it anew on the existing port `full_name`; raise MidiSystemError on failure.

        After a failure the input has no port until a later call succeeds.
        """
        if self._open_on is None:
            return False
        self.lost()
        self._replace(self._open_on(full_name))
        return True

    def _replace(self, midi_input: Any) -> None:
        # Opened outside the lock, because opening waits for the MIDI system; counts() reads `_input` under it.
        with self._counts_lock:
            if not self._closed:
                self._input = midi_input
                return
        _close_quietly(midi_input, self.description)

    def close(self) -> None:
        with self._counts_lock:
            self._closed = True
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
        watch_factory: Callable[[], PortWatch] = JackWatch,
        first_retry: float = FIRST_RETRY,
        max_retry: float = MAX_RETRY,
    ):
        self._endpoints = endpoints
        self.connections = connections
        self._watch_factory = watch_factory
        self._first_retry = first_retry
        self._max_retry = max_retry
        self._watch: PortWatch | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.server_restarts = 0

    def current_watch(self) -> PortWatch | None:
        """Return the watch client on the running server, or None while the server is being reached again."""
        return self._watch

    def start(self) -> None:
        """Watch from now on; raise MidiSystemError when the watch cannot start (under JACK: no server runs)."""
        self._watch = self._watch_factory()
        self._thread = threading.Thread(target=self._run, name="sideman-portkeeper", daemon=True)
        self._thread.start()
        log.info("keeping %d MIDI connections through port loss, and %d ports through JACK restarts",
                 len(self.connections), len(self._endpoints))

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

    def _server_lost(self, watch: PortWatch) -> None:
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

    def _keep_connections(self, watch: PortWatch) -> None:
        for connection in self.connections:
            source, destination = connection.source, connection.destination
            if not watch.ports_exist(source, destination):
                self._missing(connection, "a port is gone")
                continue

            if watch.connected(source, destination):
                if connection.state == "missing":
                    # Someone connected the returning port first (a patchbay, an autoconnect).
                    self._restored(connection)
                connection.state = "connected"
                continue

            if connection.state == "connected":
                if watch.shows_removals:
                    connection.state = "removed"
                    log.info("MIDI connection %s was removed while both ports exist; leaving it removed", connection.describe())
                    continue
                # This watch cannot show a removal, so the port left and returned between two looks.
                self._missing(connection, "its port left and returned")
            if connection.state == "missing" and watch.connect(source, destination):
                self._restored(connection)

    @staticmethod
    def _missing(connection: KeptConnection, reason: str) -> None:
        if connection.state == "missing":
            return
        connection.state = "missing"
        log.warning("MIDI connection %s lost: %s; connecting again when it returns", connection.describe(), reason)
        if connection.on_missing is not None:
            connection.on_missing()

    @staticmethod
    def _restored(connection: KeptConnection) -> None:
        connection.state = "connected"
        connection.reconnections += 1
        log.warning("MIDI connection %s restored", connection.describe())
        if connection.on_restored is not None:
            connection.on_restored()


def _close_quietly(port: Any, description: str) -> None:
    if port is None:
        return
    try:
        port.close()
    except Exception:
        log.exception("closing the lost %s failed", description)
