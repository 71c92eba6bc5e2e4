"""Live notes to tokens: turn a musician's note_on and note_off events into tokens while they play.

The engine converts each MIDI event's arrival time to a beat position with
its tempo map and calls a `LiveLine`. The line is monophonic with last note
priority, as on a mono synth: a new key ends the sounding note at its onset.
Releasing the sounding key while earlier keys are still held makes the most
recent of them sound again from then.

Onsets and releases are snapped to a quantize grid named as a musician names
it ("1/16", "1/8t", ...), then converted to grid steps of the model
(`EncodingSettings.steps_per_beat`). From there the token rules are those of
encoding.py, so a phrase played live gives the tokens that the same phrase
read from a file gives:

- A note lasts from its onset to the next onset, unless the silence after
  its release is at least `rest_threshold`: then it keeps its sounding
  length and rest tokens cover the silence.
- Every note lasts at least one step. Notes longer than `max_beats` are
  capped, and the time after them becomes rest. Rests longer than
  `max_beats` are split.
- Of two notes with the same quantized onset, the later one wins.

Each call returns the tokens that became determined, that is, tokens that no
later event can change, so the engine can feed them into the LSTM state
while the musician still plays. Emitted tokens always cover the quantized
time from the phrase's first onset without gaps or overlaps.
"""

import logging
import math
from dataclasses import dataclass
from fractions import Fraction

from .encoding import EncodingSettings, Token, rest_tokens
from .errors import InvalidInputError, SettingsError

logger = logging.getLogger(__name__)

# Grid positions inside one beat (a quarter note) for each quantize grid.
_GRID_POSITIONS: dict[str, tuple[Fraction, ...]] = {
    "1/4": (Fraction(0),),
    "1/8": (Fraction(0), Fraction(1, 2)),
    "1/8t": (Fraction(0), Fraction(1, 3), Fraction(2, 3)),
    "1/16": (Fraction(0), Fraction(1, 4), Fraction(1, 2), Fraction(3, 4)),
    "1/16t": tuple(Fraction(sixth, 6) for sixth in range(6)),
    # Sixteenths and eighth triplets together: jazz mixes straight and swung subdivisions.
    "1/16+1/8t": (Fraction(0), Fraction(1, 4), Fraction(1, 3), Fraction(1, 2), Fraction(2, 3), Fraction(3, 4)),
}

# "off" leaves a beat as it is, so only the model's own grid step quantizes it.
QUANTIZE_OFF = "off"
DEFAULT_QUANTIZE = "1/16+1/8t"
QUANTIZE_CHOICES: tuple[str, ...] = (*_GRID_POSITIONS, QUANTIZE_OFF)

# An ignored note_off is logged at WARNING the 1st, 10th, 100th, ... time, and at DEBUG otherwise.
_WARNING_COUNT_BASE = 10


def quantize_beat(beat: float, grid: str) -> Fraction | float:
    """Snap an absolute beat position to the nearest position of `grid`.

    Grid lines at whole beats line up with bars. An exact tie between two
    grid positions goes to the earlier one. Returns a Fraction, or the beat
    itself as a float for "off". Raises SettingsError for an unknown grid
    and InvalidInputError for a beat that is not a finite number.
    """
    positions = _grid_positions(grid)
    if not math.isfinite(beat):
        raise InvalidInputError(f"invalid beat position {beat!r}: expected a finite number of beats")
    if positions is None:
        return float(beat)

    exact = Fraction(beat)
    whole_beats = math.floor(exact)
    offset = exact - whole_beats
    candidates = (*positions, Fraction(1))
    nearest = min(candidates, key=lambda position: (abs(offset - position), position))
    return whole_beats + nearest


def _grid_positions(grid: str) -> tuple[Fraction, ...] | None:
    """Return the positions inside one beat of `grid`, or None for "off". Raise SettingsError for an unknown name."""
    if grid == QUANTIZE_OFF:
        return None
    try:
        return _GRID_POSITIONS[grid]
    except KeyError:
        raise SettingsError(f"unknown quantize grid {grid!r}: expected one of {', '.join(QUANTIZE_CHOICES)}") from None


@dataclass
class _PendingNote:
    """The latest note, whose token is not determined yet, with positions in absolute grid steps."""

    pitch: int
    onset: int
    # Step of the key's release, None while it sounds.
    release: int | None = None

    @property
    def sounding_steps(self) -> int:
        """Sounding length in steps, at least one step (encoding.py's rule for grace notes)."""
        return max(1, self.release - self.onset)


