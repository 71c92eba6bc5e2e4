"""Read one monophonic line out of a standard MIDI file.

Onsets and lengths are in beats, ticks / ticks-per-beat, so tempo changes
in the file move nothing on the beat grid; the first tempo is kept for
reference. The line comes from the track and channel with the most notes
unless the caller names a track or channel. Notes that start together are
reduced to the top note, and a note that starts under a higher sounding
note is dropped (the usual skyline reduction), so a piano part gives its
melody. Channel 10 (drums) is ignored.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import mido

from .errors import MidiFileError
from .music import Note, Piece

log = logging.getLogger(__name__)

DRUM_CHANNEL = 9  # channel 10 in the musician's numbering


@dataclass
class _RawNote:
    pitch: int
    start: int  # ticks
    end: int  # ticks


def load_midi_file(path: str | Path) -> mido.MidiFile:
    """Open a MIDI file with mido, turning every failure into one MidiFileError naming the file."""
    # A FIFO or a device would block the reading thread or never end.
    if Path(path).exists() and not Path(path).is_file():
        raise MidiFileError(f"{path}: not a regular file")
    try:
        midi = mido.MidiFile(str(path), clip=True)
    except FileNotFoundError as error:
        raise MidiFileError(f"{path}: file not found") from error
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as error:
        raise MidiFileError(f"{path}: not a readable MIDI file ({type(error).__name__}: {error})") from error

    if midi.ticks_per_beat <= 0 or midi.ticks_per_beat & 0x8000:
        raise MidiFileError(f"{path}: SMPTE time division (frames per second) is not supported; export the file with ticks per beat")
    return midi


def collect_notes(midi: mido.MidiFile) -> dict[tuple[int, int], list[_RawNote]]:
    """Collect every note of the file by (track index, channel 0-15), leaving out drums."""
    groups: dict[tuple[int, int], list[_RawNote]] = defaultdict(list)
    for track_index, track in enumerate(midi.tracks):
        sounding: dict[tuple[int, int], list[int]] = defaultdict(list)
        ticks = 0
        for message in track:
            ticks += message.time
            if message.type not in ("note_on", "note_off") or message.channel == DRUM_CHANNEL:
                continue
            key = (message.channel, message.note)
            if message.type == "note_on" and message.velocity > 0:
                sounding[key].append(ticks)
            elif sounding[key]:
                start = sounding[key].pop(0)
                groups[(track_index, message.channel)].append(_RawNote(message.note, start, ticks))

        # Notes still sounding at the end of the track end there.
        for (channel, pitch), starts in sounding.items():
            for start in starts:
                groups[(track_index, channel)].append(_RawNote(pitch, start, max(ticks, start)))
    return groups


def choose_group(groups: dict, from_track: int | None, from_channel: int | None, path) -> tuple[int, int]:
    """Choose the (track, channel) with the most notes among those the caller allows.

    `from_track` counts from 1 (the first track in the file) and
    `from_channel` is 1-16, in the numbering musicians see.
    """
    candidates = [
        key for key in groups
        if (from_track is None or key[0] == from_track - 1) and (from_channel is None or key[1] == from_channel - 1)
    ]
    if not candidates:
        wanted = []
        if from_track is not None:
            wanted.append(f"track {from_track}")
        if from_channel is not None:
            wanted.append(f"channel {from_channel}")
        where = " on " + " and ".join(wanted) if wanted else ""
        raise MidiFileError(f"{path}: no notes{where} (drums on channel 10 are ignored)")
    return max(candidates, key=lambda key: (len(groups[key]), -key[0], -key[1]))


def reduce_to_line(raw_notes: list[_RawNote]) -> list[_RawNote]:
    """Keep the top note of every chord and drop notes that start under a higher sounding note."""
    by_start: dict[int, _RawNote] = {}
    for note in raw_notes:
        top = by_start.get(note.start)
        if top is None or note.pitch > top.pitch:
            by_start[note.start] = note

    line: list[_RawNote] = []
    for note in sorted(by_start.values(), key=lambda note: note.start):
        if line and note.start < line[-1].end and note.pitch < line[-1].pitch:
            continue
        line.append(note)
    return line


def read_midi_file(path: str | Path, from_track: int | None = None, from_channel: int | None = None, name: str | None = None) -> Piece:
    """Read the melodic line of one MIDI file as a Piece; raise MidiFileError naming the file and the problem."""
    midi = load_midi_file(path)
    groups = collect_notes(midi)
    track_index, channel = choose_group(groups, from_track, from_channel, path)
    line = reduce_to_line(groups[(track_index, channel)])

    ticks_per_beat = midi.ticks_per_beat
    notes = [Note(note.pitch, note.start / ticks_per_beat, max(0, note.end - note.start) / ticks_per_beat) for note in line]
    log.debug("%s: %d notes from track %d, channel %d", path, len(notes), track_index + 1, channel + 1)
    return Piece(
        name=name or Path(path).name,
        notes=notes,
        source=str(path),
        tempo=_first_tempo(midi),
        info={"track": track_index + 1, "channel": channel + 1},
    )


def _first_tempo(midi: mido.MidiFile) -> float:
    for track in midi.tracks:
        for message in track:
            if message.type == "set_tempo":
                return mido.tempo2bpm(message.tempo)
    return 120.0
