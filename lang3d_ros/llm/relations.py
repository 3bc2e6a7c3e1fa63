"""Spatial relations and superlatives computed on boxes in the map frame (z up, metres).

"on" / "under" read the map's support relation first (``SceneObject.support_id``: the instance table's, found on
the points of the host's horizontal surfaces under the object, ``instances.stats``) and fall back to the boxes
when an object has none or its support is not among the objects at hand (hand-made objects, another level).

Viewer-relative relations (left_of, right_of, in_front_of, behind, leftmost, rightmost) are taken
in the robot's frame: x forward along its yaw, y to its left. They ignore occlusion and do not
use the object's own facing direction ("in front of the sofa" means nearer the robot, not the
side the sofa faces).
"""

from __future__ import annotations

import numpy as np

from lang3d_ros.geometry.boxes import Box3D
from lang3d_ros.grounding.objects import SceneObject


def validate_robot_pose(robot_pose) -> np.ndarray:
    """(x_m, y_m, yaw_rad) in the map frame -> float64 (3,), or ValueError."""
    p = np.asarray(robot_pose, dtype=np.float64).reshape(-1)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise ValueError(f"robot_pose must be finite (x_m, y_m, yaw_rad), got {robot_pose!r}")
    return p


def to_robot_frame(xy_map: np.ndarray, robot_pose: np.ndarray) -> np.ndarray:
    """(N,2) map xy -> (N,2) robot-frame (forward_m, left_m)."""
    c, s = np.cos(robot_pose[2]), np.sin(robot_pose[2])
    d = np.asarray(xy_map, dtype=np.float64).reshape(-1, 2) - robot_pose[:2]
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)


def box_gap_m(a: Box3D, b: Box3D) -> float:
    """Euclidean gap between the axis-aligned hulls (0 when they touch or overlap)."""
    d = np.maximum(0.0, np.maximum(a.min_xyz - b.max_xyz, b.min_xyz - a.max_xyz))
    return float(np.linalg.norm(d))


def xy_overlap_fraction(a: Box3D, b: Box3D) -> float:
    """Fraction of a's xy hull area that lies over b's xy hull."""
    lo = np.maximum(a.min_xyz[:2], b.min_xyz[:2])
    hi = np.minimum(a.max_xyz[:2], b.max_xyz[:2])
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    area = float(np.prod(np.maximum(a.max_xyz[:2] - a.min_xyz[:2], 1e-9)))
    return inter / area


def is_on(a: Box3D, b: Box3D, tol_m: float = 0.08) -> bool:
    """a rests on b: a's bottom within ``tol_m`` of b's top, or on an inner level of b (a shelf board:
    bottom inside b's height, above its base), and a's centre over b's footprint."""
    if not (b.min_xyz[2] + tol_m < a.min_xyz[2] <= b.max_xyz[2] + tol_m):
        return False
    c = a.center[:2]
    return bool(np.all(c >= b.min_xyz[:2] - 1e-6) and np.all(c <= b.max_xyz[:2] + 1e-6))


def rests_on(a: SceneObject, b: SceneObject, known_ids: frozenset[int] | set[int], tol_m: float = 0.08) -> bool:
    """a rests on b: the map's support relation when a has one that names an object of ``known_ids`` (the ids of
    the objects at hand), else the boxes (``is_on``). A box rule misjudges what the support relation does not:
    a bowl whose box centre overhangs a cabinet's clipped box by a centimetre, a book on a pillow on a bed."""
    if a.support_id >= 0 and a.support_id in known_ids:
        return a.support_id == b.instance_id
    return is_on(a.box, b.box, tol_m)


def is_under(a: Box3D, b: Box3D, tol_m: float = 0.08, b_rests_on_a: bool | None = None) -> bool:
    """b rests on a ("the table under the vase", "the table with the vase on it"; ``b_rests_on_a`` when the caller
    knows, else the boxes decide), or a's top is below b's top (by tol), its centre below b's centre, and half of
    a's footprint or more lies under b's (a box's hull includes a table's legs, so "under" cannot use b's bottom)."""
    if is_on(b, a, tol_m) if b_rests_on_a is None else b_rests_on_a:
        return True
    return bool(a.max_xyz[2] <= b.max_xyz[2] - tol_m and a.center[2] < b.center[2] and xy_overlap_fraction(a, b) >= 0.5)


