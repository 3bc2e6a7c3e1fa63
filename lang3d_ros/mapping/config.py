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
    """Per stream; older messages are discarded (counted as dropped "buffer full")."""
    max_stamp_lag_s: float = 2.0
    """An image or pose stamped more than this before the newest image is stale and rejected; images that keep
    arriving that far back (``clock_jump_confirm`` in a row) mean the clock jumped back instead."""
    max_pose_lead_s: float = 2.0
    """A pose stamped more than this after both the newest image and the newest accepted pose is rejected (future
    stamp); poses that run ahead of a paused camera sample by sample are kept."""
    clock_jump_confirm: int = 4
    """Consecutive images (colour or depth) stamped more than ``max_stamp_lag_s`` back that reset the synchronizer
    (bag loop, simulator reset): buffers and pose history are cleared, with a warning, and the held images and
    poses are replayed on the new clock. A late pair delivered by a stalled driver is only rejected."""
    pose_max_speed_m_s: float = 10.0
    """A pose sample farther from the accepted sample nearest in time than ``pose_max_jump_m`` + this speed times
    their time difference is rejected (pose jump)."""
    pose_max_angular_speed_rad_s: float = 10.0
    """Likewise for rotation: ``pose_max_jump_rad`` + this rate times the time difference."""
    pose_max_jump_m: float = 0.5
    """Translation always allowed between two pose samples (noise, relocalisation corrections)."""
    pose_max_jump_rad: float = 0.5
    """Rotation always allowed between two pose samples."""
    pose_follow_jump_s: float = 2.0
    """Rejected pose samples that stay consistent among themselves for this long are followed (a relocalised pose
    source): the pose history restarts from them, with a warning. 0 = never follow a jump."""


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
    reject_log_period_s: float = 5.0
    """Rejected and dropped frames are logged once per reason per this period (with the count since)."""
    keyframe_queue_size: int = 4
    """Keyframes waiting for semantics."""
    fuse_every_frame: bool = True
    """False: fuse keyframes only (lighter CPU load)."""
    keyframes_in_order: bool = False
    """True: the fusion worker runs each keyframe's semantics and fuses it itself, in frame order, so the map
    depends only on the frames and not on how two workers interleave (replays and evaluations: a rerun gives the
    same map). Frames wait meanwhile (dropped, counted, once ``frame_queue_size`` is full): for bag replays at a
    modest rate, not for a robot at sensor rate."""
    autoencoder_steps_per_keyframe: int = 50
    """Scene-autoencoder training steps after each keyframe's masks are added."""
    train_gaussians: bool = True
    """Train language Gaussians beside mapping (slow on a CPU)."""
    gaussians_start_keyframes: int = 5
    """Start language-Gaussian training after this many keyframes."""
