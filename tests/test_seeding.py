"""Seeders: their effect on the state, phrase parsing, the engine's ApplySeeder, and seeder settings from config, CLI and OSC."""

import logging
from pathlib import Path

import mido
import numpy as np
import pytest
from pythonosc.osc_message_builder import OscMessageBuilder

from sideman import cli
from sideman.clock import FakeClock
from sideman.commands import ApplySeeder, Prime, SetParam
from sideman.config.loader import load_settings
from sideman.encoding import Token
from sideman.engine import DEFAULT_REGISTRY, DEFAULT_SEEDERS, Engine
from sideman.errors import InvalidInputError, SettingsError
from sideman.improviser import Improviser
from sideman.osc_packets import translate_message
from sideman.plugins.samplers import Greedy
from sideman.plugins.seeders import MidiFilePhrase, OneToken, Phrase, Zero, parse_bars
from sideman.registry import all_plugins
from sideman.sampling import SamplerChain
from sideman.seeding import apply_seeder, build_seeder, parse_phrase
from tests.factories import random_bundle
from tests.midi_builders import note_track, scale_phrase, write_midi
from tests.test_engine import FakeOutput

BUNDLE = random_bundle()


def improviser(seed: int = 0) -> Improviser:
    return Improviser(BUNDLE, SamplerChain([], Greedy()), seed)


def manually_primed(tokens: list[Token]) -> Improviser:
    reference = improviser()
    reference.prime(tokens)
    return reference


def assert_same_state(actual: Improviser, expected: Improviser):
    np.testing.assert_array_equal(actual.stepper.a, expected.stepper.a)
    np.testing.assert_array_equal(actual.stepper.c, expected.stepper.c)
    assert actual.last_token == expected.last_token


# Phrases in note names

def test_parse_phrase():
    assert parse_phrase("F4:1 A4:0.5, C5:1/3 r:1") == [(65, 1.0), (69, 0.5), (72, pytest.approx(1 / 3)), (None, 1.0)]


@pytest.mark.parametrize("text, reason", [
    ("F4:1 H4:1", r"item 2 'H4:1'"),
    ("F4", r"item 1 'F4': expected NOTE:BEATS"),
    ("F4:1 A4:x", r"duration in phrase item 2 'A4:x'"),
    ("F4:0", r"item 1 'F4:0'.*above 0"),
    ("C4:1 G#9:1", r"item 2 'G#9:1'.*outside 0-127"),
])
def test_parse_phrase_errors_name_item(text, reason):
    with pytest.raises(InvalidInputError, match=reason):
        parse_phrase(text)


def test_phrase_param_validated():
    with pytest.raises(SettingsError, match=r"phrase\.notes.*item 2"):
        Phrase(notes="F4:1 A4")


# Each seeder's effect on the state

def test_zero_seeder_is_notebook_start():
    primed = improviser()
    primed.prime([Token(60, 12), Token(64, 6)])

    apply_seeder(Zero(), primed)

    assert_same_state(primed, improviser())
    assert primed.last_token is None
    assert not primed.stepper.a.any()


def test_token_seeder_primes_one_note():
    seeded = improviser()

    apply_seeder(OneToken(pitch=64, beats=0.5), seeded)

    assert_same_state(seeded, manually_primed([Token(64, 6)]))
    assert seeded.context.seed_tokens == (BUNDLE.vocabulary.index_of(Token(64, 6)),)


def test_token_seeder_rest():
    seeded = improviser()

    apply_seeder(OneToken(pitch=-1, beats=2), seeded)

    assert_same_state(seeded, manually_primed([Token(None, 24)]))


def test_phrase_seeder_primes_phrase():
    seeded = improviser()

    count = apply_seeder(Phrase(notes="F4:1 A4:0.5 C5:0.5 r:1"), seeded)

    assert count == 4
    assert_same_state(seeded, manually_primed([Token(65, 12), Token(69, 6), Token(72, 6), Token(None, 12)]))


def test_phrase_seeder_continues_from_state():
    seeded = improviser()
    seeded.prime([Token(60, 12)])

    apply_seeder(Phrase(notes="E4:1"), seeded)

    assert_same_state(seeded, manually_primed([Token(60, 12), Token(64, 12)]))


def test_empty_phrase_rejected():
    with pytest.raises(InvalidInputError, match="no notes or rests"):
        apply_seeder(Phrase(), improviser())


