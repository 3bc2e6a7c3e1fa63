"""Parameters of the online mapping loop: time sync, keyframes, worker queues."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SyncConfig:
    slop_s: float = 0.02
    """Colour/depth stamps paired when closer than this (approximate time sync)."""
    pose_max_gap_s: float = 0.2
    """Interpolate the pose only between samples at most this far apart."""
    pose_wait_s: float = 0.5
    """How long an image pair waits for a later pose before it is dropped."""
    buffer_size: int = 30
    """Per stream; older messages are discarded."""


@dataclass
class KeyframeConfig:
    min_translation_m: float = 0.15
    """A frame is a keyframe when the camera moved this much since the last one."""
    min_rotation_deg: float = 10.0
    """Or turned this much."""
    max_overlap: float = 0.7
    """Or sees less than this fraction of what the last keyframe saw."""
    max_interval_s: float = 5.0
    """Or this long passed."""
    overlap_stride_px: int = 16
    """Pixel grid used to estimate view overlap."""


@dataclass
class MappingConfig:
    sync: SyncConfig = field(default_factory=SyncConfig)
    """Pairing of colour, depth and pose streams."""
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    """When a frame becomes a keyframe (semantics run on keyframes only)."""
    frame_queue_size: int = 2
    """Frames waiting for fusion; a full queue drops the newest frame (counted)."""
    keyframe_queue_size: int = 4
    """Keyframes waiting for semantics."""
    fuse_every_frame: bool = True
    """False: fuse keyframes only (lighter CPU load)."""
    autoencoder_steps_per_keyframe: int = 50
    """Scene-autoencoder training steps after each keyframe's masks are added."""
    train_gaussians: bool = True
    """Train language Gaussians beside mapping (slow on a CPU)."""
    gaussians_start_keyframes: int = 5
    """Start language-Gaussian training after this many keyframes."""
