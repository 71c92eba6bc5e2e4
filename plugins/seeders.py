"""Built-in seeders: zero (the notebook's start), one token, a phrase in note names, a phrase from a MIDI file."""

import logging
from pathlib import Path

from sideman.encoding import Token, tokenize_notes
from sideman.errors import InvalidInputError
from sideman.improviser import Improviser
from sideman.midifile import read_midi_file
from sideman.music import Note
from sideman.params import Param
from sideman.seeding import MAX_ITEM_BEATS, PhraseSeeder, Seeder, check_phrase_text, parse_phrase, phrase_tokens

logger = logging.getLogger(__name__)


class Zero(Seeder):
    """The notebook's start: a0 = c0 = 0 and the zero input x0 = 0."""

    name = "zero"
    help = "zero state and zero input, as the notebook's a0 = c0 = 0, x0 = 0"

    def seed(self, improviser: Improviser) -> int:
        improviser.reset()
        return 0


class OneToken(PhraseSeeder):
    """Prime with one note or rest."""

    name = "token"
    help = "prime with one note (or a rest), continuing from the current state"
    params = (
        Param("pitch", int, 60, "MIDI pitch of the note, C4 = 60; -1 for a rest", low=-1, high=127),
        Param("beats", float, 1.0, "duration in beats", low=0.01, high=MAX_ITEM_BEATS),
    )

    def phrase(self, improviser: Improviser) -> list[Token]:
        pitch = self.values["pitch"]
        pair = (None if pitch < 0 else pitch, self.values["beats"])
        return phrase_tokens([pair], improviser.steps_per_beat)


class Phrase(PhraseSeeder):
    """Prime with a phrase written in note names."""

    name = "phrase"
    help = 'prime with a phrase in note names and beats, e.g. "F4:1 A4:0.5 C5:0.5 r:1" (C4 = 60)'
    params = (
        Param("notes", str, "", 'the phrase: NOTE:BEATS items, e.g. "F4:1 A4:0.5 r:1"; beats may be fractions such as 1/3', check=check_phrase_text),
    )

    def phrase(self, improviser: Improviser) -> list[Token]:
        return phrase_tokens(parse_phrase(self.values["notes"]), improviser.steps_per_beat)


class MidiFilePhrase(PhraseSeeder):
    """Prime with the melodic line of a MIDI file, read and encoded as the training corpus is."""

    name = "file"
    help = "prime with the melodic line of a MIDI file, optionally only some bars"
    params = (
        Param("path", str, "", "MIDI file to read; over OSC only a file inside the [osc] files directory", path=True),
        Param("bars", str, "", 'bars to use, counting from 1: "5-8", "5" or "5-" (default: the whole file)', check=lambda text: parse_bars(text)),
        Param("beats_per_bar", float, 4.0, "bar length in beats (quarter notes) for `bars`: 4 for 4/4, 3 for 3/4", low=1.0, high=32.0),
        Param("track", int, 0, "track to read, counting from 1; 0 takes the track and channel with the most notes", low=0, high=65535),
        Param("channel", int, 0, "MIDI channel to read, 1-16; 0 takes the track and channel with the most notes", low=0, high=16),
    )

    def phrase(self, improviser: Improviser) -> list[Token]:
        path = self.values["path"]
        if not path:
            raise InvalidInputError("seeder 'file' needs a MIDI file: set file.path or pass --prime FILE.mid")
        piece = read_midi_file(path, from_track=self.values["track"] or None, from_channel=self.values["channel"] or None)

        notes = piece.notes
        if self.values["bars"]:
            notes = select_bars(notes, parse_bars(self.values["bars"]), self.values["beats_per_bar"])
            if not notes:
                raise InvalidInputError(f"{path}: no notes start in bars {self.values['bars']} (at {self.values['beats_per_bar']:g} beats a bar)")
        tokens = tokenize_notes(notes, improviser.bundle.encoding)
        logger.debug("%s: %d notes become %d tokens", Path(path).name, len(notes), len(tokens))
        return tokens


def parse_bars(text: str) -> tuple[int, int | None]:
    """Parse "5-8", "5" or "5-" into (first bar, last bar or None for the end), bars counting from 1."""
    first_text, dash, last_text = text.strip().partition("-")
    try:
        first = int(first_text)
        if not dash:
            last = first
        elif last_text.strip():
            last = int(last_text)
        else:
            last = None
    except ValueError:
        raise ValueError('expected bars as "5-8", "5" or "5-", counting from 1') from None
    if first < 1 or last is not None and last < first:
        raise ValueError('expected bars as "5-8", "5" or "5-", counting from 1, the last bar not before the first')
    return first, last


def select_bars(notes: list[Note], bars: tuple[int, int | None], beats_per_bar: float) -> list[Note]:
    """Keep the notes starting in the bar range, moved so that the first bar starts at beat 0.

    A note that sounds past the range's end is cut there.
    """
    first, last = bars
    start = (first - 1) * beats_per_bar
    end = float("inf") if last is None else last * beats_per_bar
    selected = []
    for note in notes:
        if start <= note.onset < end:
            length = min(note.length, end - note.onset)
            selected.append(Note(note.pitch, note.onset - start, length))
    return selected
