"""Question templates over measured objects: SpatialVLM's qualitative predicates and quantitative
questions, several phrasings each, answered from the geometric backend's 3D boxes.

Positions are read in the measurement frame of ``geometry.py`` (lateral, forward, up; floor-aligned when
a floor was found): "left of" compares lateral centres, "above" centre heights, "in front of" the
forward coordinate (towards the camera), "closer" the range from the camera; sizes compare the 3D box's
width, height and volume. A predicate is asked only when its margin is clear (``TemplateSettings``), so
objects in line are never asked left/right; a quantity below ``min_quantity_m`` is not asked (a relative
answer on a few millimetres is noise). Metric answers are ``format_distance`` text, as the reward node's
VLM answers; yes/no answers are "Yes." / "No."; choices name the object. The distance, gap, width and
left/right phrasings are shared with the synthetic renderer's QA (``synth.qa``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from spatialvlm_ros.spatial import geometry as geo
from spatialvlm_ros.spatial.distance_text import format_distance
from spatialvlm_ros.spatial.synth import qa as synth_qa
from spatialvlm_ros.spatial.vqa.naming import NamedObject

__all__ = [
    "ANSWER_TYPES",
    "KINDS",
    "QUALITATIVE_KINDS",
    "QUANTITATIVE_KINDS",
    "VQA",
    "TemplateSettings",
    "candidate_questions",
    "sample_questions",
]

QUALITATIVE_KINDS = ("left_right", "above_below", "front_behind", "closer", "taller_shorter",
                     "wider_thinner", "bigger_smaller")
QUANTITATIVE_KINDS = ("distance", "horizontal_distance", "vertical_distance", "gap", "width", "height",
                      "direction")
KINDS = QUALITATIVE_KINDS + QUANTITATIVE_KINDS
ANSWER_TYPES = ("metres", "yes_no", "choice", "clock")


@dataclass(frozen=True)
class TemplateSettings:
    position_margin_m: float = 0.04  # left/right, above/below, in front/behind: centres at least this apart
    size_margin: float = 0.15  # closer, taller, wider: at least this much more (relative); bigger: (1+m)^3-1
    min_quantity_m: float = 0.02  # quantities below this are not asked
    direction_margin_deg: float = 10.0  # clock directions only within this of an hour's centre line
    qualitative_share: float = 0.5  # of the questions per frame
    questions_per_frame: int = 8
    kinds: tuple[str, ...] = KINDS

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"question kinds {unknown or '(none)'} not accepted; accepted: {', '.join(KINDS)}")
        if not 0 <= self.qualitative_share <= 1:
            raise ValueError(f"qualitative_share must be within [0, 1], got {self.qualitative_share}")
        if self.questions_per_frame < 1:
            raise ValueError("questions_per_frame must be at least 1")
        if self.position_margin_m < 0 or self.size_margin < 0 or self.min_quantity_m < 0:
            raise ValueError("margins must not be negative")
        if not 0 <= self.direction_margin_deg <= 15:
            raise ValueError("direction_margin_deg must be within [0, 15]")


@dataclass(frozen=True)
class VQA:
    """One question and its answer. ``value``: metres (metres), the clock hour 1-12 (clock), 1/0 (yes_no),
    None (choice: ``value_text`` is the name of the right object)."""

    kind: str
    question: str
    answer: str
    answer_type: str
    value: float | None
    value_text: str | None
    objects: tuple[NamedObject, ...]

    @property
    def category(self) -> str:
        return "qualitative" if self.kind in QUALITATIVE_KINDS else "quantitative"


# ------------------------------------------------------------------------------------- qualitative

@dataclass(frozen=True)
class _Predicate:
    measure: Callable[[geo.ObjectGeometry], float]
    relative: bool  # margin relative to the smaller value (sizes, ranges) or absolute (positions)
    more: tuple[str, ...]  # yes/no: "a has more of the measure than b"
    less: tuple[str, ...]
    choice_more: str  # "which has more of it"
    choice_less: str


def _volume(g: geo.ObjectGeometry) -> float:
    return g.width_m * g.length_m * g.height_m


PREDICATES: dict[str, _Predicate] = {
    "left_right": _Predicate(lambda g: -float(g.centre_frame[0]), False,
                             (synth_qa.LEFT_TEMPLATES[0], "Is {a} on the left side of {b}?"),
                             (synth_qa.LEFT_TEMPLATES[1], "Is {a} on the right side of {b}?"),
                             "Which is further to the left, {a} or {b}?",
                             "Which is further to the right, {a} or {b}?"),
    "above_below": _Predicate(lambda g: float(g.centre_frame[2]), False,
                              ("Is {a} above {b}?", "Is {a} higher than {b}?"),
                              ("Is {a} below {b}?", "Is {a} lower than {b}?"),
                              "Which is higher, {a} or {b}?", "Which is lower, {a} or {b}?"),
    "front_behind": _Predicate(lambda g: -float(g.centre_frame[1]), False,
                               ("Is {a} in front of {b}?", "Is {a} nearer the front than {b}?"),
                               ("Is {a} behind {b}?", "Is {a} further back than {b}?"),
                               "Which is further in front, {a} or {b}?", "Which is further back, {a} or {b}?"),
    "closer": _Predicate(lambda g: -float(np.linalg.norm(g.centre_camera)), True,
                         ("Is {a} closer to the camera than {b}?",),
                         ("Is {a} farther from the camera than {b}?",),
                         "Which is closer to the camera, {a} or {b}?",
                         "Which is farther from the camera, {a} or {b}?"),
    "taller_shorter": _Predicate(lambda g: g.height_m, True, ("Is {a} taller than {b}?",),
                                 ("Is {a} shorter than {b}?",), "Which is taller, {a} or {b}?",
                                 "Which is shorter, {a} or {b}?"),
    "wider_thinner": _Predicate(lambda g: g.width_m, True, ("Is {a} wider than {b}?",),
                                ("Is {a} thinner than {b}?", "Is {a} narrower than {b}?"),
                                "Which is wider, {a} or {b}?", "Which is thinner, {a} or {b}?"),
    "bigger_smaller": _Predicate(_volume, True, ("Is {a} bigger than {b}?", "Is {a} larger than {b}?"),
                                 ("Is {a} smaller than {b}?",), "Which is bigger, {a} or {b}?",
                                 "Which is smaller, {a} or {b}?"),
}


def _clear(kind: str, va: float, vb: float, s: TemplateSettings) -> bool:
    """The difference between the two measures is beyond the kind's margin."""
    p = PREDICATES[kind]
    if not p.relative:
        return abs(va - vb) >= s.position_margin_m
    # "closer" measures are negated ranges: compare magnitudes.
    lo, hi = sorted((abs(va), abs(vb)))
    margin = (1 + s.size_margin) ** 3 - 1 if kind == "bigger_smaller" else s.size_margin
    return hi >= (1 + margin) * lo


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _qualitative(kind: str, a: NamedObject, b: NamedObject, s: TemplateSettings,
                 rng: np.random.Generator) -> VQA | None:
    p = PREDICATES[kind]
    va, vb = p.measure(a.geometry), p.measure(b.geometry)
    if not _clear(kind, va, vb, s):
        return None
    a_more = va > vb
    if rng.random() < 0.5:  # yes/no, asking "more" or "less" at random
        asks_more = bool(rng.random() < 0.5)
        templates = p.more if asks_more else p.less
        question = templates[int(rng.integers(len(templates)))].format(a=a.name, b=b.name)
        truth = a_more == asks_more
        return VQA(kind, question, "Yes." if truth else "No.", "yes_no", float(truth), None, (a, b))
    asks_more = bool(rng.random() < 0.5)
    question = (p.choice_more if asks_more else p.choice_less).format(a=a.name, b=b.name)
    right = a if a_more == asks_more else b
    return VQA(kind, question, _cap(right.name) + ".", "choice", None, right.name, (a, b))


