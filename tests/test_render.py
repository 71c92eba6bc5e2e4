import io

import mido
import pytest

from sideman.encoding import Token
from sideman.errors import InvalidInputError, SettingsError, SidemanError
from sideman.improviser import Improviser
from sideman.plugins.samplers import Temperature
from sideman.render import MAX_RESTS_IN_A_ROW, render, tokens_to_midi, write_midi
from sideman.sampling import SamplerChain
from sideman.vocabulary import Vocabulary
from tests.factories import random_bundle

BUNDLE = random_bundle()


def make_improviser(seed: int, bundle=BUNDLE) -> Improviser:
    return Improviser(bundle, SamplerChain([], Temperature()), seed)


def midi_bytes(midi: mido.MidiFile) -> bytes:
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def absolute_events(midi: mido.MidiFile) -> list[tuple[int, mido.Message]]:
    ticks = 0
    events = []
    for message in midi.tracks[0]:
        ticks += message.time
        events.append((ticks, message))
    return events


def test_render_exact_note_count_with_rests_on_top():
    rendering = render(make_improviser(3), notes=200, tempo=120.0, gate=0.9, velocity=90, channel=0)

    note_ons = [message for message in rendering.midi.tracks[0] if message.type == "note_on"]
    rests = [token for token in rendering.tokens if token.pitch is None]
    assert len(rendering.notes) == 200
    assert len(note_ons) == 200
    assert rests, "the test vocabulary has rests: some should be drawn in 200 notes"
    assert len(rendering.tokens) == 200 + len(rests)
    assert rendering.tokens[-1].pitch is not None


def test_render_tokens_match_indices():
    rendering = render(make_improviser(3), notes=50, tempo=120.0, gate=0.9, velocity=90, channel=0)

    assert [BUNDLE.vocabulary[index] for index in rendering.indices] == rendering.tokens


def test_render_same_seed_same_bytes():
    first = render(make_improviser(11), notes=100, tempo=97.0, gate=0.8, velocity=70, channel=4)
    second = render(make_improviser(11), notes=100, tempo=97.0, gate=0.8, velocity=70, channel=4)

    assert midi_bytes(first.midi) == midi_bytes(second.midi)


def test_render_other_seed_other_bytes():
    first = render(make_improviser(11), notes=100, tempo=120.0, gate=0.9, velocity=90, channel=0)
    second = render(make_improviser(12), notes=100, tempo=120.0, gate=0.9, velocity=90, channel=0)

    assert midi_bytes(first.midi) != midi_bytes(second.midi)


def test_render_written_file_same_bytes(tmp_path):
    first_path = tmp_path / "first.mid"
    second_path = tmp_path / "second.mid"

    write_midi(render(make_improviser(5), 64, 120.0, 0.9, 90, 0).midi, first_path)
    write_midi(render(make_improviser(5), 64, 120.0, 0.9, 90, 0).midi, second_path)

    assert first_path.read_bytes() == second_path.read_bytes()


def test_render_header_and_tempo():
    rendering = render(make_improviser(1), notes=10, tempo=150.0, gate=0.9, velocity=90, channel=0)
    midi = rendering.midi

    assert midi.type == 0
    assert midi.ticks_per_beat == 480
    tempos = [message for message in midi.tracks[0] if message.type == "set_tempo"]
    assert len(tempos) == 1
    assert tempos[0].tempo == mido.bpm2tempo(150.0)


def test_render_timing_on_grid_with_gate():
    rendering = render(make_improviser(2), notes=60, tempo=120.0, gate=0.5, velocity=77, channel=9)
    events = absolute_events(rendering.midi)

    expected = []
    onset = 0
    for token in rendering.tokens:
        length = token.steps * 40
        if token.pitch is not None:
            expected.append((onset, "note_on", token.pitch))
            expected.append((onset + round(0.5 * length), "note_off", token.pitch))
        onset += length
    expected.sort(key=lambda event: (event[0], event[1] == "note_on"))

    notes = [(tick, message.type, message.note) for tick, message in events if message.type in ("note_on", "note_off")]
    assert notes == expected
    assert {message.channel for _, message in events if not message.is_meta} == {9}
    assert {message.velocity for _, message in events if message.type == "note_on"} == {77}


