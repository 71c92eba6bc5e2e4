"""MIDI ports: choose a MIDI backend, open the output port, list the ports of the system.

python-rtmidi defaults to ALSA, and libasound and libjack print their own
errors on stderr. So the backend is probed before any port is opened, and
both libraries' message handlers are routed to this module's logger at
DEBUG. Two kinds of messages can still reach stderr. The first comes from a
libjack that exports no `jack_set_error_function` (JACK 1.9.x does export it).
The second is printed after interpreter exit starts, because the default
handlers are restored then so that no library calls into a finished interpreter.

Port names follow `client:port`: the output is `out` on a client named
`sideman` (`sideman:out` under JACK). An input port can reuse
`probe_backend`, `find_port` and the naming here.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Protocol

import mido
import rtmidi

from sideman.errors import MidiSystemError, SettingsError

log = logging.getLogger(__name__)

BACKENDS = ("alsa", "jack", "coremidi", "winmm")
BACKEND_CHOICES = ("auto", *BACKENDS)

_RTMIDI_APIS = {
    "alsa": rtmidi.API_LINUX_ALSA,
    "jack": rtmidi.API_UNIX_JACK,
    "coremidi": rtmidi.API_MACOSX_CORE,
    "winmm": rtmidi.API_WINDOWS_MM,
}

_PLATFORM_OF_BACKEND = {"coremidi": ("darwin", "macOS"), "winmm": ("win32", "Windows")}

ALSA_SEQUENCER = "/dev/snd/seq"
LOOPMIDI_HINT = (
    "Windows has no virtual MIDI ports: install loopMIDI, create a port in it "
    "and pass its name with --midi-out, for example --midi-out loopMIDI"
)

ALL_NOTES_OFF = 123  # MIDI control change number

# Seconds to wait under JACK after a change of the graph. Before unregistering
# a port: the libjack that python-rtmidi's Linux wheels bundle (1.9.22) can
# crash when a port is unregistered while the client's notification thread
# updates latencies after another change of the graph, such as another port
# closing; waiting makes that unlikely, not impossible. After connecting to an
# existing port: the server applies the new connection in a later process
# cycle, and a message sent before then never reaches the other port.
JACK_SETTLE_TIME = 0.1
CONTROL_CHANGE = 0xB0  # status byte for channel 0; add the channel 0-15

# jack_options_t and jack_status_t bits from <jack/types.h>.
_JACK_NO_START_SERVER = 0x01
_JACK_NAME_NOT_UNIQUE = 0x04


def jack_server_name() -> str:
    """Return the name of the JACK server that libjack connects to."""
    return os.environ.get("JACK_DEFAULT_SERVER") or "default"


# --- Native libraries -------------------------------------------------------

# libasound's handler is variadic (file, line, function, err, fmt, ...). The
# trailing arguments are left unread, which the x86-64 and AArch64 Linux
# calling conventions allow, so the log line shows the format, not the values.
_AlsaErrorHandler = ctypes.CFUNCTYPE(
    None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
)


def _log_alsa_error(file: bytes | None, line: int, function: bytes | None, err: int, fmt: bytes | None) -> None:
    log.debug("libasound: %s: %s (error %d)", (function or b"?").decode(errors="replace"), (fmt or b"").decode(errors="replace"), err)


# ctypes frees a callback with its Python object, so the handler lives for the
# whole process.
_ALSA_HANDLER = _AlsaErrorHandler(_log_alsa_error)


def _load_symbols_of_rtmidi(symbol: str, fallback_library: str) -> ctypes.CDLL | None:
    """Return the loaded library that python-rtmidi resolves `symbol` from.

    Looking the symbol up through python-rtmidi's own extension module finds
    the exact copy it uses (its Linux wheels bundle their own libjack); the
    system library found by name is the fallback.
    """
    candidates = [rtmidi._rtmidi.__file__, ctypes.util.find_library(fallback_library)]
    for candidate in candidates:
        if candidate is None:
            continue
        try:
            library = ctypes.CDLL(candidate)
        except OSError:
            continue
        if hasattr(library, symbol):
            return library
    return None


@functools.cache
def _libjack() -> ctypes.CDLL | None:
    """Return libjack, or None when missing."""
    library = _load_symbols_of_rtmidi("jack_client_open", "jack")
    if library is None:
        return None

    library.jack_client_open.restype = ctypes.c_void_p
    library.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    library.jack_client_close.argtypes = [ctypes.c_void_p]
    return library


# libjack prints its messages to stderr from whichever thread has one, JACK's
# process threads included, and sideman leaves it so: the only Python code in
# those threads is JackWatch's shutdown callback, which runs once the server
# is gone. A Python handler there would wait for the GIL, which python-rtmidi
# holds while it opens or closes a JACK client and so waits for those very
# threads (see MidiInput). Around a probe, whose failure sideman
# reports in its own words, the messages are dropped instead: the handlers,
# two exported variables of libjack, point at a C function that ignores its
# argument for that time.
_JACK_HANDLER_VARIABLES = ("jack_error_callback", "jack_info_callback")
_quiet_lock = threading.Lock()
_quiet_depth = 0  # blocks of quiet_jack_messages running now, in any thread
_saved_jack_handlers: dict[str, int] = {}  # the handlers to put back when the last block ends


@functools.cache
def _noop_handler_address() -> int | None:
    """Return the address of libc's strlen, or None where it cannot be found.

    strlen reads the string and returns its length, which the caller drops.
    Called as libjack's void (*)(const char *) handler, that is harmless
    under the C calling conventions sideman runs on (x86-64 and AArch64).
    """
    try:
        return ctypes.cast(ctypes.CDLL(None).strlen, ctypes.c_void_p).value
    except (OSError, TypeError, AttributeError) as error:
        log.debug("libjack's messages stay on during probes: libc's strlen not found (%s)", error)
        return None


@contextlib.contextmanager
def quiet_jack_messages(library: ctypes.CDLL) -> Iterator[None]:
    """Drop libjack's messages while the block runs; nested and concurrent blocks are fine."""
    global _quiet_depth
    ignore = _noop_handler_address()
    with _quiet_lock:
        if _quiet_depth == 0:
            _saved_jack_handlers.clear()
            _saved_jack_handlers.update(_read_jack_handlers(library))
            if ignore is not None:
                _write_jack_handlers(library, dict.fromkeys(_saved_jack_handlers, ignore))
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                _write_jack_handlers(library, _saved_jack_handlers)


