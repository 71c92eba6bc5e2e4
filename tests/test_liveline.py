import logging
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st

from sideman.encoding import EncodingSettings, Token, tokenize_notes
from sideman.errors import InvalidInputError, SettingsError
from sideman.liveline import DEFAULT_QUANTIZE, QUANTIZE_CHOICES, LiveLine, quantize_beat
from sideman.music import Note

# 12 steps per beat, rest_threshold 0.5 beat (6 steps), max_beats 8 (96 steps).
SETTINGS = EncodingSettings()

# 30 ms at 120 BPM, in beats.
JITTER_BEATS = 0.03 * 120 / 60


@pytest.mark.parametrize(
    ("grid", "beat", "expected"),
    [
        ("1/4", 1.4, Fraction(1)),
        ("1/4", 1.6, Fraction(2)),
        ("1/4", -0.3, Fraction(0)),
        ("1/8", 0.2, Fraction(0)),
        ("1/8", 0.3, Fraction(1, 2)),
        ("1/8", 2.8, Fraction(3)),
        ("1/8", 0.25, Fraction(0)),
        ("1/8t", 0.3, Fraction(1, 3)),
        ("1/8t", 0.55, Fraction(2, 3)),
        ("1/8t", 4.9, Fraction(5)),
        ("1/16", 0.13, Fraction(1, 4)),
        ("1/16", 0.6, Fraction(1, 2)),
        ("1/16", 3.7, Fraction(15, 4)),
        ("1/16t", 0.1, Fraction(1, 6)),
        ("1/16t", 0.9, Fraction(5, 6)),
        ("1/16t", 0.45, Fraction(1, 2)),
        ("1/16+1/8t", 0.27, Fraction(1, 4)),
        ("1/16+1/8t", 0.3, Fraction(1, 3)),
        ("1/16+1/8t", 0.45, Fraction(1, 2)),
        ("1/16+1/8t", 0.6, Fraction(2, 3)),
        ("1/16+1/8t", 0.73, Fraction(3, 4)),
        ("1/16+1/8t", 0.9, Fraction(1)),
        ("1/16+1/8t", 5.3, Fraction(16, 3)),
    ],
)
def test_quantize_beat_snaps_to_nearest(grid, beat, expected):
    quantized = quantize_beat(beat, grid)

    assert quantized == expected
    assert isinstance(quantized, Fraction)


def test_quantize_beat_off_keeps_beat():
    quantized = quantize_beat(1.234, "off")

    assert quantized == 1.234
    assert isinstance(quantized, float)


def test_quantize_choices_cover_every_grid():
    assert set(QUANTIZE_CHOICES) == {"1/4", "1/8", "1/8t", "1/16", "1/16t", "1/16+1/8t", "off"}
    assert DEFAULT_QUANTIZE == "1/16+1/8t"
    for grid in QUANTIZE_CHOICES:
        assert quantize_beat(3.0, grid) == 3


def test_quantize_beat_rejects_bad_input():
    with pytest.raises(SettingsError, match="1/16t"):
        quantize_beat(1.0, "1/32")
    with pytest.raises(InvalidInputError, match="finite"):
        quantize_beat(float("nan"), "1/8")


def test_liveline_rejects_bad_settings():
    with pytest.raises(SettingsError):
        LiveLine(SETTINGS, quantize="1/5")
    with pytest.raises(SettingsError):
        LiveLine(SETTINGS, max_hold_beats=0.0)
    with pytest.raises(SettingsError):
        LiveLine(SETTINGS).quantize = "triplets"


def test_liveline_rejects_bad_events():
    line = LiveLine(SETTINGS)

    with pytest.raises(InvalidInputError):
        line.note_on(128, 0.0)
    with pytest.raises(InvalidInputError):
        line.note_on(60, float("inf"))
    assert line.first_onset is None


def play(line: LiveLine, events) -> list[Token]:
    """Send (kind, pitch, beat) events to `line`; kind is "on", "off" or "advance"."""
    tokens = []
    for kind, pitch, beat in events:
        if kind == "on":
            tokens.extend(line.note_on(pitch, beat))
        elif kind == "off":
            tokens.extend(line.note_off(pitch, beat))
        else:
            tokens.extend(line.advance(beat))
    return tokens


def humanize(notes, rng: random.Random) -> list[tuple[str, int, float]]:
    """Return the time-ordered note_on/note_off events of written (pitch, onset, release) notes, each moved by up to 30 ms."""
    events = []
    for pitch, onset, release in notes:
        events.append(("on", pitch, onset + rng.uniform(-JITTER_BEATS, JITTER_BEATS)))
        events.append(("off", pitch, release + rng.uniform(-JITTER_BEATS, JITTER_BEATS)))
    return sorted(events, key=lambda event: event[2])


