"""Ground truth for checking geometric backends on synthetic scenes: what a perfect detector would return,
the measures a depth-based estimator reports (box centres, heights), scenes in which every object is
fully visible, and realistic depth degradation.

Small additions on top of the scene and renderer of this package (issue 5); everything metric still comes
from the scene definition, never from rendered pixels. Only ``true_box`` reads the render: it plays the
detector.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spatialvlm_ros.spatial.geometric import Detection
from spatialvlm_ros.spatial.synth.camera import DEFAULT_LOOK_AT, PinholeCamera
from spatialvlm_ros.spatial.synth.render import RenderResult, render
from spatialvlm_ros.spatial.synth.scene import GRIPPER, Scene, SceneObject, _key, random_scene
from spatialvlm_ros.spatial.synth.shapes import Box

__all__ = [
    "GRIPPER_NAMES",
    "ObjectTruth",
    "SceneTruthDetector",
    "degrade_depth",
    "fully_visible",
    "object_truth",
    "random_camera",
    "random_visible_scene",
    "true_box",
    "true_boxes",
]


def _is_gripper(what: str | SceneObject) -> bool:
    return isinstance(what, str) and _key(what) in (GRIPPER, "robot gripper")


@dataclass(frozen=True)
class ObjectTruth:
    """An object's (or the gripper's) true 3D box, from the scene definition, in world coordinates.

    ``centre`` is the centre of the solid's box (for the gripper: of all its parts together, which lies
    on the TCP's vertical, 5-6 cm above the TCP); ``width`` follows the scene's convention (side of a
    cube, x extent of a box, diameter of a cylinder; the gripper's opening span); ``height`` is the
    vertical extent.
    """

    centre: np.ndarray
    width: float
    height: float


def object_truth(scene: Scene, what: str | SceneObject) -> ObjectTruth:
    if _is_gripper(what):
        if scene.gripper is None:
            raise KeyError("the scene has no gripper")
        corners = np.concatenate([solid.corners() for solid, _ in scene.gripper.parts()])
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        tcp = np.asarray(scene.gripper.tcp, float)
        palm = next(s for s, _ in scene.gripper.parts() if isinstance(s, Box) and s.size[0] > 0.05)
        # The gripper is point-symmetric about the TCP's vertical: its box is centred there.
        return ObjectTruth(np.array([tcp[0], tcp[1], (lo[2] + hi[2]) / 2]), float(palm.size[0]),
                           float(hi[2] - lo[2]))
    obj = scene.find(what)
    return ObjectTruth(obj.centre, obj.width, float(obj.size[2]))


def true_box(result: RenderResult, what: str) -> tuple[float, float, float, float] | None:
    """The pixel box (x0, y0, x1, y1; x1, y1 exclusive) of what is visible of ``what``, as a perfect
    detector would return it; None when nothing of it is visible."""
    mask = result.mask(what)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def true_boxes(result: RenderResult) -> dict[str, tuple[float, float, float, float]]:
    """Box of every visible object (by description) and of the gripper (as ``"gripper"``)."""
    out = {}
    names = [o.description for o in result.scene.objects]
    if result.scene.gripper is not None:
        names.append(GRIPPER)
    for name in names:
        box = true_box(result, name)
        if box is not None:
            out[name] = box
    return out


def fully_visible(result: RenderResult) -> bool:
    """Every object (and the gripper) is whole in the image: none hides part of another and none is cut
    by the image border. Rendered alone, each would cover exactly the pixels it covers in the scene."""
    scene = result.scene
    names = [o.description for o in scene.objects] + ([GRIPPER] if scene.gripper is not None else [])
    for name in names:
        mask = result.mask(name)
        if not mask.any():
            return False
        if mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
            return False
        if name == GRIPPER:
            alone = Scene((), scene.gripper, scene.camera, scene.table, scene.light)
        else:
            alone = Scene((scene.find(name),), None, scene.camera, scene.table, scene.light)
        solo = render(alone, shadows=False).mask(name)
        if int(solo.sum()) != int(mask.sum()):
            return False
    return True


def random_camera(rng: np.random.Generator, width: int = 640, height: int = 480) -> PinholeCamera:
    """A tabletop camera at a random height and pitch (about 30 to 65 degrees down), looking at the
    workspace from the front, with a 50-75 degree horizontal field of view."""
    distance = float(rng.uniform(0.45, 0.8))
    pitch = math.radians(float(rng.uniform(30, 65)))
    yaw = math.radians(float(rng.uniform(-20, 20)))
    target = np.asarray(DEFAULT_LOOK_AT, float) + np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), 0])
    eye = target + distance * np.array([math.sin(yaw) * math.cos(pitch), -math.cos(yaw) * math.cos(pitch),
                                        math.sin(pitch)])
    return PinholeCamera.look_at(tuple(eye), tuple(target), width, height, float(rng.uniform(50, 75)))


def random_visible_scene(rng: np.random.Generator, n_objects: int | tuple[int, int] = (2, 4), *,
                         gripper: bool = False, camera: PinholeCamera | None = None,
                         tries: int = 200, **scene_kwargs: Any) -> tuple[Scene, RenderResult]:
    """A random scene (``random_scene``; a random camera unless one is given) in which every object is
    fully visible, rendered with perfect depth."""
    for _ in range(tries):
        cam = camera or random_camera(rng)
        scene = random_scene(rng, n_objects, gripper=gripper, camera=cam, **scene_kwargs)
        result = render(scene)
        if fully_visible(result):
            return scene, result
    raise RuntimeError("no fully visible scene found; use fewer objects or a wider field of view")


def degrade_depth(depth_m: np.ndarray, rng: np.random.Generator, *, relative_std: float = 0.01,
                  quantum_m: float = 0.001, missing_fraction: float = 0.0) -> np.ndarray:
    """Depth as a sensor delivers it: Gaussian noise with a standard deviation of ``relative_std`` of the
    depth, rounded to ``quantum_m`` (16UC1 millimetres), ``missing_fraction`` of the pixels lost (NaN)."""
    depth = np.asarray(depth_m, np.float64)
    noisy = depth * (1.0 + relative_std * rng.normal(size=depth.shape)) if relative_std > 0 else depth.copy()
    if quantum_m > 0:
        noisy = np.round(noisy / quantum_m) * quantum_m
    noisy[~(noisy > 0)] = np.nan
    if missing_fraction > 0:
        noisy[rng.random(depth.shape) < missing_fraction] = np.nan
    return noisy.astype(np.float32)


def pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """Every unordered pair of ``names``."""
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


GRIPPER_NAMES = ("gripper", "the gripper", "robot gripper", "the robot gripper")


def _image_key(rgb: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest()


def _detector_name(description: str) -> str:
    text = " ".join(description.lower().split())
    return GRIPPER if text in GRIPPER_NAMES else (text[4:] if text.startswith("the ") else text)


class SceneTruthDetector:
    """DETECTOR STAND-IN for the geometric backend: returns the true box (score 1.0) of each described
    object in the renders it was shown with ``register``, and with ``masks`` also its true visible mask.
    Unknown descriptions and images get no candidates. ``extra`` adds candidates per description (to
    stage a detector that confuses two objects). No real detector weights exist offline; this stands in
    for one where a test or bench needs numbers end to end, and says so in its name.
    """

    name = "scene-truth-detector (stand-in)"

    def __init__(self, masks: bool = False) -> None:
        self.masks = masks
        self._known: dict[str, tuple[RenderResult, dict[str, tuple[float, float, float, float]]]] = {}
        self.extra: dict[str, list[Detection]] = {}
        self.calls: list[int] = []
        self.closed = False

    def register(self, result: RenderResult) -> None:
        boxes = {_detector_name(k): v for k, v in true_boxes(result).items()}
        self._known[_image_key(result.rgb)] = (result, boxes)

    def detect(self, images: Sequence[np.ndarray],
               descriptions: Sequence[Sequence[str]]) -> list[dict[str, list[Detection]]]:
        self.calls.append(len(images))
        out = []
        for image, descs in zip(images, descriptions, strict=True):
            result, boxes = self._known.get(_image_key(image), (None, {}))
            found = {}
            for desc in descs:
                name = _detector_name(desc)
                box = boxes.get(name)
                cands = []
                if box is not None and result is not None:
                    mask = result.mask(GRIPPER if name == GRIPPER else desc) if self.masks else None
                    cands.append(Detection(box, 1.0, mask))
                found[desc] = cands + list(self.extra.get(desc, []))
            out.append(found)
        return out

    def close(self) -> None:
        self.closed = True