def _read_jack_handlers(library: ctypes.CDLL) -> dict[str, int]:
    handlers = {}
    for variable in _JACK_HANDLER_VARIABLES:
        try:
            address = ctypes.c_void_p.in_dll(library, variable).value
        except ValueError:
            continue
        if address:
            handlers[variable] = address
    return handlers


def _write_jack_handlers(library: ctypes.CDLL, handlers: dict[str, int]) -> None:
    for variable, address in handlers.items():
        ctypes.c_void_p.in_dll(library, variable).value = address


@functools.cache
def silence_alsa() -> bool:
    """Route libasound's error messages to the logger; return False when libasound is missing."""
    library = _load_symbols_of_rtmidi("snd_lib_error_set_handler", "asound")
    if library is None:
        return False

    library.snd_lib_error_set_handler(_ALSA_HANDLER)
    # NULL restores libasound's default handler, so nothing calls into Python
    # while the interpreter shuts down.
    atexit.register(library.snd_lib_error_set_handler, None)
    return True


def _jack_client_status(client_name: str, options: int) -> tuple[bool, int]:
    """Open and close a JACK client; return whether it opened and libjack's status bits."""
    library = _libjack()
    if library is None:
        raise MidiSystemError("libjack not found; install the Debian package libjack-jackd2-0 or jackd2")

    status = ctypes.c_int(0)
    with quiet_jack_messages(library):
        client = library.jack_client_open(client_name.encode(), options, ctypes.byref(status))
        if client:
            library.jack_client_close(client)
    return bool(client), status.value


# --- Backend probe ----------------------------------------------------------


class MidiSystem(Protocol):
    """Facts about the machine that the probe reads; tests pass a fake."""

    platform: str  # as sys.platform: "linux", "darwin", "win32", ...

    def compiled_backends(self) -> frozenset[str]:
        """Return the backends python-rtmidi was built with."""
        ...

    def alsa_problem(self) -> str | None:
        """Return why ALSA is unusable, or None when it is usable."""
        ...

    def jack_problem(self) -> str | None:
        """Return why JACK is unusable, or None when a server accepts clients."""
        ...

    def jack_client_exists(self, client_name: str) -> bool:
        """Return whether the JACK server already has a client of that name."""
        ...


