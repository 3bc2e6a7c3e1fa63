"""LERF localization of language Gaussians on held-out views, beside an oracle that skips the Gaussians.

Per view and per label whose ground-truth mask covers >= ``min_view_fraction`` of the image (all instances of
the label together): the per-level relevancy maps go through the project's LERF protocol
(``lang3d_ros.evaluation.lerf_protocol``: LangSplat's mean filter, LERF's kernel scaled to the view's width; the
level with the highest filtered maximum; a hit when its argmax lies in any box of the label's mask components),
as the fused map's evaluation does.
- ``gaussian_view_queries``: maps rendered from the Gaussians' latents (``LanguageQueryEngine.relevancy_map``).
- ``oracle_view_queries``: the keyframe's own autoencoded mask latents decoded per pixel (0 where no mask):
  what the Gaussians are trained to reproduce, so it isolates encoder / autoencoder / relevancy / protocol.
``load_map_field`` reads a map file's Gaussians (+ decoder) for ``lang3d eval --train`` and ``lang3d eval-lerf``:
``MapField.relevancy_levels`` renders per-level relevancy for any camera pose, from the latents or the instance codes.
Cannot: score views without a ground-truth instance map (synthetic frames only).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.evaluation.lerf_protocol import mask_boxes, measure_levels, score_view_query
from lang3d_ros.gaussians.config import GaussianConfig
from lang3d_ros.gaussians.training import Keyframe

MIN_VIEW_FRACTION = 0.004  # as the fused map's evaluation (lang3d_ros.evaluation.runner.EvalOptions)


@dataclass
class ViewQuery:
    """One (view, label): hit, chosen level, its smoothed maximum, and the label's mask size in pixels."""

    view: int
    label: str
    hit: bool
    level: int
    score: float
    gt_pixels: int


def label_masks(
    instance_map: np.ndarray, instance_labels: dict[int, str], min_view_fraction: float = MIN_VIEW_FRACTION
) -> dict[str, np.ndarray]:
    """(H, W) instance ids -> {label: (H, W) bool mask of all its instances}, labels covering >= the fraction."""
    present = {int(i) for i in np.unique(instance_map)} & set(instance_labels)
    out = {}
    for lab in sorted({instance_labels[i] for i in present}):
        m = np.isin(instance_map, [i for i, name in instance_labels.items() if name == lab])
        if m.mean() >= min_view_fraction:
            out[lab] = m
    return out


def score_levels(view: int, label: str, rel_levels_hw: np.ndarray, gt_mask_hw: np.ndarray) -> ViewQuery:
    """(L, H, W) unsmoothed relevancy and the label's (H, W) mask -> the LERF verdict."""
    levels = [m.to_dict() for m in measure_levels(rel_levels_hw, gt_mask_hw)]
    hit, _, k = score_view_query(levels, mask_boxes(gt_mask_hw))
    return ViewQuery(view, label, bool(hit), int(k), float(levels[k]["score"]), int(gt_mask_hw.sum()))


def gaussian_view_queries(
    engine,
    model,
    frames: list[Frame],
    keyframes: list[Keyframe],
    instance_labels: dict[int, str],
    config: GaussianConfig,
    min_view_fraction: float = MIN_VIEW_FRACTION,
) -> list[ViewQuery]:
    """LERF verdicts on maps rendered from ``model`` (keyframes at full resolution: downscale 1)."""
    out = []
    for f, kf in zip(frames, keyframes):
        _check_size(f, kf)
        for lab, gt in label_masks(f.instance_map, instance_labels, min_view_fraction).items():
            rel, _ = engine.relevancy_map(model, kf.viewmat, kf.K, kf.width, kf.height, lab, config, smoothing_px=1)
            out.append(score_levels(f.index, lab, rel.cpu().numpy(), gt))
    return out


@torch.no_grad()
def oracle_view_queries(
    engine,
    frames: list[Frame],
    keyframes: list[Keyframe],
    instance_labels: dict[int, str],
    min_view_fraction: float = MIN_VIEW_FRACTION,
) -> list[ViewQuery]:
    """LERF verdicts on the keyframes' target latents decoded per pixel (relevancy 0 where no mask covers)."""
    out = []
    for f, kf in zip(frames, keyframes):
        _check_size(f, kf)
        if kf.lang_target is None or kf.lang_mask is None:
            raise ValueError(f"keyframe of frame {f.index} has no language target")
        L, H, W, d = kf.lang_target.shape
        for lab, gt in label_masks(f.instance_map, instance_labels, min_view_fraction).items():
            rel = engine.relevancy_of_latents(kf.lang_target.reshape(-1, d), lab).reshape(L, H, W)
            rel = rel * kf.lang_mask.to(rel.device)
            out.append(score_levels(f.index, lab, rel.cpu().numpy(), gt))
    return out


