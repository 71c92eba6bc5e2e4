"""The sampler interface: filters reshape a probability vector, one chooser picks a token.

A chain is zero or more filters followed by exactly one chooser, e.g.
"top_p temperature". Samplers are plugins found through the entry point
group `sideman.samplers`; built-ins are registered there like third-party
ones.
"""

from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np

from .errors import SettingsError
from .params import Param
from .vocabulary import Vocabulary


@dataclass
class SamplerContext:
    """What a sampler may look at besides the probabilities."""

    vocabulary: Vocabulary
    rng: np.random.Generator
    # Indices of the most recent tokens played, oldest first.
    recent: deque = field(default_factory=lambda: deque(maxlen=64))
    # Beat position of the onset being chosen, in beats since the transport started.
    beat: float = 0.0


class Sampler:
    """Base of filters and choosers: a name, declared parameters and their current values."""

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    help: ClassVar[str] = ""

    def __init__(self, **values: Any):
        self.values = {param.name: param.default for param in self.params}
        for key, value in values.items():
            self.set_param(key, value)

    def set_param(self, key: str, value: Any) -> Any:
        """Set one declared parameter; raise SettingsError for an unknown key or a bad value."""
        for param in self.params:
            if param.name == key:
                converted = param.convert(value, self.name)
                self.values[key] = converted
                return converted
        known = ", ".join(param.name for param in self.params) or "none"
        raise SettingsError(f"sampler {self.name!r} has no parameter {key!r} (parameters: {known})")


class Filter(Sampler):
    """Reshapes the distribution; the result need not sum to one."""

    def reshape(self, probabilities: np.ndarray, context: SamplerContext) -> np.ndarray:
        raise NotImplementedError


class Chooser(Sampler):
    """Picks one token index from a distribution."""

    def choose(self, probabilities: np.ndarray, context: SamplerContext) -> int:
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

    `values` holds parameter values per plugin name (from config or CLI).
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
