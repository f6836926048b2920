"""A pinhole camera with known intrinsics and pose: projection, back-projection and pixel rays.

Frames (ROS conventions):

* world: x to the right of the table, y away from the camera across the table, z up; the table top is
  the plane z = 0.
* camera: the optical frame (x right, y down, z forward along the optical axis), as in sensor_msgs
  CameraInfo. Pixel (u, v) has its centre at integer coordinates: u = fx * x / z + cx.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spatialvlm_ros.spatial.estimator import Intrinsics

__all__ = ["PinholeCamera", "default_camera"]


@dataclass(frozen=True, eq=False)
class PinholeCamera:
    """Intrinsics plus the camera's pose in the world (rotation world<-camera and optical centre)."""

    intrinsics: Intrinsics
    rotation: np.ndarray  # (3, 3) world <- camera
    position: np.ndarray  # (3,) optical centre in the world, metres

    def __post_init__(self) -> None:
        rotation = np.asarray(self.rotation, dtype=np.float64).reshape(3, 3)
        if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6):
            raise ValueError("camera rotation must be orthonormal")
        object.__setattr__(self, "rotation", rotation)
        object.__setattr__(self, "position", np.asarray(self.position, dtype=np.float64).reshape(3))
        k = self.intrinsics
        if k.width < 1 or k.height < 1 or k.fx <= 0 or k.fy <= 0:
            raise ValueError(f"unusable intrinsics {k}")

    @classmethod
    def look_at(cls, eye: tuple[float, float, float], target: tuple[float, float, float],
                width: int, height: int, hfov_deg: float = 60.0) -> PinholeCamera:
        """A camera at ``eye`` whose optical axis passes through ``target``; square pixels, centred
        principal point, horizontal field of view ``hfov_deg``."""
        eye_v, target_v = np.asarray(eye, float), np.asarray(target, float)
        forward = target_v - eye_v
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, (0.0, 0.0, 1.0))
        if np.linalg.norm(right) < 1e-9:
            raise ValueError("look_at: the optical axis must not be vertical")
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        rotation = np.stack([right, down, forward], axis=1)  # columns: camera axes in the world
        f = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
        intrinsics = Intrinsics(fx=f, fy=f, cx=(width - 1) / 2, cy=(height - 1) / 2,
                                width=width, height=height)
        return cls(intrinsics, rotation, eye_v)

    def scaled(self, width: int, height: int) -> PinholeCamera:
        """The same camera (pose and field of view) with another image size."""
        k = self.intrinsics
        sx, sy = width / k.width, height / k.height
        intrinsics = Intrinsics(fx=k.fx * sx, fy=k.fy * sy, cx=(k.cx + 0.5) * sx - 0.5,
                                cy=(k.cy + 0.5) * sy - 0.5, width=width, height=height)
        return PinholeCamera(intrinsics, self.rotation, self.position)

    @property
    def width(self) -> int:
        return self.intrinsics.width

    @property
    def height(self) -> int:
        return self.intrinsics.height

    def k_matrix(self) -> list[float]:
        """Row-major 3x3 K as in sensor_msgs/CameraInfo.k."""
        k = self.intrinsics
        return [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]

    def p_matrix(self) -> list[float]:
        """Row-major 3x4 P as in sensor_msgs/CameraInfo.p (monocular: no translation)."""
        k = self.intrinsics
        return [k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) world points -> camera-frame points."""
        return (np.asarray(points, float) - self.position) @ self.rotation

    def camera_to_world(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, float) @ self.rotation.T + self.position

    def project(self, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(..., 3) world points -> ((..., 2) pixel coordinates (u, v), (...) depth z along the axis)."""
        cam = self.world_to_camera(points_world)
        return self.project_camera(cam), cam[..., 2]

    def project_camera(self, points_camera: np.ndarray) -> np.ndarray:
        k = self.intrinsics
        p = np.asarray(points_camera, float)
        z = p[..., 2]
        return np.stack([k.fx * p[..., 0] / z + k.cx, k.fy * p[..., 1] / z + k.cy], axis=-1)

    def backproject(self, u: np.ndarray, v: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Pixels with metric depth (along the optical axis) -> (..., 3) camera-frame points."""
        k = self.intrinsics
        z = np.asarray(depth, float)
        return np.stack([(np.asarray(u, float) - k.cx) / k.fx * z,
                         (np.asarray(v, float) - k.cy) / k.fy * z, z], axis=-1)

    def rays(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """World directions of the rays through pixels (u, v), scaled so that the camera-frame z is 1:
        a hit at ``position + t * ray`` has depth ``t``."""
        k = self.intrinsics
        d_cam = np.stack([(np.asarray(u, float) - k.cx) / k.fx, (np.asarray(v, float) - k.cy) / k.fy,
                          np.ones(np.shape(u))], axis=-1)
        return d_cam @ self.rotation.T

    def key(self) -> tuple:
        """A hashable identity (for caches)."""
        return (self.intrinsics, self.rotation.tobytes(), self.position.tobytes())


# The tabletop camera of the demo and the shipped model: 50 cm above the table and 30 cm in front of
# the workspace, looking down at about 40 degrees, 58 degree horizontal field of view.
DEFAULT_EYE = (0.0, -0.30, 0.50)
DEFAULT_LOOK_AT = (0.0, 0.26, 0.06)
DEFAULT_HFOV_DEG = 58.0


def default_camera(width: int = 640, height: int = 480) -> PinholeCamera:
    """The fixed tabletop camera every synthetic scene of the package is seen from."""
    return PinholeCamera.look_at(DEFAULT_EYE, DEFAULT_LOOK_AT, width, height, DEFAULT_HFOV_DEG)
