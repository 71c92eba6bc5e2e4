"""`python -m bench [--quick] [--out docs/benchmarks.md] [--wjazzd FOLDER]`: measure every figure in one run.

Prints the tables, writes the report page and the samples as CSV files in
a `bench` folder beside it. Run it from the repository root with the
project's virtual environment. It needs TensorFlow (the train extra) and
jackd (Debian package jackd2), but no sound hardware.
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
from bench.live import private_jack_server
from bench.offline import run_offline_benchmark
from bench.onsets import run_onset_benchmark
from bench.ready import run_ready_benchmark
from bench.report import RunInfo, format_report, format_sections
from bench.step import StepCounts, benchmark_model, run_step_benchmark

log = logging.getLogger("bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Measure sideman's step latency, onset timing, start-up and offline speed in one run.")
    parser.add_argument("--quick", action="store_true", help="shortened runs (about 2 minutes instead of about 20); the report says so")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"), help="report page to write; the CSV files go to a `bench` folder beside it (default: docs/benchmarks.md)")
    parser.add_argument("--wjazzd", type=Path, metavar="FOLDER", help="Weimar Jazz Database folder for the training throughput (default: that row is skipped)")
    parser.add_argument("--model", metavar="PATH", help="model bundle to measure (default: the built-in model)")
    return parser


def shown_arguments(arguments: list[str]) -> list[str]:
    """Return the arguments with the corpus folder after --wjazzd replaced by FOLDER: a path of this machine means nothing to a reader."""
    shown = []
    hide_next = False
    for argument in arguments:
        if hide_next:
            shown.append("FOLDER")
            hide_next = False
        elif argument.startswith("--wjazzd="):
            shown.append("--wjazzd=FOLDER")
        else:
            shown.append(argument)
            hide_next = argument == "--wjazzd"
    return shown


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    command = shlex.join(["python", "-m", "bench", *shown_arguments(sys.argv[1:] if argv is None else argv)])
    csv_dir = args.out.parent / "bench"

    started_at = datetime.now().astimezone().isoformat(timespec="seconds")
    started = time.perf_counter()
    load_before = load_average()
    machine = describe_machine()
    log.info("benchmark starting (%s), load average %.2f", "quick" if args.quick else "full", load_before[0])

    bundle, model_description = benchmark_model(args.model)
    counts = StepCounts.quick() if args.quick else StepCounts()
    step_section = run_step_benchmark(bundle, model_description, counts, csv_dir)

    with tempfile.TemporaryDirectory(prefix="sideman-bench-") as folder:
        workdir = Path(folder)
        with private_jack_server(workdir):
            onset_section, onset_results = run_onset_benchmark(workdir, csv_dir, args.quick, args.model)
            onset_rss = [result.peak_rss_kb for result in onset_results if result.peak_rss_kb is not None]
            ready_section = run_ready_benchmark(workdir, csv_dir, args.quick, args.model, onset_rss)
        offline_section = run_offline_benchmark(workdir, csv_dir, args.quick, args.model, args.wjazzd)

    sections = [step_section, onset_section, ready_section, offline_section]
    run = RunInfo(command, started_at, time.perf_counter() - started, args.quick, load_before, load_average())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(format_report(machine, run, sections, args.out), encoding="utf-8")

    print(format_sections(sections))
    print(f"Load average at the start {load_before[0]:.2f}, at the end {run.load_after[0]:.2f}; took {run.seconds / 60:.1f} minutes.")
    print(f"Wrote {args.out} and the samples in {csv_dir}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
