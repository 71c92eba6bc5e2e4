"""Ready to play: start-up time to the first note, peak memory of the running daemon, import time of `sideman --help`."""

import logging
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.live import BENCH_PORT_MAX, DaemonRun, private_jack_server
from tests.jack import JackServerError
from bench.report import Row, Section, write_rows_csv

log = logging.getLogger(__name__)

READY_TARGET_S = 1.0
RSS_TARGET_MB = 150.0
HELP_TARGET_S = 0.3
PLAY_BEFORE_RSS = 2.0  # seconds the daemon plays before its peak RSS is read
# `python -X importtime` line of a module: "import time: self [us] | cumulative | name".
IMPORTTIME_LINE = re.compile(r"^import time:\s+\d+ \|\s+(?P<cumulative>\d+) \|\s*(?P<name>\S+)")


def time_to_first_note(workdir: Path, index: int, model: str | None) -> tuple[float, int | None, int | None]:
    """Start `sideman run`; return seconds from the start to the first note_on received, peak RSS in kB, and the RSS of JACK's shared memory in it."""
    arguments = ["--model", model] if model else []
    with DaemonRun(workdir, f"ready-{index}", arguments) as run:
        first_note = run.wait_for_first_note()
        time.sleep(PLAY_BEFORE_RSS)
        peak_rss = run.read_peak_rss()
        jack_rss = jack_shared_memory_rss_kb(run.process.pid)
    return first_note - run.started, peak_rss, jack_rss


def jack_shared_memory_rss_kb(pid: int) -> int | None:
    """Return the resident kB of the JACK server's shared memory segments (/dev/shm/jack-*) mapped into process `pid`.

    The server allocates and fills them; every client maps them whole, so
    they count in each client's RSS whatever the client does.
    """
    total = 0
    in_jack_mapping = False
    try:
        with open(f"/proc/{pid}/smaps", encoding="utf-8") as smaps:
            for line in smaps:
                fields = line.split()
                if "-" in fields[0] and len(fields) >= 5:
                    in_jack_mapping = len(fields) >= 6 and fields[5].startswith("/dev/shm/jack-")
                elif in_jack_mapping and fields[0] == "Rss:":
                    total += int(fields[1])
    except OSError as error:
        log.warning("cannot read the memory map of process %d: %s", pid, error)
        return None
    return total


# A process that loads the libraries the daemon runs on, opens one
# python-rtmidi JACK output as the daemon does, and prints its peak RSS in kB:
# the daemon's memory before any code or data of sideman's.
STACK_ONLY_CLIENT = """
import mido, numpy, pythonosc.osc_message, rtmidi
port = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="sideman-bench-stack")
port.open_virtual_port("out")
with open("/proc/self/status", encoding="utf-8") as status:
    print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
port.close_port()
port.delete()
"""


def stack_only_rss_kb() -> int:
    """Return the peak RSS in kB of a Python process with numpy, mido, python-osc and one JACK MIDI output, and nothing of sideman."""
    result = subprocess.run([sys.executable, "-c", STACK_ONLY_CLIENT], capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL, timeout=30)
    return int(result.stdout.split()[0])


def unset_segment_note(jack_kb: int | None) -> str:
    """Say how much of the daemon's RSS JACK's segment takes on the server started without --port-max."""
    if jack_kb is None:
        return "."
    return (
        f": there JACK's shared memory alone takes {jack_kb / 1024:.1f} MB of the daemon's RSS, because jackd2 then makes "
        "room for 2,048 ports where its manual page states a default of 256."
    )


def sideman_command() -> list[str]:
    """Return the installed `sideman` script beside this interpreter, or `python -m sideman.cli`."""
    script = Path(sys.executable).with_name("sideman")
    if script.exists():
        return [str(script)]
    found = shutil.which("sideman")
    return [found] if found else [sys.executable, "-m", "sideman.cli"]


def time_help(runs: int) -> list[float]:
    """Return the wall time in seconds of each of `runs` calls of `sideman --help`, after one untimed call."""
    command = [*sideman_command(), "--help"]
    subprocess.run(command, capture_output=True, check=True, stdin=subprocess.DEVNULL)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return times