class NativeMidiSystem:
    """The real machine, probed without opening a MIDI port."""

    def __init__(self) -> None:
        self.platform = sys.platform

    def compiled_backends(self) -> frozenset[str]:
        compiled = set(rtmidi.get_compiled_api())
        return frozenset(name for name, api in _RTMIDI_APIS.items() if api in compiled)

    def alsa_problem(self) -> str | None:
        if not os.path.exists(ALSA_SEQUENCER):
            return f"no ALSA sequencer ({ALSA_SEQUENCER} not found)"
        if not os.access(ALSA_SEQUENCER, os.R_OK | os.W_OK):
            return f"no read and write permission on {ALSA_SEQUENCER} (add the user to the audio group)"
        silence_alsa()
        return None

    def jack_problem(self) -> str | None:
        try:
            opened, _ = _jack_client_status("sideman-probe", _JACK_NO_START_SERVER)
        except MidiSystemError as error:
            return str(error)
        if not opened:
            return f"no JACK server '{jack_server_name()}' running"
        return None

    def jack_client_exists(self, client_name: str) -> bool:
        # With JackUseExactName, JACK 1.9.21 reports a taken name only as a
        # generic failure, so open under the name and see whether JACK renamed it.
        _, status = _jack_client_status(client_name, _JACK_NO_START_SERVER)
        return bool(status & _JACK_NAME_NOT_UNIQUE)


