"""A JACK client without ports that watches the graph: which ports exist, which are connected, and whether the server runs.

python-rtmidi gives no notice when the port it connected to goes away or
when the JACK server stops, and JACK never restores a connection by
itself. The port keeper (sideman.portkeeper) reads the graph through this
client a few times a second, and connects ports by name through it.

Its only callback is libjack's server shutdown, which sets an event. It
registers none for port registration or connection. The server waits for
every client to handle those notifications, and a Python callback first
needs the GIL. A thread that holds the GIL in a python-rtmidi call which
waits for the server would then block both until the server's client
timeout.
"""

from __future__ import annotations

import ctypes
import logging
import threading

from .errors import MidiSystemError
from .midiport import _JACK_NO_START_SERVER, _libjack, quiet_jack_messages

log = logging.getLogger(__name__)

_SHUTDOWN_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_EEXIST = 17  # jack_connect's result when the connection already exists


def _declare(library: ctypes.CDLL) -> None:
    """Give ctypes the signatures of the libjack functions used here."""
    library.jack_on_shutdown.argtypes = [ctypes.c_void_p, _SHUTDOWN_CALLBACK, ctypes.c_void_p]
    library.jack_on_shutdown.restype = None
    library.jack_activate.argtypes = [ctypes.c_void_p]
    library.jack_deactivate.argtypes = [ctypes.c_void_p]
    library.jack_port_by_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    library.jack_port_by_name.restype = ctypes.c_void_p
    library.jack_port_connected_to.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    library.jack_connect.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    library.jack_last_frame_time.argtypes = [ctypes.c_void_p]
    library.jack_last_frame_time.restype = ctypes.c_uint32


class JackWatch:
    """A portless JACK client named `client_name` whose shutdown callback sets `lost` and `changed` when the server stops.

    Raises MidiSystemError when libjack is missing or no server runs. Every
    method is safe to call after the server went away: it then reports no
    ports and connects nothing.
    """

    def __init__(self, client_name: str = "sideman-watch") -> None:
        library = _libjack()
        if library is None:
            raise MidiSystemError("libjack not found; install the Debian package libjack-jackd2-0 or jackd2")
        _declare(library)
        self._library = library
        self.changed = threading.Event()
        self.lost = threading.Event()
        self._lock = threading.Lock()

        # The ctypes callback must live as long as the client, or libjack calls freed memory.
        self._shutdown_callback = _SHUTDOWN_CALLBACK(self._on_shutdown)
        status = ctypes.c_int(0)
        # Quiet: with no server, sideman reports that itself.
        with quiet_jack_messages(library):
            client = library.jack_client_open(client_name.encode(), _JACK_NO_START_SERVER, ctypes.byref(status))
        if not client:
            raise MidiSystemError(f"no JACK server to watch (jack_client_open status 0x{status.value:x})")
        self._client: int | None = client

        library.jack_on_shutdown(client, self._shutdown_callback, None)
        if library.jack_activate(client) != 0:
            self.close()
            raise MidiSystemError("could not activate the JACK watch client")
        log.debug("watching the JACK graph as %s", client_name)

    # A connection removed in a patchbay shows in the graph.
    shows_removals = True

    def refresh(self) -> None:
        """Nothing to do: every question reads the graph as it is."""

    def ports_exist(self, source: str, destination: str) -> bool:
        """Return whether both ports, by full name, are registered."""
        return self.port_exists(source) and self.port_exists(destination)

    def port_exists(self, name: str) -> bool:
        with self._lock:
            if self._client is None or self.lost.is_set():
                return False
            return bool(self._library.jack_port_by_name(self._client, name.encode()))

    def last_frame_time(self) -> int | None:
        """Return the frame time at which the server began its latest process cycle; None once the server is gone."""
        client = self._client
        if client is None or self.lost.is_set():
            return None
        # A read of the server's shared memory, cheap enough for every MIDI message.
        return int(self._library.jack_last_frame_time(client))

    def connected(self, source: str, destination: str) -> bool:
        """Return whether the port `source` sends to the port `destination`."""
        with self._lock:
            if self._client is None or self.lost.is_set():
                return False
            port = self._library.jack_port_by_name(self._client, source.encode())
            return bool(port) and bool(self._library.jack_port_connected_to(port, destination.encode()))

    def connect(self, source: str, destination: str) -> bool:
        """Connect two ports by their full names; return whether they are connected now."""
        with self._lock:
            if self._client is None or self.lost.is_set():
                return False
            result = self._library.jack_connect(self._client, source.encode(), destination.encode())
        return result in (0, _EEXIST)

    def close(self) -> None:
        """Leave the server; closing again does nothing."""
        with self._lock:
            client, self._client = self._client, None
        if client is None:
            return
        # After a shutdown the client is already gone from the server; closing still frees libjack's memory.
        if not self.lost.is_set():
            self._library.jack_deactivate(client)
        self._library.jack_client_close(client)

    def _on_shutdown(self, argument: int | None) -> None:
        self.lost.set()
        self.changed.set()
