"""Tests of the rate-limited repeat logs: RepeatLog alone on a fake clock, then as the OSC dispatcher and server use it.

No test sleeps: the clock is a number the test moves. The one socket test uses
127.0.0.1 and ephemeral ports, and checks what close() writes.
"""

import logging
import re
import socket

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY

from sideman.commands import SetSampler, Start
from sideman.osc import OscDispatcher, OscServer
from sideman.osc_packets import RejectionKind
from sideman.rejections import MAX_TRACKED, SUMMARY_SECONDS, RepeatLog
from tests.test_osc import NOW, SENDER, FakeClock, FakeController, Replies, bundle, message

LOGGER = "sideman.test_rejections"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def log_records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return caplog


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


def repeat_log(clock: FakeClock, **options) -> RepeatLog:
    options.setdefault("prefix", "OSC")
    options.setdefault("events", "rejections")
    return RepeatLog(logging.getLogger(LOGGER), clock, **options)


# --- RepeatLog -----------------------------------------------------------------


def test_first_event_logged_at_once(clock: FakeClock, log_records: pytest.LogCaptureFixture) -> None:
    log = repeat_log(clock)

    logged = log.record("127.0.0.1:5000", "bad type tag", "OSC %s rejected: %s", "127.0.0.1:5000", "reason one")

    assert logged
    assert messages(log_records) == ["OSC 127.0.0.1:5000 rejected: reason one"]
    assert log_records.records[0].levelno == logging.WARNING


def test_repeats_counted_then_summarised(clock: FakeClock, log_records: pytest.LogCaptureFixture) -> None:
    log = repeat_log(clock)

    for _ in range(1235):
        log.record("127.0.0.1:5000", "bad type tag", "first")
    clock.now += SUMMARY_SECONDS - 0.5
    log.flush_due()
    before_due = messages(log_records)
    clock.now += 0.5
    log.flush_due()

    assert before_due == ["first"]
    assert messages(log_records) == ["first", "OSC 127.0.0.1:5000: 1,234 more 'bad type tag' rejections in the last 10 s"]
    assert log.total == 1235


def test_summary_quotes_latest_detail(clock: FakeClock, log_records: pytest.LogCaptureFixture) -> None:
    log = repeat_log(clock, events="accepted", level=logging.INFO)

    for bpm in (100, 110, 120):
        log.record("h:1", "/sideman/tempo", "tempo %d", bpm, detail=f"/sideman/tempo {bpm}")
    log.flush()

    assert messages(log_records) == ["tempo 100", "OSC h:1: 2 more '/sideman/tempo' accepted in the last 0 s, "
                                                   "the latest: /sideman/tempo 120"]
    assert [record.levelno for record in log_records.records] == [logging.INFO, logging.INFO]


def test_senders_and_kinds_apart(clock: FakeClock, log_records: pytest.LogCaptureFixture) -> None:
    log = repeat_log(clock)

    for _ in range(2):
        log.record("a:1", "unknown address", "a unknown")
        log.record("a:1", "out of range", "a range")
        log.record("b:2", "unknown address", "b unknown")

    assert messages(log_records) == ["a unknown", "a range", "b unknown"]
    assert log.tracked == 3


def test_summary_due_on_next_event(clock: FakeClock, log_records: pytest.LogCaptureFixture) -> None:
    log = repeat_log(clock)
    log.record("a:1", "kind", "first")
    log.record("a:1", "kind", "repeat")

    clock.now += SUMMARY_SECONDS
    logged = log.record("a:1", "kind", "a repeat in the next window")

    assert not logged  # the pair had repeats, so it stays and the new event is counted
    assert messages(log_records) == ["first", "OSC a:1: 1 more 'kind' rejections in the last 10 s"]


def test_quiet_pair_forgotten_then_logged_again(clock: FakeClock, log_records: pytest.LogCaptureFixture) -> None:
    log = repeat_log(clock)
    log.record("a:1", "kind", "first")

    clock.now += SUMMARY_SECONDS
    log.flush_due()
    tracked_after_quiet_window = log.tracked
    logged = log.record("a:1", "kind", "first again")

    assert tracked_after_quiet_window == 0
    assert logged
    assert messages(log_records) == ["first", "first again"]  # no summary: there were no repeats


def test_steady_flood_one_line_per_window(clock: FakeClock, log_records: pytest.LogCaptureFixture) -> None:
    log = repeat_log(clock)

    for _ in range(6 * 100):
        log.record("a:1", "kind", "first")
        clock.now += SUMMARY_SECONDS / 100
    during_flood = messages(log_records)
    log.flush()

    summaries = [re.fullmatch(r"OSC a:1: (\d+) more 'kind' rejections in the last (\d+) s", line)
                 for line in messages(log_records)[1:]]
    assert during_flood[0] == "first"
    assert len(during_flood) == 1 + 5  # one summary per full window, no new first lines
    assert all(summary is not None for summary in summaries)
    assert sum(int(summary.group(1)) for summary in summaries) == 599  # every repeat counted once


