import io
import math

import mido
import pytest
from hypothesis import given, settings, strategies as st

from sideman.encoding import Token
from sideman.errors import InvalidInputError, SettingsError, SidemanError
from sideman.improviser import Improviser
from sideman.plugins.samplers import Temperature
from sideman.render import MAX_GATE, MAX_RESTS_IN_A_ROW, MIN_GATE, render, tokens_to_midi_bytes, write_midi, write_midi_bytes
from sideman.sampling import SamplerChain
from sideman.vocabulary import Vocabulary
from tests.factories import random_bundle

BUNDLE = random_bundle()


def make_improviser(seed: int, bundle=BUNDLE) -> Improviser:
    return Improviser(bundle, SamplerChain([], Temperature()), seed)


def saved_by_mido(midi: mido.MidiFile) -> bytes:
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def read_midi(midi_bytes: bytes) -> mido.MidiFile:
    return mido.MidiFile(file=io.BytesIO(midi_bytes))


def tokens_to_midi_with_mido(tokens: list[Token], steps_per_beat: int, tempo: float, gate: float, velocity: int, channel: int) -> bytes:
    """Build the file from mido messages and save it with mido, as the reference for tokens_to_midi_bytes.

    Each note sounds for `gate` times its duration, at least one tick. A note
    still sounding when its pitch starts again is released at that onset.
    At one tick, note_offs come first, ordered by the tick they were due at
    and then by pitch.
    """
    ticks_per_beat = math.lcm(480, steps_per_beat)
    ticks_per_step = ticks_per_beat // steps_per_beat

    events = []
    pending_offs: dict[int, int] = {}

    def release_due(until: float, repeated_pitch: int | None) -> None:
        due = sorted((tick, pitch) for pitch, tick in pending_offs.items() if tick <= until or pitch == repeated_pitch)
        for tick, pitch in due:
            del pending_offs[pitch]
            events.append((int(min(tick, until)), mido.Message("note_off", channel=channel, note=pitch, velocity=0)))

    onset = 0
    for token in tokens:
        length = token.steps * ticks_per_step
        if token.pitch is not None:
            release_due(onset, token.pitch)
            events.append((onset, mido.Message("note_on", channel=channel, note=token.pitch, velocity=velocity)))
            pending_offs[token.pitch] = onset + max(1, round(gate * length))
        onset += length
    release_due(math.inf, None)

    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo), time=0)])
    previous = 0
    for tick, message in events:
        track.append(message.copy(time=tick - previous))
        previous = tick
    return saved_by_mido(mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat, tracks=[track]))


@st.composite
def token_lines(draw):
    """Token lines with rests, repeated pitches, short and very long notes, for grids of several sizes."""
    pitches = draw(st.lists(st.integers(0, 127), min_size=1, max_size=4))
    pitch = st.one_of(st.none(), st.sampled_from(pitches), st.sampled_from(pitches))
    # Up to 5000 steps of a 1-step-per-beat grid is 2.4 million ticks, so delta times take 1 to 4 bytes.
    steps = st.one_of(st.integers(1, 24), st.integers(25, 5000))
    tokens = draw(st.lists(st.builds(Token, pitch, steps), max_size=60))
    steps_per_beat = draw(st.sampled_from([1, 2, 3, 4, 7, 9, 12, 24]))
    return tokens, steps_per_beat


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

    assert first.midi_bytes == second.midi_bytes


def test_render_other_seed_other_bytes():
    first = render(make_improviser(11), notes=100, tempo=120.0, gate=0.9, velocity=90, channel=0)
    second = render(make_improviser(12), notes=100, tempo=120.0, gate=0.9, velocity=90, channel=0)

    assert first.midi_bytes != second.midi_bytes


def test_render_written_file_same_bytes(tmp_path):
    first_path = tmp_path / "first.mid"
    second_path = tmp_path / "second.mid"

    write_midi_bytes(render(make_improviser(5), 64, 120.0, 0.9, 90, 0).midi_bytes, first_path)
    write_midi_bytes(render(make_improviser(5), 64, 120.0, 0.9, 90, 0).midi_bytes, second_path)

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


