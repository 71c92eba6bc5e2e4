"""Tests of OSC access rules: the source allowlist and the directory that OSC file paths must stay inside.

The matcher and resolver are pure logic, and their addresses are only parsed,
never contacted. The dispatcher tests feed datagram bytes with a fake clock.
The socket test binds 127.0.0.1 and sends from 127.0.0.1 and 127.0.0.2, which
Linux routes to the loopback interface like all of 127.0.0.0/8.
"""

import logging
import os
import socket
from pathlib import Path

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY

from sideman.commands import ApplySeeder, SetParam, SetTempo
from sideman.config.loader import load_settings
from sideman.config.schema import OscSettings
from sideman.errors import InvalidInputError, SettingsError
from sideman import osc
from sideman.osc import OscDispatcher, OscServer
from sideman.osc_access import LOOPBACK_ONLY, MAX_TRACKED_SOURCES, Allowlist, OscFiles, SourceFilter
from sideman.params import Param, Plugin
from sideman.plugins.seeders import MidiFilePhrase
from tests.midi_builders import note_track, scale_phrase, write_midi
from tests.test_engine import Harness
from tests.test_osc import NOW, WAIT_SECONDS, FakeClock, FakeController, Replies, bundle, message, parse_status_reply

ALLOWED = ("127.0.0.1", 53211)
OUTSIDER = ("127.0.0.9", 40000)
OSC_ACCESS_LOGGER = "sideman.osc_access"


class PatternFile(Plugin):
    """A third-party-style seeder with a path parameter, to check that the rule covers every plugin."""

    kind = "seeder"
    name = "pattern"
    params = (
        Param("source", str, "", "pattern file to read", path=True),
        Param("label", str, "", "free text, not a path"),
    )


PLUGINS = {"file": MidiFilePhrase, "pattern": PatternFile}


def drop_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == OSC_ACCESS_LOGGER and record.levelno == logging.WARNING]


def osc_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "sideman.osc" and record.levelno == logging.WARNING]


# --- Allowlist matcher -------------------------------------------------------


def test_allowlist_default_is_loopback() -> None:
    assert LOOPBACK_ONLY.allows("127.0.0.1")
    assert LOOPBACK_ONLY.allows("127.255.0.3")
    assert LOOPBACK_ONLY.allows("::1")
    assert not LOOPBACK_ONLY.allows("192.168.1.7")
    assert not LOOPBACK_ONLY.allows("::2")


def test_allowlist_networks_and_addresses() -> None:
    allowlist = Allowlist.parse(["192.168.1.0/24", "10.0.0.5", "fd00::/8"])

    assert allowlist.allows("192.168.1.0")
    assert allowlist.allows("192.168.1.255")
    assert not allowlist.allows("192.168.2.1")
    assert allowlist.allows("10.0.0.5")
    assert not allowlist.allows("10.0.0.6")
    assert allowlist.allows("fd12::1")
    assert not allowlist.allows("127.0.0.1")


def test_allowlist_ipv4_mapped_source() -> None:
    allowlist = Allowlist.parse(["10.0.0.5"])

    assert allowlist.allows("::ffff:10.0.0.5")
    assert not allowlist.allows("::ffff:10.0.0.6")


def test_allowlist_ipv6_scope_ignored() -> None:
    allowlist = Allowlist.parse(["fe80::/10"])

    assert allowlist.allows("fe80::1%lo")


def test_allowlist_rejects_non_address_source() -> None:
    assert not LOOPBACK_ONLY.allows("localhost")
    assert not LOOPBACK_ONLY.allows("")


