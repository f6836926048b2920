"""Metric geometry from depth: pixels lifted to 3D, the floor plane, objects' 3D boxes, and the numbers the
geometric backend answers with (centre and closest-point distances, gap widths, object sizes).

numpy (and OpenCV's minimum-area rectangle) only: no torch, no ROS. Camera frame as in sensor_msgs:
x right, y down, z forward along the optical axis; pixel (u, v) has its centre at integer coordinates.
"""

# Decisions worth knowing before changing this module:
# * Objects are measured in a "measurement frame" whose axes are (lateral, forward, up). With a fitted
#   floor plane, up is the floor normal and lateral is the camera's x axis laid onto the floor; without
#   one it is the camera frame itself (lateral x, forward z, up -y), and the answer says so.
# * An object's centre is the centre of its 3D box in that frame, the box being the minimum-area
#   rectangle around the object's points seen from above (so a turned box is measured along its own
#   sides) times its vertical extent. A camera above the objects sees their tops, whose outline is the
#   whole footprint, so the centre is the solid's centre, not the centre of the visible surface.
#   Without a floor (or when the tops are hidden) it is the visible surface's box: biased towards the
#   camera by up to half the object's depth.
# * The gap between two objects is the shortest horizontal distance between their footprints (the
#   convex outlines of their points seen from above): the narrowest free space a robot would drive
#   through. 0 when the footprints overlap.
# * Which pixels belong to an object (floor, background and neighbours removed) is decided in
#   segmentation.py, which also holds the shared "depth + intrinsics + boxes (+ masks) -> objects" path.

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from spatialvlm_ros.spatial.estimator import Intrinsics

__all__ = [
    "GeometryError",
    "MeasurementFrame",
    "ObjectGeometry",
    "Plane",
    "box_geometry",
    "box_iou",
    "box_slices",
    "centre_distance",
    "closest_distance",
    "depth_noise_rel",
    "fit_floor",
    "footprint_gap",
    "intrinsics_for_image",
    "intrinsics_from_fov",
    "lift",
    "valid_depth",
    "voxel_components",
]

# Fewer points than this on an object give no trustworthy extent.
MIN_OBJECT_POINTS = 12
# A plane is a floor only if it is within this angle of the camera's "up" (-y): a camera may look
# down steeply, but a wall facing it is not a floor.
MAX_FLOOR_TILT_DEG = 80.0
# ... and holds this share of the points outside the objects.
MIN_FLOOR_SHARE = 0.2
# ... among the points nearer than this (metres along the optical axis).
MAX_FLOOR_RANGE_M = 10.0
MIN_FLOOR_POINTS = 60


class GeometryError(ValueError):
    """A measurement that cannot be made from these pixels; the message says why."""


# ------------------------------------------------------------------------------------ camera model

def intrinsics_from_fov(width: int, height: int, hfov_deg: float) -> Intrinsics:
    """Square pixels, centred principal point, the given horizontal field of view."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not 0 < hfov_deg < 180:
        raise ValueError(f"field of view must be within (0, 180) degrees, got {hfov_deg}")
    f = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    return Intrinsics(fx=f, fy=f, cx=(width - 1) / 2, cy=(height - 1) / 2, width=width, height=height)


def intrinsics_for_image(intrinsics: Intrinsics | None, width: int, height: int) -> tuple[Intrinsics | None, str]:
    """``intrinsics`` made to fit a ``width`` x ``height`` image, and a note ("" when used as given).

    camera_info for another resolution of the same camera (same aspect ratio) is scaled; one with
    another aspect ratio is unusable (None, with why).
    """
    if intrinsics is None:
        return None, "no camera_info"
    if intrinsics.width == width and intrinsics.height == height:
        return intrinsics, ""
    sx, sy = width / intrinsics.width, height / intrinsics.height
    if abs(sx - sy) > 0.01 * max(sx, sy):
        return None, (f"camera_info is for {intrinsics.width}x{intrinsics.height}, the image is "
                      f"{width}x{height} (another aspect ratio)")
    scaled = Intrinsics(fx=intrinsics.fx * sx, fy=intrinsics.fy * sy, cx=(intrinsics.cx + 0.5) * sx - 0.5,
                        cy=(intrinsics.cy + 0.5) * sy - 0.5, width=width, height=height)
    return scaled, f"camera_info scaled from {intrinsics.width}x{intrinsics.height} to {width}x{height}"


def valid_depth(depth_m: np.ndarray) -> np.ndarray:
    """Pixels with a reading: finite and positive (0, NaN and inf mean "none")."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(depth_m) & (depth_m > 0)


