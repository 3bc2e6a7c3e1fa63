"""Online PointFusion (gradSLAM / Keller et al. 2013) of RGB-D frames and 3-level language features.

Per accepted frame: vertex and normal maps (``vertex.py``), confidence alpha per pixel, projective
association of the map points near the frame into the live image (distance gate, normal-angle gate,
many-to-one resolved by highest confidence, then smallest squared point-to-vertex distance, as gradSLAM),
confidence-weighted running averages of position, normal, colour and per-level features, and new points
for the pixels left over. Unlike gradSLAM:

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

Language features: per level, pixels with seg_map -1 add nothing; a point's level weight grows only with
covered pixels (``feature_weight(level)``), so uncovered frames never dilute its feature.
Memory per point (``bytes_per_point``): 45 B of attributes (xyz, normal, colour, confidence float32, birth
int32, alive bool), 8 B voxel key, 4 B per-frame scratch, 16 B index entry = 73 B without features; plus
3 * (e D + 4) B with 3-level features of dim D stored in e-byte floats (default float32 for D <= 16, float16
above: D = 3: 121 B; D = 512: 3157 B). Storage grows by
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
from lang3d_ros.semantics.types import KeyframeSemantics, LevelMasks

logger = logging.getLogger(__name__)

STATE_VERSION = 1
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
    seg = np.zeros((12, 16), np.int32)
    sem = KeyframeSemantics(tuple(LevelMasks(seg, np.ones((1, 2), np.float32), np.ones(1, np.float32)) for _ in LEVELS))
    scratch = PointMap(cfg, device="cpu")
    for i in range(2):
        scratch.integrate(Frame(rgb, np.full((12, 16), 1.0 + 0.01 * i, np.float32), intr, np.eye(4), index=i), sem)
    z, live = np.zeros(1, np.int64), np.zeros(1, np.bool_)  # kernels two frames do not reach (index merge, pruning)
    cpu_kernels.compact_sorted(z, z, z, live)
    cpu_kernels.merge_sorted(z, z, z, z)
    cpu_kernels.kill_unstable(z, 0, np.float32(1.0), np.zeros(1, np.int32), live, np.zeros(1, np.float32))
    dt = time.perf_counter() - t0
    (logger.info if dt > 1.0 else logger.debug)("fusion CPU kernels ready in %.1f s", dt)


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


class PointMap:
    """A growing point map fused online from RGB-D frames and optional ``KeyframeSemantics``.

    feature_dim: D of the language features, or None to take it from the first semantics given.
    device: "auto" (CUDA when available), "cpu", "cuda", or a torch.device. feature_dtype: storage type of
    features; None: float16 for D > 16 (halves memory of CLIP-sized features), float32 for narrow latents
    (a few bytes more per point; the numba backend updates them in place). Arithmetic is float32.
    One map per thread: not thread-safe.
    """

    def __init__(
        self,
        config: FusionConfig | None = None,
        feature_dim: int | None = None,
        device: str | torch.device = "auto",
        feature_dtype: torch.dtype | None = None,
    ):
        self.config = config if config is not None else FusionConfig()
        self.config.validate()
        if feature_dim is not None and int(feature_dim) <= 0:
            raise ValueError(f"feature_dim must be positive or None, got {feature_dim}")
        if feature_dtype is not None and not feature_dtype.is_floating_point:
            raise ValueError(f"feature_dtype must be floating point, got {feature_dtype}")
        self.device = resolve_device(device)
        self._cpu = self._resolve_backend(self.config.backend)  # cpu_kernels, or None for the torch path
        self._feature_dtype_arg = feature_dtype
        self._feature_dim = None if feature_dim is None else int(feature_dim)
        self.feature_dtype = self._storage_dtype()
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
        self._feat: list[torch.Tensor] = []
        self._fw: list[torch.Tensor] = []
        if self._feature_dim is not None:
            self._alloc_features()
        self._free = torch.empty(0, dtype=torch.int64, device=dev)
        self._n_alive = 0
        self._frame_no = 0
        self._births: deque[tuple[int, torch.Tensor]] = deque()
        self._index = LayeredIndex(dev, self.config.index_delta_capacity, self._cpu)

    def _storage_dtype(self) -> torch.dtype:
        """The features' storage type: the one asked for, else by D (see the class docstring)."""
        if self._feature_dtype_arg is not None:
            return self._feature_dtype_arg
        return torch.float32 if self._feature_dim is not None and self._feature_dim <= 16 else torch.float16

    def _alloc_features(self) -> None:
        self.feature_dtype = self._storage_dtype()
        d = self._feature_dim
        self._feat = [torch.zeros(self._cap, d, dtype=self.feature_dtype, device=self.device) for _ in LEVELS]
        self._fw = [torch.zeros(self._cap, device=self.device) for _ in LEVELS]

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
        self._feat = [grow(f) for f in self._feat]
        self._fw = [grow(w) for w in self._fw]
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
            self._alive.numpy()[slots.numpy()] = False  # numpy fancy indexing: no torch thread pool
            self._conf.numpy()[slots.numpy()] = 0
        else:
            self._alive[slots] = False
            self._conf[slots] = 0
        for w in self._fw:
            w[slots] = 0
        self._free = self._cat([self._free, slots])
        self._n_alive -= int(slots.numel())

    # ------------------------------------------------------------------ accessors
    def _live(self) -> torch.Tensor:
        return torch.nonzero(self._alive[: self._used]).squeeze(1)

    @property
    def num_points(self) -> int:
        return self._n_alive

    @property
    def feature_dim(self) -> int | None:
        return self._feature_dim

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

    def features(self, level: int) -> torch.Tensor:
        """(N, D) feature_dtype running mean of level ``level`` (0 subpart, 1 part, 2 whole); zeros if unseen."""
        self._check_level(level)
        return self._feat[level][self._live()]

    def feature_weight(self, level: int) -> torch.Tensor:
        """(N,) float32 accumulated weight of the level's feature (0: never covered by a mask)."""
        self._check_level(level)
        return self._fw[level][self._live()]

    def _check_level(self, level: int) -> None:
        if self._feature_dim is None:
            raise ValueError("this map has no language features (feature_dim is None and no semantics seen)")
        if not isinstance(level, (int, np.integer)) or not 0 <= int(level) < len(LEVELS):
            raise ValueError(f"level must be 0..{len(LEVELS) - 1} ({LEVELS}), got {level!r}")

    @property
    def bytes_per_point(self) -> int:
        """Bytes per live point: attributes + voxel key + index entry (+ 3 levels of features and weights)."""
        b = 3 * 12 + 4 + 4 + 1 + 8 + 4 + 16
        if self._feature_dim is not None:
            elt = torch.empty(0, dtype=self.feature_dtype).element_size()
            b += len(LEVELS) * (self._feature_dim * elt + 4)
        return b

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Live points as numpy: points_xyz (N,3), normals (N,3), colors (N,3), confidence (N,), and when
        features exist features (3, N, D) float32 and feature_weight (3, N)."""
        live = self._live()
        out = {
            "points_xyz": self._xyz[live].cpu().numpy(),
            "normals": self._nrm[live].cpu().numpy(),
            "colors": self._rgb[live].cpu().numpy(),
            "confidence": self._conf[live].cpu().numpy(),
        }
        if self._feature_dim is not None:
            out["features"] = np.stack([f[live].float().cpu().numpy() for f in self._feat])
            out["feature_weight"] = np.stack([w[live].cpu().numpy() for w in self._fw])
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to resume fusing, as numpy arrays (for map files)."""
        live = self._live()
        st = {
            "version": np.array(STATE_VERSION),
            "frame_count": np.array(self._frame_no, dtype=np.int64),
            "feature_dim": np.array(-1 if self._feature_dim is None else self._feature_dim, dtype=np.int64),
            "points_xyz": self._xyz[live].cpu().numpy(),
            "normals": self._nrm[live].cpu().numpy(),
            "colors": self._rgb[live].cpu().numpy(),
            "confidence": self._conf[live].cpu().numpy(),
            "birth_frame": self._birth[live].cpu().numpy(),
            "voxel_key": self._key[live].cpu().numpy(),
            "voxel_grid": np.array([self.config.voxel_size_m, self.config.block_voxels], dtype=np.float64),
        }
        for i in range(len(self._feat)):
            st[f"features_{i}"] = self._feat[i][live].cpu().numpy()
            st[f"feature_weight_{i}"] = self._fw[i][live].cpu().numpy()
        return st

    def load_state_dict(self, state: dict) -> None:
        """Replace the map by ``state`` (from ``state_dict``). Raises ValueError, map unchanged, if invalid."""
        try:
            version = int(np.asarray(state["version"]))
            frame_count = int(np.asarray(state["frame_count"]))
            fd = int(np.asarray(state["feature_dim"]))
            arrs = {k: np.asarray(state[k]) for k in ("points_xyz", "normals", "colors", "confidence", "birth_frame")}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"fusion state is missing or has a malformed entry: {exc}") from exc
        if version != STATE_VERSION:
            raise ValueError(f"fusion state version {version} is not {STATE_VERSION}")
        n = arrs["points_xyz"].shape[0]
        for k in ("points_xyz", "normals", "colors"):
            if arrs[k].shape != (n, 3):
                raise ValueError(f"fusion state {k} has shape {arrs[k].shape}, expected ({n}, 3)")
        for k in ("confidence", "birth_frame"):
            if arrs[k].shape != (n,):
                raise ValueError(f"fusion state {k} has shape {arrs[k].shape}, expected ({n},)")
        if not all(np.all(np.isfinite(arrs[k])) for k in ("points_xyz", "normals", "colors", "confidence")):
            raise ValueError("fusion state has non-finite values")
        if fd == -1:
            fd_new = self._feature_dim if "features_0" not in state else None
        else:
            fd_new = fd
        feats = []
        if fd != -1:
            for i in range(len(LEVELS)):
                f = np.asarray(state.get(f"features_{i}"))
                w = np.asarray(state.get(f"feature_weight_{i}"))
                if f.shape != (n, fd) or w.shape != (n,) or not np.all(np.isfinite(w)):
                    raise ValueError(f"fusion state level {i} features {f.shape} / weights {w.shape} do not match ({n}, {fd})")
                feats.append((f, w))
        xyz = torch.from_numpy(np.ascontiguousarray(arrs["points_xyz"], dtype=np.float32)).to(self.device)
        vc, ok = self._keys.voxel_coords(xyz)
        if not bool(ok.all()):
            raise ValueError("fusion state has points outside the keyable coordinate range")
        # validated: replace
        self._feature_dim = fd_new
        self._reset_storage(n)
        self._used = n
        self._xyz[:] = xyz
        self._nrm[:] = torch.from_numpy(arrs["normals"].astype(np.float32)).to(self.device)
        self._rgb[:] = torch.from_numpy(arrs["colors"].astype(np.float32)).to(self.device)
        self._conf[:] = torch.from_numpy(arrs["confidence"].astype(np.float32)).to(self.device)
        self._birth[:] = torch.from_numpy(arrs["birth_frame"].astype(np.int32)).to(self.device)
        self._alive[:] = True
        self._key[:] = self._keys.keys(vc)
        grid = np.asarray(state.get("voxel_grid", [0.0, 0.0]), dtype=np.float64).reshape(-1)
        keys = np.asarray(state.get("voxel_key", np.zeros(0)))
        if keys.shape == (n,) and grid.shape == (2,) and np.array_equal(
            grid, [self.config.voxel_size_m, self.config.block_voxels]
        ):  # same grid: keep each point's birth voxel
            self._key[:] = torch.from_numpy(keys.astype(np.int64)).to(self.device)
        for i, (f, w) in enumerate(feats):
            self._feat[i][:] = torch.from_numpy(f).to(self.device, self.feature_dtype)
            self._fw[i][:] = torch.from_numpy(w.astype(np.float32)).to(self.device)
        self._n_alive = n
        self._frame_no = frame_count
        self._index.rebuild(self._key[:n], torch.arange(n, device=self.device))

    # ------------------------------------------------------------------ input checks
    def _check(self, frame, semantics) -> str:
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
        if semantics is None:
            return ""
        if not isinstance(semantics, KeyframeSemantics):
            return f"semantics must be KeyframeSemantics, got {type(semantics).__name__}"
        dims = set()
        for name, lv in zip(LEVELS, semantics.levels):
            seg, feats = np.asarray(lv.seg_map), np.asarray(lv.features)
            if not np.issubdtype(seg.dtype, np.integer):
                return f"semantics level {name}: seg_map must be integer, got {seg.dtype}"
            try:
                lv.validate(frame.height, frame.width)
            except ValueError as exc:
                return f"semantics level {name}: {exc}"
            if seg.size and seg.min() < -1:
                return f"semantics level {name}: seg_map has ids below -1"
            if not np.all(np.isfinite(feats)):
                return f"semantics level {name}: features are not finite"
            dims.add(int(feats.shape[1]))
        if len(dims) != 1:
            return f"semantics levels have different feature dims {sorted(dims)}"
        d = dims.pop()
        if self._feature_dim is not None and d != self._feature_dim:
            return f"semantics feature dim {d} != map feature_dim {self._feature_dim}"
        return ""

    # ------------------------------------------------------------------ integrate
    def integrate(self, frame: Frame, semantics: KeyframeSemantics | None = None) -> FusionReport:
        """Fuse one frame (and its semantics). Bad input -> FusionReport(accepted=False, reason), map unchanged."""
        t0 = time.perf_counter()
        reason = self._check(frame, semantics)
        if reason:
            logger.warning("fusion rejected frame %s: %s", getattr(frame, "index", "?"), reason)
            return FusionReport(False, reason, n_points=self._n_alive, time_ms=(time.perf_counter() - t0) * 1e3)
        obs = self._observe(frame, semantics)
        if obs is None:
            reason = "no valid depth pixels (all zero, NaN, Inf, negative or out of range)"
            logger.warning("fusion rejected frame %s: %s", frame.index, reason)
            return FusionReport(False, reason, n_points=self._n_alive, time_ms=(time.perf_counter() - t0) * 1e3)
        rep = self._fuse(obs)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        rep.time_ms = (time.perf_counter() - t0) * 1e3
        return rep

    def _rays(self, intr: Intrinsics) -> tuple[torch.Tensor, torch.Tensor]:
        if self._rays_cache is None or self._rays_cache[0] != intr:
            rays = pixel_rays(intr, self.device)
            v = torch.cat([rays, torch.ones_like(rays[..., :1])], -1)
            alpha = confidence_map(v, intr, self.config.sigma, "radial")
            self._rays_cache = (intr, rays, alpha)
        return self._rays_cache[1], self._rays_cache[2]

    def _observe(self, frame: Frame, semantics: KeyframeSemantics | None) -> dict | None:
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
            vw = torch.addmm(t, verts.reshape(-1, 3), R.T)
            nw = nrm.reshape(-1, 3) @ R.T
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
        sem = None
        if semantics is not None:
            sem = []
            for lv in semantics.levels:
                seg = torch.from_numpy(np.ascontiguousarray(lv.seg_map, dtype=np.int64)).to(dev).reshape(-1)
                feats = torch.from_numpy(np.ascontiguousarray(lv.features, dtype=np.float32)).to(dev)
                sem.append((seg, feats))
        return dict(h=h, w=w, intr=intr, R=R, t=t, use=use, vw=vw, nw=nw, alpha=alpha, rgb=rgb, sem=sem, lo=lo, hi=hi)

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

    def _fuse(self, o: dict) -> FusionReport:
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
        n_t = n_old + n_new
        fmean = self._feature_means(o, tid, n_t) if o["sem"] is not None else []

        # update existing points: c <- c + w, x <- (c x + w x_frame) / (c + w)
        if n_old:
            w_f = wmax[:n_old]
            if self._cpu is not None:
                self._cpu.run_split(self._cpu.update_points, n_old, self._threads(), uslots.numpy(), w_f.numpy(),
                                    mean.numpy(), self._xyz.numpy(), self._nrm.numpy(), self._rgb.numpy(),
                                    self._conf.numpy())
            else:
                self._update_points(uslots, w_f, mean[:n_old])
            if self._cpu is not None and self.feature_dtype == torch.float32 and fmean:
                self._cpu.run_each([(self._cpu.update_features, (
                    rows.numpy(), ws.numpy(), fm.numpy(), n_old, uslots.numpy(), wmax.numpy(), wsum.numpy(),
                    self._feat[lvl].numpy(), self._fw[lvl].numpy())) for lvl, (ws, rows, fm) in enumerate(fmean)],
                    self._threads())
                fmean_torch = []
            else:
                fmean_torch = fmean
            for lvl, (ws, rows, fm) in enumerate(fmean_torch):
                k = int(torch.searchsorted(rows, n_old))  # rows of existing points come first
                if k == 0:
                    continue
                t = rows[:k]
                s = uslots[t]
                wl = w_f[t] * ws[t] / wsum[t]  # the level's share of the point's frame weight
                fwn = self._fw[lvl][s] + wl
                f = self._feat[lvl][s].to(torch.float32)
                f += (wl / fwn)[:, None] * (fm[:k] - f)
                self._feat[lvl][s] = f.to(self.feature_dtype)
                self._fw[lvl][s] = fwn

        # new points
        if n_new:
            slots = self._allocate(n_new)
            if self._cpu is not None:
                self._cpu.write_new_points(
                    slots.numpy(), mean.numpy(), wmax.numpy(), n_old, new_keys.numpy(), self._frame_no,
                    self._xyz.numpy(), self._nrm.numpy(), self._rgb.numpy(), self._conf.numpy(), self._key.numpy(),
                    self._birth.numpy(), self._alive.numpy())
            else:
                nm = mean[n_old:]
                self._xyz.index_copy_(0, slots, nm[:, 0:3].contiguous())
                self._nrm.index_copy_(0, slots, nm[:, 3:6] / nm[:, 3:6].norm(dim=1, keepdim=True).clamp(min=1e-12))
                self._rgb.index_copy_(0, slots, nm[:, 6:9].contiguous())
                self._conf.index_copy_(0, slots, wmax[n_old:].contiguous())
                self._key[slots] = new_keys
                self._birth[slots] = self._frame_no
                self._alive[slots] = True
            for lvl in range(len(self._feat)):
                if self._cpu is not None and self.feature_dtype == torch.float32:
                    if fmean:
                        ws, rows, fm = (x.numpy() for x in fmean[lvl])
                    else:  # no semantics this frame: new points start unseen
                        ws, rows, fm = np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, 1), np.float32)
                    self._cpu.new_features(slots.numpy(), rows, ws, fm, n_old, wmax.numpy(), wsum.numpy(),
                                           self._feat[lvl].numpy(), self._fw[lvl].numpy())
                    continue
                self._feat[lvl][slots] = 0
                self._fw[lvl][slots] = 0
                if fmean:
                    ws, rows, fm = fmean[lvl]
                    k = int(torch.searchsorted(rows, n_old))
                    t = rows[k:]
                    s = slots[t - n_old]
                    self._feat[lvl][s] = fm[k:].to(self.feature_dtype)
                    self._fw[lvl][s] = wmax[t] * ws[t] / wsum[t]
            self._n_alive += n_new
            self._index.insert(new_keys, slots, self._key, self._alive)
            self._births.append((self._frame_no, slots))

        n_pruned = self._prune() + self._evict()
        self._frame_no += 1
        return FusionReport(
            True, "", n_matched=n_matched, n_new=n_new, n_points=self._n_alive, n_pruned=n_pruned,
            n_merged=n_merged, n_candidates=n_cand,
        )

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

    def _feature_means(self, o: dict, tid: torch.Tensor, n_t: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per level: ws (n_t,) alpha mass of each target's mask-covered pixels, rows (R,) the covered targets
        ascending, fmean (R, D) float32 their alpha-weighted mean mask feature (uncovered targets take no row)."""
        if self._feature_dim is None:
            self._feature_dim = int(o["sem"][0][1].shape[1])
            self._alloc_features()
        if self._cpu is not None:  # the levels are independent: one thread each
            calls = [(self._cpu.feature_means, (seg.numpy(), feats.numpy(), o["use"].numpy(), o["alpha"].numpy(),
                                                tid.numpy(), n_t)) for seg, feats in o["sem"]]
            return [tuple(torch.from_numpy(a) for a in r) for r in self._cpu.run_each(calls, self._threads())]
        out = []
        for seg, feats in o["sem"]:
            cov = torch.nonzero(o["use"] & (seg >= 0)).squeeze(1)
            t, sg, a = tid[cov], seg[cov], o["alpha"][cov]
            ws = torch.zeros(n_t, device=self.device).index_add_(0, t, a)
            if feats.shape[1] > 16:  # wide: reduce (target, mask) pairs first, D-wide rows only for covered targets
                if cov.numel():
                    pair, inv = torch.unique(t * feats.shape[0] + sg, return_inverse=True)
                    pw = torch.zeros(pair.numel(), device=self.device).index_add_(0, inv, a)
                    t, sg, a = pair // feats.shape[0], pair % feats.shape[0], pw
                rows, row = torch.unique(t, return_inverse=True)
                fs = torch.zeros(rows.numel(), feats.shape[1], device=self.device).index_add_(0, row, feats[sg] * a[:, None])
            else:  # narrow: a dense (n_t, D) block is cheaper than finding the covered targets first
                fs = torch.zeros(n_t, feats.shape[1], device=self.device).index_add_(0, t, feats[sg] * a[:, None])
                rows = torch.nonzero(ws > 0).squeeze(1)
                fs = fs[rows]
            out.append((ws, rows, fs / ws[rows, None]))
        return out

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
        pc = (p - o["t"]) @ o["R"]  # R^T (p - t)
        z = pc[:, 2]
        zs = torch.where(z > 0, z, torch.ones_like(z))
        u = pc[:, 0] / zs * float(intr.fx) + float(intr.cx)
        v = pc[:, 1] / zs * float(intr.fy) + float(intr.cy)
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
                k = self._alive[slots] & (self._birth[slots] == born) & (self._conf[slots] < self.config.stable_confidence)
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
