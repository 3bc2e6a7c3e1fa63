"""Query grounding: per-point relevancy -> threshold -> DBSCAN instances -> boxes -> SceneObjects.

``ground_query`` answers "where is the red mug" on the fused map's points (or Gaussian centres): the
instances of the relevant points, best first. It cannot split two touching objects that both match
the query, and it scores an instance only by its relevancy (no size or shape prior).
"""
from __future__ import annotations

import logging

import numpy as np

from lang3d_ros.grounding.cluster import check_points, dbscan_labels, robust_boxes
from lang3d_ros.grounding.config import GroundingConfig
from lang3d_ros.grounding.objects import LEVELS, SceneObject

log = logging.getLogger(__name__)


def check_colors(colors: np.ndarray | None, n: int) -> np.ndarray | None:
    """(N,3) uint8 0..255 or float 0..1 colours -> (N,3) float64 in [0, 1]; None passes through."""
    if colors is None:
        return None
    c = np.asarray(colors)
    if c.shape != (n, 3):
        raise ValueError(f"colors must have shape ({n}, 3), got {c.shape}")
    if c.dtype == np.uint8:
        return c.astype(np.float64) / 255.0
    c = c.astype(np.float64)
    if not np.all(np.isfinite(c)) or c.min(initial=0.0) < 0.0 or c.max(initial=0.0) > 1.0:
        raise ValueError("float colors must be finite and in [0, 1]")
    return c


def check_features(features, n: int) -> np.ndarray | None:
    """(N,D) numpy or torch features -> float32 numpy; None passes through."""
    if features is None:
        return None
    if hasattr(features, "detach"):
        features = features.detach().cpu().numpy()
    f = np.asarray(features, dtype=np.float32)
    if f.ndim != 2 or f.shape[0] != n:
        raise ValueError(f"features must have shape ({n}, D), got {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError("features contain non-finite values")
    return f


def unit_mean(features: np.ndarray) -> np.ndarray | None:
    """(M,D) -> (D,) unit mean, or None when the mean is (near) zero."""
    m = features.astype(np.float64).mean(0)
    n = float(np.linalg.norm(m))
    return (m / n) if n > 1e-9 else None


def relevancy_threshold(relevancy: np.ndarray, config: GroundingConfig) -> float:
    """The cut used by ground_query: max(absolute_threshold, relative_threshold * max(relevancy))."""
    top = float(np.max(relevancy)) if len(relevancy) else 0.0
    return max(config.absolute_threshold, config.relative_threshold * top)


def ground_query(
    points: np.ndarray,
    relevancy: np.ndarray,
    query: str = "",
    colors: np.ndarray | None = None,
    features=None,
    config: GroundingConfig | None = None,
    level: str = "",
) -> list[SceneObject]:
    """points (N,3) map frame, relevancy (N,) in [0,1] -> up to top_k SceneObjects sorted by score.

    colors: (N,3) uint8 or float in [0,1]; features: (N,D) numpy/torch (instance feature = unit mean).
    Each object carries its gravity-aligned box, its axis-aligned box (``aabb``), the raw point indices,
    and score = mean relevancy of its top ``score_top_fraction`` points. Empty list when nothing passes.
    """
    cfg = config or GroundingConfig()
    cfg.validate()
    p = check_points(points)
    r = np.asarray(relevancy, dtype=np.float64)
    if r.shape != (len(p),):
        raise ValueError(f"relevancy must have shape ({len(p)},), got {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("relevancy contains non-finite values")
    if level and level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS} or empty, got {level!r}")
    c = check_colors(colors, len(p))
    f = check_features(features, len(p))
    if len(p) == 0:
        return []
    thr = relevancy_threshold(r, cfg)
    idx = np.flatnonzero(r >= thr)
    if len(idx) < cfg.min_points:
        log.debug("query %r: %d points above %.3f, fewer than min_points", query, len(idx), thr)
        return []
    labels = dbscan_labels(p[idx], cfg.cluster)
    objects: list[SceneObject] = []
    for k in range(int(labels.max(initial=-1)) + 1):
        members = idx[labels == k]
        if len(members) < cfg.min_points:
            continue
        rel = np.sort(r[members])[::-1]
        score = float(rel[: max(1, int(round(cfg.score_top_fraction * len(rel))))].mean())
        if score < cfg.min_score:
            continue
        box, aabb = robust_boxes(p[members], cfg.box_percentile)
        objects.append(
            SceneObject(
                instance_id=k,
                label=query,
                box=box,
                aabb=aabb,
                score=score,
                query=query,
                level=level,
                n_points=len(members),
                color_rgb=c[members].mean(0) if c is not None else np.zeros(3),
                feature=unit_mean(f[members]) if f is not None else None,
                point_indices=members,
            )
        )
    objects.sort(key=lambda o: (-o.score, -o.n_points))
    objects = objects[: cfg.top_k]
    for rank, o in enumerate(objects):
        o.instance_id = rank
    log.debug("query %r: threshold %.3f, %d relevant points, %d instances", query, thr, len(idx), len(objects))
    return objects


def ground_query_levels(
    points: np.ndarray,
    relevancy_by_level: np.ndarray,
    query: str = "",
    colors: np.ndarray | None = None,
    features=None,
    config: GroundingConfig | None = None,
) -> list[SceneObject]:
    """relevancy_by_level (3,N), one row per LEVELS entry: ground on the level whose best point is
    most relevant (LangSplat's level choice). ``features`` (N,D) should belong to that level."""
    rl = np.asarray(relevancy_by_level, dtype=np.float64)
    if rl.ndim != 2 or rl.shape[0] != len(LEVELS):
        raise ValueError(f"relevancy_by_level must have shape ({len(LEVELS)}, N), got {rl.shape}")
    if not np.all(np.isfinite(rl)):
        raise ValueError("relevancy_by_level contains non-finite values")
    if rl.shape[1] == 0:
        return []
    best = int(np.argmax(rl.max(axis=1)))
    return ground_query(points, rl[best], query, colors, features, config, level=LEVELS[best])
