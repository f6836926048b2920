"""The geometric backend (``model.backend: geometric``): SpatialVLM's data pipeline run at inference time.

Objects are found by an open-vocabulary detector, each frame gets metric depth (the camera's own, or a
monocular depth model's), pixels are lifted to 3D with the camera intrinsics, and the question is answered
from the objects' 3D boxes (``geometry.py``). The answer speaks like the VLM (``format_distance``) and
carries the numbers in ``Estimate.details``. Deterministic: ``samples`` is accepted and ignored.

Importing this module needs no torch: the transformers models are built (``vision_models``) only when
no detector or depth model is handed in.
"""

# Decisions worth knowing before changing this module:
# * The value of a distance question is the centre-to-centre distance (the paper's definition); the
#   closest-point distance between the two objects' surfaces is reported beside it in details.
# * "Not found" is an answer: value None and a reason naming the object and the best score it got.
# * Two descriptions whose best boxes are the same object (IoU >= SAME_OBJECT_IOU): the one with the
#   lower score takes its best box that is clearly another object, if one passes the threshold;
#   otherwise the query is refused (a distance of 0 between an object and itself would be made up).
# * depth_source auto uses the frame's depth when it is aligned and has readings, and the depth model
#   otherwise, saying why in details.notes; topic never loads a depth model.
# * With a segmenter (model.segmenter), the chosen box of each description is prompted once per frame (all
#   frames in one call); the mask is a hint that segmentation.py's depth checks clean. A segmenter that
#   fails or returns unusable masks leaves those objects to depth alone, and the notes say so.
# * Intrinsics from camera_info (scaled when it describes another resolution of the same camera);
#   without usable camera_info, model.fallback_hfov_deg, and the answer text says so.

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from spatialvlm_ros.spatial import geometry as geo
from spatialvlm_ros.spatial.distance_text import format_distance
from spatialvlm_ros.spatial.estimator import Estimate, Frame, Intrinsics, ModelConfig, SpatialQuery
from spatialvlm_ros.spatial.segmentation import DEFAULT_SETTINGS, FrameGeometry, SegmentationSettings

__all__ = ["Detection", "DepthModel", "Detector", "FrameObjects", "GeometricEstimator", "MeasuredObject",
           "SAME_OBJECT_IOU", "Segmenter"]

log = logging.getLogger(__name__)

SAME_OBJECT_IOU = 0.8
# Another candidate counts as a different object below this overlap with the contested box.
OTHER_OBJECT_IOU = 0.5
# Floor fitting looks at every FLOOR_STRIDE-th pixel in each direction outside the objects.
FLOOR_STRIDE = 4


@dataclass(frozen=True)
class Detection:
    """One candidate box for a description: pixels (x0, y0, x1, y1), x1/y1 exclusive, and its score.

    ``mask`` (H, W bool), when a detector has one, restricts the object to those pixels.
    """

    box: tuple[float, float, float, float]
    score: float
    mask: np.ndarray | None = field(default=None, compare=False)


class Detector(Protocol):
    """Finds described objects: for each image, candidates per description, best first."""

    name: str

    def detect(self, images: Sequence[np.ndarray],
               descriptions: Sequence[Sequence[str]]) -> list[dict[str, list[Detection]]]: ...

    def close(self) -> None: ...


class Segmenter(Protocol):
    """A promptable segmenter: for each image, one (H, W) bool mask per box prompt, in order."""

    name: str

    def segment(self, images: Sequence[np.ndarray],
                boxes: Sequence[Sequence[tuple[float, float, float, float]]]) -> list[list[np.ndarray]]: ...

    def close(self) -> None: ...


class DepthModel(Protocol):
    """Metric depth (metres along the optical axis) for each (H, W, 3) image, at its own size."""

    name: str

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]: ...

    def close(self) -> None: ...


