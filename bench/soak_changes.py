"""The random OSC changes of a soak run, and the thread that sends one every CHANGE_INTERVAL seconds."""

import logging
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from bench.live import osc_datagram

log = logging.getLogger(__name__)

TEMPO_RANGE = (200.0, 240.0)  # BPM of the random tempo changes
CHANGE_INTERVAL = 0.1  # seconds between two random OSC changes
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
