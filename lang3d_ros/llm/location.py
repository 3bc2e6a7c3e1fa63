"""3D-LLM location tokens: a box as six discrete tokens <xmin, ymin, zmin, xmax, ymax, zmax>.

Each axis of a grid (the scene bounds or a fixed range, map frame, metres) is cut into ``bins``
voxels; token ``<loc_i>`` is voxel i. Only axis-aligned hulls are written: a box's yaw is lost,
and coordinates outside the grid are clipped to its border voxels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lang3d_ros.geometry.boxes import Box3D

LOC_PATTERN = re.compile(r"<loc_(\d{1,4})>")


def loc_token(i: int) -> str:
    return f"<loc_{int(i)}>"


def location_tokens(bins: int) -> list[str]:
    """All location tokens of a grid with ``bins`` voxels per axis."""
    return [loc_token(i) for i in range(bins)]


@dataclass(frozen=True)
class LocationGrid:
    min_xyz: tuple[float, float, float]
    max_xyz: tuple[float, float, float]
    bins: int = 256

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.min_xyz, float), np.asarray(self.max_xyz, float)
        if lo.shape != (3,) or hi.shape != (3,) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError("grid bounds must be 3 finite numbers each")
        if np.any(hi <= lo):
            raise ValueError(f"grid max must exceed min on every axis, got {lo} .. {hi}")
        if not 2 <= int(self.bins) <= 4096:
            raise ValueError(f"bins must be in [2, 4096], got {self.bins}")

    @classmethod
    def from_range(cls, range_m: Sequence[float], bins: int = 256) -> "LocationGrid":
        if len(range_m) != 6:
            raise ValueError(f"range must be [xmin, ymin, zmin, xmax, ymax, zmax], got {list(range_m)}")
        return cls(tuple(map(float, range_m[:3])), tuple(map(float, range_m[3:])), bins)

    @classmethod
    def around_boxes(cls, boxes: Sequence[Box3D], bins: int = 256, margin_m: float = 0.1) -> "LocationGrid":
        """Grid over the union of the boxes' hulls grown by ``margin_m``."""
        if len(boxes) == 0:
            raise ValueError("need at least one box to span a grid")
        lo = np.min([b.min_xyz for b in boxes], axis=0) - margin_m
        hi = np.max([b.max_xyz for b in boxes], axis=0) + margin_m
        hi = np.maximum(hi, lo + 1e-3)
        return cls(tuple(lo.tolist()), tuple(hi.tolist()), bins)

    @property
    def voxel_m(self) -> np.ndarray:
        """(3,) voxel edge per axis, metres."""
        return (np.asarray(self.max_xyz) - np.asarray(self.min_xyz)) / self.bins

    def quantize(self, xyz) -> np.ndarray:
        """(...,3) metres -> (...,3) int voxel indices in [0, bins)."""
        q = np.floor((np.asarray(xyz, float) - np.asarray(self.min_xyz)) / self.voxel_m)
        return np.clip(q, 0, self.bins - 1).astype(np.int64)

    def dequantize(self, idx) -> np.ndarray:
        """(...,3) voxel indices -> (...,3) voxel centres, metres."""
        return np.asarray(self.min_xyz) + (np.asarray(idx, float) + 0.5) * self.voxel_m

    def box_to_tokens(self, box: Box3D) -> str:
        """The box's axis-aligned hull as six location tokens."""
        q = np.concatenate([self.quantize(box.min_xyz), self.quantize(box.max_xyz)])
        return "".join(loc_token(i) for i in q)

    def tokens_to_box(self, tokens: str) -> Box3D:
        """Six location tokens -> axis-aligned Box3D (voxel centres). ValueError when malformed."""
        boxes = self.boxes_in_text(tokens, strict=True)
        if len(boxes) != 1:
            raise ValueError(f"expected exactly six location tokens, found {len(LOC_PATTERN.findall(tokens))}")
        return boxes[0]

    def boxes_in_text(self, text: str, strict: bool = False) -> list[Box3D]:
        """Every run of six location tokens in ``text`` as a box. Groups with an index >= bins or
        min > max are skipped (or raise ValueError when ``strict``); a trailing partial group is ignored."""
        idx = [int(m) for m in LOC_PATTERN.findall(text)]
        out = []
        for k in range(0, len(idx) - len(idx) % 6, 6):
            g = np.asarray(idx[k : k + 6])
            if np.any(g >= self.bins) or np.any(g[:3] > g[3:]):
                if strict:
                    raise ValueError(f"invalid location tokens {g.tolist()} for a grid of {self.bins} bins")
                continue
            out.append(Box3D.from_min_max(self.dequantize(g[:3]), self.dequantize(g[3:])))
        if strict and len(idx) % 6:
            raise ValueError(f"location tokens come in sixes, got {len(idx)}")
        return out


def add_location_tokens(tokenizer, model=None, bins: int = 256) -> int:
    """Add ``<loc_0>..<loc_{bins-1}>`` to the tokenizer (each one token) and resize the model's
    embedding matrix to match. Returns how many tokens were new (0 when already there)."""
    new = [t for t in location_tokens(bins) if t not in tokenizer.get_vocab()]
    added = tokenizer.add_tokens(new) if new else 0
    if model is not None and model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    return int(added)
