"""Route each message from the MIDI input: live notes to the engine, mapped CCs to commands, MIDI thru to the output.

The router runs on the MIDI input's callback thread and must return
quickly: it only checks, converts and queues (`Engine.apply`), and the
engine applies everything between two notes. Notes that sideman sent and
that come back through a routing loop are recognised by the shared output
(`SharedOutput.is_echo`) and dropped, so sideman never answers itself.
"""

import logging

import mido

from .ccmap import CcMap
from .clock import Clock
from .commands import ClockMessage, LiveNote, SetParam, SetTempo
from .errors import InvalidInputError, SettingsError
from .midiinput import RepeatedWarning
from .sharedoutput import THRU_ECHO_WINDOW, SharedOutput

log = logging.getLogger(__name__)

# System messages of an external clock, followed with --sync midi-in.
CLOCK_TYPES = frozenset({"clock", "start", "continue", "stop", "songpos"})
# Channel voice messages that MIDI thru passes on besides notes.
THRU_TYPES = frozenset({"pitchwheel", "aftertouch", "polytouch"})
# MIDI thru passes at most this many messages a second (more than any player
# sends), so a routing loop or a flood cannot multiply itself through the output.
MAX_THRU_RATE = 2000.0
# Commands that only steer (a knob's value): when the engine is behind they may be dropped.
_STEERING = (SetParam, SetTempo)
# The maximum number of messages of each kind that reach the engine per
# second, with bursts of up to one second's worth. The engine applies every queued command
# before it plays a due note, so commands arriving faster than it applies
# them would hold up sideman's notes and note_offs: MAX_DROPPABLE_BACKLOG
# bounds the engine's queue, these bound its time. A live note costs the
# engine an LSTM step and a redraw, about 0.3 ms on a desktop machine
# (an estimate from a Python timing loop), and no player sends 250 notes a second.
MAX_LIVE_NOTE_RATE = 250.0  # note_ons, and note_offs of keys whose note_on did not reach the engine
MAX_CONTROL_RATE = 500.0  # control changes mapped to commands: a few knobs turned at once
MAX_CLOCK_RATE = 1000.0  # clock and transport messages: 24 pulses a beat at 400 BPM are 160 a second


