"""The `run` command's lifecycle: start up, play until a signal or `--duration`, shut down cleanly.

Start-up order: sampler chain, seeder, CC map, model, improviser, the
`--record` path check, MIDI output, engine, OSC server, the engine's first
note, and the MIDI input. Shutdown runs the other way: the MIDI input closes
first, so no note passed through by MIDI thru follows the engine's All Notes
Off. Any failure before play (a missing model, no MIDI system, an OSC
port in use) raises a SidemanError that the CLI prints as one line.

SIGINT and SIGTERM end the run cleanly, with exit code 0: the engine sends
every pending note_off and All Notes Off on its channel and writes the
`--record` file, then the OSC server stops and the MIDI port closes. SIGHUP
reads the settings again and applies what can change during play
(sideman.reload).
`/sideman/stop` only stops playing; the daemon keeps running until a signal.
This module imports no TensorFlow: the engine steps the model with numpy.
"""

import faulthandler
import logging
import queue
import signal
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, TextIO

from sideman.config.schema import Settings

from .errors import MidiSystemError, SettingsError, SidemanError
from .outfiles import check_output_path

if TYPE_CHECKING:
    from .ccmap import CcMap
    from .clockfollow import ClockFollower
    from .engine import Engine, MessageOutput, NoteEvent
    from .improviser import Improviser
    from .portkeeper import KeptInput, KeptOutput
    from .seeding import Seeder
    from .sharedoutput import SharedOutput

logger = logging.getLogger(__name__)

# Seconds the engine may take to release its notes and stop its thread.
SHUTDOWN_TIMEOUT = 2.0
# Seconds between checks that the engine thread is still playing.
ENGINE_CHECK_INTERVAL = 0.25
# Seconds into a shutdown after which every thread's stack goes to stderr. Each
# step of a shutdown is bounded by a few seconds, so one still running then hangs.
SHUTDOWN_STACKS_AFTER = 8.0
SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# SIGHUP reloads the settings file; Windows has no SIGHUP.
RELOAD_SIGNAL = getattr(signal, "SIGHUP", None)


@dataclass(frozen=True)
class RunOptions:
    """The options of `run` that are not settings: they apply to this run only."""

    # MIDI file that receives every message sent, written by the engine at shutdown; None records nothing.
    record: str | None = None
    # Seconds to play before shutting down; None plays until a signal.
    duration: float | None = None
    # Print each note on stdout as it sounds.
    show: bool = False


def run_daemon(
    settings: Settings,
    samplers: dict[str, type],
    options: RunOptions,
    seeders: dict[str, type] | None = None,
    load_settings: Callable[[], Settings] | None = None,
) -> int:
    """Run the daemon with validated `settings` until SIGINT, SIGTERM or `options.duration`; return the exit code.

    `seeders` defaults to the installed ones; `settings.run.seeder` seeds the model before play starts.
    `load_settings` reads the settings again, as at start-up; SIGHUP calls it (sideman.reload).
    """
    from .bundle import load_bundle
    from .improviser import Improviser
    from .registry import load_seeders
    from .sampling import build_chain
    from .seeding import apply_seeder, build_seeder

    seeders = load_seeders() if seeders is None else seeders
    logger.info("samplers installed: %s; seeders installed: %s", ", ".join(sorted(samplers)) or "none", ", ".join(sorted(seeders)) or "none")
    chain = build_chain(settings.run.sampler, samplers, settings.plugins)
    seeder = build_seeder(settings.run.seeder, seeders, settings.plugins)
    cc_map = _build_cc_map(settings, samplers, seeders)
    _check_input_use(settings, seeder, cc_map)
    bundle = load_bundle(settings.run.model)
    logger.info("loaded model %s (n_a = %d, %d tokens)", bundle.path, bundle.n_a, len(bundle.vocabulary))
    improviser = Improviser(bundle, chain, settings.run.seed)
    apply_seeder(seeder, improviser)

    if options.record is not None:
        check_output_path(options.record, "recording")

    shutdown_requested = threading.Event()
    reload_requested = threading.Event()
    _dump_stacks_on_sigusr1()
    with shutdown_signals(shutdown_requested, reload_requested), ExitStack() as resources:
        # Registered first, so it runs last, once every resource has closed.
        resources.callback(faulthandler.cancel_dump_traceback_later)
        engine, outputs = _create_engine(settings, samplers, seeders, improviser, seeder, options, resources)
        output = outputs[0]
        # OSC listens before the first note, so a port in use stops start-up in silence.
        _start_osc(settings, engine, samplers, seeders, resources)
        engine.start_thread()
        inputs = _open_midi_input(settings, engine, output, cc_map, resources) if settings.midi.listen else []
        _keep_ports(settings, outputs, inputs, resources)
        # Registered last, so it runs first: the notes are released while the
        # ports, the port keeper and the OSC server are all still open.
        resources.callback(engine.shutdown, SHUTDOWN_TIMEOUT)
        logger.info("sideman is running; stop it with Ctrl-C or SIGTERM, reload the settings with SIGHUP")
        reloader = _Reloader(settings, load_settings, engine, reload_requested)
        try:
            _wait_for_end(shutdown_requested, engine, options.duration, reloader)
        finally:
            _dump_stacks_if_shutdown_hangs()

    if engine.failure is not None:
        raise SidemanError(f"playing stopped because of an error: {engine.failure}") from engine.failure
    logger.info("sideman stopped")
    return 0


