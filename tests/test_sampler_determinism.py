"""Determinism: the same bundle, settings, RNG seed and seed phrase give the same notes in `generate` and in `run`."""

import pytest

from sideman.clock import FakeClock
from sideman.engine import DEFAULT_REGISTRY, DEFAULT_SEEDERS, Engine
from sideman.improviser import Improviser
from sideman.render import render
from sideman.sampling import build_chain
from sideman.seeding import apply_seeder, build_seeder
from tests.factories import random_bundle
from tests.test_engine import FakeOutput

BUNDLE = random_bundle(scale=2.0)
SEED_PHRASE = {"phrase": {"notes": "F4:1 A4:0.5 C5:0.5 r:1 G4:0.5 Bb4:0.5"}}

# Every built-in sampler, in a chain that ends with a chooser, and whether the chain draws at random.
CHAINS = [
    (["greedy"], False),
    (["temperature"], True),
    (["top_k", "temperature"], True),
    (["top_p", "temperature"], True),
    (["scale", "temperature"], True),
    (["range", "temperature"], True),
    (["repetition", "greedy"], False),
    (["scale", "range", "repetition", "top_k", "top_p", "temperature"], True),
]
PARAMS = {
    "top_k": {"k": 8},
    "top_p": {"p": 0.8},
    "scale": {"key": "auto", "min_notes": 2},
    "range": {"low": 62, "high": 69},
    "temperature": {"value": 1.5},
}


def seeded_improviser(names: list[str], seed: int) -> Improviser:
    """Build the improviser as `generate` and `run` do: chain, improviser, then the seeder."""
    values = PARAMS | SEED_PHRASE
    improviser = Improviser(BUNDLE, build_chain(names, DEFAULT_REGISTRY, values), seed)
    apply_seeder(build_seeder("phrase", DEFAULT_SEEDERS, values), improviser)
    return improviser


def rendered_notes(names: list[str], seed: int, notes: int = 40):
    return render(seeded_improviser(names, seed), notes, 120.0, 0.9, 90, 0).notes


def played_notes(names: list[str], seed: int, notes: int = 40):
    clock = FakeClock()
    shown = []
    engine = Engine(seeded_improviser(names, seed), FakeOutput(clock), clock, on_note=shown.append, registry=DEFAULT_REGISTRY, seeders=DEFAULT_SEEDERS)
    while len(shown) < notes:
        engine.run_for(10.0)
    return [event.token for event in shown[:notes]]


@pytest.mark.parametrize("names, random", CHAINS, ids=[" ".join(names) for names, _ in CHAINS])
def test_same_settings_same_notes(names, random):
    first = rendered_notes(names, seed=5)

    assert rendered_notes(names, seed=5) == first
    assert played_notes(names, seed=5) == first


@pytest.mark.parametrize("names, random", CHAINS, ids=[" ".join(names) for names, _ in CHAINS])
def test_other_seed_differs_only_when_random(names, random):
    first = rendered_notes(names, seed=5)
    other = rendered_notes(names, seed=6)

    if random:
        assert other != first
    else:
        assert other == first


def test_seed_phrase_changes_notes():
    improviser = Improviser(BUNDLE, build_chain(["greedy"], DEFAULT_REGISTRY), 5)

    unseeded = render(improviser, 20, 120.0, 0.9, 90, 0).notes

    assert rendered_notes(["greedy"], seed=5, notes=20) != unseeded


def test_range_filter_keeps_rendered_notes_in_range():
    notes = rendered_notes(["range", "temperature"], seed=2, notes=100)

    assert all(62 <= token.pitch <= 69 for token in notes)
