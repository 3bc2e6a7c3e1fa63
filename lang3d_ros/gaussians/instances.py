"""Instance codes on language Gaussians, and the field's answers: per-Gaussian relevancy, instance answers, and
relevancy images for a camera pose.

Each Gaussian carries, per level (subpart, part, whole), the id of the fused map's segment (instance) it belongs to
(``GaussianModel.codes`` (N, 3) int32, -1: none). Codes come from the labelled points the Gaussians were born from
(``codes_from_points``: a distance-weighted vote of the k nearest labelled points, within ``max_distance_m``) and are
refreshed the same way during training (``GaussianTrainer.label_source``); clones and split halves inherit their
parent's codes (``GaussianOptimizer.densify_and_prune``).

Two ways to score a Gaussian for a text query (benchmarks/gaussians_field.py measures both, docs/BENCHMARKS.md):
- ``codes``: gather the segments' relevancy (the instance table ranks segments by LERF canonical relevancy) through
  each Gaussian's code, as the fused points do; the Gaussians then answer with exactly the instance table's ids;
- ``latents``: decode each Gaussian's trained LangSplat latent (``LanguageQueryEngine``).
Cannot: invent instances the instance table does not hold (a Gaussian answer is always one of its segments), or
re-label a Gaussian from rendered views (codes follow the nearest labelled points, not the image evidence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.spatial import cKDTree

from lang3d_ros.gaussians.config import GaussianConfig
from lang3d_ros.gaussians.model import NO_CODE, NUM_LEVELS, GaussianModel
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.geometry.transforms import invert_rigid


def codes_from_points(
    means_xyz: np.ndarray,
    points_xyz: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None = None,
    k: int = 4,
    max_distance_m: float = 0.1,
) -> np.ndarray:
    """Instance codes for Gaussians from labelled points.

    means_xyz (N, 3) Gaussian centres, map frame, metres; points_xyz (M, 3) fused points in the same frame;
    labels (M, L) int segment id per point and level (-1: none; L = 3, or (M,) for one level); weights (M, L) vote
    weight per point and level (fusion's label weight) or None (all 1). Per level, the ``k`` nearest labelled points
    within ``max_distance_m`` vote with weight / (distance + 1 cm); the heaviest segment wins. Returns (N, L) int32,
    -1 where no labelled point is near enough.
    """
    means = np.asarray(means_xyz, dtype=np.float64)
    pts = np.asarray(points_xyz, dtype=np.float64)
    lab = np.asarray(labels)
    if lab.ndim == 1:
        lab = lab[:, None]
    if means.ndim != 2 or means.shape[1] != 3 or pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"means_xyz and points_xyz must be (N, 3) and (M, 3), got {means.shape}, {pts.shape}")
    if lab.shape[0] != pts.shape[0] or lab.ndim != 2:
        raise ValueError(f"labels must be (M, L) with M = {pts.shape[0]}, got {lab.shape}")
    if weights is None:
        w_all = np.ones(lab.shape, np.float64)
    else:
        w_all = np.asarray(weights, dtype=np.float64).reshape(lab.shape[0], -1)
    if w_all.shape != lab.shape:
        raise ValueError(f"weights must match labels {lab.shape}, got {w_all.shape}")
    if k < 1 or max_distance_m <= 0:
        raise ValueError(f"need k >= 1 and max_distance_m > 0, got {k}, {max_distance_m}")
    out = np.full((len(means), lab.shape[1]), NO_CODE, dtype=np.int32)
    if len(means) == 0:
        return out
    for lvl in range(lab.shape[1]):
        ok = (lab[:, lvl] >= 0) & (w_all[:, lvl] > 0)
        if not ok.any():
            continue
        ids, w_pt = lab[ok, lvl].astype(np.int64), w_all[ok, lvl]
        kk = min(k, int(ok.sum()))
        dist, nn = cKDTree(pts[ok]).query(means, k=kk, distance_upper_bound=max_distance_m)
        dist, nn = dist.reshape(len(means), kk), nn.reshape(len(means), kk)
        valid = np.isfinite(dist)
        nn_safe = np.where(valid, nn, 0)
        cand = np.where(valid, ids[nn_safe], -1)  # (N, k)
        vote = np.where(valid, w_pt[nn_safe] / (dist + 0.01), 0.0)
        # each candidate's total: the votes of all neighbours naming the same segment (k is small)
        total = (vote[:, None, :] * (cand[:, :, None] == cand[:, None, :])).sum(axis=2)
        total = np.where(cand >= 0, total, -1.0)
        best = total.argmax(axis=1)
        out[:, lvl] = np.where(total.max(axis=1) > 0, cand[np.arange(len(means)), best], NO_CODE)
    return out


def gather_segment_relevancy(
    codes: np.ndarray | torch.Tensor, segment_ids: np.ndarray, segment_relevancy: np.ndarray
) -> np.ndarray:
    """Per-Gaussian relevancy through instance codes.

    codes (N, L) int (-1: none); segment_ids (S,) int, the instance table's segment ids; segment_relevancy (S,)
    (one score per segment, used on every level) or (L, S) per level, in [0, 1]. Returns (L, N) float32, 0 for a
    Gaussian without a code or whose code the table does not hold.
    """
    c = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    if c.ndim != 2:
        raise ValueError(f"codes must be (N, L), got {c.shape}")
    ids = np.asarray(segment_ids, dtype=np.int64).reshape(-1)
    rel = np.asarray(segment_relevancy, dtype=np.float32)
    levels = c.shape[1]
    if rel.ndim == 1:
        rel = np.broadcast_to(rel, (levels, rel.shape[0]))
    if rel.shape != (levels, ids.shape[0]):
        raise ValueError(f"segment_relevancy must be ({ids.shape[0]},) or ({levels}, {ids.shape[0]}), got {rel.shape}")
    out = np.zeros((levels, c.shape[0]), np.float32)
    if ids.size == 0 or c.shape[0] == 0:
        return out
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    pos = np.clip(np.searchsorted(sorted_ids, c), 0, ids.size - 1)  # (N, L)
    found = (sorted_ids[pos] == c) & (c >= 0)
    for lvl in range(levels):
        vals = rel[lvl, order][pos[:, lvl]]
        out[lvl] = np.where(found[:, lvl], vals, 0.0)
    return out


@dataclass
class GaussianAnswer:
    """One instance answered from the Gaussians: the instance table's segment id, its level index, score in [0, 1],
    how many Gaussians carry the code, and the axis-aligned box of their centres (map frame, metres; 2nd..98th
    percentile, so a few stray Gaussians do not inflate it; centres, not footprints: on coarse CPU-sized fields
    adding each Gaussian's scale lowered the IoU with the points' box, e.g. 0.91 -> 0.35 for a box-shaped object)."""

    segment_id: int
    level: int
    score: float
    num_gaussians: int
    box_min_xyz: np.ndarray
    box_max_xyz: np.ndarray


def answer_from_gaussians(
    model: GaussianModel,
    level: int,
    segment_ids: np.ndarray,
    segment_scores: np.ndarray,
    top_k: int = 3,
    min_score: float = 0.0,
    min_gaussians: int = 1,
    min_opacity: float = 0.05,
) -> list[GaussianAnswer]:
    """Instance answers from the Gaussians, best first.

    ``segment_scores`` (S,) in [0, 1] for ``segment_ids`` (S,) at ``level`` (the instance table's relevancy, or
    ``segment_scores_from_gaussians`` for the latents path). Only segments carried by >= ``min_gaussians`` Gaussians
    of opacity >= ``min_opacity`` answer; the ids are the instance table's, so they agree with an answer from the
    points. Returns at most ``top_k`` answers with score >= ``min_score``.
    """
    if not 0 <= level < NUM_LEVELS:
        raise ValueError(f"level must be in 0..{NUM_LEVELS - 1}, got {level}")
    ids = np.asarray(segment_ids, dtype=np.int64).reshape(-1)
    scores = np.asarray(segment_scores, dtype=np.float64).reshape(-1)
    if ids.shape != scores.shape:
        raise ValueError(f"segment_ids {ids.shape} and segment_scores {scores.shape} must match")
    codes = model.codes[:, level].cpu().numpy().astype(np.int64)
    solid = model.opacities().detach().cpu().numpy() >= min_opacity
    means = model.means.detach().cpu().numpy()
    out: list[GaussianAnswer] = []
    for i in np.argsort(-scores, kind="stable"):
        if len(out) >= top_k or scores[i] < min_score:
            break
        members = np.flatnonzero((codes == ids[i]) & solid)
        if len(members) < max(min_gaussians, 1):
            continue
        m = means[members]
        out.append(
            GaussianAnswer(
                int(ids[i]),
                int(level),
                float(scores[i]),
                int(len(members)),
                np.percentile(m, 2, axis=0).astype(np.float32),
                np.percentile(m, 98, axis=0).astype(np.float32),
            )
        )
    return out


def segment_scores_from_gaussians(
    model: GaussianModel, level: int, segment_ids: np.ndarray, gaussian_relevancy: np.ndarray, min_opacity: float = 0.05
) -> np.ndarray:
    """(S,) score per segment: the opacity-weighted mean of ``gaussian_relevancy`` (N,) (e.g. decoded latents) over
    the Gaussians whose code at ``level`` is the segment; 0 for a segment no Gaussian carries."""
    ids = np.asarray(segment_ids, dtype=np.int64).reshape(-1)
    rel = np.asarray(gaussian_relevancy, dtype=np.float64).reshape(-1)
    if rel.shape[0] != model.num_gaussians:
        raise ValueError(f"gaussian_relevancy must be ({model.num_gaussians},), got {rel.shape}")
    codes = model.codes[:, level].cpu().numpy().astype(np.int64)
    w = model.opacities().detach().cpu().numpy().astype(np.float64)
    w = np.where(w >= min_opacity, w, 0.0)
    if ids.size == 0:
        return np.zeros(0, np.float32)
    order = np.argsort(ids, kind="stable")
    pos = np.clip(np.searchsorted(ids[order], codes), 0, ids.size - 1)
    found = (ids[order][pos] == codes) & (codes >= 0)
    sums, wsum = np.zeros(ids.size), np.zeros(ids.size)
    np.add.at(sums, order[pos[found]], (w * rel)[found])
    np.add.at(wsum, order[pos[found]], w[found])
    return np.where(wsum > 0, sums / np.maximum(wsum, 1e-12), 0.0).astype(np.float32)


def camera_tensors(
    T_world_cam: np.ndarray, intrinsics: Intrinsics, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera pose (4, 4) and intrinsics -> (viewmat (4, 4) world -> camera, K (3, 3)) for the renderer; a negative
    focal length (a y-up camera) becomes a positive one with a mirrored view, as ``training.make_keyframe``."""
    T = np.asarray(T_world_cam, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"T_world_cam must be a finite (4, 4) matrix, got shape {T.shape}")
    if intrinsics.width <= 0 or intrinsics.height <= 0:
        raise ValueError(f"intrinsics need a positive image size, got {intrinsics.width}x{intrinsics.height}")
    flip = np.diag([np.sign(intrinsics.fx), np.sign(intrinsics.fy), 1.0, 1.0])
    K = intrinsics.K @ np.diag([np.sign(intrinsics.fx), np.sign(intrinsics.fy), 1.0])
    view = torch.from_numpy(flip @ invert_rigid(T)).float().to(device)
    return view, torch.from_numpy(K).float().to(device)


@torch.no_grad()
def render_relevancy(
    model: GaussianModel,
    gaussian_relevancy: np.ndarray | torch.Tensor,
    T_world_cam: np.ndarray,
    intrinsics: Intrinsics,
    config: GaussianConfig | None = None,
) -> np.ndarray:
    """A relevancy image for a camera pose: "where in this image is the mug".

    gaussian_relevancy (N,) in [0, 1] per Gaussian (``gather_segment_relevancy`` at the chosen level, or decoded
    latents); T_world_cam (4, 4) camera (optical frame) in the map frame; intrinsics of the wanted image. Each
    pixel is the alpha-composited relevancy of the Gaussians along its ray (empty space and unscored Gaussians add
    0). Returns (H, W) float32 in [0, 1]. Cannot: see what the Gaussians do not hold (unmapped space is 0).
    """
    cfg = config or GaussianConfig()
    rel = gaussian_relevancy
    rel = rel if isinstance(rel, torch.Tensor) else torch.from_numpy(np.asarray(rel, dtype=np.float32))
    if rel.shape != (model.num_gaussians,):
        raise ValueError(f"gaussian_relevancy must be ({model.num_gaussians},), got {tuple(rel.shape)}")
    view, K = camera_tensors(T_world_cam, intrinsics, model.device)
    feats = rel.to(model.device, torch.float32).clamp(0.0, 1.0)[:, None]
    out = model.render(
        feats, view[None], K[None], int(intrinsics.width), int(intrinsics.height), cfg, detach_geometry=True
    )
    return out.image[0, ..., 0].clamp(0.0, 1.0).cpu().numpy().astype(np.float32)


def point_map_label_source(language_map) -> Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The ``GaussianTrainer.label_source`` of a live map: a callable that, under ``language_map.lock``, returns the
    fused points (M, 3) float32, their segment labels (M, 3) int32 and vote weights (M, 3) float32 per level, in the
    PointMap's live order (``points_xyz``, ``labels(level)``, ``label_weight(level)``)."""

    def source() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with language_map.lock:
            pm = language_map.points
            xyz = pm.points_xyz.detach().cpu().numpy().astype(np.float32)
            labels = np.stack([_to_numpy(pm.labels(lvl)) for lvl in range(NUM_LEVELS)], axis=1).astype(np.int32)
            weights = np.stack([_to_numpy(pm.label_weight(lvl)) for lvl in range(NUM_LEVELS)], axis=1)
        return xyz, labels, weights.astype(np.float32)

    return source


def segments_carried(
    model: GaussianModel, level: int, segment_ids: np.ndarray, min_gaussians: int = 1, min_opacity: float = 0.05
) -> np.ndarray:
    """(S,) bool: which of ``segment_ids`` (S,) at ``level`` are carried by >= ``min_gaussians`` Gaussians of opacity
    >= ``min_opacity``. Ground from the Gaussians keeps the points' ranking of the instance table's segments and
    answers those the field carries, so its ids and boxes are the instance table's (``answer_from_gaussians`` gives
    the Gaussians' own boxes)."""
    ids = np.asarray(segment_ids, dtype=np.int64).reshape(-1)
    if not 0 <= level < NUM_LEVELS:
        raise ValueError(f"level must be in 0..{NUM_LEVELS - 1}, got {level}")
    codes = model.codes[:, level].cpu().numpy().astype(np.int64)
    solid = model.opacities().detach().cpu().numpy() >= min_opacity
    carried, counts = np.unique(codes[solid & (codes >= 0)], return_counts=True)
    n = np.zeros(ids.shape, np.int64)
    if len(carried):
        pos = np.minimum(np.searchsorted(carried, ids), len(carried) - 1)
        hit = carried[pos] == ids
        n[hit] = counts[pos[hit]]
    return n >= max(min_gaussians, 1)


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def gaussians_from_point_map(
    language_map, init_opacity: float = 0.9, num_gaussians: int = 0, seed: int = 0, device: str | None = None
) -> GaussianModel:
    """An untrained language-Gaussian field straight from a LanguageMap's fused points: one flat disc per point
    (along its normal, GaussianModel.from_points), the point's colour, coded with the point's segment id per level;
    what training starts from before any iteration. For benchmarks and tests of the serving path (relevancy
    renders, Ground from the Gaussians) without training. ``num_gaussians`` above the number of points repeats
    points with a jitter of a third of the fusion voxel (scale studies: 1M Gaussians); 0 = one per point.
    ``device``: None = ``config.gaussians.device``."""
    import dataclasses

    cfg = language_map.config
    with language_map.lock:
        pm = language_map.points
        xyz = pm.points_xyz.detach().cpu().numpy().astype(np.float64)
        col = pm.colors.detach().cpu().numpy().astype(np.float64)
        nrm = pm.normals.detach().cpu().numpy().astype(np.float64)
        codes = np.stack([_to_numpy(pm.labels(lvl)) for lvl in range(NUM_LEVELS)], axis=1).astype(np.int32)
    if len(xyz) < 4:
        raise ValueError(f"the map has {len(xyz)} points; a field needs at least 4")
    if num_gaussians > len(xyz):
        rng = np.random.default_rng(seed)
        idx = np.concatenate([np.arange(len(xyz)), rng.integers(0, len(xyz), num_gaussians - len(xyz))])
        jitter = rng.normal(0.0, cfg.fusion.voxel_size_m / 3.0, (len(idx), 3))
        jitter[: len(xyz)] = 0.0
        xyz, col, nrm, codes = xyz[idx] + jitter, col[idx], nrm[idx], codes[idx]
    gcfg = dataclasses.replace(cfg.gaussians, init_opacity=init_opacity, max_init_points=max(len(xyz), 4))
    dev = device or cfg.gaussians.device
    return GaussianModel.from_points(
        xyz, np.clip(col, 0.0, 1.0), normals=nrm, config=gcfg, device=dev, seed=seed, codes=codes
    )