def _dump_stacks_on_sigusr1() -> None:
    """Have faulthandler write every thread's stack to stderr on SIGUSR1, so that a daemon stuck in a library call shows where.

    Only the main thread installs it, as with the other signal handlers, and
    only where SIGUSR1 exists (not on Windows).
    """
    stderr = sys.__stderr__
    if stderr is None or not hasattr(signal, "SIGUSR1") or threading.current_thread() is not threading.main_thread():
        return
    try:
        faulthandler.register(signal.SIGUSR1, file=stderr, all_threads=True)
    except (ValueError, OSError, RuntimeError) as error:
        logger.debug("no thread stacks on SIGUSR1: %s", error)


def _dump_stacks_if_shutdown_hangs() -> None:
    """Have faulthandler write every thread's stack to stderr if the process still runs SHUTDOWN_STACKS_AFTER seconds from now."""
    stderr = sys.__stderr__
    if stderr is None:  # pythonw on Windows has no stderr
        return
    try:
        faulthandler.dump_traceback_later(SHUTDOWN_STACKS_AFTER, exit=False, file=stderr)
    except (ValueError, OSError) as error:
        logger.debug("no thread stacks for a hung shutdown: %s", error)


class _Reloader:
    """Reload the settings when SIGHUP has set `requested`, from the main thread."""

    def __init__(self, settings: Settings, load: Callable[[], Settings] | None, engine: "Engine", requested: threading.Event):
        self.settings = settings
        self._load = load
        self._engine = engine
        self._requested = requested

    def __call__(self) -> None:
        if not self._requested.is_set():
            return
        self._requested.clear()
        if self._load is None:
            logger.warning("SIGHUP ignored: this run has no settings to reload")
            return

        from .reload import reload_settings

        self.settings = reload_settings(self.settings, self._load, self._engine.apply)


def _wait_for_end(shutdown_requested: threading.Event, engine: "Engine", duration: float | None, reloader: Callable[[], None] = lambda: None) -> None:
    """Return on a shutdown signal, when `duration` seconds have passed, or when the engine thread failed; reload on SIGHUP."""
    end = None if duration is None else time.monotonic() + duration
    while True:
        reloader()
        timeout = ENGINE_CHECK_INTERVAL if end is None else min(ENGINE_CHECK_INTERVAL, max(0.0, end - time.monotonic()))
        if shutdown_requested.wait(timeout):
            logger.info("shutting down")
            return
        if engine.failure is not None:
            logger.error("the engine stopped because of an error: shutting down")
            return
        if end is not None and time.monotonic() >= end:
            logger.info("played for %g s (--duration): shutting down", duration)
            return


def _close_output(output: "SharedOutput") -> None:
    """Release what still sounds, then close the output's current port (the port keeper may have replaced it).

    The engine has released its own notes by then. A note the MIDI input
    passed through (thru) after that would otherwise stay on.
    """
    released = output.release_sounding()
    if released:
        logger.info("released %d notes still sounding on %s before closing it", released, output.name)
    output.port.close()


def _build_cc_map(settings: Settings, samplers: dict[str, type], seeders: dict[str, type]) -> "CcMap":
    from .ccmap import parse_cc_map

    source = ", ".join(sorted(set(settings.cc_sources.values()))) or "settings"
    cc_map = parse_cc_map(settings.cc, samplers, seeders, source)
    for line in cc_map.describe():
        logger.info("MIDI CC control: %s", line)
    return cc_map


