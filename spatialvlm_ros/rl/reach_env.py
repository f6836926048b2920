"""A gymnasium reach environment on the package's synthetic tabletop renderer.

A gripper moved by continuous actions (a displacement per step) among several objects on a table; one of
them, named in words (``target_description``, e.g. "the red cube"), is the target. ``render()`` returns
what the fixed tabletop camera sees (the scenes the shipped tiny spatial model was trained on), so a
camera-based reward (``SpatialRewardWrapper``) can replace the environment's own one.

Observations are low-dimensional state on purpose: the gripper's tool centre point, the target's centre
and their difference (world, metres); the *reward* is what may come from the camera. The environment's own
reward is ``distance`` (-true distance, the oracle) or ``sparse`` (1 within the success radius, else 0),
times ``reward_scale``.
The gripper cannot enter an object: above an object's footprint its lowest height is the object's top,
as in the approach trajectories the model learnt from. Episodes end by time limit only, so no reward
leaks the true distance through termination.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from spatialvlm_ros.spatial.synth import Gripper, Scene, default_camera, random_scene, render
from spatialvlm_ros.spatial.synth.scene import (
    FINGER_SIZE,
    GRIPPER_X,
    GRIPPER_Y,
    GRIPPER_Z,
    SceneObject,
)

ENV_REWARDS = ("distance", "sparse")
REST_CLEARANCE_M = 0.012  # TCP height above an object's top when resting on it, like the trajectories' ends
FOOTPRINT_MARGIN_M = 0.02


def rest_distance_m(target: SceneObject) -> float:
    """The TCP-to-centre distance of a gripper resting straight above ``target``: the closest reachable."""
    return target.size[2] / 2 + FINGER_SIZE[2] / 2 + REST_CLEARANCE_M


class SyntheticReachEnv(gym.Env):
    """Reach the named object; success within ``success_margin_m`` of the resting distance above it."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, *, width: int = 224, height: int = 168, n_objects: int = 3, max_steps: int = 30,
                 step_m: float = 0.04, success_margin_m: float = 0.04, reward: str = "distance",
                 reward_scale: float = 1.0, min_start_distance_m: float = 0.2,
                 render_mode: str = "rgb_array") -> None:
        if reward not in ENV_REWARDS:
            raise ValueError(f"reward={reward!r} is not accepted; accepted: {', '.join(ENV_REWARDS)}")
        if render_mode != "rgb_array":
            raise ValueError("render_mode must be rgb_array")
        if n_objects < 1 or max_steps < 1 or step_m <= 0 or success_margin_m <= 0:
            raise ValueError("need n_objects >= 1, max_steps >= 1, step_m > 0 and success_margin_m > 0")
        self.render_mode = render_mode
        self.camera = default_camera(width, height)
        self.n_objects, self.max_steps, self.step_m = n_objects, max_steps, step_m
        self.success_margin_m, self.reward_kind, self.reward_scale = success_margin_m, reward, reward_scale
        self.min_start_distance_m = min_start_distance_m
        self.lo = np.array([GRIPPER_X[0], GRIPPER_Y[0], GRIPPER_Z[0]])
        self.hi = np.array([GRIPPER_X[1], GRIPPER_Y[1], GRIPPER_Z[1]])
        self.action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.observation_space = gym.spaces.Box(-2.0, 2.0, (9,), np.float32)
        self.scene: Scene | None = None
        self.target: SceneObject | None = None
        self.tcp = np.zeros(3)
        self.steps = 0

    # ------------------------------------------------------------------ geometry
    @property
    def target_description(self) -> str:
        """The target in words, as a question names it (changes with every reset)."""
        assert self.target is not None, "call reset() first"
        return self.target.description

    def true_distance_m(self) -> float:
        assert self.target is not None
        return float(np.linalg.norm(self.tcp - self.target.centre))

    def success(self) -> bool:
        assert self.target is not None
        return self.true_distance_m() <= rest_distance_m(self.target) + self.success_margin_m

    def _floor_z(self, xy: np.ndarray) -> float:
        """The lowest TCP height at ``xy``: the table, or the top of an object under the fingers."""
        assert self.scene is not None
        floor = GRIPPER_Z[0]
        for obj in self.scene.objects:
            corners = obj.solid.corners()
            radius = float(np.max(np.linalg.norm(corners[:, :2] - obj.centre[:2], axis=1)))
            if np.linalg.norm(xy - obj.centre[:2]) < radius + FOOTPRINT_MARGIN_M:
                floor = max(floor, obj.size[2] + FINGER_SIZE[2] / 2 + REST_CLEARANCE_M)
        return floor

    def _move_to(self, tcp: np.ndarray) -> None:
        tcp = np.clip(tcp, self.lo, self.hi)
        tcp[2] = min(max(tcp[2], self._floor_z(tcp[:2])), self.hi[2])
        self.tcp = tcp

    def _obs(self) -> np.ndarray:
        assert self.target is not None
        t = self.target.centre
        return np.concatenate([self.tcp, t, t - self.tcp]).astype(np.float32)

    def _info(self) -> dict[str, Any]:
        return {"true_distance_m": self.true_distance_m(), "success": self.success(),
                "target": self.target_description, "steps": self.steps}

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        while True:
            self.scene = random_scene(rng, self.n_objects, gripper=False, camera=self.camera)
            self.target = self.scene.objects[int(rng.integers(len(self.scene.objects)))]
            for _ in range(50):
                self._move_to(rng.uniform(self.lo, self.hi))
                if self.true_distance_m() >= self.min_start_distance_m:
                    break
            if self.true_distance_m() >= self.min_start_distance_m:
                break
        self.steps = 0
        return self._obs(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        assert self.scene is not None, "call reset() first"
        a = np.clip(np.asarray(action, dtype=float).reshape(3), -1.0, 1.0)
        self._move_to(self.tcp + self.step_m * a)
        self.steps += 1
        info = self._info()
        if self.reward_kind == "distance":
            reward = -info["true_distance_m"]
        else:
            reward = 1.0 if info["success"] else 0.0
        return self._obs(), float(self.reward_scale * reward), False, self.steps >= self.max_steps, info

    def render(self) -> np.ndarray:
        assert self.scene is not None, "call reset() first"
        yaw = 0.0
        scene = self.scene.with_gripper(Gripper(tuple(float(v) for v in self.tcp), yaw))
        return render(scene).rgb
