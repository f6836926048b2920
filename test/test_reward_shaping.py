"""Reward shaping, with every expected number worked by hand."""

from __future__ import annotations

import math

import pytest

from spatialvlm_ros.spatial.reward import RewardConfig, RewardShaper, RewardStep


def _rewards(shaper: RewardShaper, distances) -> list[float]:
    return [shaper.step(d).reward for d in distances]


def test_negative_distance():
    shaper = RewardShaper(RewardConfig(mode="negative_distance", scale=2.0))
    steps = [shaper.step(d) for d in (0.5, 0.3, 0.0)]
    # -2 * 0.5, -2 * 0.3, -2 * 0
    assert [s.reward for s in steps] == [pytest.approx(-1.0), pytest.approx(-0.6), pytest.approx(0.0)]
    assert [s.distance_m for s in steps] == [0.5, 0.3, 0.0]
    assert [s.raw_distance_m for s in steps] == [0.5, 0.3, 0.0]
    assert not any(s.success for s in steps)  # success_distance_m 0 disables success, even at d = 0
    assert isinstance(steps[0], RewardStep)


def test_defaults_are_negative_distance_with_unit_scale():
    shaper = RewardShaper(RewardConfig())
    assert shaper.step(0.25).reward == pytest.approx(-0.25)


def test_progress_is_zero_on_the_first_frame_then_the_distance_closed():
    shaper = RewardShaper(RewardConfig(mode="progress", scale=10.0))
    # 0 (first frame), 10 * (0.5 - 0.4), 10 * (0.4 - 0.45), 10 * (0.45 - 0.45), 10 * (0.45 - 0.15)
    assert _rewards(shaper, [0.5, 0.4, 0.45, 0.45, 0.15]) == [
        0.0, pytest.approx(1.0), pytest.approx(-0.5), pytest.approx(0.0), pytest.approx(3.0)]


def test_progress_is_zero_on_the_first_frame_after_reset():
    shaper = RewardShaper(RewardConfig(mode="progress", scale=1.0))
    _rewards(shaper, [0.9, 0.8])
    shaper.reset()
    # The jump from 0.8 to 0.2 is across episodes and earns nothing; then 0.2 -> 0.1 earns 0.1.
    assert _rewards(shaper, [0.2, 0.1]) == [0.0, pytest.approx(0.1)]


@pytest.mark.parametrize("mode", ["negative_distance", "progress"])
def test_success_distance_and_bonus_boundaries(mode):
    config = RewardConfig(mode=mode, scale=1.0, success_distance_m=0.1, success_bonus=5.0)
    cases = [  # (previous distance, distance, success)
        (0.2, 0.1000001, False),  # just outside
        (0.2, 0.1, True),  # exactly at the success distance counts
        (0.2, 0.05, True),
    ]
    for previous, distance, success in cases:
        shaper = RewardShaper(config)
        shaper.step(previous)
        step = shaper.step(distance)
        base = -distance if mode == "negative_distance" else previous - distance
        assert step.success is success, (previous, distance)
        assert step.reward == pytest.approx(base + (5.0 if success else 0.0)), (previous, distance)


def test_success_on_the_first_progress_frame_gets_only_the_bonus():
    shaper = RewardShaper(RewardConfig(mode="progress", success_distance_m=0.1, success_bonus=2.5))
    step = shaper.step(0.08)
    assert step.success and step.reward == pytest.approx(2.5)


def test_negative_bonus_is_a_penalty():
    shaper = RewardShaper(RewardConfig(success_distance_m=0.5, success_bonus=-1.0))
    assert shaper.step(0.5).reward == pytest.approx(-1.5)


def test_median_smoothing_window():
    shaper = RewardShaper(RewardConfig(mode="negative_distance", smoothing_window=3))
    raw = [1.0, 0.2, 0.4, 5.0, 0.3]
    steps = [shaper.step(d) for d in raw]
    # medians of [1.0], [1.0, 0.2], [1.0, 0.2, 0.4], [0.2, 0.4, 5.0], [0.4, 5.0, 0.3]
    assert [s.distance_m for s in steps] == [1.0, pytest.approx(0.6), 0.4, 0.4, 0.4]
    assert [s.raw_distance_m for s in steps] == raw
    assert [s.reward for s in steps] == [-1.0, pytest.approx(-0.6), -0.4, -0.4, -0.4]  # the 5 m outlier is ignored


def test_progress_and_success_use_the_smoothed_distance():
    shaper = RewardShaper(RewardConfig(mode="progress", scale=1.0, smoothing_window=3,
                                       success_distance_m=0.1, success_bonus=1.0))
    steps = [shaper.step(d) for d in (0.5, 0.05, 0.05)]
    # smoothed: 0.5, median(0.5, 0.05) = 0.275, median(0.5, 0.05, 0.05) = 0.05
    assert [s.distance_m for s in steps] == [0.5, pytest.approx(0.275), 0.05]
    assert [s.success for s in steps] == [False, False, True]
    assert [s.reward for s in steps] == [0.0, pytest.approx(0.225), pytest.approx(0.225 + 1.0)]


