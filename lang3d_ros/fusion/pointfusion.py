"""Online PointFusion (gradSLAM / Keller et al. 2013) of RGB-D frames, with 3-level segment labels per point.

Per accepted frame: vertex and normal maps (``vertex.py``), confidence alpha per pixel, projective
association of the map points near the frame into the live image (distance gate, normal-angle gate,
many-to-one resolved by highest confidence, then smallest squared point-to-vertex distance, as gradSLAM),
confidence-weighted running averages of position, normal and colour, and new points for the pixels left
over. Unlike gradSLAM:

- Only points in blocks next to the frame's surface are touched (``voxel_index.py``): the blocks holding a
  vertex of the frame, dilated by one block (>= the distance gate), are looked up in a sorted voxel hash.
  Any point that can pass the distance gate is in that set, so association equals projecting the whole map,
  at a cost that follows the frame, not the map.
- Leftover pixels whose voxel (``voxel_size_m``) already owns a point fuse into it instead of adding a
  duplicate (``merge_duplicates``); failing that, into the nearest gated point owning a pixel within
  ``merge_neighbour_px`` (keeps about one point per pixel footprint where pixels are larger than voxels);
  leftover pixels sharing a voxel make one point. A point's per-frame
  sample is the alpha-weighted mean of its pixels with weight max(alpha), so confidence still counts
  observations (a point seen in one frame has confidence <= 1 in "radial" mode).
- Pixels whose right / lower neighbour has no depth take no part (their gradSLAM normal is meaningless);
  fused normals are renormalised.
- Points below ``stable_confidence`` ``prune_after_frames`` frames after their birth are pruned; above
  ``max_points`` the lowest-confidence points are evicted. Map files keep no prune schedule.

Segment labels (``vote_labels``): per point and level (LEVELS: subpart, part, whole) an int32 segment id and
a float32 vote weight, updated by a weighted Boyer-Moore majority vote of the pixels that fused into the point
(``FusionReport.pixel_slot``); the ids belong to the caller (the instance layer), which renames or drops them
with ``relabel``. Language lives per segment there, not per point.
Memory per point (``bytes_per_point``, summed from the per-slot arrays allocated): 45 B of attributes (xyz,
normal, colour, confidence float32, birth int32, alive bool), 8 B voxel key, 4 B per-frame scratch, 16 B index
entry, 3 * 8 B of labels and vote weights = 97 B. Storage grows by
1.5x, so up to a third of the allocation may be unused. Per-frame cost: O(pixels + points near the frame);
the index merge is O(N) once every ``index_delta_capacity`` new points, the cap eviction O(N) when it fires.
Not differentiable; no loop closure / deformation: a pose correction after the fact does not move points.
Backends (``fusion.backend``): "torch" runs every pass as tensor ops (the reference, and the CUDA path); on a
CPU that is bound by many full-image passes, and with more torch threads than free cores each pass waits on
descheduled threads. "numba" (the CPU default when numba is installed) runs the same passes as fused loops in
``cpu_kernels.py`` (same rules and tie-breaks; ``test_fusion_backends.py``) and uses no torch thread pool per
frame; row-split kernels run on ``fusion.cpu_threads`` plain threads.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.device import resolve_device
from lang3d_ros.fusion import cpu_kernels
from lang3d_ros.fusion.config import FusionConfig
from lang3d_ros.fusion.vertex import (
    confidence_map,
    normal_map,
    normal_valid_mask,
    pixel_rays,
    valid_depth_mask,
)
from lang3d_ros.fusion.voxel_index import LayeredIndex, VoxelKeys
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.grounding.objects import LEVELS

logger = logging.getLogger(__name__)

STATE_VERSION = 2
_GROWTH = 1.5
_SCRATCH_EMPTY = 2**31 - 1


_kernels_ready = False


def _warm_up_kernels(config: FusionConfig) -> None:
    """Compile (first run on a machine: ~5-10 s) or load from numba's cache the CPU kernels, once per process,
    by fusing two tiny frames of a wall through a throwaway map: the first real frame then runs at full speed."""
    global _kernels_ready
    if _kernels_ready:
        return
    _kernels_ready = True
    t0 = time.perf_counter()
    intr = Intrinsics(8.0, 8.0, 7.5, 5.5, 16, 12)
    rgb = np.full((12, 16, 3), 128, np.uint8)
    cfg = FusionConfig(**{**config.__dict__, "backend": "numba", "min_depth_m": 0.1, "max_depth_m": 8.0})
    labels = np.zeros((len(LEVELS), 12 * 16), np.int32)
    scratch = PointMap(cfg, device="cpu")
    for i in range(2):
        rep = scratch.integrate(Frame(rgb, np.full((12, 16), 1.0 + 0.01 * i, np.float32), intr, np.eye(4), index=i),
                                want_pixel_slots=True)
        scratch.vote_labels(rep.pixel_slot, rep.pixel_alpha, labels)
    z, live = np.zeros(1, np.int64), np.zeros(1, np.bool_)  # kernels two frames do not reach (index merge, pruning)
    cpu_kernels.compact_sorted(z, z, z, live)
    cpu_kernels.merge_sorted(z, z, z, z)
    cpu_kernels.kill_unstable(z, 0, np.float32(1.0), np.zeros(1, np.int32), live, np.zeros(1, np.float32))
    dt = time.perf_counter() - t0
    (logger.info if dt > 1.0 else logger.debug)("fusion CPU kernels ready in %.1f s", dt)


def _rotate(R: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(3, 3) R times (N, 3) v, as (N, 3), in the numba kernels' operation order (no BLAS, no fused multiply-add),
    so that both backends round alike."""
    x, y, z = v.unbind(1)
    return torch.stack([(R[r, 0] * x + R[r, 1] * y) + R[r, 2] * z for r in range(3)], 1)


@dataclass
class FusionReport:
    """Outcome of one ``PointMap.integrate`` call. A rejected frame (accepted False) changed nothing."""

    accepted: bool
    reason: str = ""
    n_matched: int = 0  # pixels fused into a map point by projective association
    n_new: int = 0  # points created
    n_points: int = 0  # live points after the frame
    n_pruned: int = 0  # points pruned (unstable) or evicted (cap) by this frame
    time_ms: float = 0.0
    n_merged: int = 0  # leftover pixels fused into the point owning their voxel
    n_candidates: int = 0  # map points examined for association (frustum-culled set)
    pixel_slot: np.ndarray | None = None
    """(H*W,) int64, with ``want_pixel_slots``: the slot each pixel fused into (matched point, merged point or the
    new point it created), -1 for pixels that took no part. Valid until the next ``integrate``."""
    pixel_alpha: np.ndarray | None = None
    """(H*W,) float32, with ``want_pixel_slots``: each pixel's confidence weight alpha (0 where pixel_slot is -1)."""


