"""Small MIDI files built with mido for reader and training tests."""

from pathlib import Path

import mido


def note_track(notes, channel=0, ticks_per_beat=480, tempo_bpm=None, name=None):
    """A track from (pitch, onset beats, length beats) triples, in time order of events."""
    events = []
    for pitch, onset, length in notes:
        events.append((round(onset * ticks_per_beat), 1, mido.Message("note_on", note=pitch, velocity=80, channel=channel)))
        events.append((round((onset + length) * ticks_per_beat), 0, mido.Message("note_off", note=pitch, velocity=0, channel=channel)))
    events.sort(key=lambda event: (event[0], event[1]))

    track = mido.MidiTrack()
    if name:
        track.append(mido.MetaMessage("track_name", name=name, time=0))
    if tempo_bpm:
        track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0))
    last = 0
    for ticks, _, message in events:
        track.append(message.copy(time=ticks - last))
        last = ticks
    return track


def write_midi(path: Path, tracks, midi_type=1, ticks_per_beat=480) -> Path:
    midi = mido.MidiFile(type=midi_type, ticks_per_beat=ticks_per_beat)
    midi.tracks.extend(tracks)
    midi.save(str(path))
    return path


def scale_phrase(start=60, count=8, length=0.5):
    major = [0, 2, 4, 5, 7, 9, 11, 12]
    return [(start + major[index % 8], index * length, length) for index in range(count)]
