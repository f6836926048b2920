"""What the model saw, for people: the frame at the model's input size with the question and answer
written on it (and, for the geometric backend, the detection boxes and the measured segment), and the
same measurements as 3D markers in the camera frame. Plain numpy and data; the nodes convert to messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from spatialvlm_ros.spatial.distance_text import format_distance
from spatialvlm_ros.spatial.estimator import Estimate, Intrinsics
from spatialvlm_ros.spatial.geometry import intrinsics_from_fov
from spatialvlm_ros.spatial.imaging import resize_max_pixels

# RGB colours: object a, object b, the measured segment, text
COLOURS = {"a": (255, 140, 0), "b": (0, 170, 255), "segment": (255, 40, 200), "text": (255, 255, 255)}


def model_input_image(rgb: np.ndarray, backend: str, max_image_pixels: int) -> tuple[np.ndarray, float]:
    """The frame at the size the model saw it, and the scale from source pixels to that image.

    A VLM sees the frame downscaled to ``max_image_pixels`` (what vlm.py gives the processor); the
    geometric backend measures on the full frame.
    """
    if backend != "vlm":
        return rgb.copy(), 1.0
    seen = resize_max_pixels(rgb, max_image_pixels)
    if seen is rgb:
        return rgb.copy(), 1.0
    return seen, seen.shape[1] / rgb.shape[1]


def _measured(estimate: Estimate) -> tuple[dict[str, Any], list[list[float]] | None, str]:
    """The geometric details' objects, the segment the value was measured along, and its label."""
    details = estimate.details or {}
    objects = details.get("objects") or {}
    segment = None
    if estimate.query.kind == "gap_width" and details.get("gap_points_m"):
        segment = details["gap_points_m"]
    elif estimate.query.kind == "distance" and "a" in objects and "b" in objects:
        segment = [objects["a"]["centre_m"], objects["b"]["centre_m"]]
    label = format_distance(estimate.value_m) if estimate.value_m is not None else ""
    return objects, segment, label


def _project(point: Sequence[float], k: Intrinsics, scale: float) -> tuple[int, int] | None:
    x, y, z = (float(v) for v in point)
    if z <= 1e-6:
        return None
    return (int(round((k.fx * x / z + k.cx) * scale)), int(round((k.fy * y / z + k.cy) * scale)))


