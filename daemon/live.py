"""Playing with a musician: call-and-response, continue and duet, as a state machine the engine drives.

The engine turns each live note's arrival time into a beat position on its
tempo map and hands it to a LiveSession, which answers with a LiveUpdate:
tokens to feed into the LSTM state, and when sideman's own line should start
or stop sounding. Everything here is in beats, so it needs no clock and is
tested with plain numbers.

Modes:
- call-and-response: sideman is silent while the musician plays and feeds
  every played note into the state. After `silence` bars without a note (or
  a trigger, `Respond`), it answers from the next bar line, for as many whole
  bars as the call lasted or for `bars` bars, then listens again. A note
  played during the answer interrupts it: the musician has the word.
- continue: the same, but sideman takes over after `handover` beats of
  silence, on the next sixteenth, and plays until the musician plays again.
- duet: sideman keeps playing. The musician's notes replace sideman's own
  in the state while the musician plays, so its line follows theirs; the
  engine does the replacing (see Engine._feed_duet).
"""

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from .encoding import EncodingSettings, Token
from .liveline import LiveLine, quantize_beat

log = logging.getLogger(__name__)

CALL_AND_RESPONSE = "call-and-response"
CONTINUE = "continue"
DUET = "duet"
LIVE_MODES = (CALL_AND_RESPONSE, CONTINUE, DUET)

MAX_RESPONSE_BARS = 64
# Continue mode takes over on the next sixteenth note.
HANDOVER_GRID_BEATS = 0.25
# A position this close to a grid line counts as on it: beats computed from
# seconds carry rounding errors of about 1e-12.
ON_GRID_TOLERANCE = 1e-6
# The musician's phrase keeps this many of its latest tokens for `scale auto`.
# The engine converts the whole list after each live event, so an endless
# phrase (a player who never pauses for `silence` bars) must not grow it without bound.
MAX_PHRASE_TOKENS = 256


@dataclass(frozen=True)
class LiveOptions:
    """The `live` seeder's parameters, as the session uses them."""

    mode: str = CALL_AND_RESPONSE
    silence_bars: float = 1.0  # call-and-response and duet: silence that ends the musician's phrase
    handover_beats: float = 1.0  # continue: silence after which sideman takes over
    response_bars: int = 0  # call-and-response: answer length; 0 answers for as long as the call lasted
    quantize: str = "1/16+1/8t"
    channel: int = 0  # MIDI channel 1-16 to listen to; 0 listens to all

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> "LiveOptions":
        """Build from the `live` seeder's parameter values (already checked against its declaration)."""
        return cls(
            mode=values["mode"],
            silence_bars=values["silence"],
            handover_beats=values["handover"],
            response_bars=values["bars"],
            quantize=values["quantize"],
            channel=values["channel"],
        )


@dataclass
class LiveUpdate:
    """The engine's tasks after a live event."""

    # Tokens to feed into the state, in order.
    tokens: list[Token] = field(default_factory=list)
    # Beat at which sideman's line starts sounding, when it does.
    answer_at: float | None = None
    # Beats the answer lasts; None plays until the musician plays again.
    answer_beats: float | None = None
    # Stop sounding now and release the notes: the musician plays.
    interrupt: bool = False
    # Duet: the musician's phrase ended, so sideman's own notes feed the state again.
    phrase_ended: bool = False


