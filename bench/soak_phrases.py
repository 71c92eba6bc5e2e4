"""The live phrases of a soak run: a JACK MIDI sender and the thread that plays a random one-bar phrase every few bars."""

import random
import threading
import time

import mido
import rtmidi

from bench.soak_changes import OscChanger
from sideman.midiport import JACK_SETTLE_TIME

PHRASE_GAP_BARS = 4  # bars of silence after each live phrase: a bar that ends it, an answer of up to 2 bars and a margin
BEATS_PER_BAR = 4  # the daemon's default meter, 4/4


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
