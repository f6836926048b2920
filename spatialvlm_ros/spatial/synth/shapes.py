"""Solid primitives standing upright in the world: boxes (with a yaw) and vertical cylinders.

Each primitive knows its exact geometry (centre, size, footprint on the table, the closest points to
another footprint) and intersects camera rays, which is all the renderer needs. Ground truth comes
from these definitions, never from rendered pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Box", "Cylinder", "Primitive", "footprint_gap"]

_EPS = 1e-12


@dataclass(frozen=True)
class Box:
    """A box with its centre at ``centre`` (world, metres), full edge lengths ``size`` = (sx, sy, sz)
    along its own axes, turned by ``yaw`` radians about the vertical axis."""

    centre: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float = 0.0

    def __post_init__(self) -> None:
        if min(self.size) <= 0:
            raise ValueError(f"box sizes must be positive, got {self.size}")

    @property
    def height(self) -> float:
        return float(self.size[2])

    def _axes(self) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # world <- local

    def corners(self) -> np.ndarray:
        """(8, 3) world corners."""
        half = np.asarray(self.size, float) / 2
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
        return np.asarray(self.centre, float) + (signs * half) @ self._axes().T

    def outline_points(self) -> np.ndarray:
        """Points whose convex hull is the solid (for shadows and screen bounds)."""
        return self.corners()

    def footprint(self) -> np.ndarray:
        """(4, 2) corners of the box's outline seen from above (counter-clockwise)."""
        half = np.asarray(self.size[:2], float) / 2
        local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * half
        rot = self._axes()[:2, :2]
        return np.asarray(self.centre[:2], float) + local @ rot.T

    def width(self) -> float:
        """The box's extent along its own x axis (its width, by this package's convention)."""
        return float(self.size[0])

    def contains(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        local = (np.asarray(points, float) - self.centre) @ self._axes()
        return np.all(np.abs(local) <= np.asarray(self.size) / 2 + margin, axis=-1)

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ray parameter t of the first hit (inf for a miss) and the world normal there, for rays
        ``origin + t * dirs`` (dirs (N, 3))."""
        axes = self._axes()
        o = (np.asarray(origin, float) - self.centre) @ axes  # (3,)
        d = dirs @ axes  # (N, 3)
        half = np.asarray(self.size, float) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / np.where(np.abs(d) < _EPS, _EPS, d)
        t1 = (-half - o) * inv
        t2 = (half - o) * inv
        t_near_axes = np.minimum(t1, t2)
        t_far = np.minimum.reduce(np.maximum(t1, t2), axis=1)
        axis = np.argmax(t_near_axes, axis=1)
        t_near = t_near_axes[np.arange(len(d)), axis]
        hit = (t_near <= t_far) & (t_near > 0)
        t = np.where(hit, t_near, np.inf)
        normal_local = np.zeros_like(d)
        normal_local[np.arange(len(d)), axis] = -np.sign(d[np.arange(len(d)), axis])
        return t, normal_local @ axes.T


@dataclass(frozen=True)
class Cylinder:
    """A cylinder with a vertical axis: centre (world, metres), radius and full height."""

    centre: tuple[float, float, float]
    radius: float
    height: float

    def __post_init__(self) -> None:
        if self.radius <= 0 or self.height <= 0:
            raise ValueError(f"cylinder radius and height must be positive, got {self.radius}, {self.height}")

    @property
    def size(self) -> tuple[float, float, float]:
        return (2 * self.radius, 2 * self.radius, self.height)

    def outline_points(self, n: int = 24) -> np.ndarray:
        a = np.linspace(0, 2 * math.pi, n, endpoint=False)
        ring = np.stack([self.radius * np.cos(a), self.radius * np.sin(a)], axis=1)
        cx, cy, cz = self.centre
        pts = []
        for z in (cz - self.height / 2, cz + self.height / 2):
            pts.append(np.column_stack([ring[:, 0] + cx, ring[:, 1] + cy, np.full(n, z)]))
        return np.concatenate(pts)

    def corners(self) -> np.ndarray:
        """(8, 3) corners of the bounding box."""
        r, h = self.radius, self.height / 2
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
        return np.asarray(self.centre, float) + signs * (r, r, h)

    def width(self) -> float:
        """The diameter."""
        return 2 * self.radius

    def contains(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        p = np.asarray(points, float) - self.centre
        return (np.hypot(p[..., 0], p[..., 1]) <= self.radius + margin) & \
            (np.abs(p[..., 2]) <= self.height / 2 + margin)

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        o = np.asarray(origin, float) - self.centre
        d = dirs
        half = self.height / 2
        # Side: |(o + t d)_xy| = r
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = 2 * (o[0] * d[:, 0] + o[1] * d[:, 1])
        c = o[0] ** 2 + o[1] ** 2 - self.radius ** 2
        disc = b * b - 4 * a * c
        ok = (disc >= 0) & (a > _EPS)
        sq = np.sqrt(np.where(ok, disc, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = np.where(ok, (-b - sq) / (2 * np.where(a > _EPS, a, 1.0)), np.inf)
        z_side = o[2] + t_side * d[:, 2]
        side_hit = ok & (t_side > 0) & (np.abs(z_side) <= half)
        t_side = np.where(side_hit, t_side, np.inf)
        # Caps: z = +-half
        t_cap = np.full(len(d), np.inf)
        cap_sign = np.zeros(len(d))
        with np.errstate(divide="ignore", invalid="ignore"):
            for sign in (1.0, -1.0):
                t = np.where(np.abs(d[:, 2]) > _EPS, (sign * half - o[2]) / d[:, 2], np.inf)
                x, y = o[0] + t * d[:, 0], o[1] + t * d[:, 1]
                hit = (t > 0) & (x * x + y * y <= self.radius ** 2) & (t < t_cap)
                t_cap = np.where(hit, t, t_cap)
                cap_sign = np.where(hit, sign, cap_sign)
        use_cap = t_cap < t_side
        t_hit = np.where(use_cap, t_cap, t_side)
        p = o + np.where(np.isfinite(t_side), t_side, 0.0)[:, None] * d
        radial = np.column_stack([p[:, 0], p[:, 1], np.zeros(len(d))]) / self.radius
        normal = np.where(use_cap[:, None], np.column_stack([np.zeros(len(d)), np.zeros(len(d)), cap_sign]),
                          radial)
        return t_hit, normal

    def footprint(self, n: int = 32) -> np.ndarray:
        a = np.linspace(0, 2 * math.pi, n, endpoint=False)
        return np.asarray(self.centre[:2], float) + self.radius * np.stack([np.cos(a), np.sin(a)], axis=1)


Primitive = Box | Cylinder


def _closest_on_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), _EPS), 0.0, 1.0)
    return a + t * ab


def _polygon_contains(poly: np.ndarray, p: np.ndarray) -> bool:
    """Convex polygon (counter-clockwise) contains point p."""
    for i in range(len(poly)):
        a, b = poly[i], poly[(i + 1) % len(poly)]
        if (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]) < -1e-12:
            return False
    return True


def _closest_polygons(pa: np.ndarray, pb: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Distance and closest points of two convex polygons (0 when they overlap)."""
    best = (math.inf, pa[0], pb[0])
    for poly_p, poly_q, swap in ((pa, pb, False), (pb, pa, True)):
        for p in poly_p:
            for i in range(len(poly_q)):
                q = _closest_on_segment(p, poly_q[i], poly_q[(i + 1) % len(poly_q)])
                d = float(np.linalg.norm(p - q))
                if d < best[0]:
                    best = (d, q, p) if swap else (d, p, q)
    if _polygon_contains(pb, pa[0]) or _polygon_contains(pa, pb[0]):
        return 0.0, best[1], best[2]
    return best


def footprint_gap(a: Primitive, b: Primitive) -> tuple[float, np.ndarray, np.ndarray]:
    """The free gap between two objects standing on the table, seen from above: the shortest horizontal
    distance between their footprints, and the closest point on each (the facing sides). 0 when the
    footprints touch or overlap."""
    if isinstance(a, Cylinder) and isinstance(b, Cylinder):
        ca, cb = np.asarray(a.centre[:2], float), np.asarray(b.centre[:2], float)
        d = float(np.linalg.norm(cb - ca))
        u = (cb - ca) / max(d, _EPS)
        gap = max(0.0, d - a.radius - b.radius)
        return gap, ca + u * a.radius, cb - u * b.radius
    if isinstance(a, Cylinder) or isinstance(b, Cylinder):
        cyl, box, swapped = (a, b, False) if isinstance(a, Cylinder) else (b, a, True)
        c = np.asarray(cyl.centre[:2], float)
        poly = box.footprint()
        q = min((_closest_on_segment(c, poly[i], poly[(i + 1) % 4]) for i in range(4)),
                key=lambda p: float(np.linalg.norm(p - c)))
        d = float(np.linalg.norm(q - c))
        if _polygon_contains(poly, c):
            gap, p_cyl = 0.0, c
        else:
            gap = max(0.0, d - cyl.radius)
            p_cyl = c + (q - c) / max(d, _EPS) * min(cyl.radius, d)
        return (gap, q, p_cyl) if swapped else (gap, p_cyl, q)
    return _closest_polygons(a.footprint(), b.footprint())
