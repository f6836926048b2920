"""Reward shaping: turn a per-frame gripper-to-target distance into an RL reward.

The node's modes are the usual dense-reward recipes: ``negative_distance`` (closer is better, every frame)
and ``progress`` (the distance closed since the previous *measured* frame). ``progress`` is a dense
progress signal, not potential-based shaping with its policy-invariance guarantee: it is undiscounted
(gamma 1), frames the node dropped merge several steps into one, and the median window and the success
bonus make it depend on history. ``potential_difference`` is the discounted form, F = gamma * Phi(s') -
Phi(s) with Phi = -scale * d, meant to be computed once per environment step by the learner's side (the
gymnasium wrapper's ``potential`` shaping); what that guarantees is in the README.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

REWARD_MODES = ("negative_distance", "progress")


@dataclass(frozen=True)
class RewardConfig:
    mode: str = "negative_distance"
    scale: float = 1.0
    success_distance_m: float = 0.0
    success_bonus: float = 0.0
    smoothing_window: int = 1

    def __post_init__(self) -> None:
        if self.mode not in REWARD_MODES:
            raise ValueError(f"reward.mode={self.mode!r} is not accepted; accepted: {', '.join(REWARD_MODES)}")
        if not math.isfinite(self.scale) or self.scale < 0:
            raise ValueError(f"reward.scale must be finite and >= 0, got {self.scale}")
        if not math.isfinite(self.success_distance_m) or self.success_distance_m < 0:
            raise ValueError(f"reward.success_distance_m must be >= 0, got {self.success_distance_m}")
        if not math.isfinite(self.success_bonus):
            raise ValueError(f"reward.success_bonus must be finite, got {self.success_bonus}")
        if self.smoothing_window < 1:
            raise ValueError(f"reward.smoothing_window must be >= 1, got {self.smoothing_window}")

    @classmethod
    def from_params(cls, values: dict) -> RewardConfig:
        return cls(
            mode=values["reward.mode"],
            scale=float(values["reward.scale"]),
            success_distance_m=float(values["reward.success_distance_m"]),
            success_bonus=float(values["reward.success_bonus"]),
            smoothing_window=int(values["reward.smoothing_window"]),
        )


@dataclass(frozen=True)
class RewardStep:
    distance_m: float  # the (smoothed) distance that drove the reward
    raw_distance_m: float  # this frame's own estimate
    reward: float
    success: bool


class RewardShaper:
    """Stateful per episode: smoothing window and the progress baseline; ``reset`` starts anew."""

    def __init__(self, config: RewardConfig) -> None:
        self.config = config
        self._window: deque[float] = deque(maxlen=config.smoothing_window)
        self._previous_m: float | None = None

    def reset(self) -> None:
        self._window.clear()
        self._previous_m = None

    def reconfigure(self, config: RewardConfig) -> None:
        """New shaping settings; the episode state is kept unless the window size changed."""
        if config.smoothing_window != self.config.smoothing_window:
            self._window = deque(self._window, maxlen=config.smoothing_window)
        self.config = config

    def step(self, distance_m: float) -> RewardStep:
        if not math.isfinite(distance_m) or distance_m < 0:
            raise ValueError(f"distance must be finite and >= 0, got {distance_m}")
        self._window.append(distance_m)
        d = float(statistics.median(self._window))
        cfg = self.config
        if cfg.mode == "negative_distance":
            reward = -cfg.scale * d
        else:
            reward = 0.0 if self._previous_m is None else cfg.scale * (self._previous_m - d)
        self._previous_m = d
        success = cfg.success_distance_m > 0 and d <= cfg.success_distance_m
        if success:
            reward += cfg.success_bonus
        return RewardStep(distance_m=d, raw_distance_m=distance_m, reward=reward, success=success)


def potential_difference(previous_m: float, distance_m: float | None, gamma: float, scale: float = 1.0,
                         terminal: bool = False) -> float:
    """Ng, Harada and Russell's shaping term for one step: gamma * Phi(s') - Phi(s), Phi(s) = -scale * d(s).

    ``terminal``: s' ends the episode (not a time-limit truncation), so Phi(s') = 0 and the sum over an
    episode telescopes to -Phi(s0). ``distance_m`` may be None only when ``terminal``.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be within [0, 1], got {gamma}")
    if not math.isfinite(previous_m) or previous_m < 0:
        raise ValueError(f"distance must be finite and >= 0, got {previous_m}")
    phi_next = 0.0
    if not terminal:
        if distance_m is None or not math.isfinite(distance_m) or distance_m < 0:
            raise ValueError(f"distance must be finite and >= 0, got {distance_m}")
        phi_next = -scale * distance_m
    return gamma * phi_next - (-scale * previous_m)