def test_tokens_to_midi_bytes_gate_one_releases_before_repeat():
    tokens = [Token(60, 12), Token(60, 6), Token(62, 6)]

    midi = read_midi(tokens_to_midi_bytes(tokens, 12, 120.0, 1.0, 90, 0))

    notes = [(tick, message.type, message.note) for tick, message in absolute_events(midi) if not message.is_meta]
    assert notes == [
        (0, "note_on", 60),
        (480, "note_off", 60),
        (480, "note_on", 60),
        (720, "note_off", 60),
        (720, "note_on", 62),
        (960, "note_off", 62),
    ]


def test_tokens_to_midi_bytes_overlap_cuts_repeated_pitch():
    tokens = [Token(60, 12), Token(62, 12), Token(60, 12)]

    midi = read_midi(tokens_to_midi_bytes(tokens, 12, 120.0, 2.0, 90, 0))

    notes = [(tick, message.type, message.note) for tick, message in absolute_events(midi) if not message.is_meta]
    assert notes == [
        (0, "note_on", 60),
        (480, "note_on", 62),
        (960, "note_off", 60),
        (960, "note_on", 60),
        (1440, "note_off", 62),
        (1920, "note_off", 60),
    ]


def test_tokens_to_midi_bytes_offs_at_one_tick():
    # With gate 2, 64 and 62 both end at tick 960. When 60 starts again at
    # 1920, 67 ends there as due and the first 60, due at 2160, is cut short.
    tokens = [Token(64, 12), Token(62, 6), Token(60, 18), Token(67, 6), Token(65, 6), Token(60, 6)]

    midi_bytes = tokens_to_midi_bytes(tokens, 12, 120.0, 2.0, 90, 0)

    notes = [(tick, message.type, message.note) for tick, message in absolute_events(read_midi(midi_bytes)) if not message.is_meta]
    assert notes == [
        (0, "note_on", 64),
        (480, "note_on", 62),
        (720, "note_on", 60),
        (960, "note_off", 62),
        (960, "note_off", 64),
        (1440, "note_on", 67),
        (1680, "note_on", 65),
        (1920, "note_off", 67),
        (1920, "note_off", 60),
        (1920, "note_on", 60),
        (2160, "note_off", 65),
        (2400, "note_off", 60),
    ]
    assert midi_bytes == tokens_to_midi_with_mido(tokens, 12, 120.0, 2.0, 90, 0)


def test_tokens_to_midi_bytes_rest_is_silence():
    tokens = [Token(None, 24), Token(64, 12)]

    midi = read_midi(tokens_to_midi_bytes(tokens, 12, 120.0, 0.5, 90, 0))

    notes = [(tick, message.type) for tick, message in absolute_events(midi) if not message.is_meta]
    assert notes == [(960, "note_on"), (1200, "note_off")]


def test_tokens_to_midi_bytes_grid_not_dividing_480():
    midi = read_midi(tokens_to_midi_bytes([Token(60, 7), Token(61, 7)], 7, 120.0, 1.0, 90, 0))

    assert midi.ticks_per_beat % 7 == 0
    onsets = [tick for tick, message in absolute_events(midi) if message.type == "note_on"]
    assert onsets == [0, midi.ticks_per_beat]


def test_tokens_to_midi_bytes_grid_too_fine_raises():
    # 1001 steps per beat needs lcm(480, 1001) = 480480 ticks per beat.
    with pytest.raises(SettingsError, match="1001 steps per beat needs 480480 ticks per beat"):
        tokens_to_midi_bytes([Token(60, 1)], 1001, 120.0, 1.0, 90, 0)


@pytest.mark.parametrize("tokens", [[], [Token(None, 12), Token(None, 24)]], ids=["empty", "rests only"])
def test_tokens_to_midi_bytes_without_notes(tokens):
    midi_bytes = tokens_to_midi_bytes(tokens, 12, 120.0, 0.9, 90, 0)

    assert midi_bytes == tokens_to_midi_with_mido(tokens, 12, 120.0, 0.9, 90, 0)
    assert [message.type for message in read_midi(midi_bytes).tracks[0]] == ["set_tempo", "end_of_track"]


GATES = st.one_of(st.floats(0.05, 1.0), st.floats(MIN_GATE, MAX_GATE))