def test_count_survives_summaries(clock: FakeClock, log_records: pytest.LogCaptureFixture) -> None:
    log = repeat_log(clock, max_tracked=1)
    for _ in range(3):
        log.record("a:1", "kind", "first")
    log.record("b:2", "kind", "beyond the table")

    log.flush()
    after_summary = log.count("a:1", "kind")
    log.record("a:1", "kind", "first")
    log.flush()
    after_second_summary = log.count("a:1", "kind")
    log.flush()  # a window without repeats removes the pair from the table

    assert after_summary == 3
    assert after_second_summary == 4
    assert log.count("a:1", "kind") == 0
    assert log.count("b:2", "kind") == 0  # never tracked
    assert log.total == 5


def test_flush_without_repeats_writes_nothing(clock: FakeClock, log_records: pytest.LogCaptureFixture) -> None:
    log = repeat_log(clock)

    log.flush()
    log.record("a:1", "kind", "first")
    log.flush()

    assert messages(log_records) == ["first"]


def test_flush_reports_partial_window(clock: FakeClock, log_records: pytest.LogCaptureFixture) -> None:
    log = repeat_log(clock)
    log.record("a:1", "kind", "first")
    log.record("a:1", "kind", "repeat")

    clock.now += 3.2
    log.flush()

    assert messages(log_records)[-1] == "OSC a:1: 1 more 'kind' rejections in the last 3 s"


def test_table_bounded_overflow_counted(clock: FakeClock, log_records: pytest.LogCaptureFixture) -> None:
    log = repeat_log(clock, max_tracked=3)

    for port in range(10):
        log.record(f"127.0.0.1:{port}", "kind", "first from %d", port)
    log.flush()

    lines = messages(log_records)
    assert log.tracked == 0  # none of the tracked three repeated
    assert lines[:3] == ["first from 0", "first from 1", "first from 2"]
    assert lines[3] == ("OSC: rejections from more than 3 senders and kinds within 10 s: further ones are counted "
                        "together until the next summary")
    assert lines[4] == "OSC: 7 more rejections from further senders in the last 0 s"
    assert len(lines) == 5


def test_spoofed_ports_bound_memory(clock: FakeClock, log_records: pytest.LogCaptureFixture) -> None:
    log = repeat_log(clock)

    for port in range(20 * MAX_TRACKED):
        log.record(f"127.0.0.1:{port}", "kind", "first")
        log.record(f"127.0.0.1:{port}", "kind", "repeat")

    assert log.tracked == MAX_TRACKED
    assert len(messages(log_records)) == MAX_TRACKED + 1  # one first line per tracked pair, one overflow notice


def test_max_tracked_must_be_positive(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="max_tracked"):
        repeat_log(clock, max_tracked=0)


# --- The OSC dispatcher's logs --------------------------------------------------


@pytest.fixture
def controller() -> FakeController:
    return FakeController()


@pytest.fixture
def dispatcher(controller: FakeController, clock: FakeClock) -> OscDispatcher:
    return OscDispatcher(controller, Replies(), clock)


def osc_messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "sideman.osc" and record.levelno == level]


