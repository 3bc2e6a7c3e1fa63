"""Spatial clustering of 3D points (scikit-learn DBSCAN) and outlier-robust boxes of the clusters.

Large sets are reduced to one point per voxel (then a seeded random subset if still too many);
DBSCAN runs on that sample and every input point takes the label of its nearest sample point that
DBSCAN put in a cluster, if that point lies within ``eps_m``. Cannot split two objects that touch.
"""
from __future__ import annotations

import logging

import numpy as np
from scipy.spatial import cKDTree
from sklearn.cluster import DBSCAN

from lang3d_ros.geometry.boxes import Box3D
from lang3d_ros.grounding.config import ClusterConfig

log = logging.getLogger(__name__)


def check_points(points: np.ndarray, name: str = "points") -> np.ndarray:
    """(N,3) finite array as float64, or ValueError naming the problem."""
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got {p.shape}")
    p = p.astype(np.float64, copy=False)
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains non-finite values")
    return p


def voxel_representatives(points: np.ndarray, voxel_size_m: float) -> np.ndarray:
    """points (N,3) -> (M,) indices of the first point in each occupied voxel, sorted."""
    if voxel_size_m <= 0:
        raise ValueError(f"voxel_size_m must be positive, got {voxel_size_m}")
    keys = np.floor(np.asarray(points) / voxel_size_m).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    return np.sort(first)


def dbscan_labels(points: np.ndarray, config: ClusterConfig | None = None) -> np.ndarray:
    """points (N,3) -> (N,) int64 cluster labels 0..K-1, -1 for noise. Deterministic for a given config."""
    cfg = config or ClusterConfig()
    cfg.validate()
    p = check_points(points)
    n = len(p)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    sample = np.arange(n)
    if n > cfg.max_points:
        sample = voxel_representatives(p, cfg.voxel_size_m)
        if len(sample) > cfg.max_points:
            rng = np.random.default_rng(cfg.seed)
            sample = np.sort(rng.choice(sample, size=cfg.max_points, replace=False))
    sample_labels = DBSCAN(eps=cfg.eps_m, min_samples=cfg.min_samples).fit_predict(p[sample]).astype(np.int64)
    if len(sample) == n:
        return sample_labels
    labels = np.full(n, -1, dtype=np.int64)
    clustered = sample[sample_labels >= 0]
    if len(clustered) == 0:
        return labels
    dist, nearest = cKDTree(p[clustered]).query(p, k=1, distance_upper_bound=cfg.eps_m)
    ok = np.isfinite(dist)
    labels[ok] = sample_labels[sample_labels >= 0][nearest[ok]]
    log.debug("dbscan: %d points, %d sampled, %d clusters", n, len(sample), labels.max() + 1)
    return labels


def inlier_mask(points: np.ndarray, percentile: float) -> np.ndarray:
    """(N,) bool: points inside the [p, 100-p] percentile range along z and along both principal
    axes of the xy spread. percentile 0 keeps everything."""
    p = check_points(points)
    keep = np.ones(len(p), dtype=bool)
    if percentile <= 0 or len(p) < 4:
        return keep
    xy = p[:, :2] - p[:, :2].mean(0)
    cov = np.cov(xy.T) if len(p) > 2 else np.eye(2)
    _, axes = np.linalg.eigh(cov)
    coords = np.column_stack([xy @ axes, p[:, 2]])
    lo = np.percentile(coords, percentile, axis=0)
    hi = np.percentile(coords, 100.0 - percentile, axis=0)
    keep &= np.all((coords >= lo) & (coords <= hi), axis=1)
    return keep if keep.any() else np.ones(len(p), dtype=bool)


def robust_boxes(points: np.ndarray, percentile: float = 1.0) -> tuple[Box3D, Box3D]:
    """points (N,3), N>0 -> (gravity-aligned oriented box of the percentile inliers, its axis-aligned hull)."""
    p = check_points(points)
    if len(p) == 0:
        raise ValueError("need at least one point for a box")
    box = Box3D.gravity_aligned_of(p[inlier_mask(p, percentile)])
    return box, box.aabb()
