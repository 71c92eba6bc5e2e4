"""Tests of the OSC control surface: translation from raw datagrams, bundle timing, and a few real sockets.

Translation and timing tests feed datagram bytes built with python-osc's builders
straight into the translation functions and the dispatcher, with a fake clock.
Socket tests use 127.0.0.1 and an ephemeral port only.
"""

import logging
import math
import queue
import socket
import struct
import threading
import time
from typing import Any

import pytest
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.parsing import osc_types
from pythonosc.udp_client import SimpleUDPClient

from sideman import osc, rejections
from sideman.commands import Command, Panic, Prime, Reseed, Reset, SetParam, SetSampler, SetTempo, Start, Stop
from sideman.errors import InvalidInputError, SettingsError
from sideman.osc import OscDispatcher, OscServer
from sideman.osc_packets import MAX_DATAGRAM_BYTES, StatusRequest, build_status_reply, translate_datagram, translate_message

SENDER = ("127.0.0.1", 53211)
NOW = 1_700_000_000.0  # the fake clock's start, seconds since the Unix epoch
WAIT_SECONDS = 5.0  # generous: socket tests only check that things arrive


def message(address: str, *args: Any, tags: str | None = None) -> bytes:
    """Build one OSC message; `tags` fixes the type tag of each argument, otherwise python-osc guesses."""
    builder = OscMessageBuilder(address)
    for index, value in enumerate(args):
        builder.add_arg(value, tags[index] if tags else None)
    return builder.build().dgram


def bundle(timetag: float, *contents: bytes) -> bytes:
    builder = OscBundleBuilder(timetag)
    for content in contents:
        parsed = OscBundle(content) if content.startswith(b"#bundle") else OscMessage(content)
        builder.add_content(parsed)
    return builder.build().dgram


def translate(datagram: bytes) -> Any:
    """Translate a datagram that contains one message and return its action."""
    return translate_message(OscMessage(datagram))


def reject_reason(datagram: bytes) -> str:
    with pytest.raises(InvalidInputError) as caught:
        translate(datagram)
    return str(caught.value)


def parse_status_reply(datagram: bytes) -> dict[str, Any]:
    reply = OscMessage(datagram)
    assert reply.address == "/sideman/status"
    params = reply.params
    keys = params[0::2]
    assert all(isinstance(key, str) for key in keys)
    return dict(zip(keys, params[1::2]))


class FakeClock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeController:
    """Records each apply() call; rejects commands of the types in `rejected_types`."""

    def __init__(self, rejected_types: tuple[type, ...] = ()):
        self.calls: queue.Queue[list[Command]] = queue.Queue()
        self.rejected_types = rejected_types
        self.tempo = 120.0

    def apply(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, self.rejected_types):
                raise SettingsError(f"unknown sampler {command!r}")

        for command in commands:
            if isinstance(command, SetTempo):
                self.tempo = command.bpm
        self.calls.put(list(commands))

    def status(self) -> dict[str, int | float | str]:
        return {"tempo": self.tempo, "running": True, "sampler": "greedy", "seed": 2**40, "notes": 17}

    def applied(self) -> list[list[Command]]:
        return list(self.calls.queue)

    def wait_for_call(self) -> list[Command]:
        return self.calls.get(timeout=WAIT_SECONDS)


