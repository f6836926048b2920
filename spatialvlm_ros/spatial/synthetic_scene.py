"""A synthetic camera for the demo, tests and benchmarks: a gripper approaching an orange bottle on a table.

Rendered with a pinhole camera of known intrinsics, so every frame carries its true gripper-to-bottle
distance (centre to centre, the SpatialVLM definition) and an aligned metric depth image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from spatialvlm_ros.spatial.estimator import Intrinsics


@dataclass(frozen=True)
class SceneFrame:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth_m: np.ndarray  # (H, W) float32, metres along the optical axis
    true_distance_m: float
    gripper_xyz_m: tuple[float, float, float]
    target_xyz_m: tuple[float, float, float]


class ApproachScene:
    """Camera looks at a table; the gripper moves in a straight line towards the bottle over ``frames``."""

    def __init__(self, width: int = 640, height: int = 480, frames: int = 60,
                 start_distance_m: float = 0.6, end_distance_m: float = 0.08) -> None:
        if width < 32 or height < 32:
            raise ValueError("the synthetic camera needs at least 32x32 pixels")
        if frames < 1:
            raise ValueError("frames must be at least 1")
        self.width, self.height, self.frames = width, height, frames
        f = 0.9 * width  # about a 58 degree horizontal field of view
        self.intrinsics = Intrinsics(fx=f, fy=f, cx=width / 2, cy=height / 2, width=width, height=height)
        self.target = np.array([0.15, 0.05, 1.0])  # metres, camera frame (x right, y down, z forward)
        self.start = self.target + np.array([-start_distance_m, -0.05, 0.0])
        self.end = self.target + np.array([-end_distance_m, -0.02, 0.0])
        self._background, self._background_depth = self._render_table()

    def _project(self, p: np.ndarray) -> tuple[int, int]:
        k = self.intrinsics
        return int(round(k.fx * p[0] / p[2] + k.cx)), int(round(k.fy * p[1] / p[2] + k.cy))

    def _render_table(self) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.height, self.width
        rgb = np.empty((h, w, 3), np.uint8)
        rgb[:] = (200, 205, 215)  # wall
        depth = np.full((h, w), 1.4, np.float32)
        horizon = int(h * 0.55)
        rows = np.arange(horizon, h)
        # Table top: a plane y = 0.12 m below the optical centre, seen from above.
        rgb[horizon:] = (150, 110, 70)
        y_table = 0.12
        fy, cy = self.intrinsics.fy, self.intrinsics.cy
        z = np.where(rows - cy > 1, y_table * fy / np.maximum(rows - cy, 1), 1.4)
        depth[horizon:] = np.minimum(z, 1.4)[:, None].astype(np.float32)
        return rgb, depth

    def _sized_box(self, rgb, depth, centre, half_w, half_h, colour, z):
        x0, y0 = self._project(centre - np.array([half_w, half_h, 0]))
        x1, y1 = self._project(centre + np.array([half_w, half_h, 0]))
        cv2.rectangle(rgb, (x0, y0), (x1, y1), colour, thickness=-1)
        ys, xs = slice(max(y0, 0), max(min(y1 + 1, self.height), 0)), slice(max(x0, 0), max(min(x1 + 1, self.width), 0))
        depth[ys, xs] = z

    def render(self, index: int) -> SceneFrame:
        """Frame ``index`` of the approach (clamped to the last frame)."""
        t = min(max(index, 0), self.frames - 1) / max(self.frames - 1, 1)
        gripper = self.start + t * (self.end - self.start)
        rgb = self._background.copy()
        depth = self._background_depth.copy()
        # The bottle: orange body with a white cap, 7 cm wide and 20 cm tall.
        self._sized_box(rgb, depth, self.target, 0.035, 0.10, (255, 140, 0), float(self.target[2]))
        self._sized_box(rgb, depth, self.target - np.array([0, 0.11, 0]), 0.015, 0.012, (245, 245, 245),
                        float(self.target[2]))
        # The gripper: a dark palm with two fingers pointing at the bottle.
        z = float(gripper[2])
        self._sized_box(rgb, depth, gripper - np.array([0.05, 0, 0]), 0.03, 0.03, (60, 60, 70), z)
        for dy in (-0.02, 0.02):
            self._sized_box(rgb, depth, gripper + np.array([0.0, dy, 0]), 0.025, 0.006, (120, 120, 130), z)
        distance = float(np.linalg.norm(gripper - self.target))
        return SceneFrame(rgb, depth, distance, tuple(gripper.tolist()), tuple(self.target.tolist()))
