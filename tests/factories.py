"""Small models and lines built in memory for tests."""

import numpy as np

from sideman.bundle import Bundle
from sideman.encoding import EncodingSettings, Token
from sideman.stepper import LstmWeights
from sideman.vocabulary import Vocabulary


def small_vocabulary() -> Vocabulary:
    """Notes C4-B4 as eighths, quarters and sixteenths, plus three rests."""
    tokens = [Token(pitch, steps) for steps in (6, 12, 3) for pitch in range(60, 72)]
    tokens += [Token(None, steps) for steps in (6, 12, 24)]
    return Vocabulary(tokens)


def random_bundle(n_a: int = 8, seed: int = 0, vocabulary: Vocabulary | None = None, scale: float = 1.0) -> Bundle:
    """A bundle with random weights: enough to exercise everything but musical sense."""
    vocabulary = vocabulary or small_vocabulary()
    size = len(vocabulary)
    rng = np.random.default_rng(seed)
    weights = LstmWeights(
        kernel=(rng.normal(size=(size, 4 * n_a)) * scale).astype(np.float32),
        recurrent_kernel=(rng.normal(size=(n_a, 4 * n_a)) * scale / np.sqrt(n_a)).astype(np.float32),
        bias=(rng.normal(size=4 * n_a) * 0.1).astype(np.float32),
        dense_kernel=(rng.normal(size=(n_a, size)) * scale).astype(np.float32),
        dense_bias=np.zeros(size, dtype=np.float32),
    )
    return Bundle(weights, vocabulary, EncodingSettings(), tx=30, metadata={"name": "random test model"})
