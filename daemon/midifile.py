"""Read one monophonic line out of a standard MIDI file (SMF formats 0, 1 and 2).

Onsets and lengths are in beats. With a ticks-per-beat time division a beat
is ticks / ticks-per-beat, so tempo changes in the file move nothing on the
beat grid. With an SMPTE time division (frames per second and ticks per
frame) ticks are seconds, and the file's tempo map turns them into beats.
The first tempo is kept for reference.

The line comes from the track and channel with the most notes unless the
caller names a track or channel. Notes that start together are reduced to
the top note, and a note that starts under a higher sounding note is dropped
(the usual skyline reduction), so a piano part gives its melody. Channel 10
(drums) is ignored. Each track of a format 2 file is a sequence of its own,
which does not matter here because the line comes from one track.

The bytes are parsed here rather than by mido, because mido 1.3.3 reads
past a wrong chunk length, rejects the unknown chunks that SMF 1.0 requires
readers to skip, and takes quadratic time on a long run of continuation
bytes in a delta time. Every problem becomes one MidiFileError naming the file,
the track and the byte offset.
"""

import logging
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .errors import MidiFileError
from .music import Note, Piece

log = logging.getLogger(__name__)

DRUM_CHANNEL = 9  # channel 10 in the musician's numbering

# Caps on the time and memory a hostile file can cost. The parser's time grows
# with the bytes and its memory with the notes. A long piano piece has some tens
# of thousands of notes, and the byte cap is generous because controller data
# makes files large with few notes.
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_NOTES = 200_000

# Caps that keep a note or a silence hours long from becoming a huge run of
# rest tokens. Both equal the largest allowed `max_beats` of the encoding,
# which caps notes and splits rests at no more than 64 beats anyway.
MAX_NOTE_BEATS = 64.0
MAX_SILENCE_BEATS = 64.0

# SMF tempo in microseconds per beat when the file sets none: 120 BPM.
DEFAULT_TEMPO = 500_000

# SMPTE frame rates by the (negated) high byte of the time division; 29 is 29.97 drop-frame.
SMPTE_FRAME_RATES = {24: 24.0, 25: 25.0, 29: 30000 / 1001, 30: 30.0}

# Data bytes after each channel message status (high nibble).
CHANNEL_DATA_BYTES = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}

# Data bytes after system common and real-time status bytes, which do not
# belong in a file but appear in some; F4, F5, F9 and FD are undefined.
SYSTEM_DATA_BYTES = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0, 0xF8: 0, 0xFA: 0, 0xFB: 0, 0xFC: 0, 0xFE: 0}

META_END_OF_TRACK = 0x2F
META_SET_TEMPO = 0x51

# A delta time or length is a variable-length quantity of at most 4 bytes (0x0FFFFFFF).
MAX_VARIABLE_INT_BYTES = 4


@dataclass(slots=True)
class _RawNote:
    pitch: int
    start: int  # ticks
    end: int  # ticks


@dataclass
class _Header:
    format: int
    track_count: int
    # Ticks per beat, or None with an SMPTE time division.
    ticks_per_beat: int | None
    # Ticks per second with an SMPTE time division (frames per second x ticks per frame), else None.
    ticks_per_second: float | None


@dataclass
class _Track:
    # Notes by channel 0-15 in order of their onsets; drums are left out.
    notes: dict[int, list[_RawNote]] = field(default_factory=lambda: defaultdict(list))
    # (tick, microseconds per beat) of every set_tempo event.
    tempos: list[tuple[int, int]] = field(default_factory=list)
    drum_notes: int = 0
    # Notes kept, drums left out.
    note_count: int = 0


