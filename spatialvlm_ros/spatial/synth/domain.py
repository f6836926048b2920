"""A second synthetic domain, unlike the one the shipped tiny model was trained on, for the data engine's
end-to-end check: other colours (pink, cyan, brown, lime), long boxes beside cylinders, a dark table, and
a higher camera that pans around the scene during an episode (the shipped model saw a fixed camera 50 cm
up looking at cubes and cylinders of six saturated colours on a light table).

Also its detector stand-in, ``CategoryTruthDetector``: like ``geometry_truth.SceneTruthDetector`` it
returns the true pixel box of every object of the rendered frames it was shown, but by category ("pink
box"), so two objects of one category both come back, as from a real open-vocabulary detector. No real
detector weights exist offline; this stands in for one and says so in its name.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spatialvlm_ros.spatial.geometric import Detection
from spatialvlm_ros.spatial.synth.camera import PinholeCamera
from spatialvlm_ros.spatial.synth.geometry_truth import fully_visible, true_box
from spatialvlm_ros.spatial.synth.render import RenderResult, render
from spatialvlm_ros.spatial.synth.scene import Scene, SceneObject, Table
from spatialvlm_ros.spatial.synth.shapes import Box, Cylinder, footprint_gap

__all__ = ["DOMAIN_COLOURS", "DOMAIN_SHAPES", "DOMAIN_TABLE", "CategoryTruthDetector", "DomainEpisode",
           "category", "domain_episode"]

DOMAIN_COLOURS: dict[str, tuple[int, int, int]] = {
    "pink": (235, 120, 185),
    "cyan": (40, 195, 205),
    "brown": (135, 85, 45),
    "lime": (160, 215, 50),
}
DOMAIN_SHAPES = ("box", "cylinder")
DOMAIN_TABLE = Table(rgb=(88, 92, 100), wall_rgb=(178, 196, 178))
LOOK_AT = (0.0, 0.22, 0.04)
WORKSPACE_X = (-0.22, 0.22)
WORKSPACE_Y = (0.04, 0.38)


def category(obj: SceneObject) -> str:
    """What a detector is asked for: "pink box" (the description without the article and any '#2')."""
    text = obj.description.split("#")[0].strip()
    return text[4:] if text.lower().startswith("the ") else text


def _object(rng: np.random.Generator, colour: str, shape: str, xy: tuple[float, float],
            suffix: str = "") -> SceneObject:
    rgb = DOMAIN_COLOURS[colour]
    description = f"the {colour} {shape}{suffix}"
    if shape == "box":
        # Long boxes turned up to 15 degrees; as the camera pans, the side facing it (the width) may be the
        # long or the short one.
        size = (float(rng.uniform(0.08, 0.14)), float(rng.uniform(0.035, 0.06)), float(rng.uniform(0.03, 0.08)))
        solid = Box((xy[0], xy[1], size[2] / 2), size, float(rng.uniform(-0.26, 0.26)))
    else:
        radius, height = float(rng.uniform(0.022, 0.04)), float(rng.uniform(0.06, 0.2))
        solid = Cylinder((xy[0], xy[1], height / 2), radius, height)
    return SceneObject(description, colour, shape, rgb, solid)


def _camera(yaw_deg: float, pitch_deg: float, distance: float, hfov: float, width: int, height: int) -> PinholeCamera:
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    target = np.asarray(LOOK_AT, float)
    eye = target + distance * np.array([math.sin(yaw) * math.cos(pitch), -math.cos(yaw) * math.cos(pitch),
                                        math.sin(pitch)])
    return PinholeCamera.look_at(tuple(eye), tuple(target), width, height, hfov)


@dataclass(frozen=True)
class DomainEpisode:
    """One episode: the scene (fixed), one camera pose per frame, the rendered frames."""

    scene: Scene
    frames: tuple[RenderResult, ...]
    target_object: str

    def categories(self) -> list[str]:
        return list(dict.fromkeys(category(o) for o in self.scene.objects))


def domain_episode(rng: np.random.Generator, frames: int = 12, n_objects: tuple[int, int] = (3, 4), *,
                   twins: bool = False, hold_frames: int = 2, size: tuple[int, int] = (640, 480),
                   tries: int = 100) -> DomainEpisode:
    """A random scene of the domain and a camera that holds still for ``hold_frames`` frames (the robot
    standing: near-duplicates), then pans 20-30 degrees around it, every object whole in every frame.
    ``twins``: two objects share a category ("the pink box" twice), for ambiguity handling."""
    kinds = [(c, s) for c in DOMAIN_COLOURS for s in DOMAIN_SHAPES]
    for _ in range(tries):
        count = int(rng.integers(n_objects[0], n_objects[1] + 1))
        picks = [kinds[int(i)] for i in rng.choice(len(kinds), size=count, replace=False)]
        if twins:
            picks[1] = picks[0]
        objects: list[SceneObject] = []
        for n, (colour, shape) in enumerate(picks):
            suffix = f" #{n + 1}" if twins and n in (0, 1) else ""
            for _ in range(60):
                xy = (float(rng.uniform(*WORKSPACE_X)), float(rng.uniform(*WORKSPACE_Y)))
                cand = _object(rng, colour, shape, xy, suffix)
                if all(footprint_gap(cand.solid, o.solid)[0] >= 0.04 for o in objects):
                    objects.append(cand)
                    break
        if len(objects) < count:
            continue
        pitch, distance = float(rng.uniform(55, 68)), float(rng.uniform(0.78, 0.92))
        hfov = float(rng.uniform(55, 65))
        start = float(rng.uniform(-25, -5))
        end = start + float(rng.uniform(20, 30)) * (1 if rng.random() < 0.5 else -1)
        moving = max(frames - hold_frames, 1)
        yaws = [start] * min(hold_frames, frames) + [start + (end - start) * (i + 1) / moving for i in range(moving)]
        results = []
        for yaw in yaws[:frames]:
            scene = Scene(tuple(objects), None, _camera(yaw, pitch, distance, hfov, *size), DOMAIN_TABLE)
            result = render(scene)
            if not fully_visible(result):
                break
            results.append(result)
        if len(results) == frames:
            target = objects[int(rng.integers(len(objects)))]
            return DomainEpisode(results[0].scene, tuple(results), category(target))
    raise RuntimeError("no fully visible episode found; use fewer objects")


def _image_key(rgb: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest()


class CategoryTruthDetector:
    """DETECTOR STAND-IN: the true box (score 1.0) of every visible object of the category asked for, in
    frames shown with ``register`` (matched by their exact pixels); unknown images get no candidates."""

    name = "category-truth-detector (stand-in)"

    def __init__(self) -> None:
        self._known: dict[str, dict[str, list[tuple[float, float, float, float]]]] = {}
        self.calls = 0

    def register(self, result: RenderResult) -> None:
        boxes: dict[str, list[tuple[float, float, float, float]]] = {}
        for obj in result.scene.objects:
            box = true_box(result, obj.description)
            if box is not None:
                boxes.setdefault(category(obj).lower(), []).append(box)
        self._known[_image_key(result.rgb)] = boxes

    def detect(self, images: Sequence[np.ndarray],
               descriptions: Sequence[Sequence[str]]) -> list[dict[str, list[Detection]]]:
        self.calls += 1
        out = []
        for image, descs in zip(images, descriptions, strict=True):
            boxes = self._known.get(_image_key(image), {})
            found = {}
            for desc in descs:
                key = " ".join(desc.lower().split())
                key = key[4:] if key.startswith("the ") else key
                found[desc] = [Detection(b, 1.0) for b in boxes.get(key, [])]
            out.append(found)
        return out

    def close(self) -> None:
        pass
