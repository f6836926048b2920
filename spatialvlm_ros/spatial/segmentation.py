"""Which pixels are the object: per-object 3D points from a depth image, the camera intrinsics and detection
boxes (optionally masks from a detector or a promptable segmenter), with the floor, the background and
neighbouring objects removed; then each object's 3D box.

One shared path for every user of the geometry (the geometric backend live and offline, and the data
engine)::

    frame = FrameGeometry.build(depth_m, intrinsics, boxes)       # lift, noise, floor, measurement frame
    obj = frame.measure(boxes[0], mask=None, others=boxes[1:])    # ObjectGeometry (GeometryError if not)
    measured = measure_boxes(depth_m, intrinsics, boxes, masks)   # the same for a whole list of boxes

numpy, scipy and OpenCV only: no torch, no ROS.
"""

# Decisions worth knowing before changing this module (bench/geometry_wide.py measures each of them;
# SegmentationSettings holds the alternatives so the bench can switch them off one at a time):
# * Membership is decided in image space, on a 5x5 median of the depth: the median keeps depth steps
#   sharp and cuts Gaussian noise about four times, so a 1 % noisy reading at 2.5 m (2.5 cm) becomes
#   ~6 mm, enough to tell an object's pixels from the floor's and from a neighbour's. Measurement then
#   uses the object's own raw depths (averaged over its own pixels when the depth is noisy).
# * The floor test is per pixel, along its ray: the median depth's height above the fitted floor against
#   a few standard deviations of that height's noise (which depends on how steeply the ray meets the
#   floor). Pixels at the object's foot are indistinguishable from floor and go; an object whose lowest
#   kept point is near the floor stands on it (its bottom is the floor).
# * Connectivity: 8-neighbour pixels are one surface unless their median depths differ by more than the
#   noise allows plus the step a surface seen at a grazing angle makes between pixels. Gaps between
#   objects are floor pixels (removed) or depth steps (cut), never bridged by a coarse 3D voxel grid.
# * The object is the component with most pixels in the middle of its box (not the largest: a wall or a
#   bigger neighbour may fill more of the box). Pixels inside another detection's box are dropped when
#   the component they join lies mostly in that other box.
# * A mask (from a detector or a segmenter) only narrows the candidate pixels: the same floor test,
#   connectivity and choice run behind it, so a mask that spills onto the floor or a neighbour is cleaned.
# * Extremes are robust: the top is a high percentile of the heights, and the footprint drops the points
#   beyond a trimmed percentile in a set of directions before its outline is taken.

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from spatialvlm_ros.spatial import geometry as geo
from spatialvlm_ros.spatial.estimator import Intrinsics

__all__ = [
    "DEFAULT_SETTINGS",
    "FrameGeometry",
    "ObjectPoints",
    "SegmentationSettings",
    "measure_boxes",
    "segment_object",
]

Box = tuple[float, float, float, float]

# Fewer points than this on an object give no trustworthy extent.
MIN_OBJECT_POINTS = geo.MIN_OBJECT_POINTS


@dataclass(frozen=True)
class SegmentationSettings:
    """The segmentation's choices; the defaults are what bench/geometry_wide.py chose on its validation
    scenes. Each alternative is kept so that the bench can show what it is worth."""

    # Membership depth: a median over median_px x median_px pixels (3 or 5; 1 = the raw depth).
    median_px: int = 5
    # A pixel is floor when its height is within floor_sigmas noise standard deviations of the floor,
    # and at least floor_min_m.
    floor_sigmas: float = 3.0
    floor_min_m: float = 0.005
    # Neighbours are one surface when their depths differ by at most edge_sigmas standard deviations plus
    # the step of a surface met at edge_grazing_deg.
    edge_sigmas: float = 4.0
    edge_grazing_deg: float = 10.0
    # "image": connectivity on the pixel grid with depth steps cut; "voxel": 26-connected 3D voxels
    # (the rule before issue 11; kept for comparison).
    connectivity: str = "image"
    # Drop the pixels that join a component lying mostly in another detection's box.
    use_other_boxes: bool = True
    # Top of the object: this percentile of the heights (100 = the highest point).
    top_percentile: float = 99.0
    # Footprint: from the points higher than footprint_above_tol floor tolerances (by their median depth's
    # height when footprint_by_median), but at most half the object's height, and at least 1.5.
    footprint_above_tol: float = 3.0
    footprint_by_median: bool = True
    # Footprint: drop points beyond this percentile (each side) in 8 directions before the outline.
    footprint_trim_percent: float = 0.0
    # Average the depth over the object's own pixels when it is noisy.
    smooth: bool = True
    # A mask's outline may be this many pixels short: candidates reach that far past it (0: the mask only).
    mask_grow_px: int = 3
    # Drop pixels whose own reading disagrees with their neighbourhood's median (outlines, outliers).
    drop_mixed: bool = True
    # The membership median only over the window readings near the pixel's own (see _refine_median).
    cluster_median: bool = True

    def __post_init__(self) -> None:
        if self.median_px not in (1, 3, 5):
            raise ValueError(f"median_px must be 1, 3 or 5, got {self.median_px}")
        if self.connectivity not in ("image", "voxel"):
            raise ValueError(f"connectivity must be image or voxel, got {self.connectivity!r}")


