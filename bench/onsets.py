"""Onset timing: sideman plays into a receiver on a private JACK server; each note_on is compared with its ideal onset.

The ideal onsets come from the daemon's `--show` output: seconds since play
started, on the tempo map's grid. At a constant tempo every onset lies on
the grid of 1/steps_per_beat beat (1/48 s at 240 BPM), so rounding the shown
time (printed to the millisecond) to that grid restores the exact ideal.

The daemon's clock and the receiver's share no origin, so the error of a
note is its arrival minus its ideal onset minus the phase's median of that
difference: the constant latency is removed, and the error is the jitter
around it. Drift is the mean error over the last window (a minute in full
mode) minus the mean over the first, so a constant latency cancels out of it.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.live import DaemonRun, OscFlood, Spinner
from bench.report import Row, Section, latency_row, write_rows_csv
from sideman.notenames import pitch_name

log = logging.getLogger(__name__)

TEMPO = 240.0  # BPM
STEPS_PER_BEAT = 12  # the built-in model's grid
# Temperature 0.7 makes the built-in model play mostly sixteenths and
# shorter notes (1/12 and 1/6 beat); see the duration shares in the notes.
TEMPERATURE = 0.7
FLOOD_VALUES = (0.7, 0.75)  # values the OSC flood alternates, close enough to keep the same kind of line
FLOOD_RATE = 1000  # OSC messages per second
P99_TARGET_MS = 2.0
LOADED_P99_TARGET_MS = 3.0
DRIFT_TARGET_MS = 1.0


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    load: str  # "none", "busy core" or "osc flood"
    p99_target_ms: float
    drift_target: bool
    # False runs the daemon with --no-midi-in. Under JACK its MIDI input is a
    # JACK client of its own and a reader thread that polls RtMidi's queue
    # every millisecond. The phases without it show the input's share of the error.
    midi_input: bool = True


# Seconds of the quiet phase, of a loaded phase and of a loaded phase with the MIDI input off.
FULL_SECONDS = (600.0, 120.0, 45.0)
QUICK_SECONDS = (15.0, 6.0, 6.0)


def phases(quick: bool) -> list[Phase]:
    quiet, loaded, input_off = QUICK_SECONDS if quick else FULL_SECONDS
    return [
        Phase("quiet", quiet, "none", P99_TARGET_MS, True),
        Phase("second core busy", loaded, "busy core", LOADED_P99_TARGET_MS, False),
        Phase("second core busy, MIDI input off", input_off, "busy core", LOADED_P99_TARGET_MS, False, midi_input=False),
        Phase("OSC flood", loaded, "osc flood", LOADED_P99_TARGET_MS, False),
        Phase("OSC flood, MIDI input off", input_off, "osc flood", LOADED_P99_TARGET_MS, False, midi_input=False),
    ]


@dataclass
class PhaseResult:
    phase: Phase
    ideal: np.ndarray  # seconds since play started
    jack_errors: np.ndarray  # ms, from the receiver's JACK-stamped times
    wall_errors: np.ndarray  # ms, from the times the receiver's reader thread took the notes
    send_errors: np.ndarray  # ms, from the engine's send times in the --record file (about 1 ms resolution)
    names_mismatched: int  # note_ons whose pitch differs from the shown note
    unmatched: int  # note_ons or shown notes without a partner
    durations: np.ndarray  # beats of every shown note
    status: dict
    peak_rss_kb: int | None
    flood_rate: float | None = None

    def drift(self, errors: np.ndarray) -> tuple[float, float]:
        """Return (drift in ms, window in seconds): mean error over the last window minus over the first."""
        window = min(60.0, self.phase.seconds / 3)
        first = errors[self.ideal <= self.ideal[0] + window]
        last = errors[self.ideal >= self.ideal[-1] - window]
        return float(last.mean() - first.mean()), window



def onset_errors(ideal: np.ndarray, arrivals: np.ndarray) -> np.ndarray:
    """Return arrival - ideal - median(arrival - ideal), in ms."""
    offsets = arrivals - ideal
    return (offsets - np.median(offsets)) * 1000.0


def snap_to_grid(seconds: np.ndarray, tempo: float = TEMPO, steps_per_beat: int = STEPS_PER_BEAT) -> np.ndarray:
    step = 60.0 / tempo / steps_per_beat
    return np.round(seconds / step) * step


def phase_slug(phase: Phase) -> str:
    """Name the phase for file names: `second-core-busy-midi-input-off`."""
    return phase.name.lower().replace(",", "").replace(" ", "-")


def run_phase(phase: Phase, workdir: Path, model: str | None) -> PhaseResult:
    """Play one phase and compare every note_on that arrived with the note the daemon showed for it."""
    arguments = ["--tempo", f"{TEMPO:g}", "--param", f"temperature.value={TEMPERATURE:g}", "--log-level", "info"]
    if model:
        arguments += ["--model", model]
    if not phase.midi_input:
        arguments.append("--no-midi-in")

    spinner = Spinner() if phase.load == "busy core" else None
    flood = None
    try:
        with DaemonRun(workdir, "onsets-" + phase_slug(phase), arguments) as run:
            run.wait_for_first_note()
            if phase.load == "osc flood":
                flood = OscFlood(run.osc_port, FLOOD_RATE, "temperature", "value", FLOOD_VALUES)
                flood.start()
            time.sleep(phase.seconds)
            if flood is not None:
                flood.stop()
            status = run.status()
            run.read_peak_rss()
    finally:
        if spinner is not None:
            spinner.stop()
        if flood is not None:
            flood.stop()

    return compare_onsets(phase, run, status, flood)


def compare_onsets(phase: Phase, run: DaemonRun, status: dict, flood: OscFlood | None) -> PhaseResult:
    shown = run.shown_notes()
    received = run.receiver.note_on_times()
    count = min(len(shown), len(received))
    ideal = snap_to_grid(np.array([note.seconds for note in shown[:count]]))
    jack = np.array([arrival for _, arrival, _ in received[:count]])
    wall = np.array([arrival for _, _, arrival in received[:count]])
    sent = np.array(run.recorded_note_on_times()[:count])
    mismatched = sum(1 for note, (pitch, _, _) in zip(shown, received) if note.name != pitch_name(pitch))
    if count == 0:
        raise RuntimeError(f"{phase.name}: no note was both shown and received; daemon log {run.log_path}")

    return PhaseResult(
        phase=phase,
        ideal=ideal,
        jack_errors=onset_errors(ideal, jack),
        wall_errors=onset_errors(ideal, wall),
        # Rounded to 1 us: the recorded times lie on a tick grid, so exact matches would show as float noise.
        send_errors=np.round(onset_errors(ideal[:len(sent)], sent), 3) if len(sent) else np.empty(0),
        names_mismatched=mismatched,
        unmatched=abs(len(shown) - len(received)),
        durations=np.array([note.beats for note in shown]),
        status=status,
        peak_rss_kb=run.peak_rss_kb,
        flood_rate=flood.measured_rate if flood is not None else None,
    )


def run_onset_benchmark(workdir: Path, csv_dir: Path, quick: bool, model: str | None) -> tuple[Section, list[PhaseResult]]:
    results = []
    for phase in phases(quick):
        log.info("onset timing: %s, %g s", phase.name, phase.seconds)
        results.append(run_phase(phase, workdir, model))

    section = Section("Onset timing at 240 BPM", rows=onset_rows(results), notes=onset_notes(results, quick))
    section.csv_files += [write_onsets_csv(csv_dir, result) for result in results]
    return section, results


def onset_rows(results: list[PhaseResult]) -> list[Row]:
    rows = []
    for result in results:
        phase = result.phase
        errors = np.abs(result.jack_errors)
        row = latency_row(f"onset error, {phase.name} ({describe_seconds(phase.seconds)}, {len(errors)} notes)", "ms", errors)
        row.target = f"p99 <= {phase.p99_target_ms:g} ms"
        row.met = row.p99 <= phase.p99_target_ms
        rows.append(row)
        rows.append(latency_row(f"engine send time error, {phase.name} (from --record)", "ms", np.abs(result.send_errors)))

        if phase.drift_target:
            drift, window = result.drift(result.wall_errors)
            rows.append(Row(
                f"drift, {phase.name} (last {window:.0f} s minus first {window:.0f} s)", "ms",
                value=drift, target=f"|drift| <= {DRIFT_TARGET_MS:g} ms", met=abs(drift) <= DRIFT_TARGET_MS,
            ))
    return rows


def describe_seconds(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def onset_notes(results: list[PhaseResult], quick: bool) -> list[str]:
    main = results[0]
    durations = main.durations
    shares = ", ".join(
        f"{label} {np.mean(np.isclose(durations, beats, atol=0.01)) * 100:.0f}%"
        for label, beats in (("1/12 beat", 1 / 12), ("1/6 beat", 1 / 6), ("sixteenth", 0.25), ("eighth", 0.5))
    )
    short_share = np.mean(durations <= 0.25 + 0.01) * 100
    notes_per_second = len(main.ideal) / max(main.ideal[-1] - main.ideal[0], 1e-9)
    jack_drift, window = main.drift(main.jack_errors)

    notes = [
        (f"Quick mode: the quiet phase lasts {describe_seconds(QUICK_SECONDS[0])} instead of {describe_seconds(FULL_SECONDS[0])}, "
         f"and every other phase {describe_seconds(QUICK_SECONDS[1])} instead of {describe_seconds(FULL_SECONDS[1])}, "
         f"or of {describe_seconds(FULL_SECONDS[2])} for those with the MIDI input off, so the drift window is a third of the run. " if quick else "")
        + f"Setup: `sideman run --tempo {TEMPO:g} --param temperature.value={TEMPERATURE:g} --show`, built-in model, on a private jackd "
        "(dummy driver, 48 kHz, 64-frame period of 1.33 ms, --no-realtime --sync --port-max 256), connected with `--midi-out` to a python-rtmidi input "
        "in the benchmark process. The receiver stamps each message from python-rtmidi's JACK delta times (one period of resolution). "
        "Error = arrival - ideal onset - the phase's median of that difference, so a constant latency is not counted; "
        "p50, p99 and max are of the absolute error.",
        f"Output of the quiet phase: {notes_per_second:.1f} notes per second; {short_share:.0f}% of the notes last a sixteenth or less "
        f"({shares}). No sampler forces sixteenths: temperature {TEMPERATURE:g} is the setting at which the built-in model plays mostly "
        "sixteenths and shorter notes.",
        f"Drift is measured on the receiver's reader times (time.perf_counter, the clock the daemon schedules with); "
        f"on the JACK-stamped times it is {jack_drift:+.3f} ms over the same windows. "
        "The engine send time error compares the time the engine sent each note_on, from the daemon's `--record` file "
        "(ticks of about 1 ms), with the same ideal onsets: where it is as large as the onset error, the delay happened "
        "before the message reached JACK, in the engine's wait for its deadline.",
    ]
    notes += input_share_notes(results)
    for result in results:
        status = result.status
        line = (
            f"{result.phase.name}: late onsets reported by the daemon {status.get('late_onsets', '?')}, "
            f"sampler errors {status.get('sampler_errors', '?')}, notes played {status.get('notes', '?')}; "
            f"{result.unmatched} notes shown but not received or the reverse, {result.names_mismatched} pitch mismatches."
        )
        if len(result.send_errors):
            send_p99 = float(np.percentile(np.abs(result.send_errors), 99))
            onset_p99 = float(np.percentile(np.abs(result.jack_errors), 99))
            line += f" Engine send time error p99 {send_p99:.2f} ms against onset error p99 {onset_p99:.2f} ms."
        if result.flood_rate is not None:
            line += (
                f" The flood sent /sideman/param temperature value, alternating {FLOOD_VALUES[0]:g} and {FLOOD_VALUES[1]:g}, "
                f"at {result.flood_rate:,.0f} messages per second; each one makes the engine redraw its look-ahead note."
            )
        notes.append(line)
    return notes


def input_share_notes(results: list[PhaseResult]) -> list[str]:
    """Compare each load's phase with its MIDI-input-off twin: p99 onset error with the input over p99 without."""
    by_load_and_input = {(result.phase.load, result.phase.midi_input): result for result in results}
    notes = []
    for load in ("busy core", "osc flood"):
        input_on = by_load_and_input.get((load, True))
        input_off = by_load_and_input.get((load, False))
        if input_on is None or input_off is None:
            continue
        p99_on, p99_off = (float(np.percentile(np.abs(result.jack_errors), 99)) for result in (input_on, input_off))
        notes.append(
            f"MIDI input's share, {input_on.phase.name}: p99 onset error {p99_on:.2f} ms with the daemon's MIDI input open "
            f"against {p99_off:.2f} ms with --no-midi-in, a ratio of {p99_on / max(p99_off, 1e-9):.2f}, in this run. "
            "The open input is a JACK client of its own and a reader thread that polls RtMidi's queue every millisecond."
        )
    return notes


def write_onsets_csv(csv_dir: Path, result: PhaseResult) -> Path:
    """Write one row per note of the phase, errors in ms rounded to 10 us, to keep the files small."""
    sent = [f"{error:.2f}" for error in result.send_errors]
    sent += [""] * (len(result.ideal) - len(sent))
    rows = [
        (f"{ideal:.4f}", f"{jack:.2f}", f"{wall:.2f}", sent[index])
        for index, (ideal, jack, wall) in enumerate(zip(result.ideal, result.jack_errors, result.wall_errors))
    ]
    header = ("ideal onset (s)", "error, JACK-stamped (ms)", "error, reader time (ms)", "engine send time error (ms)")
    name = "onsets_" + phase_slug(result.phase).replace("-", "_") + ".csv"
    return write_rows_csv(csv_dir / name, header, rows)