@dataclass
class _FrameWork:
    """What one frame needs and what has been worked out about it."""

    frame: Frame
    descriptions: list[str]
    problem: str | None = None  # the frame cannot be measured at all
    depth_m: np.ndarray | None = None
    depth_source: str = ""
    intrinsics: Intrinsics | None = None
    intrinsics_source: str = ""
    notes: list[str] = field(default_factory=list)
    candidates: dict[str, list[Detection]] = field(default_factory=dict)
    # The segmenter's mask for each chosen box (absent: none, or it failed and the note says so).
    masks: dict[tuple[float, ...], np.ndarray] = field(default_factory=dict)
    segmenter_failed: bool = False
    # Filled on first measurement:
    geometry: FrameGeometry | None = None
    measured: dict[tuple[float, ...], tuple[geo.ObjectGeometry, dict[str, Any]] | str] = field(default_factory=dict)
    closest: dict[tuple, tuple[float, np.ndarray, np.ndarray]] = field(default_factory=dict)


class GeometricEstimator:
    """Answers distance, gap-width, width and height queries from detections and metric depth."""

    backend = "geometric"

    def __init__(self, config: ModelConfig, detector: Detector | None = None,
                 depth_model: DepthModel | None = None, segmenter: Segmenter | None = None,
                 segmentation: SegmentationSettings = DEFAULT_SETTINGS) -> None:
        self.config = config
        self.segmentation = segmentation
        want_segmenter = segmenter is None and config.segmenter != "none"
        if detector is None or (depth_model is None and config.depth_source != "topic") or want_segmenter:
            from spatialvlm_ros.spatial import vision_models  # torch and transformers load here

            if detector is None:
                detector = vision_models.HFDetector(config.detector, config.device, config.dtype,
                                                    config.trust_remote_code)
            if depth_model is None and config.depth_source != "topic":
                depth_model = vision_models.HFDepthModel(config.depth_model, config.device, config.dtype,
                                                         config.trust_remote_code)
            if want_segmenter:
                segmenter = vision_models.HFSegmenter(config.segmenter, config.device, config.dtype,
                                                      config.trust_remote_code)
        if segmenter is not None and not callable(getattr(segmenter, "segment", None)):
            raise TypeError(f"the segmenter ({type(segmenter).__name__}) has no segment(images, boxes) method: "
                            "give an object with segment() returning one (H, W) mask per box, or None")
        self.detector = detector
        self.depth_model = depth_model
        self.segmenter = segmenter
        depth_name = "depth topic" if config.depth_source == "topic" else (
            f"{depth_model.name}" if config.depth_source == "model" else f"depth topic or {depth_model.name}")
        self.model_name = f"{detector.name} + {depth_name}"
        if segmenter is not None:
            self.model_name += f" + {getattr(segmenter, 'name', type(segmenter).__name__)}"

    @property
    def part_names(self) -> dict[str, str]:
        """The detector's and depth model's names (provenance of the data engine's rows)."""
        return {"detector": getattr(self.detector, "name", "") or "",
                "depth_model": getattr(self.depth_model, "name", "") or ""}

    def close(self) -> None:
        for part in (self.detector, self.depth_model, self.segmenter):
            if part is not None:
                part.close()

    # ------------------------------------------------------------------ estimate
    def estimate(self, items: Sequence[tuple[Frame, SpatialQuery]], samples: int = 1) -> list[Estimate]:
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        work: dict[int, _FrameWork] = {}
        for frame, query in items:
            w = work.get(id(frame))
            if w is None:
                w = work[id(frame)] = _FrameWork(frame, [])
            for desc in _objects_of(query):
                if desc not in w.descriptions:
                    w.descriptions.append(desc)
        frames = list(work.values())
        for w in frames:
            self._prepare(w)
        self._estimate_depth([w for w in frames if w.problem is None and w.depth_m is None])
        self._detect([w for w in frames if w.problem is None])
        if self.segmenter is not None:
            self._segment([w for w in frames if w.problem is None])
        results = []
        for frame, query in items:
            w = work[id(frame)]
            if w.problem is not None:
                results.append(Estimate(query, None, reason=w.problem))
                continue
            try:
                results.append(_with_masks(self._answer(w, query), w))
            except geo.GeometryError as exc:
                results.append(Estimate(query, None, reason=str(exc), details=self._base_details(w)))
        return results

    # ------------------------------------------------------------------ per frame: image, depth, intrinsics
    def _prepare(self, w: _FrameWork) -> None:
        rgb = w.frame.rgb
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 2 \
                or rgb.shape[1] < 2:
            w.problem = f"bad image: expected (H, W, 3) RGB, got shape {getattr(rgb, 'shape', None)}"
            return
        h, width = rgb.shape[:2]
        intrinsics, note = geo.intrinsics_for_image(w.frame.intrinsics, width, h)
        if intrinsics is None:
            intrinsics = geo.intrinsics_from_fov(width, h, self.config.fallback_hfov_deg)
            w.intrinsics_source = "fallback_fov"
            w.notes.append(f"{note}: intrinsics assumed from model.fallback_hfov_deg="
                           f"{self.config.fallback_hfov_deg:g}")
        else:
            w.intrinsics_source = "camera_info_scaled" if note else "camera_info"
            if note:
                w.notes.append(note)
        w.intrinsics = intrinsics
        source = self.config.depth_source
        problem = _depth_problem(w.frame.depth_m, (h, width))
        if source == "model":
            return  # estimated below, whatever the topic holds
        if problem is None:
            w.depth_m = np.asarray(w.frame.depth_m, np.float32)
            w.depth_source = "topic"
            return
        if source == "topic":
            w.problem = f"{problem} (model.depth_source is topic, so no depth model is used)"
            return
        w.notes.append(f"{problem}: depth estimated by model.depth_model")

    def _estimate_depth(self, frames: list[_FrameWork]) -> None:
        if not frames:
            return
        if self.depth_model is None:  # only reachable with an injected setup that lacks one
            for w in frames:
                w.problem = "no depth for this frame and no depth model loaded"
            return
        try:
            depths = self.depth_model.predict([w.frame.rgb for w in frames])
        except (RuntimeError, ValueError) as exc:
            log.error("depth model failed on %d frames: %s", len(frames), exc)
            for w in frames:
                w.problem = f"depth model failed: {exc}"
            return
        for w, depth in zip(frames, depths, strict=True):
            problem = _depth_problem(depth, w.frame.rgb.shape[:2])
            if problem is not None:
                w.problem = f"depth model output unusable: {problem}"
            else:
                w.depth_m, w.depth_source = np.asarray(depth, np.float32), "model"

    def _detect(self, frames: list[_FrameWork]) -> None:
        if not frames:
            return
        try:
            found = self.detector.detect([w.frame.rgb for w in frames], [w.descriptions for w in frames])
        except (RuntimeError, ValueError) as exc:
            log.error("detector failed on %d frames: %s", len(frames), exc)
            for w in frames:
                w.problem = f"detector failed: {exc}"
            return
        for w, candidates in zip(frames, found, strict=True):
            w.candidates = candidates

    def _chosen(self, w: _FrameWork) -> list[Detection]:
        """The best detection of each description above the threshold: the objects of this frame."""
        threshold = self.config.detector_threshold
        out = []
        for cands in w.candidates.values():
            best = next((c for c in cands if c.score >= threshold), None)
            if best is not None and all(best.box != o.box for o in out):
                out.append(best)
        return out

    def _segment(self, frames: list[_FrameWork], boxes: list[list[tuple[float, ...]]] | None = None) -> None:
        """The segmenter's masks for each frame's chosen boxes (or ``boxes``), in one call. A failure or an
        unusable mask leaves that box to box-mode segmentation, with a note."""
        assert self.segmenter is not None
        if boxes is None:
            boxes = [[d.box for d in self._chosen(w) if d.mask is None] for w in frames]
        todo = [(w, b) for w, b in zip(frames, boxes, strict=True) if b]
        if not todo:
            return
        try:
            found = self.segmenter.segment([w.frame.rgb for w, _ in todo], [b for _, b in todo])
            if len(found) != len(todo) or any(len(m) != len(b) for m, (_, b) in zip(found, todo, strict=True)):
                raise ValueError(f"it returned {[len(m) for m in found]} masks for {[len(b) for _, b in todo]} "
                                 "boxes")
        except (RuntimeError, ValueError, TypeError) as exc:
            log.error("segmenter failed on %d frames: %s", len(todo), exc)
            for w, _ in todo:
                w.segmenter_failed = True
                w.notes.append(f"segmenter failed ({exc}): objects segmented from their boxes and depth alone")
            return
        for (w, frame_boxes), masks in zip(todo, found, strict=True):
            shape = w.frame.rgb.shape[:2]
            for box, mask in zip(frame_boxes, masks, strict=True):
                mask = np.asarray(mask)
                if mask.shape != shape:
                    w.notes.append(f"segmenter mask for box {[round(v) for v in box]} is {mask.shape}, not "
                                   f"{shape}: segmented from the box and depth alone")
                    continue
                w.masks[box] = mask.astype(bool)

    # ------------------------------------------------------------------ per query
    def _pick(self, w: _FrameWork, description: str) -> Detection:
        threshold = self.config.detector_threshold
        cands = [c for c in w.candidates.get(description, []) if c.score >= threshold]
        if not cands:
            all_cands = w.candidates.get(description, [])
            best = f"; its best box scored {all_cands[0].score:.2f}" if all_cands else ""
            raise geo.GeometryError(
                f"{description!r} not found: no detection scored at least model.detector_threshold="
                f"{threshold:g}{best}")
        return cands[0]

    def _pick_pair(self, w: _FrameWork, a: str, b: str) -> tuple[Detection, Detection]:
        da, db = self._pick(w, a), self._pick(w, b)
        iou = geo.box_iou(da.box, db.box)
        if iou < SAME_OBJECT_IOU:
            return da, db
        threshold = self.config.detector_threshold
        # The weaker description looks for another object among its own candidates.
        keep, move, name = (da, b, "b") if da.score >= db.score else (db, a, "a")
        alternative = next((c for c in w.candidates.get(move, [])
                            if c.score >= threshold and geo.box_iou(c.box, keep.box) < OTHER_OBJECT_IOU), None)
        if alternative is None:
            raise geo.GeometryError(
                f"{a!r} and {b!r} were found as the same object (boxes overlap with IoU {iou:.2f}); "
                "describe them so that they can be told apart")
        return (da, alternative) if name == "b" else (alternative, db)

    def _ensure_3d(self, w: _FrameWork) -> FrameGeometry:
        if w.geometry is not None:
            return w.geometry
        assert w.depth_m is not None and w.intrinsics is not None
        threshold = self.config.detector_threshold
        boxes = [c.box for cands in w.candidates.values() for c in cands if c.score >= threshold]
        w.geometry = FrameGeometry.build(w.depth_m, w.intrinsics, boxes, self.segmentation, FLOOR_STRIDE)
        if w.geometry.floor is None:
            w.notes.append("no floor plane found: measured in the camera frame (horizontal = the "
                           "camera's x-z plane), centres are those of the visible surfaces")
        return w.geometry

    def _measure(self, w: _FrameWork, det: Detection,
                 objects: Sequence[Detection] | None = None) -> tuple[geo.ObjectGeometry, dict[str, Any]]:
        """``objects``: the frame's objects whose boxes compete for pixels (default: the best detection of
        each description)."""
        key = det.box
        cached = w.measured.get(key)
        if isinstance(cached, str):
            raise geo.GeometryError(cached)
        if cached is not None:
            return cached
        fg = self._ensure_3d(w)
        mask, source = det.mask, "detector mask"
        if mask is None and self.segmenter is not None:
            if key not in w.masks and not w.segmenter_failed:  # a box chosen only now (a contested object)
                self._segment([w], [[key]])
            mask, source = w.masks.get(key), "segmenter"
        if mask is None:
            source = "box"
        others = [d.box for d in (self._chosen(w) if objects is None else objects) if d.box != key]
        try:
            measured, obj = fg.measure(det.box, mask, others, mask_source=source)
        except geo.GeometryError as exc:
            w.measured[key] = str(exc)
            raise
        w.measured[key] = (measured, obj.info)
        return w.measured[key]

    def _answer(self, w: _FrameWork, query: SpatialQuery) -> Estimate:
        details: dict[str, Any] = {}
        if query.kind in ("width", "height"):
            det = self._pick(w, query.object_a)
            try:
                obj, seg = self._measure(w, det)
            except geo.GeometryError as exc:
                raise geo.GeometryError(f"{query.object_a!r}: {exc}") from exc
            details["objects"] = {"a": _object_details(query.object_a, det, obj, seg)}
            value = obj.width_m if query.kind == "width" else obj.height_m
            word = "wide" if query.kind == "width" else "tall"
            text = f"{_cap(query.object_a)} is {format_distance(value)} {word}."
            return self._estimate(query, value, text, details, w)
        da, db = self._pick_pair(w, query.object_a, query.object_b)
        objs = []
        for desc, det in ((query.object_a, da), (query.object_b, db)):
            try:
                objs.append(self._measure(w, det))
            except geo.GeometryError as exc:
                raise geo.GeometryError(f"{desc!r}: {exc}") from exc
        (a, seg_a), (b, seg_b) = objs
        details["objects"] = {"a": _object_details(query.object_a, da, a, seg_a),
                              "b": _object_details(query.object_b, db, b, seg_b)}
        centre = geo.centre_distance(a, b)
        closest, pa, pb = self._closest(w, da, db, a, b)
        details.update(centre_distance_m=_r(centre), closest_distance_m=_r(closest),
                       closest_points_m=[_vec(pa), _vec(pb)])
        if query.kind == "gap_width":
            gap, ga, gb = geo.footprint_gap(a, b, w.geometry.frame if w.geometry else geo.MeasurementFrame.camera())
            details.update(gap_width_m=_r(gap), gap_points_m=[_vec(ga), _vec(gb)])
            text = f"The gap between {query.object_a} and {query.object_b} is {format_distance(gap)} wide."
            if gap == 0:
                text = (f"There is no gap between {query.object_a} and {query.object_b}: seen from above "
                        "they touch or overlap.")
            return self._estimate(query, gap, text, details, w)
        text = f"{_cap(query.object_a)} is {format_distance(centre)} from {query.object_b}."
        return self._estimate(query, centre, text, details, w)

    def _closest(self, w: _FrameWork, da: Detection, db: Detection, a: geo.ObjectGeometry,
                 b: geo.ObjectGeometry) -> tuple[float, np.ndarray, np.ndarray]:
        # The distance and gap questions of one pair (and both orders of the affordance chain) share it.
        key = (da.box, db.box)
        if key not in w.closest:
            w.closest[key] = geo.closest_distance(a, b)
            w.closest[(db.box, da.box)] = (w.closest[key][0], w.closest[key][2], w.closest[key][1])
        return w.closest[key]

    def _estimate(self, query: SpatialQuery, value: float, text: str, details: dict[str, Any],
                  w: _FrameWork) -> Estimate:
        if w.intrinsics_source == "fallback_fov":
            text += " (Camera intrinsics were assumed: no usable camera_info.)"
        return Estimate(query, float(value), [text], [float(value)], None, {**self._base_details(w), **details})

    # ------------------------------------------------------------------ every object of a frame
    def measure_objects(self, frames: Sequence[Frame],
                        descriptions: Sequence[Sequence[str]]) -> list[FrameObjects]:
        """Every detection (score >= model.detector_threshold) of each frame's descriptions, measured the
        way queries are (same depth, intrinsics, floor frame, segmentation and caches): the data engine's
        view of a frame. Duplicate boxes of one description (IoU >= OTHER_OBJECT_IOU) keep the best; a
        box found for two descriptions (IoU >= SAME_OBJECT_IOU) keeps the higher-scoring description.
        """
        work = [_FrameWork(frame, list(dict.fromkeys(descs))) for frame, descs in
                zip(frames, descriptions, strict=True)]
        for w in work:
            self._prepare(w)
        self._estimate_depth([w for w in work if w.problem is None and w.depth_m is None])
        self._detect([w for w in work if w.problem is None and w.descriptions])
        out = []
        for w in work:
            if w.problem is not None:
                out.append(FrameObjects([], None, {}, w.problem))
                continue
            kept: list[tuple[str, Detection]] = []
            threshold = self.config.detector_threshold
            ranked = sorted(((c.score, d, c) for d in w.descriptions for c in w.candidates.get(d, [])
                             if c.score >= threshold), key=lambda t: -t[0])
            for _, desc, cand in ranked:
                if any(geo.box_iou(cand.box, k.box) >= (OTHER_OBJECT_IOU if d == desc else SAME_OBJECT_IOU)
                       for d, k in kept):
                    continue
                kept.append((desc, cand))
            if self.segmenter is not None:
                self._segment([w], [[det.box for _, det in kept if det.mask is None]])
            dets = [det for _, det in kept]
            objects = []
            for desc, det in kept:
                try:
                    geometry, segmentation = self._measure(w, det, dets)
                    objects.append(MeasuredObject(desc, det, geometry, segmentation=segmentation))
                except geo.GeometryError as exc:
                    objects.append(MeasuredObject(desc, det, None, str(exc)))
            if w.geometry is None and w.depth_m is not None:
                self._ensure_3d(w)
            out.append(FrameObjects(objects, None if w.geometry is None else w.geometry.frame,
                                    self._base_details(w)))
        return out

    def _base_details(self, w: _FrameWork) -> dict[str, Any]:
        g = w.geometry
        return {
            "backend": self.backend,
            "depth_source": w.depth_source or None,
            "intrinsics": w.intrinsics_source or None,
            "frame": None if g is None else ("floor" if g.frame.on_floor else "camera"),
            "floor": None if g is None or g.floor is None else g.floor.to_dict(),
            "depth_noise_rel": None if g is None else round(g.noise_rel, 5),
            "notes": list(w.notes),
        }


