"""Tabletop scenes with known geometry: coloured cubes, cylinders and boxes on a table, a two-finger
gripper, a fixed camera; random scenes and gripper approach trajectories.

Everything metric about a scene (centres, sizes, distances, gaps) is computed here from its definition,
so a test can compare any estimate (a VLM's, a geometric backend's) with the truth. Distances follow
SpatialVLM: centre to centre. The gripper's position is its tool centre point (TCP): midway between
the two fingers at half their length, where a grasped object would be.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from spatialvlm_ros.spatial.synth.camera import PinholeCamera, default_camera
from spatialvlm_ros.spatial.synth.shapes import Box, Cylinder, Primitive, footprint_gap

__all__ = [
    "COLOURS",
    "GRIPPER",
    "SHAPES",
    "Gap",
    "Gripper",
    "Scene",
    "SceneObject",
    "Table",
    "approach_trajectory",
    "demo_scene",
    "make_box",
    "make_cube",
    "make_cylinder",
    "random_scene",
]

# Saturated, easily named colours (RGB).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 40, 40),
    "green": (40, 160, 65),
    "blue": (40, 85, 215),
    "yellow": (235, 205, 40),
    "orange": (245, 130, 20),
    "purple": (140, 65, 180),
}
SHAPES = ("cube", "cylinder")
GRIPPER = "gripper"  # the name ground-truth helpers accept for the gripper


@dataclass(frozen=True)
class SceneObject:
    """An object standing on the table. ``description`` is how questions name it ("the red cube")."""

    description: str
    colour: str
    shape: str  # cube | cylinder | box
    rgb: tuple[int, int, int]
    solid: Primitive

    @property
    def centre(self) -> np.ndarray:
        return np.asarray(self.solid.centre, float)

    @property
    def size(self) -> tuple[float, float, float]:
        """Full extents (x, y, z) in the object's own axes; a cylinder's x and y are its diameter."""
        return tuple(float(s) for s in self.solid.size)

    @property
    def width(self) -> float:
        """Side length of a cube, diameter of a cylinder, x extent of a box."""
        return self.solid.width()


def make_cube(colour: str, xy: tuple[float, float], side: float, yaw: float = 0.0,
              description: str | None = None) -> SceneObject:
    return make_box(colour, xy, (side, side, side), yaw, description or f"the {colour} cube", shape="cube")


def make_box(colour: str, xy: tuple[float, float], size: tuple[float, float, float], yaw: float = 0.0,
             description: str | None = None, shape: str = "box") -> SceneObject:
    solid = Box((float(xy[0]), float(xy[1]), size[2] / 2), tuple(float(s) for s in size), float(yaw))
    return SceneObject(description or f"the {colour} box", colour, shape, _rgb(colour), solid)


def make_cylinder(colour: str, xy: tuple[float, float], radius: float, height: float,
                  description: str | None = None) -> SceneObject:
    solid = Cylinder((float(xy[0]), float(xy[1]), height / 2), float(radius), float(height))
    return SceneObject(description or f"the {colour} cylinder", colour, "cylinder", _rgb(colour), solid)


def _rgb(colour: str) -> tuple[int, int, int]:
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; accepted: {', '.join(COLOURS)}")
    return COLOURS[colour]


# Gripper geometry (metres), in the gripper's frame: x is the opening direction, z up.
FINGER_SIZE = (0.014, 0.022, 0.055)
PALM_HEIGHT = 0.025
WRIST_RADIUS, WRIST_HEIGHT = 0.026, 0.09
FINGER_RGB, PALM_RGB, WRIST_RGB = (178, 180, 188), (62, 64, 72), (96, 99, 110)


@dataclass(frozen=True)
class Gripper:
    """A parallel two-finger gripper pointing down. ``tcp`` (world, metres) is its reference point."""

    tcp: tuple[float, float, float]
    yaw: float = 0.0
    opening: float = 0.065  # between the fingers' centres

    def parts(self) -> list[tuple[Primitive, tuple[int, int, int]]]:
        """The solids it is made of, with their colours: two fingers, the palm, the wrist."""
        x, y, z = (float(v) for v in self.tcp)
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        half = self.opening / 2
        parts: list[tuple[Primitive, tuple[int, int, int]]] = []
        for sign in (-1.0, 1.0):
            parts.append((Box((x + sign * half * c, y + sign * half * s, z), FINGER_SIZE, self.yaw), FINGER_RGB))
        palm_z = z + FINGER_SIZE[2] / 2 + PALM_HEIGHT / 2
        parts.append((Box((x, y, palm_z), (self.opening + 0.04, 0.036, PALM_HEIGHT), self.yaw), PALM_RGB))
        wrist_z = palm_z + PALM_HEIGHT / 2 + WRIST_HEIGHT / 2
        parts.append((Cylinder((x, y, wrist_z), WRIST_RADIUS, WRIST_HEIGHT), WRIST_RGB))
        return parts

    @property
    def lowest_z(self) -> float:
        return float(self.tcp[2]) - FINGER_SIZE[2] / 2


@dataclass(frozen=True)
class Table:
    """The table top (the plane z = 0 within ``x_range``/``y_range``) and the wall behind it."""

    x_range: tuple[float, float] = (-0.9, 0.9)
    y_range: tuple[float, float] = (-0.5, 0.8)
    rgb: tuple[int, int, int] = (190, 172, 140)
    wall_rgb: tuple[int, int, int] = (212, 215, 222)


@dataclass(frozen=True)
class Gap:
    """The free space between two objects seen from above: its width and the closest point on each
    object's side (world, at table height)."""

    width_m: float
    point_a: np.ndarray
    point_b: np.ndarray


