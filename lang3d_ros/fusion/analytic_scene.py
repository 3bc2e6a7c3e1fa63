"""An analytic RGB-D corridor for fusion tests and benchmarks (numpy ray casting, exact depth).

A closed box corridor [0, length_m] x [-width_m/2, width_m/2] x [0, height_m] (map frame, z up) with a
checker texture (``checker_m`` squares, two colours per wall). Cameras look along +x or back; the ground
truth is exact: ``distance_to_surface`` gives each point's distance to the nearest wall. Only boxes: no
objects, occlusions, or lens effects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.geometry.camera import Intrinsics

# colours (uint8) per wall: -x end, +x end, -y, +y, floor, ceiling; two tones each for the checker
_WALL_RGB = np.array(
    [
        [[200, 60, 60], [120, 30, 30]],
        [[60, 200, 60], [30, 120, 30]],
        [[60, 60, 200], [30, 30, 120]],
        [[200, 200, 60], [120, 120, 30]],
        [[160, 160, 160], [80, 80, 80]],
        [[230, 230, 230], [190, 190, 190]],
    ],
    dtype=np.uint8,
)


@dataclass(frozen=True)
class Corridor:
    length_m: float = 12.0
    width_m: float = 2.0
    height_m: float = 2.5
    checker_m: float = 0.25

    def _bounds(self) -> np.ndarray:
        w = self.width_m / 2
        return np.array([0.0, self.length_m, -w, w, 0.0, self.height_m])

    def wall_and_color(self, points_xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,3) points on the walls -> (N,) wall id 0..5 (nearest wall) and (N,3) uint8 colour."""
        p = np.asarray(points_xyz, dtype=np.float64)
        b = self._bounds()
        d = np.abs(
            np.stack(
                [p[:, 0] - b[0], p[:, 0] - b[1], p[:, 1] - b[2], p[:, 1] - b[3], p[:, 2] - b[4], p[:, 2] - b[5]], 1
            )
        )
        wall = np.argmin(d, axis=1)
        cell = np.floor(p / self.checker_m).astype(np.int64)
        # the checker uses the two coordinates in the wall's plane
        axis = wall // 2
        s = cell.sum(1) - cell[np.arange(len(p)), axis]
        return wall, _WALL_RGB[wall, s % 2]

    def distance_to_surface(self, points_xyz: np.ndarray) -> np.ndarray:
        """(N,3) -> (N,) distance in metres to the nearest wall plane (exact inside the box)."""
        p = np.asarray(points_xyz, dtype=np.float64)
        b = self._bounds()
        d = np.abs(
            np.stack(
                [p[:, 0] - b[0], p[:, 0] - b[1], p[:, 1] - b[2], p[:, 1] - b[3], p[:, 2] - b[4], p[:, 2] - b[5]], 1
            )
        )
        return d.min(1)

    def render(
        self,
        T_world_cam: np.ndarray,
        intrinsics: Intrinsics,
        noise_m: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ray cast one view -> rgb (H,W,3) uint8, depth_m (H,W) float32, wall id (H,W) int32."""
        h, w = intrinsics.height, intrinsics.width
        u, v = np.meshgrid(np.arange(w), np.arange(h))
        rays = np.stack(
            [(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy, np.ones_like(u, float)], -1
        )
        R, o = T_world_cam[:3, :3], T_world_cam[:3, 3]
        d = rays.reshape(-1, 3) @ R.T
        b = self._bounds()
        t = np.full(d.shape[0], np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            for ax in range(3):
                for side in range(2):
                    tt = (b[2 * ax + side] - o[ax]) / d[:, ax]
                    t = np.where((tt > 1e-9) & (tt < t), tt, t)
        pts = o + t[:, None] * d
        wall, rgb = self.wall_and_color(pts)
        depth = t.astype(np.float32)  # rays have z = 1 in the camera frame, so t is the depth
        if noise_m > 0:
            rng = rng if rng is not None else np.random.default_rng(0)
            depth = depth + rng.normal(0.0, noise_m, depth.shape).astype(np.float32)
        return rgb.reshape(h, w, 3), depth.reshape(h, w), wall.reshape(h, w).astype(np.int32)


def look_pose(position_xyz, yaw_rad: float, pitch_rad: float = 0.0) -> np.ndarray:
    """T_world_cam of an optical-frame camera at ``position_xyz`` looking along yaw (about +z), pitch down +."""
    cy, sy, cp, sp = np.cos(yaw_rad), np.sin(yaw_rad), np.cos(pitch_rad), np.sin(pitch_rad)
    fwd = np.array([cy * cp, sy * cp, -sp])
    left = np.array([-sy, cy, 0.0])
    up = np.cross(fwd, left)
    T = np.eye(4)
    T[:3, :3] = np.stack([-left, -up, fwd], axis=1)  # columns: x right, y down, z forward
    T[:3, 3] = position_xyz
    return T


def corridor_walk(
    corridor: Corridor,
    n_frames: int,
    intrinsics: Intrinsics,
    start_x_m: float = 0.5,
    step_m: float = 0.05,
    noise_m: float = 0.0,
    seed: int = 0,
    back_and_forth: bool = False,
):
    """Yield Frames walking along the corridor's axis at 1.5 m height, yaw swaying +-0.4 rad.

    back_and_forth: walk to the far end and back repeatedly (revisits) instead of stopping at the end.
    """
    rng = np.random.default_rng(seed)
    span = corridor.length_m - 2 * start_x_m
    for i in range(n_frames):
        s = i * step_m
        if back_and_forth:
            s = s % (2 * span)
            s = s if s <= span else 2 * span - s
        x = start_x_m + min(s, span)
        yaw = 0.4 * np.sin(i * 0.15)
        T = look_pose([x, 0.2 * np.sin(i * 0.05), 1.5], yaw, 0.1)
        rgb, depth, wall = corridor.render(T, intrinsics, noise_m, rng)
        yield Frame(
            rgb=rgb,
            depth_m=depth,
            intrinsics=intrinsics,
            T_world_cam=T,
            stamp_ns=i * 33_000_000,
            index=i,
            instance_map=wall,
        )
