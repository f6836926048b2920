"""Ground truth for rows written by the data engine (``spatial.vqa``) on rendered frames: the true value
of each question from the scene definition, to check synthesized answers against.

Objects are matched to the scene by their pixel box (the detector stand-ins return true boxes), so two
objects of one category are told apart as the row names them. The measurement frame's axes are taken
from the camera as the geometric backend lays them onto a floor: lateral = the camera's x axis,
forward = its optical axis laid onto the table, up = the table's normal. Width is the footprint side
facing the camera, as ``geometry.py`` defines it (a long box seen end-on is narrow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spatialvlm_ros.spatial.geometry import box_iou
from spatialvlm_ros.spatial.synth.geometry_truth import true_box
from spatialvlm_ros.spatial.synth.render import RenderResult
from spatialvlm_ros.spatial.synth.scene import SceneObject
from spatialvlm_ros.spatial.synth.shapes import Box
from spatialvlm_ros.spatial.vqa.templates import PREDICATES, clock_hour

__all__ = ["RowTruth", "row_truth"]


@dataclass(frozen=True)
class RowTruth:
    value: float | None  # metres or clock hour; None for qualitative
    right: bool  # the row's answer agrees with the truth (metric rows: within [0.9x, 1.1x])
    ratio: float | None  # synthesized value / true value (metric rows)


def _match(result: RenderResult, box: list[float]) -> SceneObject:
    best, best_iou = None, 0.0
    for obj in result.scene.objects:
        tb = true_box(result, obj.description)
        if tb is not None and box_iou(tuple(box), tb) > best_iou:
            best, best_iou = obj, box_iou(tuple(box), tb)
    if best is None or best_iou < 0.9:
        raise KeyError(f"no scene object has the box {box}")
    return best


def _axes(result: RenderResult) -> tuple[np.ndarray, np.ndarray]:
    rot = result.camera.rotation
    lateral = rot[:, 0] / np.linalg.norm(rot[:, 0])
    forward = np.array([rot[0, 2], rot[1, 2], 0.0])
    return lateral, forward / np.linalg.norm(forward)


def _width(obj: SceneObject, result: RenderResult) -> float:
    """The footprint side facing the camera (the side nearer the camera's lateral axis), as the geometric
    backend defines an object's width; a cylinder's diameter."""
    if not isinstance(obj.solid, Box):
        return float(obj.width)
    lateral, _ = _axes(result)
    along_x = np.array([math.cos(obj.solid.yaw), math.sin(obj.solid.yaw), 0.0])
    cos = abs(float(along_x @ lateral))
    return float(obj.size[0] if cos >= math.sqrt(0.5) else obj.size[1])


def _measure(kind: str, obj: SceneObject, result: RenderResult) -> float:
    lateral, forward = _axes(result)
    c = obj.centre
    size = obj.size
    return {
        "left_right": -float(c @ lateral),
        "above_below": float(c[2]),
        "front_behind": -float(c @ forward),
        "closer": -float(np.linalg.norm(result.camera.world_to_camera(c))),
        "taller_shorter": float(size[2]),
        "wider_thinner": _width(obj, result),
        "bigger_smaller": float(size[0] * size[1] * size[2]),
    }[kind]


def _metric_truth(kind: str, objs: list[SceneObject], result: RenderResult) -> float:
    lateral, forward = _axes(result)
    if kind == "width":
        return _width(objs[0], result)
    if kind == "height":
        return float(objs[0].size[2])
    a, b = objs
    d = b.centre - a.centre
    if kind == "distance":
        return float(np.linalg.norm(d))
    if kind == "horizontal_distance":
        return float(math.hypot(d @ lateral, d @ forward))
    if kind == "vertical_distance":
        return abs(float(d[2]))
    if kind == "gap":
        return result.scene.gap(a, b).width_m
    if kind == "direction":
        return float(clock_hour(float(d @ lateral), float(d @ forward))[0])
    raise ValueError(kind)


def row_truth(row: dict[str, Any], result: RenderResult) -> RowTruth:
    """The truth of one dataset row (a dict of its columns) on the frame it was made from."""
    objs = [_match(result, o["box"]) for o in row["objects"]]
    names = [o["name"] for o in row["objects"]]
    kind = row["kind"]
    if row["answer_type"] in ("metres", "clock"):
        truth = _metric_truth(kind, objs, result)
        if row["answer_type"] == "clock":
            return RowTruth(truth, int(row["value"]) == int(truth), None)
        ratio = float(row["value"]) / truth if truth > 0 else math.inf
        return RowTruth(truth, 0.9 <= ratio <= 1.1, ratio)
    p = PREDICATES[kind]
    a_more = _measure(kind, objs[0], result) > _measure(kind, objs[1], result)
    question = row["question"]
    if row["answer_type"] == "yes_no":
        if any(t.format(a=names[0], b=names[1]) == question for t in p.more):
            asks_more = True
        elif any(t.format(a=names[0], b=names[1]) == question for t in p.less):
            asks_more = False
        else:
            raise ValueError(f"question not from the {kind} templates: {question!r}")
        return RowTruth(None, (row["value"] == 1.0) == (a_more == asks_more), None)
    asks_more = question == p.choice_more.format(a=names[0], b=names[1])
    right = names[0] if a_more == asks_more else names[1]
    return RowTruth(None, row["value_text"] == right, None)