# Light travels along this direction (down, slightly forward and to the right): shading and shadows.
DEFAULT_LIGHT = (0.25, 0.35, -1.0)


@dataclass(frozen=True, eq=False)
class Scene:
    """Objects on a table, optionally a gripper, seen by a pinhole camera."""

    objects: tuple[SceneObject, ...]
    gripper: Gripper | None = None
    camera: PinholeCamera = field(default_factory=default_camera)
    table: Table = field(default_factory=Table)
    light: tuple[float, float, float] = DEFAULT_LIGHT

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        names = [o.description.lower() for o in self.objects]
        if len(set(names)) != len(names):
            raise ValueError(f"object descriptions must be unique in a scene: {names}")

    # -- lookup -------------------------------------------------------------------------------------

    def find(self, what: str | SceneObject) -> SceneObject:
        """The object named ``what`` ("the red cube" or "red cube"; case-insensitive)."""
        if isinstance(what, SceneObject):
            return what
        key = _key(what)
        for obj in self.objects:
            if _key(obj.description) == key:
                return obj
        raise KeyError(f"no object {what!r} in the scene; it has: "
                       f"{', '.join(o.description for o in self.objects)}")

    def centre(self, what: str | SceneObject) -> np.ndarray:
        """World centre of an object, or the gripper's TCP for ``"gripper"``."""
        if isinstance(what, str) and _key(what) in (GRIPPER, "robot gripper"):
            if self.gripper is None:
                raise KeyError("the scene has no gripper")
            return np.asarray(self.gripper.tcp, float)
        return self.find(what).centre

    def centre_camera(self, what: str | SceneObject) -> np.ndarray:
        """The centre in the camera's optical frame (x right, y down, z forward), metres."""
        return self.camera.world_to_camera(self.centre(what))

    # -- ground truth -------------------------------------------------------------------------------

    def distance(self, a: str | SceneObject, b: str | SceneObject) -> float:
        """Centre-to-centre distance in metres (SpatialVLM's definition); ``"gripper"`` is the TCP."""
        return float(np.linalg.norm(self.centre(a) - self.centre(b)))

    def gripper_distance(self, what: str | SceneObject) -> float:
        return self.distance(GRIPPER, what)

    def gap(self, a: str | SceneObject, b: str | SceneObject) -> Gap:
        """Free horizontal gap between two objects' footprints (0 when they touch)."""
        oa, ob = self.find(a), self.find(b)
        width, pa, pb = footprint_gap(oa.solid, ob.solid)
        return Gap(float(width), np.array([pa[0], pa[1], 0.0]), np.array([pb[0], pb[1], 0.0]))

    def width(self, what: str | SceneObject) -> float:
        return self.find(what).width

    # -- variants -----------------------------------------------------------------------------------

    def with_gripper(self, gripper: Gripper | None) -> Scene:
        return replace(self, gripper=gripper)

    def with_camera(self, camera: PinholeCamera) -> Scene:
        return replace(self, camera=camera)

    def at_resolution(self, width: int, height: int) -> Scene:
        """The same scene seen by the same camera at another image size."""
        return self.with_camera(self.camera.scaled(width, height))

    def solids(self) -> list[tuple[int, Primitive, tuple[int, int, int]]]:
        """(instance id, solid, colour) for everything that is drawn: objects, then gripper parts."""
        out = [(OBJECT_ID0 + i, o.solid, o.rgb) for i, o in enumerate(self.objects)]
        if self.gripper is not None:
            out.extend((GRIPPER_ID, solid, rgb) for solid, rgb in self.gripper.parts())
        return out


