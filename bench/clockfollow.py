"""`python -m bench.clockfollow`: how far the MIDI clock follower's predicted onsets lie from the ideal ones.

A steady and a jittered clock (each pulse moved by a uniform random offset
of up to +-2 ms) at 120 BPM are fed to a ClockFollower for 60 s of pulses,
after a Start. Each sixteenth is predicted with `time_at` after the pulse
before its own, as the engine schedules it, and compared with its ideal
time. The first 2 beats, while the fit window fills, are left out. Pure
computation: no ports, no sleeps.
"""

import argparse
import shlex
import sys

import numpy as np

from sideman.clockfollow import ClockFollower

PULSES_PER_BEAT = 24
PULSES_PER_SIXTEENTH = 6
WARM_UP_PULSES = 48  # 2 beats: the fit window fills
START_TIME = 1000.0  # clock reading of the first pulse, in seconds


def onset_errors(bpm: float, seconds: float, jitter_ms: float, seed: int) -> np.ndarray:
    """Return the predicted minus ideal onset of every sixteenth after the warm-up, in ms."""
    rng = np.random.default_rng(seed)
    follower = ClockFollower()
    follower.start(START_TIME - 0.001)
    interval = 60.0 / (bpm * PULSES_PER_BEAT)
    jitter = jitter_ms / 1000.0
    errors = []

    for index in range(int(seconds / interval)):
        ideal = START_TIME + index * interval
        if index % PULSES_PER_SIXTEENTH == 0 and index >= WARM_UP_PULSES:
            errors.append(follower.time_at(index / PULSES_PER_BEAT) - ideal)
        follower.pulse(ideal + (rng.uniform(-jitter, jitter) if jitter else 0.0))

    return np.array(errors) * 1000.0


def format_row(name: str, errors_ms: np.ndarray) -> str:
    magnitudes = np.abs(errors_ms)
    p50, p99 = np.percentile(magnitudes, [50, 99])
    return f"| {name} | {len(errors_ms)} | {p50:.4f} | {p99:.4f} | {magnitudes.max():.4f} | {errors_ms.std():.4f} |"


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.clockfollow", description="Measure the MIDI clock follower's onset error for a steady and a jittered clock.")
    parser.add_argument("--bpm", type=positive_float, default=120.0, help="tempo of the clock in BPM (default: 120)")
    parser.add_argument("--seconds", type=positive_float, default=60.0, help="seconds of pulses per clock (default: 60)")
    parser.add_argument("--jitter-ms", type=float, default=2.0, help="largest offset of a jittered pulse in ms, uniform in +-this (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the jitter (default: 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(arguments)
    command = shlex.join(["python", "-m", "bench.clockfollow", *arguments])

    print(f"Command: {command}")
    print(f"Onset error of each sixteenth, predicted after the pulse before it, at {args.bpm:g} BPM over {args.seconds:g} s; |error| in ms.")
    print()
    print("| clock | sixteenths | p50 | p99 | max | std |")
    print("|---|---|---|---|---|---|")
    print(format_row("steady", onset_errors(args.bpm, args.seconds, 0.0, args.seed)))
    print(format_row(f"+-{args.jitter_ms:g} ms jitter", onset_errors(args.bpm, args.seconds, args.jitter_ms, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
