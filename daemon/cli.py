"""The `sideman` command line: run, train, generate, evaluate, ports and plugins.

This module is imported by every `sideman` call, `--help` included, so it
imports only the standard library and the settings schema at the top.
numpy, mido, python-rtmidi and the model are imported inside the command
functions, and TensorFlow only by `train`.

Option values become the top layer of the settings (default.toml < --config
FILE < flags): an option's argparse `dest` is its settings key, e.g.
"run.tempo", and an option left out keeps the value from the files.
"""

import argparse
import logging
import sys
from typing import Any, Callable

from sideman import __version__
from sideman.config.schema import LOG_LEVELS, MIDI_BACKENDS, SYNC_SOURCES, spec_of
from sideman.errors import SettingsError, SidemanError

logger = logging.getLogger(__name__)

ERROR_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 130
DEFAULT_GENERATED_NOTES = 200
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: list[str] | None = None) -> int:
    """Run one `sideman` command and return its exit code: 0, 2 for an error, 130 when interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "log.level", None) or "info")

    try:
        return args.command(args)
    except SidemanError as error:
        logger.debug("command failed", exc_info=True)
        print(f"sideman: error: {error}", file=sys.stderr)
        return ERROR_EXIT_CODE
    except KeyboardInterrupt:
        # `run` handles SIGINT itself; every other command just stops.
        return INTERRUPTED_EXIT_CODE


def configure_logging(level: str) -> None:
    """Send log lines to stderr; `level` applies to sideman's own loggers, other libraries log warnings only.

    basicConfig leaves a root logger that already has handlers alone, so an
    application or test harness that set up logging keeps its setup.
    """
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("sideman").setLevel(level.upper())


def load_command_settings(args: argparse.Namespace, plugins: dict[str, type] | None = None):
    """Load the settings for a command: default.toml, then --config FILE, then the options given."""
    from sideman.config.loader import load_settings

    settings = load_settings(getattr(args, "config", None), settings_overrides(args), plugins)
    logging.getLogger("sideman").setLevel(settings.log.level.upper())
    return settings


def settings_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Collect the options given on the command line into the shape of a settings file."""
    overrides: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if "." not in dest or value is None:
            continue
        section, key = dest.split(".", 1)
        overrides.setdefault(section, {})[key] = value

    for plugin, name, value in getattr(args, "plugin_params", None) or ():
        overrides.setdefault("plugins", {}).setdefault(plugin, {})[name] = value

    # --prime and --prime-phrase are shortcuts for a seeder and its one parameter.
    for option, seeder, param in (("prime", "file", "path"), ("prime_phrase", "phrase", "notes")):
        value = getattr(args, option, None)
        if value is not None:
            overrides.setdefault("run", {})["seeder"] = seeder
            overrides.setdefault("plugins", {}).setdefault(seeder, {})[param] = value
    return overrides


# Option types. argparse turns their ArgumentTypeError into a usage error with exit code 2.

def plugin_param(text: str) -> tuple[str, str, str]:
    """Parse "plugin.name=value" into (plugin, name, value); the plugin's declaration converts the value later."""
    key, separator, value = text.partition("=")
    plugin, dot, name = key.strip().partition(".")
    if not separator or not dot or not plugin or not name:
        raise argparse.ArgumentTypeError(f"invalid parameter {text!r}: expected PLUGIN.NAME=VALUE, e.g. temperature.value=0.8")
    return plugin, name.strip(), value.strip()


def channel_number(text: str) -> int:
    return _bounded_int(text, 1, 16, "MIDI channel")


def track_number(text: str) -> int:
    return _bounded_int(text, 1, None, "track number")


def positive_count(text: str) -> int:
    return _bounded_int(text, 1, None, "count")


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: expected a number of seconds, e.g. 30 or 0.5") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: expected a finite number of seconds above 0")
    return seconds


