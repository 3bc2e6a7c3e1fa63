"""The segment table: one row per 3D segment (instance) of any semantic level, as a struct of numpy arrays.

Points carry, per level, the id of the segment they belong to (fusion's label votes); the table holds what is
said once per segment: its language feature, counts, boxes, colour, support and when it was seen. Ids are
stable and never reused (``next_id`` only grows), so a planner can keep referring to an instance across updates;
a merge keeps the older id. Rows are compact (no holes); ``row_of`` maps ids to rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from lang3d_ros.geometry.boxes import Box3D
from lang3d_ros.grounding.objects import LEVELS


def _z(shape, dtype) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


@dataclass
class SegmentTable:
    """S segments, D = feature dim. Shapes:

    ids (S,) int32 stable id; level (S,) int8 index into LEVELS; feature (S, D) float16 unit-norm
    (confidence-weighted running mean of the masks' features, renormalised); feature_weight (S,) float32 sum of
    mask confidences; n_observations (S,) int32 keyframes that saw it; n_points (S,) int32 points labelled with it;
    aabb_min / aabb_max (S, 3) float32 map frame, percentile-clipped; obb_center (S, 3), obb_size (S, 3) float32
    and obb_yaw_rad (S,) float32: gravity-aligned oriented box (yaw of the xy principal axis);
    color_rgb (S, 3) float32 in [0, 1]: median chromaticity times 90th-percentile brightness (robust to shading);
    support_id (S,) int32 id of the segment it rests on (-1 none); first_seen_ns / last_seen_ns (S,) int64 stamps;
    first_keyframe / last_keyframe (S,) int32 keyframe counters; new_fraction (S,) float32 share of the fused
    pixels of the mask that started it whose points had no segment of its level yet (1: all new to the map at that
    level; a mask split off or confused over a known object has little). Geometry and colour are refreshed from
    the points by ``instances.stats.refresh_stats``; until then a new row has zeros there.
    """

    feature_dim: int
    ids: np.ndarray = field(default_factory=lambda: _z(0, np.int32))
    level: np.ndarray = field(default_factory=lambda: _z(0, np.int8))
    feature: np.ndarray | None = None
    feature_weight: np.ndarray = field(default_factory=lambda: _z(0, np.float32))
    n_observations: np.ndarray = field(default_factory=lambda: _z(0, np.int32))
    n_points: np.ndarray = field(default_factory=lambda: _z(0, np.int32))
    aabb_min: np.ndarray = field(default_factory=lambda: _z((0, 3), np.float32))
    aabb_max: np.ndarray = field(default_factory=lambda: _z((0, 3), np.float32))
    obb_center: np.ndarray = field(default_factory=lambda: _z((0, 3), np.float32))
    obb_size: np.ndarray = field(default_factory=lambda: _z((0, 3), np.float32))
    obb_yaw_rad: np.ndarray = field(default_factory=lambda: _z(0, np.float32))
    color_rgb: np.ndarray = field(default_factory=lambda: _z((0, 3), np.float32))
    support_id: np.ndarray = field(default_factory=lambda: _z(0, np.int32))
    first_seen_ns: np.ndarray = field(default_factory=lambda: _z(0, np.int64))
    last_seen_ns: np.ndarray = field(default_factory=lambda: _z(0, np.int64))
    first_keyframe: np.ndarray = field(default_factory=lambda: _z(0, np.int32))
    last_keyframe: np.ndarray = field(default_factory=lambda: _z(0, np.int32))
    new_fraction: np.ndarray = field(default_factory=lambda: _z(0, np.float32))
    next_id: int = 0

    ROW_FIELDS = (
        "ids",
        "level",
        "feature",
        "feature_weight",
        "n_observations",
        "n_points",
        "aabb_min",
        "aabb_max",
        "obb_center",
        "obb_size",
        "obb_yaw_rad",
        "color_rgb",
        "support_id",
        "first_seen_ns",
        "last_seen_ns",
        "first_keyframe",
        "last_keyframe",
        "new_fraction",
    )
    OPTIONAL_FIELDS = {"new_fraction": 0.0}
    """Fields that map files written before them lack: read as this value."""

    def __post_init__(self) -> None:
        if self.feature is None:
            self.feature = _z((0, self.feature_dim), np.float16)
        self._row_of: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the table's arrays."""
        return int(sum(getattr(self, f).nbytes for f in self.ROW_FIELDS))

    def row_of(self, ids: np.ndarray) -> np.ndarray:
        """ids (K,) int -> (K,) int64 rows, -1 for ids not in the table (dropped, merged away, or -1)."""
        if self._row_of is None:
            lut = np.full(self.next_id + 1, -1, np.int64)
            lut[self.ids] = np.arange(len(self), dtype=np.int64)
            self._row_of = lut
        ids = np.asarray(ids, dtype=np.int64)
        ok = (ids >= 0) & (ids < self.next_id)
        return np.where(ok, self._row_of[np.where(ok, ids, self.next_id)], -1)

    def append(
        self,
        level: int,
        features: np.ndarray,
        weights: np.ndarray,
        stamp_ns: int,
        keyframe: int,
        new_fraction: np.ndarray | None = None,
    ) -> np.ndarray:
        """Start K segments of one level. features (K, D) unit rows, weights (K,) confidences, new_fraction (K,)
        share of each mask's fused pixels on points without a segment of this level (None: 0) -> (K,) new ids."""
        k = int(features.shape[0])
        new_ids = np.arange(self.next_id, self.next_id + k, dtype=np.int32)
        self.next_id += k
        add = {
            "ids": new_ids,
            "level": np.full(k, level, np.int8),
            "feature": features.astype(np.float16),
            "feature_weight": np.asarray(weights, np.float32),
            "n_observations": np.ones(k, np.int32),
            "n_points": _z(k, np.int32),
            "aabb_min": _z((k, 3), np.float32),
            "aabb_max": _z((k, 3), np.float32),
            "obb_center": _z((k, 3), np.float32),
            "obb_size": _z((k, 3), np.float32),
            "obb_yaw_rad": _z(k, np.float32),
            "color_rgb": _z((k, 3), np.float32),
            "support_id": np.full(k, -1, np.int32),
            "first_seen_ns": np.full(k, stamp_ns, np.int64),
            "last_seen_ns": np.full(k, stamp_ns, np.int64),
            "first_keyframe": np.full(k, keyframe, np.int32),
            "last_keyframe": np.full(k, keyframe, np.int32),
            "new_fraction": _z(k, np.float32) if new_fraction is None else np.asarray(new_fraction, np.float32),
        }
        for name, arr in add.items():
            setattr(self, name, np.concatenate([getattr(self, name), arr]))
        self._row_of = None
        return new_ids

    def keep(self, rows_mask: np.ndarray) -> None:
        """Keep the rows where rows_mask (S,) bool is True (drop the others); ids do not change."""
        for name in self.ROW_FIELDS:
            setattr(self, name, getattr(self, name)[rows_mask])
        self._row_of = None

    def rows_of_level(self, level: int) -> np.ndarray:
        return np.flatnonzero(self.level == level)

    def answerable(
        self,
        min_points: int,
        min_observations: int,
        in_view: np.ndarray | None = None,
        min_new_fraction: float = 0.0,
    ) -> np.ndarray:
        """(S,) bool: rows that queries may answer with: ``instances.min_points`` points, and either
        ``instances.min_observations`` matched keyframes or, given in_view (S,) int (keyframes that had the segment
        in view, ``InstanceMapper.in_view_counts``), a match in every one of them (seen only lately or from one
        place, and nothing contradicts it yet) by a mask whose points were at least ``min_new_fraction`` new
        (``new_fraction``). The others are still being confirmed."""
        confirmed = self.n_observations >= min_observations
        if in_view is not None:
            unrevisited = (self.n_observations >= 1) & (np.asarray(in_view) <= self.n_observations)
            confirmed |= unrevisited & (self.new_fraction >= min_new_fraction)
        return (self.n_points >= min_points) & confirmed

    def unit_features(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(K, D) float32 unit features of ``rows`` (all rows when None)."""
        f = (self.feature if rows is None else self.feature[rows]).astype(np.float32)
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-8)

    def box(self, row: int) -> Box3D:
        """The gravity-aligned oriented box of one row."""
        c, s = np.cos(float(self.obb_yaw_rad[row])), np.sin(float(self.obb_yaw_rad[row]))
        R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        size = np.maximum(self.obb_size[row], 1e-3).astype(np.float64)
        return Box3D(self.obb_center[row].astype(np.float64), size, R)

    def aabb(self, row: int) -> Box3D:
        lo, hi = self.aabb_min[row].astype(np.float64), self.aabb_max[row].astype(np.float64)
        return Box3D.from_min_max(lo, np.maximum(hi, lo + 1e-3))

    # ------------------------------------------------------------------ files
    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {name: getattr(self, name).copy() for name in self.ROW_FIELDS}
        out["next_id"] = np.array([self.next_id], np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], feature_dim: int) -> "SegmentTable":
        """Validated inverse of ``to_arrays``: ValueError on missing arrays, wrong shapes, non-finite values,
        duplicate or out-of-range ids, unknown levels."""
        arrays = dict(arrays)
        n_rows = np.asarray(arrays.get("ids", np.zeros(0))).shape[:1]
        for name, value in cls.OPTIONAL_FIELDS.items():
            if name not in arrays:
                arrays[name] = np.full(n_rows, value, np.float32)
        missing = [n for n in (*cls.ROW_FIELDS, "next_id") if n not in arrays]
        if missing:
            raise ValueError(f"segment table lacks arrays {missing}")
        proto = cls(feature_dim)
        s = int(np.asarray(arrays["ids"]).shape[0]) if np.asarray(arrays["ids"]).ndim == 1 else -1
        if s < 0:
            raise ValueError("segment ids must be one-dimensional")
        kw: dict = {}
        for name in cls.ROW_FIELDS:
            a = np.asarray(arrays[name])
            want = (s,) + getattr(proto, name).shape[1:]
            if a.shape != want:
                raise ValueError(f"segment array {name} has shape {a.shape}, expected {want}")
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                raise ValueError(f"segment array {name} has non-finite values")
            kw[name] = a.astype(getattr(proto, name).dtype)
        next_id = int(np.asarray(arrays["next_id"]).reshape(-1)[0])
        ids = kw["ids"]
        if s and (ids.min() < 0 or ids.max() >= next_id or len(np.unique(ids)) != s):
            raise ValueError("segment ids must be unique and in [0, next_id)")
        if s and (kw["level"].min() < 0 or kw["level"].max() >= len(LEVELS)):
            raise ValueError(f"segment levels must be in [0, {len(LEVELS)})")
        return dataclasses.replace(proto, next_id=next_id, **kw)
