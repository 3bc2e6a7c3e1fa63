"""Ray-cast RGB-D frames of a synthetic scene with open3d's ``RaycastingScene``.

Colour: Lambert shading (a fixed key light from above plus a weak head light) over an ambient term,
times the object's albedo and an optional procedural texture (floor tiles, a faint 3D pattern on
objects). Depth: z of the first hit in metres (the optical axis distance, not the ray length).
``instance_map``: int32, -1 where nothing was hit, 0 for the room, object ids otherwise; it is never
noised. Noise (``RenderNoise``) imitates a structured-light sensor: depth sigma = k z^2, random dropouts,
missing depth at depth edges, at grazing angles and outside [min_range, max_range]. It cannot do
shadows, reflections, lens distortion, motion blur or rolling shutter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import open3d as o3d

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.datasets.synthetic.scene import SyntheticScene
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.geometry.transforms import validate_rigid

DEFAULT_INTRINSICS = Intrinsics(fx=525.0, fy=525.0, cx=319.5, cy=239.5, width=640, height=480)
START_STAMP_NS = 1_763_769_600_000_000_000  # 2025-11-22T00:00:00Z, a fixed epoch so output is reproducible
ROOM_ALBEDO = {"floor": (0.60, 0.52, 0.42), "ceiling": (0.95, 0.95, 0.95)}
WALL_ALBEDO = (0.86, 0.84, 0.78)
MISS_RGB = 40  # grey level where a ray leaves the room (no ceiling)
_KEY_LIGHT = np.array([0.35, 0.55, 1.0]) / np.linalg.norm([0.35, 0.55, 1.0])


@dataclass(frozen=True)
class RenderNoise:
    """Sensor imperfections. rgb_sigma in 0..255 grey levels; depth sigma = depth_sigma_at_1m_m * z^2."""

    rgb_sigma: float = 2.0
    depth_sigma_at_1m_m: float = 0.0015
    dropout_prob: float = 0.01
    edge_jump_m: float = 0.08
    edge_dropout_prob: float = 0.7
    grazing_angle_deg: float = 82.0
    min_range_m: float = 0.25
    max_range_m: float = 6.0

    def validate(self) -> "RenderNoise":
        for name in ("rgb_sigma", "depth_sigma_at_1m_m", "edge_jump_m", "min_range_m"):
            if not np.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"RenderNoise.{name} must be finite and >= 0, got {getattr(self, name)}")
        for name in ("dropout_prob", "edge_dropout_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"RenderNoise.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.grazing_angle_deg <= 90.0:
            raise ValueError(f"RenderNoise.grazing_angle_deg must be in (0, 90], got {self.grazing_angle_deg}")
        if not self.max_range_m > self.min_range_m:
            raise ValueError(
                f"RenderNoise.max_range_m ({self.max_range_m}) must exceed min_range_m ({self.min_range_m})"
            )
        return self


def make_stamps(
    n: int, fps: float = 30.0, jitter_ms: float = 1.0, seed: int = 0, start_ns: int = START_STAMP_NS
) -> np.ndarray:
    """(n,) int64 strictly increasing stamps at ``fps`` with Gaussian jitter (clipped to +-3 sigma)."""
    if not fps > 0 or jitter_ms < 0 or 3 * jitter_ms * 1e-3 >= 0.5 / fps:
        raise ValueError(f"need fps > 0 and 0 <= 3*jitter_ms < half a period, got fps={fps} jitter_ms={jitter_ms}")
    rng = np.random.default_rng([int(seed), 7])
    jit = (
        np.clip(rng.normal(0.0, jitter_ms * 1e6, n), -3e6 * jitter_ms, 3e6 * jitter_ms)
        if jitter_ms > 0
        else np.zeros(n)
    )
    return (start_ns + np.round(np.arange(n) * 1e9 / fps + jit)).astype(np.int64)


class _Renderer:
    def __init__(self, scene: SyntheticScene, intrinsics: Intrinsics, texture: bool):
        self.scene, self.intr, self.texture = scene, intrinsics, texture
        self.rs = o3d.t.geometry.RaycastingScene()
        ids, albedo, kinds = [], [], []
        for name, mesh in scene.room_meshes.items():
            self.rs.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
            ids.append(0)
            albedo.append(ROOM_ALBEDO.get(name, WALL_ALBEDO))
            kinds.append(1 if name == "floor" else 0)
        for o in scene.objects:
            if o.mesh is None:
                raise ValueError(
                    f"object {o.instance_id} ({o.label}) has no mesh; render a generated scene, not a loaded ground "
                    f"truth"
                )
            self.rs.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(o.mesh))
            ids.append(o.instance_id)
            albedo.append(tuple(o.color_rgb))
            kinds.append(2)
        self.ids = np.asarray(ids + [-1], dtype=np.int32)  # last entry: miss
        self.albedo = np.asarray(albedo + [(0.0, 0.0, 0.0)], dtype=np.float32)
        self.kinds = np.asarray(kinds + [-1], dtype=np.int8)
        u, v = np.meshgrid(
            np.arange(intrinsics.width, dtype=np.float64), np.arange(intrinsics.height, dtype=np.float64)
        )
        self.dirs_cam = np.stack(
            [(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy, np.ones_like(u)], -1
        ).reshape(-1, 3)

    def cast(self, T_world_cam: np.ndarray) -> dict[str, np.ndarray]:
        d = self.dirs_cam @ T_world_cam[:3, :3].T
        rays = np.concatenate([np.broadcast_to(T_world_cam[:3, 3], d.shape), d], axis=1).astype(np.float32)
        ans = self.rs.cast_rays(o3d.core.Tensor(rays))
        gid = ans["geometry_ids"].numpy().astype(np.int64)
        gid[gid == o3d.t.geometry.RaycastingScene.INVALID_ID] = len(self.ids) - 1
        t = ans["t_hit"].numpy()
        return {"gid": gid, "t": t, "normals": ans["primitive_normals"].numpy(), "dirs": d}

    def render(self, T_world_cam: np.ndarray, noise: RenderNoise | None, rng: np.random.Generator):
        H, W = self.intr.height, self.intr.width
        r = self.cast(T_world_cam)
        gid, t, n, d = r["gid"], r["t"], r["normals"].astype(np.float64), r["dirs"]
        hit = np.isfinite(t)
        depth = np.where(hit, t, 0.0)  # ray directions have unit z in the camera frame: t is depth
        d_unit = d / np.linalg.norm(d, axis=1, keepdims=True)
        facing = np.sum(n * d_unit, axis=1)
        n = np.where((facing > 0)[:, None], -n, n)
        cos_view = np.abs(facing)
        shade = 0.35 + 0.45 * np.clip(n @ _KEY_LIGHT, 0.0, None) + 0.25 * cos_view
        col = self.albedo[gid] * shade[:, None]
        if self.texture:
            p = T_world_cam[:3, 3] + d * np.where(hit, t, 0.0)[:, None]
            kind = self.kinds[gid]
            tiles = ((np.floor(p[:, 0] / 0.5) + np.floor(p[:, 1] / 0.5)) % 2) * 2 - 1
            pattern = np.sin(37 * p[:, 0]) * np.sin(41 * p[:, 1]) * np.sin(43 * p[:, 2])
            col *= (1.0 + np.where(kind == 1, 0.07 * tiles, np.where(kind == 2, 0.06 * pattern, 0.02 * pattern)))[
                :, None
            ]
        rgb = np.where(hit[:, None], np.clip(col, 0, 1) * 255.0, MISS_RGB)
        depth = depth.reshape(H, W)
        if noise is not None:
            rgb = rgb + rng.normal(0.0, noise.rgb_sigma, rgb.shape)
            depth = self._noisy_depth(depth, cos_view.reshape(H, W), noise, rng)
        rgb8 = np.clip(np.round(rgb), 0, 255).astype(np.uint8).reshape(H, W, 3)
        return rgb8, depth.astype(np.float32), self.ids[gid].reshape(H, W)

    @staticmethod
    def _noisy_depth(
        depth: np.ndarray, cos_view: np.ndarray, noise: RenderNoise, rng: np.random.Generator
    ) -> np.ndarray:
        valid = depth > 0
        jump = np.zeros_like(depth)
        for axis in (0, 1):
            g = np.abs(np.diff(depth, axis=axis))
            pad = [(0, 0), (0, 0)]
            pad[axis] = (1, 0)
            jump = np.maximum(jump, np.pad(g, pad))
            pad[axis] = (0, 1)
            jump = np.maximum(jump, np.pad(g, pad))
        out = depth + rng.normal(0.0, 1.0, depth.shape) * noise.depth_sigma_at_1m_m * depth**2
        drop = ~valid | (rng.random(depth.shape) < noise.dropout_prob)
        drop |= (jump > noise.edge_jump_m) & (rng.random(depth.shape) < noise.edge_dropout_prob)
        drop |= cos_view < np.cos(np.deg2rad(noise.grazing_angle_deg))
        drop |= (depth < noise.min_range_m) | (depth > noise.max_range_m)
        return np.where(drop, 0.0, out)


def render_frames(
    scene: SyntheticScene,
    T_world_cams: np.ndarray,
    intrinsics: Intrinsics | None = None,
    noise: RenderNoise | None = None,
    seed: int = 0,
    stamps_ns: np.ndarray | None = None,
    texture: bool = True,
) -> Iterator[Frame]:
    """Yield one Frame per pose (rgb uint8, depth_m float32 with 0 = missing, instance_map int32).

    T_world_cams: (N,4,4); stamps_ns: (N,) int64, default ``make_stamps(N, 30 Hz, 1 ms jitter, seed)``.
    ``noise=None`` renders the exact raycast. Same inputs -> identical arrays. Arguments are checked
    before the first frame is produced."""
    intr = DEFAULT_INTRINSICS if intrinsics is None else intrinsics
    T = np.asarray(T_world_cams, dtype=np.float64)
    if T.ndim != 3 or T.shape[1:] != (4, 4) or len(T) == 0:
        raise ValueError(f"T_world_cams must be (N,4,4) with N >= 1, got shape {T.shape}")
    for i, Ti in enumerate(T):
        validate_rigid(Ti, f"T_world_cams[{i}]")
    if noise is not None:
        noise.validate()
    stamps = make_stamps(len(T), seed=seed) if stamps_ns is None else np.asarray(stamps_ns, dtype=np.int64)
    if stamps.shape != (len(T),):
        raise ValueError(f"stamps_ns must have shape ({len(T)},), got {stamps.shape}")
    renderer = _Renderer(scene, intr, texture)
    return _frames(renderer, T, stamps, noise, int(seed))


def _frames(renderer: _Renderer, T: np.ndarray, stamps: np.ndarray, noise, seed: int) -> Iterator[Frame]:
    for i, Ti in enumerate(T):
        rng = np.random.default_rng([seed, i])
        rgb, depth, inst = renderer.render(Ti, noise, rng)
        yield Frame(
            rgb=rgb,
            depth_m=depth,
            intrinsics=renderer.intr,
            T_world_cam=Ti.copy(),
            stamp_ns=int(stamps[i]),
            index=i,
            instance_map=inst,
        )
