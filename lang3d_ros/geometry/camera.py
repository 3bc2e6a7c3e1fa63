"""Pinhole intrinsics.

Frames follow the optical convention of REP 103 camera frames (``*_optical_frame``): x right,
y down, z forward, pixel (u, v) = (column, row) with the centre of the top-left pixel at (0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera: focal lengths and principal point in pixels, image size in pixels.

    ``fy`` may be negative for datasets whose camera y axis points up (gradslam's ICL-NUIM
    convention); every projection here uses the signed value, so such data round-trips unchanged.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        vals = np.array([self.fx, self.fy, self.cx, self.cy], dtype=np.float64)
        if not np.all(np.isfinite(vals)):
            raise ValueError(f"intrinsics must be finite, got fx={self.fx} fy={self.fy} cx={self.cx} cy={self.cy}")
        if self.fx == 0.0 or self.fy == 0.0:
            raise ValueError(f"focal lengths must be non-zero, got fx={self.fx} fy={self.fy}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    @property
    def K(self) -> np.ndarray:
        """3x3 camera matrix (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64)

    @classmethod
    def from_K(cls, K: np.ndarray, width: int, height: int) -> "Intrinsics":
        K = np.asarray(K, dtype=np.float64)
        if K.shape not in ((3, 3), (4, 4)):
            raise ValueError(f"K must be 3x3 or 4x4, got shape {K.shape}")
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(width), int(height))

    def scaled(self, width: int, height: int) -> "Intrinsics":
        """The same camera at another resolution (pixel-centre convention kept)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, int(width), int(height)
        )

    def project(self, points_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,3) camera-frame points -> (N,2) pixel coordinates (u, v) and (N,) depth z in metres."""
        p = np.asarray(points_cam, dtype=np.float64)
        z = p[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.fx * p[:, 0] / z + self.cx
            v = self.fy * p[:, 1] / z + self.cy
        return np.stack([u, v], axis=1), z

    def backproject(self, u: np.ndarray, v: np.ndarray, depth_m: np.ndarray) -> np.ndarray:
        """Pixels (u, v) with depth in metres -> (N,3) camera-frame points."""
        z = np.asarray(depth_m, dtype=np.float64)
        x = (np.asarray(u, dtype=np.float64) - self.cx) / self.fx * z
        y = (np.asarray(v, dtype=np.float64) - self.cy) / self.fy * z
        return np.stack([x, y, z], axis=-1)
