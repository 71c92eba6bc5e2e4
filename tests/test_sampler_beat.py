"""The beat position in a chooser's context: the onset beat of the note being chosen, in `generate` and in `run`."""

import numpy as np

from sideman.clock import FakeClock
from sideman.engine import Engine
from sideman.improviser import Improviser
from sideman.plugins.samplers import Temperature
from sideman.render import draw_notes
from sideman.sampling import SamplerChain, SamplerContext
from tests.factories import random_bundle
from tests.test_engine import REGISTRY, FakeOutput

BUNDLE = random_bundle(scale=2.0)


class BeatRecorder(Temperature):
    """Temperature that records the context's beat and its choice at every draw."""

    def __init__(self, **values):
        super().__init__(**values)
        self.draws: list[tuple[float, int]] = []

    def choose_logits(self, logits: np.ndarray, context: SamplerContext) -> int:
        token = super().choose_logits(logits, context)
        self.draws.append((context.beat, token))
        return token


def assert_beats_follow_durations(draws: list[tuple[float, int]]) -> None:
    """Each draw's beat is the previous draw's beat plus the previous token's length in beats."""
    steps_per_beat = BUNDLE.encoding.steps_per_beat
    assert draws[0][0] == 0.0
    for (beat, token), (next_beat, _) in zip(draws, draws[1:]):
        assert next_beat == beat + BUNDLE.vocabulary[token].steps / steps_per_beat


def test_render_passes_onset_beats():
    recorder = BeatRecorder()

    draw_notes(Improviser(BUNDLE, SamplerChain([], recorder), 4), 30)

    assert len(recorder.draws) >= 30
    assert_beats_follow_durations(recorder.draws)


def test_engine_passes_onset_beats():
    recorder = BeatRecorder()
    clock = FakeClock()
    played = []
    engine = Engine(Improviser(BUNDLE, SamplerChain([], recorder), 4), FakeOutput(clock), clock, registry=REGISTRY, on_note=played.append)

    engine.run_until(20.0)

    assert len(played) >= 10
    assert_beats_follow_durations(recorder.draws)
    # Every note played was chosen at its own onset beat.
    chosen_beats = {beat for beat, _ in recorder.draws}
    assert {event.beat for event in played} <= chosen_beats