# Written phrases: (pitch, onset, release) in beats, the grid they are played on, the written tokens and the finish beat.
# Releases come a little before the next onset, as played, and jitter makes some of them overlap the next note.
STRAIGHT_PHRASE = (
    "1/16+1/8t",
    [(60, 0.0, 0.45), (62, 0.5, 0.95), (64, 1.0, 1.9), (65, 2.0, 2.5), (67, 3.5, 4.5)],
    [Token(60, 6), Token(62, 6), Token(64, 12), Token(65, 6), Token(None, 12), Token(67, 12), Token(None, 18)],
    6.0,
)
TRIPLET_PHRASE = (
    "1/8t",
    [(60, 0.0, 0.3), (63, 1 / 3, 0.63), (65, 2 / 3, 0.97), (67, 1.0, 1.95), (70, 2.0, 3.0)],
    [Token(60, 4), Token(63, 4), Token(65, 4), Token(67, 12), Token(70, 12), Token(None, 12)],
    4.0,
)
SIXTEENTH_PHRASE = (
    "1/16",
    [(72, 0.0, 0.2), (71, 0.25, 0.45), (69, 0.5, 0.7), (67, 0.75, 0.95), (65, 1.0, 1.5), (64, 3.0, 3.75)],
    [Token(72, 3), Token(71, 3), Token(69, 3), Token(67, 3), Token(65, 6), Token(None, 18), Token(64, 9)],
    4.0,
)


@pytest.mark.parametrize(("grid", "notes", "written", "end"), [STRAIGHT_PHRASE, TRIPLET_PHRASE, SIXTEENTH_PHRASE])
def test_jittered_phrase_gives_written_tokens(grid, notes, written, end):
    for seed in range(50):
        line = LiveLine(SETTINGS, quantize=grid)

        tokens = play(line, humanize(notes, random.Random(seed)))
        tokens.extend(line.finish(end))

        assert tokens == written, f"seed {seed}"


def test_legato_overlap_ends_note_at_next_onset():
    line = LiveLine(SETTINGS)

    assert line.note_on(60, 0.0) == []
    assert line.note_on(62, 1.0) == [Token(60, 12)]
    assert line.note_off(60, 1.2) == []
    assert line.sounding == 62
    assert line.note_off(62, 2.0) == []
    assert line.finish(2.0) == [Token(62, 12)]


def test_held_key_resumes_after_release():
    line = LiveLine(SETTINGS)
    line.note_on(60, 0.0)
    line.note_on(64, 1.0)

    released = line.note_off(64, 1.5)

    assert released == [Token(64, 6)]
    assert line.sounding == 60
    assert line.active
    line.note_off(60, 2.0)
    assert line.finish(2.0) == [Token(60, 6)]
    assert not line.active


def test_most_recent_held_key_resumes():
    line = LiveLine(SETTINGS)
    play(line, [("on", 60, 0.0), ("on", 62, 1.0), ("on", 64, 2.0)])

    assert line.note_off(62, 2.5) == []
    assert line.sounding == 64
    assert line.note_off(64, 3.0) == [Token(64, 12)]
    assert line.sounding == 60
    assert line.finish(4.0) == [Token(60, 12)]


def test_stuck_key_released_after_max_hold():
    line = LiveLine(SETTINGS, max_hold_beats=2.0)
    line.note_on(60, 0.0)

    assert line.advance(1.9) == []
    assert line.active
    assert line.advance(2.1) == []
    assert not line.active
    assert line.sounding is None
    assert line.advance(2.5) == [Token(60, 24)]
    assert line.note_off(60, 3.0) == []
    assert line.ignored_note_offs == 0
    assert line.finish(4.5) == [Token(None, 30)]


def test_stuck_key_default_cap_is_max_beats():
    line = LiveLine(SETTINGS)
    line.note_on(60, 0.0)

    assert line.advance(7.8) == []
    assert line.active
    assert line.advance(8.0) == [Token(60, SETTINGS.max_steps)]
    assert not line.active


def test_note_longer_than_max_beats_capped():
    line = LiveLine(SETTINGS, max_hold_beats=20.0)
    line.note_on(60, 0.0)

    assert line.advance(8.0) == [Token(60, 96)]
    assert line.active
    assert line.note_off(60, 12.0) == []
    assert line.note_on(62, 13.0) == [Token(None, 60)]
    assert line.finish(14.0) == [Token(62, 12)]