class InputRouter:
    """The MIDI input's `on_message` handler."""

    def __init__(self, engine, output: SharedOutput, clock: Clock, cc_map: CcMap | None = None):
        self._engine = engine
        self._output = output
        self._clock = clock
        self._cc_map = cc_map
        # Notes sent on by MIDI thru and not yet released, as (input channel, pitch):
        # their note_off goes on even after thru is turned off, so none hangs.
        self._thru_sounding: set[tuple[int, int]] = set()
        self._thru_failures = RepeatedWarning("%d more messages could not be sent on by MIDI thru")
        # Keys the musician holds, as (channel, pitch): their note_off is theirs even
        # when sideman released the same pitch a moment ago, so it is no echo.
        self._held: set[tuple[int, int]] = set()
        self._thru_budget = TokenBucket(MAX_THRU_RATE, clock.now)
        self._dropped = RepeatedWarning("%d more MIDI input messages dropped because the engine is behind")
        self._thru_limited = RepeatedWarning("%d more messages not passed through: MIDI thru is over its rate limit")
        self._note_budget = TokenBucket(MAX_LIVE_NOTE_RATE, clock.now)
        self._control_budget = TokenBucket(MAX_CONTROL_RATE, clock.now)
        self._clock_budget = TokenBucket(MAX_CLOCK_RATE, clock.now)
        self._rate_limited = RepeatedWarning("%d more MIDI input messages dropped: over the input's rate limit")
        # Keys, as (channel, pitch), whose latest note_on the engine queued: their
        # note_off goes to the engine whatever the rate, so no key stays held there.
        self._fed: set[tuple[int, int]] = set()

    @property
    def rate_limited(self) -> int:
        """Messages dropped before the engine because their kind was over its rate limit."""
        return self._rate_limited.count

    def __call__(self, message: mido.Message) -> None:
        now = self._clock.now()
        if message.type in ("note_on", "note_off"):
            self._route_note(message, now)
        elif message.type == "control_change":
            self._route_control(message)
        elif message.type in THRU_TYPES:
            self._route_other(message)
        elif message.type in CLOCK_TYPES and self._engine.follows_clock:
            if not self._within(self._clock_budget, message, MAX_CLOCK_RATE):
                return
            # NOTE: arrival times are read here, on the input thread, so a late
            # callback adds to the pulses' jitter; the follower's filter smooths it.
            position = message.pos if message.type == "songpos" else 0
            # A pulse may be dropped when the engine is behind; a transport message may not.
            self._apply([ClockMessage(message.type, now, position)], message, droppable=message.type == "clock")
        else:
            log.debug("MIDI input: %s ignored", message.type)

    def _route_note(self, message: mido.Message, now: float) -> None:
        velocity = message.velocity if message.type == "note_on" else 0
        key = (message.channel, message.note)
        musicians_release = velocity == 0 and key in self._held
        if not musicians_release and self._output.is_echo(message, now):
            log.debug("MIDI input: %s is sideman's own note coming back; ignored", message)
            return

        if velocity > 0:
            self._held.add(key)
        else:
            self._held.discard(key)
        if velocity > 0:
            if self._engine.live_thru and self._thru(message):
                self._thru_sounding.add(key)
        elif key in self._thru_sounding:
            self._thru_sounding.discard(key)
            self._thru(message)

        if velocity == 0 and key in self._fed:
            self._fed.discard(key)
        elif not self._within(self._note_budget, message, MAX_LIVE_NOTE_RATE):
            return
        queued = self._apply([LiveNote(message.note, velocity, now, message.channel)], message, droppable=True)
        if velocity > 0 and queued:
            self._fed.add(key)

    def _route_control(self, message: mido.Message) -> None:
        commands = self._cc_map.translate(message) if self._cc_map else []
        if commands:
            if not self._within(self._control_budget, message, MAX_CONTROL_RATE):
                return
            self._apply(commands, message, droppable=all(isinstance(command, _STEERING) for command in commands))
        elif self._engine.live_thru:
            self._thru(message)

    def _route_other(self, message: mido.Message) -> None:
        if self._engine.live_thru:
            self._thru(message)

    def _thru(self, message: mido.Message) -> bool:
        """Send the musician's message on to the output, on sideman's channel; return whether it went out."""
        if not self._thru_budget.take():
            self._thru_limited.warn("MIDI thru is over %d messages a second: %s and later ones are not passed through", MAX_THRU_RATE, message)
            return False
        try:
            self._output.send(message.copy(channel=self._engine.channel), echo_window=THRU_ECHO_WINDOW)
        except Exception as error:
            self._thru_failures.warn("MIDI thru could not send %s: %s", message, error)
            return False
        return True

    def _within(self, budget: "TokenBucket", message: mido.Message, rate: float) -> bool:
        """Take one message from `budget`; return whether it may go on to the engine, counting it when not."""
        if budget.take():
            return True
        self._rate_limited.warn("MIDI input: %s dropped: over the rate limit of %d messages a second for its kind; later ones are counted", message, rate)
        return False

    def _apply(self, commands: list, message: mido.Message, droppable: bool = False) -> bool:
        """Queue the commands on the engine; return whether they were queued."""
        try:
            queued = self._engine.apply(commands, droppable=droppable)
        except (InvalidInputError, SettingsError) as error:
            log.warning("MIDI input: %s rejected: %s", message, error)
            return False
        if not queued:
            self._dropped.warn("MIDI input: %s dropped because the engine is behind; later ones are counted", message)
        return queued


class TokenBucket:
    """A rate limit: `take` succeeds for at most `rate` events a second, with bursts up to one second's worth."""

    def __init__(self, rate: float, clock):
        self._rate = rate
        self._clock = clock
        self._tokens = rate
        self._updated = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._rate, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