DEFAULT_SETTINGS = SegmentationSettings()

# A median of 25 Gaussian samples has about a quarter of their spread (1.2533 / 5).
_MEDIAN_NOISE_FACTOR = {1: 1.0, 3: 0.42, 5: 0.26}
# Depth steps of 16UC1 depth (1 mm) count as noise too.
_QUANTUM_M = 0.001


@dataclass
class ObjectPoints:
    """The 3D points of one object (camera frame) and how they were chosen (``info``: the mask source,
    pixels kept and rejected and why, the floor share)."""

    points: np.ndarray
    rests_on_floor: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    # The points the footprint is taken from (None: all). Those near the floor are left out: an upright
    # object's outline is its top's, and the few floor pixels a box may keep sit just above the floor
    # tolerance.
    in_footprint: np.ndarray | None = None


def _fmt_box(box: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in box) + ")"


@dataclass
class FrameGeometry:
    """One depth frame lifted to 3D: points, noise, the floor and the measurement frame."""

    depth_m: np.ndarray
    intrinsics: Intrinsics
    points: np.ndarray
    valid: np.ndarray
    depth_median: np.ndarray
    noise_rel: float
    floor: geo.Plane | None
    frame: geo.MeasurementFrame
    settings: SegmentationSettings = DEFAULT_SETTINGS

    @classmethod
    def build(cls, depth_m: np.ndarray, intrinsics: Intrinsics, object_boxes: Sequence[Box] = (),
              settings: SegmentationSettings = DEFAULT_SETTINGS, floor_stride: int = 4) -> FrameGeometry:
        """Lift ``depth_m`` (H, W metres along the optical axis) and fit the floor outside ``object_boxes``."""
        depth = np.asarray(depth_m, np.float32)
        if depth.ndim != 2:
            raise geo.GeometryError(f"depth must be (H, W), got shape {depth.shape}")
        points, valid = geo.lift(depth, intrinsics)
        if not valid.any():
            raise geo.GeometryError("the depth image has no valid pixels (all zero, NaN or negative)")
        noise_rel = geo.depth_noise_rel(depth)
        outside = valid.copy()
        for box in object_boxes:
            rows, cols = geo.box_slices(box, outside.shape)
            outside[rows, cols] = False
        sample = outside[::floor_stride, ::floor_stride]
        floor = geo.fit_floor(points[::floor_stride, ::floor_stride][sample])
        frame = geo.MeasurementFrame.camera() if floor is None else geo.MeasurementFrame.from_floor(floor)
        median = _median_depth(depth, valid, settings.median_px)
        if settings.cluster_median and settings.median_px > 1:
            _refine_median(median, depth, valid, object_boxes, noise_rel, intrinsics.fx, settings)
        return cls(depth, intrinsics, points, valid, median, noise_rel, floor, frame, settings)

    # -------------------------------------------------------------- per object
    def segment(self, box: Box, mask: np.ndarray | None = None, others: Sequence[Box] = (),
                mask_source: str | None = None) -> ObjectPoints:
        """The object's points in ``box`` (pixels x0, y0, x1, y1; x1/y1 exclusive), narrowed to ``mask``
        (H, W bool) when given; ``others`` are the boxes of the other objects in the frame."""
        return segment_object(self, box, mask, others, mask_source)

    def measure(self, box: Box, mask: np.ndarray | None = None, others: Sequence[Box] = (),
                mask_source: str | None = None) -> tuple[geo.ObjectGeometry, ObjectPoints]:
        obj = self.segment(box, mask, others, mask_source)
        return measure_object(obj, self.frame, self.settings), obj

    def sigma_m(self, z: np.ndarray | float) -> np.ndarray | float:
        """Noise standard deviation of the membership (median) depth at depth ``z``."""
        factor = _MEDIAN_NOISE_FACTOR[self.settings.median_px]
        return np.sqrt((factor * self.noise_rel * np.asarray(z)) ** 2 + _QUANTUM_M ** 2 / 12)

    def to_dict(self) -> dict[str, Any]:
        return {"floor": None if self.floor is None else self.floor.to_dict(),
                "depth_noise_rel": round(self.noise_rel, 5)}


