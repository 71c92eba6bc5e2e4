"""The live modes as a state machine, in beats: when phrases end, where answers start and how long they last."""

import pytest

from sideman.encoding import EncodingSettings, Token
from sideman.live import CALL_AND_RESPONSE, CONTINUE, DUET, MAX_RESPONSE_BARS, LiveOptions, LiveSession, next_grid_line

ENCODING = EncodingSettings()  # 12 steps a beat, rest threshold 0.5 beats, max 8 beats


def session(mode: str = CALL_AND_RESPONSE, beats_per_bar: float = 4.0, **options) -> LiveSession:
    return LiveSession(LiveOptions(mode=mode, **options), ENCODING, beats_per_bar)


def play(live: LiveSession, notes: list[tuple[int, float, float]]) -> list[Token]:
    """Play (pitch, onset beat, beats held) notes; return the tokens fed while playing."""
    tokens = []
    for pitch, onset, held in notes:
        tokens += live.note_on(pitch, onset).tokens
        tokens += live.note_off(pitch, onset + held).tokens
    return tokens


def run_until_answer(live: LiveSession, until: float = 100.0):
    """Advance to each due beat, as the engine does, until an update schedules an answer."""
    tokens = []
    while (due := live.due_beat()) is not None and due <= until:
        update = live.advance(due)
        tokens += update.tokens
        if update.answer_at is not None or update.phrase_ended:
            return update, tokens
    return None, tokens


@pytest.mark.parametrize(("spacing", "beat", "expected"), [(4.0, 7.9, 8.0), (4.0, 8.0, 8.0), (4.0, 8.0 + 1e-9, 8.0), (4.0, 8.01, 12.0), (0.25, 9.05, 9.25), (3.0, 0.0, 0.0)])
def test_next_grid_line(spacing, beat, expected):
    assert next_grid_line(beat, spacing) == pytest.approx(expected)


def test_silence_ends_call_answer_on_bar():
    live = session()
    fed = play(live, [(60, 4.0, 0.9), (62, 5.0, 0.9), (64, 6.0, 0.9)])

    update, more = run_until_answer(live)

    assert update.answer_at == 12.0  # the last release at 6.9 (quantized 7.0) plus 4 beats of silence: 10.9, next bar line 12
    assert update.answer_beats == 4.0
    assert live.playing
    assert live.answer_end == 16.0
    # Every note of the call and the rest up to the answer went into the state, one beat each.
    tokens = fed + more
    assert [token.pitch for token in tokens] == [60, 62, 64, None]
    assert sum(token.steps for token in tokens) == (12 - 4) * 12


def test_answer_length_rounding_and_cap():
    live = session()
    play(live, [(60, 0.0, 0.5), (62, 4.0, 0.6)])  # 4.6 beats: two bars
    update, _ = run_until_answer(live)
    assert update.answer_beats == 8.0

    fixed = session(response_bars=3)
    play(fixed, [(60, 0.0, 0.5)])
    assert run_until_answer(fixed)[0].answer_beats == 12.0

    endless = session()
    play(endless, [(60, 0.0, 8.0)] + [(60 + index % 12, 8.0 * index, 7.9) for index in range(1, 80)])
    assert run_until_answer(endless, until=1000.0)[0].answer_beats == MAX_RESPONSE_BARS * 4.0


def test_meter_sets_bars():
    live = session(beats_per_bar=3.0)  # 3/4
    play(live, [(60, 1.0, 0.5)])
    update, _ = run_until_answer(live)
    assert update.answer_at == 6.0  # release 1.5, silence of 3 beats: 4.5, next bar line of 3/4 at 6
    assert update.answer_beats == 3.0


def test_note_interrupts_answer():
    live = session()
    play(live, [(60, 0.0, 1.0)])
    run_until_answer(live)

    update = live.note_on(67, 9.0)
    assert update.interrupt
    assert not live.playing
    assert live.phrase_tokens == []  # a new phrase
    live.note_off(67, 9.5)
    assert run_until_answer(live)[0].answer_at == 16.0


def test_respond_trigger():
    live = session(response_bars=0)
    update = live.respond(2.3)
    assert update.answer_at == 4.0
    assert update.answer_beats == 4.0  # no call: one bar
    assert live.respond(3.0).answer_at is None

    held = session()
    held.note_on(60, 0.0)
    update = held.respond(5.0)  # the key is still down: the call lasts until the request
    assert update.answer_at == 8.0
    assert update.answer_beats == 8.0
    assert update.tokens
    assert update.tokens[0].pitch == 60


def test_continue_handover_on_sixteenth():
    live = session(CONTINUE, handover_beats=0.5)
    play(live, [(60, 0.0, 1.0)])
    update, _ = run_until_answer(live)
    assert update.answer_at == 1.5
    assert update.answer_beats is None
    assert live.answer_end is None


def test_duet_phrase_end_without_answer():
    live = session(DUET)
    assert live.playing
    fed = play(live, [(60, 0.0, 0.5), (62, 0.5, 0.5)])
    update, more = run_until_answer(live)
    assert update.phrase_ended
    assert update.answer_at is None
    assert live.playing
    assert [token.pitch for token in fed + more] == [60, 62]  # no trailing rest in a duet
    assert live.respond(10.0).answer_at is None


def test_options_change_keeps_mode():
    live = session()
    live.set_options(LiveOptions(silence_bars=2.0, quantize="1/8"))
    play(live, [(60, 0.1, 0.5)])
    assert live.phrase_tokens == []
    assert live.due_beat() is not None
    assert run_until_answer(live)[0].answer_at == 12.0  # release 0.5 (on the eighth grid) + 8 beats: 8.5, next bar 12
    with pytest.raises(ValueError, match="mode"):
        live.set_options(LiveOptions(mode=DUET))


def test_channel_filter():
    assert session(channel=0).accepts_channel(9)
    assert session(channel=2).accepts_channel(1)
    assert not session(channel=2).accepts_channel(0)