def test_file_seeder_reads_bars(tmp_path):
    # Bar 1: C4 D4; bar 2: E4 F4 (half notes); bar 3: G4 whole note.
    path = write_midi(tmp_path / "seed.mid", [note_track([(60, 0, 2), (62, 2, 2), (64, 4, 2), (65, 6, 2), (67, 8, 4)])])
    seeded = improviser()

    apply_seeder(MidiFilePhrase(path=str(path), bars="2-3"), seeded)

    assert_same_state(seeded, manually_primed([Token(64, 24), Token(65, 24), Token(67, 48)]))


def test_file_seeder_whole_file(tmp_path):
    path = write_midi(tmp_path / "seed.mid", [note_track([(60, 0, 1), (62, 1, 0.5)])])
    seeded = improviser()

    apply_seeder(MidiFilePhrase(path=str(path)), seeded)

    assert_same_state(seeded, manually_primed([Token(60, 12), Token(62, 6)]))


def test_file_seeder_bars_without_notes(tmp_path):
    path = write_midi(tmp_path / "seed.mid", [note_track([(60, 0, 1)])])

    with pytest.raises(InvalidInputError, match="no notes start in bars 3-4"):
        apply_seeder(MidiFilePhrase(path=str(path), bars="3-4"), improviser())


def test_file_seeder_missing_file(tmp_path):
    with pytest.raises(InvalidInputError, match="nonesuch.mid"):
        apply_seeder(MidiFilePhrase(path=str(tmp_path / "nonesuch.mid")), improviser())


@pytest.mark.parametrize("text, bars", [("5-8", (5, 8)), ("5", (5, 5)), ("5-", (5, None)), (" 2 - 3 ", (2, 3))])
def test_parse_bars(text, bars):
    assert parse_bars(text) == bars


@pytest.mark.parametrize("text", ["0-2", "4-2", "x", "1-y"])
def test_invalid_bars_rejected(text):
    with pytest.raises(SettingsError, match="file.bars"):
        MidiFilePhrase(bars=text)


def test_build_seeder_unknown():
    with pytest.raises(SettingsError, match="unknown seeder 'nonesuch'.*phrase"):
        build_seeder("nonesuch", DEFAULT_SEEDERS)


# The engine

def engine_for(seeded: Improviser) -> Engine:
    clock = FakeClock()
    return Engine(seeded, FakeOutput(clock), clock, autoplay=False, registry=DEFAULT_REGISTRY, seeders=DEFAULT_SEEDERS)


def test_engine_applies_seeder_with_params_of_same_batch():
    seeded = improviser()
    engine = engine_for(seeded)

    engine.apply([SetParam("phrase", "notes", "F4:1 A4:0.5"), ApplySeeder("phrase")])
    engine.run_until(0.0)

    expected = manually_primed([Token(65, 12), Token(69, 6)])
    expected.draw()
    # The engine draws its look-ahead note right after seeding.
    np.testing.assert_array_equal(seeded.stepper.a, expected.stepper.a)
    assert seeded.context.seed_tokens == tuple(BUNDLE.vocabulary.indices([Token(65, 12), Token(69, 6)]))


def test_engine_prime_records_seed_tokens():
    seeded = improviser()
    engine = engine_for(seeded)

    engine.apply([Prime(((62, 1.0), (None, 0.5)))])
    engine.run_until(0.0)

    assert seeded.context.seed_tokens == tuple(BUNDLE.vocabulary.indices([Token(62, 12), Token(None, 6)]))


@pytest.mark.parametrize("commands, reason", [
    ([ApplySeeder("nonesuch")], "unknown seeder"),
    ([ApplySeeder("phrase")], "no notes or rests"),
    ([SetParam("phrase", "notes", "F4:1 Q:1")], r"item 2 'Q:1'"),
    ([SetParam("file", "path", "/nonexistent/seed.mid"), ApplySeeder("file")], "seed.mid"),
    ([SetParam("token", "pitch", 128)], "out of range"),
])
def test_engine_rejects_invalid_seeding(commands, reason):
    engine = engine_for(improviser())

    with pytest.raises(InvalidInputError, match=reason):
        engine.apply(commands)


# OSC

def test_osc_seeder_message():
    builder = OscMessageBuilder("/sideman/seeder")
    builder.add_arg("phrase")

    assert translate_message(builder.build()) == ApplySeeder("phrase")


def test_osc_seeder_needs_one_name():
    builder = OscMessageBuilder("/sideman/seeder")

    with pytest.raises(InvalidInputError, match="1 argument"):
        translate_message(builder.build())


# Config and CLI

PLUGINS = all_plugins(DEFAULT_REGISTRY, DEFAULT_SEEDERS)


