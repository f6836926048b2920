"""Ray-cast rendering of a Scene: RGB with simple shading and drop shadows, metric depth (z-buffer along
the optical axis), and an instance mask.

Rays are cast only inside each solid's screen bounds, and the table and wall behind everything are
rendered once per camera and cached, so a 640x480 frame takes a few milliseconds.

Instance ids: 0 wall, 1 table, 2 gripper, 3 + i for ``scene.objects[i]``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from spatialvlm_ros.spatial.imaging import metres_to_depth_fields
from spatialvlm_ros.spatial.synth.camera import PinholeCamera
from spatialvlm_ros.spatial.synth.scene import (
    BACKGROUND_ID,
    GRIPPER,
    GRIPPER_ID,
    OBJECT_ID0,
    TABLE_ID,
    Scene,
    Table,
)
from spatialvlm_ros.spatial.synth.shapes import Primitive

__all__ = ["RenderResult", "render"]

AMBIENT, DIFFUSE, SHADOW = 0.5, 0.55, 0.6


@dataclass
class RenderResult:
    """What the camera sees: ``rgb`` (H, W, 3) uint8, ``depth_m`` (H, W) float32 metres along the optical
    axis (NaN = no reading, only where noise options remove it), ``instance`` (H, W) uint8 ids."""

    rgb: np.ndarray
    depth_m: np.ndarray
    instance: np.ndarray
    scene: Scene

    @property
    def camera(self) -> PinholeCamera:
        return self.scene.camera

    def instance_id(self, what: str) -> int:
        """Id of ``"gripper"``, ``"table"``, ``"wall"`` or an object description."""
        key = what.lower().strip()
        if key in (GRIPPER, "the gripper"):
            return GRIPPER_ID
        if key in ("table", "the table"):
            return TABLE_ID
        if key in ("wall", "background"):
            return BACKGROUND_ID
        obj = self.scene.find(what)
        return OBJECT_ID0 + self.scene.objects.index(obj)

    def mask(self, what: str) -> np.ndarray:
        """Boolean (H, W) mask of the visible pixels of ``what``."""
        return self.instance == self.instance_id(what)

    def depth_fields(self, encoding: str = "16UC1") -> dict[str, Any]:
        """``depth_m`` as sensor_msgs/Image fields: 16UC1 millimetres or 32FC1 metres."""
        return metres_to_depth_fields(self.depth_m, encoding)


def render(scene: Scene, *, shadows: bool = True, depth_noise_std_m: float = 0.0,
           depth_noise: str = "constant", missing_depth_fraction: float = 0.0,
           rng: np.random.Generator | None = None) -> RenderResult:
    """Render ``scene`` with its camera (use ``scene.at_resolution(w, h)`` for another size).

    Depth degradation for testing geometric backends: ``depth_noise_std_m`` adds Gaussian noise,
    ``"constant"`` (the same sigma everywhere) or ``"quadratic"`` (sigma at 1 m, growing with z², like
    stereo and structured-light sensors); ``missing_depth_fraction`` of the pixels lose their reading
    (NaN; 0 in 16UC1). Colour and instance images are not affected.
    """
    if depth_noise not in ("constant", "quadratic"):
        raise ValueError(f"depth_noise={depth_noise!r} is not accepted; accepted: constant, quadratic")
    if not 0.0 <= missing_depth_fraction <= 1.0:
        raise ValueError("missing_depth_fraction must be within [0, 1]")
    camera = scene.camera
    base_rgb, base_depth, base_ids = _background(camera, scene.table)
    shade = np.ones(base_depth.shape, np.float32)
    rgb = base_rgb.copy()
    depth = base_depth.copy()
    ids = base_ids.copy()
    light = np.asarray(scene.light, float)
    light /= np.linalg.norm(light)
    solids = scene.solids()
    for instance_id, solid, colour in solids:
        _draw_solid(camera, solid, colour, instance_id, light, rgb, depth, ids)
    if shadows:
        mask = np.zeros(depth.shape, np.uint8)
        for _, solid, _ in solids:
            _shadow_polygon(camera, solid, light, mask)
        shade[(mask > 0) & (ids == TABLE_ID)] = SHADOW
        rgb = (rgb * shade[..., None]).astype(np.uint8) if (mask > 0).any() else rgb
    depth_out = depth.astype(np.float32)
    if depth_noise_std_m > 0 or missing_depth_fraction > 0:
        rng = rng if rng is not None else np.random.default_rng()
        if depth_noise_std_m > 0:
            sigma = depth_noise_std_m * (depth_out ** 2 if depth_noise == "quadratic" else 1.0)
            depth_out = (depth_out + rng.normal(size=depth_out.shape) * sigma).astype(np.float32)
            depth_out[depth_out <= 0] = np.nan
        if missing_depth_fraction > 0:
            depth_out[rng.random(depth_out.shape) < missing_depth_fraction] = np.nan
    return RenderResult(rgb, depth_out, ids, scene)


# ---------------------------------------------------------------------------------- background

_CACHE: OrderedDict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
_CACHE_SIZE = 8


def _background(camera: PinholeCamera, table: Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Table and wall as seen by ``camera`` (cached per camera and table)."""
    key = (camera.key(), table)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    h, w = camera.height, camera.width
    v, u = np.mgrid[0:h, 0:w]
    rays = camera.rays(u.ravel(), v.ravel())
    pos = camera.position
    with np.errstate(divide="ignore", invalid="ignore"):
        t_table = np.where(rays[:, 2] < -1e-9, -pos[2] / rays[:, 2], np.inf)
        wall_y = table.y_range[1]
        t_wall = np.where(rays[:, 1] > 1e-9, (wall_y - pos[1]) / rays[:, 1], np.inf)
    p = pos + np.where(np.isfinite(t_table), t_table, 0.0)[:, None] * rays
    on_table = (np.isfinite(t_table) & (p[:, 0] >= table.x_range[0]) & (p[:, 0] <= table.x_range[1])
                & (p[:, 1] >= table.y_range[0]) & (p[:, 1] <= table.y_range[1]))
    t = np.where(on_table, t_table, t_wall)
    t = np.where(np.isfinite(t), t, 10.0)
    rgb = np.empty((h * w, 3), np.float32)
    rgb[:] = table.wall_rgb
    rgb[on_table] = table.rgb
    ids = np.where(on_table, TABLE_ID, BACKGROUND_ID).astype(np.uint8)
    result = (np.clip(rgb, 0, 255).astype(np.uint8).reshape(h, w, 3),
              t.astype(np.float64).reshape(h, w), ids.reshape(h, w))
    for array in result:
        array.setflags(write=False)
    _CACHE[key] = result
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return result


