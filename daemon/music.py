"""Monophonic lines as read from MIDI files or transcriptions, in beats."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Note:
    """One performed note: MIDI pitch, onset and sounding length in beats."""

    pitch: int
    onset: float
    length: float


@dataclass
class Piece:
    """A monophonic line with the name and file it came from."""

    name: str
    notes: list[Note]
    source: str = ""
    # Tempo in BPM the onsets were converted with, for the log and model.json.
    tempo: float | None = None
    info: dict = field(default_factory=dict)