def measure_boxes(depth_m: np.ndarray, intrinsics: Intrinsics, boxes: Sequence[Box],
                  masks: Sequence[np.ndarray | None] | None = None, mask_source: str | None = None,
                  settings: SegmentationSettings = DEFAULT_SETTINGS,
                  ) -> tuple[FrameGeometry, list[geo.ObjectGeometry | geo.GeometryError]]:
    """Every box's object measured in one frame: image + depth + intrinsics + boxes (+ masks) -> per-object
    3D boxes. Each entry is an ObjectGeometry, or the GeometryError that says why that box has none."""
    if masks is not None and len(masks) != len(boxes):
        raise ValueError(f"{len(masks)} masks for {len(boxes)} boxes")
    frame = FrameGeometry.build(depth_m, intrinsics, boxes, settings)
    out: list[geo.ObjectGeometry | geo.GeometryError] = []
    for i, box in enumerate(boxes):
        mask = None if masks is None else masks[i]
        others = [b for j, b in enumerate(boxes) if j != i]
        try:
            out.append(frame.measure(box, mask, others, mask_source)[0])
        except geo.GeometryError as exc:
            out.append(exc)
    return frame, out


def _median_depth(depth: np.ndarray, valid: np.ndarray, size: int) -> np.ndarray:
    if size == 1:
        return np.where(valid, depth, 0.0).astype(np.float32)
    filled = np.where(valid, depth, 0.0).astype(np.float32)
    med = cv2.medianBlur(filled, size)
    # Where most of the window had no reading the median is 0: fall back to the pixel's own reading.
    return np.where(med > 0, med, filled).astype(np.float32)


def _refine_median(median: np.ndarray, depth: np.ndarray, valid: np.ndarray, boxes: Sequence[Box],
                   noise_rel: float, fx: float, settings: SegmentationSettings) -> None:
    """Inside the boxes, each pixel's median over only those window readings near its own (two rounds):
    where a window straddles an outline (a tall object in front of the floor), the plain median is pulled
    towards the other side by the noise, and a floor pixel beside the object then looks raised."""
    h, w = depth.shape
    half = settings.median_px // 2
    inside = np.zeros((h, w), bool)
    for box in boxes:
        rows, cols = geo.box_slices(box, (h, w))
        inside[max(rows.start - half, 0):rows.stop + half, max(cols.start - half, 0):cols.stop + half] = True
    rr, cc = np.nonzero(inside & valid)
    if len(rr) == 0:
        return
    pad = np.pad(np.where(valid, depth, np.nan).astype(np.float32), half, constant_values=np.nan)
    window = np.stack([pad[rr + half + dr, cc + half + dc] for dr in range(-half, half + 1)
                       for dc in range(-half, half + 1)], axis=1)
    slope = 1.0 / math.tan(math.radians(settings.edge_grazing_deg)) / fx
    centre = depth[rr, cc].astype(np.float32)
    for _ in range(2):
        band = 3.0 * np.sqrt((noise_rel * centre) ** 2 + _QUANTUM_M ** 2 / 12) + slope * centre
        near = np.where(np.abs(window - centre[:, None]) <= band[:, None], window, np.nan)
        centre = np.nanmedian(near, axis=1).astype(np.float32)
    median[rr, cc] = centre


# ------------------------------------------------------------------------------------ segmentation

