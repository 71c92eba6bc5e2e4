"""`python -m bench.soak [--minutes 30] [--out docs/soak.md]`: play for a long time under steady change and check what wears.

The daemon plays at 208 BPM on a private JACK server (dummy driver, 48 kHz,
64 frames) into a receiver in this process, while:

- an OSC client on 127.0.0.1 sends one random change every 100 ms: tempo
  200-240 BPM, temperature, top_k and top_p parameters, sampler chains,
  swing, humanize, seed, and a phrase seeder with a random phrase;
- a JACK MIDI sender connected to sideman-in:in plays a short phrase every
  few bars; during the middle third of the run the `live` seeder listens in
  call-and-response mode and answers those phrases, the rest of the time the
  daemon ignores them and plays its own line;
- every 5 minutes the receiver closes its whole JACK client and opens it
  again under the same name about 2 s later. The daemon was started with
  `--midi-out` naming that port, and the report shows whether notes arrive
  after the port returns.

The report gives the notes played and received, the note_on/note_off
balance per pitch at the receiver, VmRSS over the run, the daemon's
warnings grouped by kind, the onset error, late onsets and the reconnections
the daemon logged. It is not part of CI: a full run takes its 30 minutes.
"""

import argparse
import bisect
import logging
import os
import random
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import mido
import numpy as np
import rtmidi
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from bench.live import SIDEMAN, ShownNote, free_udp_port, osc_datagram, parse_show_output, private_jack_server
from bench.machine import Machine, describe_machine, load_average
from bench.onsets import onset_errors
from bench.report import Row, hide_folder_argument, format_table, latency_row, write_quantiles_csv, write_rows_csv
from sideman.midiport import JACK_SETTLE_TIME
from sideman.notenames import pitch_name
from tests.jack import RECEIVER_POLL_INTERVAL, RECEIVER_QUEUE_SIZE, connect_ports

log = logging.getLogger(__name__)

START_TEMPO = 208.0  # BPM
TEMPO_RANGE = (200.0, 240.0)  # BPM of the random tempo changes
CHANGE_INTERVAL = 0.1  # seconds between two random OSC changes
DISCONNECT_MINUTES = 5.0  # minutes between two closings of the receiver's port
PORT_AWAY_SECONDS = 2.0  # how long the receiver's port stays closed
RSS_WARMUP_SECONDS = 30.0  # the start value of VmRSS is read this long after the first note
RSS_TOLERANCE = 0.10  # VmRSS after the warm-up counts as flat while it stays within 10% of its start value
RSS_INTERVAL = 1.0  # seconds between two VmRSS readings
STATUS_INTERVAL = 10.0  # seconds between two /sideman/status requests
STATUS_TIMEOUT = 5.0  # seconds to wait for a status reply
DAEMON_INPUT = "sideman-in:in"
FIRST_NOTE_TIMEOUT = 30.0  # seconds from start-up to the first note
SENDER_TIMEOUT = 10.0  # seconds for the daemon's MIDI input to hear the sender
PHRASE_GAP_BARS = 4  # bars of silence after each live phrase: a bar that ends it, an answer of up to 2 bars and a margin
BEATS_PER_BAR = 4  # the daemon's default meter, 4/4
ONSET_ALIGN_WINDOW = 0.05  # seconds: a received note is looked for among shown notes this close to it
ONSET_ALIGN_PROBE = 16  # notes compared by pitch to confirm where a segment of received notes starts
CSV_RSS_INTERVAL = 5.0  # seconds between two VmRSS rows of the CSV file, to keep it small


# --- Note balance at the receiver ------------------------------------------


@dataclass(frozen=True)
class PitchBalance:
    """The note messages of one pitch on one channel (0-15) that reached the receiver."""

    channel: int
    pitch: int
    note_ons: int
    note_offs: int
    unmatched_note_ons: int  # note_ons still without a note_off at the end
    stray_note_offs: int  # note_offs that arrived while no note_on of the pitch was open
    open_at_disconnect: int  # note_ons open when the receiver's port closed, summed over the closings

    @property
    def exact(self) -> bool:
        return self.unmatched_note_ons == 0 and self.stray_note_offs == 0


class NoteBalance:
    """Count note_on and note_off messages per (channel, pitch) as they arrive, across port closings.

    Only messages that arrived count. A note_on open when the port closes is
    counted as open at a closing and then closed: a synth that goes away
    sounds nothing, and sideman sends no note_off for it after the port
    returns, so such a note_off would count as stray. A note_on with
    velocity 0 counts as a note_off, as MIDI defines it.
    All Notes Off (CC 123) is counted on its own and closes nothing, so the
    balance shows whether every note_on got its own note_off.
    """

    def __init__(self) -> None:
        self._note_ons: Counter[tuple[int, int]] = Counter()
        self._note_offs: Counter[tuple[int, int]] = Counter()
        self._open: Counter[tuple[int, int]] = Counter()
        self._stray: Counter[tuple[int, int]] = Counter()
        self._open_at_disconnect: Counter[tuple[int, int]] = Counter()
        self.all_notes_off = 0

    def add(self, message: mido.Message) -> None:
        if message.type == "control_change" and message.control == 123:
            self.all_notes_off += 1
            return
        if message.type not in ("note_on", "note_off"):
            return

        key = (message.channel, message.note)
        if message.type == "note_on" and message.velocity > 0:
            self._note_ons[key] += 1
            self._open[key] += 1
        else:
            self._note_offs[key] += 1
            if self._open[key] > 0:
                self._open[key] -= 1
            else:
                self._stray[key] += 1

    def port_closed(self) -> None:
        """Note which note_ons were open when the receiver's port closed, and close them: the receiver sounds nothing any more."""
        for key, count in self._open.items():
            if count > 0:
                self._open_at_disconnect[key] += count
        self._open.clear()

    def rows(self) -> list[PitchBalance]:
        """Return one row per (channel, pitch) that received any note message, in order."""
        keys = sorted(set(self._note_ons) | set(self._note_offs))
        return [
            PitchBalance(
                channel=channel,
                pitch=pitch,
                note_ons=self._note_ons[(channel, pitch)],
                note_offs=self._note_offs[(channel, pitch)],
                unmatched_note_ons=self._open[(channel, pitch)],
                stray_note_offs=self._stray[(channel, pitch)],
                open_at_disconnect=self._open_at_disconnect[(channel, pitch)],
            )
            for channel, pitch in keys
        ]

    @property
    def exact(self) -> bool:
        return all(row.exact for row in self.rows())


# --- Daemon log: warnings by kind and reconnections ------------------------