def test_accepted_flood_summarised(dispatcher: OscDispatcher, controller: FakeController, clock: FakeClock,
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sideman.osc")

    for step in range(200):
        dispatcher.handle_datagram(message("/sideman/tempo", 100.0 + step), SENDER)
    dispatcher.handle_datagram(message("/sideman/seed", 5), SENDER)
    clock.now += SUMMARY_SECONDS
    dispatcher.serve_due()

    assert len(controller.applied()) == 201  # every one is applied; only the log is cut short
    assert osc_messages(caplog, logging.INFO) == [
        "OSC 127.0.0.1:53211 /sideman/tempo 100.0 accepted",
        "OSC 127.0.0.1:53211 /sideman/seed 5 accepted",
        "OSC 127.0.0.1:53211: 199 more '/sideman/tempo' accepted in the last 10 s, the latest: /sideman/tempo 299.0",
    ]


@pytest.mark.parametrize(("datagram", "kind"), [
    (b"", RejectionKind.NOT_OSC),
    (b"garbage!", RejectionKind.NOT_OSC),
    (b"/sideman/tempo" + b"\x00" * 2 + b",c\x00\x00" + b"\x00" * 4, RejectionKind.BAD_TYPE_TAG),
    (b"#bundle\x00\x00\x00", RejectionKind.MALFORMED_BUNDLE),
    (b"/sideman/tempo\x00\x00,i\x00\x00\x00\x00", RejectionKind.MALFORMED_MESSAGE),
    (message("/sideman/prime", *([60, 1.0] * 900)), RejectionKind.DATAGRAM_TOO_LARGE),
    (message("/sideman/tempi", 120.0), RejectionKind.UNKNOWN_ADDRESS),
    (message("/sideman/tempo", 120.0, 1.0), RejectionKind.WRONG_ARGUMENT_COUNT),
    (message("/sideman/tempo", "fast"), RejectionKind.WRONG_ARGUMENT_TYPE),
    (message("/sideman/tempo", float("nan")), RejectionKind.NOT_FINITE),
    (message("/sideman/seed", float("inf")), RejectionKind.NOT_FINITE),
    (message("/sideman/tempo", 1000.0), RejectionKind.OUT_OF_RANGE),
    (bundle(NOW + 60.0, message("/sideman/stop")), RejectionKind.BUNDLE_TOO_FAR_AHEAD),
    (message("/sideman/param", "file", "path", "/etc/hosts"), RejectionKind.PATH_NOT_ALLOWED),
])
def test_rejection_kinds(dispatcher: OscDispatcher, caplog: pytest.LogCaptureFixture, datagram: bytes,
                         kind: RejectionKind) -> None:
    caplog.set_level(logging.WARNING, logger="sideman.osc")

    dispatcher.handle_datagram(datagram, SENDER)
    dispatcher.handle_datagram(datagram, SENDER)
    dispatcher.flush_logs()

    warnings = osc_messages(caplog, logging.WARNING)
    assert len(warnings) == 2
    assert warnings[0].startswith("OSC 127.0.0.1:53211 ")
    assert warnings[1].startswith(f"OSC 127.0.0.1:53211: 1 more '{kind}' rejections")


def test_engine_rejection_kind(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = OscDispatcher(FakeController(rejected_types=(SetSampler,)), Replies(), clock)
    caplog.set_level(logging.WARNING, logger="sideman.osc")

    for name in ("no_such_sampler", "other_sampler", "third_sampler"):
        dispatcher.handle_datagram(message("/sideman/sampler", name), SENDER)
    dispatcher.flush_logs()

    warnings = osc_messages(caplog, logging.WARNING)
    assert len(warnings) == 2
    assert "'no_such_sampler' rejected by the engine" in warnings[0]
    assert warnings[1].startswith("OSC 127.0.0.1:53211: 2 more 'rejected by the engine' rejections")
    assert "third_sampler" in warnings[1]  # the latest reason


def test_queue_full_kind(controller: FakeController, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    dispatcher = OscDispatcher(controller, Replies(), clock, max_pending=1)
    caplog.set_level(logging.WARNING, logger="sideman.osc")

    for seed in range(4):
        dispatcher.handle_datagram(bundle(NOW + 1.0, message("/sideman/seed", seed)), SENDER)
    dispatcher.flush_logs()

    warnings = osc_messages(caplog, logging.WARNING)
    assert len(warnings) == 2
    assert "queue for time-tagged bundles is full" in warnings[0]
    assert warnings[1].startswith("OSC 127.0.0.1:53211: 2 more 'bundle queue full' rejections")


def test_long_reason_cut(dispatcher: OscDispatcher, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sideman.osc")

    dispatcher.handle_datagram(message("/" + "x" * 7000, 1), SENDER)
    dispatcher.handle_datagram(message("/sideman/tempo", "y" * 7000), SENDER)
    dispatcher.handle_datagram(message("/sideman/param", "file", "path", "z" * 7000), SENDER)

    warnings = osc_messages(caplog, logging.WARNING)
    assert len(warnings) == 3
    assert all(len(warning) < 1000 for warning in warnings)


def test_summary_written_by_poll_loop(dispatcher: OscDispatcher, clock: FakeClock,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sideman.osc")
    for _ in range(3):
        dispatcher.handle_datagram(message("/sideman/nope"), SENDER)

    clock.now += SUMMARY_SECONDS
    dispatcher.serve_due()

    assert osc_messages(caplog, logging.WARNING)[-1].startswith("OSC 127.0.0.1:53211: 2 more 'unknown address'")


def test_server_close_writes_pending_summaries(controller: FakeController, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sideman.osc")

    with OscServer(controller, "127.0.0.1", 0) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        sender = f"127.0.0.1:{client.getsockname()[1]}"
        for _ in range(4):
            client.sendto(message("/sideman/tempo", "fast"), server.address)
            client.sendto(message("/sideman/start"), server.address)
        for _ in range(4):
            # One sender's datagrams are handled in order, so the rejections came before each start.
            assert controller.wait_for_call() == [Start()]

    lines = [record.getMessage() for record in caplog.records if record.name == "sideman.osc"]
    assert any(line.startswith(f"OSC {sender}: 3 more 'wrong argument type' rejections") for line in lines)
    assert any(line.startswith(f"OSC {sender}: 3 more '/sideman/start' accepted") for line in lines)
    assert lines[-1].startswith("OSC stopped listening")


def test_immediate_bundle_messages_logged_once(dispatcher: OscDispatcher, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sideman.osc")

    datagram = bundle(IMMEDIATELY, message("/sideman/stop"), message("/sideman/start"))
    for _ in range(3):
        dispatcher.handle_datagram(datagram, SENDER)

    assert osc_messages(caplog, logging.INFO) == ["OSC 127.0.0.1:53211 /sideman/stop accepted",
                                                  "OSC 127.0.0.1:53211 /sideman/start accepted"]
