"""Rendering the fused point map into a camera view: a point-splat z-buffer of point indices, so any per-point
quantity (per-level relevancy, colour) becomes an image by one gather.

Each point covers a square of half-width ceil(0.5 * voxel * f / z) pixels (at most ``max_radius_px``) so the
voxel-sized points close the gaps between them; the nearest point wins each pixel. What it cannot do: render
Gaussians (``measure_gaussian_views`` does, through lang3d_ros.gaussians), anti-alias, or fill pixels no point
covers (index -1).
"""

from __future__ import annotations

import numpy as np

from lang3d_ros.geometry.camera import Intrinsics


def point_index_image(
    points_world: np.ndarray,
    T_world_cam: np.ndarray,
    intrinsics: Intrinsics,
    point_size_m: float = 0.03,
    max_radius_px: int = 4,
    near_m: float = 0.05,
) -> np.ndarray:
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
    return rays.instance_map(
        SimpleNamespace(intrinsics=intrinsics, T_world_cam=np.asarray(T_world_cam, dtype=np.float64))
    )


def measure_gaussian_views(
    field,
    truth,
    scene,
    view_indices: list[int],
    min_view_fraction: float = 0.004,
    segment_relevancy=None,
    heatmaps: dict | None = None,
) -> list[dict]:
    """The LERF per-level measurements of relevancy rendered from language Gaussians, in the same GT views and with
    the same record layout as the points' ``evaluation.runner.measure_views`` (so ``metrics.score_views`` scores
    both). ``field``: ``gaussians.evaluation.MapField``; ``truth``: the scene's GroundTruth (poses, intrinsics,
    objects); ``segment_relevancy``: None for the decoded latents, or the instance table's text -> (ids, (L, S))
    to render through instance codes (``MapField.relevancy_levels``); ``heatmaps``: filled with up to 8 best-level
    maps (``g<view>_<label>``) when given. Each view also records ``heldout_psnr_db``: the Gaussians' RGB against
    the scene rendered (noise-free) at the pose halfway to the next trajectory pose, a view no frame was taken from."""
    from lang3d_ros.evaluation.lerf_protocol import mask_boxes, measure_levels
    from lang3d_ros.mapping.build import RenderedInstances

    K = truth.intrinsics
    if K is None:
        return []
    rays = RenderedInstances(_NoBackend(), scene)
    label_of = {o.instance_id: o.label for o in truth.objects}
    views = []
    psnrs = heldout_psnrs_db(field, scene, truth.T_world_cams, view_indices, K)
    for vi, psnr_db in zip(view_indices, psnrs):
        T = truth.T_world_cams[vi]
        inst = gt_instance_map(scene, T, K, rays)
        entries = []
        masks = {}
        for lab in sorted({label_of[i] for i in np.unique(inst) if i in label_of}):
            gt_mask = np.isin(inst, [i for i, name in label_of.items() if name == lab])
            if gt_mask.mean() >= min_view_fraction:
                masks[lab] = gt_mask
        try:
            rels, err = field.relevancy_levels_many(sorted(masks), T, K, segment_relevancy), None
        except Exception as exc:  # a failed view counts its queries as misses, with the reason
            rels, err = {}, f"{type(exc).__name__}: {exc}"
        for lab, gt_mask in masks.items():
            entry = {
                "label": lab,
                "gt_pixels": int(gt_mask.sum()),
                "gt_boxes_xyxy": mask_boxes(gt_mask).tolist(),
                "levels": [],
                "error": err,
            }
            try:
                if err is not None:
                    raise RuntimeError(err)
                rel = rels[lab]
                entry["levels"] = [m.to_dict() for m in measure_levels(rel, gt_mask)]
                if heatmaps is not None and len(heatmaps) < 8:
                    heatmaps[f"g{vi}_{lab}"] = rel[int(np.argmax([lv["score"] for lv in entry["levels"]]))]
            except Exception as exc:  # a failed view-query is a miss, recorded with its reason
                entry["error"] = err or f"{type(exc).__name__}: {exc}"
            entries.append(entry)
        views.append(
            {
                "view": int(vi),
                "stamp_ns": int(truth.stamps_ns[vi]) if len(truth.stamps_ns) > vi else None,
                "T_world_cam": np.asarray(T).tolist(),
                "queries": entries,
                "field": "gaussians",
                "heldout_psnr_db": psnr_db,
            }
        )
    return views


def halfway_pose(T_a: np.ndarray, T_b: np.ndarray) -> np.ndarray:
    """(4, 4) pose halfway between two poses: mean translation, rotation slerped to t = 0.5."""
    from scipy.spatial.transform import Rotation, Slerp

    out = np.eye(4)
    rots = Rotation.from_matrix(np.stack([np.asarray(T_a)[:3, :3], np.asarray(T_b)[:3, :3]]))
    out[:3, :3] = Slerp([0.0, 1.0], rots)(0.5).as_matrix()
    out[:3, 3] = 0.5 * (np.asarray(T_a)[:3, 3] + np.asarray(T_b)[:3, 3])
    return out


def heldout_psnrs_db(field, scene, T_world_cams: np.ndarray, views: list[int], intrinsics: Intrinsics) -> list:
    """PSNR (dB) of the Gaussians' RGB at the pose halfway between trajectory poses ``view`` and ``view + 1`` (or
    ``view - 1`` at the end) against the synthetic scene rendered there without noise, per view in ``views`` (one
    scene renderer for all); None for each with a single pose."""
    import torch

    from lang3d_ros.datasets.synthetic import render_frames
    from lang3d_ros.gaussians.instances import camera_tensors
    from lang3d_ros.gaussians.losses import psnr

    if len(T_world_cams) < 2 or not views:
        return [None] * len(views)
    poses = []
    for view in views:
        other = view + 1 if view + 1 < len(T_world_cams) else view - 1
        poses.append(halfway_pose(T_world_cams[view], T_world_cams[other]))
    out = []
    model = field.model
    for T, gt in zip(poses, render_frames(scene, np.stack(poses), intrinsics)):
        vm, K = camera_tensors(T, intrinsics, model.device)
        with torch.no_grad():
            img = model.render_rgb(vm[None], K[None], int(intrinsics.width), int(intrinsics.height), field.config)
        out.append(float(psnr(img.image[0].cpu(), torch.from_numpy(gt.rgb).float() / 255.0)))
    return out