# ---------------------------------------------------------------------------------- solids

def _screen_bounds(camera: PinholeCamera, solid: Primitive) -> tuple[int, int, int, int] | None:
    uv, z = camera.project(solid.outline_points())
    if np.any(z <= 1e-3):
        return 0, 0, camera.width, camera.height  # straddles the camera plane: cast every ray
    u0, v0 = np.floor(uv.min(axis=0)).astype(int) - 1
    u1, v1 = np.ceil(uv.max(axis=0)).astype(int) + 2
    u0, v0 = max(u0, 0), max(v0, 0)
    u1, v1 = min(u1, camera.width), min(v1, camera.height)
    if u0 >= u1 or v0 >= v1:
        return None
    return u0, v0, u1, v1


def _draw_solid(camera: PinholeCamera, solid: Primitive, colour: tuple[int, int, int], instance_id: int,
                light: np.ndarray, rgb: np.ndarray, depth: np.ndarray, ids: np.ndarray) -> None:
    bounds = _screen_bounds(camera, solid)
    if bounds is None:
        return
    u0, v0, u1, v1 = bounds
    v, u = np.mgrid[v0:v1, u0:u1]
    rays = camera.rays(u.ravel(), v.ravel())
    t, normal = solid.intersect(camera.position, rays)
    t = t.reshape(v.shape)
    region = depth[v0:v1, u0:u1]
    closer = t < region
    if not closer.any():
        return
    lambert = np.clip(-(normal @ light), 0.0, 1.0).reshape(v.shape)
    shaded = np.clip(np.asarray(colour, np.float32)[None, None, :] * (AMBIENT + DIFFUSE * lambert)[..., None],
                     0, 255).astype(np.uint8)
    region[closer] = t[closer]
    ids[v0:v1, u0:u1][closer] = instance_id
    rgb[v0:v1, u0:u1][closer] = shaded[closer]


def _shadow_polygon(camera: PinholeCamera, solid: Primitive, light: np.ndarray, mask: np.ndarray) -> None:
    """Fill the image polygon of ``solid``'s shadow on the table plane (light along ``light``)."""
    pts = solid.outline_points()
    if light[2] >= -1e-6:
        return
    on_table = pts - (pts[:, 2] / light[2])[:, None] * light
    uv, z = camera.project(on_table)
    if np.any(z <= 1e-3):
        return
    hull = cv2.convexHull(np.round(uv * 4).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=2)
