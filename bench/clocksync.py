"""Clock sync: how closely sideman follows a MIDI clock, and how evenly it sends one, at 120 BPM on a private JACK server.

Follow mode: `sideman run --sync midi-in` plays into a receiver in this
process while a sender here feeds `sideman-in:in` with Start and 24 pulses
per quarter note. The clock runs once steady and once with every pulse
moved by a seeded uniform random offset of up to +-2 ms. The built-in
model plays on a 1/12-beat grid, so every onset falls on a pulse (1/24
beat). The ideal time of an onset is the unjittered pulse time nearest to
it once the run's median latency is removed, and its error is arrival -
ideal - that median.

Master mode: `sideman run --sync master` sends its clock into the receiver,
which stamps every pulse. Each interval is compared with 60 / (120 * 24) s,
and the pulses between two notes are counted against the beats between them.
"""

import logging
import math
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np

from bench.live import DaemonRun, osc_datagram
from bench.onsets import snap_to_grid
from bench.report import Row, Section, latency_row, write_quantiles_csv, write_rows_csv
from sideman.midiclock import PULSES_PER_BEAT
from sideman.notenames import pitch_name
from tests.jack import Sender, wait_for_port

log = logging.getLogger(__name__)

BPM = 120.0
PULSE_INTERVAL = 60.0 / (BPM * PULSES_PER_BEAT)  # seconds: 20.83 ms
STEPS_PER_BEAT = 12  # the built-in model's grid
TEMPERATURE = 0.7  # the onset benchmark's setting: mostly sixteenths and shorter notes
JITTER = 0.002  # seconds: largest offset of a jittered pulse, uniform in +-JITTER
JITTER_SEED = 0
# Onsets in the first 2 beats after Start are left out: the follower's
# least-squares window (2 beats of pulses) is still filling.
WARM_UP_PULSES = 2 * PULSES_PER_BEAT
FULL_SECONDS = 60.0  # seconds of play per run in full mode
QUICK_SECONDS = 6.0
INPUT_PORT = "sideman-in:in"
SPIN_BEFORE = 0.001  # seconds before a pulse's deadline at which the sender stops sleeping and spins
LEAD_IN = 0.05  # seconds from starting the sender thread to its first pulse
PORT_TIMEOUT = 30.0  # seconds for the daemon to open its MIDI input
HEARD_TIMEOUT = 20.0  # seconds for the daemon to report a tempo measured from the pulses
RECONNECT_AFTER = 2.0  # seconds without a measured tempo before the sender connects again
STOP_TIMEOUT = 5.0  # seconds for Stop to arrive after /sideman/stop

CLOCK = mido.Message("clock")
START = mido.Message("start")


# Pure computation: matching onsets to pulses, pulse spacing, pulses per beat.

@dataclass
class PulseMatch:
    """Onsets matched to the nearest ideal pulse once the median latency is removed."""

    pulses: np.ndarray  # index of each kept onset's pulse, counted from the first pulse after Start (beat 0)
    errors_ms: np.ndarray  # arrival - ideal pulse time - latency, in ms
    latency: float  # seconds: median of arrival - ideal pulse time over the kept onsets


def circular_mean_phase(phases: np.ndarray) -> float:
    """Return the mean fractional part of `phases` (in pulses) as a number in [-0.5, 0.5], wrapping around whole pulses.

    A plain mean fails when the phases straddle a whole pulse, because 0.98
    and 0.02 average to 0.5, not 0. The mean of the angles on the unit circle does not.
    """
    angles = 2.0 * math.pi * phases
    return math.atan2(float(np.mean(np.sin(angles))), float(np.mean(np.cos(angles)))) / (2.0 * math.pi)