def _text_block(image: np.ndarray, lines: list[str], top: bool) -> None:
    """Write ``lines`` on a darkened band at the top or bottom, wrapped to the image width."""
    height, width = image.shape[:2]
    font_scale = max(0.35, min(0.6, width / 1100))
    thickness = 1
    (_, line_h), _ = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    line_h += 6
    wrapped: list[str] = []
    for line in lines:
        words, current = line.split(), ""
        for word in words:
            candidate = f"{current} {word}".strip()
            if cv2.getTextSize(candidate, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)[0][0] > width - 8 and current:
                wrapped.append(current)
                current = word
            else:
                current = candidate
        if current:
            wrapped.append(current)
    wrapped = wrapped[: max(1, (height // 2) // line_h)]
    band = line_h * len(wrapped) + 4
    rows = slice(0, band) if top else slice(max(0, height - band), height)
    image[rows] = (image[rows].astype(np.float32) * 0.35).astype(np.uint8)
    y0 = (line_h - 2) if top else (height - band + line_h - 2)
    for i, line in enumerate(wrapped):
        cv2.putText(image, line, (4, y0 + i * line_h), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    COLOURS["text"], thickness, cv2.LINE_AA)


def render_debug_image(rgb: np.ndarray, lines: list[str], estimates: Sequence[Estimate], *,
                       backend: str, max_image_pixels: int = 0, intrinsics: Intrinsics | None = None,
                       fallback_hfov_deg: float = 60.0) -> np.ndarray:
    """The frame the model saw with ``lines`` (question, answer) written on it, plus what the geometric
    backend measured: each object's detection box and label, and the segment its number was measured
    along with its length. Returns a new (H, W, 3) uint8 RGB image; ``rgb`` is not modified.
    """
    image, scale = model_input_image(rgb, backend, max_image_pixels)
    height, width = rgb.shape[:2]
    k = intrinsics or intrinsics_from_fov(width, height, fallback_hfov_deg)
    thickness = max(1, int(round(image.shape[1] / 320)))
    for estimate in estimates[:1]:  # the orders of one gap measure the same objects
        objects, segment, label = _measured(estimate)
        for key, mask in estimate.masks.items():
            if mask.shape != (height, width):
                continue
            if scale != 1.0:
                mask = cv2.resize(mask.astype(np.uint8), (image.shape[1], image.shape[0]),
                                  interpolation=cv2.INTER_NEAREST).astype(bool)
            colour = np.array(COLOURS.get(key, COLOURS["a"]), np.float32)
            image[mask] = (image[mask].astype(np.float32) * 0.5 + colour * 0.5).astype(np.uint8)
        for key, obj in objects.items():
            box = obj.get("box")
            if not box:
                continue
            x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
            x1, y1 = max(x0, x1 - 1), max(y0, y1 - 1)  # the box's x1, y1 are exclusive, cv2's inclusive
            colour = COLOURS.get(key, COLOURS["a"])
            cv2.rectangle(image, (x0, y0), (x1, y1), colour, thickness)
            tag = f"{obj.get('description', key)} {obj.get('score', 0):.2f}"
            (tag_w, _), _ = cv2.getTextSize(tag, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
            cv2.putText(image, tag, (max(0, min(x0 + 2, image.shape[1] - tag_w)), max(12, y0 - 4)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
        if segment is not None:
            ends = [_project(p, k, scale) for p in segment]
            if ends[0] is not None and ends[1] is not None:
                cv2.line(image, ends[0], ends[1], COLOURS["segment"], thickness + 1, cv2.LINE_AA)
                for end in ends:
                    cv2.circle(image, end, thickness + 2, COLOURS["segment"], -1)
                mid = ((ends[0][0] + ends[1][0]) // 2, (ends[0][1] + ends[1][1]) // 2)
                (label_w, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.55, 2)
                cv2.putText(image, label, (max(0, min(mid[0] + 4, image.shape[1] - label_w)), mid[1] - 4),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.55, COLOURS["segment"], 2, cv2.LINE_AA)
    _text_block(image, [line for line in lines if line], top=True)
    return image


@dataclass
class MarkerSpec:
    """One RViz marker in plain data: ``kind`` is cube, line or text; metres in the camera frame."""

    kind: str
    ns: str
    marker_id: int
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    orientation_xyzw: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)
    scale: tuple[float, float, float] = (0.01, 0.01, 0.01)
    rgba: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    points: list[tuple[float, float, float]] = field(default_factory=list)
    text: str = ""


def _rgba(key: str, alpha: float) -> tuple[float, float, float, float]:
    r, g, b = COLOURS[key]
    return (r / 255, g / 255, b / 255, alpha)


def box_orientation(up: Sequence[float] | None) -> tuple[float, float, float, float]:
    """Quaternion (x, y, z, w) turning the camera optical frame's axes into a box frame whose y axis
    is the floor's downward direction (camera y is down) and whose x axis is the camera's x laid flat.

    The geometric backend measures width across the camera's view, height along the floor normal and
    length front to back; without a floor the box is the camera's own axes.
    """
    if up is None:
        return (0.0, 0.0, 0.0, 1.0)
    down = -np.asarray(up, dtype=float)
    down /= np.linalg.norm(down)
    x = np.array([1.0, 0.0, 0.0]) - down * down[0]
    if np.linalg.norm(x) < 1e-6:
        return (0.0, 0.0, 0.0, 1.0)
    x /= np.linalg.norm(x)
    z = np.cross(x, down)
    from scipy.spatial.transform import Rotation  # scipy is a dependency already (OWLv2's processor)

    x_, y_, z_, w_ = Rotation.from_matrix(np.column_stack([x, down, z])).as_quat()
    return (float(x_), float(y_), float(z_), float(w_))


def debug_markers(estimates: Sequence[Estimate]) -> list[MarkerSpec]:
    """3D boxes of the measured objects, the measured segment and its length as text (camera frame).

    Empty when nothing was measured in 3D (the vlm backend, or an answer with no number).
    """
    specs: list[MarkerSpec] = []
    for estimate in estimates[:1]:
        details = estimate.details or {}
        objects, segment, label = _measured(estimate)
        floor = details.get("floor") or {}
        orientation = box_orientation(floor.get("normal") if details.get("frame") == "floor" else None)
        for i, (key, obj) in enumerate(sorted(objects.items())):
            centre = tuple(float(v) for v in obj["centre_m"])
            colour = key if key in ("a", "b") else "a"
            specs.append(MarkerSpec("cube", "objects", i, position=centre, orientation_xyzw=orientation,
                                    scale=(float(obj["width_m"]), float(obj["height_m"]), float(obj["length_m"])),
                                    rgba=_rgba(colour, 0.45)))
            above = (centre[0], centre[1] - float(obj["height_m"]) / 2 - 0.03, centre[2])
            specs.append(MarkerSpec("text", "labels", i, position=above, scale=(0.0, 0.0, 0.04),
                                    rgba=_rgba(colour, 1.0), text=str(obj.get("description", key))))
        if segment is not None:
            a, b = (tuple(float(v) for v in p) for p in segment)
            specs.append(MarkerSpec("line", "segment", 0, scale=(0.01, 0.0, 0.0), rgba=_rgba("segment", 1.0),
                                    points=[a, b]))
            mid = tuple((u + v) / 2 for u, v in zip(a, b, strict=True))
            specs.append(MarkerSpec("text", "segment_length", 0, position=(mid[0], mid[1] - 0.03, mid[2]),
                                    scale=(0.0, 0.0, 0.05), rgba=_rgba("segment", 1.0), text=label))
    return specs
