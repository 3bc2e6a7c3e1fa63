"""3D boxes: centre + size + rotation, in a named frame's metres.

An axis-aligned box has ``R_world_box = I``. Oriented boxes here are *gravity-aligned* (rotation about
+z only) unless built from a full rotation; IoU of two gravity-aligned boxes is exact (polygon
intersection in the xy plane with shapely, times the z overlap). IoU of boxes with arbitrary
rotations is estimated by Monte-Carlo sampling and says so in its docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation


@dataclass(frozen=True)
class Box3D:
    center: np.ndarray  # (3,) metres
    size: np.ndarray  # (3,) full extents along the box's own x, y, z axes, metres
    R_world_box: np.ndarray = field(default_factory=lambda: np.eye(3))  # (3,3) box axes in the frame

    def __post_init__(self) -> None:
        c = np.asarray(self.center, dtype=np.float64).reshape(3)
        s = np.asarray(self.size, dtype=np.float64).reshape(3)
        R = np.asarray(self.R_world_box, dtype=np.float64).reshape(3, 3)
        if not (np.all(np.isfinite(c)) and np.all(np.isfinite(s)) and np.all(np.isfinite(R))):
            raise ValueError("box has non-finite centre, size or rotation")
        if np.any(s < 0):
            raise ValueError(f"box size must be non-negative, got {s}")
        object.__setattr__(self, "center", c)
        object.__setattr__(self, "size", s)
        object.__setattr__(self, "R_world_box", R)

    # construction -------------------------------------------------------------------------
    @classmethod
    def from_min_max(cls, min_xyz, max_xyz) -> "Box3D":
        lo, hi = np.asarray(min_xyz, dtype=np.float64), np.asarray(max_xyz, dtype=np.float64)
        return cls((lo + hi) / 2.0, hi - lo)

    @classmethod
    def aabb_of(cls, points: np.ndarray) -> "Box3D":
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3 or len(p) == 0:
            raise ValueError(f"need (N,3) points with N>0, got shape {p.shape}")
        return cls.from_min_max(p.min(0), p.max(0))

    @classmethod
    def gravity_aligned_of(cls, points: np.ndarray) -> "Box3D":
        """Smallest-area yaw-rotated box (rotating calipers on the xy convex hull) x the z extent."""
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3 or len(p) == 0:
            raise ValueError(f"need (N,3) points with N>0, got shape {p.shape}")
        xy = p[:, :2]
        try:
            from scipy.spatial import ConvexHull

            hull = xy[ConvexHull(xy).vertices]
        except Exception:  # degenerate (collinear / too few points): fall back to the AABB
            return cls.aabb_of(p)
        best = None
        edges = np.roll(hull, -1, axis=0) - hull
        for angle in np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2)):
            c, s = np.cos(angle), np.sin(angle)
            rot = np.array([[c, s], [-s, c]])  # world -> box
            q = hull @ rot.T
            lo, hi = q.min(0), q.max(0)
            area = float(np.prod(hi - lo))
            if best is None or area < best[0]:
                best = (area, angle, lo, hi)
        _, angle, lo, hi = best
        c, s = np.cos(angle), np.sin(angle)
        centre_xy = np.array([[c, -s], [s, c]]) @ ((lo + hi) / 2.0)
        zlo, zhi = p[:, 2].min(), p[:, 2].max()
        R = Rotation.from_euler("z", angle).as_matrix()
        return cls(np.array([centre_xy[0], centre_xy[1], (zlo + zhi) / 2.0]), np.array([*(hi - lo), zhi - zlo]), R)

    # properties ---------------------------------------------------------------------------
    @property
    def min_xyz(self) -> np.ndarray:
        """Lower corner of the axis-aligned box that contains this one."""
        return self.center - self.corners_extent()

    @property
    def max_xyz(self) -> np.ndarray:
        return self.center + self.corners_extent()

    def corners_extent(self) -> np.ndarray:
        return np.abs(self.R_world_box) @ (self.size / 2.0)

    @property
    def volume(self) -> float:
        return float(np.prod(self.size))

    @property
    def is_axis_aligned(self) -> bool:
        return bool(np.allclose(self.R_world_box, np.eye(3), atol=1e-9))

    @property
    def yaw(self) -> float:
        """Rotation about +z (radians) of a gravity-aligned box."""
        return float(np.arctan2(self.R_world_box[1, 0], self.R_world_box[0, 0]))

    def is_gravity_aligned(self, tol: float = 1e-6) -> bool:
        return bool(abs(self.R_world_box[2, 2] - 1.0) < tol)

    def corners(self) -> np.ndarray:
        """(8,3) corners in the frame."""
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
        return self.center + (signs * (self.size / 2.0)) @ self.R_world_box.T

    def aabb(self) -> "Box3D":
        return Box3D.from_min_max(self.min_xyz, self.max_xyz)

    def contains(self, points: np.ndarray, margin_m: float = 0.0) -> np.ndarray:
        """(N,) bool: points inside the box (grown by margin on every side)."""
        local = (np.asarray(points, dtype=np.float64) - self.center) @ self.R_world_box
        return np.all(np.abs(local) <= self.size / 2.0 + margin_m, axis=1)

    def to_dict(self) -> dict:
        return {"center": self.center.tolist(), "size": self.size.tolist(), "R_world_box": self.R_world_box.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Box3D":
        return cls(np.asarray(d["center"]), np.asarray(d["size"]), np.asarray(d.get("R_world_box", np.eye(3))))


def iou_aabb(a: Box3D, b: Box3D) -> float:
    """Exact IoU of the axis-aligned hulls of a and b."""
    lo = np.maximum(a.min_xyz, b.min_xyz)
    hi = np.minimum(a.max_xyz, b.max_xyz)
    inter = float(np.prod(np.clip(hi - lo, 0.0, None)))
    union = a.aabb().volume + b.aabb().volume - inter
    return inter / union if union > 0 else 0.0


def iou_3d(a: Box3D, b: Box3D, samples: int = 20000, seed: int = 0) -> float:
    """IoU of two boxes. Exact for axis-aligned or gravity-aligned pairs; otherwise a Monte-Carlo
    estimate with ``samples`` points (standard error ~ 0.5/sqrt(samples))."""
    if a.is_axis_aligned and b.is_axis_aligned:
        return iou_aabb(a, b)
    if a.is_gravity_aligned() and b.is_gravity_aligned():
        from shapely.geometry import Polygon

        pa = Polygon(a.corners()[[0, 2, 6, 4], :2])
        pb = Polygon(b.corners()[[0, 2, 6, 4], :2])
        area = pa.intersection(pb).area
        zlo = max(a.center[2] - a.size[2] / 2, b.center[2] - b.size[2] / 2)
        zhi = min(a.center[2] + a.size[2] / 2, b.center[2] + b.size[2] / 2)
        inter = area * max(0.0, zhi - zlo)
        union = a.volume + b.volume - inter
        return float(inter / union) if union > 0 else 0.0
    rng = np.random.default_rng(seed)
    lo = np.minimum(a.min_xyz, b.min_xyz)
    hi = np.maximum(a.max_xyz, b.max_xyz)
    pts = rng.uniform(lo, hi, size=(samples, 3))
    ia, ib = a.contains(pts), b.contains(pts)
    union = np.count_nonzero(ia | ib)
    return float(np.count_nonzero(ia & ib) / union) if union else 0.0