def lift(depth_m: np.ndarray, intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) float32 camera-frame points for every pixel and the (H, W) mask of valid ones."""
    depth = np.asarray(depth_m, dtype=np.float32)
    h, w = depth.shape
    valid = valid_depth(depth)
    z = np.where(valid, depth, 0.0).astype(np.float32)
    u = (np.arange(w, dtype=np.float32) - np.float32(intrinsics.cx)) / np.float32(intrinsics.fx)
    v = (np.arange(h, dtype=np.float32) - np.float32(intrinsics.cy)) / np.float32(intrinsics.fy)
    points = np.empty((h, w, 3), np.float32)
    points[..., 0] = u[None, :] * z
    points[..., 1] = v[:, None] * z
    points[..., 2] = z
    return points, valid


# ------------------------------------------------------------------------------------ floor plane

@dataclass(frozen=True)
class Plane:
    """The floor: ``normal`` . p + ``offset`` is the height of camera-frame point p above it.

    ``normal`` points to the camera's side; ``noise_rel`` is the robust spread of the floor points'
    heights relative to their depth (0 for perfect depth), which sets how near the floor a point must
    be to count as floor.
    """

    normal: np.ndarray
    offset: float
    inlier_share: float
    noise_rel: float = 0.0

    def height(self, points: np.ndarray) -> np.ndarray:
        return points @ self.normal + self.offset

    def tolerance(self, z: np.ndarray | float) -> np.ndarray | float:
        """How far from the plane a point at depth ``z`` may be and still be floor."""
        return np.maximum(0.006, 3.0 * self.noise_rel * np.asarray(z) + 0.002)

    def to_dict(self) -> dict[str, Any]:
        return {"normal": [round(float(v), 6) for v in self.normal],
                "camera_height_m": round(float(self.offset), 6),
                "inlier_share": round(float(self.inlier_share), 4)}


def _oriented(normal: np.ndarray, offset: float) -> tuple[np.ndarray, float]:
    # The camera (the origin) is on the positive side: its height above the floor is the offset.
    return (-normal, -offset) if offset < 0 else (normal, offset)


def fit_floor(points: np.ndarray, rng: np.random.Generator | None = None, iterations: int = 150) -> Plane | None:
    """The floor plane among ``points`` (N, 3) by RANSAC and a least-squares refit, or None.

    Only planes within MAX_FLOOR_TILT_DEG of the camera's up and holding at least MIN_FLOOR_SHARE of
    the points count; of those, the one with most inliers wins. Give it the points outside the objects.
    """
    pts = np.asarray(points, dtype=np.float64)
    # Readings far beyond any floor a depth camera measures well (a wall seen edge-on can read hundreds
    # of metres) would be inliers of every plane under the depth-proportional tolerance, and drag the fit.
    pts = pts[pts[:, 2] <= MAX_FLOOR_RANGE_M]
    n = len(pts)
    if n < MIN_FLOOR_POINTS:
        return None
    rng = rng if rng is not None else np.random.default_rng(0)
    z = pts[:, 2]
    tol = 0.01 + 0.02 * z  # loose enough for 1-2 % depth noise; refined below
    min_cos = math.cos(math.radians(MAX_FLOOR_TILT_DEG))
    samples = rng.integers(0, n, size=(iterations, 3))
    a, b, c = pts[samples[:, 0]], pts[samples[:, 1]], pts[samples[:, 2]]
    normals = np.cross(b - a, c - a)
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-9
    normals[ok] /= norms[ok, None]
    offsets = -np.einsum("ij,ij->i", normals, a)
    flip = offsets < 0
    normals[flip] *= -1
    offsets[flip] *= -1
    ok &= -normals[:, 1] >= min_cos  # camera up is -y
    ok &= offsets > 0.02  # the camera is above the floor
    if not ok.any():
        return None
    # Candidates are scored on a subset (the ranking needs no more); the winner on every point.
    score = rng.choice(n, size=min(n, 2500), replace=False)
    heights = np.abs(pts[score] @ normals[ok].T + offsets[ok])  # (scored, candidates)
    best = int(np.argmax((heights < tol[score, None]).sum(axis=0)))
    inliers = np.abs(pts @ normals[ok][best] + offsets[ok][best]) < tol
    if inliers.sum() < max(MIN_FLOOR_POINTS, MIN_FLOOR_SHARE * n):
        return None
    normal, offset = normals[ok][best], float(offsets[ok][best])
    noise_rel = 0.0
    # Least squares on the inliers, then inliers again within 3 robust standard deviations: a few
    # rounds shed what RANSAC's loose tolerance let in (the foot of a wall, the bottom of objects).
    for _ in range(4):
        sel = pts[inliers]
        centroid = sel.mean(axis=0)
        _, _, vt = np.linalg.svd(sel - centroid, full_matrices=False)
        normal, offset = _oriented(vt[2] / np.linalg.norm(vt[2]), float(-vt[2] @ centroid / np.linalg.norm(vt[2])))
        h = pts @ normal + offset
        rel = h[inliers] / np.maximum(z[inliers], 1e-6)
        noise_rel = float(1.4826 * np.median(np.abs(rel - np.median(rel))))
        inliers = np.abs(h) < np.maximum(3.0 * noise_rel * z, 0.001)
        if inliers.sum() < max(MIN_FLOOR_POINTS, MIN_FLOOR_SHARE * n):
            return None
    if -normal[1] < min_cos or offset <= 0.02:
        return None
    return Plane(normal.astype(np.float64), offset, float(inliers.mean()), noise_rel)


# ------------------------------------------------------------------------------------ measurement frame

@dataclass(frozen=True)
class MeasurementFrame:
    """Axes (rows of ``rotation``: lateral, forward, up) and ``origin``, in the camera frame.

    ``on_floor``: up is a fitted floor's normal and heights are above that floor.
    """

    rotation: np.ndarray
    origin: np.ndarray
    on_floor: bool

    @classmethod
    def camera(cls) -> MeasurementFrame:
        return cls(np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]), np.zeros(3), False)

    @classmethod
    def from_floor(cls, plane: Plane) -> MeasurementFrame:
        up = plane.normal / np.linalg.norm(plane.normal)
        lateral = np.array([1.0, 0, 0]) - up[0] * up
        lateral /= np.linalg.norm(lateral)
        forward = np.cross(up, lateral)
        origin = -plane.offset * up  # the camera's foot on the floor
        return cls(np.stack([lateral, forward, up]), origin, True)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, np.float64) - self.origin) @ self.rotation.T

    def to_camera(self, coords: np.ndarray) -> np.ndarray:
        return np.asarray(coords, np.float64) @ self.rotation + self.origin


# ------------------------------------------------------------------------------------ object points

def box_slices(box: tuple[float, float, float, float], shape: tuple[int, int]) -> tuple[slice, slice]:
    h, w = shape
    x0, y0, x1, y1 = (float(v) for v in box)
    c0, c1 = max(int(math.floor(x0)), 0), min(int(math.ceil(x1)), w)
    r0, r1 = max(int(math.floor(y0)), 0), min(int(math.ceil(y1)), h)
    return slice(r0, max(r1, r0)), slice(c0, max(c1, c0))


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def voxel_components(points: np.ndarray, voxel_m: float) -> np.ndarray:
    """Label of each point's 26-connected component of occupied voxels (labels are arbitrary ints)."""
    idx = np.floor(points / voxel_m).astype(np.int64)
    idx -= idx.min(axis=0)
    dims = idx.max(axis=0) + 3
    idx += 1
    keys = idx[:, 0] + dims[0] * (idx[:, 1] + dims[1] * idx[:, 2])
    voxels, inverse = np.unique(keys, return_inverse=True)
    labels = np.arange(len(voxels))
    pairs_a, pairs_b = [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                step = dx + dims[0] * (dy + dims[1] * dz)
                if step <= 0:
                    continue  # each undirected neighbour pair once
                nb = voxels + step
                pos = np.searchsorted(voxels, nb)
                pos = np.minimum(pos, len(voxels) - 1)
                hit = voxels[pos] == nb
                pairs_a.append(np.nonzero(hit)[0])
                pairs_b.append(pos[hit])
    a = np.concatenate(pairs_a) if pairs_a else np.zeros(0, np.int64)
    b = np.concatenate(pairs_b) if pairs_b else np.zeros(0, np.int64)
    # Min-label propagation with pointer jumping: converges in a few rounds for compact clouds.
    while len(a):
        la, lb = labels[a], labels[b]
        low = np.minimum(la, lb)
        changed = (la != low) | (lb != low)
        if not changed.any():
            break
        np.minimum.at(labels, la, low)
        np.minimum.at(labels, lb, low)
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        labels = labels[labels]
    return labels[inverse]


def depth_noise_rel(depth_m: np.ndarray) -> float:
    """Robust estimate of the depth noise relative to depth (0.01 for 1 % noise; ~0 for perfect depth).

    From second differences along rows, which cancel smooth surfaces (locally linear depth) but not
    pixel noise; a few depth edges do not move the median.
    """
    d = np.asarray(depth_m, np.float64)
    if d.shape[1] < 3:
        return 0.0
    a, b, c = d[:, :-2], d[:, 1:-1], d[:, 2:]
    with np.errstate(invalid="ignore"):
        ok = valid_depth(a) & valid_depth(b) & valid_depth(c)
    if ok.sum() < 100:
        return 0.0
    second = (a[ok] - 2 * b[ok] + c[ok]) / b[ok]
    return float(1.4826 * np.median(np.abs(second)) / math.sqrt(6.0))


def _fmt_box(box: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in box) + ")"


# ------------------------------------------------------------------------------------ measurements

@dataclass
class ObjectGeometry:
    """One object measured in a MeasurementFrame (metres)."""

    points: np.ndarray  # camera frame
    coords: np.ndarray  # the same points in the measurement frame
    centre_camera: np.ndarray
    centre_frame: np.ndarray
    width_m: float  # footprint side facing the camera (the one nearer the lateral axis)
    length_m: float  # the other footprint side (front to back)
    height_m: float  # vertical extent
    footprint: np.ndarray  # (K, 2) convex outline seen from above, measurement-frame (lateral, forward)
    rests_on_floor: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "centre_m": [round(float(v), 4) for v in self.centre_camera],
            "width_m": round(self.width_m, 4),
            "length_m": round(self.length_m, 4),
            "height_m": round(self.height_m, 4),
            "points": int(len(self.points)),
            "rests_on_floor": self.rests_on_floor,
        }