# ------------------------------------------------------------------------------------- quantitative

HORIZONTAL_TEMPLATES = ("What is the horizontal distance between {a} and {b}?",
                        "How far apart are {a} and {b} horizontally?",
                        "Ignoring height, how far is {a} from {b}?")
VERTICAL_TEMPLATES = ("What is the vertical distance between the centres of {a} and {b}?",
                      "How much higher is the centre of {a} than the centre of {b}?")
GAP_TEMPLATES = (*synth_qa.GAP_TEMPLATES, "What is the gap between {a} and {b}?")
HEIGHT_TEMPLATES = ("How tall is {a}?", "What is the height of {a}?",
                    "How tall is {a}? Answer with a distance in metres.")
DIRECTION_TEMPLATES = ("If you stand at {a} facing away from the camera, in which clock direction is {b}?",
                       "Facing away from the camera at {a}, at what o'clock is {b}?")


def _pick(templates: Sequence[str], rng: np.random.Generator) -> str:
    return templates[int(rng.integers(len(templates)))]


def _metric(kind: str, template: str, value: float, objects: tuple[NamedObject, ...],
            s: TemplateSettings, **names: str) -> VQA | None:
    if not math.isfinite(value) or value < s.min_quantity_m:
        return None
    return VQA(kind, template.format(**names), format_distance(value), "metres", float(value), None, objects)


