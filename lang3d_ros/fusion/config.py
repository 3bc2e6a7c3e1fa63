"""PointFusion parameters (gradSLAM's defaults where it has them)."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

ConfidenceMode = Literal["radial", "gradslam"]
Backend = Literal["auto", "torch", "numba"]
CONFIDENCE_MODES = typing.get_args(ConfidenceMode)
BACKENDS = typing.get_args(Backend)


@dataclass
class FusionConfig:
    sigma: float = 0.6
    """Confidence alpha = exp(-r^2 / (2 sigma^2)); r depends on confidence_mode."""
    confidence_mode: ConfidenceMode = "radial"
    """"radial": r = pixel distance from the principal point / half image diagonal (Keller et al. 2013); "gradslam":
    r = |p_cam| in metres, as gradSLAM's get_alpha computes it (far points get ~0 weight)."""
    dist_threshold_m: float = 0.05
    """Projective association distance gate at close range (see depth_noise_at_1m_m)."""
    depth_noise_at_1m_m: float = 0.0015
    """Depth noise sigma(z) = depth_noise_at_1m_m * z^2 (structured light and stereo sensors: ~1.5 mm at 1 m, 4 cm
    at 5 m). The association gate widens with the pixel's depth z to sqrt(dist_threshold_m^2 + (association_sigmas
    * sigma(z))^2), capped at a block edge (block_voxels * voxel_size_m), so far samples of one surface average
    into one point instead of piling up as a layer of unconfirmed points that thickens walls by sigma. 0: gradSLAM's
    fixed gate."""
    association_sigmas: float = 3.0
    """Gate width in depth-noise sigmas (see depth_noise_at_1m_m)."""
    angle_threshold_deg: float = 20.0
    """Projective association normal gate."""
    min_depth_m: float = 0.1
    """Depth readings closer than this (metres) are invalid (sensor minimum range)."""
    max_depth_m: float = 8.0
    """Depth readings farther than this (metres) are invalid (noise grows with the square of depth)."""
    edge_normals: bool = True
    """A pixel whose right (lower) neighbour has no depth takes its normal's difference from its left (upper)
    neighbour instead of taking no part (gradSLAM: no part). Depth sensors drop pixels along silhouettes, so a
    small object loses most of its pixels otherwise (synthetic scenes: pixels usable on objects under 200 px 54 %
    -> 67 %). Pixels gradSLAM uses keep gradSLAM's normal; False: gradSLAM's rule."""
    voxel_size_m: float = 0.01
    """Duplicate merge grid."""
    merge_duplicates: bool = True
    """Unmatched pixels landing in an occupied voxel fuse into its point."""
    merge_neighbour_px: int = 1
    """... else into a gated point owning a pixel this close (0: off)."""
    block_voxels: int = 16
    """Voxels per block edge (power of two <= 16) for frustum culling; block >= dist gate."""
    index_delta_capacity: int = 262_144
    """New index entries kept in the small sorted level before a merge."""
    max_points: int = 4_000_000
    """Hard cap; lowest-confidence points go first."""
    evict_fraction: float = 0.05
    """At the cap, evict down to (1 - evict_fraction) * max_points at once."""
    stable_confidence: float = 1.5
    """Points below this after `prune_after_frames` frames are pruned."""
    prune_after_frames: int = 30
    """Frames after its birth at which a point still below stable_confidence is pruned."""
    prune_only_seen: bool = True
    """Prune an unconfirmed point only when a frame after its birth had it in view and fused nothing into it: inside
    that frame's image, the frame's depth at its pixel no nearer than the point minus the association gate (the
    sensor saw it or saw through it), and no pixel matched it. A point observed again is kept whatever its
    confidence (seen twice near the image border, where alpha is low); one no later frame could see (a table top
    passed once on a walk) waits for a frame that can; ``max_points`` still bounds the map. False: gradSLAM's
    rule, every unconfirmed point goes. Costs one float16 depth image per frame for ``prune_after_frames`` frames."""
    device: str = "auto"
    """Auto | cpu | cuda."""
    backend: Backend = "auto"
    """Fusion stages: "numba" = fused CPU loops (numba_backend.py, cpu_kernels.py), "torch" = tensor ops
    (torch_backend.py: any device, the reference); "auto" = numba on CPU when it is installed, else torch."""
    cpu_threads: int = 0
    """Threads for the numba kernels that split a frame by rows (0: torch's thread count)."""

    def gate_terms(self) -> tuple[float, float, float]:
        """(d0^2, k^2, cap^2) of the association gate: a pixel at depth z (m) matches points closer than
        sqrt(min(d0^2 + k^2 * z^4, cap^2)) metres (k = association_sigmas * depth_noise_at_1m_m)."""
        k = self.association_sigmas * self.depth_noise_at_1m_m
        return self.dist_threshold_m**2, k * k, (self.block_voxels * self.voxel_size_m) ** 2

    def validate(self) -> None:
        if self.depth_noise_at_1m_m < 0 or self.association_sigmas < 0:
            raise ValueError("depth_noise_at_1m_m and association_sigmas must be >= 0")
        if self.sigma <= 0 or self.dist_threshold_m <= 0 or self.voxel_size_m <= 0:
            raise ValueError("sigma, dist_threshold_m and voxel_size_m must be positive")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.confidence_mode not in CONFIDENCE_MODES:
            raise ValueError(f"confidence_mode must be one of {CONFIDENCE_MODES}, got {self.confidence_mode!r}")
        if not 0 < self.angle_threshold_deg <= 180:
            raise ValueError("angle_threshold_deg must be in (0, 180]")
        if not 0 <= self.min_depth_m < self.max_depth_m:
            raise ValueError("need 0 <= min_depth_m < max_depth_m")
        if self.max_points <= 0:
            raise ValueError("max_points must be positive")
        bv = self.block_voxels
        if bv < 1 or bv > 16 or bv & (bv - 1):
            raise ValueError(f"block_voxels must be a power of two in [1, 16], got {bv}")
        if bv * self.voxel_size_m < self.dist_threshold_m:
            raise ValueError(
                "block_voxels * voxel_size_m must be >= dist_threshold_m (frustum culling would miss matches)"
            )
        if self.cpu_threads < 0:
            raise ValueError("cpu_threads must be >= 0 (0: torch's thread count)")
        if self.merge_neighbour_px < 0:
            raise ValueError("merge_neighbour_px must be >= 0")
        if self.index_delta_capacity <= 0 or self.prune_after_frames <= 0:
            raise ValueError("index_delta_capacity and prune_after_frames must be positive")
        if not 0 <= self.evict_fraction < 1:
            raise ValueError("evict_fraction must be in [0, 1)")