class LiveSession:
    """The state of one live mode: the musician's current phrase and whether sideman's line sounds."""

    def __init__(self, options: LiveOptions, encoding: EncodingSettings, beats_per_bar: float):
        self.options = options
        self.beats_per_bar = beats_per_bar
        self._encoding = encoding
        self._line = LiveLine(encoding, options.quantize)
        # Tokens of the musician's current phrase, so far: `scale auto` estimates the key from them.
        self.phrase_tokens: list[Token] = []
        # Sideman's line sounds in duet mode all the time, in the other modes during an answer.
        self.playing = options.mode == DUET
        self.answer_end: float | None = None
        self.last_answer: tuple[float, float | None] | None = None  # (start beat, beats) of the latest answer
        # The engine keeps this up to date: with the transport stopped a phrase gets no answer.
        self.transport_running = True
        self.phrases = 0
        self.answers = 0
        self.notes = 0
        self._last_call_beats: float | None = None
        self._last_advance = -math.inf

    @property
    def mode(self) -> str:
        return self.options.mode

    def set_options(self, options: LiveOptions) -> None:
        """Apply changed parameters of the same mode from the next event on; a new mode needs a new session."""
        if options.mode != self.options.mode:
            raise ValueError(f"a live session cannot change its mode from {self.options.mode} to {options.mode}")
        self.options = options
        self._line.quantize = options.quantize

    def accepts_channel(self, channel: int) -> bool:
        """Return whether a note on `channel` (0-15) is the musician's."""
        return self.options.channel == 0 or channel == self.options.channel - 1

    # Events.

    def note_on(self, pitch: int, beat: float) -> LiveUpdate:
        if self._line.first_onset is None:
            self.phrase_tokens = []  # a new phrase
        update = LiveUpdate(self._line.note_on(pitch, beat))
        self.notes += 1
        if self.mode != DUET and self.playing:
            # The musician plays during the answer: sideman stops and listens.
            log.info("the musician plays at beat %.2f: sideman stops its %s and listens", beat, "answer" if self.mode == CALL_AND_RESPONSE else "line")
            update.interrupt = True
            self._stop_answer()
        self._extend_phrase(update.tokens)
        return update

    def note_off(self, pitch: int, beat: float) -> LiveUpdate:
        update = LiveUpdate(self._line.note_off(pitch, beat))
        self._extend_phrase(update.tokens)
        return update

    def due_beat(self) -> float | None:
        """Return the next beat at which `advance` has something to decide; None while no phrase is open."""
        last_event = self._line.last_event
        if last_event is None or self._line.first_onset is None:
            return None

        # The last note is determined once the silence after its release, as
        # quantized, reaches the rest threshold: a release rounded up ends later.
        quantized_event = max(last_event, float(quantize_beat(last_event, self.options.quantize)))
        candidates = [quantized_event + self._encoding.rest_threshold, last_event + self._silence_beats()]
        if self._line.active:
            candidates.append(last_event + self._encoding.max_beats)
        later = [beat for beat in candidates if beat > self._last_advance + ON_GRID_TOLERANCE]
        return min(later) if later else None

    def advance(self, beat: float) -> LiveUpdate:
        """Time has passed without a live event: emit what became determined, and end the phrase after the silence."""
        self._last_advance = beat
        update = LiveUpdate(self._line.advance(beat))
        self._extend_phrase(update.tokens)

        last_event = self._line.last_event
        phrase_open = self._line.first_onset is not None
        if phrase_open and not self._line.active and beat - last_event >= self._silence_beats() - ON_GRID_TOLERANCE:
            self._end_phrase(beat, update, triggered=False)
        return update

    def respond(self, beat: float) -> LiveUpdate:
        """Answer now (OSC /sideman/respond or a CC button): end the phrase and answer from the next bar line."""
        update = LiveUpdate()
        if self.mode == DUET:
            log.debug("respond has no effect in duet mode: sideman already plays")
            return update
        if self.playing:
            log.debug("respond ignored: sideman is already answering")
            return update
        self._end_phrase(beat, update, triggered=True)
        return update

    def answer_finished(self) -> None:
        """Listen again: the engine reached the answer's end."""
        log.info("answer finished at beat %.2f: listening", self.answer_end)
        self._stop_answer()

    def answer_dropped(self) -> None:
        """Listen again: the transport stopped during an answer."""
        log.info("the transport stopped: the answer ends and sideman listens")
        self._stop_answer()

    # Phrase ends.

    def _silence_beats(self) -> float:
        if self.mode == CONTINUE:
            return self.options.handover_beats
        return self.options.silence_bars * self.beats_per_bar

    def _end_phrase(self, beat: float, update: LiveUpdate, triggered: bool) -> None:
        first_onset = self._line.first_onset
        call_end = self._line.last_event if self._line.last_event is not None else beat
        played = first_onset is not None

        if self.mode == DUET:
            self._close_phrase(update, self._line.finish(beat, trailing_rest=False))
            update.phrase_ended = True
            log.info("the musician's phrase ended at beat %.2f: sideman's own notes feed the state again", beat)
            return

        if not self.transport_running:
            if played:
                self._close_phrase(update, self._line.finish(beat, trailing_rest=False))
            log.info("the musician's phrase ended at beat %.2f; the transport is stopped, so it gets no answer", beat)
            return

        if self.mode == CALL_AND_RESPONSE:
            answer_at = next_grid_line(beat, self.beats_per_bar)
            if played:
                self._last_call_beats = (beat if self._line.active else call_end) - first_onset
            answer_beats = self._answer_beats()
        else:
            answer_at = next_grid_line(beat, HANDOVER_GRID_BEATS)
            answer_beats = None

        if played:
            self._close_phrase(update, self._line.finish(answer_at, trailing_rest=True))
        update.answer_at = answer_at
        update.answer_beats = answer_beats

        self.playing = True
        self.answer_end = None if answer_beats is None else answer_at + answer_beats
        self.last_answer = (answer_at, answer_beats)
        self.answers += 1
        reason = "on request" if triggered else "after the silence"
        bars = None if answer_beats is None else answer_beats / self.beats_per_bar
        length = "until the musician plays again" if bars is None else f"for {bars:g} bar{'' if bars == 1 else 's'}"
        log.info("answering %s from beat %.2f %s", reason, answer_at, length)

    def _answer_beats(self) -> float:
        if self.options.response_bars > 0:
            bars = self.options.response_bars
        elif self._last_call_beats is not None:
            bars = math.ceil(self._last_call_beats / self.beats_per_bar - ON_GRID_TOLERANCE)
        else:
            bars = 1
        return min(MAX_RESPONSE_BARS, max(1, bars)) * self.beats_per_bar

    def _close_phrase(self, update: LiveUpdate, final_tokens: list[Token]) -> None:
        update.tokens.extend(final_tokens)
        self._extend_phrase(final_tokens)
        self.phrases += 1
        self._last_advance = -math.inf

    def _extend_phrase(self, tokens: list[Token]) -> None:
        self.phrase_tokens.extend(tokens)
        del self.phrase_tokens[:-MAX_PHRASE_TOKENS]

    def _stop_answer(self) -> None:
        self.playing = self.mode == DUET
        self.answer_end = None


def next_grid_line(beat: float, spacing: float) -> float:
    """Return the first multiple of `spacing` at or after `beat` (a position on a grid line counts as at it)."""
    lines = math.ceil(beat / spacing - ON_GRID_TOLERANCE)
    return lines * spacing