class LiveLine:
    """A musician's monophonic live phrase, turned into tokens as soon as each token is determined.

    Beats are absolute beat positions (quarter notes) from the engine's tempo
    map. A beat earlier than the latest one seen in the phrase, as after a
    tempo change, counts as the latest one, so no duration is negative.
    """

    def __init__(self, encoding: EncodingSettings, quantize: str = DEFAULT_QUANTIZE, max_hold_beats: float | None = None):
        _grid_positions(quantize)
        if max_hold_beats is None:
            max_hold_beats = encoding.max_beats
        if not (math.isfinite(max_hold_beats) and max_hold_beats > 0):
            raise SettingsError(f"invalid max_hold_beats {max_hold_beats!r}: expected a positive number of beats")

        self._encoding = encoding
        self._quantize = quantize
        # A key held longer than this many beats since its note_on counts as released, so a stuck key cannot hold a phrase open.
        self._max_hold_beats = float(max_hold_beats)
        self._ignored_note_offs = 0
        # Keys released by max_hold_beats or by finish while still down: their note_off is expected, not ignored.
        self._released_early: set[int] = set()
        self._start_phrase()

    def _start_phrase(self) -> None:
        # Held keys, pitch to the beat of its note_on, in the order pressed: the last one sounds.
        self._held: dict[int, float] = {}
        self._note: _PendingNote | None = None
        # Absolute step where the emitted tokens end, None before the first token.
        self._emitted_until: int | None = None
        self._first_onset: float | None = None
        self._last_event: float | None = None
        self._latest_beat: float | None = None
        self._latest_step: int | None = None

    @property
    def quantize(self) -> str:
        """Quantize grid of onsets and releases, one of QUANTIZE_CHOICES."""
        return self._quantize

    @quantize.setter
    def quantize(self, grid: str) -> None:
        # Events already quantized keep their steps; a later event never lands before them (see _step).
        _grid_positions(grid)
        if grid != getattr(self, "_quantize", None):
            logger.info("live input quantize grid set to %s", grid)
        self._quantize = grid

    @property
    def active(self) -> bool:
        """Whether some key is held."""
        return bool(self._held)

    @property
    def sounding(self) -> int | None:
        """Pitch of the sounding key, None when no key is held."""
        if not self._held:
            return None
        return next(reversed(self._held))

    @property
    def first_onset(self) -> float | None:
        """Beat of the phrase's first note_on as played (not quantized), None before it."""
        return self._first_onset

    @property
    def last_event(self) -> float | None:
        """Beat of the phrase's latest note_on or note_off of a held key, None before the first note_on."""
        return self._last_event

    @property
    def ignored_note_offs(self) -> int:
        """Number of note_offs of keys that were not held, since this line was created."""
        return self._ignored_note_offs

    def note_on(self, pitch: int, beat: float) -> list[Token]:
        """Press a key at `beat`. It sounds at once and ends the sounding note (last note priority)."""
        _check_pitch(pitch)
        tokens = self._advance_to(beat)
        beat = self._clamp_beat(beat)
        if self._first_onset is None:
            self._first_onset = beat
        self._last_event = beat

        # A note_on of a held key restarts it: it moves to the end of the press order.
        self._held.pop(pitch, None)
        self._held[pitch] = beat
        self._released_early.discard(pitch)
        tokens.extend(self._start_note(pitch, self._step(beat)))
        return tokens

    def note_off(self, pitch: int, beat: float) -> list[Token]:
        """Release a key at `beat`. If it is the sounding key, the most recent key still held sounds again."""
        _check_pitch(pitch)
        tokens = self._advance_to(beat)

        if pitch not in self._held:
            if pitch in self._released_early:
                self._released_early.discard(pitch)
                logger.debug("note_off of pitch %d, already counted as released", pitch)
            else:
                self._count_ignored_note_off(pitch, beat)
            return tokens

        beat = self._clamp_beat(beat)
        self._last_event = beat
        tokens.extend(self._release_key(pitch, beat))
        return tokens

    def advance(self, beat: float) -> list[Token]:
        """Let time pass to `beat` with no event: apply max_hold_beats and the rest threshold."""
        return self._advance_to(beat)

    def finish(self, beat: float, trailing_rest: bool = True) -> list[Token]:
        """End the phrase at `beat`: emit every pending token, then start a new phrase.

        The pending note keeps its sounding length, or lasts up to `beat` if its
        key is still held. With `trailing_rest`, one rest from the last note's
        end to `beat` follows when that silence is at least rest_threshold,
        capped at max_beats: a single token, so a long wait before a response
        does not feed many rests. Keys still held count as released. Returns []
        when nothing was played.
        """
        tokens = self._advance_to(beat)
        if self._first_onset is None:
            return tokens

        end = self._step(self._clamp_beat(beat))
        note = self._note
        if note is not None:
            length = note.sounding_steps if note.release is not None else max(1, end - note.onset)
            tokens.append(self._emit_note(note, length))

        silence = end - self._emitted_until
        if trailing_rest and silence >= self._encoding.rest_threshold_steps:
            tokens.append(Token(None, min(silence, self._encoding.max_steps)))

        self._released_early.update(self._held)
        logger.debug("live phrase finished at beat %.3f with %d keys still held", beat, len(self._held))
        self._start_phrase()
        return tokens

    def _advance_to(self, beat: float) -> list[Token]:
        """Apply the key releases of max_hold_beats up to `beat`, then emit the note if the time makes it determined."""
        _check_beat(beat)
        if self._first_onset is None:
            return []
        now = max(beat, self._latest_beat)

        # Keys are held in the order pressed, so the earliest press runs out first.
        tokens: list[Token] = []
        while self._held:
            pitch, pressed = next(iter(self._held.items()))
            released = pressed + self._max_hold_beats
            if released > now:
                break
            logger.debug("key %d held for more than %s beats counts as released at beat %.3f", pitch, self._max_hold_beats, released)
            self._released_early.add(pitch)
            tokens.extend(self._release_key(pitch, self._clamp_beat(released)))

        tokens.extend(self._settle(self._step(self._clamp_beat(now))))
        return tokens

    def _release_key(self, pitch: int, beat: float) -> list[Token]:
        was_sounding = pitch == self.sounding
        del self._held[pitch]
        if not was_sounding:
            return []

        step = self._step(beat)
        if self._note is not None and self._note.release is None:
            self._note.release = step
        if self._held:
            # Mono synth behaviour: the most recent key still held sounds again from the release.
            return self._start_note(self.sounding, step)
        return []

    def _start_note(self, pitch: int, onset: int) -> list[Token]:
        """Emit what the onset at step `onset` determines, then make `pitch` the pending note."""
        note = self._note
        if note is not None and onset == note.onset:
            # Two notes on one quantized onset: the later one wins.
            logger.debug("note %d replaces note %d on the same grid step", pitch, note.pitch)
            self._note = _PendingNote(pitch, onset)
            return []

        tokens = self._settle(onset)
        note = self._note
        if note is not None:
            # The silence before this onset, if any, is below rest_threshold: the note lasts up to it.
            tokens.append(self._emit_note(note, onset - note.onset))
        if self._emitted_until is not None:
            tokens.extend(rest_tokens(onset - self._emitted_until, self._encoding))
        self._emitted_until = onset
        self._note = _PendingNote(pitch, onset)
        return tokens

    def _settle(self, now: int) -> list[Token]:
        """Emit the pending note early when no onset at or after step `now` can change its token."""
        note = self._note
        if note is None:
            return []

        # A note that has sounded for max_beats is capped whatever comes next; the time after it becomes rest.
        sounded = now - note.onset if note.release is None else note.sounding_steps
        if sounded >= self._encoding.max_steps:
            return [self._emit_note(note, self._encoding.max_steps)]
        if note.release is None:
            return []

        silence = now - (note.onset + note.sounding_steps)
        if silence >= self._encoding.rest_threshold_steps:
            return [self._emit_note(note, note.sounding_steps)]
        return []

    def _emit_note(self, note: _PendingNote, length: int) -> Token:
        """Return the pending note's token of `length` steps, capped at max_beats, and clear the pending note."""
        length = min(length, self._encoding.max_steps)
        self._emitted_until = note.onset + length
        self._note = None
        logger.debug("live note %d of %d steps at step %d", note.pitch, length, note.onset)
        return Token(note.pitch, length)

    def _clamp_beat(self, beat: float) -> float:
        """Return `beat`, or the latest beat of the phrase if that is later; record it as the latest."""
        if self._latest_beat is not None and beat < self._latest_beat:
            return self._latest_beat
        self._latest_beat = beat
        return beat

    def _step(self, beat: float) -> int:
        """Quantize `beat` and convert it to an absolute grid step, never before the phrase's latest step.

        The clamp also covers a quantize grid changed within a phrase, where a
        later beat can snap to an earlier position than the previous grid gave.
        """
        step = round(quantize_beat(beat, self._quantize) * self._encoding.steps_per_beat)
        if self._latest_step is not None and step < self._latest_step:
            return self._latest_step
        self._latest_step = step
        return step

    def _count_ignored_note_off(self, pitch: int, beat: float) -> None:
        self._ignored_note_offs += 1
        count = self._ignored_note_offs
        level = logging.WARNING if _is_power_of(count, _WARNING_COUNT_BASE) else logging.DEBUG
        logger.log(level, "ignored note_off of pitch %d at beat %.3f: the key was not held (%d ignored so far)", pitch, beat, count)


def _check_pitch(pitch: int) -> None:
    if not isinstance(pitch, int) or not 0 <= pitch <= 127:
        raise InvalidInputError(f"invalid MIDI pitch {pitch!r}: expected an integer from 0 to 127")


def _check_beat(beat: float) -> None:
    if not math.isfinite(beat):
        raise InvalidInputError(f"invalid beat position {beat!r}: expected a finite number of beats")


def _is_power_of(count: int, base: int) -> bool:
    while count % base == 0:
        count //= base
    return count == 1
