"""spatial/arrivals.py: telling frames lost in transport from a slow camera, by the camera's own stamps."""

from __future__ import annotations

import numpy as np
import pytest

from spatialvlm_ros.spatial.arrivals import MIN_FRAMES, ArrivalMonitor


def _feed(monitor: ArrivalMonitor, kept: np.ndarray, rate_hz: float, start_s: float = 100.0) -> None:
    """Frames i of a camera at ``rate_hz`` whose ``kept[i]`` is true arrive 3 ms after their stamp."""
    for i in np.flatnonzero(kept):
        stamp = start_s + i / rate_hz
        monitor.add(stamp, stamp + 0.003)


def test_every_frame_arriving_is_no_problem_at_any_rate():
    for rate in (30.0, 2.0):
        monitor = ArrivalMonitor()
        _feed(monitor, np.ones(50, bool), rate)
        report = monitor.report()
        assert report.problem is None
        assert report.camera_hz == pytest.approx(rate, rel=1e-6)
        assert report.arrival_hz == pytest.approx(rate, rel=1e-6)
        assert report.lost_share == pytest.approx(0.0, abs=1e-9)


def test_frames_lost_in_transport_are_reported_with_the_rates():
    rng = np.random.default_rng(3)
    kept = rng.random(150) < 17 / 50  # the measurement: 17 of 50 frames arrived
    monitor = ArrivalMonitor()
    _feed(monitor, kept, 30.0)
    report = monitor.report()
    assert report.camera_hz == pytest.approx(30.0, rel=1e-6)
    assert report.lost_share == pytest.approx(1 - 17 / 50, abs=0.12)
    assert report.problem is not None and "lost in transport" in report.problem and "Fast DDS" in report.problem


def test_a_few_missing_frames_are_not_a_problem():
    kept = np.ones(60, bool)
    kept[::10] = False  # 10 % lost
    monitor = ArrivalMonitor()
    _feed(monitor, kept, 15.0)
    report = monitor.report()
    assert report.lost_share == pytest.approx(0.1, abs=0.03) and report.problem is None


def test_too_few_frames_zero_stamps_and_a_looped_bag_say_nothing_wrong():
    monitor = ArrivalMonitor()
    _feed(monitor, np.ones(MIN_FRAMES - 1, bool), 30.0)
    assert monitor.report().problem is None and monitor.report().lost_share is None
    zero = ArrivalMonitor()
    for i in range(30):
        zero.add(0.0, i * 0.1)  # a camera that never sets stamps
    report = zero.report()
    assert report.problem is None and report.camera_hz is None and report.arrival_hz == pytest.approx(10.0)
    looped = ArrivalMonitor()
    _feed(looped, np.ones(40, bool), 10.0, start_s=200.0)
    _feed(looped, np.ones(12, bool), 10.0, start_s=100.0)  # stamps went back: the window starts again
    report = looped.report()
    assert report.received == 12 and report.problem is None
