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
- A pixel whose right / lower neighbour has no depth takes its normal from the left / upper neighbour
  (``edge_normals``; gradSLAM's normal there is meaningless, and without one the pixel would take no part:
  silhouettes of small objects, where sensors drop depth); fused normals are renormalised.
- The distance gate widens with the pixel's depth by ``association_sigmas`` sensor-noise sigmas
  (``depth_noise_at_1m_m``; gradSLAM: a fixed 5 cm). With a fixed gate, samples of a wall seen from 4-5 m
  (sigma 2.4-3.8 cm) often miss each other and stay as separate once-seen points: the wall grows a layer
  5-12 cm thick that closes passages on the occupancy grid.
- Points below ``stable_confidence`` ``prune_after_frames`` frames after their birth are pruned if a later frame
  had them in view and fused nothing into them (``prune_only_seen``). gradSLAM prunes them all: a surface seen in
  one frame of a walk vanished, and so did small objects seen a few times near the image border, where the
  radial confidence is low. Above ``max_points`` the lowest-confidence points are evicted. Map files keep no
  prune schedule.

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
Stages and backends: ``integrate`` is a list of stages (observe, candidate blocks, associate, leftovers,
accumulate, update points, write new points, prune; ``vote_labels`` on its own), each a method of a
``backend.FusionBackend``: "torch" (``torch_backend.py``: tensor ops, the reference and the CUDA path) or
"numba" (``numba_backend.py``: fused CPU loops of ``cpu_kernels.py``, the CPU default when numba is installed).
PointMap keeps the storage (``types.PointStore``), the voxel index and the slot bookkeeping; it has no backend
branches.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.device import resolve_device
from lang3d_ros.fusion.backend import make_backend
from lang3d_ros.fusion.config import FusionConfig
from lang3d_ros.fusion.types import Accumulation, FrameObservation, PointStore, ViewRing
from lang3d_ros.fusion.vertex import confidence_map, pixel_rays
from lang3d_ros.fusion.voxel_index import LayeredIndex, VoxelKeys
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.grounding.objects import LEVELS

logger = logging.getLogger(__name__)

STATE_VERSION = 2
_GROWTH = 1.5


