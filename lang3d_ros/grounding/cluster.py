"""Spatial clustering of 3D points (scikit-learn DBSCAN) and outlier-robust boxes of the clusters.

Large sets are reduced to voxel centroids weighted by their point counts; DBSCAN runs on those and
every input point takes the label of its nearest clustered centroid within ``eps_m``. Cannot split two
objects that touch.
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


def _voxel_keys(points: np.ndarray, voxel_size_m: float) -> np.ndarray:
    """(N,3) -> (N,) int64 voxel keys (one integer per voxel; 1D unique is much faster than rows)."""
    if voxel_size_m <= 0:
        raise ValueError(f"voxel_size_m must be positive, got {voxel_size_m}")
    q = np.floor(np.asarray(points, dtype=np.float64) / voxel_size_m).astype(np.int64)
    q -= q.min(0)
    dims = q.max(0) + 1
    if float(np.prod(dims.astype(np.float64))) >= 2.0**62:
        raise ValueError(f"voxel grid of {dims.tolist()} cells is too large; raise voxel_size_m")
    return (q[:, 0] * dims[1] + q[:, 1]) * dims[2] + q[:, 2]


def voxel_representatives(points: np.ndarray, voxel_size_m: float) -> np.ndarray:
    """points (N,3) -> (M,) indices of the first point in each occupied voxel, sorted."""
    if len(points) == 0:
        return np.zeros(0, dtype=np.int64)
    _, first = np.unique(_voxel_keys(points, voxel_size_m), return_index=True)
    return np.sort(first)


def voxel_centroids(points: np.ndarray, voxel_size_m: float) -> tuple[np.ndarray, np.ndarray]:
    """points (N,3), N>0 -> (centroids (M,3), counts (M,)) of the occupied voxels."""
    _, inverse, counts = np.unique(_voxel_keys(points, voxel_size_m), return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    sums = np.column_stack([np.bincount(inverse, weights=points[:, k], minlength=len(counts)) for k in range(3)])
    return sums / counts[:, None], counts


def dbscan_labels(points: np.ndarray, config: ClusterConfig | None = None) -> np.ndarray:
    """points (N,3) -> (N,) int64 cluster labels 0..K-1, -1 for noise. Deterministic.

    Above ``max_points`` points DBSCAN runs on voxel centroids weighted by their point counts (so
    ``min_samples`` still counts raw points); the voxel grows from ``voxel_size_m`` up to eps/2 until
    at most ``max_points`` voxels remain. Every point then takes the label of the nearest clustered
    centroid within ``eps_m``.
    """
    cfg = config or ClusterConfig()
    cfg.validate()
    p = check_points(points)
    n = len(p)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    dbscan = DBSCAN(eps=cfg.eps_m, min_samples=cfg.min_samples)
    if n <= cfg.max_points:
        return dbscan.fit_predict(p).astype(np.int64)
    voxel = min(cfg.voxel_size_m, cfg.eps_m / 2.0)
    while True:
        centres, counts = voxel_centroids(p, voxel)
        if len(centres) <= cfg.max_points or voxel >= cfg.eps_m / 2.0:
            break
        voxel = min(voxel * 1.5, cfg.eps_m / 2.0)
    sample_labels = dbscan.fit_predict(centres, sample_weight=counts).astype(np.int64)
    labels = np.full(n, -1, dtype=np.int64)
    clustered = sample_labels >= 0
    if clustered.any():
        dist, nearest = cKDTree(centres[clustered]).query(p, k=1, distance_upper_bound=cfg.eps_m)
        ok = np.isfinite(dist)
        labels[ok] = sample_labels[clustered][nearest[ok]]
    log.debug("dbscan: %d points, %d voxels of %.3f m, %d clusters", n, len(centres), voxel, labels.max() + 1)
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