def probe_backend(requested: str = "auto", system: MidiSystem | None = None) -> str:
    """Return the MIDI backend to use: "alsa", "jack", "coremidi" or "winmm".

    `auto` takes the first usable one of: ALSA when its sequencer exists, JACK
    when a server is running, CoreMIDI on macOS, WinMM on Windows. An explicit
    backend is checked the same way. Raises MidiSystemError with the fix when
    nothing is usable, SettingsError for an unknown name.
    """
    if requested not in BACKEND_CHOICES:
        raise SettingsError(f"unknown MIDI backend {requested!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    system = system or NativeMidiSystem()

    if requested == "auto":
        backend = _probe_automatically(system)
        log.info("MIDI backend: %s (chosen automatically)", backend)
        return backend

    problem = _backend_problem(requested, system)
    if problem is not None:
        raise MidiSystemError(f"MIDI backend '{requested}' is unusable: {_with_fix(requested, problem)}")
    log.info("MIDI backend: %s", requested)
    return requested


_FIXES = {
    "alsa": "load the ALSA sequencer with `modprobe snd-seq`",
    "jack": "start a JACK server with `jackd --no-realtime -d dummy -r 48000 -p 64` (Debian package jackd2)",
}


def _with_fix(backend: str, problem: str) -> str:
    fix = _FIXES.get(backend)
    return problem if fix is None else f"{problem}; {fix}"


def _probe_automatically(system: MidiSystem) -> str:
    compiled = system.compiled_backends()
    candidates = [backend for backend in BACKENDS if backend in compiled and _runs_on(backend, system.platform)]
    if not candidates:
        raise MidiSystemError(f"no MIDI system found: python-rtmidi on this machine has no MIDI backend for {system.platform}")

    problems = {}
    for backend in candidates:
        problem = _backend_problem(backend, system)
        if problem is None:
            return backend
        problems[backend] = problem

    fixes = " or ".join(_FIXES[backend] for backend in problems if backend in _FIXES)
    raise MidiSystemError(f"no MIDI system found: {' and '.join(problems.values())}; {fixes}")


def _runs_on(backend: str, platform: str) -> bool:
    if backend == "alsa":
        return platform == "linux"
    if backend in _PLATFORM_OF_BACKEND:
        return platform == _PLATFORM_OF_BACKEND[backend][0]
    return True


def _backend_problem(backend: str, system: MidiSystem) -> str | None:
    """Return why `backend` is unusable on `system`, or None when it is usable."""
    if not _runs_on(backend, system.platform):
        platform_name = _PLATFORM_OF_BACKEND.get(backend, ("linux", "Linux"))[1]
        return f"{backend} exists only on {platform_name}"
    if backend not in system.compiled_backends():
        return f"python-rtmidi on this machine was built without {backend} support"

    if backend == "alsa":
        return system.alsa_problem()
    if backend == "jack":
        return system.jack_problem()
    return None


# --- Port names -------------------------------------------------------------


def find_port(requested: str, available: Sequence[str], kind: str = "output") -> int:
    """Return the index in `available` of the port named by its full name or a unique part of it.

    A full name wins over parts of other names; parts match case-insensitively.
    Raises MidiSystemError listing the matches when the part is ambiguous, and
    the available ports when nothing matches. `kind` names the ports in messages.
    """
    if not requested:
        raise MidiSystemError(f"empty MIDI {kind} port name; give the full name or a unique part of it")

    exact = [index for index, name in enumerate(available) if name == requested]
    if len(exact) == 1:
        return exact[0]

    part = requested.casefold()
    matches = exact or [index for index, name in enumerate(available) if part in name.casefold()]
    if len(matches) == 1:
        return matches[0]

    if matches:
        names = ", ".join(repr(available[index]) for index in matches)
        raise MidiSystemError(f"MIDI {kind} port name {requested!r} is ambiguous: it matches {names}; give more of the name")
    if not available:
        raise MidiSystemError(f"MIDI {kind} port {requested!r} not found: there are no MIDI {kind} ports")
    names = ", ".join(repr(name) for name in available)
    raise MidiSystemError(f"MIDI {kind} port {requested!r} not found; available {kind} ports: {names}")


def own_port_name(client_name: str, port_name: str) -> str:
    """Return the name under which other programs list a port of ours."""
    # NOTE: under CoreMIDI other programs list a virtual port by its endpoint
    # name alone (`out`); ALSA lists client and port separately, JACK as `client:port`.
    return f"{client_name}:{port_name}"


# --- Output -----------------------------------------------------------------


class OpenPort:
    """Base of the MIDI input and output: a context manager that closes the port, and a repr with its state.

    Subclasses set `_port` (None once closed), `name` and `backend`, and define `close`.
    """

    _port: Any
    name: str
    backend: str

    @property
    def closed(self) -> bool:
        return self._port is None

    def close(self) -> None:
        raise NotImplementedError

    def _free(self, port: Any, after_close: Any = None) -> None:
        """Close an rtmidi port object and delete it, which frees its client; `after_close()` runs in between."""
        if self.backend == "jack":
            # NOTE: see JACK_SETTLE_TIME; the wait makes a libjack crash unlikely, not impossible.
            time.sleep(JACK_SETTLE_TIME)
        # delete() also closes the client: under JACK a client left open keeps
        # its name, and the next client of that name would get a suffix (`sideman-01`).
        port.close_port()
        if after_close is not None:
            after_close()
        port.delete()

    def __enter__(self) -> OpenPort:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._port is None else "open"
        return f"{type(self).__name__}({self.name!r}, backend={self.backend!r}, {state})"


class MidiOutput(OpenPort):
    """An open MIDI output port: sends raw MIDI bytes, closes once.

    `name` is the port as other programs list it: our own port (`sideman:out`)
    under ALSA and JACK, the port we send into under CoreMIDI and WinMM when
    connected by name, where no port of ours is visible. `connected_to` is the
    full name of the existing port this output was connected to, if any.
    `client_name` and `port_name` are the names sideman opened it under, to
    open it again the same way.
    """

    def __init__(self, port: Any, name: str, backend: str, connected_to: str | None = None, *,
                 client_name: str = "sideman", port_name: str = "out") -> None:
        # `port` is an open rtmidi.MidiOut (or a test fake with the same
        # methods); holding it keeps the port open for the life of this object.
        self._port = port
        self.name = name
        self.backend = backend
        self.connected_to = connected_to
        self.client_name = client_name
        self.port_name = port_name

    def send(self, message: mido.Message | Sequence[int]) -> None:
        """Send one message, a mido.Message or its bytes, at once."""
        # Called on the real-time path: no logging, no allocation beyond the bytes.
        # The port is read once because `close` may run on another thread.
        port = self._port
        if port is None:
            raise MidiSystemError(f"MIDI output {self.name} is closed")
        data = message.bytes() if isinstance(message, mido.Message) else message
        try:
            port.send_message(data)
        except rtmidi.RtMidiError as error:
            raise MidiSystemError(f"sending to MIDI output {self.name} failed: {error}") from error

    def all_notes_off(self, channel: int) -> None:
        """Send All Notes Off (control change 123) on `channel` 0-15 (MIDI channel 1-16)."""
        if not 0 <= channel <= 15:
            raise ValueError(f"channel {channel} out of range: expected 0-15 (MIDI channels 1-16)")
        self.send((CONTROL_CHANGE | channel, ALL_NOTES_OFF, 0))

    def close(self) -> None:
        """Close the port and free its client; closing again does nothing."""
        if self._port is None:
            return
        port, self._port = self._port, None
        self._free(port)
        log.info("closed MIDI output %s (%s)", self.name, self.backend)


def choose_backend_for_client(backend: str, client_name: str, connect_to: str | None, windows_hint: str, system: MidiSystem) -> str:
    """Probe the backend for a new client of ours; raise MidiSystemError where it cannot open one.

    Windows has no virtual ports, so there `connect_to` is required
    (`windows_hint` says what to do). Under JACK the client name must be free,
    because JACK would rename the new client and its ports.
    """
    chosen = probe_backend(backend, system)
    if chosen == "winmm" and connect_to is None:
        raise MidiSystemError(windows_hint)
    if chosen == "jack" and system.jack_client_exists(client_name):
        raise MidiSystemError(
            f"JACK already has a client named '{client_name}' (is another sideman running?); "
            f"stop it first, because JACK would rename this one and its ports"
        )
    return chosen


def open_output(
    backend: str = "auto",
    connect_to: str | None = None,
    client_name: str = "sideman",
    port_name: str = "out",
    *,
    system: MidiSystem | None = None,
) -> MidiOutput:
    """Open the MIDI output: a virtual port, or a connection to the existing port `connect_to`.

    `connect_to` is a full port name or a unique part of it (CLI `--midi-out`).
    Windows has no virtual ports, so there `connect_to` is required. Raises
    MidiSystemError when no backend is usable, the port is not found or
    ambiguous, or the client name is taken under JACK.
    """
    system = system or NativeMidiSystem()
    chosen = choose_backend_for_client(backend, client_name, connect_to, LOOPMIDI_HINT, system)
    port = new_rtmidi_port(rtmidi.MidiOut, chosen, client_name)
    try:
        output = _open_on(port, chosen, connect_to, client_name, port_name)
    except BaseException:
        port.delete()
        raise

    if output.connected_to is None:
        log.info("opened MIDI output %s (%s, virtual port)", output.name, chosen)
    else:
        log.info("opened MIDI output %s connected to %r (%s)", output.name, output.connected_to, chosen)
    return output


def _open_on(port: Any, backend: str, connect_to: str | None, client_name: str, port_name: str) -> MidiOutput:
    try:
        if connect_to is None:
            port.open_virtual_port(port_name)
            return MidiOutput(port, own_port_name(client_name, port_name), backend, client_name=client_name, port_name=port_name)

        available = port.get_ports()
        index = find_port(connect_to, available, "output")
        target = available[index]
        port.open_port(index, name=port_name)
    except rtmidi.RtMidiError as error:
        raise MidiSystemError(f"opening MIDI output {port_name!r} with {backend} failed: {error}") from error

    wait_for_connection(backend)
    own_port_visible = backend in ("alsa", "jack")
    name = own_port_name(client_name, port_name) if own_port_visible else target
    return MidiOutput(port, name, backend, connected_to=target, client_name=client_name, port_name=port_name)


def wait_for_connection(backend: str) -> None:
    """Wait until a connection just made under JACK carries messages (see JACK_SETTLE_TIME)."""
    if backend == "jack":
        time.sleep(JACK_SETTLE_TIME)


def new_rtmidi_port(port_class: type, backend: str, client_name: str, **options: Any) -> Any:
    """Create an rtmidi MidiIn or MidiOut on `backend`; under ALSA its library's messages are logged.

    `options` go to the constructor as they are (MidiIn takes `queue_size_limit`).
    """
    if backend == "alsa":
        silence_alsa()
    try:
        return port_class(_RTMIDI_APIS[backend], name=client_name, **options)
    except rtmidi.RtMidiError as error:
        raise MidiSystemError(f"creating a {backend} MIDI client {client_name!r} failed: {error}") from error


def list_ports(backend: str = "auto") -> tuple[list[str], list[str]]:
    """Return (inputs, outputs): the ports sideman can read from and the ports it can send to.

    As in mido, inputs are the ports that send MIDI (`sideman:out` is one),
    and outputs the ports that receive it (what `--midi-out NAME` takes).
    """
    chosen = probe_backend(backend)
    client_name = "sideman-ports"

    reader = new_rtmidi_port(rtmidi.MidiIn, chosen, client_name)
    try:
        inputs = reader.get_ports()
    finally:
        reader.delete()

    writer = new_rtmidi_port(rtmidi.MidiOut, chosen, client_name)
    try:
        outputs = writer.get_ports()
    finally:
        writer.delete()
    return inputs, outputs
