"""`python -m bench.samplers`: what each sampler chain does to the line the built-in model plays.

Every chain starts from the same place: the zero state primed with one seed
phrase, and a sampler generator seeded with the same number. Each draws the
same number of notes (rests come on top and are not counted). The table
gives, per chain, the share of notes in the key of the seed phrase, the
longest run of one pitch, the lowest and highest pitch and the number of
distinct pitches. It needs neither TensorFlow nor MIDI ports.
"""

import argparse
import logging
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from sideman.bundle import Bundle, load_bundle
from sideman.engine import DEFAULT_REGISTRY, DEFAULT_SEEDERS
from sideman.errors import InvalidInputError, SidemanError
from sideman.improviser import Improviser
from sideman.notenames import pitch_name
from sideman.plugins.scale import Key, estimate_key, pitch_class_histogram
from sideman.render import draw_notes
from sideman.sampling import SamplerChain, build_chain
from sideman.seeding import apply_seeder, build_seeder, parse_phrase

log = logging.getLogger(__name__)

# A phrase in F major that outlines the tonic triad and the scale, so the
# Krumhansl-Schmuckler estimate is unambiguous.
DEFAULT_PHRASE = "F4:1 A4:0.5 C5:0.5 Bb4:1 A4:0.5 G4:0.5 F4:1 E4:0.5 G4:0.5 C5:2"
DEFAULT_NOTES = 1000
DEFAULT_SEED = 0


@dataclass(frozen=True)
class ChainSpec:
    """A sampler chain by plugin names, with parameter values per plugin name as in `[plugins.<name>]`."""

    names: tuple[str, ...]
    values: dict[str, dict[str, Any]] = field(default_factory=dict)


def measured_chains(seed_key: Key) -> list[ChainSpec]:
    """Return the chains the table compares; the fixed-key scale chain uses `seed_key`."""
    return [
        ChainSpec(("greedy",)),
        ChainSpec(("temperature",), {"temperature": {"value": 1.0}}),
        ChainSpec(("temperature",), {"temperature": {"value": 0.5}}),
        ChainSpec(("top_k", "temperature"), {"top_k": {"k": 5}}),
        ChainSpec(("top_p", "temperature"), {"top_p": {"p": 0.9}}),
        ChainSpec(("scale", "temperature"), {"scale": {"key": "auto"}}),
        ChainSpec(("scale", "greedy"), {"scale": {"key": str(seed_key)}}),
        ChainSpec(("range", "temperature"), {"range": {"low": 60, "high": 72}}),
        ChainSpec(("repetition", "greedy")),
        ChainSpec(("repetition", "temperature"), {"temperature": {"value": 0.5}}),
    ]


@dataclass(frozen=True)
class LineStatistics:
    """Statistics of the notes of a line; rests are left out of every figure."""

    notes: int
    in_key_share: float  # share of notes whose pitch class is in the key's scale, 0 to 1
    longest_run: int  # maximum number of consecutive notes of one pitch
    lowest: int  # MIDI pitch
    highest: int  # MIDI pitch
    distinct: int  # number of different MIDI pitches

    @property
    def range_semitones(self) -> int:
        return self.highest - self.lowest


def longest_run(pitches: Iterable[int | None]) -> int:
    """Return the maximum number of consecutive notes of one pitch; rests (None) neither count nor break a run."""
    longest = 0
    run = 0
    previous = None
    for pitch in pitches:
        if pitch is None:
            continue
        run = run + 1 if pitch == previous else 1
        previous = pitch
        longest = max(longest, run)
    return longest


def line_statistics(pitches: Sequence[int | None], key: Key) -> LineStatistics:
    """Measure a line given as MIDI pitches, None for a rest; raise ValueError when it has no notes."""
    notes = [pitch for pitch in pitches if pitch is not None]
    if not notes:
        raise ValueError("the line has no notes to measure, only rests")

    scale = set(key.pitch_classes)
    in_key = sum(1 for pitch in notes if pitch % 12 in scale)
    return LineStatistics(
        notes=len(notes),
        in_key_share=in_key / len(notes),
        longest_run=longest_run(notes),
        lowest=min(notes),
        highest=max(notes),
        distinct=len(set(notes)),
    )


def estimate_phrase_key(phrase: str) -> Key:
    """Estimate the key of a phrase in note names with Krumhansl-Schmuckler, weighting each note by its beats.

    The estimate is a major or a natural minor key. Raises InvalidInputError
    when the phrase is invalid or its notes give no estimate (no notes, or
    every pitch class weighing the same).
    """
    pairs = parse_phrase(phrase)
    histogram = pitch_class_histogram([pitch for pitch, _ in pairs], [beats for _, beats in pairs])
    key = estimate_key(histogram)
    if key is None:
        raise InvalidInputError(f"cannot estimate the key of the seed phrase {phrase!r}: it needs notes that weigh some pitch classes more than others")
    return key


def describe_params(chain: SamplerChain) -> str:
    """List the chain's parameters that differ from their declared defaults, as `--param` takes them."""
    changed = []
    for sampler in chain.members():
        for param in sampler.params:
            value = sampler.values[param.name]
            if value != param.default:
                changed.append(f"{sampler.name}.{param.name}={value}")
    return " ".join(changed)


def draw_line(bundle: Bundle, chain: SamplerChain, phrase: str, notes: int, seed: int) -> list[int | None]:
    """Prime the zero state with `phrase`, draw `notes` notes with `chain`; return every drawn pitch, None for a rest."""
    improviser = Improviser(bundle, chain, seed)
    seeder = build_seeder("phrase", DEFAULT_SEEDERS, {"phrase": {"notes": phrase}})
    apply_seeder(seeder, improviser)

    indices = draw_notes(improviser, notes)
    return [improviser.token(index).pitch for index in indices]