def clock_hour(d_lateral: float, d_forward: float) -> tuple[int, float]:
    """(hour 1-12, degrees off that hour's centre line) of a horizontal offset, 12 o'clock = forward
    (away from the camera), 3 o'clock = right."""
    angle = math.degrees(math.atan2(d_lateral, d_forward)) % 360.0
    hour = int(round(angle / 30.0)) % 12
    return (12 if hour == 0 else hour), abs(angle - round(angle / 30.0) * 30.0)


def _pair_quantities(kind: str, a: NamedObject, b: NamedObject, frame3d: geo.MeasurementFrame,
                     s: TemplateSettings, rng: np.random.Generator) -> VQA | None:
    ga, gb = a.geometry, b.geometry
    names = {"a": a.name, "b": b.name}
    if kind == "distance":
        return _metric(kind, _pick(synth_qa.DISTANCE_TEMPLATES, rng), geo.centre_distance(ga, gb), (a, b), s,
                       **names)
    delta = gb.centre_frame - ga.centre_frame
    if kind == "horizontal_distance":
        return _metric(kind, _pick(HORIZONTAL_TEMPLATES, rng), float(np.hypot(delta[0], delta[1])), (a, b), s,
                       **names)
    if kind == "vertical_distance":
        template = _pick(VERTICAL_TEMPLATES, rng)
        if "higher" in template:  # asked with the higher object first
            if delta[2] > 0:
                return _metric(kind, template, float(delta[2]), (b, a), s, a=b.name, b=a.name)
            return _metric(kind, template, float(-delta[2]), (a, b), s, **names)
        return _metric(kind, template, abs(float(delta[2])), (a, b), s, **names)
    if kind == "gap":
        gap, _, _ = geo.footprint_gap(ga, gb, frame3d)
        return _metric(kind, _pick(GAP_TEMPLATES, rng), gap, (a, b), s, **names)
    if kind == "direction":
        if float(np.hypot(delta[0], delta[1])) < max(s.min_quantity_m, 0.05):
            return None
        hour, off = clock_hour(float(delta[0]), float(delta[1]))
        if off > s.direction_margin_deg:
            return None
        return VQA(kind, _pick(DIRECTION_TEMPLATES, rng).format(**names), f"At {hour} o'clock.", "clock",
                   float(hour), None, (a, b))
    raise ValueError(kind)


def candidate_questions(objects: Sequence[NamedObject], frame3d: geo.MeasurementFrame,
                        settings: TemplateSettings, rng: np.random.Generator) -> dict[str, list[VQA]]:
    """Every question that may be asked about these objects, by kind (at most one per kind and pair)."""
    out: dict[str, list[VQA]] = {k: [] for k in settings.kinds}
    for a in objects:
        for kind, values, templates in (("width", a.geometry.width_m, synth_qa.WIDTH_TEMPLATES),
                                        ("height", a.geometry.height_m, HEIGHT_TEMPLATES)):
            if kind in out:
                q = _metric(kind, _pick(templates, rng), values, (a,), settings, a=a.name)
                if q is not None:
                    out[kind].append(q)
    for i, first in enumerate(objects):
        for second in objects[i + 1:]:
            a, b = (second, first) if rng.random() < 0.5 else (first, second)  # asked in either order
            for kind in out:
                if kind in PREDICATES:
                    q = _qualitative(kind, a, b, settings, rng)
                elif kind in ("width", "height"):
                    continue
                else:
                    q = _pair_quantities(kind, a, b, frame3d, settings, rng)
                if q is not None:
                    out[kind].append(q)
    return out


def sample_questions(candidates: dict[str, list[VQA]], settings: TemplateSettings,
                     rng: np.random.Generator) -> list[VQA]:
    """Up to ``questions_per_frame`` distinct questions: qualitative with probability
    ``qualitative_share`` (else quantitative), the kind uniformly among those with a question left."""
    pools = {k: list(v) for k, v in candidates.items() if v}
    chosen: list[VQA] = []
    while pools and len(chosen) < settings.questions_per_frame:
        want_qual = rng.random() < settings.qualitative_share
        kinds = [k for k in pools if (k in QUALITATIVE_KINDS) == want_qual] or list(pools)
        kind = kinds[int(rng.integers(len(kinds)))]
        pool = pools[kind]
        chosen.append(pool.pop(int(rng.integers(len(pool)))))
        if not pool:
            del pools[kind]
    return chosen