class Replies:
    """A fake send_reply: records (datagram, address) pairs."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def __call__(self, datagram: bytes, address: tuple[str, int]) -> None:
        self.sent.append((datagram, address))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def controller() -> FakeController:
    return FakeController()


@pytest.fixture
def replies() -> Replies:
    return Replies()


@pytest.fixture
def dispatcher(controller: FakeController, replies: Replies, clock: FakeClock) -> OscDispatcher:
    return OscDispatcher(controller, replies, clock)


# --- Valid messages --------------------------------------------------------


@pytest.mark.parametrize(
    ("datagram", "expected"),
    [
        (message("/sideman/tempo", 180.0), SetTempo(180.0)),
        (message("/sideman/tempo", 180), SetTempo(180.0)),
        (message("/sideman/tempo", 97.25, tags="d"), SetTempo(97.25)),
        (message("/sideman/tempo", 20.0), SetTempo(20.0)),
        (message("/sideman/tempo", 400), SetTempo(400.0)),
        (message("/sideman/seed", 42), Reseed(42)),
        (message("/sideman/seed", 0), Reseed(0)),
        (message("/sideman/seed", 2**40, tags="h"), Reseed(2**40)),
        (message("/sideman/seed", 2**63 - 1, tags="h"), Reseed(2**63 - 1)),
        (message("/sideman/seed", 7.0), Reseed(7)),
        (message("/sideman/prime", 60, 1.0, -1, 0.5, 62, 0.25), Prime(((60, 1.0), (None, 0.5), (62, 0.25)))),
        (message("/sideman/prime", 0, 64.0, 127, 1), Prime(((0, 64.0), (127, 1.0)))),
        (message("/sideman/prime", 64.0, 2.0), Prime(((64, 2.0),))),
        (message("/sideman/start"), Start()),
        (message("/sideman/stop"), Stop()),
        (message("/sideman/panic"), Panic()),
        (message("/sideman/reset"), Reset()),
        (message("/sideman/sampler", "greedy"), SetSampler(("greedy",))),
        (message("/sideman/sampler", "scale top_p  temperature"), SetSampler(("scale", "top_p", "temperature"))),
        (message("/sideman/sampler", "scale", "temperature"), SetSampler(("scale", "temperature"))),
        (message("/sideman/sampler", "scale top_p", "temperature"), SetSampler(("scale", "top_p", "temperature"))),
        (message("/sideman/param", "temperature", "temperature", 0.75), SetParam("temperature", "temperature", 0.75)),
        (message("/sideman/param", "top_k", "k", 5), SetParam("top_k", "k", 5)),
        (message("/sideman/param", "scale", "key", "Bb"), SetParam("scale", "key", "Bb")),
        (message("/sideman/param", "scale", "strict", True), SetParam("scale", "strict", True)),
        (message("/sideman/status"), StatusRequest()),
    ],
)
def test_valid_message_translates(datagram: bytes, expected: Any) -> None:
    action = translate(datagram)

    assert action == expected


def test_tempo_from_int_is_float() -> None:
    action = translate(message("/sideman/tempo", 180))

    assert isinstance(action.bpm, float)


def test_seed_from_float_is_int() -> None:
    action = translate(message("/sideman/seed", 7.0))

    assert type(action.seed) is int


# --- Invalid messages ------------------------------------------------------


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (message("/sideman/tempo"), "expected 1 argument"),
        (message("/sideman/tempo", 120.0, 130.0), "got 2 arguments"),
        (message("/sideman/tempo", "fast"), "tempo must be a number, got string 'fast'"),
        (message("/sideman/tempo", True), "tempo must be a number, got boolean True"),
        (message("/sideman/tempo", b"\x01"), "got blob"),
        (message("/sideman/tempo", math.nan), "finite"),
        (message("/sideman/tempo", math.inf), "finite"),
        (message("/sideman/tempo", -math.inf), "finite"),
        (message("/sideman/tempo", 19.5), "out of range"),
        (message("/sideman/tempo", 400.5), "out of range"),
        (message("/sideman/tempo", 0), "out of range"),
        (message("/sideman/seed"), "expected 1 argument"),
        (message("/sideman/seed", 1, 2), "got 2 arguments"),
        (message("/sideman/seed", 7.5), "seed must be an integer"),
        (message("/sideman/seed", math.nan), "seed must be an integer"),
        (message("/sideman/seed", "42"), "seed must be an integer"),
        (message("/sideman/seed", -1), "out of range"),
        (message("/sideman/seed", -(2**40), tags="h"), "out of range"),
        (message("/sideman/prime"), "got 0 arguments"),
        (message("/sideman/prime", 60), "got 1 argument"),
        (message("/sideman/prime", 60, 1.0, 62), "got 3 arguments"),
        (message("/sideman/prime", 128, 1.0), "pitch of event 1"),
        (message("/sideman/prime", 60, 1.0, -2, 1.0), "pitch of event 2"),
        (message("/sideman/prime", 60.5, 1.0), "pitch of event 1 must be an integer"),
        (message("/sideman/prime", "C4", 1.0), "pitch of event 1 must be an integer"),
        (message("/sideman/prime", 60, 0.0), "beats of event 1"),
        (message("/sideman/prime", 60, -1.0), "beats of event 1"),
        (message("/sideman/prime", 60, 64.5), "beats of event 1"),
        (message("/sideman/prime", 60, 1.0, 62, math.nan), "beats of event 2 must be a finite number"),
        (message("/sideman/prime", 60, 1.0, 62, "long"), "beats of event 2 must be a number"),
        (message("/sideman/start", 1.0), "expected no arguments"),
        (message("/sideman/stop", 0), "expected no arguments"),
        (message("/sideman/panic", "now"), "expected no arguments"),
        (message("/sideman/reset", 1), "expected no arguments"),
        (message("/sideman/status", 1), "expected no arguments"),
        (message("/sideman/sampler"), "at least one sampler name"),
        (message("/sideman/sampler", ""), "at least one sampler name"),
        (message("/sideman/sampler", "   "), "at least one sampler name"),
        (message("/sideman/sampler", "greedy", 3), "sampler name 2 must be a string"),
        (message("/sideman/param", "temperature", "temperature"), "expected 3 arguments"),
        (message("/sideman/param", "a", "b", 1, 2), "got 4 arguments"),
        (message("/sideman/param", 1, "temperature", 0.5), "plugin name must be a non-empty string"),
        (message("/sideman/param", "temperature", "", 0.5), "parameter name must be a non-empty string"),
        (message("/sideman/param", "temperature", "temperature", math.nan), "finite"),
        (message("/sideman/param", "temperature", "temperature", b"\x00"), "must be an int, float, string or boolean"),
        (message("/sideman/param", "temperature", "temperature", None), "must be an int, float, string or boolean"),
        (message("/sideman/nope"), "unknown address '/sideman/nope'"),
        (message("/other/tempo", 120.0), "unknown address"),
        (message("/sideman/tempo/", 120.0), "unknown address"),
        (message("/sideman/*", 120.0), "unknown address"),
        (message("/SIDEMAN/TEMPO", 120.0), "unknown address"),
    ],
)
def test_invalid_message_rejected(datagram: bytes, reason: str) -> None:
    assert reason in reject_reason(datagram)


def test_unknown_address_lists_known_ones() -> None:
    reason = reject_reason(message("/sideman/tempi", 120.0))

    assert "/sideman/tempo" in reason
    assert "/sideman/status" in reason


def test_out_of_range_names_limit() -> None:
    reason = reject_reason(message("/sideman/tempo", 500.0))

    assert "500.0" in reason
    assert "400.0" in reason


def test_invalid_message_in_packet_rejected() -> None:
    packet = translate_datagram(message("/sideman/tempo", math.nan), SENDER)

    assert packet.messages == ()
    (rejected,) = packet.rejected
    assert rejected.text == "/sideman/tempo nan"
    assert "finite" in rejected.reason


def test_invalid_message_logged_with_sender(dispatcher: OscDispatcher, controller: FakeController,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sideman.osc")

    dispatcher.handle_datagram(message("/sideman/tempo", math.nan), SENDER)

    assert controller.applied() == []
    assert "OSC 127.0.0.1:53211 /sideman/tempo nan rejected: tempo must be a finite number" in caplog.text


def test_repeated_rejections_summarised(dispatcher: OscDispatcher, clock: FakeClock,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sideman.osc")

    for _ in range(25):
        dispatcher.handle_datagram(message("/sideman/tempo", 1000.0), SENDER)
    logged_in_first_window = [record.getMessage() for record in caplog.records]
    clock.now += rejections.SUMMARY_SECONDS
    dispatcher.handle_datagram(message("/sideman/tempo", 1000.0), SENDER)

    assert len(logged_in_first_window) == 1
    assert "/sideman/tempo 1000.0 rejected: tempo in BPM 1000.0 is out of range" in logged_in_first_window[0]
    assert len(caplog.records) == 2
    assert caplog.records[-1].getMessage().startswith(
        "OSC 127.0.0.1:53211: 24 more 'out of range' rejections in the last 10 s, the latest: tempo in BPM 1000.0")


def test_rejection_kinds_logged_apart(dispatcher: OscDispatcher, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sideman.osc")
    other_sender = ("127.0.0.1", 53212)

    for _ in range(3):
        dispatcher.handle_datagram(message("/sideman/tempo", 1000.0), SENDER)
        dispatcher.handle_datagram(message("/sideman/tempo", "fast"), SENDER)
        dispatcher.handle_datagram(message("/sideman/tempo", 1000.0), other_sender)

    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 3
    assert "53211 /sideman/tempo 1000.0 rejected" in warnings[0]
    assert "53211 /sideman/tempo 'fast' rejected" in warnings[1]
    assert "53212 /sideman/tempo 1000.0 rejected" in warnings[2]


# --- Malformed datagrams -----------------------------------------------------


def negative_size_bundle() -> bytes:
    """A bundle whose element size is -4, which sends python-osc 1.10's parser into an endless loop."""
    return b"#bundle\x00" + struct.pack(">Q", 1) + struct.pack(">i", -4) + message("/sideman/start")