@dataclass(frozen=True)
class ChainResult:
    chain: str  # plugin names in order, e.g. "top_k temperature"
    params: str  # non-default parameters as PLUGIN.NAME=VALUE, space-separated
    statistics: LineStatistics


@dataclass(frozen=True)
class SamplerTable:
    model: str
    phrase: str
    key: Key  # estimated from the phrase
    notes: int  # notes drawn per chain
    seed: int
    results: list[ChainResult]


def measure_chains(bundle: Bundle, phrase: str, notes: int, seed: int, chains: Sequence[ChainSpec] | None = None) -> SamplerTable:
    """Draw `notes` notes with each chain (default: measured_chains) from the same primed start and seed, and measure each line."""
    key = estimate_phrase_key(phrase)
    results = []
    for spec in chains if chains is not None else measured_chains(key):
        chain = build_chain(spec.names, DEFAULT_REGISTRY, spec.values)
        pitches = draw_line(bundle, chain, phrase, notes, seed)
        statistics = line_statistics(pitches, key)
        log.info("%s: %.1f%% of %d notes in %s", chain.describe(), 100 * statistics.in_key_share, statistics.notes, key)
        results.append(ChainResult(chain.describe(), describe_params(chain), statistics))

    model = str(bundle.metadata.get("name", "unnamed model"))
    return SamplerTable(model, phrase, key, notes, seed, results)


TABLE_HEADER = ("chain", "parameters", "in key", "longest run", "lowest", "highest", "range (semitones)", "distinct pitches")


def format_table(table: SamplerTable) -> str:
    """Return the results as a Markdown table, one row per chain."""
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    for result in table.results:
        statistics = result.statistics
        cells = (
            result.chain,
            f"`{result.params}`" if result.params else "defaults",
            f"{100 * statistics.in_key_share:.1f}%",
            str(statistics.longest_run),
            pitch_name(statistics.lowest),
            pitch_name(statistics.highest),
            str(statistics.range_semitones),
            str(statistics.distinct),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe_setup(table: SamplerTable) -> str:
    """Return the Markdown lines naming the model, seed phrase, estimated key and seed behind the table."""
    return "\n".join([
        f"- Model: {table.model}",
        f"- Seed phrase: `{table.phrase}` (C4 = MIDI 60, durations in beats)",
        f"- Key of the seed phrase: {table.key}, estimated with Krumhansl-Schmuckler; "
        f"\"in key\" counts the notes whose pitch class is in its {'major' if table.key.mode == 'major' else 'natural minor'} scale",
        f"- Notes per chain: {table.notes:,} (rests not counted); random seed {table.seed} for every chain",
    ])


def chain_label(result: ChainResult) -> str:
    return f"`{result.chain}`" + (f" with `{result.params}`" if result.params else "")


def summarize(table: SamplerTable) -> str:
    """Return one sentence naming the chains at the extremes of the share in key, the longest run and the range; "" without results."""
    results = table.results
    if not results:
        return ""
    most_in_key = max(results, key=lambda result: result.statistics.in_key_share)
    least_in_key = min(results, key=lambda result: result.statistics.in_key_share)
    longest = max(results, key=lambda result: result.statistics.longest_run)
    widest = max(results, key=lambda result: result.statistics.range_semitones)
    return (
        f"In this run {chain_label(most_in_key)} keeps the most notes in key ({100 * most_in_key.statistics.in_key_share:.1f}%) "
        f"and {chain_label(least_in_key)} the fewest ({100 * least_in_key.statistics.in_key_share:.1f}%), "
        f"{chain_label(longest)} repeats one pitch longest ({longest.statistics.longest_run} notes) "
        f"and {chain_label(widest)} spans the widest range ({widest.statistics.range_semitones} semitones)."
    )


def format_page(table: SamplerTable, command: str) -> str:
    """Return the Markdown page: what the table measures and shows, the command that made it, the setup, then the table."""
    return "\n".join([
        "# Sampler chains on one seed phrase",
        "",
        f"Each row primes the model from the zero state with the same seed phrase, draws {table.notes:,} notes "
        f"with one sampler chain from the same random seed, and measures how much of the line stays in the key "
        f"of the seed phrase, how long it repeats one pitch, and how wide and varied its pitches are. "
        + summarize(table),
        "",
        f"- Command: `{command}`",
        describe_setup(table),
        "",
        format_table(table),
        "",
    ])


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: expected a whole number of 1 or more") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid number {value}: expected a whole number of 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.samplers", description="Measure what each sampler chain does to the built-in model's line: share in key, repeats and range.")
    parser.add_argument("--notes", type=positive_int, default=DEFAULT_NOTES, help=f"notes to draw per chain, rests not counted (default: {DEFAULT_NOTES})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed of every chain's sampler (default: {DEFAULT_SEED})")
    parser.add_argument("--phrase", default=DEFAULT_PHRASE, help=f'seed phrase in note names and beats, C4 = 60; its estimated key is the table\'s key and the key of the "scale greedy" row (default: "{DEFAULT_PHRASE}")')
    parser.add_argument("--out", type=Path, help="also write the table, the command and the model's name to this Markdown file")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(arguments)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    command = shlex.join(["python", "-m", "bench.samplers", *arguments])

    try:
        table = measure_chains(load_bundle("builtin"), args.phrase, args.notes, args.seed)
    except SidemanError as error:
        log.error("sampler table failed: %s", error)
        return 1

    print(describe_setup(table))
    print()
    print(format_table(table))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(format_page(table, command), encoding="utf-8")
        print(f"\nWrote {args.out}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
