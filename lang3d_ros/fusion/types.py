"""Typed containers passed between PointMap and its fusion backends (``backend.py``).

``PointStore``: the per-slot arrays of the map (storage, owned by PointMap, written in place by the backends).
``FrameObservation``: one frame as the stages see it (world-frame vertex and normal maps, usable mask, alpha).
``Accumulation``: the frame's pixels grouped by the point they fuse into (dense target ids, sums and means).
``ViewRing``: the last frames' depth and poses, for pruning only what a later frame saw.
All tensors live on the map's device; on the numba backend they are CPU tensors whose ``.numpy()`` views the
kernels write through.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.grounding.objects import LEVELS

SCRATCH_EMPTY = 2**31 - 1
"""Value of an unused ``PointStore.scratch`` entry (matches ``cpu_kernels.EMPTY``)."""


@dataclass
class PointStore:
    """Per-slot arrays of capacity C (slots beyond ``PointMap``'s high-water mark are unused).

    xyz (C, 3) float32 world position; nrm (C, 3) float32 unit normal; rgb (C, 3) float32 colour in [0, 1];
    conf (C,) float32 confidence; key (C,) int64 voxel key of the point's birth voxel (-1 unused); birth (C,)
    int32 frame number of birth; alive (C,) bool; label (L, C) int32 segment label per level (-1 none);
    label_w (L, C) float32 vote weight per level; scratch (C + 1,) int32 per-frame dedupe (SCRATCH_EMPTY between
    frames; entry C is a dummy slot for unused pixels).
    """

    xyz: torch.Tensor
    nrm: torch.Tensor
    rgb: torch.Tensor
    conf: torch.Tensor
    key: torch.Tensor
    birth: torch.Tensor
    alive: torch.Tensor
    label: torch.Tensor
    label_w: torch.Tensor
    scratch: torch.Tensor

    @staticmethod
    def empty(capacity: int, device: torch.device) -> "PointStore":
        c, dev = int(capacity), device
        return PointStore(
            xyz=torch.zeros(c, 3, device=dev),
            nrm=torch.zeros(c, 3, device=dev),
            rgb=torch.zeros(c, 3, device=dev),
            conf=torch.zeros(c, device=dev),
            key=torch.full((c,), -1, dtype=torch.int64, device=dev),
            birth=torch.zeros(c, dtype=torch.int32, device=dev),
            alive=torch.zeros(c, dtype=torch.bool, device=dev),
            label=torch.full((len(LEVELS), c), -1, dtype=torch.int32, device=dev),
            label_w=torch.zeros((len(LEVELS), c), device=dev),
            scratch=torch.full((c + 1,), SCRATCH_EMPTY, dtype=torch.int32, device=dev),
        )

    @property
    def capacity(self) -> int:
        return int(self.conf.shape[0])

    def grown(self, capacity: int) -> "PointStore":
        """A copy with ``capacity`` (>= the current capacity) slots: the existing slots copied, the new ones
        empty; scratch reset."""
        if capacity < self.capacity:
            raise ValueError(f"cannot shrink a PointStore from {self.capacity} to {capacity} slots")
        out = PointStore.empty(capacity, self.conf.device)
        c = self.capacity
        for f in fields(self):
            if f.name == "scratch":
                continue
            new, old = getattr(out, f.name), getattr(self, f.name)
            if f.name in ("label", "label_w"):
                new[:, :c] = old
            else:
                new[:c] = old
        return out

    def bytes_per_slot(self) -> int:
        """Bytes per slot, summed over every per-slot array as allocated (the scratch's dummy entry excluded)."""
        total = 0
        for f in fields(self):
            t = getattr(self, f.name)
            per_slot = t.shape[0] if f.name in ("label", "label_w") else (t.shape[1:].numel() if t.dim() > 1 else 1)
            total += per_slot * t.element_size()
        return total


DEPTH_MM_FAR = 32767
"""``ViewRing.depth_mm`` of a pixel at 32.767 m or beyond (or with no return, Inf)."""
MM = 0.001
"""Metres per ``ViewRing.depth_mm`` unit (both backends multiply in float32)."""


@dataclass
class ViewRing:
    """The last V fused frames as pruning needs them (``FusionConfig.prune_only_seen``): one slot per frame, the
    oldest overwritten. depth_mm (V, H, W) int16 depth as measured in millimetres (0: none; ``DEPTH_MM_FAR``);
    R_world_cam (V, 3, 3) and t_world_cam (V, 3) float32 poses; intr (V, 4) float32 fx, fy, cx, cy; frame_no (V,)
    int64 the frame in each slot (-1: empty). 2 B per pixel per frame."""

    depth_mm: torch.Tensor
    R_world_cam: torch.Tensor
    t_world_cam: torch.Tensor
    intr: torch.Tensor
    frame_no: torch.Tensor

    @staticmethod
    def empty(n_views: int, height: int, width: int, device: torch.device) -> "ViewRing":
        v, dev = int(n_views), device
        return ViewRing(
            depth_mm=torch.zeros((v, height, width), dtype=torch.int16, device=dev),
            R_world_cam=torch.zeros((v, 3, 3), device=dev),
            t_world_cam=torch.zeros((v, 3), device=dev),
            intr=torch.zeros((v, 4), device=dev),
            frame_no=torch.full((v,), -1, dtype=torch.int64, device=dev),
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(V, H, W)."""
        return tuple(self.depth_mm.shape)

    def put(self, frame_no: int, depth_m: np.ndarray, obs: "FrameObservation") -> None:
        """Frame ``frame_no`` into slot frame_no % V. depth_m (H, W) metres as measured."""
        k = frame_no % self.shape[0]
        mm = np.multiply(depth_m, 1000.0, dtype=np.float32)
        np.nan_to_num(mm, copy=False, nan=0.0, posinf=DEPTH_MM_FAR, neginf=0.0)
        np.clip(mm, 0.0, DEPTH_MM_FAR, out=mm)
        if self.depth_mm.device.type == "cpu":
            self.depth_mm[k].numpy()[...] = mm  # truncates to whole millimetres
        else:
            self.depth_mm[k] = torch.from_numpy(mm.astype(np.int16)).to(self.depth_mm.device)
        self.R_world_cam[k] = obs.R_world_cam
        self.t_world_cam[k] = obs.t_world_cam
        i = obs.intrinsics
        self.intr[k] = torch.tensor([i.fx, i.fy, i.cx, i.cy], dtype=torch.float32)
        self.frame_no[k] = frame_no


@dataclass
class FrameObservation:
    """One accepted frame on the full H x W pixel grid (P = H * W pixels, row-major), world frame.

    vertex_world (P, 3) float32 back-projected points (garbage where ``use`` is False); normal_world (P, 3)
    float32 gradSLAM normals; use (P,) bool pixels that take part (valid depth for the pixel and the neighbours
    its normal uses, non-zero normal, inside the keyable range); alpha (P,) float32 confidence weight;
    rgb (P, 3) uint8; R_world_cam (3, 3) float32 and t_world_cam (3,) float32 the pose; lo_m / hi_m (3,) float32
    a world box holding every used vertex (the frustum slab between the used depths, or their exact bounds).
    """

    height: int
    width: int
    intrinsics: Intrinsics
    R_world_cam: torch.Tensor
    t_world_cam: torch.Tensor
    use: torch.Tensor
    vertex_world: torch.Tensor
    normal_world: torch.Tensor
    alpha: torch.Tensor
    rgb: torch.Tensor
    lo_m: torch.Tensor
    hi_m: torch.Tensor

    @property
    def num_pixels(self) -> int:
        return self.height * self.width


@dataclass
class Accumulation:
    """The frame's pixels grouped by target: n_old existing points (dense ids 0..n_old-1, first-pixel order),
    then n_new new points (ids n_old..n_t-1, ascending voxel key); id n_t marks unused pixels.

    uslots (n_old,) int64 the existing points' slots; tid (P,) int64 each pixel's dense id; wsum (n_t,) float32
    alpha sum; wmax (n_t,) float32 alpha max (the target's frame weight); mean (n_t, 9) float32 alpha-weighted
    mean of [xyz, normal, rgb / 255].
    """

    uslots: torch.Tensor
    tid: torch.Tensor
    wsum: torch.Tensor
    wmax: torch.Tensor
    mean: torch.Tensor

    @property
    def n_old(self) -> int:
        return int(self.uslots.numel())
