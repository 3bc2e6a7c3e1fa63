"""The query-time view of the segment table: what ``LanguageMap.ground`` ranks, built once per table change.

A ``SegmentIndex`` is an immutable snapshot of the rows a query may return (segments with at least
``instances.min_points`` points), levels stacked in one float32 C-contiguous (S, D) matrix of unit features:
level 0's rows, then level 1's, then level 2's (``starts`` (L + 1,) gives each level's slice). The canonical
phrases (LERF's negatives) are folded in once per table change: relevancy needs only max_c cos(f, c) per segment,
because min_c sigmoid(T (q - c_i)) = sigmoid(T (q - max_c c_i)) for T > 0 (monotone in float32 as in exact
arithmetic, so the two are bit-identical). A query is then one pass over the matrix (cos with the query for every
segment of every level), a sigmoid over S values, a top-k by partition, and SceneObjects only for the answers,
built from the snapshot's own copies of the rows (no access to the live table: a query needs no map lock).

The reference lives apart: ``grounding/ground.py`` (``segment_relevancy`` per level, ``select_segments``) and
``LanguageMap``'s per-row construction from the table; ``test/test_mapping_segment_index.py`` checks that the two
agree bit for bit (relevancy, chosen level, kept ids and their order, boxes).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field

import numpy as np

from lang3d_ros.geometry.boxes import Box3D
from lang3d_ros.grounding.config import GroundingConfig
from lang3d_ros.grounding.objects import LEVELS, SceneObject
from lang3d_ros.grounding.relevancy import DEFAULT_TEMPERATURE
from lang3d_ros.instances.table import SegmentTable

# table columns a SceneObject reads (besides the feature); the index keeps its own copies of them for its rows
SCENE_OBJECT_COLUMNS = (
    "level",
    "n_points",
    "obb_center",
    "obb_size",
    "obb_yaw_rad",
    "aabb_min",
    "aabb_max",
    "color_rgb",
    "support_id",
    "n_observations",
    "first_seen_ns",
    "last_seen_ns",
)


@dataclass
class SegmentIndex:
    """Snapshot of the queryable segments (see the module doc). S rows over all levels, D feature dim.

    key: the table state it was built from; rows (S,) int64 table rows at build time; ids (S,) int32 stable ids;
    starts (L + 1,) int64: level l owns rows starts[l]:starts[l + 1]; features (S, D) float32 C-contiguous unit
    rows; canonical_max (S,) float32 max over the canonical phrases of cos(feature, phrase); columns: copies of the
    table columns a SceneObject reads, for these rows."""

    key: tuple
    rows: np.ndarray
    ids: np.ndarray
    starts: np.ndarray
    features: np.ndarray
    canonical_max: np.ndarray
    columns: dict[str, np.ndarray]
    _objects: dict[int, SceneObject] = field(default_factory=dict, repr=False)
    _objects_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def build(cls, key: tuple, table: SegmentTable, canonical: np.ndarray, answerable: np.ndarray) -> "SegmentIndex":
        """table: the live segment table (read under the map lock); canonical (C, D) float32 unit rows; answerable
        (S,) bool per table row (``InstanceMapper.answerable``): the others are left out."""
        ok = np.asarray(answerable, dtype=bool)
        by_level = [np.flatnonzero((table.level == lvl) & ok) for lvl in range(len(LEVELS))]
        rows = np.concatenate(by_level).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum([len(r) for r in by_level])]).astype(np.int64)
        features = np.ascontiguousarray(table.unit_features(rows), dtype=np.float32)
        canonical_max = np.zeros(len(rows), np.float32)
        for lvl in range(len(LEVELS)):  # per level, as the reference computes them (same products, same bits)
            a, b = int(starts[lvl]), int(starts[lvl + 1])
            if b > a and len(canonical):
                canonical_max[a:b] = (features[a:b] @ canonical.T).max(axis=1)
        columns = {name: getattr(table, name)[rows].copy() for name in SCENE_OBJECT_COLUMNS}
        return cls(key, rows, table.ids[rows].copy(), starts, features, canonical_max, columns)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the snapshot's arrays (the float32 feature matrix dominates: 4 D bytes per row)."""
        arrays = [self.rows, self.ids, self.starts, self.features, self.canonical_max, *self.columns.values()]
        return int(sum(a.nbytes for a in arrays))

    def level_slice(self, level: int) -> slice:
        return slice(int(self.starts[level]), int(self.starts[level + 1]))

    def level_ids(self, level: int) -> np.ndarray:
        """(S_l,) int32 ids of the level's queryable segments, in the order of ``relevancy``'s slice."""
        return self.ids[self.level_slice(level)]

    def n_points(self, level: int) -> np.ndarray:
        return self.columns["n_points"][self.level_slice(level)]

    def relevancy(self, query: np.ndarray, temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
        """query (D,) unit -> (S,) float32 LERF relevancy of every row, all levels (slice with ``level_slice``)."""
        if query.ndim != 1 or query.shape[0] != self.features.shape[1]:
            raise ValueError(f"query must be ({self.features.shape[1]},), got {query.shape}")
        if len(self) == 0:
            return np.zeros(0, np.float32)
        cos_q = np.einsum("sd,d->s", self.features, query.astype(np.float32))  # per row, as the reference
        z = temperature * (cos_q - self.canonical_max)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def best_by_level(self, relevancy: np.ndarray) -> list[float]:
        """(S,) relevancy -> the best value per level (-1.0 for a level without segments), for ``choose_level``."""
        out = []
        for lvl in range(len(LEVELS)):
            r = relevancy[self.level_slice(lvl)]
            out.append(float(r.max()) if len(r) else -1.0)
        return out

    def scene_object(self, i: int, score: float, query: str) -> SceneObject:
        """The SceneObject of index row ``i`` (ranked by ``query`` with ``score``); the row's boxes and feature are
        built once per snapshot and shared by the answers that return it (treat them as read-only)."""
        proto = self._objects.get(i)
        if proto is None:
            proto = self._build_object(i)
            with self._objects_lock:
                self._objects[i] = proto
        return dataclasses.replace(proto, score=score, query=query, label=query)

    def _build_object(self, i: int) -> SceneObject:
        c = self.columns
        cy, sy = np.cos(float(c["obb_yaw_rad"][i])), np.sin(float(c["obb_yaw_rad"][i]))
        R = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
        box = Box3D(c["obb_center"][i].astype(np.float64), np.maximum(c["obb_size"][i], 1e-3).astype(np.float64), R)
        lo, hi = c["aabb_min"][i].astype(np.float64), c["aabb_max"][i].astype(np.float64)
        return SceneObject(
            instance_id=int(self.ids[i]),
            label="",
            box=box,
            aabb=Box3D.from_min_max(lo, np.maximum(hi, lo + 1e-3)),
            level=LEVELS[int(c["level"][i])],
            n_points=int(c["n_points"][i]),
            color_rgb=c["color_rgb"][i].astype(np.float64),
            feature=self.features[i].copy(),
            support_id=int(c["support_id"][i]),
            n_observations=int(c["n_observations"][i]),
            first_seen_ns=int(c["first_seen_ns"][i]),
            last_seen_ns=int(c["last_seen_ns"][i]),
        )


def select_top(
    relevancy: np.ndarray, n_points: np.ndarray, config: GroundingConfig, max_results: int = 0, min_score: float = 0.0
) -> np.ndarray:
    """Same result as ``grounding.ground.select_segments`` (indices kept, best first: relevancy >= the threshold,
    ties by size, at most max_results or config.top_k), with a partition to the top k before the sort: the sort
    then orders k values, not every segment over the threshold (a query that matches walls or floor)."""
    if relevancy.shape != n_points.shape or relevancy.ndim != 1:
        raise ValueError(f"relevancy and n_points must be (S,), got {relevancy.shape} and {n_points.shape}")
    if len(relevancy) == 0:
        return np.zeros(0, np.int64)
    k = max_results or config.top_k
    best = float(relevancy.max())
    thr = max(config.absolute_threshold, config.relative_threshold * best, min_score, config.min_score)
    keep = np.flatnonzero(relevancy >= thr)
    if 0 < k < len(keep):  # every row tied with the k-th best stays in, so the size tie-break sees them all
        r = relevancy[keep]
        kth = np.partition(r, len(r) - k)[len(r) - k]
        keep = keep[r >= kth]
    order = np.lexsort((-n_points[keep], -relevancy[keep]))
    return keep[order][:k]
