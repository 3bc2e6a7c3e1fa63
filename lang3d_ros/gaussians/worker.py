"""GaussianTrainer: a background thread that trains language Gaussians online beside mapping.

Keyframes (Frame + optional KeyframeSemantics) arrive through ``add_keyframe`` into a bounded queue
(a full queue drops the keyframe and counts it). The worker first trains RGB for ``rgb_iterations``
(densifying), then, once keyframes with semantics exist, the language latents for ``language_iterations``
with RGB frozen (the keyframes' latent targets re-encoded with the current autoencoder every ``REENCODE_EVERY``
iterations), then measures each Gaussian's language coverage (``model.coverage``, the query gate) and reports
``done``; each iteration draws one stored keyframe at random. Without an initial
model it initialises from the first keyframe's depth (back-projected, every ``init_stride``-th pixel); with
``grow_from_keyframes`` each later keyframe of the RGB phase adds Gaussians where the model does not cover its view.
Instance codes: with a ``label_source`` (a callable returning the map's labelled points, see ``LabelSource``) the
worker re-assigns every Gaussian's codes from the nearest labelled points every ``code_refresh_every`` iterations
and once when training is done (``refresh_codes``); it calls the source without holding its own lock.
States: idle (no keyframes yet), training_rgb, training_language, assigning_codes (the final instance codes),
paused, done, failed.
Cannot: resume RGB training after the language phase started; keyframes with semantics that arrive after
``done`` are stored but not trained on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.device import resolve_device
from lang3d_ros.gaussians.config import GaussianConfig
from lang3d_ros.gaussians.instances import codes_from_points
from lang3d_ros.gaussians.model import GaussianModel
from lang3d_ros.gaussians.ply import save_gaussians
from lang3d_ros.gaussians.training import (
    FeatureEncoder,
    GaussianOptimizer,
    Keyframe,
    language_coverage,
    make_keyframe,
    reencode_keyframe,
    scene_extent,
)
from lang3d_ros.geometry.transforms import transform_points
from lang3d_ros.semantics.types import KeyframeSemantics

log = logging.getLogger(__name__)
REENCODE_EVERY = 100  # language iterations between re-encodings of the keyframes' latent targets
LabelSource = Callable[[], "tuple[np.ndarray, np.ndarray, np.ndarray | None]"]
"""() -> (points_xyz (M, 3) float32 map frame, labels (M, 3) int32 segment id per level (-1 none), weights (M, 3)
vote weight per level or None): the fused map's labelled points, e.g. PointMap.points_xyz with labels(level) and
label_weight(level) stacked over the three levels."""


def points_from_frame(frame: Frame, stride: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Back-project every ``stride``-th valid depth pixel -> (points (M, 3) world metres, colours (M, 3) uint8)."""
    v, u = np.mgrid[0 : frame.height : stride, 0 : frame.width : stride]
    z = frame.depth_m[v, u]
    ok = np.isfinite(z) & (z > 0)
    pts = frame.intrinsics.backproject(u[ok], v[ok], z[ok])
    return transform_points(frame.T_world_cam, pts).astype(np.float32), frame.rgb[v[ok], u[ok]]