def _offsets_from_nearest_pulses(arrivals: np.ndarray, first_pulse_time: float, interval: float, latency: float, skip_pulses: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the nearest pulse index of each arrival after removing `latency`, and arrival - that pulse's ideal time, for pulses >= `skip_pulses`."""
    pulses = np.rint((arrivals - latency - first_pulse_time) / interval).astype(np.int64)
    kept = pulses >= skip_pulses
    return pulses[kept], arrivals[kept] - (first_pulse_time + pulses[kept] * interval)


def match_nearest_pulses(arrivals: Sequence[float] | np.ndarray, first_pulse_time: float, interval: float, skip_pulses: int = 0) -> PulseMatch:
    """Match each arrival to the ideal pulse nearest to it once the median latency is removed; return the errors around that median.

    Pulse n is ideally at `first_pulse_time` + n * `interval` (seconds, the
    clock of `arrivals`). The latency is known only to a whole number of
    pulses: the first pass takes its fraction of a pulse from the circular
    mean of the phases, the second the median offset of the first pass's
    matches. A latency of more than half an interval therefore matches
    every onset one pulse early and reports the latency one interval
    smaller, but the errors are the same. Onsets matched to a pulse before
    `skip_pulses` are left out, from the median too.
    """
    arrivals = np.asarray(arrivals, dtype=np.float64)
    if arrivals.size == 0:
        return PulseMatch(np.empty(0, dtype=np.int64), np.empty(0), math.nan)

    rough_latency = circular_mean_phase((arrivals - first_pulse_time) / interval) * interval
    _, offsets = _offsets_from_nearest_pulses(arrivals, first_pulse_time, interval, rough_latency, skip_pulses)
    if offsets.size == 0:
        return PulseMatch(np.empty(0, dtype=np.int64), np.empty(0), math.nan)

    pulses, offsets = _offsets_from_nearest_pulses(arrivals, first_pulse_time, interval, float(np.median(offsets)), skip_pulses)
    latency = float(np.median(offsets))
    return PulseMatch(pulses, (offsets - latency) * 1000.0, latency)


def spacing_errors_ms(pulse_times: Sequence[float] | np.ndarray, interval: float) -> np.ndarray:
    """Return each interval between consecutive pulses minus `interval`, in ms."""
    return (np.diff(np.asarray(pulse_times, dtype=np.float64)) - interval) * 1000.0


def pulses_per_beat(kinds: Sequence[str], note_beats: Sequence[float]) -> tuple[int, float]:
    """Count the pulses that arrived between the first and the last note_on; return them and the beats between those notes.

    `kinds` lists the messages in arrival order ("clock", "note_on" or
    anything else, ignored). `note_beats` contains the beat of each note_on
    in order, and may be shorter than the note_ons in `kinds`: the notes
    after it are left out. A leader that sends the pulse of a beat before a
    note at that beat, as the engine does, gives 24 pulses per beat exactly.
    """
    pulses_before_notes = []
    pulses = 0
    for kind in kinds:
        if kind == "clock":
            pulses += 1
        elif kind == "note_on":
            pulses_before_notes.append(pulses)

    notes = min(len(pulses_before_notes), len(note_beats))
    if notes < 2:
        raise ValueError(f"cannot count pulses per beat from {notes} notes: expected at least 2")
    beats = note_beats[notes - 1] - note_beats[0]
    if beats <= 0:
        raise ValueError(f"cannot count pulses per beat: the last note at beat {note_beats[notes - 1]:g} is not after the first at beat {note_beats[0]:g}")
    return pulses_before_notes[notes - 1] - pulses_before_notes[0], beats


# The clock sent into the daemon.

class PulseSender:
    """A thread that sends MIDI clock through `sender` from absolute deadlines, and Start before the first pulse after `request_start`.

    Pulse n is due at origin + n * `interval` (time.perf_counter), moved by a
    uniform random offset in +-`jitter` seconds from a generator seeded with
    `seed`. The thread sleeps until SPIN_BEFORE before each deadline and then
    spins, releasing the GIL on each turn, so that the receiver's reader
    thread is never held up for long. `ideal_times` and `sent_times` contain the
    unjittered deadline and the time.perf_counter() just before the send of
    every pulse; read them after `stop`.
    """

    def __init__(self, sender: Sender, interval: float, jitter: float, seed: int) -> None:
        self._sender = sender
        self._interval = interval
        self._jitter = jitter
        self._seed = seed
        self.ideal_times: list[float] = []
        self.sent_times: list[float] = []
        self.start_pulse: int | None = None  # index of the first pulse after Start: beat 0
        self._start_requested = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clock-pulses", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request_start(self) -> None:
        """Send Start right before the next pulse."""
        self._start_requested.set()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        rng = np.random.default_rng(self._seed)
        origin = time.perf_counter() + LEAD_IN
        index = 0
        while True:
            ideal = origin + index * self._interval
            offset = rng.uniform(-self._jitter, self._jitter) if self._jitter > 0 else 0.0
            if not self._wait_until(ideal + offset):
                return

            if self.start_pulse is None and self._start_requested.is_set():
                self._sender.send(START)
                self.start_pulse = index
            sent = time.perf_counter()
            self._sender.send(CLOCK)
            self.ideal_times.append(ideal)
            self.sent_times.append(sent)
            index += 1

    def _wait_until(self, deadline: float) -> bool:
        """Wait until `deadline` on time.perf_counter; return False when stopped meanwhile."""
        pause = deadline - SPIN_BEFORE - time.perf_counter()
        if pause > 0 and self._stopped.wait(pause):
            return False
        while time.perf_counter() < deadline:
            time.sleep(0)  # releases the GIL
        return not self._stopped.is_set()


# Follow mode.

@dataclass
class FollowResult:
    name: str  # "steady" or "jittered"
    jitter: float  # seconds, largest pulse offset
    match: PulseMatch  # from the receiver's JACK-stamped times
    reader_latency: float  # seconds: the median latency on the times the receiver's reader thread took the notes (time.perf_counter)
    notes_received: int  # every note_on before the daemon was stopped, those of the first 2 beats included
    sent_errors_ms: np.ndarray  # ms: sent - ideal of every pulse from beat 2 until the daemon was stopped
    status: dict


def daemon_arguments(sync: str, model: str | None) -> list[str]:
    arguments = ["--sync", sync, "--tempo", f"{BPM:g}", "--param", f"temperature.value={TEMPERATURE:g}", "--log-level", "info"]
    return arguments + ["--model", model] if model else arguments


def connect_to_input(run: DaemonRun) -> Sender:
    """Wait for the daemon's MIDI input port and open a Sender connected to it."""
    try:
        wait_for_port(INPUT_PORT, PORT_TIMEOUT)
    except AssertionError as error:
        raise RuntimeError(f"{run.label}: the daemon opened no port {INPUT_PORT} within {PORT_TIMEOUT:g} s ({error}); daemon log {run.log_path}:\n{run.log_tail()}") from error
    return Sender(INPUT_PORT)


def wait_until_heard(run: DaemonRun, sender: Sender) -> None:
    """Wait until /sideman/status reports a tempo measured from the pulses, connecting the sender again every few seconds.

    A connection made while the daemon's input client was still starting up
    can come to nothing, so the sender connects again when nothing is heard.
    """
    deadline = time.monotonic() + HEARD_TIMEOUT
    connected = time.monotonic()
    while time.monotonic() < deadline:
        if run.process.poll() is not None:
            break
        try:
            if float(run.status().get("clock_bpm", 0.0)) > 0:
                return
        except TimeoutError:
            log.info("%s: no reply to /sideman/status yet", run.label)
        if time.monotonic() - connected > RECONNECT_AFTER:
            log.info("%s: the daemon measured no tempo from the pulses yet; connecting %s to %s again", run.label, sender.port_name, INPUT_PORT)
            sender.reconnect()
            connected = time.monotonic()
        time.sleep(0.1)
    raise RuntimeError(f"{run.label}: the daemon measured no tempo from the pulses within {HEARD_TIMEOUT:g} s; daemon log {run.log_path}:\n{run.log_tail()}")


def run_follow(name: str, jitter: float, seconds: float, workdir: Path, model: str | None) -> FollowResult:
    """Play `seconds` after Start, following a clock sent from this process; match every onset to its pulse."""
    sender = None
    pulses = None
    try:
        with DaemonRun(workdir, f"clock-follow-{name}", daemon_arguments("midi-in", model)) as run:
            sender = connect_to_input(run)
            pulses = PulseSender(sender, PULSE_INTERVAL, jitter, JITTER_SEED)
            pulses.start()
            wait_until_heard(run, sender)
            pulses.request_start()
            run.wait_for_first_note()
            time.sleep(seconds)
            status = run.status()
            stopping = time.perf_counter()
    finally:
        if pulses is not None:
            pulses.stop()
        # Closed only now: when a port connected to an input closes, JACK drops
        # that cycle's events from every source of the input
        # ("MidiBufferMixdown - invalid source buffer").
        if sender is not None:
            sender.close()

    if pulses.start_pulse is None:
        raise RuntimeError(f"{run.label}: Start was never sent")
    # Only what happened before the daemon's SIGTERM counts, because a note
    # played during its shutdown follows no pulse, and a pulse sent then may
    # wait for the GIL while the receiver closes.
    first_pulse_time = pulses.ideal_times[pulses.start_pulse]
    received = [note for note in run.receiver.note_on_times() if note[2] < stopping]
    match = match_nearest_pulses([jack for _, jack, _ in received], first_pulse_time, PULSE_INTERVAL, WARM_UP_PULSES)
    reader_match = match_nearest_pulses([wall for _, _, wall in received], first_pulse_time, PULSE_INTERVAL, WARM_UP_PULSES)
    if match.pulses.size == 0:
        raise RuntimeError(f"{run.label}: no note_on arrived after beat 2; daemon log {run.log_path}:\n{run.log_tail()}")

    after_warm_up = pulses.start_pulse + WARM_UP_PULSES
    sent_times = np.array(pulses.sent_times[after_warm_up:])
    ideal_times = np.array(pulses.ideal_times[after_warm_up:])
    sent_errors = (sent_times[sent_times < stopping] - ideal_times[sent_times < stopping]) * 1000.0
    log.info("clock sync, follow %s: %d notes, median latency %.2f ms on the receiver's reader times, late onsets %s",
             name, match.pulses.size, reader_match.latency * 1000.0, status.get("late_onsets"))
    return FollowResult(name, jitter, match, reader_match.latency, len(received), sent_errors, status)


# Master mode.

@dataclass
class MasterResult:
    spacing_errors_ms: np.ndarray
    pulses_received: int
    pulses_counted: int  # pulses between the first and the last note compared with the --show output
    beats_counted: float  # beats between those notes
    starts: int  # Start messages received
    stops: int  # Stop messages received
    start_before_pulses: bool  # the first Start came before the first pulse
    stop_after_pulses: bool  # the last Stop came after the last pulse
    names_mismatched: int  # note_ons whose pitch differs from the shown note
    status: dict

    @property
    def per_beat(self) -> float:
        return self.pulses_counted / self.beats_counted


def send_osc(port: int, address: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.sendto(osc_datagram(address), ("127.0.0.1", port))


def message_kind(message: mido.Message) -> str:
    """Return the message's type, with a note_on of velocity 0 counted as the note_off it is."""
    if message.type == "note_on" and message.velocity == 0:
        return "note_off"
    return message.type


def run_master(seconds: float, workdir: Path, model: str | None) -> MasterResult:
    """Play `seconds` as the clock master, stop over OSC, and check the pulses, Start and Stop that arrived."""
    with DaemonRun(workdir, "clock-master", daemon_arguments("master", model)) as run:
        run.wait_for_first_note()
        time.sleep(seconds)
        send_osc(run.osc_port, "/sideman/stop")
        try:
            run.receiver.wait_for(lambda messages: any(message.type == "stop" for message in messages), STOP_TIMEOUT)
        except AssertionError:
            log.warning("%s: no Stop arrived within %g s of /sideman/stop", run.label, STOP_TIMEOUT)
        status = run.status()

    messages = run.receiver.messages()
    kinds = [message_kind(message) for message in messages]
    pulse_times = [message.time for message in messages if message.type == "clock"]
    if len(pulse_times) < 2:
        raise RuntimeError(f"{run.label}: {len(pulse_times)} MIDI clock pulses arrived; daemon log {run.log_path}:\n{run.log_tail()}")

    # The shown notes pair with the received note_ons in order; their times since play started give their beats.
    shown = run.shown_notes()
    received_pitches = [message.note for message, kind in zip(messages, kinds) if kind == "note_on"]
    note_beats = [float(beat) for beat in snap_to_grid(np.array([note.seconds for note in shown]), BPM, STEPS_PER_BEAT) * BPM / 60.0]
    pulses_counted, beats_counted = pulses_per_beat(kinds, note_beats)
    first_pulse, last_pulse = kinds.index("clock"), len(kinds) - 1 - kinds[::-1].index("clock")
    return MasterResult(
        spacing_errors_ms=spacing_errors_ms(pulse_times, PULSE_INTERVAL),
        pulses_received=len(pulse_times),
        pulses_counted=pulses_counted,
        beats_counted=beats_counted,
        starts=kinds.count("start"),
        stops=kinds.count("stop"),
        start_before_pulses="start" in kinds[:first_pulse],
        stop_after_pulses="stop" in kinds[last_pulse:],
        names_mismatched=sum(1 for note, pitch in zip(shown, received_pitches) if note.name != pitch_name(pitch)),
        status=status,
    )


# The section.

def run_clock_sync_benchmark(workdir: Path, csv_dir: Path, quick: bool, model: str | None) -> Section:
    """Run the steady and jittered follow runs and the master run; return their rows, notes and CSV files."""
    seconds = QUICK_SECONDS if quick else FULL_SECONDS
    follows = []
    for name, jitter in (("steady", 0.0), ("jittered", JITTER)):
        log.info("clock sync: following a %s clock at %g BPM for %g s", name, BPM, seconds)
        follows.append(run_follow(name, jitter, seconds, workdir, model))
    log.info("clock sync: clock master at %g BPM for %g s", BPM, seconds)
    master = run_master(seconds, workdir, model)

    section = Section("Clock sync", rows=follow_rows(follows) + master_rows(master), notes=clock_sync_notes(follows, master, quick, seconds))
    section.csv_files += [write_follow_csv(csv_dir, result) for result in follows]
    sent = {f"|sent - ideal|, {result.name} clock": np.abs(result.sent_errors_ms) for result in follows}
    section.csv_files.append(write_quantiles_csv(csv_dir / "clock_pulses_sent.csv", sent, "ms"))
    section.csv_files.append(write_master_csv(csv_dir, master))
    return section


def follow_rows(results: list[FollowResult]) -> list[Row]:
    rows = []
    for result in results:
        clock = f"{result.name} clock" if result.jitter == 0 else f"clock jittered by +-{result.jitter * 1000:g} ms"
        rows += [
            latency_row(f"follow, {clock}: onset error ({result.match.pulses.size} notes)", "ms", np.abs(result.match.errors_ms)),
            latency_row(f"follow, {clock}: pulse send time error as sent ({result.sent_errors_ms.size} pulses)", "ms", np.abs(result.sent_errors_ms)),
            Row(f"follow, {clock}: late onsets (late_onsets in /sideman/status)", "", value=float(result.status.get("late_onsets", math.nan))),
        ]
    return rows


def master_rows(result: MasterResult) -> list[Row]:
    return [
        latency_row(f"master: pulse spacing error ({result.spacing_errors_ms.size} intervals)", "ms", np.abs(result.spacing_errors_ms)),
        Row("master: pulses per quarter note, between the first and the last note (24 expected)", "pulses", value=result.per_beat,
            ratio=f"{result.pulses_counted} pulses in {result.beats_counted:g} beats"),
        Row("master: Start messages received (1 expected)", "", value=float(result.starts)),
        Row("master: Stop messages received after /sideman/stop (1 expected)", "", value=float(result.stops)),
    ]


def clock_sync_notes(follows: list[FollowResult], master: MasterResult, quick: bool, seconds: float) -> list[str]:
    period_ms = 64 / 48.0  # the private jackd's period: 64 frames at 48 kHz
    notes = [
        (f"Quick mode: each run plays {seconds:g} s instead of {FULL_SECONDS:g} s. " if quick else "")
        + "Setup: a private jackd (dummy driver, 48 kHz, 64-frame period of 1.33 ms, --no-realtime --sync --port-max 256). "
        f"`sideman run --tempo {BPM:g} --param temperature.value={TEMPERATURE:g} --show` with the built-in model, unless --model, "
        "is connected with `--midi-out` to a python-rtmidi input in the benchmark process. That input stamps each message from "
        "python-rtmidi's JACK delta times, with one period of resolution. JACK passes MIDI between clients once per period, "
        "so every hop between two clients can add up to 1.33 ms.",
        "Follow mode (`--sync midi-in`): a python-rtmidi JACK output in the benchmark process, connected to sideman-in:in, sends 24 pulses "
        f"per quarter note at {BPM:g} BPM from a thread. The pulses are due at absolute deadlines on time.perf_counter: the thread sleeps "
        "until 1 ms before each deadline, then spins, and records the time just before each send. Once /sideman/status reports a tempo "
        "measured from the pulses, Start goes out right before a pulse, which is beat 0. The jittered clock moves each pulse by a uniform "
        f"random offset in +-{JITTER * 1000:g} ms (seed {JITTER_SEED}).",
        f"The ideal time of pulse n is its unjittered deadline: first pulse + n x {PULSE_INTERVAL * 1000:.3f} ms. The notes lie on a "
        f"1/{STEPS_PER_BEAT}-beat grid and the pulses on a 1/24-beat grid, so each onset is matched to the ideal pulse nearest to its "
        "arrival once the run's median latency is removed. Error = arrival - ideal - median of (arrival - ideal), and p50, p99 and max "
        "are of its absolute value. The median removes the constant latency: from the sender to the daemon, from the daemon to the "
        "receiver, and the origin of the receiver's clock, which is the time its reader thread took the first message. Onsets in the first 2 beats "
        "after Start are left out while the follower's 2-beat tempo fit fills, and so are the notes and pulses after the daemon's SIGTERM."
        " The pulse send time error as sent is |sent - ideal| of every pulse from beat 2 on. For the jittered clock it contains "
        "the offsets on purpose, so the rows compare the jitter that went in with the jitter that came out.",
    ]
    for result in follows:
        status = result.status
        notes.append(
            f"Follow, {result.name} clock: {result.notes_received} note_ons received, {result.match.pulses.size} of them after beat 2. "
            f"Median latency from the ideal pulse to the receiver's reader thread: {result.reader_latency * 1000:.2f} ms. "
            f"The daemon reported clock_bpm {float(status.get('clock_bpm', math.nan)):.3f}, late_onsets {status.get('late_onsets', '?')} "
            f"and notes {status.get('notes', '?')}."
        )

    start = "arrived before the first pulse" if master.start_before_pulses else "did not arrive before the first pulse"
    stop = "arrived after the last pulse" if master.stop_after_pulses else "did not arrive after the last pulse"
    notes.append(
        f"Master mode (`--sync master`): the receiver stamps every MIDI clock pulse, and the spacing error is each interval minus "
        f"60 / ({BPM:g} x 24) s = {PULSE_INTERVAL * 1000:.3f} ms. Because the stamps fall on JACK periods, even a perfect clock shows "
        f"intervals of 15 or 16 periods ({15 * period_ms:.2f} or {16 * period_ms:.2f} ms), errors of {15 * period_ms - PULSE_INTERVAL * 1000:+.2f} "
        f"or {16 * period_ms - PULSE_INTERVAL * 1000:+.2f} ms. Pulses per quarter note: the pulses that arrived between the first and the "
        "last note_on, divided by the beats between those notes, which come from the daemon's `--show` output on the 1/12-beat grid. "
        "The engine sends the pulse of a beat before a note at that beat. The run ends with /sideman/stop over OSC on 127.0.0.1. "
        f"Received {master.pulses_received} pulses, and the daemon reported sending {master.status.get('clock_pulses', '?')}. "
        f"Pulses per beat: {master.per_beat:.4f}. Start {start}, and Stop {stop}. "
        f"{master.names_mismatched} notes differ in pitch between `--show` and the receiver. late_onsets: {master.status.get('late_onsets', '?')}."
    )
    return notes


def write_follow_csv(csv_dir: Path, result: FollowResult) -> Path:
    """Write one row per onset after beat 2: its pulse since Start, that pulse's beat, and the error in ms rounded to 1 us."""
    rows = [(int(pulse), f"{pulse / PULSES_PER_BEAT:.4f}", f"{error:.3f}") for pulse, error in zip(result.match.pulses, result.match.errors_ms)]
    return write_rows_csv(csv_dir / f"clock_follow_{result.name}.csv", ("pulse since Start", "beat", "onset error, JACK-stamped (ms)"), rows)


def write_master_csv(csv_dir: Path, result: MasterResult) -> Path:
    """Write one row per interval between two received pulses, with its error in ms rounded to 1 us."""
    rows = [(index + 1, f"{error + PULSE_INTERVAL * 1000:.3f}", f"{error:.3f}") for index, error in enumerate(result.spacing_errors_ms)]
    return write_rows_csv(csv_dir / "clock_master.csv", ("pulse", "interval from the pulse before (ms)", "spacing error (ms)"), rows)
