"""Corpus arguments: a MIDI file, a folder searched recursively, or a Weimar Jazz Database folder."""

import logging
from pathlib import Path
from typing import Sequence

from .errors import CorpusError, MidiFileError
from .midifile import read_midi_file
from .music import Piece
from .wjazzd import is_wjazzd_folder, read_wjazzd

log = logging.getLogger(__name__)

MIDI_SUFFIXES = (".mid", ".midi")


def find_midi_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in MIDI_SUFFIXES)


def read_corpus(paths: Sequence[str | Path], from_track: int | None = None, from_channel: int | None = None) -> list[Piece]:
    """Read every corpus argument into pieces.

    MIDI files that cannot be read are skipped with a warning and counted;
    a path that does not exist, or a corpus with no readable piece at all,
    raises CorpusError.
    """
    pieces: list[Piece] = []
    midi_files_read = 0
    midi_files_skipped = 0

    for argument in paths:
        path = Path(argument)
        if not path.exists():
            raise CorpusError(f"corpus {path} not found: expected a MIDI file, a folder of .mid/.midi files or a Weimar Jazz Database folder")

        if is_wjazzd_folder(path):
            pieces.extend(read_wjazzd(path))
            continue

        if path.is_dir():
            files = [(file, file.relative_to(path).as_posix()) for file in find_midi_files(path)]
            if not files:
                log.warning("corpus folder %s contains no .mid or .midi files", path)
        else:
            files = [(path, path.name)]

        for file, name in files:
            try:
                pieces.append(read_midi_file(file, from_track, from_channel, name=name))
                midi_files_read += 1
            except MidiFileError as error:
                # The error's message starts with the file's path, then gives the problem.
                log.warning("skipped MIDI file %s", error)
                midi_files_skipped += 1

    if midi_files_read or midi_files_skipped:
        log.info("read %d MIDI files, skipped %d that could not be read", midi_files_read, midi_files_skipped)
    if not pieces:
        skipped = f": all {midi_files_skipped} MIDI files were skipped, each for the reason logged above" if midi_files_skipped else ""
        raise CorpusError(f"no readable piece in {', '.join(str(path) for path in paths)}{skipped}")
    return pieces