class GaussianTrainer:
    """Online trainer; all public methods are thread-safe."""

    def __init__(
        self,
        config: GaussianConfig | None = None,
        model: GaussianModel | None = None,
        encoder: FeatureEncoder | None = None,
        init_stride: int | None = None,
        seed: int = 0,
        label_source: LabelSource | None = None,
    ):
        self.cfg = config or GaussianConfig()
        self.cfg.validate()
        self.device = resolve_device(self.cfg.device)
        self.model = None if model is None else model.clone(self.device)
        self.encoder = encoder
        self.init_stride = self.cfg.init_stride_px if init_stride is None else int(init_stride)
        self.label_source = label_source
        self._codes_at = -1  # training iteration of the last code refresh
        self._coded = 0
        self._grown = 0
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.keyframes: list[Keyframe] = []
        self._queue: queue.Queue = queue.Queue(maxsize=self.cfg.queue_size)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._thread: threading.Thread | None = None
        self._opt: GaussianOptimizer | None = None
        self._state = "idle"
        self._received = self._dropped = 0
        self._loss = float("nan")
        self._psnr = float("nan")
        self._error = ""

    # producer side ---------------------------------------------------------------------------------
    def add_keyframe(self, frame: Frame, semantics: KeyframeSemantics | None = None) -> bool:
        """Queue a keyframe (non-blocking). False when the queue is full (the drop is counted)."""
        frame.validate()
        if semantics is not None and self.encoder is None:
            raise ValueError("semantics given but the trainer has no encoder (M, D) -> (M, d)")
        with self._lock:
            self._received += 1
        try:
            self._queue.put_nowait((frame, semantics))
            return True
        except queue.Full:
            with self._lock:
                self._dropped += 1
            return False

    # control ---------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise ValueError("trainer already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gaussian-trainer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._running.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def wait_for(self, states: tuple[str, ...], timeout: float = 60.0) -> bool:
        """Block until status()["state"] is one of ``states``; False on timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.status()["state"] in states:
                return True
            time.sleep(0.02)
        return False

    def status(self) -> dict:
        with self._lock:
            opt = self._opt
            return {
                "state": "paused"
                if not self._running.is_set() and self._state not in ("done", "failed")
                else self._state,
                "iterations": 0 if opt is None else opt.rgb_iterations + opt.language_iterations,
                "rgb_iterations": 0 if opt is None else opt.rgb_iterations,
                "language_iterations": 0 if opt is None else opt.language_iterations,
                "loss": self._loss,
                "psnr": self._psnr,
                "num_gaussians": 0 if self.model is None else self.model.num_gaussians,
                "keyframes": len(self.keyframes),
                "received": self._received,
                "dropped": self._dropped,
                "grown": self._grown,
                "coded_gaussians": self._coded,
                "error": self._error,
            }

    def snapshot(self) -> GaussianModel:
        """A detached copy of the current model (ValueError before initialisation)."""
        with self._lock:
            if self.model is None:
                raise ValueError("no model yet: no keyframe has arrived")
            return self.model.clone()

    def checkpoint(self, path: str | Path, metadata: dict | None = None, autoencoder_state: dict | None = None) -> Path:
        """Save the current model as a language-Gaussian PLY with the training status in its metadata."""
        with self._lock:
            model = self.snapshot()
            status = self.status()
        meta = {"trainer": {k: v for k, v in status.items() if isinstance(v, (int, str))}, **(metadata or {})}
        return save_gaussians(path, model, meta, autoencoder_state)

    # instance codes --------------------------------------------------------------------------------
    def refresh_codes(self) -> int:
        """Re-assign every Gaussian's instance codes from ``label_source`` (nearest labelled points); returns how many
        Gaussians have a code on some level. ValueError without a label source or a model. The source is called
        without this trainer's lock held; a model resized meanwhile (densified) is coded at the next refresh."""
        if self.label_source is None:
            raise ValueError("the trainer has no label_source (the map's labelled points)")
        with self._lock:
            if self.model is None:
                raise ValueError("no model yet: no keyframe has arrived")
            means = self.model.means.detach().cpu().numpy()
            it = 0 if self._opt is None else self._opt.rgb_iterations + self._opt.language_iterations
        pts, labels, weights = self.label_source()
        codes = codes_from_points(means, pts, labels, weights, self.cfg.code_neighbours, self.cfg.code_max_distance_m)
        with self._lock:
            if self.model.num_gaussians != len(means):
                return self._coded
            self.model.codes = torch.from_numpy(codes).to(self.model.device)
            self._codes_at = it
            self._coded = int((codes >= 0).any(axis=1).sum())
            return self._coded

    def _codes_due(self) -> bool:
        with self._lock:
            if self.label_source is None or self._opt is None:
                return False
            it = self._opt.rgb_iterations + self._opt.language_iterations
            if it == self._codes_at:
                return False
            return (
                self._state in ("done", "assigning_codes") or it - max(self._codes_at, 0) >= self.cfg.code_refresh_every
            )

    # worker ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _grow(self, frame: Frame, kf: Keyframe) -> None:
        """Add Gaussians for ``frame``'s pixels the model does not cover (rendered alpha < grow_alpha_threshold)."""
        out = self.model.render_rgb(kf.viewmat[None], kf.K[None], kf.width, kf.height, self.cfg)
        alpha = out.alpha[0, ..., 0].cpu().numpy()
        s = self.cfg.downscale
        v, u = np.mgrid[0 : kf.height * s : self.init_stride, 0 : kf.width * s : self.init_stride]
        v, u = v.ravel(), u.ravel()
        uncovered = alpha[v // s, u // s] < self.cfg.grow_alpha_threshold
        z = frame.depth_m[v, u]
        ok = uncovered & np.isfinite(z) & (z > 0)
        if int(ok.sum()) < 4:
            return
        pts = transform_points(frame.T_world_cam, frame.intrinsics.backproject(u[ok], v[ok], z[ok])).astype(np.float32)
        new = GaussianModel.from_points(
            pts, frame.rgb[v[ok], u[ok]], config=self.cfg, device=self.device, seed=self.seed
        )
        self._opt.add_gaussians(new)
        self._grown += new.num_gaussians

    def _drain(self) -> None:
        while True:
            try:
                frame, sem = self._queue.get_nowait()
            except queue.Empty:
                return
            kf = make_keyframe(frame, self.cfg.downscale, self.device, sem, self.encoder)
            with self._lock:
                if self.model is None:
                    pts, cols = points_from_frame(frame, self.init_stride)
                    self.model = GaussianModel.from_points(
                        pts, cols, config=self.cfg, device=self.device, seed=self.seed
                    )
                    grow = False
                else:
                    grow = self.cfg.grow_from_keyframes and self._opt is not None and self._opt.lang_opt is None
                self.keyframes.append(kf)
                if self._opt is None:
                    self._opt = GaussianOptimizer(
                        self.model, self.cfg, scene_extent(self.model, self.keyframes), self.seed
                    )
                elif self._opt.rgb_iterations < self.cfg.densify_from:
                    self._opt.extent = scene_extent(self.model, self.keyframes)
                if grow:
                    self._grow(frame, kf)

    def _step(self) -> None:
        opt, cfg = self._opt, self.cfg
        lang = [k for k in self.keyframes if k.lang_target is not None]
        if opt.rgb_iterations < cfg.rgb_iterations and opt.lang_opt is None:
            self._state = "training_rgb"
            r = opt.rgb_step(self.keyframes[int(self.rng.integers(len(self.keyframes)))])
            self._loss, self._psnr = r["loss"], r["psnr"]
            it = opt.rgb_iterations
        elif lang and opt.language_iterations < cfg.language_iterations:
            self._state = "training_language"
            if self.encoder is not None and opt.language_iterations % REENCODE_EVERY == 0:
                for k in lang:  # the autoencoder trains on while mapping runs: targets follow it
                    reencode_keyframe(k, self.encoder)
            self._loss = opt.language_step(lang[int(self.rng.integers(len(lang)))])
            it = opt.language_iterations
        else:
            if lang and opt.language_iterations > 0 and self.model.coverage is None:
                self.model.coverage = language_coverage(self.model, lang, cfg).detach()
            # "done" only once the final instance codes are assigned: a waiter on "done" reads the final model
            final = opt.rgb_iterations + opt.language_iterations
            self._state = "assigning_codes" if self.label_source is not None and self._codes_at != final else "done"
            return
        if it % cfg.log_every == 0:
            log.info(
                "%s iteration %d: loss %.4f psnr %.2f dB, %d Gaussians",
                self._state,
                it,
                self._loss,
                self._psnr,
                self.model.num_gaussians,
            )

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._running.wait(0.05):
                    continue
                self._drain()
                with self._lock:
                    if self._opt is None:
                        self._state = "idle"
                    else:
                        self._step()
                if self._codes_due():
                    self.refresh_codes()
                if self._state in ("idle", "done"):
                    time.sleep(0.02)
        except Exception as exc:  # noqa: BLE001 - the worker reports and stops instead of dying silently
            log.exception("Gaussian training failed")
            with self._lock:
                self._state, self._error = "failed", f"{type(exc).__name__}: {exc}"