def _bounded_int(text: str, low: int, high: int | None, label: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid {label} {text!r}: expected a whole number") from None
    if value < low or high is not None and value > high:
        allowed = f"{low} to {high}" if high is not None else f"{low} or more"
        raise argparse.ArgumentTypeError(f"invalid {label} {value}: allowed {allowed}")
    return value


# The parser.

def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="sideman",
        description="Improvise melodic lines with a trained LSTM and play them note by note into a MIDI port, steered over OSC.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"sideman {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    _add_run_parser(subparsers, common)
    _add_generate_parser(subparsers, common)
    _add_train_parser(subparsers, common)
    _add_evaluate_parser(subparsers, common)
    _add_ports_parser(subparsers, common)
    _add_plugins_parser(subparsers, common)
    return parser


def _common_options() -> argparse.ArgumentParser:
    # SUPPRESS as the default lets these options stand before or after the command
    # without the command's parser resetting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="settings file in TOML, read after the built-in default.toml; options given here win over it")
    common.add_argument("--log-level", dest="log.level", choices=LOG_LEVELS, type=str.lower, default=argparse.SUPPRESS, help=_setting_help("log.level"))
    return common


def _add_run_parser(subparsers, common: argparse.ArgumentParser) -> None:
    parser = _add_command(subparsers, common, "run", _run_command, "play live: stream the model's notes into a MIDI port until stopped (Ctrl-C or SIGTERM)")
    _add_model_option(parser)
    _add_playing_options(parser)
    parser.add_argument("--autoplay", dest="run.autoplay", action=argparse.BooleanOptionalAction, default=None, help=_setting_help("run.autoplay"))
    _add_midi_backend_option(parser)
    parser.add_argument("--midi-out", dest="midi.out", metavar="NAME", help=_setting_help("midi.out"))
    midi_input = parser.add_mutually_exclusive_group()
    midi_input.add_argument("--midi-in", dest="midi.in", metavar="NAME", help=_setting_help("midi.in"))
    midi_input.add_argument("--no-midi-in", dest="midi.listen", action="store_const", const=False, help="open no MIDI input: no live notes and no CC control (default: open sideman-in:in)")
    parser.add_argument("--meter", dest="run.meter", metavar="N/D", help=_setting_help("run.meter"))
    parser.add_argument("--sync", dest="run.sync", choices=SYNC_SOURCES, type=str.lower, help=_setting_help("run.sync"))
    parser.add_argument("--clock-out", dest="midi.clock_out", metavar="NAME", help=_setting_help("midi.clock_out"))
    parser.add_argument("--clock-in", dest="midi.clock_in", metavar="NAME", help=_setting_help("midi.clock_in"))
    parser.add_argument("--sync-autostart", dest="run.sync_autostart", action="store_const", const=True, help=_setting_help("run.sync_autostart"))
    parser.add_argument("--link-start-stop", dest="run.link_start_stop", action="store_const", const=True, help=_setting_help("run.link_start_stop"))
    parser.add_argument("--osc-host", dest="osc.host", metavar="ADDRESS", help=_setting_help("osc.host"))
    parser.add_argument("--osc-port", dest="osc.port", metavar="PORT", type=int, help=_setting_help("osc.port"))
    parser.add_argument("--osc-files", dest="osc.files", metavar="DIR", help=_setting_help("osc.files"))
    parser.add_argument("--record", metavar="FILE.mid", help="also write every note played to this MIDI file, saved at shutdown (default: no recording)")
    parser.add_argument("--duration", metavar="SECONDS", type=positive_seconds, help="play this many seconds, then shut down cleanly (default: until Ctrl-C or SIGTERM)")
    parser.add_argument("--show", action="store_true", help="print each note on stdout as it sounds: seconds since start, note name (C4 = 60) and duration in beats")


def _add_generate_parser(subparsers, common: argparse.ArgumentParser) -> None:
    parser = _add_command(subparsers, common, "generate", _generate_command, "write a line of the model's notes to a MIDI file, offline")
    _add_model_option(parser)
    parser.add_argument("--notes", metavar="N", type=positive_count, default=DEFAULT_GENERATED_NOTES, help=f"number of notes to write; rests come on top (default: {DEFAULT_GENERATED_NOTES})")
    _add_playing_options(parser)
    parser.add_argument("out", metavar="OUT.mid", help="MIDI file to write; the same model, seed and settings write the same bytes")


def _add_train_parser(subparsers, common: argparse.ArgumentParser) -> None:
    parser = _add_command(subparsers, common, "train", _train_command, "train a model on a corpus and write a model bundle (needs the train extra: TensorFlow)")
    parser.add_argument("corpus", metavar="CORPUS", nargs="+", help="MIDI file, folder of .mid/.midi files, or Weimar Jazz Database folder")
    parser.add_argument("--out", metavar="FILE.sideman", required=True, help="model bundle to write; an existing file is replaced only when training succeeds")
    parser.add_argument("--name", default="", help="model name stored in the bundle (default: a generic name)")
    parser.add_argument("--description", default="", help="free text stored in the bundle")
    _add_corpus_options(parser)

    options = parser.add_argument_group("training settings")
    options.add_argument("--n-a", dest="train.n_a", metavar="UNITS", type=int, help=_setting_help("train.n_a"))
    options.add_argument("--tx", dest="train.tx", metavar="TOKENS", type=int, help=_setting_help("train.tx"))
    options.add_argument("--epochs", "--max-epochs", dest="train.max_epochs", metavar="N", type=int, help=_setting_help("train.max_epochs"))
    options.add_argument("--batch-size", dest="train.batch_size", metavar="N", type=int, help=_setting_help("train.batch_size"))
    options.add_argument("--learning-rate", dest="train.learning_rate", metavar="RATE", type=float, help=_setting_help("train.learning_rate"))
    options.add_argument("--lr-patience", dest="train.lr_patience", metavar="EPOCHS", type=int, help=_setting_help("train.lr_patience"))
    options.add_argument("--patience", dest="train.patience", metavar="EPOCHS", type=int, help=_setting_help("train.patience"))
    options.add_argument("--validation-share", dest="train.validation_share", metavar="SHARE", type=float, help=_setting_help("train.validation_share"))
    options.add_argument("--seed", dest="train.seed", metavar="N", type=int, help=_setting_help("train.seed"))
    options.add_argument("--max-vocab", dest="train.max_vocab", metavar="TOKENS", type=int, help=_setting_help("train.max_vocab"))
    options.add_argument("--transpose-low", dest="train.transpose_low", metavar="SEMITONES", type=int, help=_setting_help("train.transpose_low"))
    options.add_argument("--transpose-high", dest="train.transpose_high", metavar="SEMITONES", type=int, help=_setting_help("train.transpose_high"))
    options.add_argument("--rest-threshold", dest="train.rest_threshold", metavar="BEATS", type=float, help=_setting_help("train.rest_threshold"))
    options.add_argument("--max-beats", dest="train.max_beats", metavar="BEATS", type=float, help=_setting_help("train.max_beats"))
    options.add_argument("--steps-per-beat", dest="train.steps_per_beat", metavar="STEPS", type=int, help=_setting_help("train.steps_per_beat"))


def _add_evaluate_parser(subparsers, common: argparse.ArgumentParser) -> None:
    parser = _add_command(subparsers, common, "evaluate", _evaluate_command, "score a model against n-gram baselines in bits per token on a test corpus")
    _add_model_option(parser)
    parser.add_argument("test_corpus", metavar="TEST_CORPUS", nargs="+", help="MIDI file, folder of .mid/.midi files, or Weimar Jazz Database folder to score")
    parser.add_argument("--validation", action="store_true", help="score only the model's validation pieces, found by name in TEST_CORPUS (pass the corpus the model was trained on)")
    parser.add_argument(
        "--baseline-corpus", metavar="CORPUS", nargs="+",
        help="corpus the n-gram baselines are fitted on (default: the model's training pieces, found by name in TEST_CORPUS)",
    )
    _add_corpus_options(parser)


def _add_ports_parser(subparsers, common: argparse.ArgumentParser) -> None:
    parser = _add_command(subparsers, common, "ports", _ports_command, "list the MIDI input and output ports")
    _add_midi_backend_option(parser)


def _add_plugins_parser(subparsers, common: argparse.ArgumentParser) -> None:
    _add_command(subparsers, common, "plugins", _plugins_command, "list the installed samplers and seeders with their parameters, defaults and ranges")


def _add_command(subparsers, common: argparse.ArgumentParser, name: str, command: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, parents=[common], help=help, description=help[0].upper() + help[1:] + ".")
    parser.set_defaults(command=command)
    return parser


def _add_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", dest="run.model", metavar="PATH", help=_setting_help("run.model"))


def _add_playing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tempo", dest="run.tempo", metavar="BPM", type=float, help=_setting_help("run.tempo"))
    parser.add_argument("--seed", dest="run.seed", metavar="N", type=int, help=_setting_help("run.seed"))
    parser.add_argument("--sampler", dest="run.sampler", metavar="CHAIN", help=_setting_help("run.sampler"))
    parser.add_argument("--seeder", dest="run.seeder", metavar="NAME", help=_setting_help("run.seeder"))
    priming = parser.add_mutually_exclusive_group()
    priming.add_argument("--prime", metavar="FILE.mid", help="prime the model with the melodic line of this MIDI file before playing (the file seeder; file.bars selects bars)")
    priming.add_argument("--prime-phrase", metavar="PHRASE", help='prime the model with a phrase in note names and beats before playing, e.g. "F4:1 A4:0.5 r:1" (the phrase seeder, C4 = 60)')
    parser.add_argument(
        "--param", dest="plugin_params", metavar="PLUGIN.NAME=VALUE", type=plugin_param, action="append",
        help="set a plugin parameter, e.g. temperature.value=0.8; repeat for several (default: the [plugins.<name>] tables of the settings)",
    )
    parser.add_argument("--channel", dest="run.channel", metavar="1-16", type=int, help=_setting_help("run.channel"))
    parser.add_argument("--gate", dest="run.gate", metavar="SHARE", type=float, help=_setting_help("run.gate"))
    parser.add_argument("--velocity", dest="run.velocity", metavar="1-127", type=int, help=_setting_help("run.velocity"))


def _add_midi_backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--midi-backend", dest="midi.backend", choices=MIDI_BACKENDS, type=str.lower, help=_setting_help("midi.backend"))


def _add_corpus_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from-track", metavar="N", type=track_number, help="read the line from this track of each MIDI file, counting from 1 (default: the track and channel with the most notes)")
    parser.add_argument("--from-channel", metavar="1-16", type=channel_number, help="read the line from this MIDI channel (default: the track and channel with the most notes)")


def _setting_help(key: str) -> str:
    """Build an option's help from the schema: what it sets, the allowed range and the default."""
    section, name = key.split(".", 1)
    spec = spec_of(section, name)
    text = spec.help if not spec.unit or spec.unit in spec.help else f"{spec.help} in {spec.unit}"
    # argparse already lists the choices of an option that has them.
    if spec.low is not None or spec.high is not None:
        text += f", {spec.describe_range()}"
    return f"{text} (default: {spec.describe_default()})"


# The commands. Each imports what it needs, so `sideman --help` stays fast.

def _run_command(args: argparse.Namespace) -> int:
    from sideman.daemon import RunOptions, run_daemon
    from sideman.registry import all_plugins, load_all

    samplers, seeders = load_all()
    plugins = all_plugins(samplers, seeders)
    settings = load_command_settings(args, plugins)
    options = RunOptions(record=args.record, duration=args.duration, show=args.show)
    # SIGHUP reads the --config file again; the command-line options still win over it.
    return run_daemon(settings, samplers, options, seeders, load_settings=lambda: load_command_settings(args, plugins))


def _generate_command(args: argparse.Namespace) -> int:
    from sideman.bundle import load_bundle
    from sideman.improviser import Improviser
    from sideman.registry import all_plugins, load_all
    from sideman.render import render, write_midi_bytes
    from sideman.sampling import build_chain
    from sideman.seeding import apply_seeder, build_seeder

    samplers, seeders = load_all()
    settings = load_command_settings(args, all_plugins(samplers, seeders))
    bundle = load_bundle(settings.run.model)
    chain = build_chain(settings.run.sampler, samplers, settings.plugins)
    seeder = build_seeder(settings.run.seeder, seeders, settings.plugins)
    if getattr(seeder, "listens", False):
        raise SettingsError(f"seeder {seeder.name!r} listens to the MIDI input, which `generate` has none of; use it with `sideman run`")
    improviser = Improviser(bundle, chain, settings.run.seed)
    apply_seeder(seeder, improviser)

    rendering = render(improviser, args.notes, settings.run.tempo, settings.run.gate, settings.run.velocity, settings.run.channel - 1)
    try:
        write_midi_bytes(rendering.midi_bytes, args.out)
    except OSError as error:
        raise SidemanError(f"writing {args.out} failed: {error.strerror or error}") from error
    logger.info("wrote %d notes and %d rests to %s (model %s, seed %d, sampler %s)",
                len(rendering.notes), len(rendering.tokens) - len(rendering.notes), args.out, bundle.path, settings.run.seed, chain.describe())
    return 0


def _train_command(args: argparse.Namespace) -> int:
    from sideman.corpus import read_corpus
    from sideman.encoding import EncodingSettings
    from sideman.outfiles import check_output_path
    from sideman.training import TrainingSettings, import_tensorflow, train

    settings = load_command_settings(args).train
    # Fail before a long training run when the bundle could not be written, or before reading a large corpus when the train extra is missing.
    check_output_path(args.out, "model bundle")
    import_tensorflow()

    training_settings = TrainingSettings(
        n_a=settings.n_a,
        tx=settings.tx,
        max_vocab=settings.max_vocab,
        transpose_low=settings.transpose_low,
        transpose_high=settings.transpose_high,
        validation_share=settings.validation_share,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        lr_patience=settings.lr_patience,
        patience=settings.patience,
        max_epochs=settings.max_epochs,
        seed=settings.seed,
        encoding=EncodingSettings(steps_per_beat=settings.steps_per_beat, rest_threshold=settings.rest_threshold, max_beats=settings.max_beats),
    )
    pieces = read_corpus(args.corpus, from_track=args.from_track, from_channel=args.from_channel)
    train(pieces, training_settings, args.out, sources=args.corpus, name=args.name, description=args.description)
    return 0


def _evaluate_command(args: argparse.Namespace) -> int:
    from sideman.bundle import load_bundle
    from sideman.corpus import read_corpus
    from sideman.evaluation import default_baseline_pieces, evaluate, format_report, validation_pieces

    settings = load_command_settings(args)
    bundle = load_bundle(settings.run.model)
    pieces = read_corpus(args.test_corpus, from_track=args.from_track, from_channel=args.from_channel)
    test_pieces = validation_pieces(bundle, pieces) if args.validation else pieces

    if args.baseline_corpus:
        baseline_pieces = read_corpus(args.baseline_corpus, from_track=args.from_track, from_channel=args.from_channel)
    else:
        baseline_pieces = default_baseline_pieces(bundle, pieces)

    report = evaluate(bundle, test_pieces, baseline_pieces)
    print(format_report(report))
    return 0


def _ports_command(args: argparse.Namespace) -> int:
    from sideman.midiport import list_ports

    settings = load_command_settings(args)
    inputs, outputs = list_ports(settings.midi.backend)
    for title, names in (("MIDI inputs", inputs), ("MIDI outputs", outputs)):
        print(f"{title}:")
        for name in names:
            print(f"  {name}")
        if not names:
            print("  (none)")
    return 0


def _plugins_command(args: argparse.Namespace) -> int:
    from sideman.registry import load_all

    load_command_settings(args)
    samplers, seeders = load_all()
    print(format_plugins(samplers, seeders))
    return 0


def format_plugins(samplers: dict[str, type], seeders: dict[str, type]) -> str:
    """List plugins with their help, then one line per parameter: name, type, default, allowed values and help."""
    lines = []
    for title, plugins in (("Samplers", samplers), ("Seeders", seeders)):
        lines.append(f"{title}:")
        if not plugins:
            lines.append("  (none)")
        for name in sorted(plugins):
            plugin = plugins[name]
            lines.append(f"  {name}: {plugin.help}")
            for param in plugin.params:
                lines.append(f"      {name}.{param.name} ({_describe_param(param)}): {param.help}")
        lines.append("")
    return "\n".join(lines).rstrip()


def _describe_param(param) -> str:
    """Describe a parameter's type, default and allowed values, e.g. "float, default 1.0, 0.05 to 5.0"."""
    if isinstance(param.default, bool):
        default = "true" if param.default else "false"
    elif isinstance(param.default, str):
        default = repr(param.default)
    else:
        default = str(param.default)
    text = f"{param.type.__name__}, default {default}"
    allowed = param.describe_range()
    # describe_range falls back to the type name when nothing limits the value.
    return text if allowed == param.type.__name__ else f"{text}, {allowed}"


if __name__ == "__main__":
    sys.exit(main())