def _check_input_use(settings: Settings, seeder: "Seeder", cc_map: "CcMap") -> None:
    """Stop a listening seeder without a MIDI input, and warn about CC mappings that nothing reads."""
    if settings.midi.listen:
        return
    if getattr(seeder, "listens", False):
        raise SettingsError(f"seeder {seeder.name!r} listens to the MIDI input, but --no-midi-in (midi.listen = false) opens none")
    if cc_map:
        logger.warning("[cc] mappings have no effect: --no-midi-in (midi.listen = false) opens no MIDI input")


def _create_engine(
    settings: Settings, samplers: dict[str, type], seeders: dict[str, type], improviser: "Improviser", seeder: "Seeder", options: RunOptions, resources: ExitStack,
) -> tuple["Engine", list["SharedOutput"]]:
    """Open the MIDI output and create the engine, not yet started; register their shutdown on `resources`.

    `resources` closes in reverse order: the engine releases its notes and
    writes the recording first, then the port closes.
    """
    from sideman.config.schema import beats_per_bar

    from .clock import MonotonicClock
    from .engine import Engine
    from .feel import Feel
    from .midiport import open_output
    from .recorder import Recorder
    from .sharedoutput import SharedOutput

    port = open_output(settings.midi.backend, connect_to=settings.midi.out or None, client_name="sideman", port_name="out")
    clock = MonotonicClock()
    # The engine and the MIDI input (thru) both send, and the input recognises our own notes by what was sent.
    output = SharedOutput(port, clock)
    resources.callback(_close_output, output)
    clock_output = _open_clock_output(settings, output, resources)

    recorder = Recorder(options.record) if options.record is not None else None
    printer = None
    if options.show:
        printer = QueuedNotePrinter(NotePrinter(sys.stdout))
        printer.start()
        resources.callback(printer.close)

    engine = Engine(
        improviser,
        output,
        clock,
        tempo=settings.run.tempo,
        gate=settings.run.gate,
        velocity=settings.run.velocity,
        channel=settings.run.channel - 1,
        # Following a clock, play starts with the clock's Start, not at once; on
        # Link, with the session's first poll or its transport.
        autoplay=settings.run.autoplay and settings.run.sync not in ("midi-in", "link"),
        registry=samplers,
        seeders=seeders,
        params=settings.plugins,
        on_note=printer,
        recorder=recorder,
        model_name=improviser.bundle.metadata.get("name") or improviser.bundle.path,
        beats_per_bar=beats_per_bar(settings.run.meter),
        seeder=seeder,
        clock_output=clock_output,
        follower=_clock_follower(settings),
        sync=settings.run.sync,
        sync_autostart=settings.run.sync_autostart,
        clock_input=settings.midi.listen,
        link_factory=_link_factory(settings),
        feel=Feel.from_values(
            {name: getattr(settings.run, name) for name in ("swing", "swing_unit", "humanize_ms", "humanize_velocity", "latency_ms")},
            seed=settings.run.seed,
        ),
    )
    resources.callback(engine.shutdown, SHUTDOWN_TIMEOUT)
    outputs = [output] if clock_output is output else [output, clock_output]
    return engine, outputs


def _clock_follower(settings: Settings) -> "ClockFollower | None":
    from sideman.config.schema import beats_per_bar

    from .clockfollow import ClockFollower

    if settings.run.sync != "midi-in":
        return None
    source = settings.midi.clock_in or ("sideman-in:in" if not settings.midi.input else settings.midi.input)
    logger.info("following the MIDI clock from %s; play starts with its Start%s", source, " or its first pulse" if settings.run.sync_autostart else "")
    return ClockFollower(beats_per_bar(settings.run.meter), settings.run.sync_autostart, fallback_bpm=settings.run.tempo)


def _open_clock_output(settings: Settings, output: "SharedOutput", resources: ExitStack) -> "SharedOutput":
    """Return where MIDI clock goes as clock master (now or after /sideman/sync master): the output port, or a port of its own with --clock-out."""
    from .midiport import open_output
    from .sharedoutput import SharedOutput

    if not settings.midi.clock_out:
        if settings.run.sync == "master":
            logger.info("clock master: MIDI clock goes out with the notes on %s", output.name)
        return output

    clock_port = SharedOutput(open_output(settings.midi.backend, connect_to=settings.midi.clock_out, client_name="sideman-clock", port_name="out"), output.clock)
    resources.callback(lambda: clock_port.port.close())
    logger.info("MIDI clock goes to %s whenever sync is master", clock_port.port.connected_to)
    return clock_port


