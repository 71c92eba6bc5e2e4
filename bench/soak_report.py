"""The analysis of a soak run into figures and pass/fail verdicts, its CSV files and its Markdown page."""

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.live import STATUS_TIMEOUT
from bench.machine import Machine
from bench.report import Row, format_table, latency_row, write_quantiles_csv, write_rows_csv
from bench.soak_balance import NoteBalance, note_balance
from bench.soak_changes import CHANGE_INTERVAL
from bench.soak_log import LogGroup, connection_lines, count_reconnections, group_log_lines, notes_played
from bench.soak_memory import RSS_INTERVAL, RssVerdict, rss_verdict
from bench.soak_onsets import OnsetMatch, errors_by_last_change, match_onsets
from bench.soak_phrases import PHRASE_GAP_BARS
from bench.soak_run import SoakRun
from sideman.notenames import pitch_name

CSV_RSS_INTERVAL = 5.0  # seconds between two VmRSS rows of the CSV file, to keep it small


@dataclass
class SoakReport:
    """The figures of a run, the pass/fail verdicts and the text around them."""

    rows: list[Row]
    notes: list[str]
    change_rows: list[Row]  # onset error by the kind of the latest change before the note
    warnings: list[LogGroup]
    connection_events: list[LogGroup]  # log lines about connections lost and made again
    csv_files: list[Path] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(row.met is not False for row in self.rows)


def analyse(run: SoakRun, csv_dir: Path) -> SoakReport:
    balance = note_balance(run.received)
    onsets = match_onsets(run.shown, run.received)
    rss = rss_verdict(run.rss, run.warmup)
    warnings = group_log_lines(run.log_text)
    connection_events = connection_lines(run.log_text)
    status = run.final_status
    played = notes_played(run.log_text, status)
    received = sum(1 for item in run.received if item.message.type == "note_on" and item.message.velocity > 0)
    open_pitches = [row for row in balance.rows() if not row.exact]

    rows = [
        Row("notes played (daemon log at shutdown)", "notes", value=played),
        Row("note_ons received", "notes", value=received),
        Row("notes lost: played minus received", "notes", value=played - received),
        Row("pitches whose note_ons and note_offs differ at the receiver", "pitches", value=len(open_pitches),
            target="0 (every note_on has its note_off)", met=balance.exact),
        latency_row(f"onset error, all matched notes ({onsets.matched} notes)", "ms", np.abs(onsets.errors)),
        Row("late onsets (daemon status)", "onsets", value=int(status.get("late_onsets", 0))),
        Row("VmRSS at the start (after the warm-up)", "MB", value=rss.start_kb / 1024),
        Row("VmRSS at the end", "MB", value=rss.end_kb / 1024, ratio=f"{rss.end_change:+.1%} of the start"),
        Row("VmRSS maximum after the warm-up", "MB", value=rss.max_kb / 1024, ratio=f"{(rss.max_kb - rss.start_kb) / rss.start_kb:+.1%} of the start"),
        Row("VmRSS flat after the warm-up", "", target=f"every reading within {rss.tolerance:.0%} of the start", met=rss.flat),
        Row("warnings and errors in the daemon's log", "lines", value=sum(group.count for group in warnings)),
        Row("reconnections seen in the daemon's log (lines with \"restored\" or \"reconnected\")", "lines", value=count_reconnections(run.log_text)),
    ]
    for number, disconnect in enumerate(run.disconnects, start=1):
        returned = disconnect.first_note_after is not None
        rows.append(Row(
            f"port closing {number} at {disconnect.closed_at / 60:.1f} min: first note after the port returned", "s",
            value=disconnect.first_note_after, target="notes arrive again", met=returned,
        ))

    change_rows = [
        latency_row(f"latest change: {kind} ({len(errors)} notes)", "ms", errors)
        for kind, errors in errors_by_last_change(onsets, run.change_history).items()
    ]
    report = SoakReport(rows, soak_notes(run, balance, onsets, rss), change_rows, warnings, connection_events)
    report.csv_files = [
        write_balance_csv(csv_dir / "soak_balance.csv", balance),
        write_rss_csv(csv_dir / "soak_rss.csv", run.rss),
        write_quantiles_csv(csv_dir / "soak_onsets.csv", {"onset error": np.abs(onsets.errors)}, "ms"),
        write_disconnects_csv(csv_dir / "soak_disconnects.csv", run),
    ]
    return report