@dataclass
class MeasuredObject:
    """One detection of a description, measured in its frame's measurement frame (``geometry``), or
    ``problem`` saying why it could not be measured (the detection still counts for ambiguity)."""

    description: str
    detection: Detection
    geometry: geo.ObjectGeometry | None = None
    problem: str | None = None
    # How the object's points were chosen (mask source, pixels kept and rejected), as in an answer's details.
    segmentation: dict[str, Any] | None = None


@dataclass
class FrameObjects:
    """Every object found in one frame (``measure_objects``); ``problem``: the frame was not measured."""

    objects: list[MeasuredObject]
    frame3d: geo.MeasurementFrame | None
    details: dict[str, Any]
    problem: str | None = None


def _with_masks(estimate: Estimate, w: _FrameWork) -> Estimate:
    """Attach the masks of the objects the answer measured, the segmenter's or else the detector's
    (for the debug image; never serialized)."""
    def rounded(box: Any) -> list[float]:
        return [round(float(v), 1) for v in box]

    for key, obj in ((estimate.details or {}).get("objects") or {}).items():
        mask = next((m for box, m in w.masks.items() if rounded(box) == obj["box"]), None)
        if mask is None:
            mask = next((c.mask for c in w.candidates.get(obj["description"], [])
                         if c.mask is not None and rounded(c.box) == obj["box"]), None)
        if mask is not None:
            estimate.masks[key] = mask
    return estimate


