"""Whole-map object extraction without a query: the list of SceneObjects the 3D-LLM and Ask read.

Each point with a feature gets the phrase (vocabulary + structure phrases) its feature is most similar
to; the points of each vocabulary phrase are split into instances by DBSCAN; an instance is labelled by
open-vocabulary classification of its unit mean feature (softmax of ``label_temperature * cos`` over the
vocabulary). Structure (floor, walls, ceiling) is dropped twice: by phrase, and geometrically, when a
cluster is thin and wide whatever its label. Two touching objects of one phrase become one instance;
objects whose points never got a feature (all-zero rows) are invisible here.
"""
from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
import open3d as o3d

from lang3d_ros.grounding.cluster import check_points, dbscan_labels, robust_boxes
from lang3d_ros.grounding.config import ExtractionConfig
from lang3d_ros.grounding.ground import check_colors, check_features, unit_mean
from lang3d_ros.grounding.objects import LEVELS, SceneObject

log = logging.getLogger(__name__)

_CHUNK = 65536


class TextEncoder(Protocol):
    def encode_text(self, texts: list[str]):  # -> (len(texts), D) unit-norm torch tensor
        ...


def text_embeddings(encoder: TextEncoder, phrases: list[str]) -> np.ndarray:
    """phrases (P,) -> (P,D) float32 unit rows from ``encoder.encode_text``."""
    if not phrases:
        raise ValueError("need at least one phrase")
    t = encoder.encode_text(list(phrases))
    if hasattr(t, "detach"):
        t = t.detach().float().cpu().numpy()
    t = np.asarray(t, dtype=np.float32)
    if t.ndim != 2 or t.shape[0] != len(phrases):
        raise ValueError(f"encode_text returned shape {t.shape} for {len(phrases)} phrases")
    norms = np.linalg.norm(t, axis=1, keepdims=True)
    if not np.all(np.isfinite(t)) or np.any(norms < 1e-9):
        raise ValueError("encode_text returned non-finite or zero rows")
    return t / norms


def point_phrase_labels(features: np.ndarray, text: np.ndarray, min_similarity: float) -> np.ndarray:
    """features (N,D), text (P,D) unit -> (N,) int64 index of the most similar phrase, -1 where the row is
    all zero or its best cosine is below min_similarity."""
    out = np.full(len(features), -1, dtype=np.int64)
    for s in range(0, len(features), _CHUNK):
        f = features[s : s + _CHUNK]
        norms = np.linalg.norm(f, axis=1)
        cos = (f @ text.T) / np.maximum(norms, 1e-12)[:, None]
        best = cos.argmax(1)
        ok = (norms > 1e-9) & (cos[np.arange(len(f)), best] >= min_similarity)
        out[s : s + _CHUNK][ok] = best[ok]
    return out


def is_planar_structure(points: np.ndarray, config: ExtractionConfig, seed: int = 0) -> bool:
    """points (M,3) of one cluster -> True when it is at least planar_min_extent_m wide in xy and up to
    planar_max_planes RANSAC planes (open3d, slabs planar_max_thickness_m thick) hold planar_min_fraction
    of its points: a floor, a wall, or connected walls. A large flat-topped object with few side points
    would count too."""
    extent = points[:, :2].max(0) - points[:, :2].min(0)
    if float(np.max(extent)) < config.planar_min_extent_m:
        return False
    o3d.utility.random.seed(seed)
    remaining = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64)))
    explained = 0
    for _ in range(config.planar_max_planes):
        if len(remaining.points) < 3:
            break
        _, inliers = remaining.segment_plane(config.planar_max_thickness_m / 2.0, 3, 200)
        if len(inliers) < 0.05 * len(points):
            break
        explained += len(inliers)
        remaining = remaining.select_by_index(inliers, invert=True)
    return explained >= config.planar_min_fraction * len(points)


def extract_objects(
    points: np.ndarray,
    features,
    encoder: TextEncoder,
    colors: np.ndarray | None = None,
    config: ExtractionConfig | None = None,
    level: str = "whole",
) -> list[SceneObject]:
    """points (N,3) map frame, features (N,D) numpy/torch ("whole"-level) -> SceneObjects, largest first.

    Each object has label, label_scores (over ``config.vocabulary``), score = its label's probability,
    gravity-aligned box, ``aabb``, mean colour, unit mean feature, n_points and point indices.
    """
    cfg = config or ExtractionConfig()
    cfg.validate()
    if level and level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS} or empty, got {level!r}")
    p = check_points(points)
    f = check_features(features, len(p))
    if f is None:
        raise ValueError("features are required for extraction")
    c = check_colors(colors, len(p))
    phrases = list(cfg.vocabulary) + list(cfg.structure_labels)
    text = text_embeddings(encoder, phrases)
    if text.shape[1] != f.shape[1]:
        raise ValueError(f"text embeddings have dim {text.shape[1]}, point features {f.shape[1]}")
    n_vocab = len(cfg.vocabulary)
    vocab_text = text[:n_vocab].astype(np.float64)
    point_label = point_phrase_labels(f, text, cfg.min_similarity)

    objects: list[SceneObject] = []
    n_structure = 0
    for phrase_idx, phrase in enumerate(phrases):
        is_structure_phrase = phrase_idx >= n_vocab
        if is_structure_phrase and not cfg.keep_structure:
            continue
        idx = np.flatnonzero(point_label == phrase_idx)
        if len(idx) < cfg.min_points:
            continue
        labels = dbscan_labels(p[idx], cfg.cluster)
        for k in range(int(labels.max(initial=-1)) + 1):
            members = idx[labels == k]
            if len(members) < cfg.min_points:
                continue
            structure = is_structure_phrase or is_planar_structure(p[members], cfg)
            if structure and not cfg.keep_structure:
                n_structure += 1
                continue
            box, aabb = robust_boxes(p[members], cfg.box_percentile)
            mean_f = unit_mean(f[members])
            if mean_f is None:
                continue
            logits = cfg.label_temperature * (vocab_text @ mean_f)
            prob = np.exp(logits - logits.max())
            prob /= prob.sum()
            scores = {name: float(v) for name, v in zip(cfg.vocabulary, prob)}
            best = int(np.argmax(prob))
            label = cfg.vocabulary[best]
            if structure:
                label = f"structure:{phrase}"
            objects.append(
                SceneObject(
                    instance_id=0,
                    label=label,
                    box=box,
                    aabb=aabb,
                    score=float(prob[best]),
                    level=level,
                    n_points=len(members),
                    color_rgb=c[members].mean(0) if c is not None else np.zeros(3),
                    feature=mean_f,
                    label_scores=scores,
                    point_indices=members,
                )
            )
    objects.sort(key=lambda o: -o.n_points)
    for i, o in enumerate(objects):
        o.instance_id = i
    log.info("extracted %d objects (%d structure clusters dropped) from %d points", len(objects), n_structure, len(p))
    return objects
