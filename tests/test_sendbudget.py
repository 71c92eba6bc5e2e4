"""SendBudget: drop instead of freezing while the JACK server runs no process cycle."""

import mido

from sideman.clock import FakeClock
from sideman.sendbudget import BUDGET_BYTES, MESSAGE_OVERHEAD_BYTES, SendBudget
from sideman.sharedoutput import SharedOutput


class FakeFrames:
    def __init__(self):
        self.frame: int | None = 0

    def last_frame_time(self) -> int | None:
        return self.frame


class FakePort:
    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)


def test_healthy_server_never_drops():
    frames = FakeFrames()
    budget = SendBudget(lambda: frames)

    for cycle in range(1000):
        frames.frame = cycle * 64
        for _ in range(20):
            assert budget.allows(3)

    assert budget.refused == 0


def test_stalled_server_drops_then_recovers(caplog):
    frames = FakeFrames()
    budget = SendBudget(lambda: frames)
    per_message = 3 + MESSAGE_OVERHEAD_BYTES
    allowed = BUDGET_BYTES // per_message

    results = [budget.allows(3) for _ in range(allowed + 50)]
    frames.frame = 64

    assert results.count(True) == allowed
    assert budget.refused == 50
    assert budget.allows(3)
    messages = [record.getMessage() for record in caplog.records]
    assert sum("run no cycle" in message for message in messages) == 1
    assert sum("runs its cycles again" in message for message in messages) == 1


def test_without_a_watch_a_stall_keeps_refusing():
    frames = FakeFrames()
    watch = [frames]
    budget = SendBudget(lambda: watch[0])
    while budget.allows(3):
        pass

    watch[0] = None

    assert not budget.allows(3)


def test_shared_output_drops_what_the_guard_refuses():
    port = FakePort()
    shared = SharedOutput(port, FakeClock())
    frames = FakeFrames()
    shared.set_send_guard(SendBudget(lambda: frames, budget_bytes=14).allows)

    for pitch in (60, 62, 64):
        shared.send(mido.Message("note_on", note=pitch, velocity=90))

    assert [message.note for message in port.sent] == [60, 62]
    assert shared.dropped == 1
    assert shared.sounding(0) == [60, 62]


def test_refused_note_off_sent_later():
    port = FakePort()
    shared = SharedOutput(port, FakeClock())
    frames = FakeFrames()
    budget = SendBudget(lambda: frames, budget_bytes=7)
    shared.set_send_guard(budget.allows)

    shared.send(mido.Message("note_on", note=60, velocity=90))
    shared.send(mido.Message("note_off", note=60, velocity=0))
    assert shared.sounding(0) == [60]

    frames.frame = 64
    shared.send(mido.Message("note_on", note=62, velocity=90))

    assert [(message.type, message.note) for message in port.sent] == [("note_on", 60), ("note_off", 60)]
    assert shared.sounding(0) == []
