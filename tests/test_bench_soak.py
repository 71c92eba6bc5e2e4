"""Tests of the soak run's pure parts: note balance, log grouping, the VmRSS verdict, the changes and onset matching.

No JACK server and no daemon: the soak itself is run by hand (`python -m bench.soak`).
"""

import random

import mido
import numpy as np
import pytest

from bench.live import ShownNote
from bench.soak import shown_arguments
from bench.soak_balance import NoteBalance, note_balance
from bench.soak_changes import CHANGE_KINDS, live_mode_datagram, random_change
from bench.soak_log import connection_lines, count_reconnections, group_log_lines, normalise_message, notes_played
from bench.soak_memory import rss_verdict
from bench.soak_onsets import NO_CHANGE_YET, OnsetMatch, errors_by_last_change, match_onsets
from bench.soak_receiver import ReceivedMessage
from bench.soak_run import Schedule
from sideman.osc_packets import translate_datagram
from sideman.notenames import pitch_name


def note_on(pitch: int, velocity: int = 90, channel: int = 0) -> mido.Message:
    return mido.Message("note_on", channel=channel, note=pitch, velocity=velocity)


def note_off(pitch: int, channel: int = 0) -> mido.Message:
    return mido.Message("note_off", channel=channel, note=pitch, velocity=0)


def balance_of(messages: list[mido.Message]) -> NoteBalance:
    balance = NoteBalance()
    for message in messages:
        balance.add(message)
    return balance


# --- Note balance -----------------------------------------------------------------


def test_balance_exact_for_paired_notes():
    balance = balance_of([note_on(60), note_off(60), note_on(62), note_on(64), note_off(62), note_off(64), note_on(60), note_off(60)])

    rows = {row.pitch: row for row in balance.rows()}
    assert balance.exact
    assert rows[60].note_ons == 2
    assert rows[60].note_offs == 2
    assert sorted(rows) == [60, 62, 64]


def test_balance_reports_missing_note_off():
    balance = balance_of([note_on(60), note_off(60), note_on(60), note_on(67), note_off(67)])

    rows = {row.pitch: row for row in balance.rows()}
    assert not balance.exact
    assert rows[60].unmatched_note_ons == 1
    assert not rows[60].exact
    assert rows[67].exact


def test_balance_reports_stray_note_off():
    balance = balance_of([note_off(62), note_on(62), note_off(62)])

    row = balance.rows()[0]
    assert row.stray_note_offs == 1
    assert row.unmatched_note_ons == 0
    assert not balance.exact


def test_balance_counts_velocity_zero_as_note_off():
    balance = balance_of([note_on(60), note_on(60, velocity=0)])

    row = balance.rows()[0]
    assert balance.exact
    assert row.note_ons == 1
    assert row.note_offs == 1


def test_balance_keeps_channels_apart():
    balance = balance_of([note_on(60, channel=0), note_off(60, channel=1)])

    rows = {(row.channel, row.pitch): row for row in balance.rows()}
    assert rows[(0, 60)].unmatched_note_ons == 1
    assert rows[(1, 60)].stray_note_offs == 1


def test_balance_all_notes_off_closes_nothing():
    balance = balance_of([note_on(60), mido.Message("control_change", channel=0, control=123, value=0)])

    assert balance.all_notes_off == 1
    assert not balance.exact
    assert balance.rows()[0].unmatched_note_ons == 1


def test_balance_closing_ends_open_notes():
    """A note open when the port closes ends with it; a note_off for it after the port returns is stray."""
    balance = NoteBalance()
    balance.add(note_on(60))
    balance.port_closed()

    assert balance.exact
    assert balance.rows()[0].open_at_disconnect == 1

    balance.add(note_off(60))
    row = balance.rows()[0]
    assert not balance.exact
    assert row.stray_note_offs == 1


def test_balance_note_cut_by_closing_is_counted():
    received = [
        ReceivedMessage(0, note_on(60), 1.0),
        ReceivedMessage(0, note_off(60), 1.1),
        ReceivedMessage(0, note_on(62), 1.2),
        ReceivedMessage(1, note_on(64), 4.0),
        ReceivedMessage(1, note_off(64), 4.1),
    ]

    balance = note_balance(received)

    rows = {row.pitch: row for row in balance.rows()}
    assert balance.exact
    assert rows[62].unmatched_note_ons == 0
    assert rows[62].open_at_disconnect == 1
    assert rows[60].open_at_disconnect == 0
    assert rows[64].exact


def test_balance_counts_every_closing_between_segments():
    """Segments 0 and 2 with none received in segment 1: the note ends at the first closing, and its late note_off is stray."""
    received = [ReceivedMessage(0, note_on(60), 1.0), ReceivedMessage(2, note_off(60), 9.0)]

    row = note_balance(received).rows()[0]

    assert row.open_at_disconnect == 1
    assert row.stray_note_offs == 1


# --- Daemon log -------------------------------------------------------------------

