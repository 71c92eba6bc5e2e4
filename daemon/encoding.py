"""Notes as tokens: one token is a note (pitch and duration) or a rest, on a beat grid.

The grid has `steps_per_beat` steps per beat (12 by default, which fits both
sixteenths and triplets). A token's duration is the time from its onset to
the next token's onset, in grid steps.

Turning a performance into tokens takes two steps:

1. `quantize_line` puts every onset on the grid and decides how long each
   note sounds. Onsets closer than one grid step are pushed apart to one
   step (grace notes and transcription artefacts). A note keeps the whole
   time to the next onset unless the silence after its release is at least
   `rest_threshold` beats, in which case it keeps its sounding length and a
   rest covers the silence. A note longer than `max_beats` is capped and the
   time after it becomes a rest, so later onsets keep their place.
2. `encode` turns that grid line into tokens: a note token per note and rest
   tokens for every gap, where a gap longer than `max_beats` is split into
   several rests. `decode` is its exact inverse.
"""

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from .errors import InvalidInputError
from .music import Note


@dataclass(frozen=True)
class EncodingSettings:
    """Grid and token settings, stored in every model bundle."""

    steps_per_beat: int = 12
    # Minimum silence in beats after a note's release that becomes a rest token.
    rest_threshold: float = 0.5
    # Maximum token length in beats: longer notes are capped, longer rests split.
    max_beats: float = 8.0

    @property
    def max_steps(self) -> int:
        return round(self.max_beats * self.steps_per_beat)

    @property
    def rest_threshold_steps(self) -> int:
        return max(1, round(self.rest_threshold * self.steps_per_beat))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "EncodingSettings":
        return cls(**values)


@dataclass(frozen=True, order=True)
class Token:
    """A note (MIDI pitch) or a rest (pitch None) lasting `steps` grid steps."""

    pitch: int | None
    steps: int

    @property
    def is_rest(self) -> bool:
        return self.pitch is None

    def transposed(self, semitones: int) -> "Token":
        """Return this token moved by `semitones`, folded by octaves into MIDI's 0-127."""
        if self.pitch is None or semitones == 0:
            return self
        pitch = self.pitch + semitones
        while pitch > 127:
            pitch -= 12
        while pitch < 0:
            pitch += 12
        return Token(pitch, self.steps)


@dataclass(frozen=True)
class GridNote:
    """A note of a quantized line: pitch, onset and length in grid steps."""

    pitch: int
    onset: int
    length: int


def quantize_line(notes: Iterable[Note], settings: EncodingSettings) -> list[GridNote]:
    """Put a monophonic line on the grid as the module docstring describes.

    Notes must be sorted by onset and monophonic (one note per onset); the
    readers guarantee both.
    """
    notes = list(notes)
    if not notes:
        return []
    scale = settings.steps_per_beat

    onsets: list[int] = []
    for note in notes:
        onset = round(note.onset * scale)
        if onsets and onset <= onsets[-1]:
            onset = onsets[-1] + 1
        onsets.append(onset)

    line: list[GridNote] = []
    for index, note in enumerate(notes):
        sounding = max(1, round((note.onset + note.length) * scale) - onsets[index])
        if index + 1 < len(onsets):
            gap_to_next = onsets[index + 1] - onsets[index]
            silence = gap_to_next - sounding
            length = sounding if silence >= settings.rest_threshold_steps else gap_to_next
        else:
            length = sounding
        length = min(length, settings.max_steps)
        line.append(GridNote(note.pitch, onsets[index] - onsets[0], length))
    return line


def encode(line: Sequence[GridNote], settings: EncodingSettings) -> list[Token]:
    """Turn a quantized line into tokens; `decode` gives the line back exactly."""
    tokens: list[Token] = []
    for index, note in enumerate(line):
        tokens.append(Token(note.pitch, note.length))
        if index + 1 < len(line):
            gap = line[index + 1].onset - (note.onset + note.length)
            if gap < 0:
                raise InvalidInputError(f"grid line overlaps at step {note.onset}: a note of {note.length} steps before an onset at step {line[index + 1].onset}")
            tokens.extend(rest_tokens(gap, settings))
    return tokens


def rest_tokens(steps: int, settings: EncodingSettings) -> list[Token]:
    """Split a silence of `steps` grid steps into rests of at most `max_beats`."""
    rests = []
    while steps > 0:
        chunk = min(steps, settings.max_steps)
        rests.append(Token(None, chunk))
        steps -= chunk
    return rests


def decode(tokens: Iterable[Token]) -> list[GridNote]:
    """Turn tokens back into a grid line whose first token starts at step 0."""
    line = []
    position = 0
    for token in tokens:
        if token.pitch is not None:
            line.append(GridNote(token.pitch, position, token.steps))
        position += token.steps
    return line


def tokenize_notes(notes: Iterable[Note], settings: EncodingSettings) -> list[Token]:
    """Quantize and encode a performed line in one call."""
    return encode(quantize_line(notes, settings), settings)
