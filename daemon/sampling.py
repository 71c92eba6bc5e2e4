"""The sampler interface: filters reshape a probability vector, one chooser picks a token.

A chain is zero or more filters followed by exactly one chooser, e.g.
"top_p temperature". Samplers are plugins found through the entry point
group `sideman.samplers`; built-ins are registered there like third-party
ones.
"""

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import numpy as np

from .errors import SettingsError
from .gumbel import GumbelNoise
from .params import Plugin
from .vocabulary import Vocabulary

logger = logging.getLogger(__name__)


@dataclass
class SamplerContext:
    """Context of a sampler's choice besides the probabilities: vocabulary, generator, recent tokens, beat."""

    vocabulary: Vocabulary
    rng: np.random.Generator
    # Indices of the most recent tokens played, oldest first.
    recent: deque = field(default_factory=lambda: deque(maxlen=64))
    # Beat position of the onset being chosen, in beats since the transport started.
    beat: float = 0.0
    # Indices of the latest phrase a seeder primed the state with, oldest
    # first. A reset keeps them, so `scale auto` can still estimate the tune's key.
    seed_tokens: tuple[int, ...] = ()
    # Gumbel noise for choosers that draw by the Gumbel-max trick. The
    # Improviser provides it, and checkpoints and rolls back its position.
    noise: GumbelNoise | None = None


class Sampler(Plugin):
    """Base of filters and choosers: a name, declared parameters and their current values."""

    kind: ClassVar[str] = "sampler"


class Filter(Sampler):
    """Reshapes the distribution; the result need not sum to one.

    `reshape` may return the array it was given, changed in place. It must
    leave some mass (degrading to the rests or to its input rather than to
    all zeros) and must not raise for any valid distribution.
    """

    def reshape(self, probabilities: np.ndarray, context: SamplerContext) -> np.ndarray:
        raise NotImplementedError


class Chooser(Sampler):
    """Picks one token index from a distribution."""

    # Whether `choose_logits` picks from the logits alone (an argmax, or a
    # Gumbel-max draw), so that a chain of this chooser alone skips the softmax.
    takes_logits: ClassVar[bool] = False

    def choose(self, probabilities: np.ndarray, context: SamplerContext) -> int:
        raise NotImplementedError

    def choose_logits(self, logits: np.ndarray, context: SamplerContext) -> int:
        """Pick a token from the logits; only called when `takes_logits` is true. `logits` is a view: read it, do not keep or change it."""
        raise NotImplementedError


class SamplerChain:
    """Filters in order, then the chooser."""

    def __init__(self, filters: Sequence[Filter], chooser: Chooser):
        self.filters = list(filters)
        self.chooser = chooser

    @property
    def names(self) -> list[str]:
        return [sampler.name for sampler in self.filters] + [self.chooser.name]

    def describe(self) -> str:
        return " ".join(self.names)

    def members(self) -> list[Sampler]:
        return [*self.filters, self.chooser]

    def choose(self, probabilities: np.ndarray, context: SamplerContext) -> int:
        for sampler in self.filters:
            probabilities = sampler.reshape(probabilities, context)
        return self.chooser.choose(probabilities, context)


def build_chain(names: Sequence[str], registry: dict[str, type[Sampler]], values: dict[str, dict] | None = None) -> SamplerChain:
    """Build a chain from plugin names; the last one must be a chooser, the others filters.

    `values` maps each plugin name to its parameter values (from config or CLI).
    """
    if not names:
        raise SettingsError("a sampler chain needs at least one sampler, e.g. \"temperature\"")
    values = values or {}

    samplers = []
    for name in names:
        plugin = registry.get(name)
        if plugin is None:
            raise SettingsError(f"unknown sampler {name!r}; installed: {', '.join(sorted(registry))}")
        samplers.append(plugin(**values.get(name, {})))

    *filters, chooser = samplers
    if not isinstance(chooser, Chooser):
        raise SettingsError(f"a sampler chain must end with a chooser such as greedy or temperature, not {chooser.name!r}")
    for sampler in filters:
        if not isinstance(sampler, Filter):
            raise SettingsError(f"{sampler.name!r} chooses a token, so it can only come last in a sampler chain")
    return SamplerChain(filters, chooser)


def nonempty_or_fallback(filtered: np.ndarray, original: np.ndarray, context: SamplerContext, name: str) -> np.ndarray:
    """Return `filtered` when it keeps some mass; else the rests of `original`, else `original` itself.

    A filter that would remove every token calls this, so that its output
    is never all zeros (NaN after normalising).
    """
    total = float(filtered.sum())
    if total > 0.0 and np.isfinite(total):
        return filtered

    rests = np.where(context.vocabulary.rest_mask, original, 0.0)
    if float(rests.sum()) > 0.0:
        logger.debug("sampler %r removed every token: keeping the rests' mass", name)
        return rests
    logger.debug("sampler %r removed every token and there is no rest mass: keeping the unfiltered distribution", name)
    return original
