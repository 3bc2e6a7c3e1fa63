"""Keyframe selection by camera motion and view overlap (which frames go through SAM + CLIP)."""

from __future__ import annotations

import numpy as np

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.geometry.transforms import invert_rigid
from lang3d_ros.mapping.config import KeyframeConfig


def view_overlap(frame: Frame, keyframe: Frame, stride_px: int = 16, depth_tol_m: float = 0.1) -> float:
    """Fraction of ``frame``'s valid pixels (on a stride grid) that ``keyframe`` sees at a consistent depth."""
    K = frame.intrinsics
    v, u = np.mgrid[stride_px // 2 : frame.height : stride_px, stride_px // 2 : frame.width : stride_px]
    d = frame.depth_m[v, u]
    ok = np.isfinite(d) & (d > 0)
    if not np.any(ok):
        return 0.0
    p_cam = K.backproject(u[ok], v[ok], d[ok])
    T_kf_cam = invert_rigid(keyframe.T_world_cam) @ frame.T_world_cam
    p_kf = p_cam @ T_kf_cam[:3, :3].T + T_kf_cam[:3, 3]
    uv, z = keyframe.intrinsics.project(p_kf)
    inside = (
        (z > 0)
        & (uv[:, 0] >= 0)
        & (uv[:, 0] <= keyframe.width - 1)
        & (uv[:, 1] >= 0)
        & (uv[:, 1] <= keyframe.height - 1)
    )
    if not np.any(inside):
        return 0.0
    ui = np.round(uv[inside, 0]).astype(int)
    vi = np.round(uv[inside, 1]).astype(int)
    dk = keyframe.depth_m[vi, ui]
    consistent = np.isfinite(dk) & (np.abs(dk - z[inside]) < depth_tol_m)
    return float(np.count_nonzero(consistent) / len(p_cam))


class KeyframeSelector:
    """Chooses keyframes against the last accepted one; ``reset`` forgets it (the next frame is a keyframe)."""

    def __init__(self, config: KeyframeConfig):
        self.config = config
        self.last: Frame | None = None

    def reset(self) -> None:
        """Forget the last keyframe (after a time jump back: its stamp no longer orders with the new frames)."""
        self.last = None

    def reason(self, frame: Frame) -> str:
        """Why ``frame`` is a keyframe ("" when it is not). Does not change state; call ``accept`` for keyframes."""
        if self.last is None:
            return "first frame"
        c = self.config
        T_rel = invert_rigid(self.last.T_world_cam) @ frame.T_world_cam
        if np.linalg.norm(T_rel[:3, 3]) >= c.min_translation_m:
            return "moved"
        angle = np.degrees(np.arccos(np.clip((np.trace(T_rel[:3, :3]) - 1) / 2, -1.0, 1.0)))
        if angle >= c.min_rotation_deg:
            return "turned"
        if (frame.stamp_ns - self.last.stamp_ns) * 1e-9 >= c.max_interval_s:
            return "time"
        if view_overlap(frame, self.last, c.overlap_stride_px) < c.max_overlap:
            return "new view"
        return ""

    def accept(self, frame: Frame) -> None:
        self.last = frame
