"""Spatial hash of map points: 64-bit voxel keys in sorted arrays (torch, any device).

A key packs a point's voxel into ``block | local`` bits: the block (``block_voxels`` voxels per edge) in the
high bits, the voxel inside the block in the low ``3 * log2(block_voxels)`` bits. So one sorted array answers
both questions PointFusion asks: "which point owns this voxel" (``find``) and "which points lie in these
blocks" (``gather_blocks``: one contiguous range per block).

``LayeredIndex`` is a small log-structured merge: new entries go into a small sorted ``delta`` level
(O(delta) per insert); when it outgrows its capacity it merges into ``main`` (O(N), amortised over many
frames). Entries are never edited: an entry is live only while ``slot_key[slot] == key`` and
``alive[slot]``, so pruned or reused slots need no index update; stale entries are dropped at merges.
Coordinates outside +-2^(bits-1) blocks (about +-5 km at 1 cm voxels, 16-voxel blocks) cannot be keyed.
"""

from __future__ import annotations

import numpy as np
import torch


class VoxelKeys:
    """Voxel / block key arithmetic for one grid (voxel_size_m, block_voxels a power of two <= 16)."""

    def __init__(self, voxel_size_m: float, block_voxels: int):
        self.voxel_size_m = float(voxel_size_m)
        self.local_bits = int(block_voxels).bit_length() - 1  # per axis
        self.block_bits = (62 - 3 * self.local_bits) // 3  # per axis
        self.offset = (1 << (self.block_bits - 1)) << self.local_bits  # voxel offset making coords >= 0
        self.limit = (1 << self.block_bits) << self.local_bits
        self.shift = 3 * self.local_bits  # key >> shift == block key

    def voxel_coords(self, points_xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3) float points -> (N, 3) int64 shifted voxel coords, (N,) bool inside the keyable range."""
        c = torch.floor(points_xyz / self.voxel_size_m)
        ok = torch.isfinite(c).all(-1) & (c > -self.offset).all(-1) & (c < self.limit - self.offset - 1).all(-1)
        c = torch.where(ok[:, None], c, torch.zeros((), dtype=c.dtype, device=c.device))
        return c.to(torch.int64) + self.offset, ok

    def keys(self, vc: torch.Tensor) -> torch.Tensor:
        """(N, 3) shifted voxel coords -> (N,) int64 keys."""
        lb, bb = self.local_bits, self.block_bits
        b = vc >> lb
        loc = vc & ((1 << lb) - 1)
        block = (((b[:, 0] << bb) | b[:, 1]) << bb) | b[:, 2]
        local = (((loc[:, 0] << lb) | loc[:, 1]) << lb) | loc[:, 2]
        return (block << self.shift) | local

    def block_keys(self, bc: torch.Tensor) -> torch.Tensor:
        """(N, 3) int64 block coords -> (N,) block keys (key >> shift)."""
        bb = self.block_bits
        return (((bc[:, 0] << bb) | bc[:, 1]) << bb) | bc[:, 2]


class SortedLevel:
    """One sorted level: keys (N,) int64 ascending, slots (N,) int64; equal keys keep insertion order.

    kernels: ``fusion.cpu_kernels`` to run gather / merge / compaction as numba loops on CPU tensors, or None
    for torch (any device)."""

    def __init__(self, device: torch.device, kernels=None):
        self.kernels = kernels
        self.keys = torch.empty(0, dtype=torch.int64, device=device)
        self.slots = torch.empty(0, dtype=torch.int64, device=device)

    def _like(self, keys: torch.Tensor, slots: torch.Tensor) -> "SortedLevel":
        out = SortedLevel(self.keys.device, self.kernels)
        out.keys, out.slots = keys, slots
        return out

    def __len__(self) -> int:
        return int(self.keys.numel())

    def find(self, q: torch.Tensor) -> torch.Tensor:
        """(Q,) keys -> (Q,) slot of the newest entry with that key, -1 where none (liveness not checked)."""
        if len(self) == 0 or q.numel() == 0:
            return torch.full_like(q, -1)
        if q.numel() > 4096:  # sorted queries make the binary searches cache-friendly (~2x on CPU)
            qs, order = torch.sort(q)
            pos = torch.empty_like(q).index_copy_(0, order, torch.searchsorted(self.keys, qs, right=True)) - 1
        else:
            pos = torch.searchsorted(self.keys, q, right=True) - 1
        posc = pos.clamp(min=0)
        hit = (pos >= 0) & (self.keys[posc] == q)
        return torch.where(hit, self.slots[posc], torch.full_like(q, -1))

    def gather_blocks(self, block_keys: torch.Tensor, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) block keys -> (keys, slots) of every entry whose key lies in one of those blocks."""
        if len(self) == 0 or block_keys.numel() == 0:
            return self.keys[:0], self.slots[:0]
        if self.kernels is not None:
            k, s = self.kernels.gather_blocks(self.keys.numpy(), self.slots.numpy(), block_keys.numpy(), shift)
            return torch.from_numpy(k), torch.from_numpy(s)
        lo = torch.searchsorted(self.keys, block_keys << shift)
        hi = torch.searchsorted(self.keys, (block_keys + 1) << shift)
        counts = hi - lo
        total = int(counts.sum())
        if total == 0:
            return self.keys[:0], self.slots[:0]
        starts = torch.repeat_interleave(lo - (torch.cumsum(counts, 0) - counts), counts)
        pos = starts + torch.arange(total, device=lo.device)
        return self.keys[pos], self.slots[pos]

    def merged(self, keys: torch.Tensor, slots: torch.Tensor) -> "SortedLevel":
        """A new level with (keys ascending, slots) inserted after any equal existing keys; O(N + n)."""
        n, m = len(self), int(keys.numel())
        if m == 0:
            return self._like(self.keys, self.slots)
        if self.kernels is not None:
            k, s = self.kernels.merge_sorted(self.keys.numpy(), self.slots.numpy(), keys.numpy(), slots.numpy())
            return self._like(torch.from_numpy(k), torch.from_numpy(s))
        out = SortedLevel(self.keys.device, self.kernels)
        pos_new = torch.searchsorted(self.keys, keys, right=True) + torch.arange(m, device=keys.device)
        is_new = torch.zeros(n + m, dtype=torch.bool, device=keys.device)
        is_new[pos_new] = True
        out.keys = torch.empty(n + m, dtype=torch.int64, device=keys.device)
        out.slots = torch.empty(n + m, dtype=torch.int64, device=keys.device)
        out.keys[pos_new] = keys
        out.slots[pos_new] = slots
        out.keys[~is_new] = self.keys
        out.slots[~is_new] = self.slots
        return out

    def compacted(self, slot_key: torch.Tensor, alive: torch.Tensor) -> "SortedLevel":
        """Drop entries whose slot is dead or now holds another key."""
        if self.kernels is not None:
            k, s = self.kernels.compact_sorted(self.keys.numpy(), self.slots.numpy(), slot_key.numpy(), alive.numpy())
            return self._like(torch.from_numpy(k), torch.from_numpy(s))
        live = alive[self.slots] & (slot_key[self.slots] == self.keys)
        return self._like(self.keys[live], self.slots[live])


