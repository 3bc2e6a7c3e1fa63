"""Point clouds of a box-furnished room with known geometry, for grounding/navigation tests and benchmarks.

Floor (z = 0) and four walls are sampled uniformly; each piece of furniture is a gravity-aligned box
whose five visible faces are sampled (not its bottom), and floor points under it are removed, as a depth
camera would see it. No occlusion otherwise, no sensor noise unless ``noise_m`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from lang3d_ros.geometry.boxes import Box3D

FLOOR_ID = -1
WALL_ID = -2


@dataclass
class RoomScene:
    points: np.ndarray  # (N,3) float32, map frame, floor at z = 0
    colors: np.ndarray  # (N,3) uint8
    instance_ids: np.ndarray  # (N,) int64: FLOOR_ID, WALL_ID, or the index into boxes
    boxes: list[Box3D] = field(default_factory=list)  # ground-truth gravity-aligned boxes
    labels: list[str] = field(default_factory=list)
    size_xy_m: tuple[float, float] = (6.0, 5.0)


def _n_for(area_m2: float, spacing_m: float) -> int:
    return max(1, int(round(area_m2 / spacing_m**2)))


def sample_rectangle(origin, u, v, spacing_m: float, rng: np.random.Generator) -> np.ndarray:
    """Uniform points on the parallelogram origin + a*u + b*v, a,b in [0,1]; ~1 point per spacing_m^2."""
    origin, u, v = (np.asarray(x, dtype=np.float64) for x in (origin, u, v))
    n = _n_for(float(np.linalg.norm(np.cross(u, v))), spacing_m)
    ab = rng.random((n, 2))
    return origin + ab[:, :1] * u + ab[:, 1:] * v


def wall_points(
    p0_xy, p1_xy, height_m: float, spacing_m: float, rng: np.random.Generator, z0_m: float = 0.0
) -> np.ndarray:
    """(M,3) points on the vertical wall from p0 to p1 (xy), z in [z0, z0 + height]."""
    a = np.array([p0_xy[0], p0_xy[1], z0_m])
    b = np.array([p1_xy[0], p1_xy[1], z0_m])
    return sample_rectangle(a, b - a, [0.0, 0.0, height_m], spacing_m, rng)


def box_surface_points(box: Box3D, spacing_m: float, rng: np.random.Generator) -> np.ndarray:
    """(M,3) points on the top and four side faces of a gravity-aligned box."""
    hx, hy, hz = box.size / 2.0
    faces = [  # (origin, u, v) in the box frame
        ([-hx, -hy, hz], [2 * hx, 0, 0], [0, 2 * hy, 0]),
        ([-hx, -hy, -hz], [2 * hx, 0, 0], [0, 0, 2 * hz]),
        ([-hx, hy, -hz], [2 * hx, 0, 0], [0, 0, 2 * hz]),
        ([-hx, -hy, -hz], [0, 2 * hy, 0], [0, 0, 2 * hz]),
        ([hx, -hy, -hz], [0, 2 * hy, 0], [0, 0, 2 * hz]),
    ]
    local = np.concatenate([sample_rectangle(o, u, v, spacing_m, rng) for o, u, v in faces])
    return box.center + local @ box.R_world_box.T


def make_room(
    seed: int = 0,
    n_objects: int = 4,
    size_xy_m: tuple[float, float] = (8.0, 6.0),
    height_m: float = 2.5,
    spacing_m: float = 0.04,
    min_gap_m: float = 0.8,
    wall_margin_m: float = 0.8,
    noise_m: float = 0.0,
) -> RoomScene:
    """A room with ``n_objects`` non-overlapping boxes at random yaw, at least ``min_gap_m`` apart
    (footprint circles) and ``wall_margin_m`` from the walls. Raises ValueError when they do not fit."""
    rng = np.random.default_rng(seed)
    W, H = size_xy_m
    names = ["chair", "table", "cabinet", "sofa", "shelf", "box", "bed", "desk"]
    boxes: list[Box3D] = []
    radii: list[float] = []
    tries = 0
    while len(boxes) < n_objects:
        tries += 1
        if tries > 2000:
            raise ValueError(f"could not place {n_objects} objects in a {W}x{H} m room")
        size = rng.uniform([0.3, 0.3, 0.4], [1.0, 0.8, 1.2])
        r = float(np.hypot(size[0], size[1]) / 2.0)
        lo, hi = wall_margin_m + r, np.array([W, H]) - wall_margin_m - r
        if np.any(hi <= lo):
            continue
        xy = rng.uniform(lo, hi)
        if any(np.hypot(*(xy - b.center[:2])) < r + rb + min_gap_m for b, rb in zip(boxes, radii)):
            continue
        R = Rotation.from_euler("z", rng.uniform(-np.pi, np.pi)).as_matrix()
        boxes.append(Box3D(np.array([xy[0], xy[1], size[2] / 2.0]), size, R))
        radii.append(r)
    labels = [names[i % len(names)] for i in range(n_objects)]

    floor = sample_rectangle([0, 0, 0], [W, 0, 0], [0, H, 0], spacing_m, rng)
    for b in boxes:
        floor = floor[~b.contains(floor + np.array([0.0, 0.0, b.size[2] / 2.0]), margin_m=1e-6)]
    corners = [(0, 0), (W, 0), (W, H), (0, H)]
    walls = np.concatenate([wall_points(corners[i], corners[(i + 1) % 4], height_m, spacing_m, rng) for i in range(4)])
    parts = [floor, walls] + [box_surface_points(b, spacing_m, rng) for b in boxes]
    ids = [np.full(len(floor), FLOOR_ID), np.full(len(walls), WALL_ID)] + [
        np.full(len(parts[2 + i]), i) for i in range(len(boxes))
    ]
    palette = rng.integers(0, 256, size=(len(boxes) + 2, 3))
    colors = np.concatenate([np.tile(palette[k], (len(part), 1)) for k, part in enumerate(parts)]).astype(np.uint8)
    pts = np.concatenate(parts)
    if noise_m > 0:
        pts = pts + rng.normal(0.0, noise_m, size=pts.shape)
    return RoomScene(pts.astype(np.float32), colors, np.concatenate(ids).astype(np.int64), boxes, labels, (W, H))
