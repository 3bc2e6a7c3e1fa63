"""PointFusion parameters (gradSLAM's defaults where it has them)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FusionConfig:
    sigma: float = 0.6  # confidence alpha = exp(-r^2 / (2 sigma^2)), r = normalised radial pixel distance
    dist_threshold_m: float = 0.05  # projective association distance gate
    angle_threshold_deg: float = 20.0  # projective association normal gate
    min_depth_m: float = 0.1
    max_depth_m: float = 8.0
    voxel_size_m: float = 0.01  # duplicate merge grid
    max_points: int = 4_000_000  # hard cap; oldest unstable points go first
    stable_confidence: float = 1.5  # points below this after `prune_after_frames` frames are pruned
    prune_after_frames: int = 30
    device: str = "auto"  # auto | cpu | cuda

    def validate(self) -> None:
        if self.sigma <= 0 or self.dist_threshold_m <= 0 or self.voxel_size_m <= 0:
            raise ValueError("sigma, dist_threshold_m and voxel_size_m must be positive")
        if not 0 < self.angle_threshold_deg <= 180:
            raise ValueError("angle_threshold_deg must be in (0, 180]")
        if not 0 <= self.min_depth_m < self.max_depth_m:
            raise ValueError("need 0 <= min_depth_m < max_depth_m")
        if self.max_points <= 0:
            raise ValueError("max_points must be positive")