def test_config_sets_seeder_and_params(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text('[run]\nseeder = "phrase"\n[plugins.phrase]\nnotes = "F4:1 A4:0.5"\n[plugins.scale]\nkey = "Bb major"\npassing = 0.2\n')

    settings = load_settings(str(path), None, PLUGINS)

    assert settings.run.seeder == "phrase"
    assert settings.plugins["phrase"]["notes"] == "F4:1 A4:0.5"
    assert settings.plugins["scale"] == {"key": "Bb major", "passing": 0.2}


@pytest.mark.parametrize("table, reason", [
    ('[plugins.scale]\nkey = "H major"\n', r"plugins\.scale\.key.*unknown tonic"),
    ("[plugins.top_p]\np = 1.5\n", r"plugins\.top_p\.p.*0\.01 to 1\.0"),
    ("[plugins.top_k]\nk = 0\n", r"plugins\.top_k\.k.*out of range"),
    ('[plugins.repetition]\nby = "beat"\n', r"one of pitch, token"),
    ("[plugins.range]\nlow = 130\n", r"plugins\.range\.low.*0 to 127"),
    ('[plugins.phrase]\nnotes = "F4:1 A4"\n', r"plugins\.phrase\.notes.*item 2"),
])
def test_config_rejects_invalid_plugin_values(tmp_path, table, reason):
    path = tmp_path / "settings.toml"
    path.write_text(table)

    with pytest.raises(SettingsError, match=reason):
        load_settings(str(path), None, PLUGINS)


def test_cli_prime_shortcuts():
    phrase_args = cli.build_parser().parse_args(["generate", "--prime-phrase", "F4:1 r:1", "out.mid"])
    file_args = cli.build_parser().parse_args(["run", "--prime", "seed.mid", "--param", "file.bars=5-8"])

    assert cli.settings_overrides(phrase_args)["run"]["seeder"] == "phrase"
    assert cli.settings_overrides(phrase_args)["plugins"]["phrase"] == {"notes": "F4:1 r:1"}
    assert cli.settings_overrides(file_args)["run"]["seeder"] == "file"
    assert cli.settings_overrides(file_args)["plugins"]["file"] == {"path": "seed.mid", "bars": "5-8"}


def generated_pitches(path: Path) -> list[int]:
    return [message.note for message in mido.MidiFile(path).tracks[0] if message.type == "note_on"]


@pytest.mark.parametrize("prime, seeded", [
    (["--prime-phrase", "F4:1 A4:0.5 C5:0.5 r:1"], "seeded the model with 'phrase': 4 tokens"),
    (["--prime", "seed.mid"], "seeded the model with 'file': 5 tokens"),
])
def test_generate_prime_shortcuts_prime_the_line(tmp_path, monkeypatch, caplog, prime, seeded):
    monkeypatch.chdir(tmp_path)
    write_midi(tmp_path / "seed.mid", [note_track(scale_phrase(count=5))])
    common = ["generate", "--notes", "16", "--seed", "3", "--sampler", "greedy"]

    assert cli.main([*common, "plain.mid"]) == 0
    with caplog.at_level(logging.INFO, logger="sideman.seeding"):
        assert cli.main([*common, *prime, "primed.mid"]) == 0

    assert seeded in caplog.text
    # Greedy from the zero state always plays the same line: priming changes it.
    assert generated_pitches(tmp_path / "primed.mid") != generated_pitches(tmp_path / "plain.mid")


def test_cli_prime_options_exclusive(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["generate", "--prime", "a.mid", "--prime-phrase", "C4:1", "out.mid"])

    assert "not allowed with" in capsys.readouterr().err


def test_cli_param_for_new_plugin_validated():
    args = cli.build_parser().parse_args(["generate", "--param", "top_p.p=2", "out.mid"])

    with pytest.raises(SettingsError, match=r"top_p\.p.*0\.01 to 1\.0"):
        load_settings(None, cli.settings_overrides(args), PLUGINS)


def test_plugins_command_lists_everything(capsys):
    assert cli.main(["plugins"]) == 0

    output = capsys.readouterr().out
    for name in ("greedy", "temperature", "top_k", "top_p", "scale", "range", "repetition", "zero", "token", "phrase", "file"):
        assert f"  {name}: " in output
    assert "temperature.value (float, default 1.0, 0.05 to 5.0)" in output
    assert "top_p.p (float, default 0.9, 0.01 to 1.0)" in output
    assert "scale.key (str, default 'auto')" in output
    assert output.index("Samplers:") < output.index("Seeders:")
