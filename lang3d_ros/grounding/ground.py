"""Query grounding on the instance table: rank segments by LERF relevancy, pick the level, keep the best.

Pure functions on per-segment arrays (no points): what ``LanguageMap.ground`` runs per query, at a cost that
grows with the number of segments, not of points. What they cannot do: tell two instances apart whose features
are equally relevant other than by size (ties go to the larger one); colour and relations are resolved on the
objects by the reasoner (llm/), not here.
"""

from __future__ import annotations

import numpy as np

from lang3d_ros.grounding.config import GroundingConfig
from lang3d_ros.grounding.objects import LEVELS
from lang3d_ros.grounding.relevancy import DEFAULT_TEMPERATURE


def segment_relevancy(
    features: np.ndarray,
    query: np.ndarray,
    canonical: np.ndarray,
    temperature: float = DEFAULT_TEMPERATURE,
    canonical_cos: np.ndarray | None = None,
) -> np.ndarray:
    """features (S, D) unit rows, query (D,) unit, canonical (C, D) unit rows -> (S,) float32 LERF relevancy
    min_c sigmoid(T (cos(f, q) - cos(f, c))) in (0, 1). canonical_cos (S, C): the features' cosines with the
    canonical phrases when precomputed (they do not depend on the query; a query is then one matrix-vector
    product)."""
    if features.ndim != 2 or query.ndim != 1 or canonical.ndim != 2:
        raise ValueError(f"shapes must be (S,D), (D,), (C,D); got {features.shape}, {query.shape}, {canonical.shape}")
    if len(features) == 0:
        return np.zeros(0, np.float32)
    if canonical_cos is None:
        canonical_cos = features @ canonical.T.astype(np.float32)
    if canonical_cos.shape != (len(features), len(canonical)):
        raise ValueError(f"canonical_cos must be {(len(features), len(canonical))}, got {canonical_cos.shape}")
    cos_q = np.einsum("sd,d->s", features, query.astype(np.float32))  # single-threaded: no BLAS thread hand-off
    z = temperature * (cos_q[:, None] - canonical_cos)
    return (1.0 / (1.0 + np.exp(-z.min(axis=1)))).astype(np.float32)


def choose_level(best_by_level: list[float], level: str = "") -> int:
    """Index into LEVELS: the named level, else LangSplat's choice, the level whose best segment is most relevant
    (ties, as with the ground-truth backend's identical levels, go to the coarser level). -1 entries: no
    segments at that level."""
    if level:
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r}; use one of {LEVELS} or empty for the best level")
        return LEVELS.index(level)
    if len(best_by_level) != len(LEVELS):
        raise ValueError(f"need one best relevancy per level {LEVELS}, got {len(best_by_level)}")
    return max(range(len(LEVELS)), key=lambda k: (round(float(best_by_level[k]), 6), k))


def select_segments(
    relevancy: np.ndarray, n_points: np.ndarray, config: GroundingConfig, max_results: int = 0, min_score: float = 0.0
) -> np.ndarray:
    """relevancy (S,), n_points (S,) -> indices of the kept segments, best first: relevancy >=
    max(absolute_threshold, relative_threshold * best, min_score, config.min_score), ties by size, at most
    ``max_results`` (config.top_k when 0)."""
    if relevancy.shape != n_points.shape or relevancy.ndim != 1:
        raise ValueError(f"relevancy and n_points must be (S,), got {relevancy.shape} and {n_points.shape}")
    if len(relevancy) == 0:
        return np.zeros(0, np.int64)
    best = float(relevancy.max())
    thr = max(config.absolute_threshold, config.relative_threshold * best, min_score, config.min_score)
    keep = np.flatnonzero(relevancy >= thr)
    order = np.lexsort((-n_points[keep], -relevancy[keep]))
    return keep[order][: max_results or config.top_k]
