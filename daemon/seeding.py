"""The seeder interface: set or update the LSTM state (a, c) and the next input, before or during play.

A seeder is a plugin found through the entry point group `sideman.seeders`,
with declared parameters like a sampler. Applying one takes two calls:

1. `prepare(improviser)` reads and checks the seeder's input (a file, a
   phrase) and may raise InvalidInputError. The engine calls it in the
   thread that received the request, so a bad request is rejected before
   it reaches the real-time loop, and file reading never delays a note.
2. `seed(improviser)` changes the state. The engine calls it between two
   notes: it must be quick and must not raise after a successful `prepare`.

Priming continues from the current state; to prime from silence, apply the
`zero` seeder (or reset) first.
"""

import logging
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Sequence

from .encoding import Token
from .errors import InvalidInputError, SettingsError
from .notenames import parse_pitch
from .params import Plugin

if TYPE_CHECKING:
    from .improviser import Improviser

logger = logging.getLogger(__name__)

# Maximum duration in beats of one item of a phrase given in note names.
MAX_ITEM_BEATS = 64.0


class Seeder(Plugin):
    """Base of seeders: prepare the input, then seed the improviser's state with it."""

    kind: ClassVar[str] = "seeder"

    def prepare(self, improviser: "Improviser") -> None:
        """Read and check the input; raise InvalidInputError naming what is wrong. Nothing to do by default."""

    def seed(self, improviser: "Improviser") -> int:
        """Change the improviser's state; return the number of tokens fed into it."""
        raise NotImplementedError


class PhraseSeeder(Seeder):
    """Base of seeders that prime the state with a phrase of tokens: `phrase` returns it."""

    def __init__(self, **values: Any):
        super().__init__(**values)
        self._tokens: list[Token] | None = None

    def phrase(self, improviser: "Improviser") -> list[Token]:
        """Return the tokens to prime with, in grid steps of the improviser's model; may raise InvalidInputError."""
        raise NotImplementedError

    def prepare(self, improviser: "Improviser") -> None:
        tokens = self.phrase(improviser)
        if not tokens:
            raise InvalidInputError(f"seeder {self.name!r} has no notes or rests to prime with")
        self._tokens = tokens

    def seed(self, improviser: "Improviser") -> int:
        if self._tokens is None:
            self.prepare(improviser)
        return prime_phrase(improviser, self._tokens)

    @property
    def prepared_length(self) -> int:
        """Tokens of the prepared phrase; 0 before `prepare`."""
        return len(self._tokens or ())


def prime_phrase(improviser: "Improviser", tokens: Sequence[Token]) -> int:
    """Feed `tokens` into the current state and record them as the seed phrase the samplers see."""
    count = improviser.prime(tokens)
    improviser.context.seed_tokens = tuple(improviser.vocabulary.indices(tokens))
    return count


def phrase_tokens(phrase: Iterable[tuple[int | None, float]], steps_per_beat: int) -> list[Token]:
    """Turn (MIDI pitch or None for a rest, beats) pairs into tokens on the grid; every item lasts at least one step."""
    return [Token(pitch, max(1, round(beats * steps_per_beat))) for pitch, beats in phrase]


def parse_phrase(text: str) -> list[tuple[int | None, float]]:
    """Parse note names with durations, "F4:1 A4:0.5 C5:1/3 r:1" (C4 = 60, beats), into (pitch, beats) pairs.

    Items are separated by spaces or commas. Raises InvalidInputError naming
    the position and text of the first invalid item.
    """
    pairs = []
    for position, item in enumerate(text.replace(",", " ").split(), start=1):
        name, separator, duration = item.partition(":")
        if not separator:
            raise InvalidInputError(f"invalid phrase item {position} {item!r}: expected NOTE:BEATS, e.g. F4:1 or r:0.5")
        try:
            pitch = parse_pitch(name)
        except InvalidInputError as error:
            raise InvalidInputError(f"invalid phrase item {position} {item!r}: {error}") from error
        pairs.append((pitch, _parse_beats(duration, position, item)))
    return pairs


def _parse_beats(text: str, position: int, item: str) -> float:
    try:
        beats = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise InvalidInputError(f"invalid duration in phrase item {position} {item!r}: expected beats such as 1, 0.5 or 1/3") from None
    if not 0 < beats <= MAX_ITEM_BEATS:
        raise InvalidInputError(f"invalid duration in phrase item {position} {item!r}: allowed above 0 and at most {MAX_ITEM_BEATS:g} beats")
    return beats


def check_phrase_text(text: str) -> None:
    """Param check for a phrase in note names: raise ValueError (InvalidInputError) on the first bad item."""
    parse_phrase(text)


def build_seeder(name: str, registry: dict[str, type[Seeder]], values: dict[str, dict] | None = None) -> Seeder:
    """Make the seeder `name` with its parameter values from `values` (per plugin name); raise SettingsError when unknown."""
    plugin = registry.get(name)
    if plugin is None:
        raise SettingsError(f"unknown seeder {name!r}; installed: {', '.join(sorted(registry)) or 'none'}")
    return plugin(**(values or {}).get(name, {}))


def apply_seeder(seeder: Seeder, improviser: "Improviser") -> int:
    """Prepare and apply `seeder` at once, as `run` and `generate` do before play; return the tokens fed."""
    seeder.prepare(improviser)
    count = seeder.seed(improviser)
    logger.info("seeded the model with %r: %d tokens", seeder.name, count)
    return count