def _link_factory(settings: Settings) -> "Callable[[float, float], Any] | None":
    """Return what joins a Link session for --sync link or /sideman/sync link, or None where aalink is not installed."""
    from importlib.util import find_spec

    if find_spec("aalink") is None:
        return None

    def join(bpm: float, beats_per_bar: float) -> Any:
        from .link import LinkSync

        link = LinkSync(bpm, beats_per_bar, settings.run.link_start_stop)
        link.enable()
        return link

    return join


def _open_midi_input(settings: Settings, engine: "Engine", output: "SharedOutput", cc_map: "CcMap", resources: ExitStack) -> list["KeptInput"]:
    """Open the MIDI inputs with a router that feeds the engine; registered last on `resources`, they close first."""
    from .inputrouter import InputRouter
    from .midiinput import INPUT_COUNTS, open_input
    from .portkeeper import KeptInput

    if sys.platform == "win32" and settings.midi.backend in ("auto", "winmm") and not settings.midi.input:
        logger.warning("no MIDI input: Windows has no virtual MIDI ports; name one with --midi-in NAME (a loopMIDI port) for live notes and CC control")
        return []

    router = InputRouter(engine, output, output.clock, cc_map)
    inputs = []
    for client_name, connect_to in (("sideman-in", settings.midi.input), ("sideman-clock-in", settings.midi.clock_in)):
        if client_name == "sideman-clock-in" and not connect_to:
            continue
        midi_input = open_input(settings.midi.backend, connect_to=connect_to or None, client_name=client_name, port_name="in", on_message=router)

        def reopen(backend: str = midi_input.backend, client_name: str = client_name) -> Any:
            # After a JACK server restart, a virtual port: the port keeper connects it to its source again.
            return open_input(backend, client_name=client_name, port_name="in", on_message=router)

        def open_on(full_name: str, backend: str = midi_input.backend, client_name: str = client_name) -> Any:
            return open_input(backend, connect_to=full_name, client_name=client_name, port_name="in", on_message=router)

        kept_input = KeptInput(midi_input, reopen, open_on, requested=connect_to or None)
        resources.callback(kept_input.close)
        inputs.append(kept_input)

    def input_status() -> dict[str, int]:
        counts = [kept_input.counts() for kept_input in inputs]
        status = {f"input_{key}": sum(each[key] for each in counts) for key in INPUT_COUNTS}
        status["input_rate_limited"] = router.rate_limited
        return status

    engine.add_status_source(input_status)
    return inputs


def _keep_ports(settings: Settings, outputs: list["SharedOutput"], inputs: list["KeptInput"], resources: ExitStack) -> None:
    """Start the port keeper: it restores lost connections, and under JACK reopens the ports after a server restart."""
    from .portkeeper import KeptConnection, PortKeeper
    from .portlist import listing_port_keeper
    from .sendbudget import SendBudget

    backends = {getattr(shared.port, "backend", None) for shared in outputs} | {kept_input.backend for kept_input in inputs}
    if len(backends) != 1 or not backends <= {"jack", "alsa", "coremidi", "winmm"}:
        return
    backend = backends.pop()
    # The names the musician gave for the outputs, which find a port that returns under another name.
    requested = [settings.midi.out or None, settings.midi.clock_out or None]
    kept_outputs = [_kept_output(shared, name) for shared, name in zip(outputs, requested)]

    if backend != "jack":
        keeper = listing_port_keeper(backend, [*kept_outputs, *inputs])
        if keeper is None:
            logger.debug("no MIDI port is connected by name: the %s ports need no keeping", backend)
            return
    else:
        connections = []
        for kept_output in kept_outputs:
            if kept_output.connected_to:
                # When the synth goes away, its notes are released and nothing is sent until it returns, so
                # that a returning synth gets no note_off without its note_on (the drops are counted).
                connections.append(KeptConnection(kept_output.name, kept_output.connected_to,
                                                  on_missing=kept_output.on_missing, on_restored=kept_output.on_restored))
        for kept_input in inputs:
            if kept_input.connected_to:
                connections.append(KeptConnection(kept_input.connected_to, kept_input.name))
        keeper = PortKeeper([*kept_outputs, *inputs], connections)

    try:
        keeper.start()
    except MidiSystemError as error:
        logger.warning("lost MIDI ports will not be reopened: %s", error)
        return
    resources.callback(keeper.close)
    if backend == "jack":
        for shared in outputs:
            # A stalled server must not make python-rtmidi freeze the daemon: drop instead.
            shared.set_send_guard(SendBudget(keeper.current_watch).allows)


