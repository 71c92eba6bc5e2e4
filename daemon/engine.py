"""The engine: plays the improviser's notes on time into a MIDI output and applies commands between notes.

This is the one place where the model (through the Improviser), the sampler
chain, the clock and the MIDI output meet.

Timing. The engine keeps a beat position and a TempoMap, which turns each
onset into an absolute time on the clock. The loop waits for the next due
event (a note_off or the next onset) with `clock.wait_until` and never adds
up sleeps. A command sets the `wake` event, so the loop applies it at once,
between two notes.

Look-ahead. Right after an onset the engine takes a checkpoint of the
improviser and draws the following note, so inference never delays an
onset. A change of sampler, parameter, seed, prime or reset rolls the
improviser back to that checkpoint, applies the change and draws again, so
every change applies from the very next onset. While the loop waits for an
event at least PREPARE_LEAD away, the improviser draws ahead the random noise
that its next draws read (`Improviser.prepare`), so a draw only reads it.

Tempo. The next onset's time was fixed when the current note started (its
duration at the tempo then in effect); a new tempo applies from the next
onset on (`TempoMap.set_tempo` at the next onset's beat), and the beat
position stays continuous.

Transport. Stop releases the sounding notes and keeps the state, including
the drawn look-ahead note; Start plays that note a small margin from now,
at the beat position where play stopped. Reset zeroes the model state and
leaves the transport alone. Panic releases every note and keeps state and
transport.

Sync. The transport follows one source, switchable at run time: its own
tempo map (internal), the same while sending MIDI clock (master), an
external MIDI clock (midi-in, a ClockFollower) or an Ableton Link session
(link). Leaving master sends Stop to the follower; entering midi-in stops
and releases the notes until the clock's Start; the tempo map in effect
carries on when a followed source is left.

Parameters. SetParam is accepted for any installed sampler or seeder, in
the chain or not. Values are kept per plugin name: they apply at once to a
member of the current chain and to every chain or seeder built later from
that plugin. A SetParam before an ApplySeeder in the same batch applies to it.

Seeders. An ApplySeeder command is prepared (files read, phrases parsed) in the
caller's thread during `apply`, so a bad request is rejected there, and the
loop only feeds the prepared tokens into the state between two notes.

Live input. A seeder that listens (the `live` seeder) puts the engine into a
live mode, a LiveSession (sideman.live). LiveNote commands carry the notes
played into the MIDI input; the engine turns their arrival times into beats,
feeds the tokens the session returns into the state, and plays its own line
only while the session lets it: during an answer, or always in duet mode.
While the line is silent the transport keeps counting beats, so answers
start on bar lines of the same grid.
"""

import bisect
import logging
import math
import queue
import threading
import traceback
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Protocol, Sequence

import mido

from .clock import Clock
from .config.schema import SYNC_SOURCES
from .commands import (
    MAX_PRIME_TOKENS,
    ApplySeeder,
    ClockMessage,
    Command,
    LiveNote,
    Panic,
    Prime,
    Reset,
    Reseed,
    Respond,
    SetFeel,
    SetParam,
    SetSampler,
    SetSync,
    SetTempo,
    Start,
    Stop,
    describe_command,
    validate_live_note,
    validate_phrase,
    validate_seed,
)
from .encoding import Token
from .errors import InvalidInputError, SettingsError
from .failures import PluginFailures
from .feel import Feel, convert_feel_param
from .improviser import Checkpoint, Improviser
from .live import DUET, HANDOVER_GRID_BEATS, ON_GRID_TOLERANCE, LiveOptions, LiveSession, LiveUpdate, next_grid_line
from .clockfollow import ClockFollower, ClockUpdate, FollowAction
from .midiclock import ClockLeader
from .notenames import pitch_name
from .params import find_param
from .plugins.filters import PitchRange, Repetition, TopK, TopP
from .plugins.live import LiveInput
from .plugins.samplers import Greedy, Temperature
from .plugins.scale import Scale
from .plugins.seeders import MidiFilePhrase, OneToken, Phrase, Zero
from .recorder import Recorder
from .render import validate_channel, validate_gate, validate_velocity
from .sampling import Sampler, SamplerChain, build_chain
from .seeding import PhraseSeeder, Seeder, build_seeder, phrase_tokens, prime_phrase
from .tempo import TempoMap, validate_tempo

log = logging.getLogger(__name__)

START_MARGIN = 0.005  # seconds from a Start to its first onset, so that onset is not late
# Maximum wait in seconds of a status request for the commands queued before it.
STATUS_WAIT = 0.2
IDLE_WAIT = 1.0  # maximum single wait in seconds while nothing is scheduled
# Shortest wait in seconds before the next event in which the improviser draws
# its noise ahead (`Improviser.prepare`, at most about 0.5 ms).
PREPARE_LEAD = 0.002
# Batches waiting to be applied beyond which a droppable batch (live input) is dropped.
MAX_DROPPABLE_BACKLOG = 256
# An onset this many seconds late (the machine stalled) restarts the time
# grid from now instead of playing the missed notes in a burst.
RESYNC_LATENESS = 0.1
ALL_NOTES_OFF = 123  # MIDI control change number

# The built-in plugins, for an engine made without the registry's tables (tests, embedding).
DEFAULT_REGISTRY: dict[str, type[Sampler]] = {
    plugin.name: plugin for plugin in (Greedy, Temperature, TopK, TopP, PitchRange, Repetition, Scale)
}
DEFAULT_SEEDERS: dict[str, type[Seeder]] = {plugin.name: plugin for plugin in (Zero, OneToken, Phrase, MidiFilePhrase, LiveInput)}
# Commands that change what the model draws, so the look-ahead note is drawn again.
_REDRAWING = (Reseed, Prime, Reset, SetSampler, SetParam, ApplySeeder)