def _objects_of(query: SpatialQuery) -> list[str]:
    if query.kind in ("width", "height"):
        return [query.object_a]
    return [query.object_a, query.object_b]


def _depth_problem(depth: Any, shape: tuple[int, int]) -> str | None:
    """Why ``depth`` cannot be used with an image of ``shape`` (H, W), or None."""
    if depth is None:
        return "no depth image with this frame"
    depth = np.asarray(depth)
    if depth.ndim != 2:
        return f"depth must be (H, W), got shape {depth.shape}"
    if depth.shape != tuple(shape):
        return (f"depth {depth.shape[1]}x{depth.shape[0]} is not aligned with the image "
                f"{shape[1]}x{shape[0]}")
    if not depth.dtype.kind == "f":
        return f"depth must be float metres, got {depth.dtype}"
    share = float(geo.valid_depth(depth).mean())
    if share == 0.0:
        return "the depth image has no valid pixels (all zero, NaN or negative)"
    return None


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _r(value: float) -> float:
    return round(float(value), 4)


def _vec(v: np.ndarray) -> list[float]:
    return [round(float(x), 4) for x in v]


def _object_details(description: str, det: Detection, obj: geo.ObjectGeometry,
                    segmentation: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "box": [round(float(v), 1) for v in det.box],
            "score": round(float(det.score), 4), **obj.to_dict(), "segmentation": dict(segmentation)}
