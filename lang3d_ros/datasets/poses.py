"""Pose look-up at arbitrary stamps: linear in translation, slerp in rotation (scipy), between the two
pose samples that bracket each query. It does not extrapolate beyond ``slop_ns`` past either end, and it
refuses to bridge gaps longer than ``max_gap_ns`` (a dropped tracker is not a straight line)."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def interpolate_poses(
    stamps_ns: np.ndarray, T_world_cams: np.ndarray, query_ns: np.ndarray, max_gap_ns: int, slop_ns: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """stamps_ns (M,) int64 sorted, T_world_cams (M,4,4), query_ns (N,) -> (T (N,4,4) float64, valid (N,) bool).

    A query within ``slop_ns`` of the first/last sample takes that sample; invalid rows are identity."""
    t = np.asarray(stamps_ns, dtype=np.int64)
    T = np.asarray(T_world_cams, dtype=np.float64)
    q = np.asarray(query_ns, dtype=np.int64)
    if T.ndim != 3 or T.shape[1:] != (4, 4) or len(T) != len(t):
        raise ValueError(f"need (M,4,4) poses matching (M,) stamps, got {T.shape} and {t.shape}")
    if len(t) > 1 and np.any(np.diff(t) < 0):
        raise ValueError("pose stamps must be sorted")
    out = np.repeat(np.eye(4)[None], len(q), axis=0)
    valid = np.zeros(len(q), dtype=bool)
    if len(t) == 0 or len(q) == 0:
        return out, valid
    hi = np.clip(np.searchsorted(t, q, side="left"), 0, len(t) - 1)
    lo = np.clip(hi - 1, 0, len(t) - 1)
    exact = t[hi] == q
    lo = np.where(exact, hi, lo)
    inside = (t[lo] <= q) & (q <= t[hi]) & ((t[hi] - t[lo]) <= max_gap_ns)
    before = (q < t[0]) & (t[0] - q <= slop_ns)
    after = (q > t[-1]) & (q - t[-1] <= slop_ns)
    lo = np.where(before, 0, np.where(after, len(t) - 1, lo))
    hi = np.where(before, 0, np.where(after, len(t) - 1, hi))
    valid = inside | before | after
    span = (t[hi] - t[lo]).astype(np.float64)
    alpha = np.where(span > 0, (q - t[lo]) / np.where(span > 0, span, 1.0), 0.0)
    alpha = np.clip(alpha, 0.0, 1.0)
    r0, r1 = Rotation.from_matrix(T[lo, :3, :3]), Rotation.from_matrix(T[hi, :3, :3])
    r = r0 * Rotation.from_rotvec((r0.inv() * r1).as_rotvec() * alpha[:, None])
    out[:, :3, :3] = r.as_matrix()
    out[:, :3, 3] = (1 - alpha)[:, None] * T[lo, :3, 3] + alpha[:, None] * T[hi, :3, 3]
    out[~valid] = np.eye(4)
    return out, valid