class MessageOutput(Protocol):
    """Destination of the engine's messages: a MIDI output port, or a fake in tests."""

    def send(self, message: mido.Message) -> None:
        ...

    def all_notes_off(self, channel: int) -> None:
        """Send All Notes Off (CC 123) on `channel` (0-15)."""
        ...


@dataclass(frozen=True)
class NoteEvent:
    """A note as it sounds, for displays such as `run --show`."""

    seconds: float  # onset time since the first onset after play first started
    beat: float  # onset beat position
    token: Token
    name: str  # pitch name, C4 = MIDI 60
    beats: float  # duration in beats, onset to next onset


class Engine:
    """Play the improviser's line on a MIDI output, one note of look-ahead, steered by commands.

    Drive it in its own thread (`start_thread`, `shutdown`) or in the calling
    thread (`run_until`, `run_for`), which with a FakeClock plays any number
    of notes without sleeping. `channel` is 0-15. `seeder` is the seeder applied
    before play: a listening one (the `live` seeder) starts its live mode.
    """

    def __init__(
        self,
        improviser: Improviser,
        output: MessageOutput,
        clock: Clock,
        *,
        tempo: float = 120.0,
        gate: float = 0.9,
        velocity: int = 90,
        channel: int = 0,
        autoplay: bool = True,
        registry: dict[str, type[Sampler]] | None = None,
        seeders: dict[str, type[Seeder]] | None = None,
        params: dict[str, dict[str, Any]] | None = None,
        on_note: Callable[[NoteEvent], None] | None = None,
        recorder: Recorder | None = None,
        model_name: str = "",
        beats_per_bar: float = 4.0,
        seeder: Seeder | None = None,
        clock_output: MessageOutput | None = None,
        feel: Feel | None = None,
        follower: ClockFollower | None = None,
        sync: str | None = None,
        sync_autostart: bool = False,
        clock_input: bool = True,
        link_factory: Callable[[float, float], Any] | None = None,
    ):
        self._improviser = improviser
        self._output = output
        self._clock = clock
        self._tempo_map = TempoMap(tempo)
        self._gate = validate_gate(gate)
        self._velocity = validate_velocity(velocity)
        self._channel = validate_channel(channel)
        self._registry = dict(registry) if registry is not None else dict(DEFAULT_REGISTRY)
        self._seeders = dict(seeders) if seeders is not None else dict(DEFAULT_SEEDERS)
        self._on_note = on_note
        self._recorder = recorder
        self.model_name = str(model_name or improviser.bundle.metadata.get("name", ""))
        self._steps_per_beat = improviser.steps_per_beat
        self._beats_per_bar = beats_per_bar
        # Swing, humanize and latency: when each note is sent and at which velocity; the tokens stay on the grid.
        self._feel = feel if feel is not None else Feel()
        # The sync source. Without `sync`, a clock output means master and a follower midi-in.
        if sync is None:
            sync = "internal"
            if clock_output is not None:
                sync = "master"
            elif follower is not None:
                sync = "midi-in"
        self._sync = sync
        self._sync_autostart = sync_autostart
        # Whether a MIDI input delivers clock messages, so that midi-in can be chosen at run time.
        self._clock_input = clock_input
        # Builds and joins a Link session from (tempo in BPM, beats per bar); None where aalink is missing.
        self._link_factory = link_factory
        self._link: Any = None
        # As clock master: where the MIDI clock and transport messages go (default the note output), and their schedule.
        self._clock_output = clock_output if clock_output is not None else output
        self._clock_leader = ClockLeader() if self._sync == "master" else None
        # Following an external MIDI clock: the follower's tempo and phase replace the tempo map's.
        if self._sync == "midi-in" and follower is None:
            follower = ClockFollower(beats_per_bar, sync_autostart, fallback_bpm=tempo)
        self._follower = follower
        if self._sync == "link":
            if link_factory is None:
                raise SettingsError("sync link needs the aalink package: pip install 'sideman[link]'")
            # The session's first poll starts play on its beat grid (or its transport does, with start/stop sync).
            self._link = link_factory(tempo, beats_per_bar)
        self._fallback_chain = SamplerChain([], Greedy())

        # Parameter values per plugin name: the configured ones, then the current chain's.
        self._param_values: dict[str, dict[str, Any]] = {name: dict(values) for name, values in (params or {}).items()}
        for member in improviser.chain.members():
            self._param_values.setdefault(member.name, {}).update(member.values)

        self._commands: queue.SimpleQueue[list[Command]] = queue.SimpleQueue()
        # Batches queued and applied so far, so that `status` can report the
        # state after every command accepted before it.
        self._batches_queued = 0
        self._batches_applied = 0
        self._applied = threading.Condition()
        self._wake = threading.Event()
        self._closing = False
        self._finished = False
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None
        self.dropped_batches = 0  # droppable batches dropped because the engine was behind

        self._running = False
        self._origin: float | None = None  # clock time of the first onset after the first Start
        self._note_offs: list[tuple[float, int]] = []  # (clock time, pitch), sorted by time
        self._notes_played = 0
        self._late_onsets = 0
        # Failures of samplers and of seeders; both share the plugin namespace.
        self._failures = PluginFailures()
        # Callables that add their own keys to the status reply, e.g. the MIDI inputs' counts.
        self._status_sources: list[Callable[[], Mapping[str, int | float | str]]] = []

        self._onset_beat = 0.0  # beat of the latest onset, note or rest

        # Live mode: the session while a listening seeder is active, and in duet
        # mode the improviser's checkpoint right after the latest live token.
        self._live: LiveSession | None = None
        self._live_seeder = ""  # name of the listening seeder whose session `_live` is
        self._live_thru = False
        self._duet_anchor: Checkpoint | None = None
        self._live_notes_ignored = 0
        # Set when a command or live event rolled the improviser back, so the look-ahead is drawn again.
        self._rolled_back = False

        # The look-ahead note: its index, onset beat, onset time (None while
        # stopped) and the improviser's checkpoint from before it was drawn.
        self._next_beat = 0.0
        self._next_time: float | None = None
        self._checkpoint = improviser.checkpoint()
        self._next_index = self._draw(0.0)

        # The seeder applied before play; a listening one starts its live mode now.
        if seeder is not None and getattr(seeder, "listens", False):
            self._start_live(seeder)

        if autoplay:
            self._batches_queued += 1
            self._commands.put([Start()])
            self._wake.set()

    # Public interface, called from any thread.

    def apply(self, commands: Sequence[Command], *, droppable: bool = False) -> bool:
        """Check a batch of commands and queue it. The loop applies the batch whole, between two notes.

        Raises InvalidInputError (SettingsError for settings) naming the first
        invalid command and the reason. Then nothing of the batch is queued.
        A `droppable` batch (live notes, knob moves) is dropped and counted
        instead when MAX_DROPPABLE_BACKLOG batches already wait, so a flood
        at the MIDI input cannot queue without bound; returns whether the
        batch was queued.
        """
        if droppable and self._batches_queued - self._batches_applied >= MAX_DROPPABLE_BACKLOG:
            self.dropped_batches += 1
            return False

        # Parameter values as they will be when each command applies, for the seeders of this batch.
        pending = {name: dict(values) for name, values in self._param_values.items()}
        batch = [self._validate(command, pending) for command in commands]
        if not batch:
            return True
        if log.isEnabledFor(logging.DEBUG):
            for command in batch:
                # DEBUG: the OSC layer logs each accepted message at INFO with its sender.
                log.debug("accepted %s", describe_command(command))
        with self._applied:
            self._batches_queued += 1
            self._commands.put(batch)
        self._wake.set()
        return True

    def wait_applied(self, timeout: float = STATUS_WAIT) -> bool:
        """Wait until the engine thread has applied every batch queued before this call; False on timeout."""
        thread = self._thread
        if thread is None or not thread.is_alive() or threading.current_thread() is thread:
            return True
        with self._applied:
            target = self._batches_queued
            return self._applied.wait_for(lambda: self._batches_applied >= target, timeout)

    def status(self) -> dict[str, int | float | str]:
        """Return the current settings and position as key/value pairs, for the OSC status reply.

        Commands accepted before the call are applied first (waiting at most
        STATUS_WAIT seconds), so a status request right after a change reports it.
        """
        self.wait_applied()
        next_beat = self._next_beat
        running = self._running
        beat = next_beat
        if running:
            beat = self._current_beat()
        live = self._live
        last_answer = live.last_answer if live is not None else None
        status = {
            "tempo": self._tempo_map.bpm_at(next_beat),
            "running": int(running),
            "sampler": self._improviser.chain.describe(),
            "seed": int(self._improviser.seed),
            "notes": self._notes_played,
            "model": self.model_name,
            "beat": float(beat),
            "channel": self._channel + 1,
            "gate": self._gate,
            "velocity": self._velocity,
            "sampler_errors": self._failures.total,
            "disabled_plugins": " ".join(sorted(self._failures.disabled)),
            "late_onsets": self._late_onsets,
            "input_dropped": self.dropped_batches,
            "beats_per_bar": self._beats_per_bar,
            "sync": self._sync,
            # The tempo measured from the followed clock or Link session; 0 while none or not measured yet.
            "clock_bpm": float(self._external_bpm() or 0.0),
            "link_peers": int(self._link.peers) if self._link is not None else 0,
            "clock_pulses": self._clock_leader.pulses_sent if self._clock_leader is not None else 0,
            "live": live.mode if live is not None else "off",
            "listening": int(live is not None and not live.playing),
            "live_notes": live.notes if live is not None else 0,
            "answers": live.answers if live is not None else 0,
            "live_notes_ignored": self._live_notes_ignored,
            # Notes of sideman's that came back into its input through a routing loop.
            "echoes_ignored": int(getattr(self._output, "echoes", 0)),
            # Messages dropped while the output port was lost (a JACK restart) or because a send failed.
            "output_dropped": int(getattr(self._output, "dropped", 0)),
            # Start beat and length in beats of the latest answer; -1 when none, length 0 when open-ended.
            "answer_beat": float(last_answer[0]) if last_answer else -1.0,
            "answer_beats": float(last_answer[1] or 0.0) if last_answer else -1.0,
        }
        for source in self._status_sources:
            try:
                extra = source()
            except Exception:
                log.exception("a status source failed; its keys are missing from this reply")
                continue
            duplicate_keys = status.keys() & extra.keys()
            if duplicate_keys:
                log.warning("a status source reports keys the engine reports itself, which stay the engine's: %s", ", ".join(sorted(duplicate_keys)))
            status.update({key: value for key, value in extra.items() if key not in duplicate_keys})
        return status

    def add_status_source(self, source: Callable[[], Mapping[str, int | float | str]]) -> None:
        """Have `source()` add its keys to every status reply; it runs in the thread that calls `status`."""
        self._status_sources.append(source)

    @property
    def live_thru(self) -> bool:
        """Whether the MIDI input should send the musician's notes on to the output (the live seeder's `thru`)."""
        return self._live is not None and self._live_thru

    def _external_bpm(self) -> float | None:
        """Return the tempo of the followed MIDI clock or Link session, or None."""
        if self._follower is not None:
            return self._follower.bpm
        if self._link is not None:
            return self._link.bpm
        return None

    @property
    def follows_clock(self) -> bool:
        """Whether MIDI clock and transport messages from the input drive the transport (--sync midi-in)."""
        return self._follower is not None

    @property
    def channel(self) -> int:
        """Output channel, 0-15."""
        return self._channel

    def start_thread(self) -> None:
        """Run the engine loop in a daemon thread until `shutdown`."""
        if self._thread is not None:
            raise RuntimeError("the engine thread is already started")
        self._thread = threading.Thread(target=self._run_thread, name="sideman-engine", daemon=True)
        log.info(
            "engine starting: model %r, %g BPM, sampler %r, channel %d",
            self.model_name, self._tempo_map.bpm_at(self._next_beat), self._improviser.chain.describe(), self._channel + 1,
        )
        self._thread.start()

    def shutdown(self, timeout: float = 2.0) -> None:
        """Stop play, release every note (note_offs, then All Notes Off), flush the recorder and join the thread.

        Calling it again does nothing more.
        """
        self._closing = True
        self._wake.set()
        thread = self._thread
        if thread is None:
            self._finish()
            return

        thread.join(timeout)
        if thread.is_alive():
            log.error("engine thread did not stop within %.1f s; notes may still sound", timeout)

    def run_until(self, end_time: float) -> None:
        """Run the loop in the calling thread until the clock reaches `end_time` (seconds) or shutdown."""
        while not self._closing:
            self._wake.clear()
            self._apply_queued()
            if self._closing:
                return

            deadline = self._next_deadline()
            if deadline is not None and deadline <= end_time:
                if deadline - self._clock.now() > PREPARE_LEAD:
                    self._improviser.prepare()
                # A due event plays even while commands keep arriving (a flood
                # sets `wake` again at once), so the notes never starve.
                if deadline <= self._clock.now() or self._clock.wait_until(deadline, self._wake):
                    self._play_due()
                continue

            self._improviser.prepare()
            idle_until = min(end_time, self._clock.now() + IDLE_WAIT)
            if self._clock.wait_until(idle_until, self._wake) and idle_until >= end_time:
                return

    def run_for(self, seconds: float) -> None:
        self.run_until(self._clock.now() + seconds)

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    # The loop: everything below runs in the engine thread.

    def _run_thread(self) -> None:
        try:
            self.run_until(math.inf)
        except Exception as error:
            self.failure = error
            log.exception("engine stopped by an error; releasing every note")
        finally:
            self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._running = False

        try:
            self._release_all()
            if self._clock_leader is not None:
                self._send_clock(self._clock_leader.stop())
        except Exception:
            log.exception("could not release the sounding notes on channel %d", self._channel + 1)

        if self._link is not None:
            self._link.close()
            self._link = None

        if self._recorder is not None:
            try:
                self._recorder.flush()
            except Exception:
                log.exception("could not write the recording to %s", self._recorder.path)
        log.info("engine stopped after %d notes", self._notes_played)

    def _next_deadline(self) -> float | None:
        candidates = []
        if self._note_offs:
            candidates.append(self._note_offs[0][0])
        if self._line_sounds():
            candidates.append(self._next_time)
        live_time = self._live_due_time()
        if live_time is not None:
            candidates.append(live_time)
        answer_end = self._answer_end_time()
        if answer_end is not None:
            candidates.append(answer_end)
        pulse_time = self._clock_leader.next_time(self._tempo_map) if self._clock_leader is not None else None
        if pulse_time is not None:
            candidates.append(pulse_time)
        sync_check = self._sync_check_time()
        if sync_check is not None:
            candidates.append(sync_check)
        return min(candidates) if candidates else None

    def _sync_check_time(self) -> float | None:
        """Return when the followed source needs a look: the MIDI clock's stall deadline, or the next poll of the Link session."""
        if self._follower is not None:
            return self._follower.deadline()
        if self._link is not None:
            return self._link.deadline()
        return None

    def _answer_end_time(self) -> float | None:
        """Clock time at which the answer being played ends, so the session listens again on time."""
        if self._live is None or self._live.answer_end is None or not self._running:
            return None
        return self._tempo_map.time_at(self._live.answer_end)

    def _line_sounds(self) -> bool:
        """Return whether sideman's own line plays now: the transport runs and no live mode keeps it silent."""
        return self._running and (self._live is None or self._live.playing)

    def _current_beat(self) -> float:
        """Return the transport's beat position now; while the line sounds, never past the next onset."""
        beat = self._tempo_map.beat_at(self._clock.now())
        return min(beat, self._next_beat) if self._line_sounds() else beat

    def _play_due(self) -> None:
        """Send the clock pulses and note_offs that are due, let the live session decide, then play the onset if it is due."""
        now = self._clock.now()
        if self._clock_leader is not None:
            # Pulses first: a follower places the notes that come with a pulse after it.
            self._send_clock(self._clock_leader.due(now, self._tempo_map))
        while self._note_offs and self._note_offs[0][0] <= now:
            _, pitch = self._note_offs.pop(0)
            self._send(mido.Message("note_off", channel=self._channel, note=pitch, velocity=0), now)

        answer_end = self._answer_end_time()
        if answer_end is not None and answer_end <= now:
            self._live.answer_finished()

        sync_check = self._sync_check_time()
        if sync_check is not None and sync_check <= now:
            source = self._follower if self._follower is not None else self._link
            self._follow(source.check(now))

        live_time = self._live_due_time()
        if live_time is not None and live_time <= now:
            self._rolled_back = False
            self._apply_live_update(self._live.advance(self._tempo_map.beat_at(now)))
            self._redraw_if_rolled_back()

        if self._line_sounds() and self._next_time <= now:
            self._play_onset(now)

    def _play_onset(self, now: float) -> None:
        onset_time = self._next_time
        beat = self._next_beat
        answer_end = self._live.answer_end if self._live is not None else None
        if answer_end is not None and beat >= answer_end - ON_GRID_TOLERANCE:
            self._live.answer_finished()
            return
        if now - onset_time > RESYNC_LATENESS:
            self._late_onsets += 1
            self._tempo_map.restart(now, beat)
            onset_time = now

        token = self._improviser.token(self._next_index)
        beats = token.steps / self._steps_per_beat
        next_beat = beat + beats
        next_time = self._onset_time(next_beat)

        if token.pitch is not None:
            self._release_pitch(token.pitch, now)
            velocity = self._feel.note_velocity(self._velocity)
            self._send(mido.Message("note_on", channel=self._channel, note=token.pitch, velocity=velocity), now)
            # onset + gate * duration, both as the feel moves them. With gate <= 1 it is never after the next onset.
            off_time = max(now, self._feel.release_time(beat, next_beat, self._gate, self._tempo_map))
            if answer_end is not None:
                # An answer lasts exactly its bars: its last note ends at the answer's end.
                off_time = min(off_time, self._feel.send_time(self._tempo_map.time_at(answer_end)))
            bisect.insort(self._note_offs, (off_time, token.pitch))
            self._notes_played += 1

        self._onset_beat = beat
        self._next_beat = next_beat
        self._next_time = next_time
        self._checkpoint = self._improviser.checkpoint()
        self._next_index = self._draw(next_beat)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("beat %.3f: %s for %.3f beats", beat, pitch_name(token.pitch), beats)

        if token.pitch is not None and self._on_note is not None:
            self._notify(NoteEvent(onset_time - self._origin, beat, token, pitch_name(token.pitch), beats))

    def _draw(self, beat: float) -> int:
        """Draw the look-ahead note; when the sampler chain raises, draw this one note greedily instead."""
        try:
            return self._improviser.draw(beat)
        except Exception as error:
            self._report_sampler_failure(error)

        self._improviser.rollback(self._checkpoint)
        chain = self._improviser.chain
        self._improviser.chain = self._fallback_chain
        try:
            return self._improviser.draw(beat)
        finally:
            self._improviser.chain = chain

    def _report_sampler_failure(self, error: Exception) -> None:
        chain = self._improviser.chain
        plugin = _failing_sampler(error)
        if not self._failures.record(plugin or chain.describe(), error, "sampler", "this note is greedy (argmax)"):
            return

        # Disabled: the plugin leaves the chain (a chooser gives way to greedy),
        # or the whole chain does when the failure could not be traced to one plugin.
        filters = [member for member in chain.filters if plugin is not None and member.name != plugin]
        chooser = chain.chooser if plugin is not None and chain.chooser.name != plugin else Greedy()
        self._improviser.chain = SamplerChain(filters, chooser)
        log.error("the sampler chain is now %r", self._improviser.chain.describe())

    def _notify(self, event: NoteEvent) -> None:
        try:
            self._on_note(event)
        except Exception:
            log.exception("the note display failed and is turned off")
            self._on_note = None

    def _send(self, message: mido.Message, now: float) -> None:
        self._output.send(message)
        if self._recorder is not None:
            self._recorder.record(now, message)

    def _onset_time(self, beat: float) -> float:
        """Clock time at which to send the onset at `beat`, swung, humanized and moved earlier by the latency."""
        return self._feel.onset_time(beat, self._tempo_map)

    def _send_clock(self, messages: list[mido.Message]) -> None:
        for message in messages:
            self._clock_output.send(message)

    def _release_pitch(self, pitch: int, now: float) -> None:
        """Send the pending note_off of `pitch` early, before that pitch starts again."""
        for index, (_, pending) in enumerate(self._note_offs):
            if pending == pitch:
                del self._note_offs[index]
                self._send(mido.Message("note_off", channel=self._channel, note=pitch, velocity=0), now)
                return

    def _release_own_notes(self) -> None:
        """Send the pending note_off of every note of sideman's line now."""
        now = self._clock.now()
        offs, self._note_offs = self._note_offs, []
        for _, pitch in offs:
            self._send(mido.Message("note_off", channel=self._channel, note=pitch, velocity=0), now)

    def _release_all(self) -> None:
        """Send every pending note_off, then All Notes Off on the channel."""
        now = self._clock.now()
        self._release_own_notes()
        self._output.all_notes_off(self._channel)
        if self._recorder is not None:
            self._recorder.record(now, mido.Message("control_change", channel=self._channel, control=ALL_NOTES_OFF, value=0))

    # Commands: checked in the caller's thread, applied in the engine thread.

    def _apply_queued(self) -> None:
        # Only the batches queued now: those arriving meanwhile wait for the
        # next pass, after the due events. Checked between batches, so a long
        # backlog cannot hold up shutdown.
        for _ in range(self._commands.qsize()):
            if self._closing:
                return
            try:
                batch = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                self._apply_batch(batch)
            finally:
                with self._applied:
                    self._batches_applied += 1
                    self._applied.notify_all()

    def _apply_batch(self, batch: list[Command]) -> None:
        """Apply a batch, and redraw the look-ahead once at the end when a command changes what the model draws."""
        self._rolled_back = False
        for command in batch:
            if self._redraws(command):
                self._rollback_once()
                # Any change of state other than a live note ends the duet's replacing.
                self._duet_anchor = None
            try:
                self._appliers[type(command)](self, command)
            except Exception as error:
                # A command that passed validation but fails here (a plugin's
                # bug, an extreme value) must not stop the music: it is dropped
                # and the look-ahead is drawn again from the checkpoint.
                if isinstance(command, ApplySeeder):
                    self._failures.record(command.seeder, error, "seeder", "its request is dropped and play goes on")
                else:
                    log.exception("could not apply %s; play goes on without it", describe_command(command))
                self._improviser.rollback(self._checkpoint)
                self._rolled_back = True
        self._redraw_if_rolled_back()

    def _redraws(self, command: Command) -> bool:
        """Return whether the command changes what the model draws; a parameter of the live mode changes only how it listens."""
        if isinstance(command, SetParam) and self._live is not None and command.plugin == self._live_seeder:
            return False
        return isinstance(command, _REDRAWING)

    def _rollback_once(self) -> None:
        """Take back the look-ahead draw, once per batch, so the batch's changes apply from the next onset."""
        if not self._rolled_back:
            self._improviser.rollback(self._checkpoint)
            self._rolled_back = True

    def _redraw_if_rolled_back(self) -> None:
        if self._rolled_back:
            self._checkpoint = self._improviser.checkpoint()
            self._next_index = self._draw(self._next_beat)
            self._rolled_back = False

    def _apply_tempo(self, command: SetTempo) -> None:
        if self._link is not None:
            # The session's tempo changes for every peer; the next poll moves the tempo map.
            self._link.propose_tempo(command.bpm)
            return
        # While the line is silent (a live mode listening) the next onset lies
        # in the past, so the new tempo starts at the current beat instead.
        at_beat = self._next_beat if self._line_sounds() else max(self._next_beat, self._tempo_map.beat_at(self._clock.now()))
        self._tempo_map.set_tempo(command.bpm, at_beat=at_beat)
        self._tempo_map.discard_before(min(self._onset_beat, at_beat))

    def _apply_reseed(self, command: Reseed) -> None:
        self._improviser.reseed(command.seed)
        self._feel.humanize.reseed(command.seed)

    def _apply_clock_message(self, command: ClockMessage) -> None:
        follower = self._follower
        if follower is None:
            return
        if command.kind == "clock":
            update = follower.pulse(command.time)
        elif command.kind == "start":
            update = follower.start(command.time)
        elif command.kind == "continue":
            update = follower.continue_(command.time)
        elif command.kind == "stop":
            update = follower.stop(command.time)
        else:
            update = follower.song_position(command.position, command.time)
        self._follow(update)

    def _follow(self, update: ClockUpdate) -> None:
        """Move the transport as the external clock requests: start, continue, stop, relocate, or re-anchor tempo and phase."""
        action = update.action
        if action is FollowAction.NONE:
            return
        if action is FollowAction.STOP:
            if update.stalled:
                log.warning("the MIDI clock stopped for more than 2 beats: stopping and releasing the notes")
            self._apply_stop(Stop())
            return

        # The followed tempo and phase become the tempo map from this pulse (or Link poll) on.
        self._tempo_map = TempoMap(self._external_bpm() or self._tempo_map.bpm_at(update.beat), update.time, update.beat)
        if action in (FollowAction.START, FollowAction.CONTINUE, FollowAction.RELOCATE):
            if action is FollowAction.RELOCATE:
                self._release_own_notes()
            self._onset_beat = update.beat
            self._next_beat = next_grid_line(update.beat, HANDOVER_GRID_BEATS)
            if not self._running:
                self._running = True
                if self._origin is None:
                    self._origin = update.time
                if self._live is not None:
                    self._live.transport_running = True
                log.info("%s: playing from beat %.2f at %.1f BPM", "MIDI clock" if self._follower is not None else "Link",
                         update.beat, self._tempo_map.bpm_at(update.beat))
        if self._running:
            self._next_time = self._onset_time(self._next_beat)

    def _apply_sync(self, command: SetSync) -> None:
        """Switch the sync source; no note is left sounding and the tempo in effect carries on."""
        previous = self._sync
        if command.source == previous:
            if command.prepared is not None:
                command.prepared.close()
            return

        if self._clock_leader is not None:
            self._send_clock(self._clock_leader.stop())
            self._clock_leader = None
        self._follower = None
        if self._link is not None:
            self._link.close()
            self._link = None

        self._sync = command.source
        bpm = self._tempo_map.bpm_at(self._next_beat)
        if command.source == "master":
            self._clock_leader = ClockLeader()
            if self._running:
                self._send_clock(self._clock_leader.start(self._current_beat()))
        elif command.source == "midi-in":
            self._follower = ClockFollower(self._beats_per_bar, self._sync_autostart, fallback_bpm=bpm)
            # Without the clock's phase there is no position to play at: wait for its Start.
            self._apply_stop(Stop())
        elif command.source == "link":
            self._link = command.prepared
        log.info("sync source %s (was %s) at %.1f BPM", command.source, previous, bpm)

    def _apply_feel(self, command: SetFeel) -> None:
        self._feel.set_param(command.name, command.value)

    def _apply_prime(self, command: Prime) -> None:
        prime_phrase(self._improviser, phrase_tokens(command.phrase, self._steps_per_beat))

    def _apply_seed(self, command: ApplySeeder) -> None:
        command.prepared.seed(self._improviser)
        if getattr(command.prepared, "listens", False):
            self._start_live(command.prepared)
        elif self._live is not None:
            self._end_live(f"seeder {command.seeder!r} applied")

    def _apply_start(self, command: Start) -> None:
        if self._running:
            return
        if self._link is not None:
            # Play starts with the session's next START: on its next bar line.
            self._link.propose_transport(True)
            return
        # Latency compensation sends every event earlier, so the first onset lies that much further ahead.
        first_onset = self._clock.now() + START_MARGIN + self._feel.latency_ms / 1000.0
        self._tempo_map.restart(first_onset, self._next_beat)
        self._next_time = self._onset_time(self._next_beat)
        self._running = True
        if self._clock_leader is not None:
            self._send_clock(self._clock_leader.start(self._next_beat))
        if self._live is not None:
            self._live.transport_running = True
        if self._origin is None:
            self._origin = first_onset

    def _apply_stop(self, command: Stop) -> None:
        if self._link is not None:
            # With Link's start/stop sync this stops every peer; without, only sideman.
            self._link.propose_transport(False)
        if not self._running:
            return
        if not self._line_sounds():
            # A live mode listening: the transport's position is now, not the
            # line's last onset, and Start continues from there.
            self._next_beat = max(self._next_beat, self._tempo_map.beat_at(self._clock.now()))
        self._running = False
        self._next_time = None
        self._release_all()
        if self._clock_leader is not None:
            self._send_clock(self._clock_leader.stop())
        if self._live is not None:
            self._live.transport_running = False
            if self._live.mode != DUET and self._live.playing:
                self._live.answer_dropped()

    def _apply_panic(self, command: Panic) -> None:
        self._release_all()

    def _apply_reset(self, command: Reset) -> None:
        self._improviser.reset()

    def _apply_sampler(self, command: SetSampler) -> None:
        self._improviser.chain = build_chain(command.names, self._registry, self._param_values)

    def _apply_param(self, command: SetParam) -> None:
        # Replaced, never changed in place: `apply` reads it from other threads.
        values = {name: dict(plugin_values) for name, plugin_values in self._param_values.items()}
        values.setdefault(command.plugin, {})[command.name] = command.value
        self._param_values = values
        for member in self._improviser.chain.members():
            if member.name == command.plugin:
                member.set_param(command.name, command.value)
        if self._live is not None and command.plugin == self._live_seeder:
            self._change_live_param(command.name)

    # Live mode: a listening seeder's session, fed by LiveNote commands.

    def _start_live(self, seeder: Seeder) -> None:
        """Enter the live mode the listening seeder's values describe; the line sounds only in duet mode."""
        values = seeder.values
        # Every value of the seeder, not only those set so far, so that a later SetParam changes one of a full set.
        all_values = {name: dict(plugin_values) for name, plugin_values in self._param_values.items()}
        all_values[seeder.name] = dict(values)
        self._param_values = all_values
        self._live_seeder = seeder.name

        options = LiveOptions.from_values(values)
        was_sounding = self._line_sounds()
        self._live = LiveSession(options, self._improviser.bundle.encoding, self._beats_per_bar)
        self._live.transport_running = self._running
        self._live_thru = bool(values.get("thru", False))
        self._duet_anchor = None
        log.info(
            "live mode %s: listening on %s, quantized to %s%s",
            options.mode, f"MIDI channel {options.channel}" if options.channel else "every MIDI channel", options.quantize,
            ", MIDI thru on" if self._live_thru else "",
        )
        self._follow_sounding_change(was_sounding)

    def _end_live(self, reason: str) -> None:
        was_sounding = self._line_sounds()
        self._live = None
        self._live_thru = False
        self._duet_anchor = None
        log.info("live mode off (%s): sideman plays its own line", reason)
        self._follow_sounding_change(was_sounding)

    def _change_live_param(self, name: str) -> None:
        """Apply a changed `live` parameter: a new mode starts a new session, the others apply at once."""
        values = self._param_values[self._live_seeder]
        if name == "mode":
            self._start_live(self._seeders[self._live_seeder](**values))
            return
        self._live.set_options(LiveOptions.from_values(values))
        self._live_thru = bool(values.get("thru", False))

    def _follow_sounding_change(self, was_sounding: bool) -> None:
        """Release the line's notes when it fell silent; schedule its next onset when it starts sounding."""
        sounding = self._line_sounds()
        if was_sounding and not sounding:
            self._release_own_notes()
        elif sounding and not was_sounding:
            self._schedule_line(next_grid_line(self._tempo_map.beat_at(self._clock.now() + START_MARGIN), HANDOVER_GRID_BEATS))

    def _schedule_line(self, beat: float) -> None:
        """Let the line's next onset (the look-ahead note) sound at `beat`."""
        self._next_beat = beat
        self._next_time = self._onset_time(beat)

    def _live_due_time(self) -> float | None:
        if self._live is None:
            return None
        due_beat = self._live.due_beat()
        return None if due_beat is None else self._tempo_map.time_at(due_beat)

    def _apply_live_note(self, command: LiveNote) -> None:
        live = self._live
        if live is None or not live.accepts_channel(command.channel):
            self._live_notes_ignored += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s ignored: %s", describe_command(command), "no live mode" if live is None else "another channel")
            return
        beat = self._tempo_map.beat_at(command.time)
        if command.velocity > 0:
            self._apply_live_update(live.note_on(command.pitch, beat))
        else:
            self._apply_live_update(live.note_off(command.pitch, beat))

    def _apply_respond(self, command: Respond) -> None:
        if self._live is not None:
            self._apply_live_update(self._live.respond(self._tempo_map.beat_at(self._clock.now() + START_MARGIN)))

    def _apply_live_update(self, update: LiveUpdate) -> None:
        if update.interrupt:
            self._release_own_notes()
        if update.tokens:
            self._feed_live(update.tokens)
        if update.phrase_ended:
            self._duet_anchor = None
        if update.answer_at is not None:
            self._schedule_line(update.answer_at)

    def _feed_live(self, tokens: list[Token]) -> None:
        """Feed the musician's tokens into the state; the look-ahead is drawn again from the new state.

        In duet mode the live tokens replace sideman's own: the state goes back
        to where the previous live token left it (the random generator does
        not), so sideman's notes since then no longer count.
        """
        if self._live.mode == DUET:
            anchor = self._duet_anchor or self._checkpoint
            self._improviser.rollback(anchor, restore_random=False)
            self._rolled_back = True
        else:
            self._rollback_once()

        self._improviser.prime(tokens)
        self._improviser.context.seed_tokens = tuple(self._improviser.vocabulary.indices(self._live.phrase_tokens))
        if self._live.mode == DUET:
            self._duet_anchor = self._improviser.checkpoint()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("fed %d live tokens: %s", len(tokens), " ".join(f"{pitch_name(token.pitch)}:{token.steps}" for token in tokens))

    _appliers: dict[type, Callable[["Engine", Any], None]] = {
        SetTempo: _apply_tempo,
        Reseed: _apply_reseed,
        Prime: _apply_prime,
        Start: _apply_start,
        Stop: _apply_stop,
        Panic: _apply_panic,
        Reset: _apply_reset,
        SetSampler: _apply_sampler,
        SetParam: _apply_param,
        ApplySeeder: _apply_seed,
        LiveNote: _apply_live_note,
        SetFeel: _apply_feel,
        ClockMessage: _apply_clock_message,
        Respond: _apply_respond,
        SetSync: _apply_sync,
    }

    def _validate(self, command: Command, pending: dict[str, dict[str, Any]]) -> Command:
        """Return the command with its values converted, or raise InvalidInputError saying why it is invalid.

        `pending` contains the parameter values as they will be when the
        command applies. A SetParam updates it for the commands after it.
        """
        if isinstance(command, SetTempo):
            if self._follower is not None:
                raise InvalidInputError("the tempo follows the MIDI clock (sync midi-in): set it in the DAW, or switch with /sideman/sync internal")
            return SetTempo(validate_tempo(command.bpm))
        if isinstance(command, SetSync):
            return self._validate_sync(command)
        if isinstance(command, Reseed):
            return Reseed(validate_seed(command.seed))
        if isinstance(command, Prime):
            return Prime(validate_phrase(command.phrase))
        if isinstance(command, SetSampler):
            # A chain written as one string, "top_p temperature", is split at spaces.
            names = tuple(command.names.split()) if isinstance(command.names, str) else tuple(command.names)
            build_chain(names, self._registry)
            for name in names:
                self._check_enabled(name, "sampler")
            return SetSampler(names)
        if isinstance(command, SetParam):
            converted = replace(command, value=self._convert_param(command))
            pending.setdefault(command.plugin, {})[command.name] = converted.value
            return converted
        if isinstance(command, ApplySeeder):
            return ApplySeeder(command.seeder, self._prepare_seeder(command.seeder, pending))
        if isinstance(command, LiveNote):
            return validate_live_note(command)
        if isinstance(command, ClockMessage):
            return command
        if isinstance(command, SetFeel):
            return SetFeel(command.name, convert_feel_param(command.name, command.value))
        if isinstance(command, Respond):
            if self._live is None:
                raise InvalidInputError("respond needs a live mode: apply the live seeder first (/sideman/seeder live)")
            return command
        if isinstance(command, (Start, Stop, Panic, Reset)):
            return command
        raise InvalidInputError(f"unknown engine command {command!r}")

    def _validate_sync(self, command: SetSync) -> SetSync:
        """Check the source; for link, join the session here, in the caller's thread."""
        source = command.source.lower() if isinstance(command.source, str) else command.source
        if source not in SYNC_SOURCES:
            raise InvalidInputError(f"invalid sync source {command.source!r}: expected one of {', '.join(SYNC_SOURCES)}")
        if source == "midi-in" and not self._clock_input:
            raise InvalidInputError("sync midi-in needs a MIDI input, and this daemon runs without one (--no-midi-in)")
        if source != "link" or self._sync == "link":
            return SetSync(source)
        if self._link_factory is None:
            raise InvalidInputError("sync link needs the aalink package: pip install 'sideman[link]'")
        return SetSync(source, self._link_factory(self._tempo_map.bpm_at(self._next_beat), self._beats_per_bar))

    def _convert_param(self, command: SetParam) -> Any:
        plugin = self._registry.get(command.plugin) or self._seeders.get(command.plugin)
        if plugin is None:
            raise SettingsError(
                f"unknown sampler or seeder {command.plugin!r}; samplers: {', '.join(sorted(self._registry))}; "
                f"seeders: {', '.join(sorted(self._seeders)) or 'none'}"
            )
        return find_param(plugin, command.name).convert(command.value, command.plugin)

    def _check_enabled(self, name: str, kind: str) -> None:
        try:
            self._failures.check_enabled(name, kind)
        except ValueError as error:
            raise InvalidInputError(str(error)) from None

    def _prepare_seeder(self, name: str, pending: dict[str, dict[str, Any]]) -> Seeder:
        """Build and prepare a seeder in the caller's thread; raise InvalidInputError when its input is invalid.

        A seeder that raises anything else has a bug: the failure is counted
        (see PluginFailures) and the request rejected.
        """
        self._check_enabled(name, "seeder")
        seeder = build_seeder(name, self._seeders, pending)
        try:
            seeder.prepare(self._improviser)
        except InvalidInputError:
            raise
        except Exception as error:
            self._failures.record(name, error, "seeder", "its request is rejected")
            raise InvalidInputError(f"seeder {name!r} failed: {error}") from error
        if isinstance(seeder, PhraseSeeder) and seeder.prepared_length > MAX_PRIME_TOKENS:
            raise InvalidInputError(
                f"seeder {name!r} would prime {seeder.prepared_length} notes and rests between two notes, "
                f"at most {MAX_PRIME_TOKENS}: choose fewer bars"
            )
        return seeder


def _failing_sampler(error: BaseException) -> str | None:
    """Return the name of the innermost sampler in the traceback of `error`, if any."""
    name = None
    for frame, _ in traceback.walk_tb(error.__traceback__):
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Sampler):
            name = candidate.name
    return name
