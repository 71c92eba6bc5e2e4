"""`python -m bench.soak [--minutes 30] [--out docs/soak.md]`: play for a long time under steady change and check what wears.

The daemon plays at 208 BPM on a private JACK server (dummy driver, 48 kHz,
64 frames) into a receiver in this process, while:

- an OSC client on 127.0.0.1 sends one random change every 100 ms: tempo
  200-240 BPM, temperature, top_k and top_p parameters, sampler chains,
  swing, humanize, seed, and a phrase seeder with a random phrase;
- a JACK MIDI sender connected to sideman-in:in plays a short phrase every
  few bars; during the middle third of the run the `live` seeder listens in
  call-and-response mode and answers those phrases, the rest of the time the
  daemon ignores them and plays its own line;
- every 5 minutes the receiver closes its whole JACK client and opens it
  again under the same name about 2 s later. The daemon was started with
  `--midi-out` naming that port, and the report shows whether notes arrive
  after the port returns.

The report gives the notes played and received, the note_on/note_off
balance per pitch at the receiver, VmRSS over the run, the daemon's
warnings grouped by kind, the onset error, late onsets and the reconnections
the daemon logged. It is not part of CI: a full run takes its 30 minutes.
"""

import argparse
import logging
import shlex
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from bench.live import private_jack_server
from bench.machine import describe_machine, load_average
from bench.report import format_table, hide_folder_argument
from bench.soak_log import count_xruns
from bench.soak_report import analyse, format_soak_page
from bench.soak_run import Schedule, run_soak

log = logging.getLogger(__name__)

DISCONNECT_MINUTES = 5.0  # minutes between two closings of the receiver's port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Play for a long time under random OSC changes, live phrases and output port closings; "
        "report note balance, memory, warnings, onset error and reconnections.",
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the run from the first note, in minutes (default: 30)")
    parser.add_argument("--out", type=Path, default=Path("docs/soak.md"), help="report page to write; the CSV files go to a `soak` folder beside it (default: docs/soak.md)")
    parser.add_argument("--disconnect-minutes", type=float, default=DISCONNECT_MINUTES, help=f"minutes between two closings of the receiver's port (default: {DISCONNECT_MINUTES:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random OSC changes and live phrases (default: 0)")
    parser.add_argument("--model", metavar="PATH", help="model bundle to play (default: the built-in model)")
    parser.add_argument("--keep", type=Path, metavar="FOLDER", help="folder for the daemon's log, its --show output and the JACK server's log, kept after the run (default: a temporary folder, deleted)")
    return parser


def shown_arguments(arguments: list[str]) -> list[str]:
    """Return the arguments as the report shows them, with the folder after --keep hidden."""
    return hide_folder_argument(arguments, "--keep")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.minutes < 1.0:
        parser.error(f"--minutes {args.minutes:g} is too short: a run needs at least 1 minute, for the warm-up of VmRSS")
    if args.disconnect_minutes <= 0:
        parser.error(f"--disconnect-minutes {args.disconnect_minutes:g} is invalid: it must be above 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    command = shlex.join(["python", "-m", "bench.soak", *shown_arguments(sys.argv[1:] if argv is None else argv)])
    csv_dir = args.out.parent / "soak"
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    load_before = load_average()
    machine = describe_machine()
    schedule = Schedule.for_minutes(args.minutes, args.disconnect_minutes)
    closings = ", ".join(f"{at:.0f} s" for at in schedule.disconnects) or "none"
    log.info("soak starting: %.1f minutes, port closings at: %s", args.minutes, closings)

    with tempfile.TemporaryDirectory(prefix="sideman-soak-") as folder:
        workdir = Path(folder) if args.keep is None else args.keep
        workdir.mkdir(parents=True, exist_ok=True)
        with private_jack_server(workdir):
            run = run_soak(workdir, schedule, args.model, args.seed)
        run.jack_xruns = count_xruns(workdir / "jackd.log")

    report = analyse(run, csv_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    page = format_soak_page(machine, command, started, run.seconds / 60, (load_before, load_average()), report, args.out)
    args.out.write_text(page, encoding="utf-8")

    print(format_table(report.rows))
    print(f"Wrote {args.out} and the samples in {csv_dir}.")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
