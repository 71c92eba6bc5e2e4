"""Smoke tests of the benchmark command's code: the report and the step benchmark with tiny counts.

No timing is asserted: the figures themselves are the benchmark's business.
"""

from pathlib import Path

import numpy as np
import pytest

from bench.__main__ import shown_arguments
from bench.live import parse_show_output
from bench.machine import Machine
from bench.onsets import Phase, PhaseResult, input_share_notes, onset_errors, phases, snap_to_grid
from bench.report import Row, RunInfo, Section, format_number, format_report, format_table
from bench.step import StepCounts, default_chain, measure_tensorflow_steps, random_bundle, run_step_benchmark, synthetic_vocabulary

TINY = StepCounts(steps=20, eager_steps=3, predict_calls=2, unrolled_calls=1, unrolled_ty=3, warmup=2)


def fake_machine() -> Machine:
    return Machine("Test CPU", 2, "Linux test x86_64", "3.11.0", {"numpy": "2.0"}, "jackd version 1.9")


def test_table_shows_figures_and_verdicts():
    rows = [
        Row("live step", "us", p50=12.345, p99=48.0, maximum=1234.5, target="p99 <= 50 us", met=True),
        Row("generate", "notes/s", value=7421.9, target=">= 20,000 notes/s", met=False),
        Row("training", "tokens/s"),
    ]

    lines = format_table(rows).splitlines()

    assert lines[0].startswith("| figure | p50 | p99 | max |")
    assert "| live step | 12.3 | 48.0 | 1,234 | - | us |" in lines[2]
    assert lines[2].endswith("| met |")
    assert "| 7,422 |" in lines[3]
    assert lines[3].endswith("| missed |")
    assert lines[4].endswith("|  |")


def test_number_format_keeps_three_digits():
    assert format_number(0.000123456) == "0.000123"
    assert format_number(3.14159) == "3.14"
    assert format_number(float("nan")) == "-"
    assert format_number(None) == "-"


def test_report_names_command_machine_and_csv(tmp_path: Path):
    csv_path = tmp_path / "bench" / "step_latency.csv"
    section = Section("Step latency per note", [Row("live step", "us", p50=40.0, p99=45.0, maximum=60.0)], ["A note."], [csv_path])
    run = RunInfo("python -m bench --quick", "2026-01-01T10:00:00+00:00", 95.0, True, (0.5, 0.4, 0.3), (1.5, 0.6, 0.4))

    text = format_report(fake_machine(), run, [section], tmp_path / "benchmarks.md")

    assert "`python -m bench --quick` (quick mode" in text
    assert "Test CPU, 2 cores" in text
    assert "at the start: 0.50, 0.40, 0.30; at the end: 1.50, 0.60, 0.40" in text
    assert "numpy 2.0" in text
    assert "[step_latency.csv](bench/step_latency.csv)" in text
    assert "A note." in text


def test_step_benchmark_runs_with_tiny_counts(tmp_path: Path):
    bundle = random_bundle(8, synthetic_vocabulary(36))

    section = run_step_benchmark(bundle, "tiny random model", TINY, tmp_path, with_tensorflow=False)

    names = [row.figure for row in section.rows]
    assert names[0] == "live step"
    assert "live step, random n_a = 256" in names
    assert "floor" in names
    assert all(row.p50 > 0 and row.p99 >= row.p50 and row.maximum >= row.p99 for row in section.rows)
    assert section.rows[0].met is not None
    lines = (tmp_path / "step_latency.csv").read_text().splitlines()
    assert len(lines) == 1 + 1001
    assert lines[0].startswith("percentile,live step (us)")


@pytest.mark.tensorflow
def test_tensorflow_steps_run_with_tiny_counts():
    pytest.importorskip("tensorflow")
    bundle = random_bundle(8, synthetic_vocabulary(36))

    samples = measure_tensorflow_steps(bundle, default_chain(), TINY)

    assert set(samples) == {"Keras layers, eager", "tf.function step", "model.predict per note", "music_inference_model(Ty=3).predict / 3"}
    assert len(samples["Keras layers, eager"]) == TINY.eager_steps
    assert len(samples["model.predict per note"]) == TINY.predict_calls
    assert all((values > 0).all() for values in samples.values())


def test_show_output_parsed_and_snapped_to_grid():
    text = "   0.000 s  C4    0.25 beats\n   0.062 s  D#4   0.08 beats\nsome other line\n   0.083 s  r     0.50 beats\n"

    notes = parse_show_output(text)

    assert [(note.name, note.beats) for note in notes] == [("C4", 0.25), ("D#4", 0.08), ("r", 0.5)]
    snapped = snap_to_grid(np.array([note.seconds for note in notes]), tempo=240.0, steps_per_beat=12)
    np.testing.assert_allclose(snapped, [0.0, 3 / 48, 4 / 48])


def test_onset_errors_remove_constant_latency():
    ideal = np.array([0.0, 0.25, 0.5, 0.75])
    arrivals = ideal + 10.0 + np.array([0.0, 0.001, 0.0, -0.0005])

    errors = onset_errors(ideal, arrivals)

    np.testing.assert_allclose(errors, [0.0, 1.0, 0.0, -0.5], atol=1e-6)


def phase_result(phase: Phase, errors_ms: list[float]) -> PhaseResult:
    errors = np.array(errors_ms)
    empty = np.empty(0)
    return PhaseResult(
        phase=phase, ideal=np.arange(len(errors)) * 0.25, jack_errors=errors, wall_errors=errors, send_errors=empty,
        names_mismatched=0, unmatched=0, durations=empty, status={}, peak_rss_kb=None,
    )


def test_input_share_compares_same_load():
    loaded, loaded_off, flood, _ = [phase for phase in phases(quick=True) if phase.load != "none"]
    results = [
        phase_result(loaded, [3.0] * 100),
        phase_result(loaded_off, [2.0] * 100),
        phase_result(flood, [1.0] * 100),
    ]

    notes = input_share_notes(results)

    assert len(notes) == 1
    assert "second core busy:" in notes[0]
    assert "a ratio of 1.5" in notes[0]


def test_every_load_has_an_input_off_phase():
    for quick in (True, False):
        loads = [(phase.load, phase.midi_input) for phase in phases(quick) if phase.load != "none"]

        assert sorted(loads) == [("busy core", False), ("busy core", True), ("osc flood", False), ("osc flood", True)]


def test_command_hides_corpus_folder():
    assert shown_arguments(["--quick", "--wjazzd", "/data/wjazzd"]) == ["--quick", "--wjazzd", "FOLDER"]
    assert shown_arguments(["--wjazzd=/data/wjazzd"]) == ["--wjazzd=FOLDER"]
    assert shown_arguments(["--out", "docs/benchmarks.md"]) == ["--out", "docs/benchmarks.md"]
