"""What a semantics backend returns for one keyframe, and what fusion and Gaussian training consume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lang3d_ros.grounding.objects import LEVELS


@dataclass
class LevelMasks:
    """One semantic level of one keyframe.

    seg_map: (H, W) int32, pixel -> row of ``features`` (-1: no mask covers the pixel);
    features: (M, D) float32, L2-normalised embedding of mask i; scores: (M,) float32 mask quality
    (SAM's predicted IoU; 1.0 for ground truth); labels: optional (M,) str, ground-truth backend only;
    instance_ids: optional (M,) int64 ground-truth instance of mask i, ground-truth backend only.
    """

    seg_map: np.ndarray
    features: np.ndarray
    scores: np.ndarray
    labels: list[str] | None = None
    instance_ids: np.ndarray | None = None

    @staticmethod
    def empty(height: int, width: int, feature_dim: int) -> "LevelMasks":
        """A level where no mask survived: seg_map all -1, zero rows."""
        return LevelMasks(
            seg_map=np.full((height, width), -1, dtype=np.int32),
            features=np.zeros((0, feature_dim), dtype=np.float32),
            scores=np.zeros(0, dtype=np.float32),
        )

    @property
    def num_masks(self) -> int:
        return int(self.features.shape[0])

    def validate(self, height: int, width: int) -> None:
        if self.seg_map.shape != (height, width):
            raise ValueError(f"seg_map {self.seg_map.shape} != image {(height, width)}")
        if self.features.ndim != 2:
            raise ValueError(f"features must be (M, D), got {self.features.shape}")
        if self.seg_map.size and self.seg_map.max(initial=-1) >= self.features.shape[0]:
            raise ValueError("seg_map refers to a mask id beyond the feature rows")


@dataclass
class KeyframeSemantics:
    """The three levels (subpart, part, whole) of one keyframe, in ``LEVELS`` order."""

    levels: tuple[LevelMasks, LevelMasks, LevelMasks]

    def __post_init__(self) -> None:
        if len(self.levels) != len(LEVELS):
            raise ValueError(f"need {len(LEVELS)} levels {LEVELS}, got {len(self.levels)}")

    @property
    def feature_dim(self) -> int:
        return int(self.levels[0].features.shape[1])

    def level(self, name: str) -> LevelMasks:
        return self.levels[LEVELS.index(name)]