def test_reset_clears_the_smoothing_window():
    shaper = RewardShaper(RewardConfig(smoothing_window=3))
    _rewards(shaper, [5.0, 5.0, 5.0])
    shaper.reset()
    assert shaper.step(0.2).distance_m == 0.2  # no 5 m left over from the last episode


def test_reconfigure_keeps_the_episode_state_when_the_window_is_unchanged():
    shaper = RewardShaper(RewardConfig(mode="progress", scale=1.0, smoothing_window=3))
    _rewards(shaper, [1.0, 0.2, 0.4])  # window [1.0, 0.2, 0.4], previous 0.4
    shaper.reconfigure(RewardConfig(mode="progress", scale=10.0, smoothing_window=3))
    assert shaper.config.scale == 10.0
    step = shaper.step(0.1)  # window [0.2, 0.4, 0.1] -> 0.2; the baseline 0.4 was kept
    assert step.distance_m == 0.2 and step.reward == pytest.approx(10.0 * (0.4 - 0.2))


def test_reconfigure_to_progress_keeps_the_baseline():
    shaper = RewardShaper(RewardConfig(mode="negative_distance"))
    shaper.step(0.5)
    shaper.reconfigure(RewardConfig(mode="progress", scale=2.0))
    assert shaper.step(0.3).reward == pytest.approx(2.0 * (0.5 - 0.3))


def test_reconfigure_to_a_new_window_size_keeps_the_newest_distances():
    shaper = RewardShaper(RewardConfig(mode="negative_distance", smoothing_window=3))
    _rewards(shaper, [9.0, 1.0, 2.0])
    shaper.reconfigure(RewardConfig(mode="negative_distance", smoothing_window=2))
    # the window keeps the newest two (1.0, 2.0) and the new frame pushes out 1.0: median(2.0, 4.0)
    assert shaper.step(4.0).distance_m == pytest.approx(3.0)
    shaper.reconfigure(RewardConfig(mode="negative_distance", smoothing_window=4))
    # grown: [2.0, 4.0] kept; 6.0 joins: median(2, 4, 6) = 4; 0.0 joins: median(2, 4, 6, 0) = 3
    assert shaper.step(6.0).distance_m == pytest.approx(4.0)
    assert shaper.step(0.0).distance_m == pytest.approx(3.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "dense"}, "reward.mode='dense' is not accepted; accepted: negative_distance, progress"),
    ({"scale": -1.0}, "reward.scale must be finite and >= 0"),
    ({"scale": math.nan}, "reward.scale must be finite and >= 0"),
    ({"scale": math.inf}, "reward.scale must be finite and >= 0"),
    ({"success_distance_m": -0.1}, "reward.success_distance_m must be >= 0"),
    ({"success_distance_m": math.nan}, "reward.success_distance_m must be >= 0"),
    ({"success_bonus": math.inf}, "reward.success_bonus must be finite"),
    ({"smoothing_window": 0}, "reward.smoothing_window must be >= 1"),
])
def test_bad_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError) as info:
        RewardConfig(**kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize("distance", [math.nan, -0.01, math.inf, -math.inf])
def test_bad_distances_are_refused_and_leave_no_trace(distance):
    shaper = RewardShaper(RewardConfig(mode="progress", scale=1.0, smoothing_window=3))
    shaper.step(0.6)
    with pytest.raises(ValueError) as info:
        shaper.step(distance)
    assert "distance must be finite and >= 0" in str(info.value)
    # The refused value entered neither the window nor the baseline: median(0.6, 0.4) = 0.5.
    step = shaper.step(0.4)
    assert step.distance_m == pytest.approx(0.5) and step.reward == pytest.approx(0.1)


def test_from_params_converts_node_parameter_values():
    config = RewardConfig.from_params({
        "reward.mode": "progress", "reward.scale": 3, "reward.success_distance_m": 0,
        "reward.success_bonus": 1, "reward.smoothing_window": 5, "target_object": "ignored",
    })
    assert config == RewardConfig(mode="progress", scale=3.0, success_distance_m=0.0,
                                  success_bonus=1.0, smoothing_window=5)
    assert isinstance(config.scale, float)
    with pytest.raises(ValueError, match="accepted: negative_distance, progress"):
        RewardConfig.from_params({"reward.mode": "sparse", "reward.scale": 1.0,
                                  "reward.success_distance_m": 0.0, "reward.success_bonus": 0.0,
                                  "reward.smoothing_window": 1})