def test_silence_at_rest_threshold_becomes_rest():
    line = LiveLine(SETTINGS)
    line.note_on(60, 0.0)

    assert line.note_off(60, 1.0) == []
    assert line.advance(1.4) == []
    assert line.advance(1.5) == [Token(60, 12)]
    assert line.note_on(62, 2.0) == [Token(None, 12)]
    assert line.finish(2.5, trailing_rest=False) == [Token(62, 6)]


def test_silence_below_rest_threshold_extends_note():
    line = LiveLine(SETTINGS)
    line.note_on(60, 0.0)
    line.note_off(60, 1.0)

    assert line.advance(1.25) == []
    assert line.note_on(62, 1.25) == [Token(60, 15)]


def test_rest_threshold_decided_by_next_onset():
    line = LiveLine(SETTINGS)
    line.note_on(60, 0.0)
    line.note_off(60, 0.5)

    assert line.note_on(62, 1.0) == [Token(60, 6), Token(None, 6)]


def test_note_off_without_note_on_ignored(caplog):
    line = LiveLine(SETTINGS)

    with caplog.at_level(logging.WARNING, logger="sideman.liveline"):
        assert line.note_off(60, 0.0) == []
    assert line.ignored_note_offs == 1
    assert line.first_onset is None
    assert line.last_event is None
    assert "pitch 60" in caplog.text

    line.note_on(60, 1.0)
    assert line.note_off(62, 1.5) == []
    assert line.ignored_note_offs == 2
    assert line.sounding == 60
    assert line.last_event == 1.0
    assert line.finish(2.0) == [Token(60, 12)]


def test_repeated_note_on_restarts_key():
    line = LiveLine(SETTINGS)
    line.note_on(60, 0.0)

    assert line.note_on(60, 1.0) == [Token(60, 12)]
    assert line.note_off(60, 1.5) == []
    assert not line.active
    assert line.finish(1.5) == [Token(60, 6)]


def test_same_grid_step_later_note_wins():
    line = LiveLine(SETTINGS)
    line.note_on(60, 0.0)
    line.note_off(60, 0.9)

    assert line.note_on(62, 1.0) == [Token(60, 12)]
    assert line.note_on(64, 1.02) == []
    assert line.sounding == 64
    assert line.finish(2.0) == [Token(64, 12)]


def test_grace_note_lasts_one_step():
    line = LiveLine(SETTINGS, quantize="off")

    assert line.note_on(60, 0.0) == []
    assert line.note_on(62, 0.09) == [Token(60, 1)]
    assert line.finish(0.09) == [Token(62, 1)]


def test_finish_trailing_rest():
    cases = [
        (3.0, True, [Token(60, 12), Token(None, 24)]),
        (3.0, False, [Token(60, 12)]),
        (1.25, True, [Token(60, 12)]),
        (30.0, True, [Token(60, 12), Token(None, SETTINGS.max_steps)]),
    ]
    for end, trailing_rest, expected in cases:
        line = LiveLine(SETTINGS)
        line.note_on(60, 0.0)
        line.note_off(60, 1.0)

        assert line.finish(end, trailing_rest=trailing_rest) == expected, (end, trailing_rest)


def test_finish_with_key_held():
    line = LiveLine(SETTINGS)
    line.note_on(60, 0.0)

    assert line.finish(2.0) == [Token(60, 24)]
    assert not line.active
    assert line.note_off(60, 2.5) == []
    assert line.ignored_note_offs == 0


def test_finish_without_notes_returns_nothing():
    line = LiveLine(SETTINGS)

    assert line.advance(3.0) == []
    assert line.finish(4.0) == []


def test_finish_starts_new_phrase():
    line = LiveLine(SETTINGS)
    line.note_on(60, 10.0)
    line.note_off(60, 11.0)
    assert line.first_onset == 10.0
    assert line.last_event == 11.0
    line.finish(12.0)

    assert line.first_onset is None
    assert line.last_event is None

    # A new phrase may start at an earlier beat, as after a transport restart.
    line.note_on(62, 0.0)
    assert line.first_onset == 0.0
    assert line.finish(0.5) == [Token(62, 6)]


def test_backward_beats_clamped():
    line = LiveLine(SETTINGS)
    line.note_on(60, 2.0)
    line.note_off(60, 2.5)

    assert line.note_on(62, 1.0) == [Token(60, 6)]
    assert line.last_event == 2.5
    assert line.finish(2.0) == [Token(62, 1)]