def box_geometry(points: np.ndarray, coords: np.ndarray, flat: np.ndarray, top: float, rests_on_floor: bool,
                 frame: MeasurementFrame) -> ObjectGeometry:
    """The object's 3D box in ``frame`` (see the module notes) from its ``points`` (camera frame), the same
    points in the frame (``coords``), the points its footprint is taken from (``flat``, (K, 2) lateral and
    forward) and its ``top``; its bottom is the floor when it rests on it, else its lowest point."""
    bottom = 0.0 if (rests_on_floor and frame.on_floor) else float(coords[:, 2].min())
    flat = np.asarray(flat, np.float32)
    (cx, cy), (sa, sb), angle = cv2.minAreaRect(flat)
    # minAreaRect's first side lies along ``angle``; the width is the side nearer the lateral axis.
    theta = math.radians(angle)
    along_lateral = abs(math.cos(theta)) >= abs(math.sin(theta))
    width, length = (sa, sb) if along_lateral else (sb, sa)
    hull = cv2.convexHull(flat)
    # A round top seen in perfect depth has a hull vertex on every rim pixel; half a millimetre of
    # simplification keeps a few dozen and changes no distance measurably.
    hull = cv2.approxPolyDP(hull, 0.0005, True).reshape(-1, 2).astype(np.float64)
    centre_frame = np.array([cx, cy, (top + bottom) / 2])
    return ObjectGeometry(
        points=points, coords=coords, centre_camera=frame.to_camera(centre_frame), centre_frame=centre_frame,
        width_m=float(width), length_m=float(length), height_m=top - bottom, footprint=hull,
        rests_on_floor=rests_on_floor and frame.on_floor,
    )


