"""Note names with C4 = MIDI 60, sharps or flats, and `r` for a rest."""

import re

from .errors import InvalidInputError

PITCH_CLASS_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_LETTER_SEMITONES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_NOTE_NAME = re.compile(r"^([A-Ga-g])([#b]*)(-?\d+)$")


def pitch_name(pitch: int | None) -> str:
    """Return the name of a MIDI pitch (60 -> "C4"), or "r" for a rest (None)."""
    if pitch is None:
        return "r"
    octave = pitch // 12 - 1
    return f"{PITCH_CLASS_NAMES[pitch % 12]}{octave}"


def parse_pitch(name: str) -> int | None:
    """Parse "F#4", "Bb3" or "r" into a MIDI pitch (None for a rest).

    Raises InvalidInputError naming the text when it is not a note name or
    lies outside MIDI's 0-127.
    """
    text = name.strip()
    if text.lower() in ("r", "rest"):
        return None

    match = _NOTE_NAME.match(text)
    if match is None:
        raise InvalidInputError(f"invalid note name {name!r}: expected a letter A-G, optional # or b, and an octave, e.g. F#4 or Bb3 (C4 = 60), or r for a rest")

    letter, accidentals, octave = match.groups()
    pitch = (int(octave) + 1) * 12 + _LETTER_SEMITONES[letter.upper()]
    pitch += accidentals.count("#") - accidentals.count("b")
    if not 0 <= pitch <= 127:
        raise InvalidInputError(f"note {name!r} is MIDI pitch {pitch}, outside 0-127")
    return pitch