def test_tokens_to_midi_gate_one_releases_before_repeat():
    tokens = [Token(60, 12), Token(60, 6), Token(62, 6)]

    midi = tokens_to_midi(tokens, 12, 120.0, 1.0, 90, 0)

    notes = [(tick, message.type, message.note) for tick, message in absolute_events(midi) if not message.is_meta]
    assert notes == [
        (0, "note_on", 60),
        (480, "note_off", 60),
        (480, "note_on", 60),
        (720, "note_off", 60),
        (720, "note_on", 62),
        (960, "note_off", 62),
    ]


def test_tokens_to_midi_overlap_cuts_repeated_pitch():
    tokens = [Token(60, 12), Token(62, 12), Token(60, 12)]

    midi = tokens_to_midi(tokens, 12, 120.0, 2.0, 90, 0)

    notes = [(tick, message.type, message.note) for tick, message in absolute_events(midi) if not message.is_meta]
    assert notes == [
        (0, "note_on", 60),
        (480, "note_on", 62),
        (960, "note_off", 60),
        (960, "note_on", 60),
        (1440, "note_off", 62),
        (1920, "note_off", 60),
    ]


def test_tokens_to_midi_rest_is_silence():
    tokens = [Token(None, 24), Token(64, 12)]

    midi = tokens_to_midi(tokens, 12, 120.0, 0.5, 90, 0)

    notes = [(tick, message.type) for tick, message in absolute_events(midi) if not message.is_meta]
    assert notes == [(960, "note_on"), (1200, "note_off")]


def test_tokens_to_midi_grid_not_dividing_480():
    midi = tokens_to_midi([Token(60, 7), Token(61, 7)], 7, 120.0, 1.0, 90, 0)

    assert midi.ticks_per_beat % 7 == 0
    onsets = [tick for tick, message in absolute_events(midi) if message.type == "note_on"]
    assert onsets == [0, midi.ticks_per_beat]


@pytest.mark.parametrize(
    "settings, word",
    [
        (dict(notes=0), "notes"),
        (dict(notes=2.5), "notes"),
        (dict(tempo=10.0), "tempo"),
        (dict(tempo=float("nan")), "tempo"),
        (dict(gate=0.0), "gate"),
        (dict(gate=2.5), "gate"),
        (dict(velocity=0), "velocity"),
        (dict(velocity=128), "velocity"),
        (dict(channel=16), "channel 17"),
        (dict(channel=-1), "channel"),
    ],
)
def test_render_rejects_settings(settings, word):
    arguments = dict(notes=10, tempo=120.0, gate=0.9, velocity=90, channel=0) | settings
    improviser = make_improviser(0)

    with pytest.raises(SettingsError, match=word):
        render(improviser, **arguments)

    assert improviser.last_token is None, "nothing is drawn when the settings are invalid"


def test_render_only_rests_raises():
    bundle = random_bundle(vocabulary=Vocabulary([Token(None, 6), Token(None, 12)]))

    with pytest.raises(SidemanError, match=f"{MAX_RESTS_IN_A_ROW} rests in a row"):
        render(make_improviser(0, bundle), notes=1, tempo=120.0, gate=0.9, velocity=90, channel=0)


def test_write_midi_replaces_file_without_leftovers(tmp_path):
    path = tmp_path / "line.mid"
    path.write_bytes(b"old")
    rendering = render(make_improviser(8), 20, 120.0, 0.9, 90, 0)

    write_midi(rendering.midi, path)

    assert sorted(item.name for item in tmp_path.iterdir()) == ["line.mid"]
    assert path.read_bytes() == midi_bytes(rendering.midi)
    reread = mido.MidiFile(path)
    assert sum(message.type == "note_on" for message in reread.tracks[0]) == 20


def test_write_midi_missing_folder_raises(tmp_path):
    rendering = render(make_improviser(8), 5, 120.0, 0.9, 90, 0)

    with pytest.raises(InvalidInputError, match="folder .*missing not found"):
        write_midi(rendering.midi, tmp_path / "missing" / "line.mid")
