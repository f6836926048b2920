"""A gymnasium wrapper whose reward is the spatial reward of each step's rendered frame.

After every ``reset`` and ``step`` it takes the frame the environment renders (``env.render()`` with
``render_mode="rgb_array"``, or ``frame_fn(env)``), asks how far the gripper is from the target, and
returns the shaped reward in place of the environment's own. Two ways to ask:

* in process: ``estimator=`` any core Estimator (``build_estimator(ModelConfig(...))``); no ROS at all;
* through a running ``reward_node``: ``client=`` a ``RewardClient``; the frame is published on ``image``
  and the wrapper waits for that frame's ``reward_info`` (the node should run ``frame_policy:=every``).

``shaping``: ``node`` gives the reward exactly as reward_node computes it (in process the same core
``RewardShaper`` with ``reward_config``; through ROS the node's own ``reward``); ``potential`` gives the
discounted potential difference of consecutive steps' own readings (``reward.potential_difference``; no
smoothing window, so the potential is a function of the frame alone).
A frame without a distance raises ``RewardUnavailable`` (with the reason), unless ``missing_reward`` is
a number, which is then returned and flagged in ``info["spatial"]["missing"]``; nothing is guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from spatialvlm_ros.spatial.estimator import Estimator, Frame
from spatialvlm_ros.spatial.questions import DEFAULT_DISTANCE_TEMPLATE, distance_query
from spatialvlm_ros.spatial.reward import RewardConfig, RewardShaper, potential_difference

SHAPINGS = ("node", "potential")


class RewardUnavailable(RuntimeError):
    """No distance for this step's frame; the message says why (the node's reason or a timeout)."""


@dataclass
class _Measured:
    distance_m: float | None  # as the node reports it (after its smoothing window)
    reward: float | None  # shaping "node": the reward as the node shapes it
    info: dict[str, Any]
    raw_distance_m: float | None = None  # this frame's own reading: the potential's argument


class SpatialRewardWrapper(gym.Wrapper):
    """See the module docstring. ``target_object=None`` reads ``env.unwrapped.target_description`` at
    every reset (an environment that picks a new target per episode)."""

    def __init__(self, env: gym.Env, *, estimator: Estimator | None = None, client: Any = None,
                 target_object: str | None = None, gripper_description: str = "the robot gripper",
                 question_template: str = DEFAULT_DISTANCE_TEMPLATE, samples_per_frame: int = 1,
                 shaping: str = "node", reward_config: RewardConfig | None = None, gamma: float = 0.99,
                 missing_reward: float | None = None, timeout_s: float = 30.0,
                 frame_fn: Callable[[gym.Env], np.ndarray] | None = None) -> None:
        super().__init__(env)
        if (estimator is None) == (client is None):
            raise ValueError("give exactly one of estimator= (in process) or client= (a running reward_node)")
        if shaping not in SHAPINGS:
            raise ValueError(f"shaping={shaping!r} is not accepted; accepted: {', '.join(SHAPINGS)}")
        if client is not None and reward_config is not None:
            raise ValueError("through a reward_node the node's reward.* parameters shape the reward; "
                             "reward_config is for the in-process mode")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be within [0, 1], got {gamma}")
        self.estimator, self.client = estimator, client
        self.target_object = target_object
        self.gripper_description, self.question_template = gripper_description, question_template
        self.samples_per_frame = samples_per_frame
        self.shaping, self.gamma = shaping, gamma
        self.shaper = RewardShaper(reward_config or RewardConfig())
        self.missing_reward, self.timeout_s = missing_reward, timeout_s
        self.frame_fn = frame_fn or (lambda e: e.render())
        self._target: str | None = None  # None: the first reset sets the node's target_object too
        self._query = None
        self._previous_m: float | None = None  # the potential's last known distance

    # ------------------------------------------------------------------ measuring a frame
    def _frame(self) -> np.ndarray:
        rgb = self.frame_fn(self.env)
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError("the environment must render (H, W, 3) uint8 RGB frames (render_mode='rgb_array')")
        return rgb

    def _measure(self, rgb: np.ndarray) -> _Measured:
        if self.client is not None:
            stamp = self.client.publish_image(rgb, frame_id="gym_camera")
            result = self.client.get_reward(stamp, self.timeout_s)
            info = {"status": result.status, "error": result.reason, "stamp_ns": stamp,
                    "raw_answers": (result.info or {}).get("raw_answers", [])}
            raw = (result.info or {}).get("raw_distance_m") if result.ok else None
            return _Measured(result.distance_m if result.ok else None, result.reward, info, raw)
        (estimate,) = self.estimator.estimate([(Frame(rgb=rgb), self._query)], samples=self.samples_per_frame)
        info = {"status": "rewarded" if estimate.value_m is not None else "no_distance",
                "error": estimate.reason, "raw_answers": estimate.raw_answers}
        if estimate.value_m is None:
            return _Measured(None, None, info)
        step = self.shaper.step(estimate.value_m)
        info["success"] = step.success
        return _Measured(step.distance_m, step.reward, info, estimate.value_m)

    def _new_target(self) -> None:
        target = self.target_object or getattr(self.env.unwrapped, "target_description", None)
        if not target:
            raise ValueError("no target: give target_object= or an env with a target_description attribute")
        if self.client is not None:
            if target != self._target:
                ok, message = self.client.set_target(target)  # a new target is a new episode on the node
                if not ok:
                    raise RewardUnavailable(f"reward_node refused target_object {target!r}: {message}")
            ok, message = self.client.reset()
            if not ok:
                raise RewardUnavailable(f"reward_node reset failed: {message}")
        else:
            self._query = distance_query(self.question_template, self.gripper_description, target)
            self.shaper.reset()
        self._target = target

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._new_target()
        measured = self._measure(self._frame())  # the episode's first frame: the progress/potential baseline
        self._previous_m = measured.raw_distance_m
        info["spatial"] = {**measured.info, "distance_m": measured.distance_m,
                           "raw_distance_m": measured.raw_distance_m, "target": self._target}
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        measured = self._measure(self._frame())
        spatial = {**measured.info, "distance_m": measured.distance_m, "raw_distance_m": measured.raw_distance_m,
                   "target": self._target, "env_reward": env_reward, "missing": False}
        if measured.distance_m is None:
            reason = measured.info.get("error") or measured.info.get("status")
            if self.missing_reward is None:
                raise RewardUnavailable(f"no spatial reward for this step's frame: {reason}")
            reward = float(self.missing_reward)
            spatial["missing"] = True
        elif self.shaping == "potential":
            if self._previous_m is None:
                reward = 0.0  # no baseline yet (the reset frame had no distance): start from here
            else:
                reward = potential_difference(self._previous_m, measured.raw_distance_m, self.gamma,
                                              self.shaper.config.scale, terminal=terminated)
            self._previous_m = measured.raw_distance_m
        else:
            reward = float(measured.reward)
        spatial["reward"] = reward
        info["spatial"] = spatial
        return obs, reward, terminated, truncated, info
