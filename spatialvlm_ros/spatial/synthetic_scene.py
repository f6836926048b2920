"""A synthetic camera for the demo, tests and benchmarks: the gripper approaching the orange cylinder.

A thin wrapper over ``spatialvlm_ros.spatial.synth``: the fixed demo scene (an orange cylinder, the
target, among an orange cube, a blue cylinder and a green cube on a table) seen by the default tabletop
camera, with the gripper moving in a straight line from ``start_distance_m`` to ``end_distance_m`` from
the target (ending just above it). Every frame carries its true gripper-to-target distance (centre to
centre, the SpatialVLM definition), an aligned metric depth image and an instance mask. These are the
scenes the shipped tiny model was trained on, so it answers for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spatialvlm_ros.spatial.estimator import Intrinsics
from spatialvlm_ros.spatial.synth import (
    DEMO_TARGET,
    PinholeCamera,
    Scene,
    approach_trajectory,
    default_camera,
    demo_scene,
    render,
)

__all__ = ["ApproachScene", "SceneFrame"]


@dataclass(frozen=True)
class SceneFrame:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth_m: np.ndarray  # (H, W) float32, metres along the optical axis
    true_distance_m: float
    gripper_xyz_m: tuple[float, float, float]  # camera optical frame (x right, y down, z forward)
    target_xyz_m: tuple[float, float, float]  # camera optical frame
    instance: np.ndarray | None = None  # (H, W) uint8 ids (see synth.render)
    scene: Scene | None = None


# The gripper comes from the back left, high above the table, and ends straight above the target.
_START_DIRECTION = np.array([-0.44, 0.40, 0.13])
_END_DIRECTION = np.array([0.0, 0.0, 1.0])


class ApproachScene:
    """The gripper moves in a straight line towards the target over ``frames`` frames."""

    target_description = DEMO_TARGET

    def __init__(self, width: int = 640, height: int = 480, frames: int = 60,
                 start_distance_m: float = 0.6, end_distance_m: float = 0.1) -> None:
        if width < 32 or height < 32:
            raise ValueError("the synthetic camera needs at least 32x32 pixels")
        if frames < 1:
            raise ValueError("frames must be at least 1")
        if not 0 < end_distance_m < start_distance_m:
            raise ValueError("need 0 < end_distance_m < start_distance_m")
        self.width, self.height, self.frames = width, height, frames
        self.camera: PinholeCamera = default_camera(width, height)
        self.intrinsics: Intrinsics = self.camera.intrinsics
        self.base = demo_scene(self.camera)
        target = self.base.find(DEMO_TARGET)
        start = target.centre + start_distance_m * _START_DIRECTION / np.linalg.norm(_START_DIRECTION)
        end = target.centre + end_distance_m * _END_DIRECTION
        self.trajectory = approach_trajectory(self.base, target, frames, start, end, yaw=0.3)

    def render(self, index: int) -> SceneFrame:
        """Frame ``index`` of the approach (clamped to the last frame)."""
        i = min(max(index, 0), self.frames - 1)
        scene = self.trajectory.scenes[i]
        result = render(scene)
        gripper = scene.centre_camera("gripper")
        target = scene.centre_camera(DEMO_TARGET)
        return SceneFrame(result.rgb, result.depth_m, float(self.trajectory.distances_m[i]),
                          tuple(gripper.tolist()), tuple(target.tolist()), result.instance, scene)