# Instance ids in rendered masks.
BACKGROUND_ID, TABLE_ID, GRIPPER_ID, OBJECT_ID0 = 0, 1, 2, 3


def _key(text: str) -> str:
    text = " ".join(text.lower().split())
    return text[4:] if text.startswith("the ") else text


# ---------------------------------------------------------------------------------- random scenes

# Where objects stand and the gripper moves (world, metres): the part of the table the camera sees well.
WORKSPACE_X = (-0.24, 0.24)
WORKSPACE_Y = (0.02, 0.40)
GRIPPER_X = (-0.32, 0.32)
GRIPPER_Y = (-0.06, 0.50)
GRIPPER_Z = (FINGER_SIZE[2] / 2 + 0.006, 0.26)
# Cylinders stand taller than they are wide and taller than any cube (like cans and bottles), so that a
# cube and a cylinder of one colour differ at the tiny model's 140x112 px, not only in their top's outline.
CUBE_SIDE = (0.04, 0.07)
CYLINDER_RADIUS = (0.02, 0.035)
CYLINDER_HEIGHT = (0.09, 0.16)
MIN_OBJECT_GAP = 0.03


def random_object(rng: np.random.Generator, colour: str, shape: str,
                  xy: tuple[float, float]) -> SceneObject:
    if shape == "cube":
        return make_cube(colour, xy, float(rng.uniform(*CUBE_SIDE)), float(rng.uniform(0, math.pi / 2)))
    if shape == "cylinder":
        return make_cylinder(colour, xy, float(rng.uniform(*CYLINDER_RADIUS)),
                             float(rng.uniform(*CYLINDER_HEIGHT)))
    raise ValueError(f"unknown shape {shape!r}; accepted: {', '.join(SHAPES)}")


def _collides(gripper: Gripper, objects: Sequence[SceneObject], margin: float = 0.006) -> bool:
    """Conservative test (bounding boxes) for the gripper touching an object."""
    for part, _ in gripper.parts():
        pc = part.corners()
        lo, hi = pc.min(axis=0) - margin, pc.max(axis=0) + margin
        for obj in objects:
            oc = obj.solid.corners()
            if np.all(oc.max(axis=0) >= lo) and np.all(oc.min(axis=0) <= hi):
                return True
    return False


def _in_view(camera: PinholeCamera, point: np.ndarray, margin: float = 0.06) -> bool:
    uv, z = camera.project(point)
    k = camera.intrinsics
    mx, my = margin * k.width, margin * k.height
    return bool(z > 0.05 and mx <= uv[0] <= k.width - 1 - mx and my <= uv[1] <= k.height - 1 - my)


def _gripper_ok(gripper: Gripper, objects: Sequence[SceneObject], camera: PinholeCamera) -> bool:
    x, y, z = gripper.tcp
    return (GRIPPER_X[0] <= x <= GRIPPER_X[1] and GRIPPER_Y[0] <= y <= GRIPPER_Y[1]
            and GRIPPER_Z[0] <= z <= GRIPPER_Z[1] and not _collides(gripper, objects)
            and _in_view(camera, np.asarray(gripper.tcp)))


def place_gripper_near(rng: np.random.Generator, objects: Sequence[SceneObject], anchor: SceneObject,
                       distance: float, camera: PinholeCamera, tries: int = 60) -> Gripper | None:
    """A gripper whose TCP is ``distance`` from ``anchor``'s centre, in a free, visible place."""
    for _ in range(tries):
        direction = rng.normal(size=3)
        direction[2] = abs(direction[2]) + 0.2
        direction /= np.linalg.norm(direction)
        tcp = anchor.centre + distance * direction
        gripper = Gripper(tuple(float(v) for v in tcp), float(rng.uniform(-math.pi / 2, math.pi / 2)))
        if _gripper_ok(gripper, objects, camera):
            return gripper
    return None


