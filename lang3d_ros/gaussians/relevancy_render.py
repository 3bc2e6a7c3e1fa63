"""A relevancy image a planner can request: "where in this image is the mug", for any camera pose.

``render_query_view(language_map, text, T_world_cam, intrinsics)`` answers with one consistent view of the map:
- which field answers follows ``grounding.field`` (``LanguageMap.answering_gaussians``): the trained language
  Gaussians (their instance codes gather the segments' relevancy, alpha-composited along each ray) or, without
  trained Gaussians, the fused points' splats (``evaluation.render.point_index_image``, the nearest point per
  pixel). ``answered_by`` says which;
- the instances are Ground's answer (``LanguageMap.ground``: the same ids, level and scores as the Ground service);
  the view reports those covering at least one pixel, best first, with their pixel counts;
- the relevancy image (H, W) float32 in [0, 1] is every segment's relevancy at Ground's level; the mask is the
  pixels at or above the threshold (by default Ground's own keep threshold, so the mask is the answer's pixels);
- the best pixel is the LERF-style localization argmax (relevancy mean-filtered with LERF's kernel scaled to the
  image width, counting only the answering instances' pixels) among those pixels, so it lies on the object, away
  from its edges and the image border; its 3D point is that instance's rendered depth (Gaussians: the expected
  depth of its own Gaussians at the pixel; points: the splatted point itself) back-projected into the map.
Errors are ``Lang3DError`` with the code a planner branches on: BAD_REQUEST (query, level, pose, intrinsics, image
size above ``gaussians.render_max_side_px`` / ``render_max_pixels``), NO_MAP, MODEL_UNAVAILABLE
(``grounding.field: gaussians`` without trained Gaussians), NOT_FOUND (the map holds nothing matching the query).
Cannot: see what the map does not hold (unmapped space is relevancy 0, no depth), or render distorted cameras.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from lang3d_ros.errors import ErrorCode, Lang3DError
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.grounding.objects import LEVELS


@dataclass
class RelevancyView:
    """One rendered answer. Pixel (u, v): u = column, v = row, (0, 0) the centre of the top-left pixel."""

    relevancy: np.ndarray
    """(H, W) float32 in [0, 1]: relevancy of the query at ``level`` seen from the camera (0 where the map is empty)."""
    mask: np.ndarray
    """(H, W) bool: relevancy >= ``mask_threshold``."""
    mask_threshold: float
    """The threshold of ``mask`` (the request's, or Ground's keep threshold for this query)."""
    level: str
    """The level that answered ("subpart" | "part" | "whole"): Ground's choice, or the requested one."""
    answered_by: Literal["gaussians", "points"]
    """The field that rendered: the trained language Gaussians, or the fused points' splats."""
    best_uv: tuple[int, int]
    """Best pixel: localization argmax on the answering instances' pixels (``best_pixel``; on the whole image when
    none is in view)."""
    best_score: float
    """Relevancy at ``best_uv``."""
    best_point_world: np.ndarray | None
    """(3,) map-frame point seen at ``best_uv`` (metres), or None where the map has nothing at that pixel."""
    instance_ids: list[int] = field(default_factory=list)
    """Ground's answering instances that cover at least one pixel of this view, best first."""
    instance_scores: list[float] = field(default_factory=list)
    """Their relevancy in [0, 1] (Ground's scores)."""
    instance_pixels: list[int] = field(default_factory=list)
    """How many pixels each covers (the pixels where it is the nearest point / the dominant Gaussian)."""
    latency_ms: float = 0.0
    """Time spent in ``render_query_view``."""

    @property
    def target_in_view(self) -> bool:
        """Whether any answering instance is visible in this view."""
        return bool(self.instance_ids)


