"""A running daemon switching to a third-party sampler and seeder over OSC, on a private JACK server."""

import pytest

from sideman.bundle import load_bundle
from tests.live import LiveDaemon
from tests.test_third_party_plugin import plugin_path  # noqa: F401 (the fixture: the plugin package on disk)


@pytest.mark.ports
def test_daemon_switches_to_third_party_plugins(plugin_path, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(plugin_path))
    lowest = int(min(pitch for pitch in load_bundle().vocabulary.pitches if pitch >= 0))

    with LiveDaemon(tmp_path, "--midi-backend", "jack", "--tempo", "300", "--sampler", "temperature") as daemon:
        daemon.wait_for_notes(2)
        daemon.send("/sideman/sampler", "lowest_note")
        daemon.send("/sideman/seeder", "ascending")
        status = daemon.status()
        before = len(daemon.receiver.note_ons())
        daemon.wait_for_notes(before + 6)
        daemon.stop_process()

        assert status["sampler"] == "lowest_note"
        # Notes drawn after both commands were applied: the chooser plays only the lowest note.
        later = [message.note for message in daemon.receiver.note_ons()[before:before + 6]]
        assert later == [lowest] * 6
        log = daemon.log()
        assert "/sideman/seeder 'ascending' accepted" in log
        assert "Traceback" not in log
        assert daemon.receiver.balance() == {}
