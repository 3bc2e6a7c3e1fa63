"""The one frame type every reader yields and every stage consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

import numpy as np

from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.geometry.transforms import validate_rigid


@dataclass
class Frame:
    """One RGB-D observation.

    rgb: (H, W, 3) uint8; depth_m: (H, W) float32 metres, 0 or NaN where the sensor saw nothing;
    T_world_cam: (4, 4) float64 camera (optical frame) -> world (map frame); stamp_ns: int nanoseconds;
    instance_map: optional (H, W) int32 ground-truth instance id per pixel (-1 none), synthetic data only.
    """

    rgb: np.ndarray
    depth_m: np.ndarray
    intrinsics: Intrinsics
    T_world_cam: np.ndarray
    stamp_ns: int = 0
    index: int = 0
    instance_map: np.ndarray | None = None

    def validate(self) -> "Frame":
        """Raise ValueError naming the first problem; return self when the frame is usable."""
        if (
            not isinstance(self.rgb, np.ndarray)
            or self.rgb.ndim != 3
            or self.rgb.shape[2] != 3
            or self.rgb.dtype != np.uint8
        ):
            raise ValueError(
                f"rgb must be (H,W,3) uint8, got {getattr(self.rgb, 'shape', None)} {getattr(self.rgb, 'dtype', None)}"
            )
        if not isinstance(self.depth_m, np.ndarray) or self.depth_m.ndim != 2:
            raise ValueError(f"depth_m must be (H,W), got {getattr(self.depth_m, 'shape', None)}")
        if self.depth_m.shape != self.rgb.shape[:2]:
            raise ValueError(f"rgb {self.rgb.shape[:2]} and depth {self.depth_m.shape} sizes differ")
        if self.depth_m.shape != (self.intrinsics.height, self.intrinsics.width):
            raise ValueError(
                f"image {self.depth_m.shape[1]}x{self.depth_m.shape[0]} does not match intrinsics "
                f"{self.intrinsics.width}x{self.intrinsics.height}"
            )
        validate_rigid(self.T_world_cam, "T_world_cam")
        if self.instance_map is not None and self.instance_map.shape != self.depth_m.shape:
            raise ValueError(f"instance_map {self.instance_map.shape} does not match depth {self.depth_m.shape}")
        return self

    @property
    def height(self) -> int:
        return int(self.depth_m.shape[0])

    @property
    def width(self) -> int:
        return int(self.depth_m.shape[1])


class FrameSource(Protocol):
    """What every reader implements: iterate frames in time order, know their count if it can."""

    def __iter__(self) -> Iterator[Frame]: ...

    def __len__(self) -> int: ...
