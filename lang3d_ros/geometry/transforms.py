"""Rigid transforms as 4x4 float64 matrices, named ``T_<to>_<from>`` (``T_world_cam`` maps camera
points into the world). Rotations go through scipy's ``Rotation``; quaternions are (x, y, z, w)
as in geometry_msgs."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

RIGID_TOLERANCE = 1e-4


def is_rigid(T: np.ndarray, tol: float = RIGID_TOLERANCE) -> bool:
    """True when T is a finite 4x4 rigid transform (orthonormal rotation, det +1, last row 0 0 0 1)."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return False
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=tol) or abs(np.linalg.det(R) - 1.0) > tol:
        return False
    return bool(np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=tol))


def validate_rigid(T: np.ndarray, name: str = "pose") -> np.ndarray:
    """Return T as float64 or raise ValueError that says what is wrong with it."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"{name} must be 4x4, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise ValueError(f"{name} has non-finite entries")
    if not is_rigid(T):
        R = T[:3, :3]
        raise ValueError(
            f"{name} is not rigid (|R R^T - I|max={np.abs(R @ R.T - np.eye(3)).max():.2e}, det={np.linalg.det(R):.4f})"
        )
    return T


def invert_rigid(T: np.ndarray) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def matrix_from_pose(position_xyz, quaternion_xyzw, normalise: bool = True) -> np.ndarray:
    """Position (m) + quaternion (x, y, z, w) -> 4x4. Non-unit quaternions are normalised;
    zero-length or non-finite input raises ValueError."""
    p = np.asarray(position_xyz, dtype=np.float64).reshape(3)
    q = np.asarray(quaternion_xyzw, dtype=np.float64).reshape(4)
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
        raise ValueError("pose has non-finite position or orientation")
    n = float(np.linalg.norm(q))
    if n < 1e-9:
        raise ValueError("pose orientation quaternion has zero length")
    if not normalise and abs(n - 1.0) > 1e-6:
        raise ValueError(f"pose orientation quaternion is not unit (|q|={n:.6f})")
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(q / n).as_matrix()
    T[:3, 3] = p
    return T


def pose_from_matrix(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4x4 rigid -> (position (3,), quaternion (x, y, z, w) (4,)) with w >= 0."""
    T = validate_rigid(T)
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    if q[3] < 0:
        q = -q
    return T[:3, 3].copy(), q


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to (N,3) points."""
    p = np.asarray(points)
    return p @ np.asarray(T)[:3, :3].T.astype(p.dtype, copy=False) + np.asarray(T)[:3, 3].astype(p.dtype, copy=False)


def yaw_quaternion(yaw_rad: float) -> np.ndarray:
    """Quaternion (x, y, z, w) of a rotation about +z (REP 103: yaw, counter-clockwise from +x)."""
    return np.array([0.0, 0.0, np.sin(yaw_rad / 2.0), np.cos(yaw_rad / 2.0)])