def random_scene(rng: np.random.Generator, n_objects: int | tuple[int, int] = (2, 4), *,
                 gripper: bool = True, camera: PinholeCamera | None = None,
                 gripper_distance: tuple[float, float] = (0.05, 0.65),
                 colours: Sequence[str] = tuple(COLOURS), shapes: Sequence[str] = SHAPES,
                 twin_probability: float = 0.0) -> Scene:
    """A random tabletop scene: objects with distinct (colour, shape) at free places in the workspace
    and, with ``gripper``, a gripper whose TCP is at a uniformly drawn distance from a random object
    (so gripper-object distances cover ``gripper_distance`` evenly).

    ``twin_probability``: how often one object gets a twin of the same colour and the other shape (a
    hard case for grounding: "the orange cube" beside "the orange cylinder"); training uses it.
    """
    camera = camera or default_camera()
    lo, hi = (n_objects, n_objects) if isinstance(n_objects, int) else n_objects
    kinds = [(c, s) for c in colours for s in shapes]
    while True:
        count = int(rng.integers(lo, hi + 1))
        picks = rng.choice(len(kinds), size=count, replace=False)
        if twin_probability > 0 and count >= 2 and len(shapes) == 2 and rng.random() < twin_probability:
            colour, shape = kinds[int(picks[0])]
            twin = kinds.index((colour, shapes[1 - shapes.index(shape)]))
            if twin not in picks:
                picks[1] = twin
        objects: list[SceneObject] = []
        for index in picks:
            colour, shape = kinds[int(index)]
            for _ in range(50):
                xy = (float(rng.uniform(*WORKSPACE_X)), float(rng.uniform(*WORKSPACE_Y)))
                candidate = random_object(rng, colour, shape, xy)
                if all(footprint_gap(candidate.solid, o.solid)[0] >= MIN_OBJECT_GAP for o in objects):
                    objects.append(candidate)
                    break
        if len(objects) < count:
            continue
        if not gripper:
            return Scene(tuple(objects), None, camera)
        anchor = objects[int(rng.integers(len(objects)))]
        g = place_gripper_near(rng, objects, anchor, float(rng.uniform(*gripper_distance)), camera)
        if g is not None:
            return Scene(tuple(objects), g, camera)


@dataclass(frozen=True)
class Trajectory:
    """A gripper approach: one scene per frame and the true gripper-target distance of each."""

    scenes: tuple[Scene, ...]
    target: str
    distances_m: tuple[float, ...]


def approach_trajectory(scene: Scene, target: str | SceneObject, frames: int,
                        start_tcp: Sequence[float], end_tcp: Sequence[float], yaw: float = 0.0) -> Trajectory:
    """The gripper moving in a straight line from ``start_tcp`` to ``end_tcp`` over ``frames`` frames."""
    if frames < 1:
        raise ValueError("frames must be at least 1")
    obj = scene.find(target)
    start, end = np.asarray(start_tcp, float), np.asarray(end_tcp, float)
    scenes, distances = [], []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        tcp = start + t * (end - start)
        s = scene.with_gripper(Gripper(tuple(float(v) for v in tcp), yaw))
        scenes.append(s)
        distances.append(s.gripper_distance(obj))
    return Trajectory(tuple(scenes), obj.description, tuple(distances))


def random_approach(rng: np.random.Generator, frames: int, *, scene: Scene | None = None,
                    start_distance: tuple[float, float] = (0.42, 0.62), tries: int = 200) -> Trajectory:
    """A random scene (or ``scene``) and a straight approach of its gripper to a random object: starting
    ``start_distance`` away, ending just above the object; the distance falls on every frame and the
    gripper stays free and in view."""
    for _ in range(tries):
        base = scene or random_scene(rng, gripper=False)
        target = base.objects[int(rng.integers(len(base.objects)))]
        yaw = float(rng.uniform(-math.pi / 2, math.pi / 2))
        end = target.centre + np.array([rng.uniform(-0.01, 0.01), rng.uniform(-0.01, 0.01),
                                        target.size[2] / 2 + FINGER_SIZE[2] / 2 + 0.012])
        direction = rng.normal(size=3)
        direction[2] = abs(direction[2]) + 0.3
        direction /= np.linalg.norm(direction)
        start = target.centre + float(rng.uniform(*start_distance)) * direction
        traj = approach_trajectory(base, target, frames, start, end, yaw)
        if np.all(np.diff(traj.distances_m) < 0) and all(
                _gripper_ok(s.gripper, s.objects, s.camera) for s in traj.scenes):
            return traj
    raise RuntimeError("could not find a free approach trajectory; widen the workspace or use fewer objects")


def demo_scene(camera: PinholeCamera | None = None) -> Scene:
    """The fixed scene of the demo camera: the orange cylinder is the target, with an orange cube, a blue
    cylinder and a green cube beside it (same colour or same shape, so the question's words matter)."""
    objects = (
        make_cylinder("orange", (0.12, 0.07), 0.032, 0.13),
        make_cube("orange", (-0.10, 0.10), 0.06, 0.4),
        make_cylinder("blue", (0.02, 0.30), 0.03, 0.09),
        make_cube("green", (0.20, 0.30), 0.05, 0.9),
    )
    return Scene(objects, None, camera or default_camera())


DEMO_TARGET = "the orange cylinder"
