"""The object type that grounding produces and the services, the 3D-LLM and the evaluation consume."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lang3d_ros.geometry.boxes import Box3D
from lang3d_ros.geometry.transforms import yaw_quaternion

LEVELS = ("subpart", "part", "whole")  # LangSplat's SAM levels, index 0..2


@dataclass
class SceneObject:
    """One object instance in the map frame.

    box: gravity-aligned oriented box (``box.aabb()`` gives the axis-aligned one), metres, map frame;
    feature: (D,) unit-norm CLIP embedding of the instance (mean of its points' features) or None;
    color_rgb: (3,) mean colour in [0, 1]; score: relevancy to ``query`` in [0, 1] (1.0 when not a query result);
    level: which semantic level produced it (one of LEVELS) or "" when not from a query.
    From the instance map: instance_id is the segment's stable id (kept across updates; a merge keeps the older
    id); support_id the id of the instance it rests on (-1: none, or the floor when the floor is no instance);
    n_observations the keyframes whose masks matched it; first_seen_ns / last_seen_ns their stamps.
    """

    instance_id: int
    label: str
    box: Box3D
    score: float = 1.0
    query: str = ""
    level: str = ""
    n_points: int = 0
    color_rgb: np.ndarray = field(default_factory=lambda: np.zeros(3))
    feature: np.ndarray | None = None
    label_scores: dict[str, float] = field(default_factory=dict)
    point_indices: np.ndarray | None = None  # indices into the map's points, when known
    aabb: Box3D | None = None  # axis-aligned box of the same (outlier-clipped) points, when known
    support_id: int = -1
    n_observations: int = 0
    first_seen_ns: int = 0
    last_seen_ns: int = 0

    @property
    def center(self) -> np.ndarray:
        return self.box.center

    @property
    def yaw_rad(self) -> float:
        """The box's rotation about +z, radians (map frame)."""
        return self.box.yaw

    @property
    def orientation_xyzw(self) -> np.ndarray:
        """(4,) quaternion (x, y, z, w) of the box's yaw, as geometry_msgs/Pose wants it."""
        return yaw_quaternion(self.box.yaw)

    def to_dict(self) -> dict:
        out = {
            "instance_id": int(self.instance_id),
            "label": self.label,
            "score": float(self.score),
            "query": self.query,
            "level": self.level,
            "n_points": int(self.n_points),
            "color_rgb": np.asarray(self.color_rgb, dtype=float).tolist(),
            "box": self.box.to_dict(),
            "label_scores": {k: float(v) for k, v in self.label_scores.items()},
            "support_id": int(self.support_id),
            "n_observations": int(self.n_observations),
        }
        if self.aabb is not None:
            out["aabb"] = self.aabb.to_dict()
        return out
