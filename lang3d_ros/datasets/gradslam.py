"""gradslam's test batch (shared/data/gradslam_msrd_b2s3): numpy arrays laid out B x L x H x W x C.

colors (B,L,H,W,3) 0..255, depths (B,L,H,W,1) metres, poses (B,L,4,4) camera-to-world, intrinsics
(B,1,4,4). Its fy is negative (ICL-NUIM convention, camera y up): Intrinsics keeps the sign, so
``Intrinsics.backproject`` reproduces gradslam's vertex maps. One source reads one sequence b.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.geometry.camera import Intrinsics

FILES = ("colors.npy", "depths.npy", "poses.npy", "intrinsics.npy")


class GradslamBatchSource:
    def __init__(self, root, sequence: int = 0, fps: float = 30.0):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such gradslam batch folder")
        missing = [f for f in FILES if not (self.root / f).is_file()]
        if missing:
            raise ValueError(f"{self.root}: missing {missing}")
        arrays = {}
        for f in FILES:
            try:
                arrays[f] = np.load(self.root / f)
            except (OSError, ValueError) as exc:
                raise ValueError(f"{self.root / f}: cannot load ({exc})") from exc
        c, d, p, k = (arrays[f] for f in FILES)
        if (
            c.ndim != 5
            or c.shape[-1] != 3
            or d.shape != c.shape[:-1] + (1,)
            or p.shape != c.shape[:2] + (4, 4)
            or k.shape[-2:] != (4, 4)
        ):
            raise ValueError(
                f"{self.root}: inconsistent shapes colors {c.shape} depths {d.shape} poses {p.shape} intrinsics "
                f"{k.shape}"
            )
        if not 0 <= int(sequence) < c.shape[0]:
            raise ValueError(f"sequence must be in 0..{c.shape[0] - 1}, got {sequence}")
        b = int(sequence)
        self.colors, self.depths, self.poses = c[b], d[b, ..., 0], p[b].astype(np.float64)
        K = k[b, 0].astype(np.float64)
        self.intrinsics = Intrinsics.from_K(K, c.shape[3], c.shape[2])
        self.fps = float(fps)

    def __len__(self) -> int:
        return int(self.colors.shape[0])

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            rgb = np.clip(np.round(self.colors[i]), 0, 255).astype(np.uint8)
            depth = np.where(np.isfinite(self.depths[i]) & (self.depths[i] > 0), self.depths[i], 0).astype(np.float32)
            yield Frame(rgb, depth, self.intrinsics, self.poses[i], int(round(i * 1e9 / self.fps)), i).validate()
