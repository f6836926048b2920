"""SpatialVLM-style question-answer pairs over a synthetic scene, answered from its known geometry.

The core is the reward question, the gripper-to-object distance, in the reward node's own words among
other phrasings; object-object distance, the gap between two objects (the affordance question), width,
left/right and "which is closer" round it out. Objects are named by colour and shape ("the red cube")
and scenes hold several, so a model must find the right one. Metric answers are ``format_distance``
text ("about 35 cm"), which ``parse_distance`` reads back within 10%.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spatialvlm_ros.spatial.distance_text import format_distance
from spatialvlm_ros.spatial.questions import DEFAULT_DISTANCE_TEMPLATE
from spatialvlm_ros.spatial.synth.scene import GRIPPER, Scene, SceneObject

__all__ = [
    "DEFAULT_MIX",
    "METRIC_KINDS",
    "QA",
    "QA_KINDS",
    "REWARD_TEMPLATE",
    "closer_qa",
    "gap_qa",
    "gripper_distance_qa",
    "left_right_qa",
    "object_distance_qa",
    "sample_qa",
    "width_qa",
]

QA_KINDS = ("gripper_distance", "object_distance", "gap", "width", "left_right", "closer")
METRIC_KINDS = ("gripper_distance", "object_distance", "gap", "width")

# The reward node's default question comes first and is asked most often.
REWARD_TEMPLATE = DEFAULT_DISTANCE_TEMPLATE.format(gripper="{a}", target="{b}")
DISTANCE_TEMPLATES = (
    REWARD_TEMPLATE,
    "How far is {a} from {b}?",
    "What is the distance between {a} and {b}?",
    "How far away is {b} from {a}?",
    "How close is {a} to {b}?",
    "What is the distance from {b} to {a}?",
)
DISTANCE_TEMPLATE_WEIGHTS = (0.5, 0.1, 0.1, 0.1, 0.1, 0.1)
GRIPPER_PHRASES = ("the robot gripper", "the gripper", "the robot's gripper", "the end effector")
GRIPPER_PHRASE_WEIGHTS = (0.55, 0.25, 0.1, 0.1)
GAP_TEMPLATES = (
    "How wide is the gap between {a} and {b}? Answer with a distance in metres.",
    "How much space is there between {a} and {b}?",
)
WIDTH_TEMPLATES = ("How wide is {a}?", "What is the width of {a}?",
                   "How wide is {a}? Answer with a distance in metres.")
LEFT_TEMPLATES = ("Is {a} to the left of {b}?", "Is {a} to the right of {b}?")
CLOSER_TEMPLATE = "Which is closer to {g}, {a} or {b}?"

# How often each kind is asked in training; the reward question dominates.
DEFAULT_MIX = {"gripper_distance": 0.7, "object_distance": 0.08, "gap": 0.06, "width": 0.06,
               "left_right": 0.05, "closer": 0.05}

# Pairs closer than this are not asked left/right or closer-than (the truth would be a coin toss).
LEFT_RIGHT_MARGIN_M = 0.03
CLOSER_MARGIN = 0.15
# How often a training reward question names the object nearest the gripper rather than a random one:
# small distances get asked often, but not so often that "the nearest object" becomes the model's
# answer whenever it cannot find the named one (measured at 0.5: most gross errors on held-out scenes
# were a nearer object's distance or the prior's middle, ~0.3 m).
NEAREST_TARGET_PROBABILITY = 0.25


@dataclass(frozen=True)
class QA:
    """One question about a scene and its true answer: ``value`` is metres for metric kinds, True/False
    for left_right, the closer object's description for closer."""

    kind: str
    question: str
    answer: str
    value: float | bool | str
    objects: tuple[str, ...]

    @property
    def metric(self) -> bool:
        return self.kind in METRIC_KINDS


def _pick(rng: np.random.Generator | None, options: tuple[str, ...],
          weights: tuple[float, ...] | None = None) -> str:
    if rng is None:
        return options[0]
    p = None if weights is None else np.asarray(weights) / np.sum(weights)
    return options[int(rng.choice(len(options), p=p))]


def _sentence_start(text: str) -> str:
    return text[:1].upper() + text[1:]


def gripper_distance_qa(scene: Scene, obj: str | SceneObject, rng: np.random.Generator | None = None,
                        template: str | None = None, gripper: str | None = None) -> QA:
    """How far the gripper is from ``obj``. Without ``rng`` the reward node's default words are used."""
    target = scene.find(obj)
    template = template or _pick(rng, DISTANCE_TEMPLATES, DISTANCE_TEMPLATE_WEIGHTS)
    gripper = gripper or _pick(rng, GRIPPER_PHRASES, GRIPPER_PHRASE_WEIGHTS)
    d = scene.gripper_distance(target)
    question = template.format(a=gripper, b=target.description)
    return QA("gripper_distance", question, format_distance(d), d, (GRIPPER, target.description))


