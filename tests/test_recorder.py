import mido
import pytest

from sideman.errors import InvalidInputError

from sideman.recorder import RECORDING_TEMPO, TICKS_PER_BEAT, Recorder


def note(kind: str, pitch: int, channel: int = 0) -> mido.Message:
    return mido.Message(kind, channel=channel, note=pitch, velocity=90 if kind == "note_on" else 0)


def absolute_ticks(midi: mido.MidiFile) -> list[tuple[int, mido.Message]]:
    ticks = 0
    events = []
    for message in midi.tracks[0]:
        ticks += message.time
        if not message.is_meta:
            events.append((ticks, message.copy(time=0)))
    return events


def test_recording_times_relative_to_first(tmp_path):
    recorder = Recorder(tmp_path / "take.mid")
    recorder.record(100.0, note("note_on", 60))
    recorder.record(100.45, note("note_off", 60))
    recorder.record(100.5, note("note_on", 62))
    recorder.record(101.25, note("note_off", 62))

    recorder.flush()

    midi = mido.MidiFile(tmp_path / "take.mid")
    assert midi.ticks_per_beat == TICKS_PER_BEAT
    assert [message.tempo for message in midi.tracks[0] if message.type == "set_tempo"] == [RECORDING_TEMPO]
    # 120 BPM at 480 ticks per beat: 960 ticks a second.
    assert absolute_ticks(midi) == [
        (0, note("note_on", 60)),
        (432, note("note_off", 60)),
        (480, note("note_on", 62)),
        (1200, note("note_off", 62)),
    ]
    assert midi.length == pytest.approx(1.25)


def test_rounding_does_not_accumulate(tmp_path):
    recorder = Recorder(tmp_path / "take.mid")
    # A third of a second is 320 ticks; a thousand of them must end at tick 320000.
    for index in range(1001):
        recorder.record(index / 3, note("note_on" if index % 2 == 0 else "note_off", 60))

    midi = recorder.to_midi()

    assert absolute_ticks(midi)[-1][0] == 320_000


def test_same_time_keeps_send_order(tmp_path):
    recorder = Recorder(tmp_path / "take.mid")
    recorder.record(1.0, note("note_on", 60))
    recorder.record(2.0, note("note_off", 60))
    recorder.record(2.0, note("note_on", 60))
    recorder.record(2.0, mido.Message("control_change", control=123, value=0))

    events = absolute_ticks(recorder.to_midi())

    assert [message.type for _, message in events] == ["note_on", "note_off", "note_on", "control_change"]
    assert [tick for tick, _ in events] == [0, 960, 960, 960]


def test_flush_is_idempotent(tmp_path):
    path = tmp_path / "take.mid"
    recorder = Recorder(path)
    recorder.record(0.0, note("note_on", 60))
    recorder.record(0.5, note("note_off", 60))

    recorder.flush()
    first = path.read_bytes()
    recorder.flush()

    assert path.read_bytes() == first


def test_flush_again_writes_longer_recording(tmp_path):
    path = tmp_path / "take.mid"
    recorder = Recorder(path)
    recorder.record(0.0, note("note_on", 60))
    recorder.record(0.5, note("note_off", 60))
    recorder.flush()

    recorder.record(1.0, note("note_on", 64))
    recorder.record(1.5, note("note_off", 64))
    recorder.flush()

    events = absolute_ticks(mido.MidiFile(path))
    assert len(events) == 4
    assert events[-1] == (1440, note("note_off", 64))
    assert sorted(item.name for item in tmp_path.iterdir()) == ["take.mid"]


def test_empty_recording_writes_valid_file(tmp_path):
    path = tmp_path / "take.mid"

    Recorder(path).flush()

    midi = mido.MidiFile(path)
    assert absolute_ticks(midi) == []
    assert midi.length == 0


def test_flush_to_missing_folder_raises(tmp_path):
    recorder = Recorder(tmp_path / "missing" / "take.mid")
    recorder.record(0.0, note("note_on", 60))

    with pytest.raises(InvalidInputError, match="folder .*missing not found"):
        recorder.flush()


def test_recorder_counts_messages(tmp_path):
    recorder = Recorder(tmp_path / "take.mid")
    recorder.record(0.0, note("note_on", 60))

    assert len(recorder) == 1