def centre_distance(a: ObjectGeometry, b: ObjectGeometry) -> float:
    """SpatialVLM's distance: between the centres of the two objects' 3D boxes."""
    return float(np.linalg.norm(a.centre_camera - b.centre_camera))


def closest_distance(a: ObjectGeometry, b: ObjectGeometry, max_points: int = 1000) -> tuple[float, np.ndarray, np.ndarray]:
    """Shortest 3D distance between the two objects' points, and the two closest points (camera frame).

    Only each object's ``max_points`` points nearest the other's centre are compared: the closest
    pair is among them for any object that is not wrapped around the other.
    """
    pa = _nearest_to(a.points, b.centre_camera, max_points)
    pb = _nearest_to(b.points, a.centre_camera, max_points)
    # |p - q|^2 = |p|^2 + |q|^2 - 2 p.q: one matrix product instead of an (N, M, 3) difference array.
    d2 = (pa ** 2).sum(axis=1)[:, None] + (pb ** 2).sum(axis=1)[None, :] - 2.0 * (pa @ pb.T)
    ia, ib = divmod(int(np.argmin(d2)), d2.shape[1])
    return float(np.linalg.norm(pa[ia] - pb[ib])), pa[ia], pb[ib]


def _nearest_to(points: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
    if len(points) <= k:
        return points
    d = ((points - target) ** 2).sum(axis=1)
    return points[np.argpartition(d, k)[:k]]


def _segment_distances(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances from points p (N, 2) to segments a->b (M, 2) and the closest points, (N, M)."""
    ab = b - a
    denom = np.maximum((ab ** 2).sum(axis=1), 1e-18)
    t = np.clip(((p[:, None, :] - a[None]) * ab[None]).sum(axis=2) / denom, 0.0, 1.0)
    closest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(p[:, None, :] - closest, axis=2), closest


def _separated(pa: np.ndarray, pb: np.ndarray) -> bool:
    """Separating-axis test for two convex polygons (K, 2)."""
    for poly in (pa, pb):
        edges = np.roll(poly, -1, axis=0) - poly
        normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1)
        proj_a, proj_b = pa @ normals.T, pb @ normals.T
        if np.any((proj_a.max(axis=0) < proj_b.min(axis=0)) | (proj_b.max(axis=0) < proj_a.min(axis=0))):
            return True
    return False


def footprint_gap(a: ObjectGeometry, b: ObjectGeometry,
                  frame: MeasurementFrame) -> tuple[float, np.ndarray, np.ndarray]:
    """The free gap between two objects seen from above: the shortest horizontal distance between their
    footprints, and the closest point on each (camera frame, at the lower object's bottom). 0 when the
    footprints overlap."""
    fa, fb = a.footprint, b.footprint
    best = (math.inf, fa[0], fb[0])
    for p, poly, swap in ((fa, fb, False), (fb, fa, True)):
        d, closest = _segment_distances(p, poly, np.roll(poly, -1, axis=0))
        k = int(np.argmin(d))
        i, j = divmod(k, d.shape[1])
        if d[i, j] < best[0]:
            best = (float(d[i, j]), closest[i, j], p[i]) if swap else (float(d[i, j]), p[i], closest[i, j])
    gap, qa, qb = best
    if len(fa) >= 3 and len(fb) >= 3 and not _separated(fa, fb):
        gap = 0.0
    level = min(a.centre_frame[2] - a.height_m / 2, b.centre_frame[2] - b.height_m / 2)
    point_a = frame.to_camera(np.array([qa[0], qa[1], level]))
    point_b = frame.to_camera(np.array([qb[0], qb[1], level]))
    return gap, point_a, point_b
