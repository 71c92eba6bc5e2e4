"""The benchmark's results: rows of figures, a Markdown table of them, the report page and the CSV files."""

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from bench.machine import Machine

# Quantiles written to the CSV files in place of every raw sample, in percent:
# 0, 0.1, ..., 100. They keep the shape of the distribution, its p99 and its
# maximum in a file of about a thousand lines.
CSV_QUANTILES = np.linspace(0.0, 100.0, 1001)


@dataclass
class Row:
    """One measured figure. Latency figures fill p50, p99 and maximum; rates and sizes fill value."""

    figure: str
    unit: str
    p50: float | None = None
    p99: float | None = None
    maximum: float | None = None
    value: float | None = None
    ratio: str = ""  # a comparison measured in the same run, e.g. "x512 slower than the live step"
    target: str = ""
    met: bool | None = None  # None when the figure has no target or was not measured


@dataclass
class Section:
    """One family of figures: its table, the notes that explain it and the CSV files holding its samples."""

    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    csv_files: list[Path] = field(default_factory=list)


@dataclass
class RunInfo:
    command: str
    started: str  # date and time in ISO 8601
    seconds: float  # wall time of the whole run
    quick: bool
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def percentiles(samples: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """Return p50, p99 and the maximum of `samples`."""
    values = np.asarray(samples, dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan, math.nan
    p50, p99 = np.percentile(values, [50, 99])
    return float(p50), float(p99), float(values.max())


def latency_row(figure: str, unit: str, samples: Sequence[float] | np.ndarray, **details) -> Row:
    p50, p99, maximum = percentiles(samples)
    return Row(figure, unit, p50=p50, p99=p99, maximum=maximum, **details)


def format_number(value: float | None) -> str:
    """Format a figure with three significant digits, or a dash when it is missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def verdict(met: bool | None) -> str:
    if met is None:
        return ""
    return "met" if met else "missed"


TABLE_HEADER = ("figure", "p50", "p99", "max", "value", "unit", "comparison", "target", "result")


def format_table(rows: Iterable[Row]) -> str:
    """Return the rows as a Markdown table, which also reads well as plain text."""
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    for row in rows:
        cells = (
            row.figure,
            format_number(row.p50),
            format_number(row.p99),
            format_number(row.maximum),
            format_number(row.value),
            row.unit,
            row.ratio,
            row.target,
            verdict(row.met),
        )
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def format_sections(sections: Sequence[Section]) -> str:
    """Return every section's title and table, for the terminal."""
    parts = []
    for section in sections:
        parts.append(f"## {section.title}\n\n{format_table(section.rows)}\n")
    return "\n".join(parts)


def format_report(machine: Machine, run: RunInfo, sections: Sequence[Section], report_path: Path) -> str:
    """Return the Markdown page: how the figures were made, then each section's table, notes and CSV files."""
    versions = ", ".join(f"{name} {version}" for name, version in machine.versions.items())
    mode = "quick mode: shortened runs, not comparable with a full run" if run.quick else "full mode"
    load_before = ", ".join(f"{value:.2f}" for value in run.load_before)
    load_after = ", ".join(f"{value:.2f}" for value in run.load_after)
    lines = [
        "# Benchmarks",
        "",
        "Every figure on this page comes from one run of the command below, on the machine described here.",
        "Comparisons are ratios measured in the same run. Latencies are p50, p99 and maximum over every sample.",
        "",
        f"- Command: `{run.command}` ({mode}), {run.seconds / 60:.1f} minutes",
        f"- Date: {run.started}",
        f"- Machine: {machine.cpu_model}, {machine.cores} cores, {machine.system}",
        f"- Load average (1, 5, 15 minutes) at the start: {load_before}; at the end: {load_after}."
        " The machine is shared: a load above 0 means other processes competed for the cores.",
        f"- Python {machine.python}; {versions}; {machine.jackd}",
        "",
    ]
    for section in sections:
        lines += [f"## {section.title}", "", format_table(section.rows), ""]
        for note in section.notes:
            lines += [note, ""]
        if section.csv_files:
            links = ", ".join(f"[{path.name}]({_relative(path, report_path.parent)})" for path in section.csv_files)
            lines += [f"Samples: {links}.", ""]
    return "\n".join(lines)


def _relative(path: Path, start: Path) -> str:
    try:
        return path.resolve().relative_to(start.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def write_quantiles_csv(path: Path, series: dict[str, Sequence[float] | np.ndarray], unit: str) -> Path:
    """Write the CSV_QUANTILES of each series, one column per series; return `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {name: np.percentile(np.asarray(values, dtype=np.float64), CSV_QUANTILES) for name, values in series.items() if len(values)}
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["percentile", *(f"{name} ({unit})" for name in columns)])
        for index, quantile in enumerate(CSV_QUANTILES):
            writer.writerow([f"{quantile:.1f}", *(f"{values[index]:.3f}" for values in columns.values())])
    return path


def write_rows_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def hide_folder_argument(arguments: list[str], option: str) -> list[str]:
    """Return the arguments with the folder after `option` (as `--opt DIR` or `--opt=DIR`) replaced by FOLDER.

    A path of this machine means nothing to a reader of the report.
    """
    shown = []
    hide_next = False
    for argument in arguments:
        if hide_next:
            shown.append("FOLDER")
            hide_next = False
        elif argument.startswith(f"{option}="):
            shown.append(f"{option}=FOLDER")
        else:
            shown.append(argument)
            hide_next = argument == option
    return shown