def _kept_output(shared: "SharedOutput", requested: str | None) -> "KeptOutput":
    """Return the output as the port keeper keeps it: reopened as a virtual port after a JACK restart, or on a port by name."""
    from .midiport import open_output
    from .portkeeper import KeptOutput

    port = shared.port
    backend, client_name, port_name = port.backend, port.client_name, port.port_name

    def reopen() -> Any:
        # After a JACK server restart: the keeper connects the new port to its destination again.
        return open_output(backend, client_name=client_name, port_name=port_name)

    def open_on(full_name: str) -> Any:
        return open_output(backend, connect_to=full_name, client_name=client_name, port_name=port_name)

    return KeptOutput(shared, reopen, open_on, requested)


def _start_osc(settings: Settings, engine: "Engine", samplers: dict[str, type], seeders: dict[str, type], resources: ExitStack) -> None:
    """Start the OSC server with the settings' allowlist and files directory; raise SettingsError for an invalid one."""
    from .osc import OscServer
    from .osc_access import Allowlist, OscFiles
    from .registry import all_plugins

    # The engine's plugins, from which OSC learns which of their parameters are file paths.
    server = OscServer(engine, settings.osc.host, settings.osc.port, allowlist=Allowlist.parse(settings.osc.allow),
                       files=OscFiles(settings.osc.files or None), plugins=all_plugins(samplers, seeders))
    try:
        server.start()
    except OSError as error:
        raise SidemanError(f"{error.strerror or error} (--osc-port 0 picks a free port)") from error
    resources.callback(server.close)


@contextmanager
def shutdown_signals(shutdown_requested: threading.Event, reload_requested: threading.Event | None = None) -> Iterator[None]:
    """Make SIGINT and SIGTERM set `shutdown_requested` instead of killing the process, and SIGHUP set `reload_requested`.

    The old handlers come back on exit.

    Outside the main thread Python cannot install signal handlers, so there
    this does nothing and the caller relies on its own stop condition.
    """
    if threading.current_thread() is not threading.main_thread():
        logger.debug("not in the main thread: SIGINT and SIGTERM keep their handlers")
        yield
        return

    def request_shutdown(signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if shutdown_requested.is_set():
            logger.info("received %s again: already shutting down", name)
            return
        logger.info("received %s", name)
        shutdown_requested.set()

    def request_reload(signum: int, frame) -> None:
        logger.info("received SIGHUP: reloading the settings")
        # The main loop checks it every ENGINE_CHECK_INTERVAL seconds.
        reload_requested.set()

    previous = {signum: signal.signal(signum, request_shutdown) for signum in SHUTDOWN_SIGNALS}
    if reload_requested is not None and RELOAD_SIGNAL is not None:
        previous[RELOAD_SIGNAL] = signal.signal(RELOAD_SIGNAL, request_reload)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class NotePrinter:
    """The `--show` output: one line per note as it sounds, e.g. `  12.250 s  F#4   0.50 beats`.

    Times are seconds since play first started. This is CLI output, so it
    goes to `stream` (stdout), never to the log.
    """

    def __init__(self, stream: TextIO):
        self.stream = stream

    def __call__(self, event: "NoteEvent") -> None:
        line = f"{event.seconds:8.3f} s  {event.name:<4} {event.beats:5.2f} beats\n"
        try:
            self.stream.write(line)
            self.stream.flush()
        except (OSError, ValueError) as error:
            # A closed pipe (`sideman run --show | head`) must not stop the music.
            logger.debug("could not print a note: %s", error)


class QueuedNotePrinter:
    """Hand notes to a NotePrinter on a thread of its own, so a blocked stdout never stalls the clock.

    `sideman run --show | less` with the pager paused fills the pipe, and a
    write on the engine thread would then hold back every note_off. Events
    beyond `max_pending` are dropped and counted instead.
    """

    def __init__(self, printer: NotePrinter, max_pending: int = 1024):
        self._printer = printer
        self._events: queue.Queue = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._print_events, name="sideman-show", daemon=True)
        self.dropped = 0

    def start(self) -> None:
        self._thread.start()

    def __call__(self, event: "NoteEvent") -> None:
        try:
            self._events.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 1.0) -> None:
        """Print what is queued, within `timeout` seconds, and stop the thread."""
        try:
            self._events.put(None, timeout=timeout)
        except queue.Full:
            logger.warning("--show output is blocked; %d queued notes not printed", self._events.qsize())
            return
        self._thread.join(timeout)
        if self.dropped:
            logger.warning("--show output could not keep up: %d notes not printed", self.dropped)

    def _print_events(self) -> None:
        while True:
            event = self._events.get()
            if event is None:
                return
            self._printer(event)