def accuracy(queries: list[ViewQuery]) -> float:
    """Share of hits (nan for no queries)."""
    return float(np.mean([q.hit for q in queries])) if queries else float("nan")


def _check_size(frame: Frame, kf: Keyframe) -> None:
    if frame.instance_map is None:
        raise ValueError(f"frame {frame.index} has no instance map (synthetic frames only)")
    if tuple(frame.instance_map.shape) != (kf.height, kf.width):
        raise ValueError(
            f"keyframe {kf.width}x{kf.height} differs from frame {frame.width}x{frame.height}: evaluate at downscale 1"
        )


@dataclass
class MapField:
    """A map file's trained language Gaussians, ready to answer: the model (with codes and coverage when saved), the
    latents query engine (decoder = the map's scene autoencoder, coverage gate when saved), and the config."""

    model: object  # GaussianModel
    engine: object  # LanguageQueryEngine
    config: GaussianConfig

    def relevancy_levels(self, text: str, T_world_cam: np.ndarray, intrinsics, segment_relevancy=None) -> np.ndarray:
        """(L, H, W) float32 relevancy rendered for a camera pose (T_world_cam (4, 4), optical frame in the map
        frame), unsmoothed (the LERF protocol smooths).

        ``segment_relevancy``: None renders the decoded latents (``LanguageQueryEngine.relevancy_map``); otherwise a
        callable text -> (segment ids (S,), relevancy (L, S)) from the instance table, gathered through each
        Gaussian's instance codes and rendered per level (``instances.render_relevancy``)."""
        return self.relevancy_levels_many([text], T_world_cam, intrinsics, segment_relevancy)[text]

    def relevancy_levels_many(
        self, texts: list[str], T_world_cam: np.ndarray, intrinsics, segment_relevancy=None
    ) -> dict[str, np.ndarray]:
        """``relevancy_levels`` for several texts: {text: (L, H, W) float32}; the latents path renders and decodes
        the view once for all of them."""
        from lang3d_ros.gaussians.instances import camera_tensors

        if segment_relevancy is None:
            view, K = camera_tensors(T_world_cam, intrinsics, self.model.device)
            maps = self.engine.relevancy_maps(
                self.model, view, K, int(intrinsics.width), int(intrinsics.height), texts, self.config, smoothing_px=1
            )
            return {t: m.cpu().numpy().astype(np.float32) for t, m in maps.items()}
        return {t: self._code_levels(t, T_world_cam, intrinsics, segment_relevancy) for t in texts}

    def _code_levels(self, text: str, T_world_cam: np.ndarray, intrinsics, segment_relevancy) -> np.ndarray:
        from lang3d_ros.gaussians.instances import gather_segment_relevancy, render_relevancy

        ids, seg_rel = segment_relevancy(text)
        per_gaussian = gather_segment_relevancy(self.model.codes, ids, seg_rel)
        return np.stack(
            [
                render_relevancy(self.model, per_gaussian[lvl], T_world_cam, intrinsics, self.config)
                for lvl in range(per_gaussian.shape[0])
            ]
        )


def load_map_field(map_path, text_encoder, config, device: str = "cpu") -> MapField | None:
    """The language Gaussians stored in a map file (``gaussians.ply`` blob, written when the mapper trained them),
    or None when the file holds none. ``config``: Lang3DConfig (the autoencoder's layer sizes, canonical phrases,
    query gate); ``text_encoder`` the one the map was built with. ValueError when the Gaussians carry no decoder."""
    import tempfile
    from pathlib import Path

    from lang3d_ros.gaussians.ply import load_gaussians
    from lang3d_ros.gaussians.query import LanguageQueryEngine
    from lang3d_ros.mapstore import read_map
    from lang3d_ros.semantics.autoencoder import SceneAutoencoder

    blob = read_map(map_path).blobs.get("gaussians.ply")
    if blob is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "g.ply").write_bytes(blob)
        loaded = load_gaussians(Path(tmp) / "g.ply", device=device)
    if loaded.autoencoder_state is None:
        raise ValueError(f"{map_path}: the Gaussians were saved without their autoencoder (no decoder for latents)")
    ae = SceneAutoencoder(int(text_encoder.feature_dim), config.semantics.autoencoder, device=device)
    ae.model.load_state_dict(loaded.autoencoder_state)
    ae.model.eval()
    g = config.gaussians
    gcfg = dataclasses.replace(g, device=device)
    model = loaded.model
    engine = LanguageQueryEngine(
        model.params["latents"].detach(),
        ae.decode,
        text_encoder,
        canonical_phrases=tuple(config.semantics.clip.canonical_phrases),
        codebook_size=0,
        device=device,
        coverage=model.coverage,
        min_coverage=g.min_language_coverage,
        weight_by_latent_norm=g.weight_by_latent_norm,
    )
    return MapField(model, engine, gcfg)