def object_distance_qa(scene: Scene, a: str | SceneObject, b: str | SceneObject,
                       rng: np.random.Generator | None = None) -> QA:
    oa, ob = scene.find(a), scene.find(b)
    d = scene.distance(oa, ob)
    template = _pick(rng, DISTANCE_TEMPLATES, DISTANCE_TEMPLATE_WEIGHTS)
    return QA("object_distance", template.format(a=oa.description, b=ob.description), format_distance(d), d,
              (oa.description, ob.description))


def gap_qa(scene: Scene, a: str | SceneObject, b: str | SceneObject,
           rng: np.random.Generator | None = None) -> QA:
    oa, ob = scene.find(a), scene.find(b)
    gap = scene.gap(oa, ob).width_m
    template = _pick(rng, GAP_TEMPLATES, (0.7, 0.3))
    return QA("gap", template.format(a=oa.description, b=ob.description), format_distance(gap), gap,
              (oa.description, ob.description))


def width_qa(scene: Scene, a: str | SceneObject, rng: np.random.Generator | None = None) -> QA:
    oa = scene.find(a)
    w = oa.width
    return QA("width", _pick(rng, WIDTH_TEMPLATES).format(a=oa.description), format_distance(w), w,
              (oa.description,))


def left_right_qa(scene: Scene, a: str | SceneObject, b: str | SceneObject,
                  rng: np.random.Generator | None = None) -> QA | None:
    """"Is A to the left of B?" as the camera sees it (camera x); None when they are nearly aligned."""
    oa, ob = scene.find(a), scene.find(b)
    dx = float(scene.centre_camera(oa)[0] - scene.centre_camera(ob)[0])
    if abs(dx) < LEFT_RIGHT_MARGIN_M:
        return None
    template = _pick(rng, LEFT_TEMPLATES)
    asks_left = "left" in template
    truth = (dx < 0) == asks_left
    return QA("left_right", template.format(a=oa.description, b=ob.description), "Yes." if truth else "No.",
              truth, (oa.description, ob.description))


def closer_qa(scene: Scene, a: str | SceneObject, b: str | SceneObject,
              rng: np.random.Generator | None = None) -> QA | None:
    """Which of two objects is closer to the gripper; None when the difference is under 15%."""
    oa, ob = scene.find(a), scene.find(b)
    da, db = scene.gripper_distance(oa), scene.gripper_distance(ob)
    if abs(da - db) < CLOSER_MARGIN * min(da, db):
        return None
    closer = oa if da < db else ob
    g = _pick(rng, GRIPPER_PHRASES, GRIPPER_PHRASE_WEIGHTS)
    return QA("closer", CLOSER_TEMPLATE.format(g=g, a=oa.description, b=ob.description),
              _sentence_start(closer.description) + ".", closer.description, (oa.description, ob.description))


def sample_qa(scene: Scene, rng: np.random.Generator, mix: dict[str, float] | None = None) -> QA:
    """One random question about ``scene`` drawn by ``mix`` (kind -> weight; DEFAULT_MIX)."""
    mix = mix or DEFAULT_MIX
    unknown = set(mix) - set(QA_KINDS)
    if unknown:
        raise ValueError(f"unknown QA kinds {sorted(unknown)}; accepted: {', '.join(QA_KINDS)}")
    kinds = [k for k, w in mix.items() if w > 0]
    weights = np.array([mix[k] for k in kinds], float)
    for _ in range(20):
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        if kind in ("gripper_distance", "closer") and scene.gripper is None:
            continue
        n = len(scene.objects)
        if kind not in ("gripper_distance", "width") and n < 2:
            continue
        i, j = (int(x) for x in rng.choice(n, size=2, replace=False)) if n >= 2 else (0, 0)
        a, b = scene.objects[i], scene.objects[j]
        qa: QA | None
        if kind == "gripper_distance":
            if rng.random() < NEAREST_TARGET_PROBABILITY:
                a = min(scene.objects, key=scene.gripper_distance)
            qa = gripper_distance_qa(scene, a, rng)
        elif kind == "object_distance":
            qa = object_distance_qa(scene, a, b, rng)
        elif kind == "gap":
            qa = gap_qa(scene, a, b, rng)
        elif kind == "width":
            qa = width_qa(scene, a, rng)
        elif kind == "left_right":
            qa = left_right_qa(scene, a, b, rng)
        else:
            qa = closer_qa(scene, a, b, rng)
        if qa is not None:
            return qa
    raise ValueError("no question could be asked about this scene with this mix")