# One line of sideman's log format, "%(asctime)s %(levelname)s %(name)s: %(message)s".
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<message>.*)$")
# Socket addresses and hexadecimal addresses: IPv6 in brackets, IPv4 with an optional port, 0x...
_ADDRESS = re.compile(r"\[[0-9A-Fa-f:.]+\](?::\d+)?|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b|\b0x[0-9A-Fa-f]+\b")
# A sign counts only where no word ends before it, so "sideman-01" keeps its hyphen.
_NUMBER = re.compile(r"(?:(?<!\w)[-+])?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_SPACES = re.compile(r"\s+")
# Lines about an output connection lost and restored, in the wording of sideman.portkeeper or any other.
CONNECTION_EVENT = re.compile(r"reconnect|connect\w* again|connection .*\b(?:lost|restored)\b|runs again", re.IGNORECASE)
# Lines that report a connection made again: one per reconnection.
RECONNECTED = re.compile(r"\b(?:restored|reconnected)\b", re.IGNORECASE)
ENGINE_STOPPED = re.compile(r"engine stopped after (\d+) notes")
WARNING_LEVELS = ("WARNING", "ERROR", "CRITICAL")


def normalise_message(message: str) -> str:
    """Return a log message with its addresses replaced by <address> and its numbers by <n>, so repeats group together."""
    text = _ADDRESS.sub("<address>", message)
    text = _NUMBER.sub("<n>", text)
    return _SPACES.sub(" ", text).strip()


@dataclass
class LogGroup:
    """Log lines of one level and logger whose normalised messages are the same."""

    level: str
    logger: str
    kind: str  # the normalised message
    count: int
    example: str  # the first message of the group, as logged


def group_log_lines(text: str, levels: tuple[str, ...] = WARNING_LEVELS, pattern: re.Pattern | None = None) -> list[LogGroup]:
    """Group the log lines of `levels` (and matching `pattern`, when given) by level, logger and normalised message.

    Lines outside the log format (a traceback's lines, libjack's own output)
    are not counted. The groups come most frequent first.
    """
    groups: dict[tuple[str, str, str], LogGroup] = {}
    for line in text.splitlines():
        match = LOG_LINE.match(line)
        if match is None or match["level"] not in levels:
            continue
        if pattern is not None and not pattern.search(match["message"]):
            continue
        key = (match["level"], match["logger"], normalise_message(match["message"]))
        group = groups.get(key)
        if group is None:
            groups[key] = LogGroup(*key, count=1, example=match["message"])
        else:
            group.count += 1
    return sorted(groups.values(), key=lambda group: (-group.count, group.level, group.logger, group.kind))


def connection_lines(text: str) -> list[LogGroup]:
    """Group the daemon's log lines, at any level, about connections lost and made again."""
    return group_log_lines(text, levels=("DEBUG", "INFO", *WARNING_LEVELS), pattern=CONNECTION_EVENT)


def count_reconnections(text: str) -> int:
    """Count the daemon's log lines that report a connection restored or reconnected."""
    return sum(group.count for group in connection_lines(text) if RECONNECTED.search(group.kind))


# --- Memory -----------------------------------------------------------------


@dataclass(frozen=True)
class RssVerdict:
    """VmRSS of the daemon after its warm-up, in kB, and whether it stayed flat."""

    start_kb: int
    end_kb: int
    max_kb: int
    min_kb: int
    tolerance: float  # a share of start_kb

    @property
    def flat(self) -> bool:
        """True when every reading after the warm-up lies within `tolerance` of the start value."""
        low = self.start_kb * (1.0 - self.tolerance)
        high = self.start_kb * (1.0 + self.tolerance)
        return low <= self.min_kb and self.max_kb <= high

    @property
    def end_change(self) -> float:
        """Change from the start value to the end value, as a share of the start value."""
        return (self.end_kb - self.start_kb) / self.start_kb


def rss_verdict(readings: list[tuple[float, int]], warmup: float, tolerance: float = RSS_TOLERANCE) -> RssVerdict:
    """Judge (seconds, VmRSS kB) readings: the first one at or after `warmup` seconds is the start value.

    Raises ValueError when no reading lies after the warm-up.
    """
    after_warmup = [kb for seconds, kb in readings if seconds >= warmup]
    if not after_warmup:
        last = readings[-1][0] if readings else None
        raise ValueError(f"no VmRSS reading after the warm-up of {warmup:g} s (last reading at {last} s): run longer")
    return RssVerdict(after_warmup[0], after_warmup[-1], max(after_warmup), min(after_warmup), tolerance)


def read_vm_rss_kb(pid: int) -> int | None:
    """Return VmRSS of process `pid` in kB from /proc, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# --- Random OSC changes -------------------------------------------------------

SAMPLER_CHAINS = (
    "temperature",
    "top_k temperature",
    "top_p temperature",
    "top_k top_p temperature",
    "repetition top_p temperature",
    "range temperature",
    "scale top_p temperature",
)
PHRASE_PITCHES = ("C4", "D4", "E4", "F4", "G4", "A4", "Bb4", "C5", "D5")
PHRASE_BEATS = ("0.25", "0.5", "1", "1/3")
def bundle_datagram(*messages: tuple[object, ...]) -> bytes:
    """Build an OSC bundle tagged "immediately" of (address, argument, ...) tuples: its messages apply together."""
    builder = OscBundleBuilder(IMMEDIATELY)
    for address, *arguments in messages:
        message = OscMessageBuilder(address)
        for argument in arguments:
            message.add_arg(argument)
        builder.add_content(message.build())
    return builder.build().dgram


@dataclass(frozen=True)
class Change:
    kind: str
    text: str  # what the change sets, for logs
    datagram: bytes
    tempo: float | None = None  # BPM, for a tempo change


def tempo_change(rng: random.Random) -> Change:
    bpm = round(rng.uniform(*TEMPO_RANGE), 2)
    return Change("tempo", f"tempo {bpm} BPM", osc_datagram("/sideman/tempo", float(bpm)), tempo=bpm)


def temperature_change(rng: random.Random) -> Change:
    value = round(rng.uniform(0.6, 1.4), 3)
    return Change("temperature", f"temperature.value {value}", osc_datagram("/sideman/param", "temperature", "value", float(value)))


def top_k_change(rng: random.Random) -> Change:
    k = rng.randint(3, 40)
    return Change("top_k", f"top_k.k {k}", osc_datagram("/sideman/param", "top_k", "k", k))


def top_p_change(rng: random.Random) -> Change:
    p = round(rng.uniform(0.5, 0.98), 3)
    return Change("top_p", f"top_p.p {p}", osc_datagram("/sideman/param", "top_p", "p", float(p)))


def sampler_change(rng: random.Random) -> Change:
    chain = rng.choice(SAMPLER_CHAINS)
    return Change("sampler", f"sampler {chain!r}", osc_datagram("/sideman/sampler", chain))


def swing_change(rng: random.Random) -> Change:
    percent = round(rng.uniform(0.0, 60.0), 1)
    return Change("swing", f"swing {percent}%", osc_datagram("/sideman/swing", float(percent)))


def swing_unit_change(rng: random.Random) -> Change:
    unit = rng.choice(("1/8", "1/16"))
    return Change("swing unit", f"swing_unit {unit}", osc_datagram("/sideman/feel", "swing_unit", unit))


def humanize_change(rng: random.Random) -> Change:
    # At most 5 ms, so that two onsets 1/12 beat apart (21 ms at 240 BPM) keep their order.
    ms = round(rng.uniform(0.0, 5.0), 2)
    return Change("humanize", f"humanize_ms {ms}", osc_datagram("/sideman/feel", "humanize_ms", float(ms)))


def humanize_velocity_change(rng: random.Random) -> Change:
    steps = rng.randint(0, 20)
    return Change("humanize velocity", f"humanize_velocity {steps}", osc_datagram("/sideman/feel", "humanize_velocity", steps))


def seed_change(rng: random.Random) -> Change:
    seed = rng.randrange(2**31)
    return Change("seed", f"seed {seed}", osc_datagram("/sideman/seed", seed))


def phrase_seeder_change(rng: random.Random) -> Change:
    """Prime a random phrase with the phrase seeder: its notes and the seeder request in one bundle."""
    phrase = " ".join(f"{rng.choice(PHRASE_PITCHES)}:{rng.choice(PHRASE_BEATS)}" for _ in range(rng.randint(2, 6)))
    datagram = bundle_datagram(("/sideman/param", "phrase", "notes", phrase), ("/sideman/seeder", "phrase"))
    return Change("phrase seeder", f"phrase seeder {phrase!r}", datagram)


CHANGE_MAKERS: dict[str, Callable[[random.Random], Change]] = {
    "tempo": tempo_change,
    "temperature": temperature_change,
    "top_k": top_k_change,
    "top_p": top_p_change,
    "sampler": sampler_change,
    "swing": swing_change,
    "swing unit": swing_unit_change,
    "humanize": humanize_change,
    "humanize velocity": humanize_velocity_change,
    "seed": seed_change,
    "phrase seeder": phrase_seeder_change,
}
CHANGE_KINDS = tuple(CHANGE_MAKERS)
# The phrase seeder ends a live mode, so it is left out while the live seeder listens.
LIVE_CHANGE_KINDS = tuple(kind for kind in CHANGE_KINDS if kind != "phrase seeder")


def random_change(rng: random.Random, live: bool) -> Change:
    """Draw one valid change of a random kind; every value lies inside the range the daemon accepts."""
    kind = rng.choice(LIVE_CHANGE_KINDS if live else CHANGE_KINDS)
    return CHANGE_MAKERS[kind](rng)


def live_mode_datagram(on: bool) -> bytes:
    """Build the bundle that applies the `live` seeder in call-and-response mode, or the `zero` seeder that ends it."""
    if on:
        return bundle_datagram(("/sideman/param", "live", "mode", "call-and-response"), ("/sideman/seeder", "live"))
    return bundle_datagram(("/sideman/seeder", "zero"))


class OscChanger:
    """A thread that sends one random change every CHANGE_INTERVAL seconds to 127.0.0.1:`port`, at absolute deadlines.

    A request to switch the live mode on or off takes the place of the next
    change, so no phrase seeder can be sent after the live seeder.
    """

    def __init__(self, port: int, seed: int, tempo: float) -> None:
        self.port = port
        self.rng = random.Random(seed)
        self.tempo = tempo  # BPM of the latest tempo change sent
        self.sent: Counter[str] = Counter()
        self.history: list[tuple[float, str]] = []  # (time.perf_counter() when sent, kind) of every change
        self.live = False
        self._live_request: bool | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, name="soak-osc", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request_live(self, on: bool) -> None:
        with self._lock:
            self._live_request = on

    def _send(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind(("127.0.0.1", 0))
            deadline = time.perf_counter()
            while not self._stop.is_set():
                kind, datagram = self._next_change()
                sender.sendto(datagram, ("127.0.0.1", self.port))
                self.history.append((time.perf_counter(), kind))
                deadline += CHANGE_INTERVAL
                pause = deadline - time.perf_counter()
                if pause > 0:
                    self._stop.wait(pause)

    def _next_change(self) -> tuple[str, bytes]:
        """Return the kind and datagram of the next change: a pending live mode request, else a random change."""
        with self._lock:
            request, self._live_request = self._live_request, None
        if request is not None:
            self.live = request
            kind = "live mode on" if request else "live mode off"
            self.sent[kind] += 1
            log.info("live mode %s", "on: the live seeder in call-and-response mode" if request else "off: the zero seeder")
            return kind, live_mode_datagram(request)

        change = random_change(self.rng, self.live)
        self.sent[change.kind] += 1
        if change.tempo is not None:
            self.tempo = change.tempo
        log.debug("OSC change: %s", change.text)
        return change.kind, change.datagram

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(5)


# --- JACK MIDI: the receiver that closes and returns, and the live phrases ------


@dataclass(frozen=True)
class ReceivedMessage:
    segment: int  # counts the receiver's openings from 0
    message: mido.Message  # `time` is the JACK-stamped arrival in seconds, on this opening's own time origin
    wall: float  # time.perf_counter() when the reader thread took the message


class ReopeningReceiver:
    """A JACK MIDI input under a fixed client name that can close its whole client and open it again.

    Arrival times follow tests.jack.Receiver: perf_counter at an opening's
    first message plus python-rtmidi's delta times, which RtMidi takes in
    JACK's process cycle. Each opening starts a new segment with its own
    origin. As there, a reader thread takes the messages from RtMidi's
    queue, so that no Python code runs in JACK's process thread.
    """

    def __init__(self, client_name: str) -> None:
        self.client_name = client_name
        self.port_name = f"{client_name}:in"
        self.segment = -1
        self.opened_at: list[float] = []  # time.perf_counter() of each opening
        self.closed_at: list[float] = []
        self._received: list[ReceivedMessage] = []
        self._clock: float | None = None
        self._lock = threading.Lock()
        self._port: rtmidi.MidiIn | None = None
        self._reader: threading.Thread | None = None
        self._stop_reading = threading.Event()
        self.open()

    def open(self) -> None:
        """Open the client and its port `in`; raise RuntimeError when JACK gives the port another name."""
        with self._lock:
            self.segment += 1
            self._clock = None
        port = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=self.client_name, queue_size_limit=RECEIVER_QUEUE_SIZE)
        port.ignore_types(sysex=False, timing=False, active_sense=True)
        port.open_virtual_port("in")
        self._port = port
        self._stop_reading.clear()
        self._reader = threading.Thread(target=self._read, args=(port, self.segment), name=f"{self.client_name} reader", daemon=True)
        self._reader.start()
        wait_for_port_state(self.port_name, present=True)
        self.opened_at.append(time.perf_counter())
        log.info("receiver %s opened (opening %d)", self.port_name, self.segment + 1)

    def _read(self, port: rtmidi.MidiIn, segment: int) -> None:
        while not self._stop_reading.is_set():
            event = port.get_message()
            if event is None:
                time.sleep(RECEIVER_POLL_INTERVAL)
            else:
                self._record(event, segment)

        # What arrived before close() is recorded too, up to one queue's worth.
        for _ in range(RECEIVER_QUEUE_SIZE):
            event = port.get_message()
            if event is None:
                break
            self._record(event, segment)

    def _record(self, event: tuple[list[int], float], segment: int) -> None:
        wall = time.perf_counter()
        data, delta = event
        with self._lock:
            self._clock = wall if self._clock is None else self._clock + delta
            self._received.append(ReceivedMessage(segment, mido.Message.from_bytes(data, time=self._clock), wall))

    def close(self, timeout: float = 10.0) -> None:
        """Close the port and the client, and wait until the port has left the JACK server."""
        if self._port is None:
            return
        port, self._port = self._port, None
        self._stop_reading.set()
        if self._reader is not None:
            self._reader.join()
        time.sleep(JACK_SETTLE_TIME)
        port.close_port()
        port.delete()
        self.closed_at.append(time.perf_counter())
        wait_for_port_state(self.port_name, present=False, timeout=timeout)
        log.info("receiver %s closed", self.port_name)

    def received(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._received)

    def note_on_count(self) -> int:
        return sum(1 for item in self.received() if item.message.type == "note_on" and item.message.velocity > 0)


def wait_for_port_state(port_name: str, present: bool, timeout: float = 10.0) -> None:
    """Wait until the JACK port with the full name `port_name` is there (or gone); raise RuntimeError after `timeout` s.

    jack_lsp is itself a JACK client. It fails now and then while the server
    (started with --sync) waits for a slow client, so a failed call is retried.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(["jack_lsp"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode == 0 and (port_name in result.stdout.splitlines()) == present:
            return
        if result.returncode != 0:
            log.debug("jack_lsp failed with code %d: %s", result.returncode, result.stderr.strip())
        if time.monotonic() > deadline:
            state = "appear" if present else "leave the server"
            raise RuntimeError(f"the JACK port {port_name} did not {state} within {timeout:g} s; jack_lsp printed:\n{result.stdout}{result.stderr}")
        time.sleep(0.05)


def random_phrase(rng: random.Random) -> list[tuple[int, float]]:
    """Return a phrase of one 4/4 bar as (MIDI pitch, beats) pairs: eighths and quarters in C major around C4."""
    pitches = (60, 62, 64, 65, 67, 69, 71, 72)
    notes = []
    beats = 0.0
    while beats < BEATS_PER_BAR:
        length = min(rng.choice((0.5, 0.5, 1.0)), BEATS_PER_BAR - beats)
        notes.append((rng.choice(pitches), length))
        beats += length
    return notes


class PhraseSender:
    """A JACK MIDI output that plays phrases into the daemon's MIDI input, as a musician's keyboard."""

    def __init__(self, client_name: str) -> None:
        self.port_name = f"{client_name}:out"
        self._port: rtmidi.MidiOut | None = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=client_name)
        self._port.open_virtual_port("out")

    def send(self, message: mido.Message) -> None:
        if self._port is not None:
            self._port.send_message(message.bytes())

    def play(self, notes: list[tuple[int, float]], seconds_per_beat: float, gate: float = 0.9) -> None:
        """Play (pitch, beats) pairs one after the other on channel 1, at absolute deadlines."""
        start = time.perf_counter()
        beat = 0.0
        for pitch, beats in notes:
            sleep_until(start + beat * seconds_per_beat)
            self.send(mido.Message("note_on", channel=0, note=pitch, velocity=100))
            sleep_until(start + (beat + gate * beats) * seconds_per_beat)
            self.send(mido.Message("note_off", channel=0, note=pitch, velocity=0))
            beat += beats

    def close(self) -> None:
        if self._port is None:
            return
        port, self._port = self._port, None
        time.sleep(JACK_SETTLE_TIME)
        port.close_port()
        port.delete()


def sleep_until(deadline: float) -> None:
    remaining = deadline - time.perf_counter()
    if remaining > 0:
        time.sleep(remaining)


class PhrasePlayer:
    """A thread that plays a one-bar phrase into the daemon's MIDI input, then waits PHRASE_GAP_BARS bars, again and again.

    The beat length follows the latest tempo the OSC changer sent.
    """

    def __init__(self, sender: PhraseSender, changer: OscChanger, seed: int) -> None:
        self.sender = sender
        self.changer = changer
        self.rng = random.Random(seed)
        self.phrases = 0
        self.notes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="soak-phrases", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _play(self) -> None:
        while not self._stop.is_set():
            phrase = random_phrase(self.rng)
            self.sender.play(phrase, 60.0 / self.changer.tempo)
            self.phrases += 1
            self.notes += len(phrase)
            self._stop.wait(PHRASE_GAP_BARS * BEATS_PER_BAR * 60.0 / self.changer.tempo)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(10)


class RssSampler:
    """A thread that reads the daemon's VmRSS every RSS_INTERVAL seconds: (seconds since `origin`, kB)."""

    def __init__(self, pid: int, origin: float) -> None:
        self.pid = pid
        self.origin = origin
        self.readings: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="soak-rss", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            kb = read_vm_rss_kb(self.pid)
            if kb is None:
                log.warning("VmRSS of process %d is unreadable: the daemon has ended", self.pid)
                return
            self.readings.append((time.perf_counter() - self.origin, kb))
            self._stop.wait(RSS_INTERVAL)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(5)


# --- The daemon -------------------------------------------------------------


class SoakDaemon:
    """`sideman run --show` playing into the receiver, on the private JACK server, with its log in `workdir`."""

    def __init__(self, workdir: Path, receiver_port: str, model: str | None) -> None:
        self.osc_port = free_udp_port()
        self.out_path = workdir / "soak.out"
        self.log_path = workdir / "soak.log"
        self.command = [
            *SIDEMAN, "run", "--midi-backend", "jack", "--midi-out", receiver_port, "--osc-port", str(self.osc_port),
            "--tempo", f"{START_TEMPO:g}", "--log-level", "info", "--show",
        ]
        if model:
            self.command += ["--model", model]
        log.info("starting %s", shlex.join(self.command[1:]))
        with open(self.out_path, "wb") as out, open(self.log_path, "wb") as errors:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=errors)

    def status(self) -> dict[str, object]:
        """Send /sideman/status from a socket of its own and return the reply's key/value pairs."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind(("127.0.0.1", 0))
            client.settimeout(STATUS_TIMEOUT)
            client.sendto(osc_datagram("/sideman/status"), ("127.0.0.1", self.osc_port))
            data, _ = client.recvfrom(65536)
        values = list(OscMessage(data).params)
        return dict(zip(values[0::2], values[1::2]))

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """End the daemon with SIGTERM (it releases its notes), then SIGKILL; return its exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("the daemon ignored SIGTERM for %g s: killing it", timeout)
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def shown_notes(self) -> list[ShownNote]:
        return parse_show_output(self.out_path.read_text(errors="replace"))


def connect_sender(sender: "PhraseSender", daemon: SoakDaemon, timeout: float = SENDER_TIMEOUT) -> None:
    """Connect the sender to sideman-in:in and wait until the daemon counts an ignored live note from it.

    Outside a live mode the daemon ignores live notes and counts them in its
    status (live_notes_ignored), which shows that the connection works. A
    connection made while the input client was starting up is made again.
    """
    destination = DAEMON_INPUT
    wait_for_port_state(destination, present=True, timeout=timeout)
    connect_ports(sender.port_name, destination)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sender.send(mido.Message("note_on", channel=0, note=0, velocity=1))
        sender.send(mido.Message("note_off", channel=0, note=0, velocity=0))
        time.sleep(0.2)
        if int(daemon.status().get("live_notes_ignored", 0)) > 0:
            log.info("sender %s connected to %s", sender.port_name, destination)
            return
        subprocess.run(["jack_disconnect", sender.port_name, destination], capture_output=True, stdin=subprocess.DEVNULL)
        connect_ports(sender.port_name, destination)
    raise RuntimeError(f"the daemon never heard {sender.port_name} on {destination} within {timeout:g} s; log {daemon.log_path}")


# --- The run ------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """When things happen, in seconds since the first note."""

    seconds: float
    live_start: float
    live_end: float
    disconnects: tuple[float, ...]

    @classmethod
    def for_minutes(cls, minutes: float, disconnect_minutes: float) -> "Schedule":
        seconds = minutes * 60.0
        interval = disconnect_minutes * 60.0
        # A closing must leave time for the port to return and for notes to arrive afterwards.
        disconnects = tuple(float(at) for at in np.arange(interval, seconds - PORT_AWAY_SECONDS - 10.0, interval))
        return cls(seconds, seconds / 3, 2 * seconds / 3, disconnects)


@dataclass
class Disconnect:
    """One closing of the receiver's port, with the daemon's note count around it."""

    closed_at: float  # seconds since the first note
    reopened_at: float
    notes_before: int | None  # the daemon's notes played just before the port closed; None when the status request timed out
    notes_after: int | None  # and just after it was open again
    first_note_after: float | None = None  # seconds from the reopening to the first note_on received; None when none came

    @property
    def notes_while_away(self) -> int | None:
        if self.notes_before is None or self.notes_after is None:
            return None
        return self.notes_after - self.notes_before


@dataclass
class SoakRun:
    """Everything measured in one soak run, before analysis."""

    schedule: Schedule
    seconds: float  # from the first note to the stop
    warmup: float
    command: list[str]
    received: list[ReceivedMessage]
    disconnects: list[Disconnect]
    shown: list[ShownNote]
    status_replies: int  # replies to the periodic /sideman/status requests
    status_timeouts: int  # requests that got no reply within STATUS_TIMEOUT
    live_statuses: list[dict[str, object]]  # the status just before the live mode ended
    final_status: dict[str, object]
    rss: list[tuple[float, int]]
    peak_rss_kb: int | None
    changes: Counter
    change_history: list[tuple[float, str]]  # (time.perf_counter() when sent, kind)
    phrases: int
    phrase_notes: int
    log_text: str
    exit_code: int | None
    jack_xruns: int | None = None  # XRun lines in the JACK server's log; None when it was not read


def run_soak(workdir: Path, schedule: Schedule, model: str | None, seed: int) -> SoakRun:
    # Both JACK clients of this process open before the daemon plays: see PhraseSender.
    sender = PhraseSender(f"sideman-soak-tx-{os.getpid()}")
    receiver = ReopeningReceiver(f"sideman-soak-rx-{os.getpid()}")
    daemon = SoakDaemon(workdir, receiver.port_name, model)
    changer = player = rss = None
    try:
        first_note = wait_for_first_note(receiver, daemon)
        rss = RssSampler(daemon.process.pid, first_note)
        rss.start()
        connect_sender(sender, daemon)
        changer = OscChanger(daemon.osc_port, seed, START_TEMPO)
        changer.start()
        player = PhrasePlayer(sender, changer, seed + 1)
        player.start()

        timeline = Timeline(first_note, schedule, daemon, receiver, changer)
        timeline.run()

        for thread in (changer, player, rss):
            thread.stop()
        final_status = timeline.poll_status() or {}
        stopped_at = time.perf_counter()
        peak_rss_kb = read_peak_rss_kb(daemon.process.pid)
        exit_code = daemon.stop()
        time.sleep(0.3)  # the note_offs sent at shutdown reach the receiver
    finally:
        # The daemon first: a daemon left running would outlive this process.
        daemon.stop()
        for thread in (changer, player, rss):
            if thread is not None:
                thread.stop()
        sender.close()
        receiver.close()

    return SoakRun(
        schedule=schedule,
        seconds=stopped_at - first_note,
        warmup=min(RSS_WARMUP_SECONDS, schedule.seconds / 4),
        command=daemon.command,
        received=receiver.received(),
        disconnects=timeline.disconnects,
        shown=daemon.shown_notes(),
        status_replies=timeline.status_replies,
        status_timeouts=timeline.status_timeouts,
        live_statuses=timeline.live_statuses,
        final_status=final_status,
        rss=rss.readings,
        peak_rss_kb=peak_rss_kb,
        changes=changer.sent,
        change_history=changer.history,
        phrases=player.phrases,
        phrase_notes=player.notes,
        log_text=daemon.log_text(),
        exit_code=exit_code,
    )


def wait_for_first_note(receiver: ReopeningReceiver, daemon: SoakDaemon, timeout: float = FIRST_NOTE_TIMEOUT) -> float:
    """Wait for the first note_on; return its time.perf_counter()."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for item in receiver.received():
            if item.message.type == "note_on" and item.message.velocity > 0:
                return item.wall
        if not daemon.alive():
            break
        time.sleep(0.01)
    raise RuntimeError(f"no note within {timeout:g} s; daemon log {daemon.log_path}")


def read_peak_rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Timeline:
    """The main loop of a run: status requests, the live mode's start and end, and the port's closings."""

    def __init__(self, origin: float, schedule: Schedule, daemon: SoakDaemon, receiver: ReopeningReceiver, changer: OscChanger) -> None:
        self.origin = origin
        self.schedule = schedule
        self.daemon = daemon
        self.receiver = receiver
        self.changer = changer
        self.status_replies = 0
        self.status_timeouts = 0
        self.live_statuses: list[dict[str, object]] = []
        self.disconnects: list[Disconnect] = []

    def now(self) -> float:
        return time.perf_counter() - self.origin

    def run(self) -> None:
        pending_disconnects = list(self.schedule.disconnects)
        live_started = live_ended = False
        next_status = 0.0
        last_report = 0.0
        while self.now() < self.schedule.seconds:
            if not self.daemon.alive():
                raise RuntimeError(f"the daemon ended during the soak with code {self.daemon.process.returncode}; log {self.daemon.log_path}")
            if self.now() >= next_status:
                # Only the reply matters here: status requests are part of the load a daemon sees on stage.
                self.poll_status()
                next_status += STATUS_INTERVAL
            if not live_started and self.now() >= self.schedule.live_start:
                self.changer.request_live(True)
                live_started = True
            if live_started and not live_ended and self.now() >= self.schedule.live_end:
                status = self.poll_status()
                if status is not None:
                    self.live_statuses.append(status)
                self.changer.request_live(False)
                live_ended = True
            if pending_disconnects and self.now() >= pending_disconnects[0]:
                pending_disconnects.pop(0)
                self.disconnect()
            if self.now() - last_report >= 60.0:
                last_report = self.now()
                log.info("soak: %.0f of %.0f s, %d note_ons received", last_report, self.schedule.seconds, self.receiver.note_on_count())
            self.check_first_note_after_reopening()
            time.sleep(0.05)
        self.check_first_note_after_reopening()

    def disconnect(self) -> None:
        """Close the receiver's client, keep it away PORT_AWAY_SECONDS, and open it again under the same name."""
        notes_before = self.poll_notes()
        closed_at = self.now()
        self.receiver.close()
        time.sleep(max(0.0, PORT_AWAY_SECONDS - (self.now() - closed_at)))
        self.receiver.open()
        reopened_at = self.now()
        notes_after = self.poll_notes()
        disconnect = Disconnect(closed_at, reopened_at, notes_before, notes_after)
        self.disconnects.append(disconnect)
        log.info("receiver away from %.1f s to %.1f s; the daemon played %s notes meanwhile", closed_at, reopened_at, disconnect.notes_while_away)

    def poll_status(self) -> dict[str, object] | None:
        """Request the daemon's status; return None, after a warning, when the reply does not come within STATUS_TIMEOUT."""
        try:
            status = self.daemon.status()
        except TimeoutError:
            self.status_timeouts += 1
            log.warning("the daemon sent no status reply within %g s at %.1f s of the run; going on without it", STATUS_TIMEOUT, self.now())
            return None
        self.status_replies += 1
        return status

    def poll_notes(self) -> int | None:
        status = self.poll_status()
        return None if status is None else int(status["notes"])

    def check_first_note_after_reopening(self) -> None:
        if not self.disconnects or self.disconnects[-1].first_note_after is not None:
            return
        disconnect = self.disconnects[-1]
        segment = self.receiver.segment
        for item in self.receiver.received():
            if item.segment == segment and item.message.type == "note_on" and item.message.velocity > 0:
                disconnect.first_note_after = item.wall - self.origin - disconnect.reopened_at
                log.info("first note after the port returned: %.3f s later", disconnect.first_note_after)
                return


# --- Analysis -------------------------------------------------------------------


def note_balance(received: list[ReceivedMessage]) -> NoteBalance:
    balance = NoteBalance()
    segment = 0
    for item in received:
        while item.segment > segment:
            balance.port_closed()
            segment += 1
        balance.add(item.message)
    return balance


@dataclass
class OnsetMatch:
    """The received note_ons paired with the notes the daemon showed, and the onset errors of the pairs."""

    errors: np.ndarray  # ms, JACK-stamped, each segment's median offset removed
    ideal: np.ndarray  # seconds since play started, as shown
    walls: np.ndarray  # time.perf_counter() of each arrival
    matched: int
    unmatched_received: int
    pitch_mismatches: int


def align_segment(shown: list[ShownNote], names: list[str], walls: list[float], offset: float) -> int | None:
    """Return the index of the shown note where a segment of received notes starts, or None.

    Candidates are shown notes of the first received pitch within
    ONSET_ALIGN_WINDOW of its arrival. The arrival is its wall time minus
    `offset`, the daemon's origin on this process's clock. The candidate whose
    following pitches agree most with the received ones wins.
    """
    arrival = walls[0] - offset
    best, best_score = None, -1
    for index, note in enumerate(shown):
        if note.name != names[0] or abs(note.seconds - arrival) > ONSET_ALIGN_WINDOW:
            continue
        probe = min(ONSET_ALIGN_PROBE, len(names), len(shown) - index)
        score = sum(shown[index + k].name == names[k] for k in range(probe))
        if score > best_score:
            best, best_score = index, score
    return best


def match_onsets(shown: list[ShownNote], received: list[ReceivedMessage]) -> OnsetMatch:
    """Pair each connection segment's note_ons with the shown notes in order, from where the segment starts.

    The offset between the daemon's clock and this process's comes from the
    first segment, which starts with the first note played.
    """
    note_ons = [item for item in received if item.message.type == "note_on" and item.message.velocity > 0]
    segments: dict[int, list[ReceivedMessage]] = {}
    for item in note_ons:
        segments.setdefault(item.segment, []).append(item)
    if not note_ons or not shown:
        return OnsetMatch(np.empty(0), np.empty(0), np.empty(0), 0, len(note_ons), 0)

    first = segments[min(segments)]
    count = min(32, len(first), len(shown))
    offset = float(np.median([first[index].wall - shown[index].seconds for index in range(count)]))

    errors, ideals, walls = [], [], []
    matched = unmatched = mismatches = 0
    for items in segments.values():
        names = [pitch_name(item.message.note) for item in items]
        start = align_segment(shown, names, [item.wall for item in items], offset)
        if start is None:
            unmatched += len(items)
            continue
        pairs = min(len(items), len(shown) - start)
        ideal = np.array([shown[start + index].seconds for index in range(pairs)])
        arrivals = np.array([items[index].message.time for index in range(pairs)])
        errors.append(onset_errors(ideal, arrivals))
        ideals.append(ideal)
        walls.append(np.array([items[index].wall for index in range(pairs)]))
        matched += pairs
        unmatched += len(items) - pairs
        mismatches += sum(shown[start + index].name != names[index] for index in range(pairs))

    return OnsetMatch(concatenate(errors), concatenate(ideals), concatenate(walls), matched, unmatched, mismatches)


def concatenate(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.empty(0)


NO_CHANGE_YET = "none yet"


def errors_by_last_change(onsets: OnsetMatch, history: list[tuple[float, str]]) -> dict[str, np.ndarray]:
    """Group the absolute onset errors (ms) by the kind of the latest change sent before each note arrived.

    Notes that arrived before the first change are grouped under NO_CHANGE_YET.
    """
    times = [sent for sent, _ in history]
    groups: dict[str, list[float]] = {}
    for wall, error in zip(onsets.walls, np.abs(onsets.errors)):
        index = bisect.bisect_right(times, wall) - 1
        kind = history[index][1] if index >= 0 else NO_CHANGE_YET
        groups.setdefault(kind, []).append(float(error))
    return {kind: np.array(values) for kind, values in sorted(groups.items())}


# --- Report ---------------------------------------------------------------------


@dataclass
class SoakReport:
    """The figures of a run, the pass/fail verdicts and the text around them."""

    rows: list[Row]
    notes: list[str]
    change_rows: list[Row]  # onset error by the kind of the latest change before the note
    warnings: list[LogGroup]
    connection_events: list[LogGroup]  # log lines about connections lost and made again
    csv_files: list[Path] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(row.met is not False for row in self.rows)


def count_xruns(jackd_log: Path) -> int | None:
    """Count the cycles the JACK server reported as late ("XRun" lines of jackd's output); None when the log is unreadable."""
    try:
        return jackd_log.read_text(errors="replace").count("XRun")
    except OSError as error:
        log.warning("cannot read the JACK server's log %s: %s", jackd_log, error)
        return None


def notes_played(log_text: str, status: dict[str, object]) -> int:
    """Return the daemon's final note count from its log line at shutdown, else from its last status reply.

    The status reply comes a moment before the daemon stops and misses the notes played in between.
    """
    counts = ENGINE_STOPPED.findall(log_text)
    return int(counts[-1]) if counts else int(status.get("notes", 0))


def analyse(run: SoakRun, csv_dir: Path) -> SoakReport:
    balance = note_balance(run.received)
    onsets = match_onsets(run.shown, run.received)
    rss = rss_verdict(run.rss, run.warmup)
    warnings = group_log_lines(run.log_text)
    connection_events = connection_lines(run.log_text)
    status = run.final_status
    played = notes_played(run.log_text, status)
    received = sum(1 for item in run.received if item.message.type == "note_on" and item.message.velocity > 0)
    open_pitches = [row for row in balance.rows() if not row.exact]

    rows = [
        Row("notes played (daemon log at shutdown)", "notes", value=played),
        Row("note_ons received", "notes", value=received),
        Row("notes lost: played minus received", "notes", value=played - received),
        Row("pitches whose note_ons and note_offs differ at the receiver", "pitches", value=len(open_pitches),
            target="0 (every note_on has its note_off)", met=balance.exact),
        latency_row(f"onset error, all matched notes ({onsets.matched} notes)", "ms", np.abs(onsets.errors)),
        Row("late onsets (daemon status)", "onsets", value=int(status.get("late_onsets", 0))),
        Row("VmRSS at the start (after the warm-up)", "MB", value=rss.start_kb / 1024),
        Row("VmRSS at the end", "MB", value=rss.end_kb / 1024, ratio=f"{rss.end_change:+.1%} of the start"),
        Row("VmRSS maximum after the warm-up", "MB", value=rss.max_kb / 1024, ratio=f"{(rss.max_kb - rss.start_kb) / rss.start_kb:+.1%} of the start"),
        Row("VmRSS flat after the warm-up", "", target=f"every reading within {rss.tolerance:.0%} of the start", met=rss.flat),
        Row("warnings and errors in the daemon's log", "lines", value=sum(group.count for group in warnings)),
        Row("reconnections seen in the daemon's log (lines with \"restored\" or \"reconnected\")", "lines", value=count_reconnections(run.log_text)),
    ]
    for number, disconnect in enumerate(run.disconnects, start=1):
        returned = disconnect.first_note_after is not None
        rows.append(Row(
            f"port closing {number} at {disconnect.closed_at / 60:.1f} min: first note after the port returned", "s",
            value=disconnect.first_note_after, target="notes arrive again", met=returned,
        ))

    change_rows = [
        latency_row(f"latest change: {kind} ({len(errors)} notes)", "ms", errors)
        for kind, errors in errors_by_last_change(onsets, run.change_history).items()
    ]
    report = SoakReport(rows, soak_notes(run, balance, onsets, rss), change_rows, warnings, connection_events)
    report.csv_files = [
        write_balance_csv(csv_dir / "soak_balance.csv", balance),
        write_rss_csv(csv_dir / "soak_rss.csv", run.rss),
        write_quantiles_csv(csv_dir / "soak_onsets.csv", {"onset error": np.abs(onsets.errors)}, "ms"),
        write_disconnects_csv(csv_dir / "soak_disconnects.csv", run),
    ]
    return report


def soak_notes(run: SoakRun, balance: NoteBalance, onsets: OnsetMatch, rss: RssVerdict) -> list[str]:
    status = run.final_status
    changes = ", ".join(f"{kind} {count}" for kind, count in sorted(run.changes.items(), key=lambda item: -item[1]))
    open_rows = [row for row in balance.rows() if not row.exact]
    notes = [
        f"Setup: `{shlex.join(['sideman', *run.command[3:]])}` with the built-in model unless --model is given, on a private jackd "
        "(dummy driver, 48 kHz, 64-frame period, --no-realtime --sync). The receiver is a python-rtmidi JACK input in the "
        f"benchmark process. The run lasted {run.seconds / 60:.1f} minutes from the first note; the daemon's exit code "
        f"after SIGTERM was {run.exit_code}.",
        f"OSC: one random change every {CHANGE_INTERVAL * 1000:.0f} ms to 127.0.0.1, {sum(run.changes.values())} in all: {changes}. "
        "Gate and velocity have no OSC address, so humanize_velocity stands in for velocity and the gate stays 0.9.",
        f"Live input: a JACK MIDI sender on sideman-in:in played {run.phrases} one-bar phrases ({run.phrase_notes} notes), "
        f"one every {PHRASE_GAP_BARS + 1} bars. From {run.schedule.live_start / 60:.1f} to "
        f"{run.schedule.live_end / 60:.1f} minutes the live seeder listened in call-and-response mode; "
        + (
            f"before it ended, the status showed {run.live_statuses[0].get('live_notes', '?')} live notes and "
            f"{run.live_statuses[0].get('answers', '?')} answers. "
            if run.live_statuses else "it never started. "
        )
        + f"Outside it the daemon ignored the phrases (live_notes_ignored {status.get('live_notes_ignored', '?')} at the end).",
        "Note balance: every note_on and note_off that reached the receiver, counted per channel and pitch across the port's "
        "closings. A note_on open when the port closed ends there (a synth that goes away sounds nothing) and is "
        "counted as open at a closing; a note_off that arrives after the port returned for a note that is not open "
        "counts as a stray note_off. "
        f"{balance.all_notes_off} All Notes Off (CC 123) arrived and close nothing in this count. "
        + (
            "Pitches out of balance: " + "; ".join(
                f"{pitch_name(row.pitch)} on channel {row.channel + 1}: {row.note_ons} note_ons, {row.note_offs} note_offs, "
                f"{row.unmatched_note_ons} open, {row.stray_note_offs} stray note_offs, {row.open_at_disconnect} open at a closing"
                for row in open_rows
            ) + "."
            if open_rows else "Every pitch is in balance."
        ),
        "Onset error: every received note_on is paired, in order within each opening of the receiver, with the note the "
        "daemon printed with `--show`. That is its scheduled send time after tempo changes, swing and humanize, printed to "
        "the millisecond, so the figures carry up to 0.5 ms of rounding. Error = JACK-stamped arrival - scheduled time - "
        "the opening's median of that difference, as bench/onsets.py computes it, but on all notes under the changes, "
        f"not on quiet intervals. {onsets.unmatched_received} received notes found no shown note, "
        f"{onsets.pitch_mismatches} pairs differ in pitch.",
        f"The JACK server reported {'an unknown number of' if run.jack_xruns is None else run.jack_xruns} XRuns (process cycles "
        "that ended late, because a client or the machine was slow). With --sync, every client's late cycle delays the "
        "delivery of every MIDI message, so XRuns and the machine's load show in the onset error.",
        f"VmRSS is read from /proc every {RSS_INTERVAL:g} s; the start value is the first reading {run.warmup:g} s after "
        f"the first note. Peak RSS (VmHWM) over the whole run: "
        + (f"{run.peak_rss_kb / 1024:.1f} MB." if run.peak_rss_kb else "unknown."),
        f"Status requests: {run.status_replies} answered, {run.status_timeouts} without a reply within {STATUS_TIMEOUT:g} s. "
        f"Daemon status at the end: sampler errors {status.get('sampler_errors', '?')}, input batches dropped "
        f"{status.get('input_dropped', '?')}, disabled plugins '{status.get('disabled_plugins', '')}'.",
    ]
    for number, disconnect in enumerate(run.disconnects, start=1):
        notes.append(
            f"Port closing {number}: the receiver closed its whole JACK client at {disconnect.closed_at:.1f} s and opened it "
            f"again under the same name at {disconnect.reopened_at:.1f} s; the daemon played "
            f"{'an unknown number of' if disconnect.notes_while_away is None else disconnect.notes_while_away} notes meanwhile. "
            + (
                f"The first note after it arrived {disconnect.first_note_after:.3f} s after the port returned."
                if disconnect.first_note_after is not None else
                "No note arrived after the port returned, so every note played after the closing was lost."
            )
        )
    return notes


def write_balance_csv(path: Path, balance: NoteBalance) -> Path:
    header = ("channel", "pitch", "name", "note_ons", "note_offs", "unmatched note_ons", "stray note_offs", "open at a port closing")
    rows = [
        (row.channel + 1, row.pitch, pitch_name(row.pitch), row.note_ons, row.note_offs, row.unmatched_note_ons,
         row.stray_note_offs, row.open_at_disconnect)
        for row in balance.rows()
    ]
    return write_rows_csv(path, header, rows)


def write_rss_csv(path: Path, readings: list[tuple[float, int]]) -> Path:
    """Write one VmRSS reading every CSV_RSS_INTERVAL seconds, and the last one."""
    rows = []
    next_time = 0.0
    for index, (seconds, kb) in enumerate(readings):
        if seconds >= next_time or index == len(readings) - 1:
            rows.append((f"{seconds:.1f}", kb))
            next_time = seconds + CSV_RSS_INTERVAL
    return write_rows_csv(path, ("seconds since the first note", "VmRSS (kB)"), rows)


def write_disconnects_csv(path: Path, run: SoakRun) -> Path:
    header = ("closed at (s)", "reopened at (s)", "notes played while closed", "first note after reopening (s)")
    rows = [
        (f"{item.closed_at:.1f}", f"{item.reopened_at:.1f}", "" if item.notes_while_away is None else item.notes_while_away,
         "" if item.first_note_after is None else f"{item.first_note_after:.3f}")
        for item in run.disconnects
    ]
    return write_rows_csv(path, header, rows)


def format_log_groups(groups: list[LogGroup]) -> str:
    lines = ["| count | level | logger | kind | first message |", "|---|---|---|---|---|"]
    for group in groups:
        cells = (str(group.count), group.level, group.logger, group.kind, group.example)
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def relative_link(path: Path, start: Path) -> str:
    try:
        return path.resolve().relative_to(start.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def format_soak_page(machine: Machine, command: str, started: str, minutes: float, loads: tuple[tuple[float, ...], ...],
                     report: SoakReport, report_path: Path) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in machine.versions.items())
    load_before, load_after = (", ".join(f"{value:.2f}" for value in load) for load in loads)
    lines = [
        "# Soak run",
        "",
        "Every figure on this page comes from one run of the command below, on the machine described here.",
        "",
        f"- Command: `{command}`, {minutes:.1f} minutes",
        f"- Date: {started}",
        f"- Machine: {machine.cpu_model}, {machine.cores} cores, {machine.system}",
        f"- Load average (1, 5, 15 minutes) at the start: {load_before}; at the end: {load_after}."
        " The machine is shared: a load above 0 means other processes competed for the cores.",
        f"- Python {machine.python}; {versions}; {machine.jackd}",
        f"- Result: {'every pass/fail line met' if report.passed else 'at least one pass/fail line missed'}",
        "",
        "## Figures",
        "",
        format_table(report.rows),
        "",
    ]
    for note in report.notes:
        lines += [note, ""]
    lines += [
        "## Onset error by the latest change before the note",
        "",
        "Each matched note is grouped by the kind of the latest OSC change sent before it arrived "
        f"(changes go out every {CHANGE_INTERVAL * 1000:.0f} ms), so that a kind of change that delays onsets stands out. "
        "Groups of a few hundred notes make each p99 rest on two or three notes, and on a loaded machine the tails "
        "follow the JACK server's XRuns as much as the changes.",
        "",
        format_table(report.change_rows),
        "",
    ]
    lines += ["## Warnings and errors in the daemon's log, by kind", ""]
    lines += [format_log_groups(report.warnings) if report.warnings else "None.", ""]
    lines += ["Numbers are replaced by <n> and socket addresses by <address> before lines are grouped.", ""]
    lines += ["## Log lines about connections lost and made again", ""]
    lines += [format_log_groups(report.connection_events) if report.connection_events else "None.", ""]
    links = ", ".join(f"[{path.name}]({relative_link(path, report_path.parent)})" for path in report.csv_files)
    lines += [f"Samples: {links}.", ""]
    return "\n".join(lines)


# --- Command line ---------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Play for a long time under random OSC changes, live phrases and output port closings; "
        "report note balance, memory, warnings, onset error and reconnections.",
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the run from the first note, in minutes (default: 30)")
    parser.add_argument("--out", type=Path, default=Path("docs/soak.md"), help="report page to write; the CSV files go to a `soak` folder beside it (default: docs/soak.md)")
    parser.add_argument("--disconnect-minutes", type=float, default=DISCONNECT_MINUTES, help=f"minutes between two closings of the receiver's port (default: {DISCONNECT_MINUTES:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random OSC changes and live phrases (default: 0)")
    parser.add_argument("--model", metavar="PATH", help="model bundle to play (default: the built-in model)")
    parser.add_argument("--keep", type=Path, metavar="FOLDER", help="folder for the daemon's log, its --show output and the JACK server's log, kept after the run (default: a temporary folder, deleted)")
    return parser


def shown_arguments(arguments: list[str]) -> list[str]:
    """Return the arguments as the report shows them, with the folder after --keep hidden."""
    return hide_folder_argument(arguments, "--keep")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.minutes < 1.0:
        parser.error(f"--minutes {args.minutes:g} is too short: a run needs at least 1 minute, for the warm-up of VmRSS")
    if args.disconnect_minutes <= 0:
        parser.error(f"--disconnect-minutes {args.disconnect_minutes:g} is invalid: it must be above 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    command = shlex.join(["python", "-m", "bench.soak", *shown_arguments(sys.argv[1:] if argv is None else argv)])
    csv_dir = args.out.parent / "soak"
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    load_before = load_average()
    machine = describe_machine()
    schedule = Schedule.for_minutes(args.minutes, args.disconnect_minutes)
    closings = ", ".join(f"{at:.0f} s" for at in schedule.disconnects) or "none"
    log.info("soak starting: %.1f minutes, port closings at: %s", args.minutes, closings)

    with tempfile.TemporaryDirectory(prefix="sideman-soak-") as folder:
        workdir = Path(folder) if args.keep is None else args.keep
        workdir.mkdir(parents=True, exist_ok=True)
        with private_jack_server(workdir):
            run = run_soak(workdir, schedule, args.model, args.seed)
        run.jack_xruns = count_xruns(workdir / "jackd.log")

    report = analyse(run, csv_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    page = format_soak_page(machine, command, started, run.seconds / 60, (load_before, load_average()), report, args.out)
    args.out.write_text(page, encoding="utf-8")

    print(format_table(report.rows))
    print(f"Wrote {args.out} and the samples in {csv_dir}.")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
