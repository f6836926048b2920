"""Cluttered scenes at real ranges for checking the geometric backend: 2-4 boxes and cylinders of 3-30 cm
standing a few centimetres apart on a large floor, a camera 0.5-2.5 m away looking 25-65 degrees down.

Everything metric (sizes, centres, gaps, which footprint side faces the camera) comes from the scene
definition, never from rendered pixels or from the geometry code under test. Only the detector and
segmenter stand-ins read the render (they play a perfect detector and a SAM-like segmenter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from spatialvlm_ros.spatial.synth.camera import PinholeCamera
from spatialvlm_ros.spatial.synth.geometry_truth import fully_visible
from spatialvlm_ros.spatial.synth.render import RenderResult, render
from spatialvlm_ros.spatial.synth.scene import COLOURS, Scene, SceneObject, Table, make_box, make_cylinder
from spatialvlm_ros.spatial.synth.shapes import Box, footprint_gap

__all__ = ["ClutterSpec", "TrueMaskSegmenter", "facing_width", "random_cluttered_scene"]

# A floor large enough that a camera 2.5 m away sees floor around the objects, a wall far behind.
BIG_FLOOR = Table(x_range=(-6.0, 6.0), y_range=(-6.0, 6.0))


@dataclass(frozen=True)
class ClutterSpec:
    """What random_cluttered_scene draws from (metres and degrees)."""

    n_objects: tuple[int, int] = (2, 4)
    size_m: tuple[float, float] = (0.03, 0.30)  # every side, diameter and height
    gap_m: tuple[float, float] = (0.02, 0.12)  # each new object's gap to the one it is placed beside
    min_gap_m: float = 0.02  # between every two objects
    camera_distance_m: tuple[float, float] = (0.5, 2.5)  # camera to the objects' middle
    pitch_deg: tuple[float, float] = (25.0, 65.0)
    hfov_deg: tuple[float, float] = (55.0, 70.0)
    width: int = 640
    height: int = 480
    # A box whose sides differ and that stands near 45 degrees to the camera has no side that "faces"
    # it: the width question is ill-posed there, so such boxes are turned away from it.
    ambiguous_yaw_deg: float = 10.0


def _random_object(rng: np.random.Generator, colour: str, spec: ClutterSpec) -> SceneObject:
    lo, hi = spec.size_m
    if rng.random() < 0.5:
        size = tuple(float(rng.uniform(lo, hi)) for _ in range(3))
        return make_box(colour, (0.0, 0.0), size, float(rng.uniform(0, math.pi)))
    return make_cylinder(colour, (0.0, 0.0), float(rng.uniform(lo, hi)) / 2, float(rng.uniform(lo, hi)))


def _moved(obj: SceneObject, xy: np.ndarray, yaw: float | None = None) -> SceneObject:
    s = obj.solid
    if isinstance(s, Box):
        solid = Box((float(xy[0]), float(xy[1]), s.centre[2]), s.size, s.yaw if yaw is None else yaw)
    else:
        solid = type(s)((float(xy[0]), float(xy[1]), s.centre[2]), s.radius, s.height)
    return SceneObject(obj.description, obj.colour, obj.shape, obj.rgb, solid)


def _place_beside(anchor: SceneObject, obj: SceneObject, gap: float, direction: np.ndarray) -> SceneObject:
    """``obj`` moved along ``direction`` from ``anchor`` until their footprints are ``gap`` apart."""
    a = np.asarray(anchor.centre[:2])
    lo, hi = 0.0, 2.0
    for _ in range(40):  # the gap grows monotonically along a ray from the anchor's centre
        mid = (lo + hi) / 2
        g = footprint_gap(anchor.solid, _moved(obj, a + mid * direction).solid)[0]
        lo, hi = (mid, hi) if g < gap else (lo, mid)
    return _moved(obj, a + hi * direction)


def facing_width(obj: SceneObject, camera: PinholeCamera) -> float:
    """The width the backend reports: the footprint side nearer the camera's lateral axis laid on the
    floor (a cylinder's diameter; for a box, whichever of its sides points more across the view)."""
    s = obj.solid
    if not isinstance(s, Box):
        return obj.width
    lateral = camera.rotation[:, 0][:2]
    lateral = lateral / np.linalg.norm(lateral)
    x_axis = np.array([math.cos(s.yaw), math.sin(s.yaw)])
    return float(s.size[0] if abs(x_axis @ lateral) >= math.sqrt(0.5) else s.size[1])


def _relative_yaw_deg(obj: SceneObject, camera: PinholeCamera) -> float:
    lateral = camera.rotation[:, 0][:2]
    angle = math.degrees(math.atan2(lateral[1], lateral[0]) - obj.solid.yaw)
    return angle % 90.0


def random_cluttered_scene(rng: np.random.Generator, spec: ClutterSpec = ClutterSpec(),
                           tries: int = 400) -> tuple[Scene, RenderResult, float]:
    """A random scene of ``spec`` in which every object is whole in view and none hides another,
    rendered with perfect depth, and the camera's distance to the objects' middle (metres)."""
    colours = list(COLOURS)
    for _ in range(tries):
        n = int(rng.integers(spec.n_objects[0], spec.n_objects[1] + 1))
        picked = rng.choice(len(colours), size=n, replace=False)
        objects: list[SceneObject] = []
        for i in picked:
            obj = _random_object(rng, colours[int(i)], spec)
            if not objects:
                objects.append(obj)
                continue
            anchor = objects[int(rng.integers(len(objects)))]
            angle = float(rng.uniform(0, 2 * math.pi))
            direction = np.array([math.cos(angle), math.sin(angle)])
            objects.append(_place_beside(anchor, obj, float(rng.uniform(*spec.gap_m)), direction))
        if any(footprint_gap(a.solid, b.solid)[0] < spec.min_gap_m - 1e-6
               for i, a in enumerate(objects) for b in objects[i + 1:]):
            continue
        middle = np.mean([o.centre for o in objects], axis=0)
        middle[2] = 0.0
        distance = float(rng.uniform(*spec.camera_distance_m))
        pitch = math.radians(float(rng.uniform(*spec.pitch_deg)))
        azimuth = float(rng.uniform(0, 2 * math.pi))
        eye = middle + distance * np.array([math.cos(azimuth) * math.cos(pitch),
                                            math.sin(azimuth) * math.cos(pitch), math.sin(pitch)])
        camera = PinholeCamera.look_at(tuple(eye), tuple(middle), spec.width, spec.height,
                                       float(rng.uniform(*spec.hfov_deg)))
        if any(isinstance(o.solid, Box) and o.solid.size[0] != o.solid.size[1]
               and abs(_relative_yaw_deg(o, camera) - 45.0) < spec.ambiguous_yaw_deg for o in objects):
            continue
        scene = Scene(tuple(objects), None, camera, BIG_FLOOR)
        result = render(scene)
        if fully_visible(result):
            return scene, result, distance
    raise RuntimeError("no fully visible cluttered scene found; loosen the ClutterSpec")


class TrueMaskSegmenter:
    """SEGMENTER STAND-IN: for each box, the true mask of the object whose true box it best matches,
    grown or shrunk by up to ``max_px`` pixels (drawn per object) as a real promptable segmenter's
    outline is a few pixels off. Knows only renders shown with ``register``; unknown images get empty
    masks. Named a stand-in because no real segmenter weights exist offline."""

    name = "true-mask segmenter (stand-in)"

    def __init__(self, max_px: int = 2, seed: int = 0) -> None:
        self.max_px = max_px
        self.rng = np.random.default_rng(seed)
        self._known: dict[bytes, RenderResult] = {}

    def register(self, result: RenderResult) -> None:
        self._known[_key(result.rgb)] = result

    def segment(self, images: Sequence[np.ndarray],
                boxes: Sequence[Sequence[tuple[float, float, float, float]]]) -> list[list[np.ndarray]]:
        out = []
        for image, image_boxes in zip(images, boxes, strict=True):
            result = self._known.get(_key(image))
            masks = []
            for box in image_boxes:
                if result is None:
                    masks.append(np.zeros(image.shape[:2], bool))
                    continue
                masks.append(self._mask_for(result, box))
            out.append(masks)
        return out

    def _mask_for(self, result: RenderResult, box: tuple[float, float, float, float]) -> np.ndarray:
        best, best_iou = None, 0.0
        for obj in result.scene.objects:
            mask = result.mask(obj.description)
            ys, xs = np.nonzero(mask)
            true = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            iou = _iou(box, true)
            if iou > best_iou:
                best, best_iou = mask, iou
        if best is None:
            return np.zeros(result.depth_m.shape, bool)
        px = int(self.rng.integers(-self.max_px, self.max_px + 1))
        if px == 0:
            return best
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(px) + 1, 2 * abs(px) + 1))
        op = cv2.dilate if px > 0 else cv2.erode
        return op(best.astype(np.uint8), kernel).astype(bool)

    def close(self) -> None:
        pass


def _key(rgb: np.ndarray) -> bytes:
    import hashlib

    return hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).digest()


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
