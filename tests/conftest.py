"""Requirements of the `ports`, `tensorflow` and `link` markers.

A test marked `ports` gets a private JACK server of its own; one marked
`tensorflow` runs only where TensorFlow imports; one marked `link` runs only
on Linux as root with iproute2's `ip` and aalink, because it runs Ableton Link
peers in a network namespace of its own. Where they are missing such tests
skip, unless SIDEMAN_REQUIRE_PORTS=1, SIDEMAN_REQUIRE_TF=1 or
SIDEMAN_REQUIRE_LINK=1 is set (CI sets all three): then a missing
requirement, or any skip of such a test, fails.

A `ports` test that fails with JackServerError runs once more, on a fresh
server: on a busy shared machine the --sync test server now and then stops
serving clients. The summary counts such reruns and prints the first
attempt's failure. A test that fails again, fails in any other way, or whose
daemon crashed (DaemonCrash), fails.
"""

from __future__ import annotations

import importlib
import itertools
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jack import JackServer, JackServerError, default_server_log_tail
from tests.live import DaemonCrash, describe_started_daemons, started_daemons

REQUIREMENTS = {
    # marker: environment variable that turns its skips into failures
    "ports": "SIDEMAN_REQUIRE_PORTS",
    "tensorflow": "SIDEMAN_REQUIRE_TF",
    "link": "SIDEMAN_REQUIRE_LINK",
}


def _required(marker: str) -> bool:
    return os.environ.get(REQUIREMENTS[marker]) == "1"


def _unavailable(marker: str, reason: str) -> None:
    if _required(marker):
        pytest.fail(f"{reason} ({REQUIREMENTS[marker]}=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


_own_server_numbers = itertools.count(1)
JACK_RERUNS = 1  # further runs of a ports test that failed with JackServerError


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("ports") is not None:
            # pytest-rerunfailures: only_rerun looks through the exception's chain, rerun_except at the outermost exception.
            item.add_marker(pytest.mark.flaky(reruns=JACK_RERUNS, only_rerun=[JackServerError], rerun_except=[DaemonCrash]))


@pytest.fixture
def own_jack_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JackServer]:
    """Start a JACK server for this test alone and point JACK_DEFAULT_SERVER at it until the test ends.

    Every `ports` test gets one, and a test that stops the server requests it
    by name. A shared server carried one test's leftovers into the next: in
    CI runs a client that a test closed left the server's cycle waiting for
    10 s, and the next test's clients were refused ("Driver is not running").
    """
    server = JackServer(f"sideman-test-{os.getpid()}-{next(_own_server_numbers)}", tmp_path / "jackd.log")
    try:
        server.start()
    except JackServerError as error:
        _unavailable("ports", f"no private JACK server: {error}")

    monkeypatch.setenv("JACK_DEFAULT_SERVER", server.name)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _marker_requirements(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("ports") is not None:
        request.getfixturevalue("own_jack_server")

    if request.node.get_closest_marker("tensorflow") is not None:
        try:
            importlib.import_module("tensorflow")
        except ImportError as error:
            _unavailable("tensorflow", f"TensorFlow not importable ({error}); install the train extra")

    if request.node.get_closest_marker("link") is not None:
        _check_link_requirements()


def _check_link_requirements() -> None:
    """Skip (or fail where required) unless network namespaces and aalink are usable."""
    if not sys.platform.startswith("linux"):
        _unavailable("link", f"network namespaces need Linux, not {sys.platform}")
    if os.geteuid() != 0:
        _unavailable("link", "creating a network namespace needs root")
    if shutil.which("ip") is None:
        _unavailable("link", "iproute2's ip command not found; install iproute2")
    try:
        importlib.import_module("aalink")
    except ImportError as error:
        _unavailable("link", f"aalink not importable ({error}); install the link extra: pip install 'sideman[link]'")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # A skip from inside a test or a skipif marker bypasses _unavailable, so
    # the report itself is turned into a failure where the requirement is set.
    report = yield
    if report.failed and item.get_closest_marker("ports") is not None:
        # The server's log shows refused clients and xruns. The daemons' logs
        # and exit statuses show whether a daemon crashed.
        report.sections.append(("end of the JACK server's log", default_server_log_tail()))
        report.sections.append(("sideman daemons of this test", describe_started_daemons()))
    if call.when == "teardown":
        started_daemons.clear()
    if not report.skipped or hasattr(report, "wasxfail"):
        return report

    # A skip's longrepr is (path, line, "Skipped: reason").
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
    for marker in REQUIREMENTS:
        if item.get_closest_marker(marker) is not None and _required(marker):
            report.outcome = "failed"
            report.longrepr = f"a {marker!r} test was skipped but {REQUIREMENTS[marker]}=1 requires it to run ({reason})"
    return report