def read_midi_file(path: str | Path, from_track: int | None = None, from_channel: int | None = None, name: str | None = None) -> Piece:
    """Read the melodic line of one MIDI file as a Piece; raise MidiFileError naming the file and the problem."""
    data = read_file_bytes(path)
    header, tracks = parse_smf(data, path)

    groups = {(index, channel): notes for index, track in enumerate(tracks) for channel, notes in track.notes.items() if notes}
    track_index, channel = choose_group(groups, from_track, from_channel, path, sum(track.drum_notes for track in tracks))

    # Format 2 tracks are independent sequences with tempos of their own; in
    # formats 0 and 1 every set_tempo applies to the whole file.
    tempo_tracks = [tracks[track_index]] if header.format == 2 else tracks
    # Sorted by tick only, so of two tempos at one tick the later in the file wins.
    tempos = sorted((tempo for track in tempo_tracks for tempo in track.tempos), key=lambda tempo: tempo[0])
    to_beats = beat_converter(header, tempos)

    notes = notes_in_beats(groups[(track_index, channel)], to_beats, path)
    line = shorten_long_silences(reduce_to_line(notes), path)
    log.debug("%s: %d notes from track %d, channel %d", path, len(line), track_index + 1, channel + 1)
    return Piece(
        name=name or Path(path).name,
        notes=line,
        source=str(path),
        tempo=60_000_000 / (tempos[0][1] if tempos else DEFAULT_TEMPO),
        info={"track": track_index + 1, "channel": channel + 1},
    )