def segment_object(fg: FrameGeometry, box: Box, mask: np.ndarray | None = None, others: Sequence[Box] = (),
                   mask_source: str | None = None) -> ObjectPoints:
    """See FrameGeometry.segment. Raises GeometryError when too few pixels with depth remain."""
    s = fg.settings
    shape = fg.valid.shape
    rows, cols = geo.box_slices(box, shape)
    region = fg.valid[rows, cols]
    if region.size == 0:
        raise geo.GeometryError(f"the box {_fmt_box(box)} lies outside the {shape[1]}x{shape[0]} image")
    source = mask_source or ("mask" if mask is not None else "box")
    info: dict[str, Any] = {"mask_source": source, "pixels_in_box": int(region.size),
                            "pixels_with_depth": int(region.sum())}
    cand = region.copy()
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != shape:
            raise geo.GeometryError(f"the mask is {mask.shape[1]}x{mask.shape[0]}, the image "
                                    f"{shape[1]}x{shape[0]}")
        hint = cand & mask[rows, cols].astype(bool)
        info["pixels_in_mask"] = int(hint.sum())
        if not hint.any():
            raise geo.GeometryError(f"the mask for the box {_fmt_box(box)} is empty (or has no depth)")
        if s.mask_grow_px > 0:
            # A segmenter's outline is a few pixels off either way: the candidates reach a little past it,
            # and the depth checks below decide (a shrunken mask would make every object too small).
            size = 2 * s.mask_grow_px + 1
            grown = cv2.dilate(hint.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
            cand &= grown.astype(bool)
        else:
            cand = hint
    if cand.sum() < MIN_OBJECT_POINTS:
        raise geo.GeometryError(f"only {int(cand.sum())} pixels with valid depth in the box {_fmt_box(box)}")
    k = fg.intrinsics
    r0, c0 = rows.start, cols.start
    h, w = region.shape
    u = ((np.arange(c0, c0 + w) - k.cx) / k.fx)[None, :]
    v = ((np.arange(r0, r0 + h) - k.cy) / k.fy)[:, None]
    zm = fg.depth_median[rows, cols].astype(np.float64)
    floor_px = np.zeros_like(cand)
    tol = None
    if fg.floor is not None:
        n = fg.floor.normal
        n_ray = n[0] * u + n[1] * v + n[2]  # d(height)/d(depth) along each pixel's ray
        height = n_ray * zm + fg.floor.offset
        tol = np.maximum(s.floor_min_m, s.floor_sigmas * np.abs(n_ray) * fg.sigma_m(zm))
        floor_px = cand & (height < tol)
        cand &= ~floor_px
    info["floor_pixels_removed"] = int(floor_px.sum())
    info["floor_share"] = round(float(floor_px.sum()) / max(int(info.get("pixels_in_mask", region.sum())), 1), 4)
    if cand.sum() < MIN_OBJECT_POINTS:
        raise geo.GeometryError(f"the box {_fmt_box(box)} holds only floor")
    if s.drop_mixed:
        # A pixel whose own reading is far from its neighbourhood's median sits on an outline (the median
        # took the other side's depth) or is a noise outlier: neither can be trusted to measure with.
        zr = fg.depth_m[rows, cols].astype(np.float64)
        mixed = cand & (np.abs(zr - zm) > _step_limit(fg, np.minimum(zr, zm), 1.0, raw=True))
        cand &= ~mixed
        info["mixed_pixels_removed"] = int(mixed.sum())
        if cand.sum() < MIN_OBJECT_POINTS:
            raise geo.GeometryError(f"no consistent depth in the box {_fmt_box(box)}")
    rr, cc = np.nonzero(cand)
    if s.connectivity == "image":
        labels = _pixel_components(cand, zm, fg, k.fx)[rr, cc]
    else:
        pts = fg.points[rows, cols][rr, cc].astype(np.float64)
        z_med = float(np.median(pts[:, 2]))
        labels = geo.voxel_components(pts, max(0.01, 3.0 * z_med / k.fx, 4.0 * fg.noise_rel * z_med))
    uniq, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    # The detection box is centred on its object: the component with most points in the middle half of
    # the box is the object.
    r_mid, c_mid = (h - 1) / 2, (w - 1) / 2
    central = (np.abs(rr - r_mid) <= h / 4) & (np.abs(cc - c_mid) <= w / 4)
    if mask is not None:
        # With a mask, the component it covers most is the object.
        central = hint[rr, cc]
    central_counts = np.bincount(inverse[central], minlength=len(uniq))
    chosen = int(np.lexsort((counts, central_counts))[-1])
    keep = inverse == chosen
    other_px = 0
    if s.use_other_boxes and others:
        keep, other_px = _drop_neighbour_pixels(fg, box, others, rr, cc, keep, zm, r0, c0)
    info["other_object_pixels_removed"] = other_px
    info["outlier_pixels_removed"] = int((~keep).sum()) - other_px
    rr, cc = rr[keep], cc[keep]
    if len(rr) < MIN_OBJECT_POINTS:
        raise geo.GeometryError(f"no compact object in the box {_fmt_box(box)}")
    crop = fg.points[rows, cols]
    z_typ = float(np.median(crop[rr, cc, 2]))
    kernel = _smoothing_kernel(fg.noise_rel, z_typ) if s.smooth else 1
    if kernel > 1:
        pts = _smoothed(fg, crop, zm, rr, cc, kernel, r0, c0)
        info["smoothing_px"] = kernel
    else:
        pts = crop[rr, cc].astype(np.float64)
    rests, in_footprint = False, None
    if fg.floor is not None and tol is not None:
        # It stands on the floor when its lowest pixels (by the less noisy median depth) are just above the
        # floor tolerance: the pixels at its foot went as floor, the next ones up are its own.
        median_points = _median_points(fg, rr + r0, cc + c0)
        median_heights = fg.floor.height(median_points)
        lowest = np.argsort(median_heights)[min(2, len(rr) - 1)]
        t = tol[rr, cc]
        # How much height one pixel row covers on an upright side at the foot (a steep view foreshortens
        # it): the median window's rows there mix with the floor and go with it.
        ray = median_points[lowest] / max(float(np.linalg.norm(median_points[lowest])), 1e-9)
        cos_elevation = math.sqrt(max(1.0 - float(ray @ fg.floor.normal) ** 2, 0.04))
        row_height = float(np.linalg.norm(median_points[lowest])) / k.fy / cos_elevation
        allowance = 2.0 * float(np.median(t)) + 0.005 + (s.median_px // 2 + 2) * row_height
        rests = bool(median_heights[lowest] <= allowance)
        if rests:
            heights = median_heights if s.footprint_by_median else fg.floor.height(pts)
            # Never above half the object's height: a low object's outline is its top's.
            half_height = 0.5 * float(np.percentile(heights, 99))
            above = heights > np.maximum(1.5 * t, np.minimum(s.footprint_above_tol * t, half_height))
            if int(above.sum()) >= MIN_OBJECT_POINTS:
                in_footprint = above
    info["points"] = int(len(pts))
    return ObjectPoints(pts, rests, info, in_footprint)


def _step_limit(fg: FrameGeometry, z: np.ndarray, pixels: float, raw: bool = False) -> np.ndarray:
    """The largest depth difference between two readings ``pixels`` apart on one surface at depth ``z``:
    noise (of the median depth, or of ``raw`` readings against a median) plus the step of a surface met at
    the grazing angle."""
    s = fg.settings
    slope = 1.0 / math.tan(math.radians(s.edge_grazing_deg)) / fg.intrinsics.fx  # per pixel, per metre
    if raw:
        noise = np.sqrt((fg.noise_rel * z) ** 2 + _QUANTUM_M ** 2 / 12 + fg.sigma_m(z) ** 2)
    else:
        noise = math.sqrt(2.0) * fg.sigma_m(z)
    return s.edge_sigmas * noise + slope * z * pixels


def _pixel_components(members: np.ndarray, zm: np.ndarray, fg: FrameGeometry, fx: float) -> np.ndarray:
    """Connected components (labels per pixel, -1 outside ``members``) of 8-connected member pixels whose
    median depths differ by no more than noise and a grazing surface's step allow."""
    h, w = members.shape
    index = np.full((h, w), -1, np.int64)
    index[members] = np.arange(int(members.sum()))
    heads, tails = [], []
    pairs = {(0, 1): ((slice(None), slice(0, -1)), (slice(None), slice(1, None))),
             (1, 0): ((slice(0, -1), slice(None)), (slice(1, None), slice(None))),
             (1, 1): ((slice(0, -1), slice(0, -1)), (slice(1, None), slice(1, None))),
             (1, -1): ((slice(0, -1), slice(1, None)), (slice(1, None), slice(0, -1)))}
    for (dr, dc), (a, b) in pairs.items():
        both = members[a] & members[b]
        za, zb = zm[a], zm[b]
        ok = both & (np.abs(za - zb) <= _step_limit(fg, np.minimum(za, zb), math.hypot(dr, dc)))
        heads.append(index[a][ok])
        tails.append(index[b][ok])
    n = int(members.sum())
    hd, tl = np.concatenate(heads), np.concatenate(tails)
    graph = coo_matrix((np.ones(len(hd), np.int8), (hd, tl)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    labels = np.full((h, w), -1, np.int64)
    labels[members] = comp
    return labels


def _median_points(fg: FrameGeometry, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    k = fg.intrinsics
    z = fg.depth_median[r, c].astype(np.float64)
    return np.stack([(c - k.cx) / k.fx * z, (r - k.cy) / k.fy * z, z], axis=1)


def _not_floor(fg: FrameGeometry, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    ok = fg.valid[r, c]
    if fg.floor is None:
        return ok
    k, s, n = fg.intrinsics, fg.settings, fg.floor.normal
    zm = fg.depth_median[r, c].astype(np.float64)
    n_ray = n[0] * (c - k.cx) / k.fx + n[1] * (r - k.cy) / k.fy + n[2]
    tol = np.maximum(s.floor_min_m, s.floor_sigmas * np.abs(n_ray) * fg.sigma_m(zm))
    return ok & (n_ray * zm + fg.floor.offset >= tol)


def _drop_neighbour_pixels(fg: FrameGeometry, box: Box, others: Sequence[Box], rr: np.ndarray, cc: np.ndarray,
                           keep: np.ndarray, zm: np.ndarray, r0: int, c0: int) -> tuple[np.ndarray, int]:
    """The chosen pixels that lie in another detection's box go to whichever object they are nearer in
    3D: this one (its pixels outside every other box) or the other (the middle of its box, outside this
    box). Returns the new keep flags and how many pixels were dropped."""
    shape = fg.valid.shape
    rows, cols = geo.box_slices(box, shape)
    in_other = np.zeros(len(rr), bool)
    cores = []
    for ob in others:
        if geo.box_iou(ob, box) >= 0.8:
            continue  # the same object found twice
        x0, y0, x1, y1 = (float(v) for v in ob)
        inside = (rr + r0 >= y0) & (rr + r0 < y1) & (cc + c0 >= x0) & (cc + c0 < x1)
        if not (inside & keep).any():
            continue
        in_other |= inside
        # The other object's core: the middle half of its box, outside this box, not floor.
        orows, ocols = geo.box_slices(((3 * x0 + x1) / 4, (3 * y0 + y1) / 4, (x0 + 3 * x1) / 4, (y0 + 3 * y1) / 4),
                                      shape)
        gr, gc = np.mgrid[orows, ocols]
        gr, gc = gr.ravel(), gc.ravel()
        outside = ~((gr >= rows.start) & (gr < rows.stop) & (gc >= cols.start) & (gc < cols.stop))
        gr, gc = gr[outside], gc[outside]
        solid = _not_floor(fg, gr, gc)
        gr, gc = gr[solid], gc[solid]
        if len(gr) >= MIN_OBJECT_POINTS:
            cores.append(_median_points(fg, gr, gc))
    contested = keep & in_other
    own = keep & ~in_other
    if not cores or not contested.any() or own.sum() < MIN_OBJECT_POINTS:
        return keep, 0
    from scipy.spatial import cKDTree

    own_pts = _median_points(fg, rr[own] + r0, cc[own] + c0)
    q = _median_points(fg, rr[contested] + r0, cc[contested] + c0)
    d_own = cKDTree(own_pts).query(q)[0]
    d_other = cKDTree(np.concatenate(cores)).query(q)[0]
    drop_idx = np.nonzero(contested)[0][d_other < d_own]
    keep = keep.copy()
    keep[drop_idx] = False
    return keep, int(len(drop_idx))


# Residual noise, after smoothing, that object extents tolerate (each extreme of a noisy object sits
# a few standard deviations out).
_SMOOTH_TARGET_M = 0.0015


def _smoothing_kernel(noise_rel: float, z_m: float) -> int:
    sigma = noise_rel * z_m
    if sigma <= _SMOOTH_TARGET_M:
        return 1
    k = int(math.ceil(sigma / _SMOOTH_TARGET_M))
    return min(9, k + 1 - k % 2)  # odd, at most 9x9


def _smoothed(fg: FrameGeometry, crop: np.ndarray, zm: np.ndarray, rr: np.ndarray, cc: np.ndarray, kernel: int,
              row0: int, col0: int) -> np.ndarray:
    """The object's points with each depth replaced by a plane fitted (least squares, inverse depth, which
    is linear in the pixel coordinates on any plane) over its kernel x kernel neighbours that belong to the
    object and lie on the same surface (median depths within a step), lifted again along the same rays.

    A plane rather than a mean: at an outline the window holds only one side's pixels, and their mean
    depth is that of a pixel a few rows inside, which would pull a receding top face towards the camera.
    """
    h, w = zm.shape
    member = np.zeros((h, w), bool)
    member[rr, cc] = True
    inv = np.where(member, 1.0 / np.maximum(crop[..., 2], 1e-6), 0.0)
    zc = zm[rr, cc]
    n, sr, sc, srr, scc, src, sy, syr, syc = np.zeros((9, len(rr)))
    half = kernel // 2
    pad_y, pad_m, pad_z = np.pad(inv, half), np.pad(member, half), np.pad(zm, half)
    noise = fg.settings.edge_sigmas * math.sqrt(2.0) * fg.sigma_m(zc)
    slope = zc / math.tan(math.radians(fg.settings.edge_grazing_deg)) / fg.intrinsics.fx
    for dr in range(-half, half + 1):
        for dc in range(-half, half + 1):
            r, c = rr + half + dr, cc + half + dc
            ok = pad_m[r, c] & (np.abs(pad_z[r, c] - zc) <= noise + slope * math.hypot(dr, dc))
            y = np.where(ok, pad_y[r, c], 0.0)
            n += ok
            sr += dr * ok
            sc += dc * ok
            srr += dr * dr * ok
            scc += dc * dc * ok
            src += dr * dc * ok
            sy += y
            syr += dr * y
            syc += dc * y
    a = np.stack([np.stack([n, sr, sc], 1), np.stack([sr, srr, src], 1), np.stack([sc, src, scc], 1)], 1)
    b = np.stack([sy, syr, syc], 1)
    mean = sy / np.maximum(n, 1)
    # A plane needs points spread in both directions; elsewhere (thin strips, lone pixels) the mean.
    ok = (n >= 6) & (np.linalg.det(a) > 1e-6 * np.maximum(n, 1) ** 3)
    y_fit = mean.copy()
    if ok.any():
        y_fit[ok] = np.linalg.solve(a[ok], b[ok][..., None])[:, 0, 0]
    y_fit = np.where(y_fit > 0, y_fit, mean)
    z = 1.0 / np.maximum(y_fit, 1e-6)
    k = fg.intrinsics
    u = (cc + col0 - k.cx) / k.fx
    v = (rr + row0 - k.cy) / k.fy
    return np.stack([u * z, v * z, z], axis=1)


# ------------------------------------------------------------------------------------ measurement

def _trimmed_footprint(flat: np.ndarray, percent: float) -> np.ndarray:
    """``flat`` (N, 2) without the points beyond ``percent`` (each side) along the two axes of its
    minimum-area rectangle: a few noisy or stray points then move no side of the footprint."""
    if percent <= 0 or len(flat) < 100:
        return flat
    _, _, angle = cv2.minAreaRect(flat.astype(np.float32))
    theta = math.radians(angle)
    axes = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
    proj = flat @ axes.T
    lo = np.percentile(proj, percent, axis=0)
    hi = np.percentile(proj, 100 - percent, axis=0)
    keep = np.all((proj >= lo) & (proj <= hi), axis=1)
    return flat[keep] if keep.sum() >= MIN_OBJECT_POINTS else flat


def measure_object(obj: ObjectPoints, frame: geo.MeasurementFrame,
                   settings: SegmentationSettings = DEFAULT_SETTINGS) -> geo.ObjectGeometry:
    """Centre and size of the object's 3D box in ``frame`` (geometry.box_geometry), with robust extremes."""
    q = frame.to_frame(obj.points)
    top = float(np.percentile(q[:, 2], settings.top_percentile)) if len(q) >= 100 else float(q[:, 2].max())
    flat = q[:, :2]
    if obj.in_footprint is not None and frame.on_floor:
        flat = flat[obj.in_footprint]
    flat = _trimmed_footprint(flat, settings.footprint_trim_percent)
    return geo.box_geometry(obj.points, q, flat, top, obj.rests_on_floor, frame)