LOG = """\
2026-12-05 00:47:56,611 INFO sideman.daemon: samplers installed: greedy
2026-12-05 00:48:01,100 WARNING sideman.osc: OSC 127.0.0.1:40112 /sideman/tempo 900.0 rejected: tempo in BPM 900.0 is out of range: allowed 20 to 400
2026-12-05 00:48:02,200 WARNING sideman.osc: OSC 127.0.0.1:51234 /sideman/tempo 1000.5 rejected: tempo in BPM 1000.5 is out of range: allowed 20 to 400
2026-12-05 00:48:03,300 WARNING sideman.osc: OSC [::1]:5000 /sideman/tempo 950 rejected: tempo in BPM 950 is out of range: allowed 20 to 400
2026-12-05 00:48:04,400 ERROR sideman.engine: could not apply seeder 'phrase'; play goes on without it
Traceback (most recent call last):
  File "engine.py", line 12, in apply
WARNING this line is not in the log format
2026-12-05 00:48:05,500 WARNING sideman.midiport: MIDI output sideman:out lost its connection to 'rx-1234:in'
2026-12-05 00:48:07,600 INFO sideman.midiport: MIDI output sideman:out reconnected to 'rx-1234:in' after 2.1 s
2026-12-05 00:48:08,700 DEBUG sideman.midiport: looking for 'rx-1234:in' to reconnect
"""


def test_normalise_replaces_numbers_and_addresses():
    assert normalise_message("OSC 127.0.0.1:40112 tempo 900.0 rejected") == "OSC <address> tempo <n> rejected"
    assert normalise_message("from [::1]:5000 at 0x7f3a2c  now") == "from <address> at <address> now"
    assert normalise_message("client sideman-01 lost 3 notes, -2.5e-3 s") == "client sideman-<n> lost <n> notes, <n> s"


def test_log_groups_merge_repeats_by_kind():
    groups = group_log_lines(LOG)

    kinds = [(group.level, group.logger, group.count) for group in groups]
    assert kinds[0] == ("WARNING", "sideman.osc", 3)
    assert ("ERROR", "sideman.engine", 1) in kinds
    assert ("WARNING", "sideman.midiport", 1) in kinds
    assert len(groups) == 3
    assert groups[0].kind == "OSC <address> /sideman/tempo <n> rejected: tempo in BPM <n> is out of range: allowed <n> to <n>"
    assert groups[0].example.startswith("OSC 127.0.0.1:40112 ")


def test_log_groups_skip_info_and_unformatted_lines():
    groups = group_log_lines(LOG)

    assert all(group.level in ("WARNING", "ERROR") for group in groups)
    assert all("not in the log format" not in group.example for group in groups)


def test_connection_lines_at_any_level():
    groups = connection_lines(LOG)

    levels = sorted(group.level for group in groups)
    assert levels == ["DEBUG", "INFO"]
    assert sum(group.count for group in groups) == 2


def test_reconnections_count_restored_lines():
    log_text = LOG + (
        "2026-12-05 00:49:05,500 WARNING sideman.portkeeper: MIDI connection sideman:out -> rx-1234:in lost: a port is gone; connecting again when it returns\n"
        "2026-12-05 00:49:07,500 WARNING sideman.portkeeper: MIDI connection sideman:out -> rx-1234:in restored\n"
    )

    assert count_reconnections(log_text) == 2
    assert count_reconnections("") == 0


def test_log_groups_of_empty_log():
    assert group_log_lines("") == []
    assert connection_lines("") == []


# --- VmRSS verdict ------------------------------------------------------------------


def test_rss_flat_within_tolerance():
    readings = [(0.0, 50_000), (10.0, 90_000), (30.0, 100_000), (60.0, 104_000), (90.0, 109_000), (120.0, 103_000)]

    verdict = rss_verdict(readings, warmup=30.0)

    assert verdict.start_kb == 100_000
    assert verdict.end_kb == 103_000
    assert verdict.max_kb == 109_000
    assert verdict.flat
    assert verdict.end_change == pytest.approx(0.03)


def test_rss_growth_beyond_tolerance_fails():
    readings = [(30.0, 100_000), (60.0, 105_000), (90.0, 111_000)]

    verdict = rss_verdict(readings, warmup=30.0)

    assert not verdict.flat
    assert verdict.max_kb == 111_000


def test_rss_passing_spike_fails():
    """A reading above the limit fails the verdict even when the end value is back near the start."""
    readings = [(30.0, 100_000), (60.0, 120_000), (90.0, 100_500)]

    verdict = rss_verdict(readings, warmup=30.0)

    assert verdict.end_change == pytest.approx(0.005)
    assert not verdict.flat


def test_rss_drop_beyond_tolerance_fails():
    verdict = rss_verdict([(30.0, 100_000), (60.0, 85_000)], warmup=30.0)

    assert verdict.min_kb == 85_000
    assert not verdict.flat


def test_rss_tolerance_edge_counts_as_flat():
    verdict = rss_verdict([(30.0, 100_000), (60.0, 110_000), (90.0, 90_000)], warmup=30.0)

    assert verdict.flat


def test_rss_without_reading_after_warmup_raises():
    with pytest.raises(ValueError, match="warm-up of 30 s"):
        rss_verdict([(0.0, 100_000), (29.0, 100_000)], warmup=30.0)