@settings(max_examples=300, deadline=None)
@given(token_lines(), st.floats(20.0, 400.0), GATES, st.integers(1, 127), st.integers(0, 15))
def test_tokens_to_midi_bytes_matches_mido(line, tempo, gate, velocity, channel):
    tokens, steps_per_beat = line

    midi_bytes = tokens_to_midi_bytes(tokens, steps_per_beat, tempo, gate, velocity, channel)

    assert midi_bytes == tokens_to_midi_with_mido(tokens, steps_per_beat, tempo, gate, velocity, channel)


@settings(max_examples=100, deadline=None)
@given(token_lines(), st.floats(20.0, 400.0), GATES, st.integers(1, 127), st.integers(0, 15))
def test_tokens_to_midi_bytes_reads_back_same_notes(line, tempo, gate, velocity, channel):
    tokens, steps_per_beat = line

    midi = read_midi(tokens_to_midi_bytes(tokens, steps_per_beat, tempo, gate, velocity, channel))

    ticks_per_step = midi.ticks_per_beat // steps_per_beat
    expected_onsets = []
    onset = 0
    for token in tokens:
        if token.pitch is not None:
            expected_onsets.append((onset, token.pitch))
        onset += token.steps * ticks_per_step
    events = absolute_events(midi)
    note_ons = [(tick, message.note) for tick, message in events if message.type == "note_on"]
    note_offs = [message for _, message in events if message.type == "note_off"]
    assert midi.type == 0
    assert midi.ticks_per_beat == math.lcm(480, steps_per_beat)
    assert [message.tempo for _, message in events if message.type == "set_tempo"] == [mido.bpm2tempo(tempo)]
    assert note_ons == expected_onsets
    assert len(note_offs) == len(note_ons)
    assert {message.channel for _, message in events if not message.is_meta} <= {channel}
    assert {message.velocity for _, message in events if message.type == "note_on"} <= {velocity}
    assert all(a[0] <= b[0] for a, b in zip(events, events[1:])), "events are in time order"

    # Each pitch alternates note_on and note_off, so a repeated pitch is released before it starts again.
    for pitch in {pitch for _, pitch in note_ons}:
        kinds = [message.type for _, message in events if not message.is_meta and message.note == pitch]
        assert kinds == ["note_on", "note_off"] * (len(kinds) // 2)


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


def test_rendering_midi_is_parsed_bytes():
    rendering = render(make_improviser(8), 20, 120.0, 0.9, 90, 0)

    midi = rendering.midi

    assert sum(message.type == "note_on" for message in midi.tracks[0]) == 20
    assert saved_by_mido(midi) == rendering.midi_bytes


def test_write_midi_bytes_replaces_file_without_leftovers(tmp_path):
    path = tmp_path / "line.mid"
    path.write_bytes(b"old")
    rendering = render(make_improviser(8), 20, 120.0, 0.9, 90, 0)

    write_midi_bytes(rendering.midi_bytes, path)

    assert sorted(item.name for item in tmp_path.iterdir()) == ["line.mid"]
    assert path.read_bytes() == rendering.midi_bytes
    reread = mido.MidiFile(path)
    assert sum(message.type == "note_on" for message in reread.tracks[0]) == 20


def test_write_midi_bytes_missing_folder_raises(tmp_path):
    rendering = render(make_improviser(8), 5, 120.0, 0.9, 90, 0)

    with pytest.raises(InvalidInputError, match="folder .*missing not found"):
        write_midi_bytes(rendering.midi_bytes, tmp_path / "missing" / "line.mid")


def test_write_midi_saves_mido_file(tmp_path):
    path = tmp_path / "line.mid"
    path.write_bytes(b"old")
    rendering = render(make_improviser(8), 20, 120.0, 0.9, 90, 0)

    write_midi(rendering.midi, path)

    assert sorted(item.name for item in tmp_path.iterdir()) == ["line.mid"]
    assert path.read_bytes() == rendering.midi_bytes


def test_write_midi_missing_folder_raises(tmp_path):
    rendering = render(make_improviser(8), 5, 120.0, 0.9, 90, 0)

    with pytest.raises(InvalidInputError, match="folder .*missing not found"):
        write_midi(rendering.midi, tmp_path / "missing" / "line.mid")
