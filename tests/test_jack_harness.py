"""The test harness's own checks: telling a stopped JACK server from a daemon that failed."""

from __future__ import annotations

import os
import signal

import pytest

from sideman.bundle import save_bundle
from tests.factories import random_bundle
from tests.jack import JackServer, JackServerError, _running_servers, check_default_server
from tests.live import DaemonCrash, LiveDaemon

STOPPED_LOG = """JACK server starting in non-realtime mode
JackFreewheelDriver::ProcessSync: SuspendRefNum error
JackAudioDriver::ProcessGraphSync: ProcessWriteSlaves error, engine may now behave abnormally!!
Driver is not running
Cannot create new client
"""
RUNNING_LOG = """JACK server starting in non-realtime mode
JackTimedDriver::Process XRun = 1567 usec
"""


@pytest.fixture
def logged_server(tmp_path, monkeypatch):
    """A JackServer that never started, registered as running and refusing clients, whose log the test writes."""
    server = JackServer("sideman-test-harness", tmp_path / "jackd.log")
    monkeypatch.setattr(server, "accepts_clients", lambda: False)
    monkeypatch.setitem(_running_servers, server.name, server)
    monkeypatch.setenv("JACK_DEFAULT_SERVER", server.name)
    return server


def test_stopped_server_raises_with_its_log(logged_server):
    logged_server.log_path.write_text(STOPPED_LOG)

    with pytest.raises(JackServerError, match="while the test waited for notes") as raised:
        check_default_server("notes")

    assert "Driver is not running" in str(raised.value)


def test_running_server_with_xruns_passes(logged_server):
    logged_server.log_path.write_text(RUNNING_LOG)

    check_default_server("notes")


def test_server_of_another_process_is_not_checked(monkeypatch):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "a-server-these-tests-did-not-start")

    check_default_server("notes")


@pytest.mark.ports
def test_recovered_server_is_not_stopped(own_jack_server):
    # A cycle past the client timeout, after which the server still accepts clients.
    with open(own_jack_server.log_path, "a") as log:
        log.write(STOPPED_LOG.splitlines()[2] + "\n")

    check_default_server("notes")


@pytest.mark.ports
def test_crashed_daemon_fails_its_test(tmp_path, own_jack_server):
    model = tmp_path / "model.sideman"
    save_bundle(random_bundle(n_a=16, seed=11), model)
    daemon = LiveDaemon(tmp_path, "--model", str(model), "--no-midi-in")
    daemon.wait_for_notes(1)

    os.kill(daemon.process.pid, signal.SIGSEGV)
    daemon.process.wait(10)

    with pytest.raises(DaemonCrash, match="ended by SIGSEGV"):
        daemon.close()
