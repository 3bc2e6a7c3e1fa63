"""The reference fusion backend: every stage as torch tensor ops, on any device (the CUDA path).

On a CPU each stage is several full-image passes (gather, compare, scatter, nonzero), memory-bound, and with
more torch threads than free cores each pass waits on descheduled threads: ``numba_backend.py`` is the fast CPU
path. Arithmetic that decides a discrete outcome (projection to a pixel, the world transform) is written in the
numba kernels' operation order, so that both backends round alike and agree frame by frame.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.fusion.backend import bounded_observation, frame_pose, rotate
from lang3d_ros.fusion.config import FusionConfig
from lang3d_ros.fusion.types import MM, SCRATCH_EMPTY, Accumulation, FrameObservation, PointStore, ViewRing
from lang3d_ros.fusion.vertex import (
    confidence_map,
    edge_normal_map,
    normal_map,
    normal_valid_mask,
    valid_depth_mask,
)
from lang3d_ros.fusion.voxel_index import LayeredIndex, VoxelKeys


def _pixel_of(p: torch.Tensor, R_world_cam, t_world_cam, fx, fy, cx, cy, h: int, w: int):
    """p (K, 3) world points -> z (K,) depth in the camera, ok (K,) bool in front and inside the image, and the
    (K,) int64 row / column of the pixel each projects to (clamped; meaningful where ok). ``R^T (p - t)`` written
    out in the numba kernel's operation order (``cpu_kernels._pixel_of``): u, v land on the same side of a .5."""
    dp, R = p - t_world_cam, R_world_cam
    x, y, z = ((dp[:, 0] * R[0, c] + dp[:, 1] * R[1, c]) + dp[:, 2] * R[2, c] for c in range(3))
    zs = torch.where(z > 0, z, torch.ones_like(z))
    u, v = x / zs * fx + cx, y / zs * fy + cy
    ok = (z > 0) & (u > -1e-3) & (u < w - 0.999) & (v > -1e-3) & (v < h - 0.999)
    return z, ok, torch.round(v).to(torch.int64).clamp_(0, h - 1), torch.round(u).to(torch.int64).clamp_(0, w - 1)