def soak_notes(run: SoakRun, balance: NoteBalance, onsets: OnsetMatch, rss: RssVerdict) -> list[str]:
    status = run.final_status
    changes = ", ".join(f"{kind} {count}" for kind, count in sorted(run.changes.items(), key=lambda item: -item[1]))
    open_rows = [row for row in balance.rows() if not row.exact]
    notes = [
        f"Setup: `{shlex.join(['sideman', *run.command[3:]])}` with the built-in model unless --model is given, on a private jackd "
        "(dummy driver, 48 kHz, 64-frame period, --no-realtime --sync). The receiver is a python-rtmidi JACK input in the "
        f"benchmark process. The run lasted {run.seconds / 60:.1f} minutes from the first note; the daemon's exit code "
        f"after SIGTERM was {run.exit_code}.",
        f"OSC: one random change every {CHANGE_INTERVAL * 1000:.0f} ms to 127.0.0.1, {sum(run.changes.values())} in all: {changes}. "
        "Gate and velocity have no OSC address, so humanize_velocity stands in for velocity and the gate stays 0.9.",
        f"Live input: a JACK MIDI sender on sideman-in:in played {run.phrases} one-bar phrases ({run.phrase_notes} notes), "
        f"one every {PHRASE_GAP_BARS + 1} bars. From {run.schedule.live_start / 60:.1f} to "
        f"{run.schedule.live_end / 60:.1f} minutes the live seeder listened in call-and-response mode; "
        + (
            f"before it ended, the status showed {run.live_statuses[0].get('live_notes', '?')} live notes and "
            f"{run.live_statuses[0].get('answers', '?')} answers. "
            if run.live_statuses else "it never started. "
        )
        + f"Outside it the daemon ignored the phrases (live_notes_ignored {status.get('live_notes_ignored', '?')} at the end).",
        "Note balance: every note_on and note_off that reached the receiver, counted per channel and pitch across the port's "
        "closings. A note_on open when the port closed ends there (a synth that goes away sounds nothing) and is "
        "counted as open at a closing; a note_off that arrives after the port returned for a note that is not open "
        "counts as a stray note_off. "
        f"{balance.all_notes_off} All Notes Off (CC 123) arrived and close nothing in this count. "
        + (
            "Pitches out of balance: " + "; ".join(
                f"{pitch_name(row.pitch)} on channel {row.channel + 1}: {row.note_ons} note_ons, {row.note_offs} note_offs, "
                f"{row.unmatched_note_ons} open, {row.stray_note_offs} stray note_offs, {row.open_at_disconnect} open at a closing"
                for row in open_rows
            ) + "."
            if open_rows else "Every pitch is in balance."
        ),
        "Onset error: every received note_on is paired, in order within each opening of the receiver, with the note the "
        "daemon printed with `--show`. That is its scheduled send time after tempo changes, swing and humanize, printed to "
        "the millisecond, so the figures carry up to 0.5 ms of rounding. Error = JACK-stamped arrival - scheduled time - "
        "the opening's median of that difference, as bench/onsets.py computes it, but on all notes under the changes, "
        f"not on quiet intervals. {onsets.unmatched_received} received notes found no shown note, "
        f"{onsets.pitch_mismatches} pairs differ in pitch.",
        f"The JACK server reported {'an unknown number of' if run.jack_xruns is None else run.jack_xruns} XRuns (process cycles "
        "that ended late, because a client or the machine was slow). With --sync, every client's late cycle delays the "
        "delivery of every MIDI message, so XRuns and the machine's load show in the onset error.",
        f"VmRSS is read from /proc every {RSS_INTERVAL:g} s; the start value is the first reading {run.warmup:g} s after "
        f"the first note. Peak RSS (VmHWM) over the whole run: "
        + (f"{run.peak_rss_kb / 1024:.1f} MB." if run.peak_rss_kb else "unknown."),
        f"Status requests: {run.status_replies} answered, {run.status_timeouts} without a reply within {STATUS_TIMEOUT:g} s. "
        f"Daemon status at the end: sampler errors {status.get('sampler_errors', '?')}, input batches dropped "
        f"{status.get('input_dropped', '?')}, disabled plugins '{status.get('disabled_plugins', '')}'.",
    ]
    for number, disconnect in enumerate(run.disconnects, start=1):
        notes.append(
            f"Port closing {number}: the receiver closed its whole JACK client at {disconnect.closed_at:.1f} s and opened it "
            f"again under the same name at {disconnect.reopened_at:.1f} s; the daemon played "
            f"{'an unknown number of' if disconnect.notes_while_away is None else disconnect.notes_while_away} notes meanwhile. "
            + (
                f"The first note after it arrived {disconnect.first_note_after:.3f} s after the port returned."
                if disconnect.first_note_after is not None else
                "No note arrived after the port returned, so every note played after the closing was lost."
            )
        )
    return notes