class PointMap:
    """A growing point map fused online from RGB-D frames, with per-level segment labels voted by pixels.

    device: "auto" (CUDA when available), "cpu", "cuda", or a torch.device. Arithmetic is float32.
    One map per thread: not thread-safe.
    """

    def __init__(
        self,
        config: FusionConfig | None = None,
        device: str | torch.device = "auto",
    ):
        self.config = config if config is not None else FusionConfig()
        self.config.validate()
        self.device = resolve_device(device)
        self._cpu = self._resolve_backend(self.config.backend)  # cpu_kernels, or None for the torch path
        self._keys = VoxelKeys(self.config.voxel_size_m, self.config.block_voxels)
        self._cos_gate = math.cos(math.radians(self.config.angle_threshold_deg))
        self._rays_cache: tuple[Intrinsics, torch.Tensor, torch.Tensor] | None = None
        self._reset_storage(0)

    def _resolve_backend(self, backend: str):
        if backend == "torch" or (backend == "auto" and (self.device.type != "cpu" or not cpu_kernels.AVAILABLE)):
            return None
        if self.device.type != "cpu":
            raise ValueError(f"fusion backend 'numba' runs on the CPU only, device is {self.device}")
        if not cpu_kernels.AVAILABLE:
            raise ValueError("fusion backend 'numba' needs the numba package (pip install numba), or use 'torch'")
        _warm_up_kernels(self.config)
        return cpu_kernels

    def _threads(self) -> int:
        """Threads for the split CPU kernels: fusion.cpu_threads, or torch's intra-op thread count when 0."""
        return self.config.cpu_threads or torch.get_num_threads()

    @property
    def backend(self) -> str:
        """"numba" or "torch": the implementation of the per-frame passes in use."""
        return "torch" if self._cpu is None else "numba"

    # ------------------------------------------------------------------ storage
    def _reset_storage(self, capacity: int) -> None:
        dev = self.device
        self._cap = int(capacity)
        self._used = 0  # slots ever handed out (high-water mark)
        self._xyz = torch.zeros(capacity, 3, device=dev)
        self._nrm = torch.zeros(capacity, 3, device=dev)
        self._rgb = torch.zeros(capacity, 3, device=dev)
        self._conf = torch.zeros(capacity, device=dev)
        self._key = torch.full((capacity,), -1, dtype=torch.int64, device=dev)
        self._birth = torch.zeros(capacity, dtype=torch.int32, device=dev)
        self._alive = torch.zeros(capacity, dtype=torch.bool, device=dev)
        self._scratch = torch.full((capacity + 1,), _SCRATCH_EMPTY, dtype=torch.int32, device=dev)  # per-frame dedupe
        self._label = torch.full((len(LEVELS), capacity), -1, dtype=torch.int32, device=dev)
        self._label_w = torch.zeros((len(LEVELS), capacity), dtype=torch.float32, device=dev)
        self._free = torch.empty(0, dtype=torch.int64, device=dev)
        self._n_alive = 0
        self._frame_no = 0
        self._births: deque[tuple[int, torch.Tensor]] = deque()
        self._index = LayeredIndex(dev, self.config.index_delta_capacity, self._cpu)

    def _grow(self, need: int) -> None:
        if need <= self._cap:
            return
        new_cap = max(need, int(self._cap * _GROWTH) + 1024)

        def grow(t: torch.Tensor, fill=0) -> torch.Tensor:
            out = torch.full((new_cap, *t.shape[1:]), fill, dtype=t.dtype, device=t.device)
            out[: t.shape[0]] = t
            return out

        self._xyz, self._nrm, self._rgb = grow(self._xyz), grow(self._nrm), grow(self._rgb)
        self._conf, self._key, self._birth = grow(self._conf), grow(self._key, -1), grow(self._birth)
        self._alive = grow(self._alive, False)
        self._scratch = torch.full((new_cap + 1,), _SCRATCH_EMPTY, dtype=torch.int32, device=self.device)
        self._label = grow(self._label.T, -1).T.contiguous()
        self._label_w = grow(self._label_w.T).T.contiguous()
        self._cap = new_cap

    def _allocate(self, n: int) -> torch.Tensor:
        """n free slot ids (reusing pruned slots first)."""
        k = min(n, int(self._free.numel()))
        reused = self._free[self._free.numel() - k:]
        self._free = self._free[: self._free.numel() - k]
        fresh = torch.arange(self._used, self._used + n - k, device=self.device)
        self._grow(self._used + n - k)
        self._used += n - k
        return self._cat([reused, fresh])

    def _cat(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """torch.cat, or numpy's on the numba path (no torch thread pool waking for a copy)."""
        if self._cpu is not None:
            return torch.from_numpy(np.concatenate([t.numpy() for t in tensors]))
        return torch.cat(tensors)

    def _kill(self, slots: torch.Tensor) -> None:
        if slots.numel() == 0:
            return
        if self._cpu is not None:
            s = slots.numpy()  # numpy fancy indexing: no torch thread pool
            self._alive.numpy()[s] = False
            self._conf.numpy()[s] = 0
            self._label.numpy()[:, s] = -1
            self._label_w.numpy()[:, s] = 0
        else:
            self._alive[slots] = False
            self._conf[slots] = 0
            self._label[:, slots] = -1
            self._label_w[:, slots] = 0
        self._free = self._cat([self._free, slots])
        self._n_alive -= int(slots.numel())

    # ------------------------------------------------------------------ accessors
    def _live(self) -> torch.Tensor:
        return torch.nonzero(self._alive[: self._used]).squeeze(1)

    @property
    def num_points(self) -> int:
        return self._n_alive

    @property
    def points_xyz(self) -> torch.Tensor:
        """(N, 3) float32 map-frame positions of live points (slot order, same order as every accessor)."""
        return self._xyz[self._live()]

    @property
    def normals(self) -> torch.Tensor:
        """(N, 3) float32 unit normals (sign as gradSLAM: not oriented to any camera)."""
        return self._nrm[self._live()]

    @property
    def colors(self) -> torch.Tensor:
        """(N, 3) float32 RGB in [0, 1]."""
        return self._rgb[self._live()]

    @property
    def confidence(self) -> torch.Tensor:
        """(N,) float32 accumulated confidence (sum of per-frame alpha)."""
        return self._conf[self._live()]

    def live_slots(self) -> np.ndarray:
        """(N,) int64 slots of the live points, in accessor order (``points_xyz``, ``labels``...)."""
        return self._live().cpu().numpy()

    def labels(self, level: int) -> torch.Tensor:
        """(N,) int32 segment label of level ``level`` (0 subpart, 1 part, 2 whole) per live point; -1 unlabelled."""
        return self._label[self._level(level)][self._live()]

    def label_weight(self, level: int) -> torch.Tensor:
        """(N,) float32 vote weight of each live point's label (0: unlabelled or contested to a draw)."""
        return self._label_w[self._level(level)][self._live()]

    def slot_labels(self, level: int, slots: np.ndarray) -> np.ndarray:
        """(K,) int32 labels at ``slots`` (K,) int64 (e.g. ``FusionReport.pixel_slot``); -1 where a slot is -1,
        unknown or dead."""
        lvl = self._level(level)
        s = np.asarray(slots)
        if s.ndim != 1 or not np.issubdtype(s.dtype, np.integer):
            raise ValueError(f"slots must be a 1-D integer array, got {s.dtype} {s.shape}")
        s = s.astype(np.int64, copy=False)
        ok = (s >= 0) & (s < self._used)
        sc = np.where(ok, s, 0)
        alive = self._alive[: max(self._used, 1)].cpu().numpy()
        ok &= alive[sc] if self._used else False
        lab = self._label[lvl, : max(self._used, 1)].cpu().numpy()
        return np.where(ok, lab[sc], -1).astype(np.int32)

    def relabel(self, level: int, lut: np.ndarray) -> None:
        """Rename the level's labels: label l < S becomes lut[l] ((S,) int32); lut -1 drops it (label -1, weight 0);
        labels >= S are unchanged. Raises ValueError (nothing changed) on a malformed lut."""
        lvl = self._level(level)
        lut = np.asarray(lut)
        if lut.ndim != 1 or not np.issubdtype(lut.dtype, np.integer):
            raise ValueError(f"lut must be a 1-D integer array, got {lut.dtype} {lut.shape}")
        if lut.size and (lut.min() < -1 or lut.max() > np.iinfo(np.int32).max):
            raise ValueError("lut values must be int32 labels >= -1")
        if lut.size == 0 or self._used == 0:
            return
        lab = self._label[lvl, : self._used]
        lut_t = torch.from_numpy(lut.astype(np.int32)).to(self.device)
        hit = (lab >= 0) & (lab < lut.size)
        new = torch.where(hit, lut_t[lab.clamp(0, lut.size - 1).long()], lab)
        self._label_w[lvl, : self._used] = torch.where(new < 0, torch.zeros(()), self._label_w[lvl, : self._used])
        self._label[lvl, : self._used] = new

    def _level(self, level: int) -> int:
        if not isinstance(level, (int, np.integer)) or not 0 <= int(level) < len(LEVELS):
            raise ValueError(f"level must be 0..{len(LEVELS) - 1} ({LEVELS}), got {level!r}")
        return int(level)

    @property
    def bytes_per_point(self) -> int:
        """Bytes per slot, summed over the per-slot arrays actually allocated (attributes, voxel key, labels and
        vote weights, per-frame scratch) plus one index entry (int64 key + int64 slot)."""
        per_slot = [self._xyz, self._nrm, self._rgb, self._conf, self._key, self._birth, self._alive, self._scratch]
        b = sum(t.element_size() * (t[0].numel() if t.dim() > 1 else 1) for t in per_slot)
        b += (self._label.element_size() + self._label_w.element_size()) * self._label.shape[0]
        b += 16  # index entry
        return int(b)

    # ------------------------------------------------------------------ map files
    def to_numpy(self) -> dict[str, np.ndarray]:
        """Live points as numpy: points_xyz (N,3), normals (N,3), colors (N,3), confidence (N,), labels (3, N)
        int32, label_weight (3, N) float32."""
        live = self._live()
        return {
            "points_xyz": self._xyz[live].cpu().numpy(),
            "normals": self._nrm[live].cpu().numpy(),
            "colors": self._rgb[live].cpu().numpy(),
            "confidence": self._conf[live].cpu().numpy(),
            "labels": self._label[:, live].cpu().numpy(),
            "label_weight": self._label_w[:, live].cpu().numpy(),
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to resume fusing, as numpy arrays (for map files)."""
        live = self._live()
        st = {
            "version": np.array(STATE_VERSION),
            "frame_count": np.array(self._frame_no, dtype=np.int64),
            "points_xyz": self._xyz[live].cpu().numpy(),
            "normals": self._nrm[live].cpu().numpy(),
            "colors": self._rgb[live].cpu().numpy(),
            "confidence": self._conf[live].cpu().numpy(),
            "birth_frame": self._birth[live].cpu().numpy(),
            "voxel_key": self._key[live].cpu().numpy(),
            "voxel_grid": np.array([self.config.voxel_size_m, self.config.block_voxels], dtype=np.float64),
            "labels": self._label[:, live].cpu().numpy(),
            "label_weight": self._label_w[:, live].cpu().numpy(),
        }
        return st

    def load_state_dict(self, state: dict) -> None:
        """Replace the map by ``state`` (from ``state_dict``). Raises ValueError, map unchanged, if invalid; a
        state of another version (1: per-point features, before segment labels) is refused, naming it."""
        try:
            version = int(np.asarray(state["version"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"fusion state has no readable version: {exc}") from exc
        if version != STATE_VERSION:
            raise ValueError(f"fusion state version {version} is not supported (this build reads version "
                             f"{STATE_VERSION}: per-point segment labels; version 1 held per-point features)")
        try:
            frame_count = int(np.asarray(state["frame_count"]))
            names = ("points_xyz", "normals", "colors", "confidence", "birth_frame", "labels", "label_weight")
            arrs = {k: np.asarray(state[k]) for k in names}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"fusion state is missing or has a malformed entry: {exc}") from exc
        n = arrs["points_xyz"].shape[0] if arrs["points_xyz"].ndim == 2 else -1
        for k in ("points_xyz", "normals", "colors"):
            if arrs[k].shape != (n, 3):
                raise ValueError(f"fusion state {k} has shape {arrs[k].shape}, expected ({n}, 3)")
        for k in ("confidence", "birth_frame"):
            if arrs[k].shape != (n,):
                raise ValueError(f"fusion state {k} has shape {arrs[k].shape}, expected ({n},)")
        for k in ("labels", "label_weight"):
            if arrs[k].shape != (len(LEVELS), n):
                raise ValueError(f"fusion state {k} has shape {arrs[k].shape}, expected ({len(LEVELS)}, {n})")
        if not all(np.all(np.isfinite(arrs[k])) for k in ("points_xyz", "normals", "colors", "confidence")):
            raise ValueError("fusion state has non-finite values")
        if arrs["labels"].dtype != np.int32 or (n and arrs["labels"].min() < -1):
            raise ValueError(f"fusion state labels must be int32 >= -1, got {arrs['labels'].dtype}")
        lw = arrs["label_weight"]
        if not np.issubdtype(lw.dtype, np.floating) or not np.all(np.isfinite(lw)) or (n and lw.min() < 0):
            raise ValueError("fusion state label weights must be finite floats >= 0")
        xyz = torch.from_numpy(np.ascontiguousarray(arrs["points_xyz"], dtype=np.float32)).to(self.device)
        vc, ok = self._keys.voxel_coords(xyz)
        if not bool(ok.all()):
            raise ValueError("fusion state has points outside the keyable coordinate range")
        # validated: replace
        self._reset_storage(n)
        self._used = n
        self._xyz[:] = xyz
        self._nrm[:] = torch.from_numpy(arrs["normals"].astype(np.float32)).to(self.device)
        self._rgb[:] = torch.from_numpy(arrs["colors"].astype(np.float32)).to(self.device)
        self._conf[:] = torch.from_numpy(arrs["confidence"].astype(np.float32)).to(self.device)
        self._birth[:] = torch.from_numpy(arrs["birth_frame"].astype(np.int32)).to(self.device)
        self._label[:] = torch.from_numpy(arrs["labels"]).to(self.device)
        self._label_w[:] = torch.from_numpy(lw.astype(np.float32)).to(self.device)
        self._alive[:] = True
        self._key[:] = self._keys.keys(vc)
        grid = np.asarray(state.get("voxel_grid", [0.0, 0.0]), dtype=np.float64).reshape(-1)
        keys = np.asarray(state.get("voxel_key", np.zeros(0)))
        if keys.shape == (n,) and grid.shape == (2,) and np.array_equal(
            grid, [self.config.voxel_size_m, self.config.block_voxels]
        ):  # same grid: keep each point's birth voxel
            self._key[:] = torch.from_numpy(keys.astype(np.int64)).to(self.device)
        self._n_alive = n
        self._frame_no = frame_count
        self._index.rebuild(self._key[:n], torch.arange(n, device=self.device))

    # ------------------------------------------------------------------ input checks
    def _check(self, frame) -> str:
        """'' when usable, else the reason. Reads only."""
        if not isinstance(frame, Frame):
            return f"expected a Frame, got {type(frame).__name__}"
        try:
            frame.validate()
        except ValueError as exc:
            return str(exc)
        if not np.issubdtype(frame.depth_m.dtype, np.floating):
            return f"depth_m must be float metres, got {frame.depth_m.dtype}"
        if frame.height < 2 or frame.width < 2:
            return f"image {frame.width}x{frame.height} too small for normals"
        return ""

    # ------------------------------------------------------------------ integrate
    def integrate(self, frame: Frame, want_pixel_slots: bool = False) -> FusionReport:
        """Fuse one frame. Bad input -> FusionReport(accepted=False, reason), map unchanged. ``want_pixel_slots``:
        the report carries each pixel's slot and alpha (for ``vote_labels`` and the instance layer)."""
        t0 = time.perf_counter()
        reason = self._check(frame)
        if reason:
            logger.warning("fusion rejected frame %s: %s", getattr(frame, "index", "?"), reason)
            return FusionReport(False, reason, n_points=self._n_alive, time_ms=(time.perf_counter() - t0) * 1e3)
        obs = self._observe(frame)
        if obs is None:
            reason = "no valid depth pixels (all zero, NaN, Inf, negative or out of range)"
            logger.warning("fusion rejected frame %s: %s", frame.index, reason)
            return FusionReport(False, reason, n_points=self._n_alive, time_ms=(time.perf_counter() - t0) * 1e3)
        rep = self._fuse(obs, bool(want_pixel_slots))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        rep.time_ms = (time.perf_counter() - t0) * 1e3
        return rep

    # ------------------------------------------------------------------ label votes
    def vote_labels(self, pixel_slot: np.ndarray, pixel_alpha: np.ndarray, pixel_labels: np.ndarray) -> None:
        """One frame's segment votes. pixel_slot (P,) int64 and pixel_alpha (P,) float32 from ``FusionReport``,
        pixel_labels (3, P) int32: per level the segment id each pixel observed (-1: none). Per point and level,
        the label with the largest alpha mass m among this call's pixels of the point (ties: the lowest label)
        votes with weight m: same label w += m; another w -= m, and below 0 the label switches with w = -w.
        Unknown slots and dead points are ignored. Bad shapes or values -> ValueError, nothing changed."""
        slot, alpha, labels = np.asarray(pixel_slot), np.asarray(pixel_alpha), np.asarray(pixel_labels)
        if slot.ndim != 1 or not np.issubdtype(slot.dtype, np.integer):
            raise ValueError(f"pixel_slot must be a 1-D integer array, got {slot.dtype} {slot.shape}")
        p = slot.shape[0]
        if alpha.shape != (p,) or not np.issubdtype(alpha.dtype, np.floating):
            raise ValueError(f"pixel_alpha must be ({p},) float, got {alpha.dtype} {alpha.shape}")
        if labels.shape != (len(LEVELS), p) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"pixel_labels must be ({len(LEVELS)}, {p}) integer, got {labels.dtype} {labels.shape}")
        if p and (not np.all(np.isfinite(alpha)) or alpha.min() < 0):
            raise ValueError("pixel_alpha must be finite and >= 0")
        if p and (labels.min() < -1 or labels.max() > np.iinfo(np.int32).max):
            raise ValueError("pixel_labels must be int32 segment ids >= -1")
        if p == 0 or self._used == 0:
            return
        slot = np.ascontiguousarray(slot, dtype=np.int64)
        alpha = np.ascontiguousarray(alpha, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.int32)
        if self._cpu is not None:
            tid, uslots = self._cpu.vote_targets(slot, self._used, self._alive.numpy(), self._scratch.numpy())
            self._cpu.run_each([(self._cpu.vote_level, (tid, uslots, alpha, labels[lvl], self._label[lvl].numpy(),
                                                        self._label_w[lvl].numpy())) for lvl in range(len(LEVELS))],
                               self._threads())
            return
        dev = self.device
        s = torch.from_numpy(slot).to(dev)
        ok = (s >= 0) & (s < self._used)
        ok &= self._alive.index_select(0, torch.where(ok, s, torch.zeros_like(s)))
        a = torch.from_numpy(alpha).to(dev)
        for lvl in range(len(LEVELS)):
            lab = torch.from_numpy(labels[lvl]).to(dev).to(torch.int64)
            self._vote_level(lvl, s, a, lab, ok & (lab >= 0))

    def _vote_level(self, lvl: int, s: torch.Tensor, a: torch.Tensor, lab: torch.Tensor, ok: torch.Tensor) -> None:
        """Torch reference of one level's vote: (slot, label) pairs -> alpha mass, per slot the heaviest (lowest
        label on ties), then the Boyer-Moore update."""
        dev = s.device
        sel = torch.nonzero(ok).squeeze(1)
        if sel.numel() == 0:
            return
        pair, inv = torch.unique((s[sel] << 32) | lab[sel], return_inverse=True)  # sorted: by slot, then label
        mass = torch.zeros(pair.numel(), device=dev).index_add_(0, inv, a[sel])
        ps, pl = pair >> 32, pair & 0xFFFFFFFF
        slots, grp = torch.unique_consecutive(ps, return_inverse=True)
        best = torch.full((slots.numel(),), -1.0, device=dev).scatter_reduce_(0, grp, mass, "amax")
        is_best = mass == best[grp]
        pos = torch.arange(pair.numel(), device=dev)
        first = torch.full((slots.numel(),), pair.numel(), device=dev, dtype=torch.int64).scatter_reduce_(
            0, grp[is_best], pos[is_best], "amin")  # lowest label among the heaviest
        vl, vm = pl[first].to(torch.int32), mass[first]
        cur_l, cur_w = self._label[lvl, slots], self._label_w[lvl, slots]
        w = torch.where(cur_l == vl, cur_w + vm, cur_w - vm)
        switch = w < 0
        self._label[lvl, slots] = torch.where(switch, vl, cur_l)
        self._label_w[lvl, slots] = w.abs()

    def _rays(self, intr: Intrinsics) -> tuple[torch.Tensor, torch.Tensor]:
        if self._rays_cache is None or self._rays_cache[0] != intr:
            rays = pixel_rays(intr, self.device)
            v = torch.cat([rays, torch.ones_like(rays[..., :1])], -1)
            alpha = confidence_map(v, intr, self.config.sigma, "radial")
            self._rays_cache = (intr, rays, alpha)
        return self._rays_cache[1], self._rays_cache[2]

    def _observe(self, frame: Frame) -> dict | None:
        """Per-pixel world samples on the full (H*W) grid; None when no pixel is usable. Changes no map state."""
        cfg, dev, intr = self.config, self.device, frame.intrinsics
        h, w = frame.height, frame.width
        rays, alpha_radial = self._rays(intr)
        T = torch.from_numpy(np.asarray(frame.T_world_cam, dtype=np.float64)).to(dev)
        R, t = T[:3, :3].to(torch.float32), T[:3, 3].to(torch.float32)
        verts = None  # camera-frame vertex map, only kept where the confidence needs it
        if self._cpu is not None:
            vw_np, nw_np = np.empty((h * w, 3), np.float32), np.empty((h * w, 3), np.float32)
            use_np, zlo, zhi = np.empty(h * w, np.bool_), np.empty(h, np.float32), np.empty(h, np.float32)
            self._cpu.run_split(
                self._cpu.observe, h, self._threads(), np.ascontiguousarray(frame.depth_m, dtype=np.float32),
                rays.numpy(), np.float32(cfg.min_depth_m), np.float32(cfg.max_depth_m), R.numpy(), t.numpy(), vw_np,
                nw_np, use_np, zlo, zhi)
            vw, nw, use = torch.from_numpy(vw_np), torch.from_numpy(nw_np), torch.from_numpy(use_np)
            if not np.isfinite(zlo).any():
                return None
            dmin, dmax = torch.tensor(float(zlo.min())), torch.tensor(float(zhi.max()))
            if cfg.confidence_mode != "radial":
                depth = torch.from_numpy(np.ascontiguousarray(frame.depth_m)).to(dev, torch.float32)
                z = torch.where(valid_depth_mask(depth, cfg.min_depth_m, cfg.max_depth_m), depth, torch.zeros(()))
                verts = torch.cat([rays * z[..., None], z[..., None]], -1)
        else:
            depth = torch.from_numpy(np.ascontiguousarray(frame.depth_m)).to(dev, torch.float32)
            valid = valid_depth_mask(depth, cfg.min_depth_m, cfg.max_depth_m)
            z = torch.where(valid, depth, torch.zeros((), device=dev))
            verts = torch.cat([rays * z[..., None], z[..., None]], -1)
            nrm = normal_map(verts)
            use = (normal_valid_mask(valid) & (nrm != 0).any(-1)).reshape(-1)
            vw = _rotate(R, verts.reshape(-1, 3)) + t
            nw = _rotate(R, nrm.reshape(-1, 3))
            zu = z.reshape(-1)[use]
            if zu.numel() == 0:
                return None
            dmin, dmax = zu.min(), zu.max()
        # bounding box of the used points: the frustum slab between their min and max depth (8 corners)
        corners = torch.stack([rays[0, 0], rays[0, -1], rays[-1, 0], rays[-1, -1]])  # (4, 2)
        slab = torch.cat([torch.cat([corners * d, d.expand(4, 1)], 1) for d in (dmin[None], dmax[None])])
        box = torch.addmm(t, slab, R.T)
        lo, hi = box.amin(0), box.amax(0)
        big = self._keys.voxel_size_m * (self._keys.offset - 2)  # keyable range
        if bool((lo < -big).any() or (hi > big).any()):
            use &= (vw.abs() < big).all(-1)
            if not bool(use.any()):
                return None
            lo = torch.where(use[:, None], vw, torch.full((), math.inf, device=dev)).amin(0)
            hi = torch.where(use[:, None], vw, torch.full((), -math.inf, device=dev)).amax(0)
        if cfg.confidence_mode == "radial":
            alpha = alpha_radial.reshape(-1)
        else:
            alpha = confidence_map(verts, intr, cfg.sigma, "gradslam").reshape(-1)
        rgb = torch.from_numpy(np.ascontiguousarray(frame.rgb)).to(dev).reshape(-1, 3)
        return dict(h=h, w=w, intr=intr, R=R, t=t, use=use, vw=vw, nw=nw, alpha=alpha, rgb=rgb, lo=lo, hi=hi)

    def _candidate_blocks(self, o: dict) -> torch.Tensor:
        """Block keys of the blocks holding a used pixel's point, dilated by one block (26-neighbourhood)."""
        kb, use, dev = self._keys, o["use"], self.device
        bs = kb.voxel_size_m * (1 << kb.local_bits)
        blo = torch.floor(o["lo"] / bs) - 1
        bhi = torch.floor(o["hi"] / bs) + 1
        dims = (bhi - blo + 1).to(torch.int64).tolist()
        ncell = dims[0] * dims[1] * dims[2]
        if self._cpu is not None and ncell <= 8_000_000:
            return torch.from_numpy(self._cpu.candidate_blocks(
                use.numpy(), o["vw"].numpy(), np.float32(bs), blo.to(torch.int64).numpy(), np.asarray(dims, np.int64),
                1 << (kb.block_bits - 1), kb.block_bits))
        if ncell <= 8_000_000:
            rel = (torch.floor(o["vw"] / bs) - blo).to(torch.int64)
            lin = (rel[:, 0] * dims[1] + rel[:, 1]) * dims[2] + rel[:, 2]
            lin = torch.where(use, lin, torch.full((), ncell, dtype=torch.int64, device=dev))
            occ = torch.zeros(ncell + 1, dtype=torch.bool, device=dev)
            occ[lin] = True
            occ = occ[:ncell].view(dims)
            for ax in range(3):  # separable 3x3x3 dilation
                n = dims[ax]
                d = occ.clone()
                d.narrow(ax, 1, n - 1).logical_or_(occ.narrow(ax, 0, n - 1))
                d.narrow(ax, 0, n - 1).logical_or_(occ.narrow(ax, 1, n - 1))
                occ = d
            cells = torch.nonzero(occ) + blo.to(torch.int64)
        else:  # very spread-out frame: unique blocks, then the 27 offsets
            ub = torch.unique(torch.floor(o["vw"][use] / bs).to(torch.int64), dim=0)
            off = torch.stack(torch.meshgrid(*[torch.arange(-1, 2, device=dev)] * 3, indexing="ij"), -1)
            cells = torch.unique((ub[:, None, :] + off.reshape(1, 27, 3)).reshape(-1, 3), dim=0)
        cells = cells + (1 << (kb.block_bits - 1))  # shifted block coords
        cells = cells[((cells >= 0) & (cells < (1 << kb.block_bits))).all(-1)]
        return kb.block_keys(cells)

    def _fuse(self, o: dict, want_pixel_slots: bool) -> FusionReport:
        """The frame's pixels -> target per pixel (an existing slot, a new point or unused), then running averages
        of the targets and new points. Each pass has a torch and a numba (``self._cpu``) implementation."""
        hw = o["use"].numel()
        if self._cpu is not None:  # numpy for whole-image fills: no torch thread pool on the numba path
            target = torch.from_numpy(np.full(hw, -1, np.int64))
        else:
            target = torch.full((hw,), -1, dtype=torch.int64, device=self.device)
        # target: slot, -(2 + new id), or -1 unused
        n_cand = n_matched = 0
        local = None  # the index restricted to the blocks around this frame
        if self._n_alive > 0:
            local = self._index.gather_blocks(self._candidate_blocks(o), self._keys.shift)
            n_cand, n_matched = self._associate(o, local, target)
        n_merged, new_keys = self._leftovers(o, local, target)
        n_new = 0 if new_keys is None else int(new_keys.numel())
        uslots, tid, wsum, wmax, mean = self._accumulate(o, target, n_new)
        n_old = int(uslots.numel())

        # update existing points: c <- c + w, x <- (c x + w x_frame) / (c + w)
        if n_old:
            w_f = wmax[:n_old]
            if self._cpu is not None:
                self._cpu.run_split(self._cpu.update_points, n_old, self._threads(), uslots.numpy(), w_f.numpy(),
                                    mean.numpy(), self._xyz.numpy(), self._nrm.numpy(), self._rgb.numpy(),
                                    self._conf.numpy())
            else:
                self._update_points(uslots, w_f, mean[:n_old])

        # new points
        slots = None
        if n_new:
            slots = self._allocate(n_new)
            if self._cpu is not None:
                self._cpu.write_new_points(
                    slots.numpy(), mean.numpy(), wmax.numpy(), n_old, new_keys.numpy(), self._frame_no,
                    self._xyz.numpy(), self._nrm.numpy(), self._rgb.numpy(), self._conf.numpy(), self._key.numpy(),
                    self._birth.numpy(), self._alive.numpy())
                self._label.numpy()[:, slots.numpy()] = -1
                self._label_w.numpy()[:, slots.numpy()] = 0
            else:
                nm = mean[n_old:]
                self._xyz.index_copy_(0, slots, nm[:, 0:3].contiguous())
                self._nrm.index_copy_(0, slots, nm[:, 3:6] / nm[:, 3:6].norm(dim=1, keepdim=True).clamp(min=1e-12))
                self._rgb.index_copy_(0, slots, nm[:, 6:9].contiguous())
                self._conf.index_copy_(0, slots, wmax[n_old:].contiguous())
                self._key[slots] = new_keys
                self._birth[slots] = self._frame_no
                self._alive[slots] = True
                self._label[:, slots] = -1
                self._label_w[:, slots] = 0
            self._n_alive += n_new
            self._index.insert(new_keys, slots, self._key, self._alive)
            self._births.append((self._frame_no, slots))
        pixel_slot = pixel_alpha = None
        if want_pixel_slots:
            pixel_slot, pixel_alpha = self._pixel_slots(o, target, slots)

        n_pruned = self._prune() + self._evict()
        self._frame_no += 1
        return FusionReport(
            True, "", n_matched=n_matched, n_new=n_new, n_points=self._n_alive, n_pruned=n_pruned,
            n_merged=n_merged, n_candidates=n_cand, pixel_slot=pixel_slot, pixel_alpha=pixel_alpha,
        )

    def _pixel_slots(self, o: dict, target: torch.Tensor, slots: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
        """(H*W,) int64 slot each pixel fused into (new point j: slots[j]), -1 unused; (H*W,) float32 alpha there."""
        t = target.cpu().numpy()
        out = t.copy()
        new = t <= -2
        if slots is not None:
            out[new] = slots.cpu().numpy()[-2 - t[new]]
        out[t == -1] = -1
        alpha = np.where(out >= 0, o["alpha"].cpu().numpy(), np.float32(0)).astype(np.float32)
        return out, alpha

    def _leftovers(self, o: dict, local: LayeredIndex | None, target: torch.Tensor) -> tuple[int, torch.Tensor | None]:
        """Usable pixels association left unmatched: fuse into the point owning their voxel, else into a gated
        neighbour's point, else group them by voxel into new points (target -(2 + new id)). Returns the number
        merged and the new points' voxel keys (ascending), None when there are none."""
        cfg, dev, kb = self.config, self.device, self._keys  # used pixels are inside the keyable range (_observe)
        merge = cfg.merge_duplicates and local is not None
        if self._cpu is not None:
            pixel_key = np.empty(target.numel(), np.int64)
            ckey, cslots = local.entries() if merge else (torch.empty(0, dtype=torch.int64),) * 2
            tk, ts, bits = self._cpu.build_table(ckey.numpy(), cslots.numpy())
            n_merged = sum(self._cpu.run_split(
                self._cpu.voxel_owner, target.numel(), self._threads(), target.numpy(), o["use"].numpy(),
                o["vw"].numpy(), np.float32(kb.voxel_size_m), kb.offset, kb.local_bits, kb.block_bits, tk, ts, bits,
                self._alive.numpy(), self._key.numpy(), merge, pixel_key))
            by_neighbour = merge and cfg.merge_neighbour_px > 0
            owner = np.empty(target.numel() if by_neighbour else 0, np.int64)
            if by_neighbour:
                self._cpu.run_split(
                    self._cpu.neighbour_owner, o["h"], self._threads(), target.numpy(), o["use"].numpy(),
                    o["vw"].numpy(), o["nw"].numpy(), self._xyz.numpy(), self._nrm.numpy(), o["h"], o["w"],
                    cfg.merge_neighbour_px, np.float32(cfg.dist_threshold_m ** 2), np.float32(self._cos_gate), owner)
            n_nbr, left, lk = self._cpu.take_owners(target.numpy(), o["use"].numpy(), owner, by_neighbour, pixel_key)
            n_merged += n_nbr
            left, lk = torch.from_numpy(left), torch.from_numpy(lk)
        else:
            left = torch.nonzero(o["use"] & (target < 0)).squeeze(1)
            n_merged = 0
            lk = kb.keys(torch.floor(o["vw"].index_select(0, left) / kb.voxel_size_m).to(torch.int64) + kb.offset)
            if merge and left.numel():
                owner = local.find(lk)  # a pixel's voxel lies in the frame's blocks: same answer as the full index
                oc = owner.clamp(min=0)
                has = (owner >= 0) & self._alive.index_select(0, oc) & (self._key.index_select(0, oc) == lk)
                target[left[has]] = owner[has]
                n_merged = int(has.sum())
                left, lk = left[~has], lk[~has]
                if left.numel() and cfg.merge_neighbour_px > 0:
                    owner = self._neighbour_owner(o, left, target)
                    has = owner >= 0
                    target[left[has]] = owner[has]
                    n_merged += int(has.sum())
                    left, lk = left[~has], lk[~has]
        if left.numel() == 0:
            return n_merged, None
        if self._cpu is not None:
            return n_merged, torch.from_numpy(
                self._cpu.group_new(left.numpy(), lk.numpy(), target.numpy(), cfg.merge_duplicates))
        if cfg.merge_duplicates:
            new_keys, inv = torch.unique(lk, sorted=True, return_inverse=True)
            target[left] = -(2 + inv)
        else:
            new_keys, order = torch.sort(lk, stable=True)
            target[left[order]] = -(2 + torch.arange(left.numel(), device=dev))
        return n_merged, new_keys

    def _accumulate(self, o: dict, target: torch.Tensor, n_new: int):
        """Pixels -> dense target ids: existing slots first (in first-pixel order, deduplicated through the
        per-slot scratch), then new points, then a dummy id n_t for unused pixels. Returns uslots (n_old,),
        tid (H*W,), wsum, wmax (n_t,) alpha sum / max and mean (n_t, 9) alpha-weighted [xyz, normal, rgb]."""
        alpha = o["alpha"]
        if self._cpu is not None:
            out = self._cpu.accumulate(target.numpy(), o["vw"].numpy(), o["nw"].numpy(), o["rgb"].numpy(),
                                       alpha.numpy(), n_new, self._scratch.numpy())
            return tuple(torch.from_numpy(a) for a in out)
        dev, hw = self.device, target.numel()
        is_old = target >= 0
        tslot = torch.where(is_old, target, torch.full((), self._cap, dtype=torch.int64, device=dev))
        pos = torch.arange(hw, dtype=torch.int32, device=dev)
        self._scratch.scatter_reduce_(0, tslot, pos, "amin", include_self=True)
        first = self._scratch.index_select(0, tslot).to(torch.int64)
        is_first = (first == pos) & is_old
        uslots = target[is_first]
        n_old = int(uslots.numel())
        self._scratch[uslots] = _SCRATCH_EMPTY
        self._scratch[self._cap] = _SCRATCH_EMPTY
        dense = torch.cumsum(is_first.to(torch.int64), 0) - 1
        n_t = n_old + n_new
        tid = torch.where(is_old, dense.index_select(0, first), torch.where(target <= -2, n_old - 2 - target, n_t))
        wsum = torch.zeros(n_t + 1, device=dev).index_add_(0, tid, alpha)[:n_t]
        wmax = torch.zeros(n_t + 1, device=dev).scatter_reduce_(0, tid, alpha, "amax", include_self=True)[:n_t]
        av = torch.cat([o["vw"], o["nw"], o["rgb"].to(torch.float32) * (1.0 / 255.0)], 1) * alpha[:, None]  # (HW, 9)
        mean = torch.zeros(n_t + 1, 9, device=dev).index_add_(0, tid, av)[:n_t] / wsum[:, None]
        return uslots, tid, wsum, wmax, mean

    def _update_points(self, uslots: torch.Tensor, w_f: torch.Tensor, m: torch.Tensor) -> None:
        """Running averages of the existing points ``uslots`` with frame weights w_f and frame means m (n, 9)."""
        cn = self._conf.index_select(0, uslots) + w_f
        b = (w_f / cn)[:, None]
        xyz = self._xyz.index_select(0, uslots)
        self._xyz.index_copy_(0, uslots, xyz.add_(b * (m[:, 0:3] - xyz)))
        nrm = self._nrm.index_select(0, uslots)
        nrm += b * (m[:, 3:6] - nrm)
        self._nrm.index_copy_(0, uslots, nrm / nrm.norm(dim=1, keepdim=True).clamp(min=1e-12))
        rgb = self._rgb.index_select(0, uslots)
        self._rgb.index_copy_(0, uslots, rgb.add_(b * (m[:, 6:9] - rgb)))
        self._conf.index_copy_(0, uslots, cn)

    def _neighbour_owner(self, o: dict, left: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(L,) pixels -> the nearest point (slot) owning a pixel within ``merge_neighbour_px`` that passes the
        distance and normal gates against this pixel, -1 where none. Keeps the map at about one point per
        pixel footprint when voxels are smaller than pixels (far range, low resolution)."""
        h, w, r = o["h"], o["w"], self.config.merge_neighbour_px
        dev = left.device
        padded = torch.nn.functional.pad(target.view(1, h, w), (r, r, r, r), value=-1).view(-1)
        wp = w + 2 * r
        d = torch.arange(-r, r + 1, device=dev)
        off = (d[:, None] * wp + d[None, :]).reshape(-1)
        off = off[off != 0]
        base = (left // w + r) * wp + (left % w + r)
        s = padded.index_select(0, (base[:, None] + off[None, :]).reshape(-1))  # (L * K,)
        sc = s.clamp(min=0)
        k = off.numel()
        d2 = (self._xyz.index_select(0, sc).view(-1, k, 3) - o["vw"].index_select(0, left)[:, None]).square_().sum(2)
        dot = (self._nrm.index_select(0, sc).view(-1, k, 3) * o["nw"].index_select(0, left)[:, None]).sum(2)
        s = s.view(-1, k)
        ok = (s >= 0) & (d2 < self.config.dist_threshold_m ** 2) & (dot > self._cos_gate)
        d2 = torch.where(ok, d2, torch.full((), math.inf, device=dev))
        best_d2, j = d2.min(1)
        best = s.gather(1, j[:, None]).squeeze(1)
        return torch.where(torch.isfinite(best_d2), best, torch.full_like(best, -1))

    def _associate(self, o: dict, local: LayeredIndex, target: torch.Tensor) -> tuple[int, int]:
        """Projective association (gradSLAM) of the live points in ``local``: target[pixel] = the map point the
        pixel wins, (H*W,) in place. Returns the number of candidate points examined and of pixels matched."""
        h, w, intr = o["h"], o["w"], o["intr"]
        dev = target.device
        ckey, cand = local.entries()
        if self._cpu is not None:
            n = cand.numel()
            q, d2, conf = np.empty(n, np.int64), np.empty(n, np.float32), np.empty(n, np.float32)
            n_live = sum(self._cpu.run_split(
                self._cpu.project_candidates, n, self._threads(), self._xyz.numpy(), self._nrm.numpy(),
                self._conf.numpy(), self._alive.numpy(), self._key.numpy(), cand.numpy(), ckey.numpy(),
                o["R"].numpy(), o["t"].numpy(), np.float32(intr.fx), np.float32(intr.fy), np.float32(intr.cx),
                np.float32(intr.cy), h, w, o["use"].numpy(), o["vw"].numpy(), o["nw"].numpy(),
                np.float32(self.config.dist_threshold_m ** 2), np.float32(self._cos_gate), q, d2, conf))
            return n_live, self._cpu.resolve_many_to_one(cand.numpy(), q, d2, conf, target.numpy())
        if cand.numel():
            cand = cand[self._alive.index_select(0, cand) & (self._key.index_select(0, cand) == ckey)]
        if cand.numel() == 0:
            return 0, 0
        p = self._xyz.index_select(0, cand)
        dp, R = p - o["t"], o["R"]
        # R^T (p - t) written out in the numba kernel's operation order: u, v land on the same side of a .5
        x, y, z = ((dp[:, 0] * R[0, c] + dp[:, 1] * R[1, c]) + dp[:, 2] * R[2, c] for c in range(3))
        zs = torch.where(z > 0, z, torch.ones_like(z))
        u = x / zs * float(intr.fx) + float(intr.cx)
        v = y / zs * float(intr.fy) + float(intr.cy)
        ok = (z > 0) & (u > -1e-3) & (u < w - 0.999) & (v > -1e-3) & (v < h - 0.999)
        q = torch.round(v).to(torch.int64).clamp_(0, h - 1) * w + torch.round(u).to(torch.int64).clamp_(0, w - 1)
        ok &= o["use"].index_select(0, q)
        d2 = (p - o["vw"].index_select(0, q)).square_().sum(1)
        dot = (self._nrm.index_select(0, cand) * o["nw"].index_select(0, q)).sum(1)
        ok &= (d2 < self.config.dist_threshold_m ** 2) & (dot > self._cos_gate)
        sel = torch.nonzero(ok).squeeze(1)
        if sel.numel() == 0:
            return int(cand.numel()), 0
        cs, qs, d2s = cand[sel], q[sel], d2[sel]
        hw = target.numel()
        conf = self._conf.index_select(0, cs)
        best = torch.full((hw,), -1.0, device=dev).scatter_reduce_(0, qs, conf, "amax", include_self=True)
        k = torch.nonzero(conf == best[qs]).squeeze(1)
        cs, qs, d2s = cs[k], qs[k], d2s[k]
        bd = torch.full((hw,), math.inf, device=dev).scatter_reduce_(0, qs, d2s, "amin", include_self=True)
        k = torch.nonzero(d2s == bd[qs]).squeeze(1)
        cs, qs = cs[k], qs[k]
        # last tie-break: lowest slot (independent of the index layout; a slot listed twice writes itself twice)
        first = torch.full((hw,), self._cap, dtype=torch.int64, device=dev).scatter_reduce_(
            0, qs, cs, "amin", include_self=True)
        k = first[qs] == cs
        target[qs[k]] = cs[k]
        return int(cand.numel()), int((target >= 0).sum())

    # ------------------------------------------------------------------ bounded memory
    def _prune(self) -> int:
        """Prune points born ``prune_after_frames`` frames ago that are still below ``stable_confidence``."""
        n = 0
        while self._births and self._births[0][0] <= self._frame_no - self.config.prune_after_frames:
            born, slots = self._births.popleft()
            if self._cpu is not None:
                dead = torch.from_numpy(self._cpu.kill_unstable(
                    slots.numpy(), born, np.float32(self.config.stable_confidence), self._birth.numpy(),
                    self._alive.numpy(), self._conf.numpy()))
            else:
                k = self._alive[slots] & (self._birth[slots] == born)
                k &= self._conf[slots] < self.config.stable_confidence
                dead = slots[k]
            self._kill(dead)
            n += int(dead.numel())
        return n

    def _evict(self) -> int:
        """Above max_points: drop the lowest-confidence points down to (1 - evict_fraction) * max_points."""
        cfg = self.config
        if self._n_alive <= cfg.max_points:
            return 0
        target = int(cfg.max_points * (1.0 - cfg.evict_fraction))
        k = self._n_alive - target
        live = self._live()
        victims = live[torch.topk(self._conf[live], k, largest=False).indices]
        self._kill(victims)
        return k