@pytest.mark.parametrize("entry, reason", [
    ("localhost", "host names are not accepted"),
    ("10.0.0.300", "expected an IP address or a network in CIDR form"),
    ("192.168.1.0/33", "expected an IP address or a network in CIDR form"),
    ("192.168.1.5/24", 'write "192.168.1.0/24" for the network or "192.168.1.5" for the one address'),
    (5, "expected a string"),
])
def test_allowlist_rejects_bad_entry(entry: object, reason: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Allowlist.parse(["127.0.0.1", entry])

    assert repr(entry) in str(caught.value)
    assert reason in str(caught.value)


def test_allowlist_rejects_empty_list() -> None:
    with pytest.raises(SettingsError, match="empty"):
        Allowlist.parse([])


def test_allowlist_describe() -> None:
    assert Allowlist.parse(["10.0.0.5", "::1"]).describe() == "10.0.0.5/32, ::1/128"


# --- Allowlist settings ------------------------------------------------------


def test_settings_allow_default_is_loopback() -> None:
    settings = load_settings(None, {})

    assert settings.osc.allow == ("127.0.0.0/8", "::1")
    assert settings.osc.files == ""


def test_settings_allow_from_file(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('[osc]\nallow = ["192.168.1.0/24", "10.0.0.5"]\nfiles = "midi"\n')

    settings = load_settings(str(path), {})

    assert settings.osc.allow == ("192.168.1.0/24", "10.0.0.5")
    assert settings.osc.files == "midi"


def test_settings_allow_bad_entry_stops_loading(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('[osc]\nallow = ["10.0.0.5", "my-laptop"]\n')

    with pytest.raises(SettingsError, match="'my-laptop'"):
        load_settings(str(path), {})


def test_settings_files_from_flag() -> None:
    settings = load_settings(None, {"osc": {"files": "/srv/midi"}})

    assert settings.osc.files == "/srv/midi"


def test_osc_settings_check_allow() -> None:
    with pytest.raises(SettingsError, match="'10.0.0.0/4'"):
        OscSettings(allow=("10.0.0.0/4",))


# --- Source filter -----------------------------------------------------------


def test_source_filter_logs_first_drop_per_source(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    sources = SourceFilter(Allowlist.parse(["127.0.0.1"]), clock)

    assert sources.admit("127.0.0.1")
    assert not sources.admit("127.0.0.9")
    assert not sources.admit("127.0.0.9")
    assert not sources.admit("127.0.0.8")

    warnings = drop_warnings(caplog)
    assert len(warnings) == 2
    assert "127.0.0.9" in warnings[0]
    assert "127.0.0.1/32" in warnings[0]
    assert "127.0.0.8" in warnings[1]
    assert sources.dropped == 3
    assert sources.dropped_from("127.0.0.9") == 2
    assert sources.dropped_from("127.0.0.8") == 1
    assert sources.dropped_from("127.0.0.1") == 0


def test_source_filter_summary_at_most_every_window(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    sources = SourceFilter(Allowlist.parse(["127.0.0.1"]), clock, summary_seconds=10.0)
    sources.admit("127.0.0.9")  # the first drop: logged on its own
    caplog.clear()

    for _ in range(500):
        clock.now += 0.01
        sources.admit("127.0.0.9")
    assert drop_warnings(caplog) == []  # 5 s: no summary yet

    clock.now += 5.5  # the window began with the first drop, 10.5 s ago
    sources.summarize_due()
    warnings = drop_warnings(caplog)
    assert len(warnings) == 1
    assert warnings[0] == "OSC 127.0.0.9: 500 more 'not in the allowlist' dropped datagrams in the last 10 s"

    sources.summarize_due()
    assert len(drop_warnings(caplog)) == 1  # nothing new to report

    sources.admit("127.0.0.9")
    clock.now += 9.0
    sources.admit("127.0.0.9")
    assert len(drop_warnings(caplog)) == 1  # the next window is 9 s old
    clock.now += 1.5
    sources.summarize_due()
    assert len(drop_warnings(caplog)) == 2
    assert drop_warnings(caplog)[1].startswith("OSC 127.0.0.9: 2 more 'not in the allowlist' dropped datagrams")


def test_source_filter_bounds_tracked_sources(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    sources = SourceFilter(Allowlist.parse(["127.0.0.1"]), clock, max_sources=2)

    for host in ("127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"):
        sources.admit(host)

    warnings = drop_warnings(caplog)
    assert len(warnings) == 3  # two sources, then one line that the table is full
    assert "from more than 2 senders" in warnings[2]
    assert sources.dropped == 4
    assert sources.dropped_from("127.0.0.13") == 0

    sources.summarize()
    assert drop_warnings(caplog)[-1] == "OSC: 2 more dropped datagrams from further senders in the last 0 s"


def test_source_filter_quiet_source_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    sources = SourceFilter(Allowlist.parse(["127.0.0.1"]), clock, summary_seconds=10.0)
    sources.admit("127.0.0.9")

    clock.now += 10.0
    sources.summarize_due()  # a window without repeats removes the source from the table
    dropped_after_quiet_window = sources.dropped_from("127.0.0.9")
    sources.admit("127.0.0.9")

    assert dropped_after_quiet_window == 0
    assert len(drop_warnings(caplog)) == 2
    assert "127.0.0.9" in drop_warnings(caplog)[1]
    assert sources.dropped_from("127.0.0.9") == 1
    assert sources.dropped == 2


def test_source_filter_flood_bounded_log(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    sources = SourceFilter(Allowlist.parse(["127.0.0.1"]), clock, summary_seconds=10.0)
    per_second, seconds = 2000, 60

    # Every other datagram comes from one steady source, the rest each from a new forged address.
    for index in range(per_second * seconds):
        clock.now += 1.0 / per_second
        host = "192.0.2.7" if index % 2 == 0 else f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"
        assert not sources.admit(host)
    sources.summarize()

    warnings = drop_warnings(caplog)
    windows = seconds // 10 + 1  # the last one cut short by summarize()
    assert len(warnings) <= windows * (2 * MAX_TRACKED_SOURCES + 2)
    assert sum("OSC datagram from 192.0.2.7 dropped" in line for line in warnings) == 1
    assert sources.dropped_from("192.0.2.7") == per_second * seconds // 2  # tracked across every summary
    assert sources.dropped == per_second * seconds


# --- Path resolver -----------------------------------------------------------


@pytest.fixture
def files_root(tmp_path: Path) -> Path:
    root = tmp_path / "osc-files"
    root.mkdir()
    (root / "phrases").mkdir()
    (root / "phrases" / "intro.mid").write_bytes(b"")
    (tmp_path / "secret.mid").write_bytes(b"")
    return root


def test_resolver_relative_inside(files_root: Path) -> None:
    files = OscFiles(files_root)

    assert files.resolve("phrases/intro.mid") == os.path.realpath(files_root / "phrases" / "intro.mid")


def test_resolver_absolute_inside(files_root: Path) -> None:
    files = OscFiles(files_root)
    inside = str(files_root / "phrases" / "intro.mid")

    assert files.resolve(inside) == os.path.realpath(inside)


def test_resolver_dot_dot_inside_allowed(files_root: Path) -> None:
    files = OscFiles(files_root)

    assert files.resolve("phrases/../phrases/intro.mid") == os.path.realpath(files_root / "phrases" / "intro.mid")


@pytest.mark.parametrize("value", ["../secret.mid", "phrases/../../secret.mid", "..", "../osc-files-other/x.mid"])
def test_resolver_rejects_dot_dot_escape(files_root: Path, value: str) -> None:
    files = OscFiles(files_root)

    with pytest.raises(InvalidInputError, match="outside the OSC files directory") as caught:
        files.resolve(value)
    assert repr(value) in str(caught.value)


def test_resolver_rejects_absolute_outside(files_root: Path) -> None:
    files = OscFiles(files_root)
    outside = str(files_root.parent / "secret.mid")

    with pytest.raises(InvalidInputError, match="outside the OSC files directory"):
        files.resolve(outside)
    with pytest.raises(InvalidInputError, match="outside the OSC files directory"):
        files.resolve("/etc/passwd")


def test_resolver_rejects_symlink_pointing_out(files_root: Path) -> None:
    (files_root / "link.mid").symlink_to(files_root.parent / "secret.mid")
    (files_root / "linked-dir").symlink_to(files_root.parent, target_is_directory=True)
    files = OscFiles(files_root)

    with pytest.raises(InvalidInputError, match="resolves to .*secret.mid, outside"):
        files.resolve("link.mid")
    with pytest.raises(InvalidInputError, match="outside the OSC files directory"):
        files.resolve("linked-dir/secret.mid")


def test_resolver_symlink_inside_to_inside(files_root: Path) -> None:
    (files_root / "current.mid").symlink_to(files_root / "phrases" / "intro.mid")
    files = OscFiles(files_root)

    assert files.resolve("current.mid") == os.path.realpath(files_root / "phrases" / "intro.mid")


def test_resolver_root_itself_symlinked(files_root: Path, tmp_path: Path) -> None:
    link = tmp_path / "root-link"
    link.symlink_to(files_root, target_is_directory=True)
    files = OscFiles(link)

    assert files.root == os.path.realpath(files_root)
    assert files.resolve("phrases/intro.mid") == os.path.realpath(files_root / "phrases" / "intro.mid")


def test_resolver_missing_file_inside_allowed(files_root: Path) -> None:
    files = OscFiles(files_root)

    assert files.resolve("not-yet.mid") == os.path.join(os.path.realpath(files_root), "not-yet.mid")


@pytest.mark.parametrize("value, reason", [
    ("", "non-empty string"),
    (".", "outside the OSC files directory"),
    (3, "non-empty string"),
    ("a\0b.mid", "NUL character"),
])
def test_resolver_rejects_odd_values(files_root: Path, value: object, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        OscFiles(files_root).resolve(value)


def test_resolver_without_directory_rejects_every_path() -> None:
    files = OscFiles(None)

    assert files.root is None
    with pytest.raises(InvalidInputError, match="no directory is configured"):
        files.resolve("intro.mid")


def test_resolver_directory_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not an existing directory"):
        OscFiles(tmp_path / "missing")
    (tmp_path / "plain.txt").write_text("")
    with pytest.raises(SettingsError, match="not an existing directory"):
        OscFiles(tmp_path / "plain.txt")


def test_path_param_must_be_string() -> None:
    with pytest.raises(TypeError, match="must be str"):
        Param("size", int, 0, "not a path", path=True)


def test_file_seeder_path_is_marked() -> None:
    declared = {param.name: param for param in MidiFilePhrase.params}

    assert declared["path"].path
    assert not declared["bars"].path


# --- Dispatcher: allowlist ---------------------------------------------------


def allowlist_dispatcher(controller: FakeController, replies: Replies, clock: FakeClock, **options) -> OscDispatcher:
    return OscDispatcher(controller, replies, clock, allowlist=Allowlist.parse(["127.0.0.1"]), plugins=PLUGINS, **options)


def test_dispatcher_drops_disallowed_source(caplog: pytest.LogCaptureFixture) -> None:
    controller, replies, clock = FakeController(), Replies(), FakeClock()
    dispatcher = allowlist_dispatcher(controller, replies, clock)

    dispatcher.handle_datagram(message("/sideman/tempo", 180.0), OUTSIDER)
    dispatcher.handle_datagram(message("/sideman/tempo", 190.0), OUTSIDER)
    dispatcher.handle_datagram(b"\x00garbage that would not parse", OUTSIDER)

    assert controller.applied() == []
    assert dispatcher.sources.dropped == 3
    assert dispatcher.sources.dropped_from(OUTSIDER[0]) == 3
    warnings = drop_warnings(caplog)
    assert len(warnings) == 1
    assert OUTSIDER[0] in warnings[0]
    assert osc_warnings(caplog) == []  # dropped before parsing: no parse warning for the garbage


def test_dispatcher_drop_summary_served_by_loop(caplog: pytest.LogCaptureFixture) -> None:
    controller, replies, clock = FakeController(), Replies(), FakeClock()
    dispatcher = allowlist_dispatcher(controller, replies, clock)
    for _ in range(4):
        dispatcher.handle_datagram(message("/sideman/start"), OUTSIDER)

    clock.now += 10.0
    dispatcher.serve_due()

    warnings = drop_warnings(caplog)
    assert len(warnings) == 2
    assert warnings[1] == f"OSC {OUTSIDER[0]}: 3 more 'not in the allowlist' dropped datagrams in the last 10 s"


def test_dispatcher_accepts_allowed_source() -> None:
    controller, replies, clock = FakeController(), Replies(), FakeClock()
    dispatcher = allowlist_dispatcher(controller, replies, clock)

    dispatcher.handle_datagram(message("/sideman/tempo", 180.0), ALLOWED)

    assert controller.applied() == [[SetTempo(180.0)]]
    assert dispatcher.sources.dropped == 0


def test_status_reports_dropped_count() -> None:
    controller, replies, clock = FakeController(), Replies(), FakeClock()
    dispatcher = allowlist_dispatcher(controller, replies, clock)
    dispatcher.handle_datagram(message("/sideman/status"), OUTSIDER)
    dispatcher.handle_datagram(message("/sideman/status"), OUTSIDER)

    dispatcher.handle_datagram(message("/sideman/status"), ALLOWED)

    (datagram, address), = replies.sent  # no reply went to the dropped source
    assert address == ALLOWED
    assert parse_status_reply(datagram)["osc_dropped"] == 2


# --- Dispatcher: path parameters ---------------------------------------------


def files_dispatcher(controller, files_root: Path | None) -> OscDispatcher:
    return OscDispatcher(controller, Replies(), FakeClock(), files=OscFiles(files_root), plugins=PLUGINS)


def test_path_param_rewritten_to_real_path(files_root: Path) -> None:
    controller = FakeController()
    dispatcher = files_dispatcher(controller, files_root)

    dispatcher.handle_datagram(message("/sideman/param", "file", "path", "phrases/intro.mid"), ALLOWED)

    expected = os.path.realpath(files_root / "phrases" / "intro.mid")
    assert controller.applied() == [[SetParam("file", "path", expected)]]


def test_path_param_without_directory_rejected(caplog: pytest.LogCaptureFixture) -> None:
    controller = FakeController()
    dispatcher = files_dispatcher(controller, None)

    dispatcher.handle_datagram(message("/sideman/param", "file", "path", "/etc/hosts"), ALLOWED)

    assert controller.applied() == []
    warnings = osc_warnings(caplog)
    assert len(warnings) == 1
    assert "127.0.0.1:53211" in warnings[0]
    assert "'/etc/hosts'" in warnings[0]
    assert "no directory is configured" in warnings[0]


def test_path_escape_rejects_whole_bundle(files_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    controller, replies = FakeController(), Replies()
    dispatcher = OscDispatcher(controller, replies, FakeClock(), files=OscFiles(files_root), plugins=PLUGINS)

    datagram = bundle(IMMEDIATELY, message("/sideman/param", "file", "path", "../secret.mid"),
                      message("/sideman/seeder", "file"), message("/sideman/status"))
    dispatcher.handle_datagram(datagram, ALLOWED)

    assert controller.applied() == []  # the seeder never reads anything
    assert len(replies.sent) == 1  # the status request of the bundle is still answered
    warnings = osc_warnings(caplog)
    assert len(warnings) == 1
    assert "127.0.0.1:53211" in warnings[0]
    assert "'../secret.mid'" in warnings[0]
    assert "Nothing of its datagram applies" in warnings[0]


def test_symlink_out_rejected_over_osc(files_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    (files_root / "link.mid").symlink_to(files_root.parent / "secret.mid")
    controller = FakeController()
    dispatcher = files_dispatcher(controller, files_root)

    dispatcher.handle_datagram(message("/sideman/param", "file", "path", "link.mid"), ALLOWED)

    assert controller.applied() == []
    assert "outside the OSC files directory" in osc_warnings(caplog)[0]


def test_third_party_path_param_confined(files_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    controller = FakeController()
    dispatcher = files_dispatcher(controller, files_root)

    dispatcher.handle_datagram(message("/sideman/param", "pattern", "source", "../secret.mid"), ALLOWED)
    dispatcher.handle_datagram(message("/sideman/param", "pattern", "label", "../not-a-path"), ALLOWED)

    assert controller.applied() == [[SetParam("pattern", "label", "../not-a-path")]]
    assert len(osc_warnings(caplog)) == 1


def test_non_path_params_untouched(files_root: Path) -> None:
    controller = FakeController()
    dispatcher = files_dispatcher(controller, files_root)

    dispatcher.handle_datagram(message("/sideman/param", "file", "bars", "1-2"), ALLOWED)
    dispatcher.handle_datagram(message("/sideman/param", "unknown_plugin", "path", "../x"), ALLOWED)

    assert controller.applied() == [[SetParam("file", "bars", "1-2")], [SetParam("unknown_plugin", "path", "../x")]]


def test_queued_bundle_holds_resolved_path(files_root: Path) -> None:
    controller, clock = FakeController(), FakeClock()
    dispatcher = OscDispatcher(controller, Replies(), clock, files=OscFiles(files_root), plugins=PLUGINS)

    dispatcher.handle_datagram(bundle(NOW + 1.0, message("/sideman/param", "file", "path", "phrases/intro.mid")), ALLOWED)
    clock.now += 1.0
    dispatcher.serve_due()

    expected = os.path.realpath(files_root / "phrases" / "intro.mid")
    assert controller.applied() == [[SetParam("file", "path", expected)]]


# --- Through the engine ------------------------------------------------------


def engine_dispatcher(files_root: Path) -> tuple[OscDispatcher, Harness]:
    harness = Harness(autoplay=False)
    dispatcher = OscDispatcher(harness.engine, Replies(), FakeClock(), files=OscFiles(files_root), plugins=PLUGINS)
    return dispatcher, harness


def test_engine_reads_file_inside(files_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sideman.osc")
    write_midi(files_root / "phrases" / "scale.mid", [note_track(scale_phrase())])
    dispatcher, harness = engine_dispatcher(files_root)
    applied: list[list] = []
    original_apply = harness.engine.apply

    def recording_apply(commands):
        original_apply(commands)
        applied.append(list(commands))

    harness.engine.apply = recording_apply

    dispatcher.handle_datagram(bundle(IMMEDIATELY, message("/sideman/param", "file", "path", "phrases/scale.mid"),
                                      message("/sideman/seeder", "file")), ALLOWED)

    assert osc_warnings(caplog) == []
    assert len(applied) == 1
    commands = applied[0]
    assert commands[0] == SetParam("file", "path", os.path.realpath(files_root / "phrases" / "scale.mid"))
    assert commands[1] == ApplySeeder("file")


def test_engine_missing_file_inside_not_found(files_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    dispatcher, _ = engine_dispatcher(files_root)

    dispatcher.handle_datagram(bundle(IMMEDIATELY, message("/sideman/param", "file", "path", "not-yet.mid"),
                                      message("/sideman/seeder", "file")), ALLOWED)

    warnings = osc_warnings(caplog)
    assert len(warnings) == 1
    assert "rejected by the engine" in warnings[0]
    assert "file not found" in warnings[0]
    assert "outside" not in warnings[0]


# --- Real sockets ------------------------------------------------------------


def send_from(source_host: str, datagram: bytes, server_address: tuple[str, int]) -> socket.socket:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((source_host, 0))
    sender.settimeout(WAIT_SECONDS)
    sender.sendto(datagram, server_address)
    return sender


def test_server_allowlist_on_real_socket(caplog: pytest.LogCaptureFixture) -> None:
    controller = FakeController()
    server = OscServer(controller, "127.0.0.1", 0, allowlist=Allowlist.parse(["127.0.0.2/32"]), plugins=PLUGINS)
    server.start()
    try:
        dropped = send_from("127.0.0.1", message("/sideman/tempo", 150.0), server.address)
        accepted = send_from("127.0.0.2", message("/sideman/tempo", 90.0), server.address)
        accepted.sendto(message("/sideman/status"), server.address)

        # The datagram from 127.0.0.1 arrived first, so by the reply it has been dropped.
        reply, _ = accepted.recvfrom(65536)
        dropped.close()
        accepted.close()
    finally:
        server.close()

    status = parse_status_reply(reply)
    assert status["osc_dropped"] == 1
    assert status["tempo"] == 90.0
    assert controller.applied() == [[SetTempo(90.0)]]
    warnings = drop_warnings(caplog)
    assert len(warnings) == 1
    assert "127.0.0.1" in warnings[0]


def test_server_warns_when_reachable(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Binding a reachable address is what the warning is about, so the test binds
    # loopback and makes the server treat that address as reachable.
    monkeypatch.setattr(osc, "_is_loopback", lambda host: False)
    server = OscServer(FakeController(), "127.0.0.1", 0, allowlist=Allowlist.parse(["127.0.0.2"]), plugins=PLUGINS)
    server.start()
    server.close()

    warnings = osc_warnings(caplog)
    assert len(warnings) == 1
    assert "no authentication" in warnings[0]
    assert "127.0.0.2/32" in warnings[0]


def test_server_loopback_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    server = OscServer(FakeController(), "127.0.0.1", 0, plugins=PLUGINS)
    server.start()
    server.close()

    assert osc_warnings(caplog) == []
