"""`sideman run --sync link` next to an Ableton Link peer, both in a network namespace of their own.

The daemon plays into the test's private JACK server (its UNIX sockets do
not depend on the network namespace) while Link's UDP multicast stays on
the namespace's loopback.
"""

import os
import subprocess
import time

import pytest

from tests.jack import Receiver
from tests.live import DAEMON_PORT, SIDEMAN, free_udp_port
from tests.test_link_netns import PEER_BPM, REPOSITORY, SESSION_HEAD_START, netns, start_process  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.link, pytest.mark.ports]

PLAY_SECONDS = 8.0


def test_daemon_follows_the_session_tempo(start_process, netns, tmp_path):
    peer = start_process("peer", PEER_BPM, False)
    time.sleep(SESSION_HEAD_START)

    log_path = tmp_path / "daemon.log"
    command = ["ip", "netns", "exec", netns, "env", f"JACK_DEFAULT_SERVER={os.environ['JACK_DEFAULT_SERVER']}",
               *SIDEMAN, "run", "--sync", "link", "--tempo", "100", "--midi-backend", "jack", "--no-midi-in",
               "--osc-port", str(free_udp_port()), "--duration", str(PLAY_SECONDS), "--log-level", "info"]
    with open(log_path, "wb") as log_file:
        daemon = subprocess.Popen(command, cwd=REPOSITORY, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        with Receiver(DAEMON_PORT) as receiver:
            receiver.wait_for(lambda messages: sum(1 for m in messages if m.type == "note_on") >= 4, timeout=20.0)
            assert daemon.wait(PLAY_SECONDS + 20.0) == 0
            assert receiver.balance() == {}
    finally:
        if daemon.poll() is None:
            daemon.terminate()
            daemon.wait(10)

    log = log_path.read_text()
    assert "Link: playing from beat" in log
    assert f"at {PEER_BPM:.2f} BPM" in log
    assert peer.request("state")["tempo"] == pytest.approx(PEER_BPM)
