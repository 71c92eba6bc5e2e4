"""The `live` seeder: the musician playing into sideman's MIDI input seeds the model as they play.

Applying it changes no state by itself: it puts the engine into a live mode
(sideman.live has the modes), and from then on every note played into the
MIDI input is fed into the state. Another seeder, applied later, ends the
live mode.
"""

from sideman.improviser import Improviser
from sideman.live import CALL_AND_RESPONSE, LIVE_MODES
from sideman.liveline import QUANTIZE_CHOICES
from sideman.params import Param
from sideman.seeding import Seeder


class LiveInput(Seeder):
    """Seed from the notes a musician plays into the MIDI input (sideman-in:in or --midi-in NAME)."""

    name = "live"
    help = "seed from the notes played into the MIDI input: call-and-response, continue or duet"
    # Tells the engine to route live notes through this seeder's mode.
    listens = True
    params = (
        Param("mode", str, CALL_AND_RESPONSE, "call-and-response: answer after the musician's phrase; continue: take over when they stop; duet: play along, following them", choices=LIVE_MODES),
        Param("silence", float, 1.0, "call-and-response and duet: bars of silence that end the musician's phrase", low=0.25, high=16.0),
        Param("handover", float, 1.0, "continue: beats of silence after which sideman takes over", low=0.25, high=16.0),
        Param("bars", int, 0, "call-and-response: length of an answer in bars; 0 answers for as many bars as the call lasted", low=0, high=64),
        Param("quantize", str, "1/16+1/8t", "grid the live notes snap to; 1/16+1/8t holds sixteenths and eighth triplets, off keeps the model's own grid", choices=QUANTIZE_CHOICES),
        Param("thru", bool, False, "also send the played notes to the MIDI output, on sideman's channel"),
        Param("channel", int, 0, "MIDI channel 1-16 the musician plays on; 0 listens to every channel", low=0, high=16),
    )

    def seed(self, improviser: Improviser) -> int:
        return 0
