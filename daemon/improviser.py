"""The generation core shared by the live engine and offline rendering.

An Improviser owns the stepper, the sampler chain, the sampler's random
generator and its Gumbel noise, and draws one token at a time, feeding each
token back as the next input. `checkpoint` and `rollback` let the engine
draw a note ahead and take it back when a setting changes before the note
sounds.
"""

from collections import deque
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .bundle import Bundle
from .encoding import Token
from .gumbel import GumbelNoise
from .sampling import SamplerChain, SamplerContext
from .stepper import LstmState, Stepper

RECENT_TOKENS = 64


@dataclass
class Checkpoint:
    """Everything a draw changes, so that the draw can be undone."""

    state: LstmState
    last_token: int | None
    rng_state: dict
    recent: tuple
    noise_position: int


class Improviser:
    """Draw tokens from the model, one at a time, with a sampler chain and a seeded generator."""

    def __init__(self, bundle: Bundle, chain: SamplerChain, seed: int):
        self.bundle = bundle
        self.vocabulary = bundle.vocabulary
        self.steps_per_beat = bundle.encoding.steps_per_beat
        self.stepper = Stepper(bundle.weights)
        self.chain = chain
        self.seed = seed
        self.noise = GumbelNoise(len(self.vocabulary), seed)
        self.context = SamplerContext(self.vocabulary, np.random.default_rng(seed), deque(maxlen=RECENT_TOKENS), noise=self.noise)
        # The next input: a token index, or None for the zero input x0 = 0.
        self.last_token: int | None = None

    def draw(self, beat: float = 0.0) -> int:
        """Step the model with the last token and choose the next one."""
        stepper = self.stepper
        stepper.advance(self.last_token)
        self.context.beat = beat

        # A chooser alone in its chain may pick from the logits and skip the softmax.
        chain = self.chain
        if chain.chooser.takes_logits and not chain.filters:
            token = chain.chooser.choose_logits(stepper.logits(), self.context)
        else:
            token = chain.choose(stepper.probabilities(), self.context)
        self.last_token = token
        self.context.recent.append(token)
        return token

    def token(self, index: int) -> Token:
        return self.vocabulary[index]

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self.context.rng = np.random.default_rng(seed)
        self.noise.reseed(seed)

    def prepare(self) -> None:
        """Draw the random noise that the next draws read. The engine calls it while it waits, so that a draw does not have to."""
        self.noise.prepare()

    def reset(self) -> None:
        """Zero the state and the input, as the notebook's a0 = c0 = 0, x0 = 0."""
        self.stepper.reset()
        self.last_token = None
        self.context.recent.clear()

    def prime(self, tokens: Iterable[Token]) -> int:
        """Feed a phrase into the current state as if it had been played; return its length in tokens."""
        count = 0
        for token in tokens:
            index = self.vocabulary.index_of(token)
            self.stepper.advance(self.last_token)
            self.last_token = index
            self.context.recent.append(index)
            count += 1
        return count

    def checkpoint(self) -> Checkpoint:
        context = self.context
        return Checkpoint(self.stepper.snapshot(), self.last_token, context.rng.bit_generator.state, tuple(context.recent), self.noise.position)

    def rollback(self, checkpoint: Checkpoint, restore_random: bool = True) -> None:
        """Return to `checkpoint`. With `restore_random` false, the random draws go on from where they are instead of repeating."""
        self.stepper.restore(checkpoint.state)
        self.last_token = checkpoint.last_token
        self.context.recent.clear()
        self.context.recent.extend(checkpoint.recent)
        if restore_random:
            self.context.rng.bit_generator.state = checkpoint.rng_state
            self.noise.position = checkpoint.noise_position