def check_view_request(T_world_cam: np.ndarray, intrinsics: Intrinsics, max_side_px: int, max_pixels: int) -> None:
    """BAD_REQUEST (Lang3DError) for a camera that cannot be rendered: a non-rigid or non-finite pose, an image side
    above ``max_side_px`` or more pixels than ``max_pixels``."""
    T = np.asarray(T_world_cam, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise Lang3DError(ErrorCode.BAD_REQUEST, f"T_world_cam must be a finite (4, 4) matrix, got shape {T.shape}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0 or not np.allclose(T[3], [0, 0, 0, 1]):
        raise Lang3DError(ErrorCode.BAD_REQUEST, "T_world_cam is not a rigid transform (rotation + translation)")
    w, h = int(intrinsics.width), int(intrinsics.height)
    if w <= 0 or h <= 0 or w > max_side_px or h > max_side_px or w * h > max_pixels:
        raise Lang3DError(
            ErrorCode.BAD_REQUEST,
            f"image size {w}x{h} is out of bounds: each side 1..{max_side_px} px, at most {max_pixels} pixels",
        )


def render_query_view(
    language_map,
    text: str,
    T_world_cam: np.ndarray,
    intrinsics: Intrinsics,
    level: str = "",
    mask_threshold: float = 0.0,
    max_results: int = 0,
) -> RelevancyView:
    """Render where ``text`` is in the view of a camera (``T_world_cam`` (4, 4): the camera's optical frame, z
    forward, x right, y down, in the map frame; ``intrinsics``: pinhole of the wanted image) from a LanguageMap.

    ``level``: "" (Ground's best level) or a level name; ``mask_threshold`` in [0, 1], 0: Ground's keep threshold;
    ``max_results``: at most this many answering instances (0: ``grounding.top_k``). See the module docstring for
    what answers and for the errors."""
    from lang3d_ros.llm.frontend import check_query

    t0 = time.perf_counter()
    cfg = language_map.config
    gcfg = cfg.gaussians
    text = check_query(text)
    if level and level not in LEVELS:
        raise Lang3DError(ErrorCode.BAD_REQUEST, f"unknown level {level!r}: use '' (best), {', '.join(LEVELS)}")
    if not np.isfinite(mask_threshold) or not 0.0 <= mask_threshold <= 1.0:
        raise Lang3DError(ErrorCode.BAD_REQUEST, f"mask_threshold must be in [0, 1], got {mask_threshold}")
    check_view_request(T_world_cam, intrinsics, gcfg.render_max_side_px, gcfg.render_max_pixels)
    T = np.asarray(T_world_cam, dtype=np.float64)
    if language_map.num_points == 0:
        raise Lang3DError(ErrorCode.NO_MAP, "the map is empty: no frame has been fused or loaded yet")
    try:
        model = language_map.answering_gaussians()
    except ValueError as exc:  # grounding.field gaussians while none are trained
        raise Lang3DError(ErrorCode.MODEL_UNAVAILABLE, str(exc)) from exc
    answers = language_map.ground(text, max_results=max_results, level=level)
    if not answers:
        raise Lang3DError(ErrorCode.NOT_FOUND, f"nothing in the map matches {text!r}")
    lvl = LEVELS.index(answers[0].level)
    seg_ids, seg_rel = _segment_relevancy_at(language_map, text, lvl)
    answer_ids = np.array([o.instance_id for o in answers], np.int64)
    for o in answers:  # the answering segments show Ground's own scores (the same ranking, bit for bit)
        seg_rel[seg_ids == o.instance_id] = o.score
    if model is not None:
        rel_img, share, depth_img, depth_by = _render_gaussians(
            model, lvl, seg_ids, seg_rel, answer_ids, T, intrinsics, gcfg
        )
        by = "gaussians"
    else:
        rel_img, share, depth_img = _render_points(language_map, lvl, seg_ids, seg_rel, answer_ids, T, intrinsics)
        depth_by = np.where(share > 0, depth_img[..., None], np.nan)
        by = "points"
    g = cfg.grounding
    best_answer = float(answers[0].score)
    thr = float(mask_threshold) or max(g.absolute_threshold, g.relative_threshold * best_answer, g.min_score)
    thr = min(thr, best_answer)  # the answer's own pixels always pass
    mask = rel_img >= thr - 1e-6
    # each pixel belongs to the answering instance that covers at least half of it (-1: none)
    inst_img = np.where(share.max(axis=2) >= 0.5, answer_ids[share.argmax(axis=2)], -1)
    ids, scores, pixels = [], [], []
    for o in answers:
        n = int(np.count_nonzero(inst_img == o.instance_id))
        if n > 0:
            ids.append(int(o.instance_id))
            scores.append(float(o.score))
            pixels.append(n)
    if ids:  # the most interior pixel of the best answering instance in view
        k = int(np.flatnonzero(answer_ids == ids[0])[0])
        u, v = best_pixel(share[..., k], inst_img == ids[0])
        z = float(depth_by[v, u, k])  # the depth of that instance itself, not of what lies behind or in front
    else:  # not in view: where the query is most relevant (LERF localization)
        u, v = best_pixel(rel_img, np.ones(rel_img.shape, bool))
        z = float(depth_img[v, u])
    point = None
    if np.isfinite(z) and z > 0:
        x_cam = np.array([(u - intrinsics.cx) / intrinsics.fx * z, (v - intrinsics.cy) / intrinsics.fy * z, z, 1.0])
        point = (T @ x_cam)[:3].astype(np.float64)
    return RelevancyView(
        relevancy=rel_img,
        mask=mask,
        mask_threshold=float(thr),
        level=LEVELS[lvl],
        answered_by=by,
        best_uv=(int(u), int(v)),
        best_score=float(rel_img[v, u]),
        best_point_world=point,
        instance_ids=ids,
        instance_scores=scores,
        instance_pixels=pixels,
        latency_ms=(time.perf_counter() - t0) * 1e3,
    )


def best_pixel(value_hw: np.ndarray, candidates_hw: np.ndarray) -> tuple[int, int]:
    """(u, v) among the ``candidates_hw`` (H, W) bool pixels (all pixels when none is set) where ``value_hw`` (an
    instance's coverage, or relevancy) of the candidates, mean-filtered with LERF's localization kernel scaled to
    the width, is highest; pixels outside the candidates and outside the image count 0, so the winner lies inside
    the object, away from its edges and the image border."""
    from scipy import ndimage

    from lang3d_ros.evaluation.lerf_protocol import smooth_kernel_px

    cand = candidates_hw if candidates_hw.any() else np.ones_like(candidates_hw, dtype=bool)
    k = smooth_kernel_px(value_hw.shape[1])
    loc = ndimage.uniform_filter(np.where(cand, value_hw, 0.0).astype(np.float64), size=k, mode="constant")
    loc = np.where(cand, loc + 1e-9 * value_hw, -np.inf)  # ties (flat filtered map): the higher pixel value
    v, u = np.unravel_index(int(np.argmax(loc)), loc.shape)
    return int(u), int(v)


def _segment_relevancy_at(language_map, text: str, level: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (S,), relevancy (S,)) of the answerable segments at ``level``, from the index ``LanguageMap.ground``
    ranks (same rows, same LERF canonical relevancy)."""
    index = language_map.segment_index()
    rel = index.relevancy(language_map.encode_query(text))
    return index.level_ids(level).astype(np.int64), rel[index.level_slice(level)]


def segment_relevancy_levels(language_map, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Every segment's relevancy on its own level, for rendering through instance codes on all levels:
    (ids (S,), relevancy (L, S)) with row l holding the relevancy of the level-l segments and 0 elsewhere (the
    ``segment_relevancy`` argument of ``MapField.relevancy_levels`` / ``evaluation.render.measure_gaussian_views``)."""
    index = language_map.segment_index()
    rel_all = index.relevancy(language_map.encode_query(text))
    rel = np.zeros((len(LEVELS), len(index)), np.float32)
    for lvl in range(len(LEVELS)):
        sl = index.level_slice(lvl)
        rel[lvl, sl] = rel_all[sl]
    return index.ids.astype(np.int64), rel


@torch.no_grad()
def _render_gaussians(model, level, seg_ids, seg_rel, answer_ids, T, K: Intrinsics, gcfg):
    """-> relevancy (H, W), share (H, W, A) of each pixel's opacity from the Gaussians coded ``answer_ids[a]``,
    expected depth (H, W) metres (NaN where the rendered opacity is below 0.5), and each answer's own expected depth
    (H, W, A) (its Gaussians' depths weighted by their share of the pixel; NaN where it covers under 1 %)."""
    from lang3d_ros.gaussians.instances import camera_tensors, gather_segment_relevancy

    rel = gather_segment_relevancy(model.codes, seg_ids, seg_rel)[level]
    codes = model.codes[:, level].cpu().numpy().astype(np.int64)
    onehot = (codes[:, None] == answer_ids[None, :]).astype(np.float32)  # (N, A): which answer each Gaussian is
    view, Kt = camera_tensors(T, K, model.device)
    z_cam = (model.means.detach() @ view[:3, :3].T + view[:3, 3])[:, 2].cpu().numpy()[:, None]
    feats = torch.from_numpy(np.concatenate([rel[:, None], onehot, onehot * z_cam], axis=1).astype(np.float32))
    feats = feats.to(model.device)
    a = len(answer_ids)
    out = model.render(feats, view[None], Kt[None], int(K.width), int(K.height), gcfg, expected_depth=True)
    img = out.image[0].cpu().numpy()
    alpha = out.alpha[0, ..., 0].cpu().numpy()
    rel_img = np.clip(img[..., 0], 0.0, 1.0).astype(np.float32)
    share = np.clip(img[..., 1 : 1 + a], 0.0, 1.0)
    raw_share = img[..., 1 : 1 + a].astype(np.float64)
    depth_by = np.where(raw_share >= 0.01, img[..., 1 + a :] / np.maximum(raw_share, 1e-6), np.nan)
    depth = out.depth[0, ..., 0].cpu().numpy().astype(np.float64)
    depth = np.where(alpha >= 0.5, depth, np.nan)  # both backends normalise the expected depth by alpha
    return rel_img, share, depth, depth_by


def _render_points(language_map, level, seg_ids, seg_rel, answer_ids, T, K: Intrinsics):
    """-> relevancy (H, W), share (H, W, A) 1 where the pixel's nearest point belongs to ``answer_ids[a]``, depth
    (H, W) metres (NaN: no point), from the fused points' splats (each pixel the nearest point)."""
    from lang3d_ros.evaluation.render import point_index_image

    with language_map.lock:
        pm = language_map.points
        xyz = pm.points_xyz.detach().cpu().numpy()
        lab = pm.labels(level)
        lab = (lab.detach().cpu().numpy() if hasattr(lab, "detach") else np.asarray(lab)).astype(np.int64)
    index = point_index_image(xyz, T, K, point_size_m=language_map.config.fusion.voxel_size_m)
    hit = index >= 0
    inst = np.full(index.shape, -1, np.int64)
    inst[hit] = lab[index[hit]]
    rel_img = np.zeros(index.shape, np.float32)
    if len(seg_ids):
        order = np.argsort(seg_ids)
        pos = np.clip(np.searchsorted(seg_ids[order], inst), 0, len(seg_ids) - 1)
        found = hit & (seg_ids[order][pos] == inst)
        rel_img[found] = seg_rel[order][pos[found]]
    depth = np.full(index.shape, np.nan)
    if hit.any():
        T_cam_world = np.linalg.inv(T)
        p = xyz[index[hit]].astype(np.float64) @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
        depth[hit] = p[:, 2]
    share = (inst[..., None] == answer_ids[None, None, :]).astype(np.float32)
    return rel_img, share, depth