def write_balance_csv(path: Path, balance: NoteBalance) -> Path:
    header = ("channel", "pitch", "name", "note_ons", "note_offs", "unmatched note_ons", "stray note_offs", "open at a port closing")
    rows = [
        (row.channel + 1, row.pitch, pitch_name(row.pitch), row.note_ons, row.note_offs, row.unmatched_note_ons,
         row.stray_note_offs, row.open_at_disconnect)
        for row in balance.rows()
    ]
    return write_rows_csv(path, header, rows)


def write_rss_csv(path: Path, readings: list[tuple[float, int]]) -> Path:
    """Write one VmRSS reading every CSV_RSS_INTERVAL seconds, and the last one."""
    rows = []
    next_time = 0.0
    for index, (seconds, kb) in enumerate(readings):
        if seconds >= next_time or index == len(readings) - 1:
            rows.append((f"{seconds:.1f}", kb))
            next_time = seconds + CSV_RSS_INTERVAL
    return write_rows_csv(path, ("seconds since the first note", "VmRSS (kB)"), rows)


def write_disconnects_csv(path: Path, run: SoakRun) -> Path:
    header = ("closed at (s)", "reopened at (s)", "notes played while closed", "first note after reopening (s)")
    rows = [
        (f"{item.closed_at:.1f}", f"{item.reopened_at:.1f}", "" if item.notes_while_away is None else item.notes_while_away,
         "" if item.first_note_after is None else f"{item.first_note_after:.3f}")
        for item in run.disconnects
    ]
    return write_rows_csv(path, header, rows)


def format_log_groups(groups: list[LogGroup]) -> str:
    lines = ["| count | level | logger | kind | first message |", "|---|---|---|---|---|"]
    for group in groups:
        cells = (str(group.count), group.level, group.logger, group.kind, group.example)
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def relative_link(path: Path, start: Path) -> str:
    try:
        return path.resolve().relative_to(start.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def format_soak_page(machine: Machine, command: str, started: str, minutes: float, loads: tuple[tuple[float, ...], ...],
                     report: SoakReport, report_path: Path) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in machine.versions.items())
    load_before, load_after = (", ".join(f"{value:.2f}" for value in load) for load in loads)
    lines = [
        "# Soak run",
        "",
        "Every figure on this page comes from one run of the command below, on the machine described here.",
        "",
        f"- Command: `{command}`, {minutes:.1f} minutes",
        f"- Date: {started}",
        f"- Machine: {machine.cpu_model}, {machine.cores} cores, {machine.system}",
        f"- Load average (1, 5, 15 minutes) at the start: {load_before}; at the end: {load_after}."
        " The machine is shared: a load above 0 means other processes competed for the cores.",
        f"- Python {machine.python}; {versions}; {machine.jackd}",
        f"- Result: {'every pass/fail line met' if report.passed else 'at least one pass/fail line missed'}",
        "",
        "## Figures",
        "",
        format_table(report.rows),
        "",
    ]
    for note in report.notes:
        lines += [note, ""]
    lines += [
        "## Onset error by the latest change before the note",
        "",
        "Each matched note is grouped by the kind of the latest OSC change sent before it arrived "
        f"(changes go out every {CHANGE_INTERVAL * 1000:.0f} ms), so that a kind of change that delays onsets stands out. "
        "Groups of a few hundred notes make each p99 rest on two or three notes, and on a loaded machine the tails "
        "follow the JACK server's XRuns as much as the changes.",
        "",
        format_table(report.change_rows),
        "",
    ]
    lines += ["## Warnings and errors in the daemon's log, by kind", ""]
    lines += [format_log_groups(report.warnings) if report.warnings else "None.", ""]
    lines += ["Numbers are replaced by <n> and socket addresses by <address> before lines are grouped.", ""]
    lines += ["## Log lines about connections lost and made again", ""]
    lines += [format_log_groups(report.connection_events) if report.connection_events else "None.", ""]
    links = ", ".join(f"[{path.name}]({relative_link(path, report_path.parent)})" for path in report.csv_files)
    lines += [f"Samples: {links}.", ""]
    return "\n".join(lines)
