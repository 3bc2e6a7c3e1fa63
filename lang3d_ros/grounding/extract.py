"""Open-vocabulary labels of instance features: the label of each "whole"-level segment that objects() reports.

A segment is labelled by classifying its (unit, confidence-weighted mean) feature against the vocabulary and the
structure phrases (softmax of ``label_temperature * cos`` over the vocabulary gives ``label_scores``); it is
structure when a structure phrase is closest, or when its box is wide and thin (a floor or wall slab). What it
cannot do: name what the vocabulary does not hold (the closest phrase wins), or split a segment that two objects
share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from lang3d_ros.grounding.config import ExtractionConfig


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


@dataclass
class SegmentLabels:
    """For S segments: label_index (S,) int64 into the vocabulary; label_prob (S, V) float64 softmax over the
    vocabulary; structure (S,) bool; structure_phrase (S,) int64 index into structure_labels (-1: not by phrase)."""

    label_index: np.ndarray
    label_prob: np.ndarray
    structure: np.ndarray
    structure_phrase: np.ndarray


def classify_segments(
    features: np.ndarray, box_size_m: np.ndarray, text: np.ndarray, config: ExtractionConfig
) -> SegmentLabels:
    """features (S, D) unit rows; box_size_m (S, 3) oriented-box sizes; text (V + T, D) unit rows of
    ``config.vocabulary`` then ``config.structure_labels`` -> SegmentLabels."""
    n_vocab = len(config.vocabulary)
    if text.shape[0] != n_vocab + len(config.structure_labels) or text.shape[1] != features.shape[1]:
        want = (n_vocab + len(config.structure_labels), features.shape[1])
        raise ValueError(f"text must be {want}, got {text.shape}")
    if box_size_m.shape != (len(features), 3):
        raise ValueError(f"box_size_m must be ({len(features)}, 3), got {box_size_m.shape}")
    cos = features.astype(np.float64) @ text.T.astype(np.float64)  # (S, V + T)
    logits = config.label_temperature * cos[:, :n_vocab]
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    best = cos.argmax(1) if len(cos) else np.zeros(0, np.int64)
    by_phrase = best >= n_vocab
    slab = box_size_m[:, :2].max(1) >= config.planar_min_extent_m
    slab &= box_size_m.min(1) <= config.planar_max_thickness_m
    return SegmentLabels(
        prob.argmax(1) if len(prob) else np.zeros(0, np.int64),
        prob,
        by_phrase | slab,
        np.where(by_phrase, best - n_vocab, -1),
    )