def cli_import_seconds() -> float:
    """Return the cumulative import time of sideman.cli in seconds, from `python -X importtime`."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import sideman.cli"],
        capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL,
    )
    for line in result.stderr.splitlines():
        match = IMPORTTIME_LINE.match(line)
        if match and match["name"] == "sideman.cli":
            return int(match["cumulative"]) / 1e6
    raise RuntimeError(f"python -X importtime printed no line for sideman.cli:\n{result.stderr[-2000:]}")


def run_ready_benchmark(workdir: Path, csv_dir: Path, quick: bool, model: str | None, extra_rss_kb: list[int]) -> Section:
    """Measure start-up to the first note (several daemon starts), the peak RSS and the CLI's start-up for --help.

    `extra_rss_kb` contains peak RSS readings of other daemon runs (the onset
    runs, which play much longer); the row reports the largest of all.
    """
    starts = 1 if quick else 5
    ready, rss, own = [], [], []
    for index in range(starts):
        seconds, peak, jack_kb = time_to_first_note(workdir, index, model)
        log.info("ready to play: first note after %.3f s, peak RSS %s kB, of which JACK's shared memory %s kB", seconds, peak, jack_kb)
        ready.append(seconds)
        if peak is not None:
            rss.append(peak)
            if jack_kb is not None:
                own.append(peak - jack_kb)

    # One more start on a server started without --port-max, in a JACK server of its own.
    unset_peak, unset_jack_kb = None, None
    try:
        with private_jack_server(workdir, port_max=None):
            _, unset_peak, unset_jack_kb = time_to_first_note(workdir, starts, model)
    except JackServerError as error:
        log.warning("no second JACK server for the row without --port-max: %s", error)

    help_times = time_help(3 if quick else 7)
    import_seconds = cli_import_seconds()
    peak_mb = max(rss + extra_rss_kb) / 1024 if rss or extra_rss_kb else None
    stack_mb = stack_only_rss_kb() / 1024

    rows = [
        Row(f"start of `sideman run` to first note_on received (median of {starts})", "s", value=statistics.median(ready),
            maximum=max(ready), target=f"<= {READY_TARGET_S:g} s", met=max(ready) <= READY_TARGET_S),
        Row(f"peak RSS of the daemon (VmHWM, largest of {len(rss) + len(extra_rss_kb)} runs)", "MB", value=peak_mb,
            target=f"<= {RSS_TARGET_MB:g} MB", met=None if peak_mb is None else peak_mb <= RSS_TARGET_MB),
        Row("peak RSS of a Python process with numpy, mido, python-osc and one python-rtmidi JACK output, no sideman", "MB",
            value=stack_mb, ratio="" if peak_mb is None else f"{stack_mb / peak_mb:.0%} of the daemon's"),
        Row(f"the daemon's own memory: peak RSS minus JACK's shared memory (largest of {len(own)} runs)", "MB",
            value=max(own) / 1024 if own else None),
        Row("peak RSS of the daemon on a JACK server started without --port-max", "MB",
            value=unset_peak / 1024 if unset_peak is not None else None),
        Row(f"`sideman --help`, whole process (median of {len(help_times)})", "s", value=statistics.median(help_times),
            maximum=max(help_times), target=f"<= {HELP_TARGET_S:g} s", met=statistics.median(help_times) <= HELP_TARGET_S),
        Row("import of sideman.cli alone (`python -X importtime`)", "s", value=import_seconds),
    ]
    notes = [
        "Start-up: wall time from just before the `sideman run` process starts (built-in model, `--midi-out` to the receiver, "
        "autoplay) to the time the receiver's reader thread took the first note_on, on the same clock. The result compares the slowest start with the target. "
        f"Peak RSS is /proc/PID/status VmHWM of the daemon, read {PLAY_BEFORE_RSS:g} s after its first note and at the end of each onset run. "
        f"The JACK server is the benchmark's private one, started with --port-max {BENCH_PORT_MAX}. "
        "The next row is a Python process that imports the libraries the daemon runs on and opens one python-rtmidi "
        "JACK output on the same server: the daemon's memory before any code or data of sideman's. "
        "Much of it is the JACK server's shared memory segment (/dev/shm/jack-*, sized by the server for its maximum "
        "number of ports), which every client maps whole; the row after it subtracts that segment's resident pages, "
        "read from /proc/PID/smaps, from the daemon's peak RSS. "
        "The last memory row starts the daemon once more on a second private JACK server started without --port-max"
        + unset_segment_note(unset_jack_kb) + " "
        "`sideman --help` is timed as a whole process (interpreter start-up included) with the installed script, after one untimed call.",
    ]
    section = Section("Ready to play", rows=rows, notes=notes)
    samples = [("first note", f"{value:.4f}") for value in ready] + [("sideman --help", f"{value:.4f}") for value in help_times]
    section.csv_files.append(write_rows_csv(csv_dir / "ready.csv", ("figure", "seconds"), samples))
    return section
