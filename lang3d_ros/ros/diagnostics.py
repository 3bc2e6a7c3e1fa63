"""/diagnostics for the lang3d nodes: intake, semantics, map, models and training as diagnostic_msgs/DiagnosticStatus
entries (OK / WARN / ERROR by the thresholds of ``DiagnosticsConfig``).

``DiagnosticsMonitor.update(status, now_s)`` turns the node's status snapshots into ``Diagnostic`` items (plain
dataclasses, testable without ROS); ``to_msg`` converts them. Rates are measured over a sliding window of
snapshots, so a node that has just started reports the rate since its first snapshot. Colour images the middleware
reports lost in transport (``lost_in_transport``, DDS message-lost events) count as received and lost in the
window's fraction. What it cannot do: see samples that a full subscription history overwrote before the node took
them, or losses the middleware does not report; those appear in no counter.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal

from lang3d_ros.ros.config import DiagnosticsConfig

Level = Literal["OK", "WARN", "ERROR"]
_ORDER = {"OK": 0, "WARN": 1, "ERROR": 2}


@dataclass
class Diagnostic:
    """One DiagnosticStatus: ``name`` "<node>: <part>", level, a one-line message and key/value pairs."""

    name: str
    level: Level
    message: str
    values: dict[str, str] = field(default_factory=dict)


def _worst(*levels: Level) -> Level:
    return max(levels, key=_ORDER.__getitem__)


@dataclass
class _Snapshot:
    t_s: float
    received: int
    fused: int
    lost: int  # dropped + rejected + colour images lost in transport


class DiagnosticsMonitor:
    """Keeps the snapshots of the last ``window_s`` seconds and grades each part of the node."""

    def __init__(self, config: DiagnosticsConfig, node_name: str):
        self.config = config
        self.node_name = node_name
        self._history: deque[_Snapshot] = deque()

    def update(self, status: dict, now_s: float) -> list[Diagnostic]:
        """status: the node's status dict (MappingPipeline.status() keys plus ``reasons`` (Counter of drop / reject
        reasons), ``queue_frames``, ``queue_keyframes``, ``num_instances``, ``text_encoder``, ``semantics_backend``,
        ``llm_status``); missing keys are reported as unknown. now_s: a monotonic clock (s)."""
        cfg = self.config
        transport = int(dict(status.get("lost_in_transport") or {}).get("colour image", 0))
        snap = _Snapshot(
            now_s,
            int(status.get("frames_received", 0)) + transport,
            int(status.get("frames_fused", 0)),
            int(status.get("frames_dropped", 0)) + int(status.get("frames_rejected", 0)) + transport,
        )
        self._history.append(snap)
        while len(self._history) > 2 and now_s - self._history[1].t_s >= cfg.window_s:
            self._history.popleft()
        first = self._history[0]
        span_s = max(now_s - first.t_s, 1e-9)
        received = snap.received - first.received
        fused = snap.fused - first.fused
        lost = snap.lost - first.lost
        return [
            self._intake(status, received, fused, lost, span_s),
            self._semantics(status),
            self._map(status),
            self._models(status),
            self._training(status),
        ]

    def _name(self, part: str) -> str:
        return f"{self.node_name}: {part}"

    def _intake(self, st: dict, received: int, fused: int, lost: int, span_s: float) -> Diagnostic:
        cfg = self.config
        fusion_hz = fused / span_s if span_s > 1e-6 else 0.0
        lost_fraction = lost / received if received > 0 else 0.0
        level: Level = "OK"
        notes = []
        if received > 0 and lost_fraction > cfg.drop_fraction_warn:
            level = "ERROR" if lost_fraction > cfg.drop_fraction_error else "WARN"
            notes.append(f"{lost_fraction:.0%} of frames dropped or rejected")  # or lost in transport: see values
        if received > 0 and fusion_hz < cfg.min_fusion_hz_warn:
            level = _worst(level, "WARN")
            notes.append(f"fusing {fusion_hz:.2f} Hz")
        reasons = Counter(st.get("reasons", {}))
        top = "; ".join(f"{r} ({n})" for r, n in reasons.most_common(cfg.top_reasons)) or "none"
        values = {
            "fusion_rate_hz": f"{fusion_hz:.2f}",
            "frames_received": str(st.get("frames_received", 0)),
            "frames_fused": str(st.get("frames_fused", 0)),
            "frames_dropped": str(st.get("frames_dropped", 0)),
            "frames_rejected": str(st.get("frames_rejected", 0)),
            "window_lost_fraction": f"{lost_fraction:.3f}",
            "top_reasons": top,
            "queue_frames": str(st.get("queue_frames", "unknown")),
            "queue_keyframes": str(st.get("queue_keyframes", "unknown")),
            "fusion_ms": f"{float(st.get('fusion_ms', 0.0)):.1f}",
            "frames_pending": str(st.get("frames_pending", 0)),
            "depth_received": str(st.get("depth_received", "unknown")),
            "poses_received": str(st.get("poses_received", "unknown")),
        }
        # every reason with its count since start (top_reasons keeps only the most frequent): "dropped: <reason>"
        # and "rejected: <reason>" count colour images, the others depth images and pose messages
        for prefix, key in (
            ("dropped", "drop_reasons"),
            ("rejected", "reject_reasons"),
            ("depth dropped", "depth_dropped"),
            ("pose rejected", "poses_rejected"),
            ("lost in transport", "lost_in_transport"),
        ):
            for reason, n in sorted(dict(st.get(key) or {}).items()):
                values[f"{prefix}: {reason}"] = str(n)
        msg = ", ".join(notes) if notes else f"fusing {fusion_hz:.1f} Hz" if received else "no frames in the window"
        return Diagnostic(self._name("intake"), level, msg, values)

    def _semantics(self, st: dict) -> Diagnostic:
        cfg = self.config
        ms = float(st.get("semantics_ms", 0.0))
        level: Level = "OK"
        if ms > cfg.semantics_latency_warn_ms:
            level = "ERROR" if ms > cfg.semantics_latency_error_ms else "WARN"
        return Diagnostic(
            self._name("semantics"),
            level,
            f"{ms:.0f} ms per keyframe",
            {
                "latency_ms_per_keyframe": f"{ms:.1f}",
                "keyframes": str(st.get("keyframes", 0)),
                "queue_keyframes": str(st.get("queue_keyframes", "unknown")),
            },
        )

    def _map(self, st: dict) -> Diagnostic:
        cfg = self.config
        mb = float(st.get("memory_mb", 0.0))
        level: Level = "ERROR" if mb > cfg.memory_error_mb else "WARN" if mb > cfg.memory_warn_mb else "OK"
        n = int(st.get("num_points", 0))
        return Diagnostic(
            self._name("map"),
            level,
            f"{n} points, {mb:.0f} MiB",
            {
                "num_points": str(n),
                "num_instances": str(st.get("num_instances", "unknown")),
                "memory_mb": f"{mb:.1f}",
                "source": str(st.get("source", "live")),
            },
        )

    def _models(self, st: dict) -> Diagnostic:
        llm = str(st.get("llm_status", "unknown"))
        level: Level = "WARN" if llm.startswith("fallback") else "OK"
        return Diagnostic(
            self._name("models"),
            level,
            f"3D-LLM {llm}",
            {
                "text_encoder": str(st.get("text_encoder", "unknown")),
                "semantics_backend": str(st.get("semantics_backend", "unknown")),
                "llm": llm,
            },
        )

    def _training(self, st: dict) -> Diagnostic:
        state = str(st.get("training_state", "disabled"))
        level: Level = "ERROR" if state == "error" else "OK"
        return Diagnostic(
            self._name("training"),
            level,
            state,
            {
                "state": state,
                "iterations": str(st.get("training_iterations", 0)),
                "num_gaussians": str(st.get("num_gaussians", 0)),
                "loss": f"{float(st.get('training_loss', float('nan'))):.4g}",
                "psnr_db": f"{float(st.get('training_psnr_db', float('nan'))):.2f}",
            },
        )


def to_msg(items: list[Diagnostic], header):
    """Diagnostic items -> diagnostic_msgs/DiagnosticArray (hardware_id "lang3d")."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    level_byte = {"OK": DiagnosticStatus.OK, "WARN": DiagnosticStatus.WARN, "ERROR": DiagnosticStatus.ERROR}
    out = DiagnosticArray(header=header)
    for d in items:
        out.status.append(
            DiagnosticStatus(
                level=level_byte[d.level],
                name=d.name,
                message=d.message,
                hardware_id="lang3d",
                values=[KeyValue(key=k, value=v) for k, v in d.values.items()],
            )
        )
    return out