def test_quantize_change_within_phrase_keeps_order():
    line = LiveLine(SETTINGS, quantize="1/4")
    line.note_on(60, 0.0)
    assert line.note_on(62, 1.6) == [Token(60, 24)]
    line.quantize = "1/16"

    # 1.7 snaps to beat 1.75 on the new grid, before the previous onset at beat 2: it lands on beat 2 and wins.
    assert line.note_on(64, 1.7) == []
    assert line.finish(3.0) == [Token(64, 12)]


def test_steps_sum_to_quantized_span():
    line = LiveLine(SETTINGS)
    events = [("on", 60, 0.52), ("off", 60, 0.9), ("on", 62, 1.02), ("on", 64, 1.3), ("off", 64, 2.2), ("off", 62, 2.4), ("on", 65, 4.1)]

    tokens = play(line, events)
    tokens.extend(line.finish(5.97))

    # The first onset snaps to beat 0.5 (step 6) and the end to beat 6 (step 72).
    assert sum(token.steps for token in tokens) == 72 - 6


def perform(events, end: float, max_hold_beats: float) -> list[list]:
    """Return the sounding notes [pitch, onset, release] in beats of a mono synth with last note priority."""
    held: dict[int, float] = {}
    notes: list[list] = []

    def release(pitch, beat):
        sounding = list(held)[-1]
        del held[pitch]
        if pitch == sounding:
            notes[-1][2] = beat
            if held:
                notes.append([list(held)[-1], beat, None])

    def expire(beat):
        while held:
            pitch, pressed = next(iter(held.items()))
            if pressed + max_hold_beats > beat:
                return
            release(pitch, pressed + max_hold_beats)

    for kind, pitch, beat in events:
        expire(beat)
        if kind == "on":
            if held:
                notes[-1][2] = beat
            held.pop(pitch, None)
            held[pitch] = beat
            notes.append([pitch, beat, None])
        elif kind == "off" and pitch in held:
            release(pitch, beat)
    expire(end)
    if held:
        notes[-1][2] = end
    return notes


def tokenize_offline(events, end: float, grid: str, max_hold_beats: float, trailing_rest: bool) -> tuple[list[Token], int]:
    """Tokenize a whole performance at once with encoding.py, as a reference for the live tokens.

    Returns the tokens and the absolute grid step where the last of them ends.
    """
    scale = SETTINGS.steps_per_beat

    def step(beat):
        return round(quantize_beat(beat, grid) * scale)

    by_onset: dict[int, tuple[int, int]] = {}
    for pitch, onset, release in perform(events, end, max_hold_beats):
        by_onset[step(onset)] = (pitch, step(release))
    notes = [Note(pitch, onset / scale, (release - onset) / scale) for onset, (pitch, release) in by_onset.items()]
    tokens = tokenize_notes(notes, SETTINGS)
    if not tokens:
        return tokens, 0

    last_end = max(by_onset) + tokens[-1].steps
    silence = step(end) - last_end
    if trailing_rest and silence >= SETTINGS.rest_threshold_steps:
        tokens.append(Token(None, min(silence, SETTINGS.max_steps)))
        last_end += tokens[-1].steps
    return tokens, last_end


@st.composite
def performances(draw):
    """Time-ordered events over a few keys, with repeats, overlaps, equal beats and long silences."""
    count = draw(st.integers(0, 40))
    beat = draw(st.floats(0, 8))
    events = []
    for _ in range(count):
        kind = draw(st.sampled_from(["on", "on", "off", "off", "advance"]))
        events.append((kind, draw(st.integers(60, 64)), beat))
        beat += draw(st.one_of(st.sampled_from([0.0, 0.01, 0.25, 1 / 3, 0.5, 1.0]), st.floats(0, 12)))
    return events, beat


@settings(max_examples=400, deadline=None)
@given(
    performances(),
    st.sampled_from(QUANTIZE_CHOICES),
    st.sampled_from([None, 0.5, 3.0, 20.0]),
    st.booleans(),
    st.floats(0, 40),
)
def test_random_performance_tokens(performance, grid, max_hold_beats, trailing_rest, wait):
    events, last_beat = performance
    end = last_beat + wait
    line = LiveLine(SETTINGS, quantize=grid, max_hold_beats=max_hold_beats)

    tokens = play(line, events)
    first_onset = line.first_onset
    tokens.extend(line.finish(end, trailing_rest=trailing_rest))

    assert all(1 <= token.steps <= SETTINGS.max_steps for token in tokens)
    hold = SETTINGS.max_beats if max_hold_beats is None else max_hold_beats
    expected, end_step = tokenize_offline(events, end, grid, hold, trailing_rest)
    assert tokens == expected
    if tokens:
        first_step = round(quantize_beat(first_onset, grid) * SETTINGS.steps_per_beat)
        assert sum(token.steps for token in tokens) == end_step - first_step
