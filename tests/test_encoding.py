from hypothesis import given, settings, strategies as st

from sideman.encoding import EncodingSettings, GridNote, Token, decode, encode, quantize_line, tokenize_notes
from sideman.music import Note

SETTINGS = EncodingSettings()


@st.composite
def grid_lines(draw):
    """Valid quantized lines: increasing onsets, lengths 1..max_steps, no overlaps."""
    count = draw(st.integers(0, 40))
    line = []
    position = 0
    for _ in range(count):
        length = draw(st.integers(1, SETTINGS.max_steps))
        gap = draw(st.one_of(st.just(0), st.integers(0, 300)))
        line.append(GridNote(draw(st.integers(0, 127)), position, length))
        position += length + gap
    return line


@st.composite
def performances(draw):
    """Performed lines in beats, with grace notes, overlaps, long notes and long silences."""
    count = draw(st.integers(1, 40))
    notes = []
    onset = draw(st.floats(0, 4))
    for _ in range(count):
        length = draw(st.floats(0.0, 12.0))
        notes.append(Note(draw(st.integers(0, 127)), onset, length))
        onset += draw(st.floats(0.001, 20.0))
    return notes


@given(grid_lines())
def test_decode_inverts_encode(line):
    assert decode(encode(line, SETTINGS)) == line


@settings(max_examples=300)
@given(performances())
def test_quantized_performance_round_trips(notes):
    line = quantize_line(notes, SETTINGS)
    tokens = encode(line, SETTINGS)

    assert decode(tokens) == line
    assert len(line) == len(notes)
    assert all(1 <= token.steps <= SETTINGS.max_steps for token in tokens)
    onsets = [note.onset for note in line]
    assert onsets == sorted(set(onsets))


def test_short_silence_extends_note():
    notes = [Note(60, 0.0, 0.25), Note(62, 0.5, 0.5)]

    tokens = tokenize_notes(notes, SETTINGS)

    assert tokens == [Token(60, 6), Token(62, 6)]


def test_long_silence_becomes_rest():
    notes = [Note(60, 0.0, 0.5), Note(62, 2.0, 1.0)]

    tokens = tokenize_notes(notes, SETTINGS)

    assert tokens == [Token(60, 6), Token(None, 18), Token(62, 12)]


def test_onsets_closer_than_grid_step_pushed_apart():
    notes = [Note(60, 0.0, 0.01), Note(61, 0.01, 0.01), Note(62, 0.02, 1.0)]

    line = quantize_line(notes, SETTINGS)

    assert [note.onset for note in line] == [0, 1, 2]


def test_long_note_capped_and_rest_keeps_next_onset():
    notes = [Note(60, 0.0, 10.0), Note(62, 10.0, 1.0)]

    tokens = tokenize_notes(notes, SETTINGS)

    assert tokens == [Token(60, 96), Token(None, 24), Token(62, 12)]


def test_long_rest_split():
    notes = [Note(60, 0.0, 1.0), Note(62, 21.0, 1.0)]

    tokens = tokenize_notes(notes, SETTINGS)

    assert tokens == [Token(60, 12), Token(None, 96), Token(None, 96), Token(None, 48), Token(62, 12)]


def test_transposition_folds_into_midi_range():
    assert Token(125, 6).transposed(5) == Token(118, 6)
    assert Token(2, 6).transposed(-5) == Token(9, 6)
    assert Token(None, 6).transposed(3) == Token(None, 6)
