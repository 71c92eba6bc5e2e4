"""Tests of the sampler table: its statistics on hand-made lines, and whole runs on a small random model."""

from pathlib import Path

import pytest

from bench.samplers import (
    DEFAULT_PHRASE,
    ChainResult,
    ChainSpec,
    LineStatistics,
    SamplerTable,
    estimate_phrase_key,
    format_page,
    format_table,
    line_statistics,
    longest_run,
    main,
    measure_chains,
    measured_chains,
    summarize,
)
from sideman.errors import InvalidInputError
from sideman.plugins.scale import Key
from tests.factories import random_bundle

F_MAJOR = Key(5, "major")
C4, D4, E4, F4, Gb4, G4, A4, Bb4, B4, C5 = 60, 62, 64, 65, 66, 67, 69, 70, 71, 72


def test_share_in_key_counts_scale_notes():
    # B4 and Gb4 are outside F major; the rest is inside.
    line = [F4, A4, C5, B4, Gb4, G4, Bb4, E4]

    statistics = line_statistics(line, F_MAJOR)

    assert statistics.notes == 8
    assert statistics.in_key_share == pytest.approx(6 / 8)


def test_share_in_key_uses_natural_minor():
    # D natural minor has Bb and C, not B or C#.
    d_minor = Key(2, "minor")

    statistics = line_statistics([D4, Bb4, C5, B4], d_minor)

    assert statistics.in_key_share == pytest.approx(3 / 4)


def test_rests_are_not_notes():
    statistics = line_statistics([None, F4, None, None, C5, None], F_MAJOR)

    assert statistics.notes == 2
    assert statistics.in_key_share == 1.0


def test_longest_run_ignores_rests():
    assert longest_run([F4, F4, None, F4, G4, G4, None]) == 3


def test_longest_run_counts_pitch_changes():
    assert longest_run([F4, G4, G4, F4, F4, F4, F4, A4]) == 4
    assert longest_run([F4, G4, A4]) == 1
    assert longest_run([None, None]) == 0


def test_range_names_and_distinct_pitches():
    statistics = line_statistics([G4, C4, None, Bb4, C5, G4, C4], F_MAJOR)

    assert statistics.lowest == C4
    assert statistics.highest == C5
    assert statistics.range_semitones == 12
    assert statistics.distinct == 4


def test_line_of_rests_is_rejected():
    with pytest.raises(ValueError, match="no notes"):
        line_statistics([None, None], F_MAJOR)


def test_default_phrase_is_in_f_major():
    assert estimate_phrase_key(DEFAULT_PHRASE) == F_MAJOR


def test_phrase_key_follows_the_phrase():
    assert estimate_phrase_key("A3:1 C4:1 E4:1 A4:2 G#4:0.5 B4:0.5 E4:1") == Key(9, "minor")


def test_phrase_without_key_is_rejected():
    with pytest.raises(InvalidInputError, match="cannot estimate the key"):
        estimate_phrase_key("r:1 r:2")


def test_fixed_scale_chain_uses_phrase_key():
    specs = measured_chains(Key(7, "minor"))

    fixed = [spec for spec in specs if spec.names == ("scale", "greedy")]

    assert fixed == [ChainSpec(("scale", "greedy"), {"scale": {"key": "G minor"}})]


def test_run_draws_every_chain_to_the_note_count():
    table = measure_chains(random_bundle(), DEFAULT_PHRASE, notes=30, seed=3)

    assert [result.chain for result in table.results] == [" ".join(spec.names) for spec in measured_chains(F_MAJOR)]
    assert all(result.statistics.notes == 30 for result in table.results)
    assert table.key == F_MAJOR
    assert table.model == "random test model"


def test_run_is_deterministic_for_a_seed():
    first = measure_chains(random_bundle(), DEFAULT_PHRASE, notes=40, seed=7)
    second = measure_chains(random_bundle(), DEFAULT_PHRASE, notes=40, seed=7)

    assert first == second


def test_filters_act_on_the_line():
    # The random model ignores keys and ranges, so only the filters keep the line inside them.
    chains = [
        ChainSpec(("scale", "greedy"), {"scale": {"key": "F major"}}),
        ChainSpec(("range", "temperature"), {"range": {"low": 62, "high": 66}}),
        ChainSpec(("repetition", "greedy"), {"repetition": {"max_repeats": 1}}),
    ]

    table = measure_chains(random_bundle(), DEFAULT_PHRASE, notes=50, seed=1, chains=chains)
    scale, pitch_range, repetition = (result.statistics for result in table.results)

    assert scale.in_key_share == 1.0
    assert pitch_range.lowest >= 62
    assert pitch_range.highest <= 66
    assert repetition.longest_run == 1


def test_table_lists_changed_params_only():
    chains = [ChainSpec(("greedy",)), ChainSpec(("top_k", "temperature"), {"top_k": {"k": 5}, "temperature": {"value": 1.0}})]
    table = measure_chains(random_bundle(), DEFAULT_PHRASE, notes=10, seed=0, chains=chains)

    lines = format_table(table).splitlines()

    assert lines[0].startswith("| chain | parameters | in key |")
    assert lines[2].startswith("| greedy | defaults |")
    assert lines[3].startswith("| top_k temperature | `top_k.k=5` |")


def test_page_names_command_and_model():
    table = measure_chains(random_bundle(), DEFAULT_PHRASE, notes=10, seed=0, chains=[ChainSpec(("greedy",))])

    page = format_page(table, "python -m bench.samplers --notes 10")

    assert "- Command: `python -m bench.samplers --notes 10`" in page
    assert "- Model: random test model" in page
    assert "F major" in page


def test_summary_names_extreme_chains():
    results = [
        ChainResult("greedy", "", LineStatistics(10, 0.9, 1, C4, G4, 4)),
        ChainResult("temperature", "temperature.value=0.5", LineStatistics(10, 0.4, 6, C4, C5, 8)),
        ChainResult("scale greedy", "", LineStatistics(10, 1.0, 2, D4, A4, 5)),
    ]
    table = SamplerTable("test model", DEFAULT_PHRASE, F_MAJOR, 10, 0, results)

    summary = summarize(table)

    assert "`scale greedy` keeps the most notes in key (100.0%)" in summary
    assert "`temperature` with `temperature.value=0.5` the fewest (40.0%)" in summary
    assert "repeats one pitch longest (6 notes)" in summary
    assert "spans the widest range (12 semitones)" in summary


def test_invalid_phrase_fails_the_command(tmp_path: Path):
    out = tmp_path / "samplers.md"

    exit_code = main(["--notes", "5", "--phrase", "F4:1 H4:1", "--out", str(out)])

    assert exit_code == 1
    assert not out.exists()
