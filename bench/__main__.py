"""`python -m bench [--quick] [--out docs/benchmarks.md] [--wjazzd FOLDER] [--only SECTION]`: measure every figure in one run.

Prints the tables, writes the report page and the samples as CSV files in
a `bench` folder beside it. Run it from the repository root with the
project's virtual environment. It needs TensorFlow (the train extra) and
jackd (Debian package jackd2), but no sound hardware.

The soak run, 30 minutes of play under random changes with the output
port closing every 5 minutes, is a separate command: `python -m bench.soak`.
"""

import argparse
import logging
import shlex
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.machine import describe_machine, load_average
from bench.clocksync import run_clock_sync_benchmark
from bench.live import BENCH_PORT_MAX, private_jack_server
from bench.offline import run_offline_benchmark
from bench.onsets import run_onset_benchmark
from bench.ready import run_ready_benchmark
from bench.report import RunInfo, Section, format_report, format_sections, hide_folder_argument
from bench.step import StepCounts, benchmark_model, run_step_benchmark

log = logging.getLogger("bench")

DEFAULT_OUT = Path("docs/benchmarks.md")
# Sections in the order of the report. The live ones share one private JACK server.
SECTIONS = ("step", "onsets", "ready", "clock", "offline")
LIVE_SECTIONS = {"onsets", "ready", "clock"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Measure sideman's step latency, onset timing, start-up, MIDI clock sync and offline speed in one run.",
        epilog="The soak run (30 minutes under random changes, live phrases and output port closings) is separate: python -m bench.soak --help",
    )
    parser.add_argument("--quick", action="store_true", help="shortened runs (under 2 minutes instead of about 24), marked as such in the report")
    parser.add_argument("--out", type=Path, help="report page to write; the CSV files go to a `bench` folder beside it (default: docs/benchmarks.md)")
    parser.add_argument("--wjazzd", type=Path, metavar="FOLDER", help="Weimar Jazz Database folder for the training throughput (default: that row is skipped)")
    parser.add_argument("--model", metavar="PATH", help="model bundle to measure (default: the built-in model)")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, metavar="SECTION",
        help=f"run only this section, one of {', '.join(SECTIONS)}, and repeat it for several. Needs --out, because the report then has only those sections",
    )
    return parser


def shown_arguments(arguments: list[str]) -> list[str]:
    """Return the arguments as the report shows them, with the folder after --wjazzd hidden."""
    return hide_folder_argument(arguments, "--wjazzd")


def run_live_sections(selected: set[str], workdir: Path, csv_dir: Path, quick: bool, model: str | None) -> list[Section]:
    """Run the selected sections that play into a receiver, on one private JACK server: onset timing, start-up, clock sync."""
    sections = []
    onset_rss: list[int] = []
    with private_jack_server(workdir, port_max=BENCH_PORT_MAX):
        if "onsets" in selected:
            onset_section, onset_results = run_onset_benchmark(workdir, csv_dir, quick, model)
            onset_rss = [result.peak_rss_kb for result in onset_results if result.peak_rss_kb is not None]
            sections.append(onset_section)
        if "ready" in selected:
            sections.append(run_ready_benchmark(workdir, csv_dir, quick, model, onset_rss))
        if "clock" in selected:
            sections.append(run_clock_sync_benchmark(workdir, csv_dir, quick, model))
    return sections


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.only and args.out is None:
        parser.error(f"--only writes a report of some sections only: give it its own page with --out, so that {DEFAULT_OUT} keeps the full run")
    out = args.out or DEFAULT_OUT
    selected = set(args.only or SECTIONS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    command = shlex.join(["python", "-m", "bench", *shown_arguments(sys.argv[1:] if argv is None else argv)])
    csv_dir = out.parent / "bench"

    started_at = datetime.now().astimezone().isoformat(timespec="seconds")
    started = time.perf_counter()
    load_before = load_average()
    machine = describe_machine()
    log.info("benchmark starting (%s), load average %.2f", "quick" if args.quick else "full", load_before[0])

    sections = []
    if "step" in selected:
        bundle, model_description = benchmark_model(args.model)
        counts = StepCounts.quick() if args.quick else StepCounts()
        sections.append(run_step_benchmark(bundle, model_description, counts, csv_dir))

    with tempfile.TemporaryDirectory(prefix="sideman-bench-") as folder:
        workdir = Path(folder)
        if selected & LIVE_SECTIONS:
            sections += run_live_sections(selected, workdir, csv_dir, args.quick, args.model)
        if "offline" in selected:
            sections.append(run_offline_benchmark(workdir, csv_dir, args.quick, args.model, args.wjazzd))

    run = RunInfo(command, started_at, time.perf_counter() - started, args.quick, load_before, load_average())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(format_report(machine, run, sections, out), encoding="utf-8")

    print(format_sections(sections))
    print(f"Load average at the start {load_before[0]:.2f}, at the end {run.load_after[0]:.2f}; took {run.seconds / 60:.1f} minutes.")
    print(f"Wrote {out} and the samples in {csv_dir}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