def relation_holds(
    relation: str,
    a: SceneObject,
    anchors: list[SceneObject],
    robot_pose: np.ndarray,
    near_m: float = 1.0,
    on_tol_m: float = 0.08,
    known_ids: frozenset[int] | set[int] = frozenset(),
) -> bool:
    """Whether ``a <relation> anchors`` holds (one anchor, two for between); ``known_ids``: the ids of every
    object at hand, for the support relation (``rests_on``)."""
    if relation == "on":
        return rests_on(a, anchors[0], known_ids, on_tol_m)
    if relation == "under":
        return is_under(a.box, anchors[0].box, on_tol_m, rests_on(anchors[0], a, known_ids, on_tol_m))
    a, anchors = a.box, [x.box for x in anchors]
    b = anchors[0]
    if relation == "near":
        return box_gap_m(a, b) <= near_m
    if relation == "between":
        if len(anchors) != 2:
            raise ValueError("between needs two anchors")
        p, q = anchors[0].center[:2], anchors[1].center[:2]
        seg = q - p
        L2 = float(seg @ seg)
        if L2 < 1e-9:
            return False
        t = float((a.center[:2] - p) @ seg / L2)
        perp = float(np.linalg.norm(a.center[:2] - (p + t * seg)))
        return 0.0 < t < 1.0 and perp <= max(0.5, 0.35 * np.sqrt(L2))
    if relation in ("left_of", "right_of", "in_front_of", "behind"):
        fa, fb = to_robot_frame(np.stack([a.center[:2], b.center[:2]]), robot_pose)
        d_fwd, d_left = fa[0] - fb[0], fa[1] - fb[1]
        # the offset along the asked axis must dominate the other axis and exceed the anchor's half extent
        half = 0.5 * float(np.max(b.max_xyz[:2] - b.min_xyz[:2]))
        if relation == "left_of":
            return d_left > 0 and d_left >= abs(d_fwd) * 0.5 and d_left > 0.5 * half
        if relation == "right_of":
            return d_left < 0 and -d_left >= abs(d_fwd) * 0.5 and -d_left > 0.5 * half
        if relation == "in_front_of":
            return d_fwd < 0 and -d_fwd >= abs(d_left) * 0.5 and -d_fwd > 0.5 * half
        return d_fwd > 0 and d_fwd >= abs(d_left) * 0.5 and d_fwd > 0.5 * half
    raise ValueError(f"unknown relation {relation!r}")


def relation_cost(relation: str, a: Box3D, anchors: list[Box3D]) -> float:
    """Lower = better example of the relation (used to rank objects that satisfy it)."""
    if relation == "between":
        mid = (anchors[0].center + anchors[1].center) / 2
        return float(np.linalg.norm(a.center[:2] - mid[:2]))
    if relation == "on":
        return abs(float(a.min_xyz[2] - anchors[0].max_xyz[2]))
    return box_gap_m(a, anchors[0]) + 1e-3 * float(np.linalg.norm(a.center - anchors[0].center))


def superlative_key(superlative: str, box: Box3D, robot_pose: np.ndarray, reference: Box3D | None) -> float:
    """Sort key, ascending = best, for a superlative."""
    if superlative in ("closest", "farthest"):
        if reference is not None:
            d = box_gap_m(box, reference) + 1e-3 * float(np.linalg.norm(box.center - reference.center))
        else:
            d = float(np.linalg.norm(box.center[:2] - robot_pose[:2]))
        return d if superlative == "closest" else -d
    if superlative in ("largest", "smallest"):
        v = float(np.prod(np.maximum(box.max_xyz - box.min_xyz, 0)))
        return -v if superlative == "largest" else v
    if superlative in ("leftmost", "rightmost"):
        left = float(to_robot_frame(box.center[:2], robot_pose)[0, 1])
        return -left if superlative == "leftmost" else left
    if superlative in ("highest", "lowest"):
        z = float(box.max_xyz[2]) if superlative == "highest" else float(box.min_xyz[2])
        return -z if superlative == "highest" else z
    raise ValueError(f"unknown superlative {superlative!r}")
