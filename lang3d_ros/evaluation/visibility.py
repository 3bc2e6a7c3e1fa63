"""How much of each ground-truth object the recording showed: the evaluation's "observed" population.

A map can only box what its camera saw. A synthetic orbit at robot height does not see everything a generator
places: the top of a tall shelf, a toy car behind a pillow, a vase whose top stays above the image. For each GT
object and each recorded camera, ``seen_fractions`` compares

- the pixels where the object is the first surface hit (the scene's ray-cast instance map, occlusion included),
- with the pixels its mesh alone covers through the same pinhole on an unbounded image plane (parts outside the
  field of view count as unseen),

and keeps the best camera: 1.0 = entirely in one image and unoccluded, 0.0 = never a pixel. Pixels only: an object
under a pixel wide in every image counts 0. Depth noise and what the mapper fused are not modelled (a frame the
mapper dropped still counts as seen).
"""

from __future__ import annotations

import numpy as np

#: Canvas half-extent beyond the image, in image sizes, over which an object's unoccluded silhouette is counted; a
#: nearer object that overflows it is clipped there (its seen fraction is then slightly overestimated).
_CANVAS_MARGIN = 1.0


def _rays(T_world_cam: np.ndarray, K, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(N,) pixel coordinates -> (N, 6) float32 open3d rays (origin, direction) from the camera centre."""
    d_cam = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], -1)
    d = d_cam @ T_world_cam[:3, :3].T
    return np.concatenate([np.broadcast_to(T_world_cam[:3, 3], d.shape), d], 1).astype(np.float32)


def _box_pixels(corners_world: np.ndarray, T_world_cam: np.ndarray, K, min_depth_m: float) -> tuple | None:
    """Integer pixel window (u0, u1, v0, v1), inclusive, that holds the projection of a box's 8 corners, clipped
    to the canvas; None when the box is entirely behind the camera or off the canvas."""
    T_cam_world = np.linalg.inv(T_world_cam)
    p = corners_world @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    if np.all(p[:, 2] <= min_depth_m):
        return None
    mu, mv = _CANVAS_MARGIN * K.width, _CANVAS_MARGIN * K.height
    if np.any(p[:, 2] <= min_depth_m):  # the box straddles the camera plane: the whole canvas
        return (int(-mu), int(K.width - 1 + mu), int(-mv), int(K.height - 1 + mv))
    u = K.fx * p[:, 0] / p[:, 2] + K.cx
    v = K.fy * p[:, 1] / p[:, 2] + K.cy
    u0, u1 = max(np.floor(u.min()), -mu), min(np.ceil(u.max()), K.width - 1 + mu)
    v0, v1 = max(np.floor(v.min()), -mv), min(np.ceil(v.max()), K.height - 1 + mv)
    if u0 > u1 or v0 > v1:
        return None
    return (int(u0), int(u1), int(v0), int(v1))


def seen_fractions(scene, T_world_cams, intrinsics, min_depth_m: float = 0.1) -> dict[int, float]:
    """GT instance id -> best share, over the recorded cameras, of the object's silhouette visible in one image
    (see the module docstring). scene: a SyntheticScene; T_world_cams (F, 4, 4); intrinsics: Intrinsics."""
    import open3d as o3d

    K = intrinsics
    full, geometry_ids = scene.raycasting_scene()
    alone = {}
    for inst, mesh in scene.meshes():
        if inst == 0:
            continue
        rs = o3d.t.geometry.RaycastingScene()
        rs.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
        alone[int(inst)] = (rs, np.asarray(mesh.get_axis_aligned_bounding_box().get_box_points()))
    best = dict.fromkeys(alone, 0.0)
    v_img, u_img = np.mgrid[0 : K.height, 0 : K.width].astype(np.float64)
    for T in np.asarray(T_world_cams, dtype=np.float64).reshape(-1, 4, 4):
        gid = full.cast_rays(o3d.core.Tensor(_rays(T, K, u_img.ravel(), v_img.ravel())))["geometry_ids"].numpy()
        hit = gid != o3d.t.geometry.RaycastingScene.INVALID_ID
        ids, n_visible = np.unique(geometry_ids[gid[hit].astype(np.int64)], return_counts=True)
        visible = dict(zip(ids.tolist(), n_visible.tolist()))
        for inst, (rs, corners) in alone.items():
            if not visible.get(inst):
                continue
            win = _box_pixels(corners, T, K, min_depth_m)
            if win is None:
                continue
            v, u = np.mgrid[win[2] : win[3] + 1, win[0] : win[1] + 1].astype(np.float64)
            t_hit = rs.cast_rays(o3d.core.Tensor(_rays(T, K, u.ravel(), v.ravel())))["t_hit"].numpy()
            silhouette = int(np.isfinite(t_hit).sum())
            if silhouette:
                best[inst] = max(best[inst], min(1.0, visible[inst] / silhouette))
    return best
