"""The note balance at the soak run's receiver: note_on and note_off counts per channel and pitch, across port closings."""

from collections import Counter
from dataclasses import dataclass

import mido

from bench.soak_receiver import ReceivedMessage


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


def note_balance(received: list[ReceivedMessage]) -> NoteBalance:
    balance = NoteBalance()
    segment = 0
    for item in received:
        while item.segment > segment:
            balance.port_closed()
            segment += 1
        balance.add(item.message)
    return balance
