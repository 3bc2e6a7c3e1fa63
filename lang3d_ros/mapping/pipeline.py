"""The online mapping loop, independent of ROS: frames in, a queryable LanguageMap out.

Two worker threads keep the caller (a ROS callback) from ever blocking:
- the fusion worker integrates every frame's geometry and colour (``submit`` drops the newest frame, and counts
  it, when its queue is full: never an unbounded queue);
- the semantics worker runs SAM + CLIP (or the ground-truth backend) on keyframes and then fuses the keyframe
  with its language features, feeds the scene autoencoder, and hands the keyframe to the Gaussian trainer
  (with ``mapping.keyframes_in_order`` the fusion worker does that itself, in frame order: reproducible replays).
A frame that fails validation is rejected with its reason (counted, logged once per reason every
``mapping.reject_log_period_s``) and changes nothing. Every frame handed in is counted in exactly one place::

    frames_received == frames_fused + frames_dropped + frames_rejected + frames_pending

(``frames_pending``: queued or being processed; 0 after ``wait_idle``). A frame stamped more than
``mapping.sync.max_stamp_lag_s`` before the last keyframe (bag loop, simulator reset) resets the keyframe selector
with a warning; a frame whose intrinsics differ from the previous frame's is counted and warned about.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.mapping.keyframes import KeyframeSelector
from lang3d_ros.mapping.language_map import LanguageMap
from lang3d_ros.mapping.ratelog import ReasonLog

log = logging.getLogger(__name__)
_STOP = object()


DROP_QUEUE_FULL = "fusion queue full"
DROP_NOT_KEYFRAME = "not a keyframe (mapping.fuse_every_frame is false)"
DROP_STOPPED = "pipeline stopped"


@dataclass
class PipelineCounters:
    """Frame outcomes (see the module docstring for how they add up) and timings."""

    frames_received: int = 0
    frames_fused: int = 0
    frames_rejected: int = 0
    frames_dropped: int = 0
    keyframes: int = 0
    keyframes_without_semantics: int = 0
    """Keyframes fused as plain frames because the semantics queue was full (they are in frames_fused)."""
    selector_resets: int = 0
    intrinsics_changes: int = 0
    reject_reasons: Counter = field(default_factory=Counter)
    drop_reasons: Counter = field(default_factory=Counter)
    fusion_ms: float = 0.0
    """Running mean."""
    semantics_ms: float = 0.0


class MappingPipeline:
    def __init__(self, config, language_map: LanguageMap, semantics_backend, trainer=None, autoencoder=None):
        """config: Lang3DConfig. semantics_backend: has ``process(frame) -> KeyframeSemantics``.
        trainer: optional object with ``add_keyframe(frame, semantics)`` and ``status() -> dict``.
        autoencoder: optional SceneAutoencoder fed with every keyframe's mask features."""
        self.config = config
        self.map = language_map
        self.semantics = semantics_backend
        self.trainer = trainer
        self.autoencoder = autoencoder
        if autoencoder is not None:
            language_map.autoencoder = autoencoder
        self.selector = KeyframeSelector(config.mapping.keyframes)
        self.counters = PipelineCounters()
        self._lock = threading.Lock()
        self._frames: queue.Queue = queue.Queue(maxsize=config.mapping.frame_queue_size)
        self._keyframes: queue.Queue = queue.Queue(maxsize=config.mapping.keyframe_queue_size)
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self.last_error = ""
        self._say = ReasonLog(log, period_s=getattr(config.mapping, "reject_log_period_s", 5.0))
        self._last_intrinsics = None

    # ------------------------------------------------------------------ control
    def start(self) -> "MappingPipeline":
        if self._threads:
            return self
        self._threads = [
            threading.Thread(target=self._fusion_loop, name="lang3d-fusion", daemon=True),
            threading.Thread(target=self._semantics_loop, name="lang3d-semantics", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        for q in (self._frames, self._keyframes):
            while True:
                try:
                    q.put(_STOP, timeout=0.1)
                    break
                except queue.Full:
                    with contextlib.suppress(queue.Empty):  # make room for the stop marker
                        if q.get_nowait() is not _STOP:
                            with self._lock:
                                self.counters.frames_dropped += 1
                                self.counters.drop_reasons[DROP_STOPPED] += 1
        for t in self._threads:
            t.join(timeout_s)
        self._threads = []

    def submit(self, frame: Frame) -> bool:
        """Hand a frame to the fusion worker without blocking; False when it was dropped (queue full)."""
        with self._lock:
            self.counters.frames_received += 1
        try:
            self._frames.put_nowait(frame)
            return True
        except queue.Full:
            with self._lock:
                self.counters.frames_dropped += 1
                self.counters.drop_reasons[DROP_QUEUE_FULL] += 1
            self._say(f"frame dropped ({DROP_QUEUE_FULL})", "fusion is slower than the frame rate", logging.INFO)
            return False

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """Block until both queues are empty and every frame received is counted as fused, dropped or rejected
        (for tests, replay and evaluation)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self._lock:
                c = self.counters
                idle = self._busy == 0 and c.frames_received <= c.frames_fused + c.frames_dropped + c.frames_rejected
            if idle and self._frames.empty() and self._keyframes.empty():
                return True
            time.sleep(0.01)
        return False

    def process_now(self, frame: Frame) -> str:
        """Synchronous path (offline tools, tests): the same steps as the workers, in the caller's thread.
        Returns "" when fused, else the rejection or drop reason. An unexpected exception before the frame is
        counted is counted as a rejection ("internal error") and re-raised; a failure of the autoencoder or the
        Gaussian trainer after the keyframe is fused is logged and kept in ``last_error``, not raised."""
        with self._lock:
            self.counters.frames_received += 1
        try:
            return self._handle_frame(frame, inline=True)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._reject(frame, f"internal error: {self.last_error}")
            raise

    # ------------------------------------------------------------------ workers
    def _reject(self, frame: Frame, reason: str) -> str:
        key = reason.split(":")[0][:80]
        with self._lock:
            self.counters.frames_rejected += 1
            self.counters.reject_reasons[key] += 1
        self._say(f"frame rejected ({key})", f"frame {frame.index} (stamp {frame.stamp_ns} ns): {reason}")
        return reason

    def _check_stream(self, frame: Frame) -> None:
        """Time jumps back reset the keyframe selector; intrinsics changes are counted (the frame stays usable)."""
        last = self.selector.last
        lag_ns = int(self.config.mapping.sync.max_stamp_lag_s * 1e9)
        if last is not None and frame.stamp_ns < last.stamp_ns - lag_ns:
            self.selector.reset()
            with self._lock:
                self.counters.selector_resets += 1
            self._say(
                "time jumped back: keyframe selection restarts",
                f"frame stamp {(last.stamp_ns - frame.stamp_ns) * 1e-9:.3f} s before the last keyframe's",
            )
        K = frame.intrinsics
        if self._last_intrinsics is not None and K != self._last_intrinsics:
            with self._lock:
                self.counters.intrinsics_changes += 1
            self._say("camera intrinsics changed between frames", f"{self._last_intrinsics} -> {K}")
        self._last_intrinsics = K

    def _handle_frame(self, frame: Frame, inline: bool = False) -> str:
        try:
            frame.validate()
        except ValueError as exc:
            return self._reject(frame, str(exc))
        self._check_stream(frame)
        kf_reason = self.selector.reason(frame)
        if kf_reason:
            self.selector.accept(frame)
            if inline or self.config.mapping.keyframes_in_order:
                return self._handle_keyframe(frame)
            try:
                self._keyframes.put_nowait(frame)
                return ""
            except queue.Full:
                with self._lock:
                    self.counters.keyframes_without_semantics += 1
                log.debug("keyframe %d fused without semantics: semantics worker busy", frame.index)
        elif not self.config.mapping.fuse_every_frame:
            with self._lock:
                self.counters.frames_dropped += 1
                self.counters.drop_reasons[DROP_NOT_KEYFRAME] += 1
            return DROP_NOT_KEYFRAME
        t0 = time.perf_counter()
        report = self.map.integrate(frame)
        if not report.accepted:
            return self._reject(frame, report.reason)
        self._count_fused((time.perf_counter() - t0) * 1e3, semantics_ms=None)
        return ""

    def _count_fused(self, fusion_ms: float, semantics_ms: float | None) -> None:
        with self._lock:
            c = self.counters
            c.frames_fused += 1
            c.fusion_ms = fusion_ms if c.frames_fused == 1 else 0.9 * c.fusion_ms + 0.1 * fusion_ms
            if semantics_ms is not None:
                c.keyframes += 1
                c.semantics_ms = semantics_ms if c.keyframes == 1 else 0.8 * c.semantics_ms + 0.2 * semantics_ms

    def _handle_keyframe(self, frame: Frame) -> str:
        t0 = time.perf_counter()
        try:
            sem = self.semantics.process(frame)
        except ValueError as exc:
            return self._reject(frame, f"semantics: {exc}")
        t1 = time.perf_counter()
        report = self.map.integrate(frame, sem)
        if not report.accepted:
            return self._reject(frame, report.reason)
        self._count_fused((time.perf_counter() - t1) * 1e3, semantics_ms=(t1 - t0) * 1e3)
        try:  # the frame is fused and counted: a failure from here on is the learner's, logged, not the frame's
            if self.autoencoder is not None:
                import torch

                feats = [lv.features for lv in sem.levels if lv.num_masks]
                if feats:
                    self.autoencoder.add_features(torch.as_tensor(np.concatenate(feats)))
                    self.autoencoder.train_steps(self.config.mapping.autoencoder_steps_per_keyframe)
            if self.trainer is not None:
                self.trainer.add_keyframe(frame, sem)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("keyframe %d: autoencoder or Gaussian trainer failed (the frame is fused)", frame.index)
        return ""

    def _loop(self, q: queue.Queue, handle) -> None:
        while True:
            item = q.get()
            if item is _STOP:
                return
            with self._lock:
                self._busy += 1
            try:
                handle(item)
            except Exception as exc:  # a worker must survive anything a frame can do to it
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._reject(item, f"internal error: {self.last_error}")
                log.exception("frame %d failed", item.index)
            finally:
                with self._lock:
                    self._busy -= 1

    def _fusion_loop(self) -> None:
        self._loop(self._frames, self._handle_frame)

    def _semantics_loop(self) -> None:
        self._loop(self._keyframes, self._handle_keyframe)

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        """Counters and map size. Frame keys (they add up: received = fused + dropped + rejected + pending):
        ``frames_received``, ``frames_fused``, ``frames_dropped``, ``frames_rejected``, ``frames_pending``, with
        ``drop_reasons`` and ``reject_reasons`` (dicts reason -> count). Also ``keyframes`` (fused with semantics),
        ``keyframes_without_semantics`` (fused as plain frames, semantics busy), ``selector_resets`` (time jumped
        back), ``intrinsics_changes``, ``source``, ``num_points``, ``fusion_ms``, ``semantics_ms``, ``memory_mb``
        and the trainer's ``num_gaussians``, ``training_*``. A node folds in the FrameAssembler's ``status()``
        with ``combine_intake_status`` (its frames_* count colour images before they become frames)."""
        # counters under the pipeline lock, the map's size after it: memory_mb waits for the map lock, which a
        # keyframe holds for its whole fusion; under the pipeline lock that wait blocked submit(), and with it the
        # sensor callbacks (seconds of backlog in a replay)
        with self._lock:
            c = self.counters
            pending = c.frames_received - c.frames_fused - c.frames_dropped - c.frames_rejected
            out = {
                "frames_received": c.frames_received,
                "frames_fused": c.frames_fused,
                "frames_rejected": c.frames_rejected,
                "frames_dropped": c.frames_dropped,
                "frames_pending": pending,
                "keyframes": c.keyframes,
                "keyframes_without_semantics": c.keyframes_without_semantics,
                "selector_resets": c.selector_resets,
                "intrinsics_changes": c.intrinsics_changes,
                "fusion_ms": c.fusion_ms,
                "semantics_ms": c.semantics_ms,
                "reject_reasons": dict(c.reject_reasons),
                "drop_reasons": dict(c.drop_reasons),
            }
        out.update(source=self.map.source, num_points=self.map.num_points, memory_mb=self.map.memory_mb())
        t = self.trainer.status() if self.trainer is not None else {}
        out.update(
            num_gaussians=int(t.get("num_gaussians", 0)),
            training_state=str(t.get("state", "disabled")),
            training_iterations=int(t.get("iterations", 0)),
            training_loss=float(t.get("loss", float("nan"))),
            training_psnr_db=float(t.get("psnr", float("nan"))),
        )
        return out


def combine_intake_status(
    pipeline_status: dict, assembler_status: dict, colour_messages_rejected: dict[str, int] | None = None
) -> dict:
    """A node's frame counters: ``MappingPipeline.status()`` with the FrameAssembler's ``status()`` folded in, so
    that ``frames_received == frames_fused + frames_dropped + frames_rejected + frames_pending`` counts colour images
    from the topic on. ``colour_messages_rejected``: colour messages the node could not decode (reason -> count);
    they never reached the assembler. Non-colour faults stay in their own keys (``depth_dropped``,
    ``poses_rejected``, ``clock_resets``, ...). Returns a new dict; reason dicts are merged by key."""
    p, a = pipeline_status, assembler_status
    decode = dict(colour_messages_rejected or {})
    n_decode = sum(decode.values())
    out = dict(p)
    out["frames_received"] = a["colour_received"] + n_decode
    out["frames_dropped"] = p["frames_dropped"] + a["frames_dropped"]
    out["frames_rejected"] = p["frames_rejected"] + a["frames_rejected"] + n_decode
    out["frames_pending"] = p["frames_pending"] + a["frames_pending"] + (a["frames_assembled"] - p["frames_received"])
    drops, rejects = Counter(p.get("drop_reasons", {})), Counter(p.get("reject_reasons", {}))
    drops.update(a["drop_reasons"])
    rejects.update(a["reject_reasons"])
    rejects.update(decode)
    out["drop_reasons"], out["reject_reasons"] = dict(drops), dict(rejects)
    for key in (
        "depth_received",
        "depth_dropped",
        "poses_received",
        "poses_rejected",
        "pose_jumps_followed",
        "clock_resets",
    ):
        out[key] = a[key]
    out["camera_info_changes"] = a["intrinsics_changes"]
    return out