@dataclass
class FusionReport:
    """Outcome of one ``PointMap.integrate`` call. A rejected frame (accepted False) changed nothing."""

    accepted: bool
    reason: str = ""
    """Why the frame was rejected ("" when accepted)."""
    n_matched: int = 0
    """Pixels fused into a map point by projective association."""
    n_new: int = 0
    """Points created."""
    n_points: int = 0
    """Live points after the frame."""
    n_pruned: int = 0
    """Points pruned (unstable) or evicted (cap) by this frame."""
    time_ms: float = 0.0
    """Wall time of the call."""
    n_merged: int = 0
    """Leftover pixels fused into an existing point (its voxel's owner or a gated neighbour's point)."""
    n_candidates: int = 0
    """Map point index entries examined for association (the frustum-culled set)."""
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

    def __init__(self, config: FusionConfig | None = None, device: str | torch.device = "auto"):
        self.config = config if config is not None else FusionConfig()
        self.config.validate()
        self.device = resolve_device(device)
        self._backend = make_backend(self.config, self.device)
        self._keys = VoxelKeys(self.config.voxel_size_m, self.config.block_voxels)
        self._rays_cache: tuple[Intrinsics, torch.Tensor, torch.Tensor] | None = None
        self._reset_storage(0)

    @property
    def backend(self) -> str:
        """ "numba" or "torch": the implementation of the per-frame stages in use."""
        return self._backend.name

    # ------------------------------------------------------------------ storage
    def _reset_storage(self, capacity: int) -> None:
        self._store = PointStore.empty(capacity, self.device)
        self._used = 0  # slots ever handed out (high-water mark)
        self._free = torch.empty(0, dtype=torch.int64, device=self.device)
        self._n_alive = 0
        self._frame_no = 0
        self._births: deque[tuple[int, torch.Tensor, torch.Tensor]] = deque()  # (frame, slots, their conf then)
        self._views: ViewRing | None = None  # with prune_only_seen: the last prune_after_frames frames
        self._index = LayeredIndex(self.device, self.config.index_delta_capacity, self._backend.index_kernels)

    def _allocate(self, n: int) -> torch.Tensor:
        """n free slot ids (reusing pruned slots first); grows the store by 1.5x when full."""
        k = min(n, int(self._free.numel()))
        reused = self._free[self._free.numel() - k :]
        self._free = self._free[: self._free.numel() - k]
        fresh = torch.arange(self._used, self._used + n - k, device=self.device)
        need = self._used + n - k
        if need > self._store.capacity:
            self._store = self._store.grown(max(need, int(self._store.capacity * _GROWTH) + 1024))
        self._used = need
        return self._backend.cat([reused, fresh])

    def _kill(self, slots: torch.Tensor) -> None:
        if slots.numel() == 0:
            return
        self._backend.kill(self._store, slots)
        self._free = self._backend.cat([self._free, slots])
        self._n_alive -= int(slots.numel())

    # ------------------------------------------------------------------ accessors
    def _live(self) -> torch.Tensor:
        """(N,) int64 slots of the live points, ascending (every accessor's order)."""
        alive = self._store.alive[: self._used]
        if alive.device.type == "cpu":  # the same slots as torch.nonzero (the reference), ~7x faster on a CPU
            return torch.from_numpy(np.flatnonzero(alive.numpy()))
        return torch.nonzero(alive).squeeze(1)

    @property
    def num_points(self) -> int:
        return self._n_alive

    @property
    def points_xyz(self) -> torch.Tensor:
        """(N, 3) float32 map-frame positions of live points (slot order, same order as every accessor)."""
        return self._store.xyz[self._live()]

    @property
    def normals(self) -> torch.Tensor:
        """(N, 3) float32 unit normals (sign as gradSLAM: not oriented to any camera)."""
        return self._store.nrm[self._live()]

    @property
    def colors(self) -> torch.Tensor:
        """(N, 3) float32 RGB in [0, 1]."""
        return self._store.rgb[self._live()]

    @property
    def confidence(self) -> torch.Tensor:
        """(N,) float32 accumulated confidence (sum of per-frame alpha)."""
        return self._store.conf[self._live()]

    def live_slots(self) -> np.ndarray:
        """(N,) int64 slots of the live points, in accessor order (``points_xyz``, ``labels``...)."""
        return self._live().cpu().numpy()

    def labels(self, level: int) -> torch.Tensor:
        """(N,) int32 segment label of level ``level`` (0 subpart, 1 part, 2 whole) per live point; -1 unlabelled."""
        return self._store.label[self._level(level)][self._live()]

    def label_weight(self, level: int) -> torch.Tensor:
        """(N,) float32 vote weight of each live point's label (0: unlabelled or contested to a draw)."""
        return self._store.label_w[self._level(level)][self._live()]

    def slot_labels(self, level: int, slots: np.ndarray) -> np.ndarray:
        """(K,) int32 labels at ``slots`` (K,) int64 (e.g. ``FusionReport.pixel_slot``); -1 where a slot is -1,
        unknown or dead."""
        lvl = self._level(level)
        s = np.asarray(slots)
        if s.ndim != 1 or not np.issubdtype(s.dtype, np.integer):
            raise ValueError(f"slots must be a 1-D integer array, got {s.dtype} {s.shape}")
        if self._used == 0:
            return np.full(s.shape, -1, np.int32)
        s = s.astype(np.int64, copy=False)
        ok = (s >= 0) & (s < self._used)
        sc = np.where(ok, s, 0)
        ok &= self._store.alive[: self._used].cpu().numpy()[sc]
        return np.where(ok, self._store.label[lvl, : self._used].cpu().numpy()[sc], -1).astype(np.int32)

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
        lab, w = self._store.label[lvl, : self._used], self._store.label_w[lvl, : self._used]
        lut_t = torch.from_numpy(lut.astype(np.int32)).to(self.device)
        hit = (lab >= 0) & (lab < lut.size)
        new = torch.where(hit, lut_t[lab.clamp(0, lut.size - 1).long()], lab)
        w.copy_(torch.where(new < 0, torch.zeros((), device=self.device), w))
        lab.copy_(new)

    def _level(self, level: int) -> int:
        if not isinstance(level, (int, np.integer)) or not 0 <= int(level) < len(LEVELS):
            raise ValueError(f"level must be 0..{len(LEVELS) - 1} ({LEVELS}), got {level!r}")
        return int(level)

    @property
    def bytes_per_point(self) -> int:
        """Bytes per slot, summed over the per-slot arrays actually allocated (attributes, voxel key, labels and
        vote weights, per-frame scratch) plus one index entry (int64 key + int64 slot)."""
        return self._store.bytes_per_slot() + 16

    # ------------------------------------------------------------------ map files
    def to_numpy(self) -> dict[str, np.ndarray]:
        """Live points as numpy: points_xyz (N,3), normals (N,3), colors (N,3), confidence (N,), labels (3, N)
        int32, label_weight (3, N) float32."""
        live, st = self._live(), self._store
        return {
            "points_xyz": st.xyz[live].cpu().numpy(),
            "normals": st.nrm[live].cpu().numpy(),
            "colors": st.rgb[live].cpu().numpy(),
            "confidence": st.conf[live].cpu().numpy(),
            "labels": st.label[:, live].cpu().numpy(),
            "label_weight": st.label_w[:, live].cpu().numpy(),
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to resume fusing, as numpy arrays (for map files)."""
        live = self._live()
        st = {
            "version": np.array(STATE_VERSION),
            "frame_count": np.array(self._frame_no, dtype=np.int64),
            "birth_frame": self._store.birth[live].cpu().numpy(),
            "voxel_key": self._store.key[live].cpu().numpy(),
            "voxel_grid": np.array([self.config.voxel_size_m, self.config.block_voxels], dtype=np.float64),
        }
        st.update(self.to_numpy())
        return st

    def load_state_dict(self, state: dict) -> None:
        """Replace the map by ``state`` (from ``state_dict``). Raises ValueError, map unchanged, if invalid; a
        state of another version (1: per-point features, before segment labels) is refused, naming it."""
        try:
            version = int(np.asarray(state["version"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"fusion state has no readable version: {exc}") from exc
        if version != STATE_VERSION:
            raise ValueError(
                f"fusion state version {version} is not supported (this build reads version "
                f"{STATE_VERSION}: per-point segment labels; version 1 held per-point features)"
            )
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
        st, dev = self._store, self.device
        self._used = n
        st.xyz[:] = xyz
        st.nrm[:] = torch.from_numpy(arrs["normals"].astype(np.float32)).to(dev)
        st.rgb[:] = torch.from_numpy(arrs["colors"].astype(np.float32)).to(dev)
        st.conf[:] = torch.from_numpy(arrs["confidence"].astype(np.float32)).to(dev)
        st.birth[:] = torch.from_numpy(arrs["birth_frame"].astype(np.int32)).to(dev)
        st.label[:] = torch.from_numpy(arrs["labels"]).to(dev)
        st.label_w[:] = torch.from_numpy(lw.astype(np.float32)).to(dev)
        st.alive[:] = True
        st.key[:] = self._keys.keys(vc)
        grid = np.asarray(state.get("voxel_grid", [0.0, 0.0]), dtype=np.float64).reshape(-1)
        keys = np.asarray(state.get("voxel_key", np.zeros(0)))
        if (
            keys.shape == (n,)
            and grid.shape == (2,)
            and np.array_equal(grid, [self.config.voxel_size_m, self.config.block_voxels])
        ):  # same grid: keep each point's birth voxel
            st.key[:] = torch.from_numpy(keys.astype(np.int64)).to(dev)
        self._n_alive = n
        self._frame_no = frame_count
        self._index.rebuild(st.key[:n], torch.arange(n, device=dev))

    # ------------------------------------------------------------------ integrate
    def integrate(self, frame: Frame, want_pixel_slots: bool = False) -> FusionReport:
        """Fuse one frame. Bad input -> FusionReport(accepted=False, reason), map unchanged. ``want_pixel_slots``:
        the report carries each pixel's slot and alpha (for ``vote_labels`` and the instance layer)."""
        t0 = time.perf_counter()
        reason = self._check(frame)
        obs = None if reason else self._observe(frame)
        if obs is None:
            reason = reason or "no valid depth pixels (all zero, NaN, Inf, negative or out of range)"
            logger.warning("fusion rejected frame %s: %s", getattr(frame, "index", "?"), reason)
            return FusionReport(False, reason, n_points=self._n_alive, time_ms=(time.perf_counter() - t0) * 1e3)
        target = self._backend.new_target(obs.num_pixels)  # per pixel: slot, -(2 + new id), or -1 unused
        local = self._local_index(obs)
        n_cand, n_matched = self._associate(obs, local, target)
        n_merged, new_keys = self._backend.leftovers(self._store, obs, local, target, self._keys)
        n_new = 0 if new_keys is None else int(new_keys.numel())
        acc = self._backend.accumulate(self._store, obs, target, n_new)
        self._backend.update_points(self._store, acc)
        slots = self._write_new_points(acc, new_keys)
        report = FusionReport(True, "", n_matched=n_matched, n_new=n_new, n_merged=n_merged, n_candidates=n_cand)
        if want_pixel_slots:
            report.pixel_slot, report.pixel_alpha = self._backend.pixel_slots(obs, target, slots)
        if self.config.prune_only_seen:
            self._remember_view(frame, obs)
        report.n_pruned = self._prune() + self._evict()
        self._frame_no += 1
        report.n_points = self._n_alive
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        report.time_ms = (time.perf_counter() - t0) * 1e3
        return report

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

    def _observe(self, frame: Frame) -> FrameObservation | None:
        """The frame's world-frame samples on the full pixel grid; None when no pixel is usable."""
        intr = frame.intrinsics
        if self._rays_cache is None or self._rays_cache[0] != intr:
            rays = pixel_rays(intr, self.device)
            v = torch.cat([rays, torch.ones_like(rays[..., :1])], -1)
            self._rays_cache = (intr, rays, confidence_map(v, intr, self.config.sigma, "radial"))
        return self._backend.observe(frame, self._rays_cache[1], self._rays_cache[2], self._keys)

    def _local_index(self, obs: FrameObservation) -> LayeredIndex | None:
        """The index restricted to the blocks around the frame's surface (None for an empty map)."""
        if self._n_alive == 0:
            return None
        return self._index.gather_blocks(self._backend.candidate_blocks(obs, self._keys), self._keys.shift)

    def _associate(self, obs: FrameObservation, local: LayeredIndex | None, target: torch.Tensor) -> tuple[int, int]:
        if local is None:
            return 0, 0
        return self._backend.associate(self._store, obs, local, target)

    def _write_new_points(self, acc: Accumulation, new_keys: torch.Tensor | None) -> torch.Tensor | None:
        """Slots for the frame's new points, written and indexed; None when there are none."""
        if new_keys is None:
            return None
        slots = self._allocate(int(new_keys.numel()))
        self._backend.write_new_points(self._store, acc, slots, new_keys, self._frame_no)
        self._n_alive += int(slots.numel())
        self._index.insert(new_keys, slots, self._store.key, self._store.alive)
        self._births.append((self._frame_no, slots, self._store.conf[slots].clone()))
        return slots

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
        # few passes: a NaN or inf makes the float64 sum non-finite; signed <= 32-bit labels cannot be too large
        if p and not (np.isfinite(alpha.sum(dtype=np.float64)) and alpha.min() >= 0):
            raise ValueError("pixel_alpha must be finite and >= 0")
        fits = labels.dtype.kind == "i" and labels.dtype.itemsize <= 4
        if p and (labels.min() < -1 or (not fits and labels.max() > np.iinfo(np.int32).max)):
            raise ValueError("pixel_labels must be int32 segment ids >= -1")
        if p == 0 or self._used == 0:
            return
        self._backend.vote_labels(
            self._store,
            self._used,
            np.ascontiguousarray(slot, dtype=np.int64),
            np.ascontiguousarray(alpha, dtype=np.float32),
            np.ascontiguousarray(labels, dtype=np.int32),
        )

    # ------------------------------------------------------------------ bounded memory
    def _prune(self) -> int:
        """Prune points born ``prune_after_frames`` frames ago that are still below ``stable_confidence``. With
        ``prune_only_seen`` only those a later frame had in view without fusing into them; those observed again are
        kept, those no frame had in view wait another ``prune_after_frames``."""
        n, unseen = 0, []
        cfg, st = self.config, self._store
        while self._births and self._births[0][0] <= self._frame_no - cfg.prune_after_frames:
            since, slots, conf_then = self._births.popleft()  # born in frame `since`, or re-queued then
            if cfg.prune_only_seen:
                weak = st.alive[slots] & (st.birth[slots] <= since) & (st.conf[slots] < cfg.stable_confidence)
                slots = slots[weak & ~(st.conf[slots] > conf_then)]  # kept: a later frame's pixels fused into it
                seen = self._seen_after(slots, since)
                unseen.append(slots[~seen])
                slots = slots[seen]
            dead = self._backend.kill_unstable(st, slots, since)
            self._kill(dead)
            n += int(dead.numel())
        unseen = [s for s in unseen if s.numel()]
        if unseen:  # never seen since: judged again by the next prune_after_frames frames
            slots = self._backend.cat(unseen)
            self._births.append((self._frame_no, slots, st.conf[slots].clone()))
        return n

    def _remember_view(self, frame: Frame, obs: FrameObservation) -> None:
        """The frame into the view ring (a new ring when the image size changes: earlier views are forgotten)."""
        shape = (self.config.prune_after_frames, obs.height, obs.width)
        if self._views is None or self._views.shape != shape:
            self._views = ViewRing.empty(*shape, self.device)
        self._views.put(self._frame_no, frame.depth_m, obs)

    def _seen_after(self, slots: torch.Tensor, born: int) -> torch.Tensor:
        """(K,) bool: which of ``slots`` some remembered frame after ``born`` had in view (``seen_after``). Which
        side of a surface faced the camera is not checked (a thin board seen from below counts as seen)."""
        if self._views is None or slots.numel() == 0:
            return torch.zeros(slots.shape[0], dtype=torch.bool, device=self.device)
        return self._backend.seen_after(self._store, slots, self._views, born)

    def _evict(self) -> int:
        """Above max_points: drop the lowest-confidence points down to (1 - evict_fraction) * max_points."""
        cfg = self.config
        if self._n_alive <= cfg.max_points:
            return 0
        k = self._n_alive - int(cfg.max_points * (1.0 - cfg.evict_fraction))
        live = self._live()
        self._kill(live[torch.topk(self._store.conf[live], k, largest=False).indices])
        return k
