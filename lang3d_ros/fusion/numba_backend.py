"""The fast CPU fusion backend: each stage calls the fused numba loops of ``cpu_kernels.py``.

The kernels' positional argument order is a contract that lives in this file only (PointMap never calls a
kernel). Same rules and tie-breaks as ``torch_backend.py`` (the reference; ``test/test_fusion_backends.py``).
Whole-image fills and copies use numpy, not torch, so no torch thread pool wakes per frame; row-split kernels
run on ``fusion.cpu_threads`` plain threads (``cpu_kernels.run_split``). CPU tensors only.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.fusion import cpu_kernels as K
from lang3d_ros.fusion.backend import bounded_observation, frame_pose
from lang3d_ros.fusion.config import FusionConfig
from lang3d_ros.fusion.types import MM, Accumulation, FrameObservation, PointStore, ViewRing
from lang3d_ros.fusion.vertex import confidence_map, valid_depth_mask
from lang3d_ros.fusion.voxel_index import LayeredIndex, VoxelKeys

logger = logging.getLogger(__name__)

_kernels_ready = False


def warm_up_kernels() -> None:
    """Compile (first run on a machine: ~5-10 s) or load from numba's cache every kernel, once per process, on
    tiny inputs: the first real frame then runs at full speed."""
    global _kernels_ready
    if _kernels_ready:
        return
    _kernels_ready = True
    t0 = time.perf_counter()
    from lang3d_ros.fusion.pointfusion import PointMap  # a throwaway map reaches most kernels with two frames
    from lang3d_ros.geometry.camera import Intrinsics
    from lang3d_ros.grounding.objects import LEVELS

    intr = Intrinsics(8.0, 8.0, 7.5, 5.5, 16, 12)
    rgb = np.full((12, 16, 3), 128, np.uint8)
    scratch = PointMap(FusionConfig(backend="numba"), device="cpu")
    labels = np.zeros((len(LEVELS), 12 * 16), np.int32)
    for i in range(2):
        rep = scratch.integrate(
            Frame(rgb, np.full((12, 16), 1.0 + 0.01 * i, np.float32), intr, np.eye(4), index=i), want_pixel_slots=True
        )
        scratch.vote_labels(rep.pixel_slot, rep.pixel_alpha, labels)
    z, live = np.zeros(1, np.int64), np.zeros(1, np.bool_)  # kernels two frames do not reach (index, pruning)
    K.compact_sorted(z, z, z, live)
    K.merge_sorted(z, z, z, z)
    K.kill_unstable(z, 0, np.float32(1.0), np.zeros(1, np.int32), live, np.zeros(1, np.float32))
    f3 = np.zeros((1, 3), np.float32)
    ring = (np.zeros((1, 1, 1), np.int16), np.zeros((1, 3, 3), np.float32), f3, np.zeros((1, 4), np.float32), z)
    K.seen_after(z, f3, *ring, 0, np.zeros(3, np.float32), np.float32(MM), live, 0, 1)
    dt = time.perf_counter() - t0
    (logger.info if dt > 1.0 else logger.debug)("fusion CPU kernels ready in %.1f s", dt)


class NumbaBackend:
    """``FusionBackend`` on ``cpu_kernels`` (see ``backend.py`` for the stage contracts)."""

    name = "numba"
    index_kernels = K

    def __init__(self, config: FusionConfig, device: torch.device):
        if device.type != "cpu":
            raise ValueError(f"fusion backend 'numba' runs on the CPU only, device is {device}")
        self.config = config
        self.device = device
        self.gate = np.asarray(config.gate_terms(), dtype=np.float32)
        self.cos_gate = np.float32(math.cos(math.radians(config.angle_threshold_deg)))
        warm_up_kernels()

    def _threads(self) -> int:
        """Threads for the row-split kernels: fusion.cpu_threads, or torch's intra-op thread count when 0."""
        return self.config.cpu_threads or torch.get_num_threads()

    # ------------------------------------------------------------------ observe
    def observe(
        self, frame: Frame, rays: torch.Tensor, alpha_radial: torch.Tensor, keys: VoxelKeys
    ) -> FrameObservation | None:
        cfg = self.config
        h, w = frame.height, frame.width
        R, t = frame_pose(frame, self.device)
        depth = np.ascontiguousarray(frame.depth_m, dtype=np.float32)
        vw, nw = np.empty((h * w, 3), np.float32), np.empty((h * w, 3), np.float32)
        use, zlo, zhi = np.empty(h * w, np.bool_), np.empty(h, np.float32), np.empty(h, np.float32)
        K.run_split(
            K.observe,
            h,
            self._threads(),
            depth,
            rays.numpy(),
            np.float32(cfg.min_depth_m),
            np.float32(cfg.max_depth_m),
            R.numpy(),
            t.numpy(),
            vw,
            nw,
            use,
            zlo,
            zhi,
            bool(cfg.edge_normals),
        )
        if not np.isfinite(zlo).any():
            return None
        if cfg.confidence_mode == "radial":
            alpha = alpha_radial.reshape(-1)
        else:
            dt = torch.from_numpy(depth)
            z = torch.where(valid_depth_mask(dt, cfg.min_depth_m, cfg.max_depth_m), dt, torch.zeros(()))
            verts = torch.cat([rays * z[..., None], z[..., None]], -1)
            alpha = confidence_map(verts, frame.intrinsics, cfg.sigma, "gradslam").reshape(-1)
        return bounded_observation(
            frame,
            rays,
            R,
            t,
            torch.from_numpy(use),
            torch.from_numpy(vw),
            torch.from_numpy(nw),
            alpha,
            torch.tensor(float(zlo.min())),
            torch.tensor(float(zhi.max())),
            keys,
        )

    # ------------------------------------------------------------------ candidate blocks
    def candidate_blocks(self, obs: FrameObservation, keys: VoxelKeys) -> torch.Tensor:
        bs = keys.voxel_size_m * (1 << keys.local_bits)
        blo = torch.floor(obs.lo_m / bs) - 1
        dims = (torch.floor(obs.hi_m / bs) + 1 - blo + 1).to(torch.int64)
        if int(dims.prod()) > 8_000_000:  # a dense grid too large: the torch path's sparse variant
            from lang3d_ros.fusion.torch_backend import TorchBackend

            return TorchBackend(self.config, self.device).candidate_blocks(obs, keys)
        return torch.from_numpy(
            K.candidate_blocks(
                obs.use.numpy(),
                obs.vertex_world.numpy(),
                np.float32(bs),
                blo.to(torch.int64).numpy(),
                dims.numpy(),
                1 << (keys.block_bits - 1),
                keys.block_bits,
            )
        )

    # ------------------------------------------------------------------ associate
    def associate(
        self, store: PointStore, obs: FrameObservation, local: LayeredIndex, target: torch.Tensor
    ) -> tuple[int, int]:
        intr = obs.intrinsics
        ckey, cand = local.entries()
        n = cand.numel()
        q, d2, conf = np.empty(n, np.int64), np.empty(n, np.float32), np.empty(n, np.float32)
        n_live = sum(
            K.run_split(
                K.project_candidates,
                n,
                self._threads(),
                store.xyz.numpy(),
                store.nrm.numpy(),
                store.conf.numpy(),
                store.alive.numpy(),
                store.key.numpy(),
                cand.numpy(),
                ckey.numpy(),
                obs.R_world_cam.numpy(),
                obs.t_world_cam.numpy(),
                np.float32(intr.fx),
                np.float32(intr.fy),
                np.float32(intr.cx),
                np.float32(intr.cy),
                obs.height,
                obs.width,
                obs.use.numpy(),
                obs.vertex_world.numpy(),
                obs.normal_world.numpy(),
                self.gate,
                self.cos_gate,
                q,
                d2,
                conf,
            )
        )
        return n_live, K.resolve_many_to_one(cand.numpy(), q, d2, conf, target.numpy())

    # ------------------------------------------------------------------ leftovers
    def leftovers(
        self,
        store: PointStore,
        obs: FrameObservation,
        local: LayeredIndex | None,
        target: torch.Tensor,
        keys: VoxelKeys,
    ) -> tuple[int, torch.Tensor | None]:
        cfg, t_np, use = self.config, target.numpy(), obs.use.numpy()
        merge = cfg.merge_duplicates and local is not None
        pixel_key = np.empty(t_np.shape[0], np.int64)
        ckey, cslots = local.entries() if merge else (torch.empty(0, dtype=torch.int64),) * 2
        table, bits = K.build_table(ckey.numpy(), cslots.numpy(), store.alive.numpy(), store.key.numpy())
        n_merged = sum(
            K.run_split(
                K.voxel_owner,
                t_np.shape[0],
                self._threads(),
                t_np,
                use,
                obs.vertex_world.numpy(),
                np.float32(keys.voxel_size_m),
                keys.offset,
                keys.local_bits,
                keys.block_bits,
                table,
                bits,
                merge,
                pixel_key,
            )
        )
        by_neighbour = merge and cfg.merge_neighbour_px > 0
        owner = np.empty(t_np.shape[0] if by_neighbour else 0, np.int64)
        if by_neighbour:
            K.run_split(
                K.neighbour_owner,
                obs.height,
                self._threads(),
                t_np,
                use,
                obs.vertex_world.numpy(),
                obs.normal_world.numpy(),
                store.xyz.numpy(),
                store.nrm.numpy(),
                obs.height,
                obs.width,
                cfg.merge_neighbour_px,
                self.gate,
                obs.R_world_cam.numpy(),
                obs.t_world_cam.numpy(),
                self.cos_gate,
                owner,
            )
        n_nbr, left, lk = K.take_owners(t_np, use, owner, by_neighbour, pixel_key)
        if left.shape[0] == 0:
            return n_merged + n_nbr, None
        order = np.argsort(lk, kind="stable")
        return n_merged + n_nbr, torch.from_numpy(K.group_new(left, lk, order, t_np, cfg.merge_duplicates))

    # ------------------------------------------------------------------ accumulate / update / write
    def accumulate(self, store: PointStore, obs: FrameObservation, target: torch.Tensor, n_new: int) -> Accumulation:
        out = K.accumulate(
            target.numpy(),
            obs.vertex_world.numpy(),
            obs.normal_world.numpy(),
            obs.rgb.numpy(),
            obs.alpha.numpy(),
            n_new,
            store.scratch.numpy(),
        )
        return Accumulation(*(torch.from_numpy(a) for a in out))

    def update_points(self, store: PointStore, acc: Accumulation) -> None:
        n_old = acc.n_old
        if n_old:
            K.run_split(
                K.update_points,
                n_old,
                self._threads(),
                acc.uslots.numpy(),
                acc.wmax.numpy(),
                acc.mean.numpy(),
                store.xyz.numpy(),
                store.nrm.numpy(),
                store.rgb.numpy(),
                store.conf.numpy(),
            )

    def write_new_points(
        self, store: PointStore, acc: Accumulation, slots: torch.Tensor, new_keys: torch.Tensor, frame_no: int
    ) -> None:
        s = slots.numpy()
        K.write_new_points(
            s,
            acc.mean.numpy(),
            acc.wmax.numpy(),
            acc.n_old,
            new_keys.numpy(),
            frame_no,
            store.xyz.numpy(),
            store.nrm.numpy(),
            store.rgb.numpy(),
            store.conf.numpy(),
            store.key.numpy(),
            store.birth.numpy(),
            store.alive.numpy(),
        )
        store.label.numpy()[:, s] = -1
        store.label_w.numpy()[:, s] = 0

    # ------------------------------------------------------------------ label votes
    def pixel_slots(
        self, obs: FrameObservation, target: torch.Tensor, slots: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        s = np.zeros(0, np.int64) if slots is None else slots.numpy()
        return K.pixel_slots(target.numpy(), s, obs.alpha.numpy())

    def vote_labels(self, store: PointStore, n_used: int, pixel_slot, pixel_alpha, pixel_labels) -> None:
        K.vote_labels(
            pixel_slot,
            n_used,
            store.alive.numpy(),
            store.scratch.numpy(),
            pixel_alpha,
            pixel_labels,
            store.label.numpy(),
            store.label_w.numpy(),
        )

    # ------------------------------------------------------------------ pruning and helpers
    def kill_unstable(self, store: PointStore, slots: torch.Tensor, born: int) -> torch.Tensor:
        return torch.from_numpy(
            K.kill_unstable(
                slots.numpy(),
                born,
                np.float32(self.config.stable_confidence),
                store.birth.numpy(),
                store.alive.numpy(),
                store.conf.numpy(),
            )
        )

    def seen_after(self, store: PointStore, slots: torch.Tensor, views: ViewRing, born: int) -> torch.Tensor:
        out = np.zeros(slots.shape[0], np.bool_)
        K.run_split(
            K.seen_after,
            slots.shape[0],
            self._threads(),
            slots.numpy(),
            store.xyz.numpy(),
            views.depth_mm.numpy(),
            views.R_world_cam.numpy(),
            views.t_world_cam.numpy(),
            views.intr.numpy(),
            views.frame_no.numpy(),
            born,
            self.gate,
            np.float32(MM),
            out,
        )
        return torch.from_numpy(out)

    def kill(self, store: PointStore, slots: torch.Tensor) -> None:
        s = slots.numpy()  # numpy fancy indexing: no torch thread pool
        store.alive.numpy()[s] = False
        store.conf.numpy()[s] = 0
        store.label.numpy()[:, s] = -1
        store.label_w.numpy()[:, s] = 0

    def new_target(self, n_pixels: int) -> torch.Tensor:
        return torch.from_numpy(np.full(n_pixels, -1, np.int64))

    def cat(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([t.numpy() for t in tensors]))
