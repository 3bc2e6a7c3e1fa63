"""Config of the ROS-side features: /diagnostics thresholds and map autosave (composed into ``RosConfig``).

Plain dataclasses (no ROS import), so ``lang3d config --describe`` and the library read them without rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DiagnosticsConfig:
    """What the nodes publish on /diagnostics (diagnostic_msgs/DiagnosticArray) and when a value is WARN or ERROR."""

    enabled: bool = True
    """Publish /diagnostics while the node is active."""
    period_s: float = 1.0
    """Publish period of /diagnostics (s); REP 107 aggregators expect about 1 Hz."""
    window_s: float = 10.0
    """Rates (fusion rate, drop and reject fractions) are measured over this sliding window (s)."""
    min_fusion_hz_warn: float = 0.5
    """WARN when frames arrive but fewer than this many are fused per second over the window."""
    drop_fraction_warn: float = 0.3
    """WARN when more than this fraction of the frames received in the window were dropped or rejected."""
    drop_fraction_error: float = 0.8
    """ERROR when more than this fraction of the frames received in the window were dropped or rejected."""
    semantics_latency_warn_ms: float = 5000.0
    """WARN when the running mean of 2D semantics per keyframe exceeds this (ms)."""
    semantics_latency_error_ms: float = 30000.0
    """ERROR when the running mean of 2D semantics per keyframe exceeds this (ms)."""
    memory_warn_mb: float = 8000.0
    """WARN when the memory held by the map exceeds this (MiB)."""
    memory_error_mb: float = 16000.0
    """ERROR when the memory held by the map exceeds this (MiB)."""
    top_reasons: int = 3
    """How many of the most frequent drop / reject reasons are listed."""

    def validate(self) -> None:
        if self.period_s <= 0 or self.window_s <= 0 or self.top_reasons < 0:
            raise ValueError("diagnostics: period_s and window_s must be positive, top_reasons non-negative")
        if not 0 <= self.drop_fraction_warn <= self.drop_fraction_error <= 1:
            raise ValueError("diagnostics: need 0 <= drop_fraction_warn <= drop_fraction_error <= 1")
        if not 0 < self.semantics_latency_warn_ms <= self.semantics_latency_error_ms:
            raise ValueError("diagnostics: need 0 < semantics_latency_warn_ms <= semantics_latency_error_ms")
        if not 0 < self.memory_warn_mb <= self.memory_error_mb:
            raise ValueError("diagnostics: need 0 < memory_warn_mb <= memory_error_mb")


@dataclass
class AutosaveConfig:
    """Periodic and shutdown saves of the live map into ``<ros.map_dir>/autosave``, atomically, keeping the last N."""

    period_s: float = 300.0
    """Save the live map every period_s seconds while mapping (only when it changed); 0 = never periodically."""
    on_shutdown: bool = True
    """Save on a clean shutdown: SIGINT, SIGTERM or the lifecycle shutdown transition."""
    keep: int = 5
    """Keep this many autosaves; older ones are deleted after each successful save."""
    resume: bool = False
    """On configure, load the newest autosave into the live map and continue mapping on top of it."""

    def validate(self) -> None:
        if self.period_s < 0 or self.keep < 1:
            raise ValueError("autosave: period_s must be >= 0 (0 = off) and keep >= 1")
