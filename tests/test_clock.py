import threading

import pytest

from sideman.clock import FakeClock, MonotonicClock


def test_fake_clock_jumps_to_deadline():
    clock = FakeClock(start=5.0)

    reached = clock.wait_until(7.5, threading.Event())

    assert reached is True
    assert clock.now() == 7.5


def test_fake_clock_never_goes_back():
    clock = FakeClock(start=5.0)

    assert clock.wait_until(1.0, threading.Event()) is True
    assert clock.now() == 5.0


def test_fake_clock_wake_returns_false():
    clock = FakeClock()
    wake = threading.Event()
    wake.set()

    assert clock.wait_until(3.0, wake) is False
    assert clock.now() == 0.0


def test_fake_clock_advance():
    clock = FakeClock()
    clock.advance(0.25)
    clock.advance(0.5)

    assert clock.now() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1.0)


def test_monotonic_clock_reaches_deadline():
    clock = MonotonicClock()
    deadline = clock.now() + 0.02

    reached = clock.wait_until(deadline, threading.Event())

    assert reached is True
    assert clock.now() >= deadline


def test_monotonic_clock_past_deadline_returns_at_once():
    clock = MonotonicClock()

    assert clock.wait_until(clock.now() - 1.0, threading.Event()) is True


def test_monotonic_clock_wake_set_before():
    clock = MonotonicClock()
    wake = threading.Event()
    wake.set()

    assert clock.wait_until(clock.now() + 60.0, wake) is False


def test_monotonic_clock_wake_from_other_thread():
    clock = MonotonicClock()
    wake = threading.Event()
    timer = threading.Timer(0.01, wake.set)
    timer.start()
    start = clock.now()

    # A deadline a minute away: only the wake can end this wait in time.
    reached = clock.wait_until(start + 60.0, wake)

    timer.join()
    assert reached is False
    assert clock.now() - start < 30.0