def nested(depth: int) -> bytes:
    datagram = message("/sideman/start")
    for _ in range(depth):
        datagram = bundle(IMMEDIATELY, datagram)
    return datagram


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"", "empty datagram"),
        (b"hello", "neither an OSC message"),
        (b"\x00\x00\x00\x00", "neither an OSC message"),
        (b"/sideman/tempo", "malformed"),
        (message("/sideman/tempo", 120)[:-2], "malformed"),
        (message("/sideman/seed", 120)[:-4] + b"\x00\x00", "malformed"),
        (b"/sideman/tempo\x00\x00i\x00\x00\x00\x00\x00\x00\x01", "malformed"),
        (b"/sideman/param\x00\x00,s\x00\x00\xff\xfe\x00\x00", "malformed"),
        (b"/\xff\xfe\x00", "malformed"),
        (b"/sideman/tempo\x00\x00,c\x00\x00\x00\x00\x00\x41", "unsupported OSC type tag 'c'"),
        (b"/sideman/tempo\x00\x00,[i\x00\x00\x00\x00\x01", "malformed"),
        (message("/sideman/prime", *([60, 1.0] * 900)), f"larger than the limit of {MAX_DATAGRAM_BYTES}"),
        (b"#bundle\x00\x00\x00", "shorter than its 16-byte header"),
        (negative_size_bundle(), "bundle element size -4"),
        (b"#bundle\x00" + struct.pack(">Q", 1) + struct.pack(">i", 400) + message("/sideman/start"), "size 400"),
        (b"#bundle\x00" + struct.pack(">Q", 1) + struct.pack(">i", 6) + message("/sideman/start"), "size 6"),
        (b"#bundle\x00" + struct.pack(">Q", 1) + struct.pack(">i", 4) + b"abc\x00", "neither an OSC message"),
        (b"#bundle\x00" + struct.pack(">Q", 1) + b"\x00\x00", "malformed"),
        (nested(9), "nested deeper than 8"),
    ],
)
def test_malformed_datagram_rejected(datagram: bytes, reason: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        translate_datagram(datagram, SENDER)

    assert reason in str(caught.value)


def test_negative_element_size_returns() -> None:
    # Run in a thread so that a regression into python-osc's endless loop fails
    # this test instead of hanging the whole run.
    outcome: list[Exception] = []

    def translate_in_thread() -> None:
        try:
            translate_datagram(negative_size_bundle(), SENDER)
        except InvalidInputError as error:
            outcome.append(error)

    worker = threading.Thread(target=translate_in_thread, daemon=True)
    worker.start()
    worker.join(WAIT_SECONDS)

    assert not worker.is_alive()
    assert len(outcome) == 1


def test_nesting_at_limit_accepted() -> None:
    packet = translate_datagram(nested(8), SENDER)

    assert [translated.action for translated in packet.messages] == [Start()]


def test_malformed_datagram_logged(dispatcher: OscDispatcher, controller: FakeController,
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sideman.osc")

    dispatcher.handle_datagram(b"\x2fgarbage", SENDER)

    assert controller.applied() == []
    assert "OSC 127.0.0.1:53211 datagram of 8 bytes rejected: malformed OSC datagram" in caplog.text


def test_empty_datagram_logged(dispatcher: OscDispatcher, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sideman.osc")

    dispatcher.handle_datagram(b"", SENDER)

    assert "127.0.0.1:53211 datagram of 0 bytes rejected: empty datagram" in caplog.text


# --- Applying and logging ----------------------------------------------------


def test_message_applies_at_once(dispatcher: OscDispatcher, controller: FakeController) -> None:
    dispatcher.handle_datagram(message("/sideman/tempo", 180.0), SENDER)

    assert controller.applied() == [[SetTempo(180.0)]]


def test_accepted_message_logged(dispatcher: OscDispatcher, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sideman.osc")

    dispatcher.handle_datagram(message("/sideman/tempo", 180.0), SENDER)
    dispatcher.handle_datagram(message("/sideman/sampler", "top_p temperature"), SENDER)

    infos = [record.getMessage() for record in caplog.records if record.levelno == logging.INFO]
    assert infos == [
        "OSC 127.0.0.1:53211 /sideman/tempo 180.0 accepted",
        "OSC 127.0.0.1:53211 /sideman/sampler 'top_p temperature' accepted",
    ]


def test_long_message_text_cut(dispatcher: OscDispatcher, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sideman.osc")

    dispatcher.handle_datagram(message("/sideman/prime", *([60, 1.0] * 100)), SENDER)

    (record,) = caplog.records
    assert len(record.getMessage()) < 260
    assert "... accepted" in record.getMessage()


def test_engine_rejection_logged(replies: Replies, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    controller = FakeController(rejected_types=(SetSampler,))
    dispatcher = OscDispatcher(controller, replies, clock)
    caplog.set_level(logging.INFO, logger="sideman.osc")

    dispatcher.handle_datagram(message("/sideman/sampler", "no_such_sampler"), SENDER)

    assert controller.applied() == []
    assert [record.levelno for record in caplog.records] == [logging.WARNING]
    assert "127.0.0.1:53211 /sideman/sampler 'no_such_sampler' rejected by the engine" in caplog.text
    assert "unknown sampler" in caplog.text


def test_empty_bundle_applies_nothing(dispatcher: OscDispatcher, controller: FakeController) -> None:
    dispatcher.handle_datagram(bundle(IMMEDIATELY), SENDER)

    assert controller.applied() == []


# --- Bundles -----------------------------------------------------------------


def test_bundle_applies_in_one_call(dispatcher: OscDispatcher, controller: FakeController) -> None:
    datagram = bundle(IMMEDIATELY, message("/sideman/tempo", 150.0), message("/sideman/seed", 3),
                      message("/sideman/start"))

    dispatcher.handle_datagram(datagram, SENDER)

    assert controller.applied() == [[SetTempo(150.0), Reseed(3), Start()]]


def test_bundle_invalid_message_skipped(dispatcher: OscDispatcher, controller: FakeController,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sideman.osc")
    datagram = bundle(IMMEDIATELY, message("/sideman/tempo", 150.0), message("/sideman/tempo", 999.0),
                      message("/sideman/nope"), message("/sideman/seed", 3))

    dispatcher.handle_datagram(datagram, SENDER)

    assert controller.applied() == [[SetTempo(150.0), Reseed(3)]]
    assert "/sideman/tempo 999.0 rejected: tempo in BPM 999.0 is out of range" in caplog.text
    assert "/sideman/nope rejected: unknown address" in caplog.text


def test_bundle_all_invalid_applies_nothing(dispatcher: OscDispatcher, controller: FakeController) -> None:
    dispatcher.handle_datagram(bundle(IMMEDIATELY, message("/sideman/tempo", math.nan)), SENDER)

    assert controller.applied() == []


def test_nested_bundles_flatten(dispatcher: OscDispatcher, controller: FakeController) -> None:
    inner = bundle(IMMEDIATELY, message("/sideman/seed", 1), bundle(IMMEDIATELY, message("/sideman/reset")))
    datagram = bundle(IMMEDIATELY, message("/sideman/stop"), inner, message("/sideman/start"))

    dispatcher.handle_datagram(datagram, SENDER)

    assert controller.applied() == [[Stop(), Reseed(1), Reset(), Start()]]


def test_malformed_part_rejects_bundle(dispatcher: OscDispatcher, controller: FakeController) -> None:
    datagram = bundle(IMMEDIATELY, message("/sideman/start")) + struct.pack(">i", 8) + b"garbage!"

    dispatcher.handle_datagram(datagram, SENDER)

    assert controller.applied() == []


def test_past_timetag_applies_at_once(dispatcher: OscDispatcher, controller: FakeController) -> None:
    dispatcher.handle_datagram(bundle(NOW - 30.0, message("/sideman/panic")), SENDER)

    assert controller.applied() == [[Panic()]]
    assert dispatcher.pending_count == 0


def test_future_timetag_waits(dispatcher: OscDispatcher, controller: FakeController, clock: FakeClock) -> None:
    dispatcher.handle_datagram(bundle(NOW + 2.0, message("/sideman/tempo", 90.0)), SENDER)

    assert controller.applied() == []
    assert dispatcher.pending_count == 1
    assert dispatcher.seconds_until_due() == pytest.approx(2.0, abs=1e-3)

    clock.now = NOW + 1.9
    dispatcher.serve_due()
    assert controller.applied() == []

    clock.now = NOW + 2.01
    dispatcher.serve_due()
    assert controller.applied() == [[SetTempo(90.0)]]
    assert dispatcher.pending_count == 0
    assert dispatcher.seconds_until_due() is None


def test_queued_bundles_apply_in_time_order(dispatcher: OscDispatcher, controller: FakeController,
                                            clock: FakeClock) -> None:
    dispatcher.handle_datagram(bundle(NOW + 3.0, message("/sideman/seed", 3)), SENDER)
    dispatcher.handle_datagram(bundle(NOW + 1.0, message("/sideman/seed", 1)), SENDER)
    dispatcher.handle_datagram(bundle(NOW + 2.0, message("/sideman/seed", 21)), SENDER)
    dispatcher.handle_datagram(bundle(NOW + 2.0, message("/sideman/seed", 22)), SENDER)

    clock.now = NOW + 2.5
    dispatcher.serve_due()
    assert controller.applied() == [[Reseed(1)], [Reseed(21)], [Reseed(22)]]

    clock.now = NOW + 3.5
    dispatcher.serve_due()
    assert controller.applied()[-1] == [Reseed(3)]


def test_message_overtakes_queued_bundle(dispatcher: OscDispatcher, controller: FakeController) -> None:
    dispatcher.handle_datagram(bundle(NOW + 1.0, message("/sideman/stop")), SENDER)
    dispatcher.handle_datagram(message("/sideman/panic"), SENDER)

    assert controller.applied() == [[Panic()]]


def test_far_future_timetag_rejected(dispatcher: OscDispatcher, controller: FakeController, clock: FakeClock,
                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sideman.osc")

    dispatcher.handle_datagram(bundle(NOW + 10.5, message("/sideman/stop")), SENDER)
    clock.now = NOW + 20.0
    dispatcher.serve_due()

    assert controller.applied() == []
    assert dispatcher.pending_count == 0
    assert "127.0.0.1:53211 bundle rejected: its timetag is 10.5 s ahead, more than the limit of 10.0 s" in caplog.text


def test_timetag_at_limit_queued(dispatcher: OscDispatcher) -> None:
    dispatcher.handle_datagram(bundle(NOW + 9.9, message("/sideman/stop")), SENDER)

    assert dispatcher.pending_count == 1


def test_queue_overflow_rejected(controller: FakeController, replies: Replies, clock: FakeClock,
                                 caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = OscDispatcher(controller, replies, clock, max_pending=2)
    caplog.set_level(logging.WARNING, logger="sideman.osc")

    for seed in (1, 2, 3):
        dispatcher.handle_datagram(bundle(NOW + 1.0, message("/sideman/seed", seed)), SENDER)
    clock.now = NOW + 5.0
    dispatcher.serve_due()

    assert controller.applied() == [[Reseed(1)], [Reseed(2)]]
    assert "127.0.0.1:53211 bundle rejected: the queue for time-tagged bundles is full (2 bundles)" in caplog.text


def test_queue_limit_default() -> None:
    assert osc.MAX_PENDING_BUNDLES == 256
    assert osc.MAX_BUNDLE_DELAY_SECONDS == 10.0


# --- Status ------------------------------------------------------------------


def test_status_reply_sent_to_sender(dispatcher: OscDispatcher, replies: Replies) -> None:
    dispatcher.handle_datagram(message("/sideman/status"), SENDER)

    (datagram, address), = replies.sent
    assert address == SENDER
    assert parse_status_reply(datagram) == {"tempo": 120.0, "running": 1, "sampler": "greedy", "seed": 2**40,
                                            "notes": 17, "osc_dropped": 0}


def test_status_reply_argument_types() -> None:
    reply = OscMessage(build_status_reply({"tempo": 96.5, "running": False, "model": "built-in", "notes": 3,
                                           "seed": 2**40}))

    _, index = osc_types.get_string(reply.dgram, 0)
    type_tags, _ = osc_types.get_string(reply.dgram, index)
    assert type_tags == ",sfsisssish"
    assert reply.params == ["tempo", 96.5, "running", 0, "model", "built-in", "notes", 3, "seed", 2**40]


def test_status_reply_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="'ports'"):
        build_status_reply({"ports": ["out"]})  # type: ignore[dict-item]


def test_status_in_bundle_after_commands(dispatcher: OscDispatcher, controller: FakeController,
                                         replies: Replies) -> None:
    datagram = bundle(IMMEDIATELY, message("/sideman/status"), message("/sideman/tempo", 200.0))

    dispatcher.handle_datagram(datagram, SENDER)

    assert controller.applied() == [[SetTempo(200.0)]]
    (reply, _), = replies.sent
    assert parse_status_reply(reply)["tempo"] == 200.0


def test_status_only_applies_nothing(dispatcher: OscDispatcher, controller: FakeController) -> None:
    dispatcher.handle_datagram(message("/sideman/status"), SENDER)

    assert controller.applied() == []


# --- Real sockets on 127.0.0.1 -----------------------------------------------


@pytest.fixture
def server(controller: FakeController):
    with OscServer(controller, "127.0.0.1", 0) as running:
        yield running


def test_server_binds_ephemeral_port(server: OscServer) -> None:
    host, port = server.address

    assert host == "127.0.0.1"
    assert port != 0


def test_server_receives_commands(server: OscServer, controller: FakeController) -> None:
    with SimpleUDPClient(*server.address) as client:
        client.send_message("/sideman/tempo", 150.0)
        client.send_message("/sideman/sampler", ["scale", "temperature"])

    assert controller.wait_for_call() == [SetTempo(150.0)]
    assert controller.wait_for_call() == [SetSampler(("scale", "temperature"))]


def test_server_replies_status_to_sender(server: OscServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(WAIT_SECONDS)

        receiver.sendto(message("/sideman/status"), server.address)
        reply, source = receiver.recvfrom(65536)

    assert source == server.address
    assert parse_status_reply(reply)["sampler"] == "greedy"


def test_server_survives_malformed_datagram(server: OscServer, controller: FakeController,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sideman.osc")

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind(("127.0.0.1", 0))
        sender_port = sender.getsockname()[1]
        sender.sendto(b"\xffnot osc", server.address)
        sender.sendto(negative_size_bundle(), server.address)
    with SimpleUDPClient(*server.address) as client:
        client.send_message("/sideman/seed", 5)

    assert controller.wait_for_call() == [Reseed(5)]
    warnings = [record.getMessage() for record in caplog.records
                if record.name == "sideman.osc" and record.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all(f"127.0.0.1:{sender_port} datagram of" in warning for warning in warnings)


def test_server_applies_future_bundle(server: OscServer, controller: FakeController) -> None:
    # The plain message sent second must overtake the bundle due 2 s later.
    with SimpleUDPClient(*server.address) as client:
        client.send(OscBundle(bundle(time.time() + 2.0, message("/sideman/tempo", 88.0))))
        client.send(OscMessage(message("/sideman/stop")))

    assert controller.wait_for_call() == [Stop()]
    assert controller.wait_for_call() == [SetTempo(88.0)]


def test_server_logs_start_and_stop(controller: FakeController, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sideman.osc")

    server = OscServer(controller, "127.0.0.1", 0)
    server.start()
    host, port = server.address
    server.close()
    server.close()

    infos = [record.getMessage() for record in caplog.records if record.name == "sideman.osc"]
    assert infos == [f"OSC listening on udp {host}:{port}, accepting datagrams from 127.0.0.0/8, ::1/128",
                     "OSC may set no file path: no directory is configured for them (--osc-files DIR)",
                     f"OSC stopped listening on udp {host}:{port}, 0 queued bundles dropped, "
                     "0 datagrams dropped from sources outside the allowlist"]


def test_server_close_stops_thread(controller: FakeController) -> None:
    server = OscServer(controller, "127.0.0.1", 0)
    server.start()

    server.close()

    assert not any(thread.name == "sideman-osc" for thread in threading.enumerate())
    with pytest.raises(RuntimeError, match="not listening"):
        server.address


def test_server_port_in_use(controller: FakeController) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))

        with pytest.raises(OSError, match="cannot listen for OSC on 127.0.0.1"):
            OscServer(controller, "127.0.0.1", taken.getsockname()[1]).start()


def test_server_restart_rejected(controller: FakeController) -> None:
    server = OscServer(controller, "127.0.0.1", 0)
    server.start()
    server.close()

    with pytest.raises(RuntimeError, match="already started"):
        server.start()


class BrokenController(FakeController):
    """Raises a RuntimeError, as a bug would, on the first apply() call only."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = True

    def apply(self, commands: list[Command]) -> None:
        if self.broken:
            self.broken = False
            raise RuntimeError("bug in the engine")
        super().apply(commands)


def test_server_survives_controller_bug(caplog: pytest.LogCaptureFixture) -> None:
    controller = BrokenController()
    caplog.set_level(logging.ERROR, logger="sideman.osc")

    with OscServer(controller, "127.0.0.1", 0) as server, SimpleUDPClient(*server.address) as client:
        client.send_message("/sideman/start", None)
        client.send_message("/sideman/stop", None)

        assert controller.wait_for_call() == [Stop()]

    (record,) = caplog.records
    assert "OSC internal error" in record.getMessage()
    assert "bug in the engine" in caplog.text
