"""Offline speed: `sideman generate` in notes per second, and training throughput in tokens per second per epoch."""

import logging
import statistics
import time
from pathlib import Path

from bench.report import Row, Section, write_rows_csv

log = logging.getLogger(__name__)

GENERATE_TARGET = 20_000.0  # notes per second, greedy
TRAINING_STATE_SIZE = 64


def time_generate(notes: int, out_path: Path, model: str | None) -> float:
    """Run `sideman generate --sampler greedy` in this process; return its wall time in seconds.

    Calling the CLI's main function leaves out the interpreter's start-up and
    imports but keeps everything the command does: load the model, draw the
    notes, build and write the MIDI file.
    """
    from sideman.cli import main

    arguments = ["generate", "--notes", str(notes), "--sampler", "greedy", "--log-level", "warning", str(out_path)]
    if model:
        arguments[1:1] = ["--model", model]
    started = time.perf_counter()
    exit_code = main(arguments)
    elapsed = time.perf_counter() - started
    if exit_code != 0:
        raise RuntimeError(f"sideman generate exited with code {exit_code}")
    return elapsed


def time_drawing(notes: int, model: str | None) -> float:
    """Return the seconds render.draw_notes takes to draw `notes` notes greedily: generate without building the MIDI file."""
    from sideman.bundle import load_bundle
    from sideman.improviser import Improviser
    from sideman.plugins.samplers import Greedy
    from sideman.render import draw_notes
    from sideman.sampling import SamplerChain

    improviser = Improviser(load_bundle(model), SamplerChain([], Greedy()), seed=0)
    started = time.perf_counter()
    draw_notes(improviser, notes)
    return time.perf_counter() - started


def measure_training(wjazzd: Path, workdir: Path, quick: bool) -> tuple[list[int], int, int]:
    """Train n_a = 64 on the WJazzD solos; return (tokens per second of each epoch, pieces, epochs).

    Quick mode trains one epoch on the first 30 pieces, full mode two epochs on all.
    """
    from sideman.corpus import read_corpus
    from sideman.training import TrainingSettings, train

    pieces = read_corpus([wjazzd])
    if quick:
        pieces = pieces[:30]
    epochs = 1 if quick else 2
    # Patience above the epoch count: early stopping must not end the run before the epochs are timed.
    settings = TrainingSettings(n_a=TRAINING_STATE_SIZE, max_epochs=epochs, patience=epochs + 1, lr_patience=epochs + 1)
    bundle = train(pieces, settings, workdir / "throughput.sideman", sources=[str(wjazzd)], name="throughput benchmark")
    return list(bundle.metadata["training"]["tokens_per_second"]), len(pieces), epochs


def run_offline_benchmark(workdir: Path, csv_dir: Path, quick: bool, model: str | None, wjazzd: Path | None) -> Section:
    notes = 2_000 if quick else 20_000
    runs = 3
    times = [time_generate(notes, workdir / "generated.mid", model) for _ in range(runs)]
    rates = [notes / seconds for seconds in times]
    log.info("generate: %s notes per second", ", ".join(f"{rate:,.0f}" for rate in rates))

    rows = [Row(f"`sideman generate --sampler greedy --notes {notes:,}` (median of {runs})", "notes/s", value=statistics.median(rates),
                target=f">= {GENERATE_TARGET:,.0f} notes/s", met=statistics.median(rates) >= GENERATE_TARGET)]
    drawing = notes / time_drawing(notes, model)
    rows.append(Row("drawing the notes only (render.draw_notes, greedy)", "notes/s", value=drawing, ratio=f"generate reaches {statistics.median(rates) / drawing:.0%} of this rate"))
    notes_text = [
        f"Generate runs in the benchmark's process through the CLI's main function, so the rate leaves out interpreter start-up "
        f"and imports but includes loading the model, drawing {notes:,} notes (rests on top) and writing the MIDI file. "
        "The drawing row times the model and sampler alone; the rest of generate's time is building and writing the MIDI file.",
    ]
    samples = [("generate", f"{seconds:.4f}", f"{notes / seconds:.0f}") for seconds in times]

    if wjazzd is None:
        rows.append(Row("training throughput, n_a = 64", "tokens/s"))
        notes_text.append("Training throughput not measured: pass the Weimar Jazz Database folder with `--wjazzd FOLDER`.")
    else:
        log.info("training throughput on %s", wjazzd)
        per_epoch, pieces, epochs = measure_training(wjazzd, workdir, quick)
        for epoch, rate in enumerate(per_epoch, start=1):
            rows.append(Row(f"training, n_a = {TRAINING_STATE_SIZE}, epoch {epoch} of {epochs} ({pieces} pieces)", "tokens/s", value=rate))
            samples.append((f"training epoch {epoch}", "", str(rate)))
        notes_text.append(
            f"Training: `sideman train` settings with n_a = {TRAINING_STATE_SIZE} on {pieces} WJazzD solos, {epochs} epoch(s); "
            "tokens per second per epoch is the number of target tokens over the wall time of Keras's fit for that epoch, "
            "validation included, as the bundle's metadata records it. The first epoch includes TensorFlow's graph tracing."
        )

    section = Section("Offline", rows=rows, notes=notes_text)
    section.csv_files.append(write_rows_csv(csv_dir / "offline.csv", ("figure", "seconds", "per second"), samples))
    return section
