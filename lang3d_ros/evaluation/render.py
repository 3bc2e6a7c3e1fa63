"""Rendering the fused point map into a camera view: a point-splat z-buffer of point indices, so any per-point
quantity (per-level relevancy, colour) becomes an image by one gather.

Each point covers a square of half-width ceil(0.5 * voxel * f / z) pixels (at most ``max_radius_px``) so the
voxel-sized points close the gaps between them; the nearest point wins each pixel. What it cannot do: render
Gaussians (use lang3d_ros.gaussians for that), anti-alias, or fill pixels no point covers (index -1).
"""
from __future__ import annotations

import numpy as np

from lang3d_ros.geometry.camera import Intrinsics


def point_index_image(points_world: np.ndarray, T_world_cam: np.ndarray, intrinsics: Intrinsics,
                      point_size_m: float = 0.03, max_radius_px: int = 4, near_m: float = 0.05) -> np.ndarray:
    """(N,3) map-frame points, camera pose, intrinsics -> (H,W) int64 index of the nearest point (-1: none)."""
    K = intrinsics
    T_cam_world = np.linalg.inv(np.asarray(T_world_cam, dtype=np.float64))
    p = np.asarray(points_world, dtype=np.float64) @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    idx = np.flatnonzero(p[:, 2] > near_m)
    z = p[idx, 2]
    u = np.floor(K.fx * p[idx, 0] / z + K.cx + 0.5).astype(np.int64)
    v = np.floor(K.fy * p[idx, 1] / z + K.cy + 0.5).astype(np.int64)
    r = np.minimum(np.ceil(0.5 * point_size_m * K.fx / z - 0.5), max_radius_px).astype(np.int64)
    r = np.maximum(r, 0)
    pix, dep, pid = [], [], []
    for du in range(-max_radius_px, max_radius_px + 1):
        for dv in range(-max_radius_px, max_radius_px + 1):
            m = r >= max(abs(du), abs(dv))
            uu, vv = u[m] + du, v[m] + dv
            inside = (uu >= 0) & (uu < K.width) & (vv >= 0) & (vv < K.height)
            pix.append(vv[inside] * K.width + uu[inside])
            dep.append(z[m][inside])
            pid.append(idx[m][inside])
    out = np.full(K.height * K.width, -1, dtype=np.int64)
    if pix:
        pix_a, dep_a, pid_a = np.concatenate(pix), np.concatenate(dep), np.concatenate(pid)
        order = np.lexsort((dep_a, pix_a))  # by pixel, then nearest first
        first = np.unique(pix_a[order], return_index=True)[1]
        out[pix_a[order][first]] = pid_a[order][first]
    return out.reshape(K.height, K.width)


def gather(values_per_point: np.ndarray, index_hw: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """(..., N) per-point values + (H,W) index image -> (..., H, W); pixels without a point get ``fill``."""
    vals = np.asarray(values_per_point)
    out = np.full(vals.shape[:-1] + index_hw.shape, fill, dtype=vals.dtype)
    hit = index_hw >= 0
    out[..., hit] = vals[..., index_hw[hit]]
    return out


class _NoBackend:
    text_encoder = None


def gt_instance_map(scene, T_world_cam: np.ndarray, intrinsics: Intrinsics, raycaster=None) -> np.ndarray:
    """(H,W) int32 GT instance ids (0 room, -1 no hit) ray cast from a SyntheticScene, through
    mapping.build.RenderedInstances (pass ``raycaster`` to reuse one across views)."""
    from types import SimpleNamespace

    from lang3d_ros.mapping.build import RenderedInstances

    rays = raycaster or RenderedInstances(_NoBackend(), scene)
    return rays.instance_map(SimpleNamespace(intrinsics=intrinsics, T_world_cam=np.asarray(T_world_cam, dtype=np.float64)))