def read_file_bytes(path: str | Path) -> bytes:
    """Return the bytes of a MIDI file of at most MAX_FILE_BYTES; raise MidiFileError otherwise."""
    # os.stat raises ValueError for a NUL character, which a settings file can write as \u0000.
    if "\0" in str(path):
        raise MidiFileError(f"invalid MIDI file name {str(path)!r}: it contains a NUL character")
    # A FIFO or a device would block the reading thread or never end.
    if Path(path).exists() and not Path(path).is_file():
        raise MidiFileError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError as error:
        raise MidiFileError(f"{path}: file not found") from error
    except OSError as error:
        raise MidiFileError(f"{path}: could not be read: {error.strerror or error}") from error

    if len(data) > MAX_FILE_BYTES:
        raise MidiFileError(f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MB, the maximum size of a MIDI file sideman reads")
    return data


# Parsing the file's bytes

def parse_smf(data: bytes, path: str | Path) -> tuple[_Header, list[_Track]]:
    """Parse the header chunk and every track chunk, skipping chunks of other types as SMF 1.0 requires."""
    header, position = _parse_header(data, path)
    tracks: list[_Track] = []

    while len(tracks) < header.track_count:
        if position + 8 > len(data):
            raise MidiFileError(f"{path}: the file ends after {len(tracks)} of the {header.track_count} tracks its header declares (truncated)")
        chunk_type = data[position:position + 4]
        length = int.from_bytes(data[position + 4:position + 8], "big")
        start = position + 8
        end = start + length

        if not _is_chunk_type(chunk_type):
            raise MidiFileError(
                f"{path}: expected a chunk at byte {position} but found the bytes {chunk_type!r}; "
                "the length of the chunk before it is probably wrong"
            )
        if end > len(data):
            what = f"track {len(tracks) + 1}" if chunk_type == b"MTrk" else f"chunk {chunk_type!r}"
            raise MidiFileError(f"{path}: {what} declares {length} bytes but the file ends after {len(data) - start} of them (truncated, or a wrong chunk length)")

        if chunk_type == b"MTrk":
            notes_left = MAX_NOTES - sum(track.note_count for track in tracks)
            tracks.append(_TrackParser(data, start, end, f"{path}: track {len(tracks) + 1}", notes_left).parse())
        else:
            log.debug("%s: skipped a chunk of unknown type %r at byte %d", path, chunk_type, position)
        position = end

    if position < len(data):
        log.debug("%s: ignored %d bytes after the last track", path, len(data) - position)
    return header, tracks


def _parse_header(data: bytes, path: str | Path) -> tuple[_Header, int]:
    if data[:4] != b"MThd":
        raise MidiFileError(f"{path}: not a MIDI file: it starts with {data[:4]!r}, expected b'MThd'")
    if len(data) < 14:
        raise MidiFileError(f"{path}: the header chunk is cut off after {len(data)} bytes, expected 14 (truncated)")
    length = int.from_bytes(data[4:8], "big")
    if length < 6:
        raise MidiFileError(f"{path}: the header chunk declares {length} bytes, expected at least 6")
    if 8 + length > len(data):
        raise MidiFileError(f"{path}: the header chunk declares {length} bytes but the file contains only {len(data) - 8} bytes after it")

    smf_format = int.from_bytes(data[8:10], "big")
    track_count = int.from_bytes(data[10:12], "big")
    division = int.from_bytes(data[12:14], "big")
    if smf_format not in (0, 1, 2):
        raise MidiFileError(f"{path}: the header declares MIDI file format {smf_format}, expected 0, 1 or 2")
    return _Header(smf_format, track_count, *_time_division(division, path)), 8 + length


def _time_division(division: int, path: str | Path) -> tuple[int | None, float | None]:
    """Return (ticks per beat, None) or, for an SMPTE division, (None, ticks per second)."""
    if not division & 0x8000:
        if division == 0:
            raise MidiFileError(f"{path}: the header declares 0 ticks per beat, expected 1 to 32767")
        return division, None

    # The high byte is the frame rate negated in two's complement, the low byte the ticks per frame.
    frame_code = 256 - (division >> 8)
    ticks_per_frame = division & 0xFF
    if frame_code not in SMPTE_FRAME_RATES:
        raise MidiFileError(f"{path}: SMPTE time division with {frame_code} frames per second, expected 24, 25, 29 (29.97 drop-frame) or 30")
    if ticks_per_frame == 0:
        raise MidiFileError(f"{path}: SMPTE time division with 0 ticks per frame, expected 1 to 255")
    return None, SMPTE_FRAME_RATES[frame_code] * ticks_per_frame


def _is_chunk_type(chunk_type: bytes) -> bool:
    # Chunk types are four printable ASCII characters, such as MTrk or XFIH.
    return len(chunk_type) == 4 and all(32 <= byte <= 126 for byte in chunk_type)


class _TrackParser:
    """Parse the events of one track chunk, keeping the notes and tempos and skipping everything else."""

    def __init__(self, data: bytes, start: int, end: int, where: str, notes_left: int):
        self.data = data
        self.start = start
        self.position = start
        self.end = end
        self.where = where
        self.notes_left = notes_left
        self.track = _Track()
        self.ticks = 0
        # Sounding notes by (channel, pitch): the note_off or the next note_on of that pitch ends them.
        self.sounding: dict[tuple[int, int], _RawNote] = {}

    def parse(self) -> _Track:
        # Running status: a data byte where a status byte belongs repeats the last channel status.
        # Meta and sysex events leave it as it is, so files that rely on it across them still read.
        status: int | None = None
        ended = False
        while self.position < self.end and not ended:
            self.ticks += self.delta_time()
            first = self.byte()
            if first == 0xFF:
                ended = self.meta_event()
            elif first in (0xF0, 0xF7):
                self.skip(self.variable_int("sysex length"), "sysex data")
            elif first >= 0xF0:
                self.system_message(first)
            elif first >= 0x80:
                status = first
                self.channel_message(status, self.byte())
            elif status is None:
                raise self.error(self.position - 1, f"data byte 0x{first:02X} with no status byte before it (running status without a status)")
            else:
                self.channel_message(status, first)

        if not ended:
            log.debug("%s has no end-of-track event; it ends with its chunk", self.where)
        elif self.position < self.end:
            log.debug("%s: ignored %d bytes after the end-of-track event", self.where, self.end - self.position)

        # Notes still sounding at the end of the track end there.
        for note in self.sounding.values():
            note.end = self.ticks
        return self.track

    def channel_message(self, status: int, first_data: int) -> None:
        kind = status & 0xF0
        if kind != 0x80 and kind != 0x90:
            self.skip(CHANNEL_DATA_BYTES[kind] - 1, "channel message data")
            return

        # Data bytes are 0-127; a larger one in a damaged file is clipped, as mido's clip=True does.
        pitch = min(first_data, 127)
        velocity = self.byte()
        if kind == 0x90 and velocity > 0:
            self.note_on(status & 0x0F, pitch)
            return
        note = self.sounding.pop((status & 0x0F, pitch), None)
        if note is not None:
            note.end = self.ticks

    def note_on(self, channel: int, pitch: int) -> None:
        if channel == DRUM_CHANNEL:
            self.track.drum_notes += 1
            return

        # A note_on of a pitch that already sounds on the channel ends the earlier note, as a synth retriggers.
        # A second note_on at the same tick is the same note.
        key = (channel, pitch)
        earlier = self.sounding.get(key)
        if earlier is not None:
            if earlier.start == self.ticks:
                return
            earlier.end = self.ticks

        if self.track.note_count >= self.notes_left:
            raise MidiFileError(f"{self.where}: the file contains more than {MAX_NOTES} notes, the maximum sideman reads from one file")
        self.track.note_count += 1
        note = _RawNote(pitch, self.ticks, self.ticks)
        self.sounding[key] = note
        self.track.notes[channel].append(note)

    def meta_event(self) -> bool:
        """Read one meta event; return True at the end-of-track event."""
        meta_type = self.byte()
        length = self.variable_int("meta event length")
        payload_start = self.position
        self.skip(length, "meta event data")

        if meta_type == META_END_OF_TRACK:
            return True
        if meta_type == META_SET_TEMPO and length == 3:
            tempo = int.from_bytes(self.data[payload_start:payload_start + 3], "big")
            if tempo == 0:
                log.warning("%s: ignored a set_tempo event of 0 microseconds per beat at tick %d", self.where, self.ticks)
            else:
                self.track.tempos.append((self.ticks, tempo))
        return False

    def system_message(self, status: int) -> None:
        if status not in SYSTEM_DATA_BYTES:
            raise self.error(self.position - 1, f"undefined status byte 0x{status:02X}")
        self.skip(SYSTEM_DATA_BYTES[status], "system message data")

    def byte(self) -> int:
        if self.position >= self.end:
            raise self.past_end()
        value = self.data[self.position]
        self.position += 1
        return value

    def skip(self, count: int, what: str) -> None:
        if self.position + count > self.end:
            raise self.error(self.position, f"{what} of {count} bytes runs past the end of the track chunk; the chunk length of {self.end - self.start} bytes is probably wrong")
        self.position += count

    def delta_time(self) -> int:
        # Most delta times fit in one byte; this path is the hot loop of the parser.
        if self.position < self.end and self.data[self.position] < 0x80:
            self.position += 1
            return self.data[self.position - 1]
        return self.variable_int("delta time")

    def variable_int(self, what: str) -> int:
        offset = self.position
        value = 0
        for _ in range(MAX_VARIABLE_INT_BYTES):
            byte = self.byte()
            value = (value << 7) | (byte & 0x7F)
            if byte < 0x80:
                return value
        raise self.error(offset, f"{what} longer than {MAX_VARIABLE_INT_BYTES} bytes")

    def past_end(self) -> MidiFileError:
        return self.error(self.position, f"an event runs past the end of the track chunk; the chunk length of {self.end - self.start} bytes is probably wrong")

    def error(self, offset: int, problem: str) -> MidiFileError:
        return MidiFileError(f"{self.where}, byte {offset}: {problem}")


# From notes in ticks to a line in beats

def beat_converter(header: _Header, tempos: list[tuple[int, int]]):
    """Return a function from ticks to beats.

    With ticks per beat this is a division. With SMPTE ticks (seconds x
    frames per second x ticks per frame) it integrates the tempo map: each
    set_tempo at tick t (in microseconds per beat) applies until the next one.
    """
    if header.ticks_per_beat is not None:
        ticks_per_beat = header.ticks_per_beat
        return lambda ticks: ticks / ticks_per_beat

    # A tick lasts 1e6 / ticks_per_second microseconds, so at a tempo of T microseconds
    # per beat it is that divided by T beats. Each segment starts at a tick and a beat position.
    microseconds_per_tick = 1_000_000 / header.ticks_per_second
    starts = [0]
    beats_per_tick = [microseconds_per_tick / DEFAULT_TEMPO]
    beats_at_start = [0.0]
    for tick, tempo in tempos:
        beats_at_start.append(beats_at_start[-1] + (tick - starts[-1]) * beats_per_tick[-1])
        starts.append(tick)
        beats_per_tick.append(microseconds_per_tick / tempo)

    def to_beats(ticks: int) -> float:
        segment = bisect_right(starts, ticks) - 1
        return beats_at_start[segment] + (ticks - starts[segment]) * beats_per_tick[segment]

    return to_beats


def notes_in_beats(raw_notes: list[_RawNote], to_beats, path: str | Path) -> list[Note]:
    """Convert notes in ticks to Notes in beats, cutting any longer than MAX_NOTE_BEATS."""
    notes = []
    cut = 0
    for raw in raw_notes:
        onset = to_beats(raw.start)
        length = max(0.0, to_beats(raw.end) - onset)
        if length > MAX_NOTE_BEATS:
            length = MAX_NOTE_BEATS
            cut += 1
        notes.append(Note(raw.pitch, onset, length))

    if cut:
        log.warning("%s: %d notes longer than %g beats cut to %g beats", path, cut, MAX_NOTE_BEATS, MAX_NOTE_BEATS)
    return notes


def choose_group(groups: dict, from_track: int | None, from_channel: int | None, path, drum_notes: int = 0) -> tuple[int, int]:
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
        drums = f"; its {drum_notes} drum notes on channel 10 are ignored" if drum_notes else " (drums on channel 10 are ignored)"
        raise MidiFileError(f"{path}: no notes{where}{drums}")
    return max(candidates, key=lambda key: (len(groups[key]), -key[0], -key[1]))


def reduce_to_line(notes: list[Note]) -> list[Note]:
    """Keep the top note of every chord and drop notes that start under a higher sounding note."""
    by_onset: dict[float, Note] = {}
    for note in notes:
        top = by_onset.get(note.onset)
        if top is None or note.pitch > top.pitch:
            by_onset[note.onset] = note

    line: list[Note] = []
    for note in sorted(by_onset.values(), key=lambda note: note.onset):
        if line and note.onset < line[-1].onset + line[-1].length and note.pitch < line[-1].pitch:
            continue
        line.append(note)
    return line


def shorten_long_silences(line: list[Note], path: str | Path) -> list[Note]:
    """Shorten every silence longer than MAX_SILENCE_BEATS to that length, moving later notes earlier.

    This covers the silence before the first note too. Bar numbers after a
    shortened silence no longer match the file's, and the warning states this.
    """
    shortened: list[Note] = []
    shift = 0.0
    sounding_until = 0.0
    count = 0
    longest = 0.0
    for note in line:
        onset = note.onset - shift
        silence = onset - sounding_until
        if silence > MAX_SILENCE_BEATS:
            shift += silence - MAX_SILENCE_BEATS
            onset = sounding_until + MAX_SILENCE_BEATS
            count += 1
            longest = max(longest, silence)
        shortened.append(Note(note.pitch, onset, note.length) if shift else note)
        sounding_until = max(sounding_until, onset + note.length)

    if count:
        log.warning(
            "%s: %d silences longer than %g beats (the longest %.0f beats) shortened to %g beats; bar numbers after them differ from the file's",
            path, count, MAX_SILENCE_BEATS, longest, MAX_SILENCE_BEATS,
        )
    return shortened
