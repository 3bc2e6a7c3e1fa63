"""The fusion backend interface: one method per stage of ``PointMap.integrate``.

A fusion rule lives in one stage; each backend implements every stage with the same rules and tie-breaks:

- ``torch_backend.TorchBackend``: tensor ops, any device; the reference (and the CUDA path).
- ``numba_backend.NumbaBackend``: fused CPU loops of ``cpu_kernels.py``; the kernels' positional argument order
  is a contract held in that file only.

``test/test_fusion_backends.py`` checks the two stage by stage (same inputs, same outputs) and frame by frame.
To add a backend: implement ``FusionBackend`` (a class with these methods and attributes), return it from
``make_backend`` for a new ``fusion.backend`` choice, and add it to the parity tests. Backends hold no map state
(only the config and caches): PointMap owns the storage (``types.PointStore``), the voxel index and the slot
bookkeeping, and passes them in.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.fusion.config import FusionConfig
from lang3d_ros.fusion.types import Accumulation, FrameObservation, PointStore, ViewRing
from lang3d_ros.fusion.voxel_index import LayeredIndex, VoxelKeys


class FusionBackend(Protocol):
    """Stages of one frame's fusion. ``target`` (P,) int64 is each pixel's fate, filled in place: a slot (>= 0),
    a new point -(2 + id), or -1 (unused)."""

    name: str
    """"torch" or "numba" (``PointMap.backend``)."""
    index_kernels: object | None
    """``cpu_kernels`` for ``LayeredIndex``'s sorted-array loops, or None (torch)."""

    def observe(
        self, frame: Frame, rays: torch.Tensor, alpha_radial: torch.Tensor, keys: VoxelKeys
    ) -> FrameObservation | None:
        """Vertex / normal maps in the world frame, usable pixels, alpha; None when no pixel is usable.
        rays (H, W, 2) float32 normalised image coords; alpha_radial (H, W) float32 radial confidence."""

    def candidate_blocks(self, obs: FrameObservation, keys: VoxelKeys) -> torch.Tensor:
        """(B,) int64 ascending block keys of the blocks holding a used vertex, dilated by one block."""

    def associate(
        self, store: PointStore, obs: FrameObservation, local: LayeredIndex, target: torch.Tensor
    ) -> tuple[int, int]:
        """Projective association of the live points of ``local``: target[pixel] = the winning slot (distance
        and normal-angle gates; many-to-one: highest confidence, smallest squared distance, lowest slot).
        Returns (candidate entries examined, pixels matched)."""

    def leftovers(
        self,
        store: PointStore,
        obs: FrameObservation,
        local: LayeredIndex | None,
        target: torch.Tensor,
        keys: VoxelKeys,
    ) -> tuple[int, torch.Tensor | None]:
        """Unmatched used pixels: into the live point owning their voxel, else the nearest gated neighbour's
        point, else new points grouped by voxel (target -(2 + id), ids in ascending key order).
        Returns (pixels merged, the new points' (n_new,) int64 ascending voxel keys or None)."""

    def accumulate(self, store: PointStore, obs: FrameObservation, target: torch.Tensor, n_new: int) -> Accumulation:
        """Pixels -> dense target ids and alpha-weighted sums / means (see ``Accumulation``)."""

    def update_points(self, store: PointStore, acc: Accumulation) -> None:
        """Running averages of the existing targets: c <- c + w, x <- x + w / (c + w) (x_frame - x), w = wmax;
        normals renormalised."""

    def write_new_points(
        self, store: PointStore, acc: Accumulation, slots: torch.Tensor, new_keys: torch.Tensor, frame_no: int
    ) -> None:
        """New point j into slot slots[j]: the frame mean, confidence wmax, voxel key, birth, alive, no labels."""

    def pixel_slots(
        self, obs: FrameObservation, target: torch.Tensor, slots: torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(P,) int64 slot each pixel fused into (new point j: slots[j]; -1 unused) and (P,) float32 its alpha
        (0 where unused), as numpy (``FusionReport.pixel_slot`` / ``pixel_alpha``)."""

    def vote_labels(self, store: PointStore, n_used: int, pixel_slot, pixel_alpha, pixel_labels) -> None:
        """pixel_slot (P,) int64, pixel_alpha (P,) float32, pixel_labels (L, P) int32 numpy arrays (validated):
        per point and level the heaviest label votes; weighted Boyer-Moore update of (label, label_w)."""

    def kill_unstable(self, store: PointStore, slots: torch.Tensor, born: int) -> torch.Tensor:
        """Of ``slots`` (born in or before frame ``born``), kill those still alive from such a birth (a slot reused
        later has a later birth) below ``stable_confidence`` (alive False, conf 0). Returns the killed slots."""

    def seen_after(self, store: PointStore, slots: torch.Tensor, views: ViewRing, born: int) -> torch.Tensor:
        """(K,) bool: which of ``slots`` (K,) int64 some view of ``views`` later than frame ``born`` had in view:
        projecting into its image (the association's bounds and rounding) at depth z > 0, where its depth d > 0 and
        z - d <= the association gate at d (the sensor saw the point, or past it)."""

    def kill(self, store: PointStore, slots: torch.Tensor) -> None:
        """Slots dead: alive False, confidence 0, labels -1, weights 0."""

    def new_target(self, n_pixels: int) -> torch.Tensor:
        """(P,) int64 filled with -1."""

    def cat(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """torch.cat of 1-D tensors (numpy's on the numba backend: no torch thread pool)."""


def make_backend(config: FusionConfig, device: torch.device) -> FusionBackend:
    """The backend ``config.backend`` names ("auto": numba on a CPU device when numba is installed, else torch).
    Raises ValueError when the named one cannot run here."""
    from lang3d_ros.fusion import cpu_kernels

    choice = config.backend
    if choice == "torch" or (choice == "auto" and (device.type != "cpu" or not cpu_kernels.AVAILABLE)):
        from lang3d_ros.fusion.torch_backend import TorchBackend

        return TorchBackend(config, device)
    if device.type != "cpu":
        raise ValueError(f"fusion backend 'numba' runs on the CPU only, device is {device}")
    if not cpu_kernels.AVAILABLE:
        raise ValueError("fusion backend 'numba' needs the numba package (pip install numba), or use 'torch'")
    from lang3d_ros.fusion.numba_backend import NumbaBackend

    return NumbaBackend(config, device)


def rotate(R: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(3, 3) R times (N, 3) v, as (N, 3), in the numba kernels' operation order (no BLAS, no fused
    multiply-add), so that both backends round alike."""
    x, y, z = v.unbind(1)
    return torch.stack([(R[r, 0] * x + R[r, 1] * y) + R[r, 2] * z for r in range(3)], 1)


def frame_pose(frame: Frame, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """R_world_cam (3, 3) and t_world_cam (3,) float32 of the frame."""
    T = torch.as_tensor(frame.T_world_cam, dtype=torch.float64).to(device)
    return T[:3, :3].to(torch.float32), T[:3, 3].to(torch.float32)


def bounded_observation(
    frame: Frame,
    rays: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    use: torch.Tensor,
    vw: torch.Tensor,
    nw: torch.Tensor,
    alpha: torch.Tensor,
    depth_lo_m: torch.Tensor,
    depth_hi_m: torch.Tensor,
    keys: VoxelKeys,
) -> FrameObservation | None:
    """The shared end of ``observe``: the world box of the used vertices (the frustum slab between their depth
    range ``depth_lo_m``..``depth_hi_m``; exact bounds, and pixels outside the keyable range dropped, when the
    slab leaves that range) and the observation. None when no used pixel is left."""
    dev = vw.device
    corners = torch.stack([rays[0, 0], rays[0, -1], rays[-1, 0], rays[-1, -1]])  # (4, 2)
    slab = torch.cat([torch.cat([corners * d, d.expand(4, 1)], 1) for d in (depth_lo_m[None], depth_hi_m[None])])
    box = torch.addmm(t, slab, R.T)
    lo, hi = box.amin(0), box.amax(0)
    big = keys.voxel_size_m * (keys.offset - 2)  # keyable range
    if bool((lo < -big).any() or (hi > big).any()):
        use = use & (vw.abs() < big).all(-1)
        if not bool(use.any()):
            return None
        lo = torch.where(use[:, None], vw, torch.full((), math.inf, device=dev)).amin(0)
        hi = torch.where(use[:, None], vw, torch.full((), -math.inf, device=dev)).amax(0)
    rgb = torch.from_numpy(np.ascontiguousarray(frame.rgb).reshape(-1, 3)).to(dev)
    return FrameObservation(frame.height, frame.width, frame.intrinsics, R, t, use, vw, nw, alpha, rgb, lo, hi)