class LayeredIndex:
    """main + delta sorted levels; ``find`` prefers delta (newer). Callers check liveness of returned slots."""

    def __init__(self, device: torch.device, delta_capacity: int, kernels=None):
        self.device = device
        self.delta_capacity = int(delta_capacity)
        self.kernels = kernels  # see SortedLevel
        self.main = SortedLevel(device, kernels)
        self.delta = SortedLevel(device, kernels)
        self._entries: tuple[torch.Tensor, torch.Tensor] | None = None  # cached entries() of a sub-index

    def __len__(self) -> int:
        return len(self.main) + len(self.delta)

    def find(self, q: torch.Tensor) -> torch.Tensor:
        s = self.delta.find(q)
        miss = s < 0
        if bool(miss.any()):
            s[miss] = self.main.find(q[miss])
        return s

    def gather_blocks(self, block_keys: torch.Tensor, shift: int) -> "LayeredIndex":
        """The sub-index of the entries in the given blocks (ascending block keys), liveness not checked.
        Its ``find`` equals this index's ``find`` for any key inside those blocks, at a cost set by the blocks."""
        sub = LayeredIndex(self.device, self.delta_capacity, self.kernels)
        sub.main.keys, sub.main.slots = self.main.gather_blocks(block_keys, shift)
        sub.delta.keys, sub.delta.slots = self.delta.gather_blocks(block_keys, shift)
        sub._entries = sub._concat_levels()  # a sub-index is never modified: its entries are built once
        return sub

    def entries(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys, slots) of every entry, main then delta."""
        return self._entries if self._entries is not None else self._concat_levels()

    def _concat_levels(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kernels is not None:  # numpy copies: no torch thread pool on the numba path
            return tuple(
                torch.from_numpy(np.concatenate([a.numpy(), b.numpy()]))
                for a, b in ((self.main.keys, self.delta.keys), (self.main.slots, self.delta.slots))
            )
        return torch.cat([self.main.keys, self.delta.keys]), torch.cat([self.main.slots, self.delta.slots])

    def insert(
        self, keys_sorted: torch.Tensor, slots: torch.Tensor, slot_key: torch.Tensor, alive: torch.Tensor
    ) -> None:
        """Insert ascending keys; merge delta into main (dropping stale entries) when delta is full."""
        self._entries = None
        self.delta = self.delta.merged(keys_sorted, slots)
        if len(self.delta) > self.delta_capacity:
            d = self.delta.compacted(slot_key, alive)
            self.main = self.main.compacted(slot_key, alive).merged(d.keys, d.slots)
            self.delta = SortedLevel(self.device, self.kernels)

    def rebuild(self, keys: torch.Tensor, slots: torch.Tensor) -> None:
        """Replace everything by (keys, slots) in any order."""
        self._entries = None
        order = torch.argsort(keys, stable=True)
        self.main = SortedLevel(self.device, self.kernels)
        self.main.keys, self.main.slots = keys[order].contiguous(), slots[order].contiguous()
        self.delta = SortedLevel(self.device, self.kernels)
