"""Naming the objects of one frame so that every name picks out exactly one object.

A description with one detection is named as it is ("the red cup"). Several detections of one
description are told apart by position: "the left red cup" / "the right red cup" when their boxes do
not overlap sideways, otherwise "the red cup nearest the camera" when it is clearly nearer than every
other one. An object that cannot be told apart this way gets no name and is never asked about, and
neither is any other detection of its description that could not be named (an unnamed twin would make
"the red cup" ambiguous, so plain names are only used for descriptions seen once).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spatialvlm_ros.spatial.geometric import MeasuredObject
from spatialvlm_ros.spatial.geometry import ObjectGeometry

__all__ = ["NamedObject", "name_objects", "plain_name"]

# "Nearest the camera" only when the nearest is this much nearer (ratio of centre ranges) than the next.
NEAREST_RATIO = 0.85


@dataclass(frozen=True)
class NamedObject:
    """A measured object and the words a question uses for it."""

    name: str  # "the left red cup"
    description: str  # the detector's description: "red cup"
    disambiguated_by: str | None  # None | "left" | "right" | "leftmost" | "rightmost" | "nearest"
    measured: MeasuredObject

    @property
    def geometry(self) -> ObjectGeometry:
        assert self.measured.geometry is not None
        return self.measured.geometry


def plain_name(description: str) -> str:
    """ "red cup", "the red cup", "a red cup" -> "the red cup"."""
    words = " ".join(description.split())
    low = words.lower()
    for article in ("the ", "a ", "an "):
        if low.startswith(article):
            words = words[len(article):]
            break
    return f"the {words}"


def _with_position(description: str, where: str) -> str:
    base = plain_name(description)[len("the "):]
    if where == "nearest":
        return f"the {base} nearest the camera"
    return f"the {where} {base}"


def name_objects(objects: list[MeasuredObject]) -> tuple[list[NamedObject], dict[str, str]]:
    """(named, measured objects only) and, per description left out, why."""
    by_desc: dict[str, list[MeasuredObject]] = {}
    for obj in objects:
        by_desc.setdefault(plain_name(obj.description).lower(), []).append(obj)
    named: list[NamedObject] = []
    skipped: dict[str, str] = {}
    for key, group in by_desc.items():
        desc = group[0].description
        if len(group) == 1:
            if group[0].geometry is not None:
                named.append(NamedObject(plain_name(desc), desc, None, group[0]))
            else:
                skipped[key] = f"not measured: {group[0].problem}"
            continue
        picks = _disambiguate(group)
        if not picks:
            skipped[key] = f"{len(group)} detections that cannot be told apart by position"
        for obj, where in picks:
            if obj.geometry is not None:
                named.append(NamedObject(_with_position(desc, where), desc, where, obj))
    return named, skipped


def _disambiguate(group: list[MeasuredObject]) -> list[tuple[MeasuredObject, str]]:
    boxes = [o.detection.box for o in group]
    picks: list[tuple[MeasuredObject, str]] = []
    left, right = ("left", "right") if len(group) == 2 else ("leftmost", "rightmost")
    # Leftmost / rightmost: the box lies entirely to one side of every other box of the description.
    for i, obj in enumerate(group):
        others = [b for j, b in enumerate(boxes) if j != i]
        if all(boxes[i][2] <= b[0] for b in others):
            picks.append((obj, left))
        elif all(boxes[i][0] >= b[2] for b in others):
            picks.append((obj, right))
    if picks:
        return picks
    if all(o.geometry is not None for o in group):
        ranges = [float(np.linalg.norm(o.geometry.centre_camera)) for o in group]  # type: ignore[union-attr]
        order = np.argsort(ranges)
        if ranges[order[0]] < NEAREST_RATIO * ranges[order[1]]:
            return [(group[int(order[0])], "nearest")]
    return []