class TorchBackend:
    """``FusionBackend`` as tensor ops (see ``backend.py`` for the stage contracts)."""

    name = "torch"
    index_kernels = None

    def __init__(self, config: FusionConfig, device: torch.device):
        self.config = config
        self.device = device
        self.gate = config.gate_terms()
        self.cos_gate = math.cos(math.radians(config.angle_threshold_deg))

    # ------------------------------------------------------------------ observe
    def observe(
        self, frame: Frame, rays: torch.Tensor, alpha_radial: torch.Tensor, keys: VoxelKeys
    ) -> FrameObservation | None:
        cfg, dev = self.config, self.device
        R, t = frame_pose(frame, dev)
        depth = torch.from_numpy(np.ascontiguousarray(frame.depth_m)).to(dev, torch.float32)
        valid = valid_depth_mask(depth, cfg.min_depth_m, cfg.max_depth_m)
        z = torch.where(valid, depth, torch.zeros((), device=dev))
        verts = torch.cat([rays * z[..., None], z[..., None]], -1)  # (H, W, 3) camera frame
        if cfg.edge_normals:
            nrm, use = edge_normal_map(verts, valid)
            use = use.reshape(-1)
        else:
            nrm = normal_map(verts)
            use = (normal_valid_mask(valid) & (nrm != 0).any(-1)).reshape(-1)
        zu = z.reshape(-1)[use]
        if zu.numel() == 0:
            return None
        vw = rotate(R, verts.reshape(-1, 3)) + t
        nw = rotate(R, nrm.reshape(-1, 3))
        if cfg.confidence_mode == "radial":
            alpha = alpha_radial.reshape(-1)
        else:
            alpha = confidence_map(verts, frame.intrinsics, cfg.sigma, "gradslam").reshape(-1)
        return bounded_observation(frame, rays, R, t, use, vw, nw, alpha, zu.min(), zu.max(), keys)

    # ------------------------------------------------------------------ candidate blocks
    def candidate_blocks(self, obs: FrameObservation, keys: VoxelKeys) -> torch.Tensor:
        dev, use, vw = self.device, obs.use, obs.vertex_world
        bs = keys.voxel_size_m * (1 << keys.local_bits)
        blo = torch.floor(obs.lo_m / bs) - 1
        dims = (torch.floor(obs.hi_m / bs) + 1 - blo + 1).to(torch.int64).tolist()
        ncell = dims[0] * dims[1] * dims[2]
        if ncell <= 8_000_000:
            rel = (torch.floor(vw / bs) - blo).to(torch.int64)
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
            ub = torch.unique(torch.floor(vw[use] / bs).to(torch.int64), dim=0)
            off = torch.stack(torch.meshgrid(*[torch.arange(-1, 2, device=dev)] * 3, indexing="ij"), -1)
            cells = torch.unique((ub[:, None, :] + off.reshape(1, 27, 3)).reshape(-1, 3), dim=0)
        cells = cells + (1 << (keys.block_bits - 1))  # shifted block coords
        cells = cells[((cells >= 0) & (cells < (1 << keys.block_bits))).all(-1)]
        return keys.block_keys(cells)

    # ------------------------------------------------------------------ associate
    def associate(
        self, store: PointStore, obs: FrameObservation, local: LayeredIndex, target: torch.Tensor
    ) -> tuple[int, int]:
        h, w, intr = obs.height, obs.width, obs.intrinsics
        ckey, cand = local.entries()
        if cand.numel():
            cand = cand[store.alive.index_select(0, cand) & (store.key.index_select(0, cand) == ckey)]
        if cand.numel() == 0:
            return 0, 0
        p = store.xyz.index_select(0, cand)
        intr_ = (float(intr.fx), float(intr.fy), float(intr.cx), float(intr.cy))
        _, ok, iv, iu = _pixel_of(p, obs.R_world_cam, obs.t_world_cam, *intr_, h, w)
        q = iv * w + iu
        ok &= obs.use.index_select(0, q)
        d2 = (p - obs.vertex_world.index_select(0, q)).square_().sum(1)
        dot = (store.nrm.index_select(0, cand) * obs.normal_world.index_select(0, q)).sum(1)
        ok &= (d2 < self._gate2(obs, q)) & (dot > self.cos_gate)
        sel = torch.nonzero(ok).squeeze(1)
        if sel.numel() == 0:
            return int(cand.numel()), 0
        self._resolve_many_to_one(store, cand[sel], q[sel], d2[sel], target)
        return int(cand.numel()), int((target >= 0).sum())

    def _gate2(self, obs: FrameObservation, pixels: torch.Tensor) -> torch.Tensor:
        """(K,) pixel ids -> (K,) squared association gate at their depth zq along the optical axis:
        min(d0^2 + k^2 zq^4, cap^2) (``FusionConfig.gate_terms``; operation order as the numba kernel)."""
        d0, k2, cap = self.gate
        dv, R = obs.vertex_world.index_select(0, pixels) - obs.t_world_cam, obs.R_world_cam
        zq = (dv[:, 0] * R[0, 2] + dv[:, 1] * R[1, 2]) + dv[:, 2] * R[2, 2]
        z2 = zq * zq
        return torch.clamp(d0 + k2 * z2 * z2, max=cap)

    def _resolve_many_to_one(
        self, store: PointStore, cs: torch.Tensor, qs: torch.Tensor, d2s: torch.Tensor, target: torch.Tensor
    ) -> None:
        """Gated (slot, pixel, squared distance) triples -> target: highest confidence, then smallest distance,
        then lowest slot (independent of the index layout; a slot listed twice writes itself twice)."""
        dev, hw = self.device, target.numel()
        conf = store.conf.index_select(0, cs)
        best = torch.full((hw,), -1.0, device=dev).scatter_reduce_(0, qs, conf, "amax", include_self=True)
        k = torch.nonzero(conf == best[qs]).squeeze(1)
        cs, qs, d2s = cs[k], qs[k], d2s[k]
        bd = torch.full((hw,), math.inf, device=dev).scatter_reduce_(0, qs, d2s, "amin", include_self=True)
        k = torch.nonzero(d2s == bd[qs]).squeeze(1)
        cs, qs = cs[k], qs[k]
        first = torch.full((hw,), store.capacity, dtype=torch.int64, device=dev).scatter_reduce_(
            0, qs, cs, "amin", include_self=True
        )
        k = first[qs] == cs
        target[qs[k]] = cs[k]

    # ------------------------------------------------------------------ leftovers
    def leftovers(
        self,
        store: PointStore,
        obs: FrameObservation,
        local: LayeredIndex | None,
        target: torch.Tensor,
        keys: VoxelKeys,
    ) -> tuple[int, torch.Tensor | None]:
        cfg = self.config
        left = torch.nonzero(obs.use & (target < 0)).squeeze(1)
        n_merged = 0  # used pixels are inside the keyable range (observe)
        lk = keys.keys(
            torch.floor(obs.vertex_world.index_select(0, left) / keys.voxel_size_m).to(torch.int64) + keys.offset
        )
        if cfg.merge_duplicates and local is not None and left.numel():
            owner = local.find(lk)  # a pixel's voxel lies in the frame's blocks: same answer as the full index
            oc = owner.clamp(min=0)
            has = (owner >= 0) & store.alive.index_select(0, oc) & (store.key.index_select(0, oc) == lk)
            target[left[has]] = owner[has]
            n_merged = int(has.sum())
            left, lk = left[~has], lk[~has]
            if left.numel() and cfg.merge_neighbour_px > 0:
                owner = self._neighbour_owner(store, obs, left, target)
                has = owner >= 0
                target[left[has]] = owner[has]
                n_merged += int(has.sum())
                left, lk = left[~has], lk[~has]
        if left.numel() == 0:
            return n_merged, None
        if cfg.merge_duplicates:
            new_keys, inv = torch.unique(lk, sorted=True, return_inverse=True)
            target[left] = -(2 + inv)
        else:
            new_keys, order = torch.sort(lk, stable=True)
            target[left[order]] = -(2 + torch.arange(left.numel(), device=self.device))
        return n_merged, new_keys

    def _neighbour_owner(
        self, store: PointStore, obs: FrameObservation, left: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """(L,) leftover pixels -> the nearest point (slot) owning a pixel within ``merge_neighbour_px`` that
        passes the distance and normal gates against the pixel, -1 where none (row-major first on ties)."""
        h, w, r = obs.height, obs.width, self.config.merge_neighbour_px
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
        vl = obs.vertex_world.index_select(0, left)[:, None]
        d2 = (store.xyz.index_select(0, sc).view(-1, k, 3) - vl).square_().sum(2)
        dot = (store.nrm.index_select(0, sc).view(-1, k, 3) * obs.normal_world.index_select(0, left)[:, None]).sum(2)
        s = s.view(-1, k)
        ok = (s >= 0) & (d2 < self._gate2(obs, left)[:, None]) & (dot > self.cos_gate)
        d2 = torch.where(ok, d2, torch.full((), math.inf, device=dev))
        best_d2, j = d2.min(1)
        best = s.gather(1, j[:, None]).squeeze(1)
        return torch.where(torch.isfinite(best_d2), best, torch.full_like(best, -1))

    # ------------------------------------------------------------------ accumulate / update / write
    def accumulate(self, store: PointStore, obs: FrameObservation, target: torch.Tensor, n_new: int) -> Accumulation:
        dev, hw, cap, scratch = self.device, target.numel(), store.capacity, store.scratch
        is_old = target >= 0
        tslot = torch.where(is_old, target, torch.full((), cap, dtype=torch.int64, device=dev))
        pos = torch.arange(hw, dtype=torch.int32, device=dev)
        scratch.scatter_reduce_(0, tslot, pos, "amin", include_self=True)  # first pixel of each slot
        first = scratch.index_select(0, tslot).to(torch.int64)
        is_first = (first == pos) & is_old
        uslots = target[is_first]
        n_old = int(uslots.numel())
        scratch[uslots] = SCRATCH_EMPTY
        scratch[cap] = SCRATCH_EMPTY
        dense = torch.cumsum(is_first.to(torch.int64), 0) - 1
        n_t = n_old + n_new
        tid = torch.where(is_old, dense.index_select(0, first), torch.where(target <= -2, n_old - 2 - target, n_t))
        alpha = obs.alpha
        wsum = torch.zeros(n_t + 1, device=dev).index_add_(0, tid, alpha)[:n_t]
        wmax = torch.zeros(n_t + 1, device=dev).scatter_reduce_(0, tid, alpha, "amax", include_self=True)[:n_t]
        rgb = obs.rgb.to(torch.float32) * (1.0 / 255.0)
        av = torch.cat([obs.vertex_world, obs.normal_world, rgb], 1) * alpha[:, None]  # (P, 9)
        mean = torch.zeros(n_t + 1, 9, device=dev).index_add_(0, tid, av)[:n_t] / wsum[:, None]
        return Accumulation(uslots, tid, wsum, wmax, mean)

    def update_points(self, store: PointStore, acc: Accumulation) -> None:
        n_old = acc.n_old
        if n_old == 0:
            return
        s, w_f, m = acc.uslots, acc.wmax[:n_old], acc.mean[:n_old]
        cn = store.conf.index_select(0, s) + w_f
        b = (w_f / cn)[:, None]
        xyz = store.xyz.index_select(0, s)
        store.xyz.index_copy_(0, s, xyz.add_(b * (m[:, 0:3] - xyz)))
        nrm = store.nrm.index_select(0, s)
        nrm += b * (m[:, 3:6] - nrm)
        store.nrm.index_copy_(0, s, nrm / nrm.norm(dim=1, keepdim=True).clamp(min=1e-12))
        rgb = store.rgb.index_select(0, s)
        store.rgb.index_copy_(0, s, rgb.add_(b * (m[:, 6:9] - rgb)))
        store.conf.index_copy_(0, s, cn)

    def write_new_points(
        self, store: PointStore, acc: Accumulation, slots: torch.Tensor, new_keys: torch.Tensor, frame_no: int
    ) -> None:
        nm = acc.mean[acc.n_old :]
        store.xyz.index_copy_(0, slots, nm[:, 0:3].contiguous())
        store.nrm.index_copy_(0, slots, nm[:, 3:6] / nm[:, 3:6].norm(dim=1, keepdim=True).clamp(min=1e-12))
        store.rgb.index_copy_(0, slots, nm[:, 6:9].contiguous())
        store.conf.index_copy_(0, slots, acc.wmax[acc.n_old :].contiguous())
        store.key[slots] = new_keys
        store.birth[slots] = frame_no
        store.alive[slots] = True
        store.label[:, slots] = -1
        store.label_w[:, slots] = 0

    def pixel_slots(
        self, obs: FrameObservation, target: torch.Tensor, slots: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        out = target.clone()
        if slots is not None:
            new = target <= -2
            out[new] = slots[-2 - target[new]]
        alpha = torch.where(out >= 0, obs.alpha, torch.zeros((), device=self.device))
        return out.cpu().numpy(), alpha.cpu().numpy().astype(np.float32)

    # ------------------------------------------------------------------ label votes
    def vote_labels(self, store: PointStore, n_used: int, pixel_slot, pixel_alpha, pixel_labels) -> None:
        dev = self.device
        s = torch.from_numpy(pixel_slot).to(dev)
        ok = (s >= 0) & (s < n_used)
        ok &= store.alive.index_select(0, torch.where(ok, s, torch.zeros_like(s)))
        a = torch.from_numpy(pixel_alpha).to(dev)
        for lvl in range(pixel_labels.shape[0]):
            lab = torch.from_numpy(pixel_labels[lvl]).to(dev).to(torch.int64)
            self._vote_level(store, lvl, s, a, lab, ok & (lab >= 0))

    def _vote_level(
        self, store: PointStore, lvl: int, s: torch.Tensor, a: torch.Tensor, lab: torch.Tensor, ok: torch.Tensor
    ) -> None:
        """(slot, label) pairs -> alpha mass; per slot the heaviest (lowest label on ties) votes; Boyer-Moore."""
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
            0, grp[is_best], pos[is_best], "amin"
        )  # lowest label among the heaviest
        vl, vm = pl[first].to(torch.int32), mass[first]
        cur_l, cur_w = store.label[lvl, slots], store.label_w[lvl, slots]
        w = torch.where(cur_l == vl, cur_w + vm, cur_w - vm)
        store.label[lvl, slots] = torch.where(w < 0, vl, cur_l)
        store.label_w[lvl, slots] = w.abs()

    # ------------------------------------------------------------------ pruning and helpers
    def kill_unstable(self, store: PointStore, slots: torch.Tensor, born: int) -> torch.Tensor:
        k = store.alive[slots] & (store.birth[slots] <= born)
        k &= store.conf[slots] < self.config.stable_confidence
        dead = slots[k]
        store.alive[dead] = False
        store.conf[dead] = 0
        return dead

    def seen_after(self, store: PointStore, slots: torch.Tensor, views: ViewRing, born: int) -> torch.Tensor:
        seen = torch.zeros(slots.shape[0], dtype=torch.bool, device=self.device)
        todo = torch.arange(slots.shape[0], device=self.device)  # not seen yet
        d0, k2, cap = self.gate
        _, h, w = views.shape
        for k in torch.argsort(views.frame_no, descending=True).tolist():  # newest first: most points go early
            if int(views.frame_no[k]) <= born or todo.numel() == 0:
                break
            p = store.xyz.index_select(0, slots[todo])
            z, ok, iv, iu = _pixel_of(p, views.R_world_cam[k], views.t_world_cam[k], *views.intr[k], h, w)
            d = views.depth_mm[k][iv, iu].to(torch.float32) * MM
            d2 = d * d
            diff = z - d
            hit = ok & (d > 0) & ((diff <= 0) | (diff * diff <= torch.clamp(d0 + k2 * d2 * d2, max=cap)))
            seen[todo[hit]] = True
            todo = todo[~hit]
        return seen

    def kill(self, store: PointStore, slots: torch.Tensor) -> None:
        store.alive[slots] = False
        store.conf[slots] = 0
        store.label[:, slots] = -1
        store.label_w[:, slots] = 0

    def new_target(self, n_pixels: int) -> torch.Tensor:
        return torch.full((n_pixels,), -1, dtype=torch.int64, device=self.device)

    def cat(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(tensors)