# --- Changes and schedule -------------------------------------------------------------


def test_random_changes_pass_daemon_checks():
    rng = random.Random(7)
    kinds = set()

    for index in range(2000):
        change = random_change(rng, live=index % 2 == 0)
        packet = translate_datagram(change.datagram, ("127.0.0.1", 9))
        assert packet.rejected == (), change.text
        assert packet.commands, change.text
        kinds.add(change.kind)

    assert kinds == set(CHANGE_KINDS)


def test_random_changes_in_live_mode_keep_the_seeder():
    rng = random.Random(3)

    kinds = {random_change(rng, live=True).kind for _ in range(1000)}

    assert "phrase seeder" not in kinds


def test_tempo_changes_stay_at_200_bpm_or_more():
    rng = random.Random(5)

    tempos = [change.tempo for change in (random_change(rng, live=False) for _ in range(2000)) if change.tempo is not None]

    assert tempos
    assert min(tempos) >= 200.0
    assert max(tempos) <= 240.0


def test_live_mode_datagrams_pass_daemon_checks():
    for on in (True, False):
        packet = translate_datagram(live_mode_datagram(on), ("127.0.0.1", 9))
        assert packet.rejected == ()
        assert packet.commands


def test_schedule_places_port_closings():
    assert Schedule.for_minutes(6.0, 5.0).disconnects == (300.0,)
    assert Schedule.for_minutes(2.0, 5.0).disconnects == ()
    assert Schedule.for_minutes(30.0, 5.0).disconnects == (300.0, 600.0, 900.0, 1200.0, 1500.0)


def test_schedule_live_mode_in_middle_third():
    schedule = Schedule.for_minutes(6.0, 5.0)

    assert schedule.live_start == 120.0
    assert schedule.live_end == 240.0


# --- Onset matching ---------------------------------------------------------------------


def shown_line(count: int, step: float = 0.1) -> list[ShownNote]:
    pitches = [60, 62, 64, 65, 67, 69, 71, 72, 74]
    return [ShownNote(index * step, pitch_name(pitches[index * 5 % len(pitches)]), 0.5) for index in range(count)]


def received_from(shown: list[ShownNote], indices: range, segment: int, offset: float, delays: dict[int, float]) -> list[ReceivedMessage]:
    """Received note_ons of shown notes `indices`, each arriving `offset` s after its shown time plus its delay."""
    names = {pitch_name(pitch): pitch for pitch in range(128)}
    received = []
    for index in indices:
        arrival = shown[index].seconds + offset + delays.get(index, 0.0)
        received.append(ReceivedMessage(segment, note_on(names[shown[index].name]).copy(time=arrival), arrival))
        received.append(ReceivedMessage(segment, note_off(names[shown[index].name]).copy(time=arrival + 0.05), arrival + 0.05))
    return received


def test_onsets_match_across_a_gap():
    shown = shown_line(60)
    received = received_from(shown, range(0, 20), 0, 100.0, {5: 0.004}) + received_from(shown, range(35, 60), 1, 100.0, {40: -0.002})

    match = match_onsets(shown, received)

    assert match.matched == 45
    assert match.unmatched_received == 0
    assert match.pitch_mismatches == 0
    assert np.max(np.abs(match.errors)) == pytest.approx(4.0)
    assert np.min(match.errors) == pytest.approx(-2.0)
    assert match.ideal[20] == pytest.approx(shown[35].seconds)


def test_onsets_segment_without_shown_notes_is_unmatched():
    shown = shown_line(20)
    received = received_from(shown, range(0, 20), 0, 5.0, {}) + received_from(shown_line(30), range(25, 30), 1, 5.0, {})

    match = match_onsets(shown, received)

    assert match.matched == 20
    assert match.unmatched_received == 5


def test_onset_errors_grouped_by_latest_change():
    match = OnsetMatch(
        errors=np.array([1.0, -2.0, 3.0, 4.0]), ideal=np.zeros(4), walls=np.array([0.5, 1.5, 2.5, 2.6]),
        matched=4, unmatched_received=0, pitch_mismatches=0,
    )
    history = [(1.0, "tempo"), (2.0, "swing")]

    groups = errors_by_last_change(match, history)

    assert list(groups[NO_CHANGE_YET]) == [1.0]
    assert list(groups["tempo"]) == [2.0]
    assert list(groups["swing"]) == [3.0, 4.0]


def test_notes_played_prefers_shutdown_line():
    log_text = "2026-12-05 00:48:58,002 INFO sideman.engine: engine stopped after 394 notes\n"

    assert notes_played(log_text, {"notes": 390}) == 394
    assert notes_played("", {"notes": 390}) == 390


def test_shown_command_hides_keep_folder():
    assert shown_arguments(["--minutes", "6", "--keep", "/tmp/x"]) == ["--minutes", "6", "--keep", "FOLDER"]
    assert shown_arguments(["--keep=/tmp/x", "--out", "docs/soak.md"]) == ["--keep=FOLDER", "--out", "docs/soak.md"]
