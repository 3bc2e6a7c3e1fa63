"""Procedural indoor rooms with labelled objects whose boxes, colours and support relations are known.

Map frame ``map``: z up (REP 103), floor at z = 0, the room's interior spans x in [-Lx/2, Lx/2],
y in [-Ly/2, Ly/2], z in [0, Lz]. Instance id 0 is the room structure (floor, walls, ceiling), objects
are 1..N. Objects never interpenetrate: floor footprints are disjoint (with a clearance), objects on
another object stay inside its support rectangle and apart from their siblings. What it cannot do:
objects on shelves' inner boards, doors, windows, articulated or deformable shapes, textures from images.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import open3d as o3d
from scipy.spatial.transform import Rotation
from shapely.geometry import Polygon
from shapely.geometry import box as shapely_box

from lang3d_ros.datasets.synthetic.catalog import CATEGORIES, COLORS, Built, Category, Part
from lang3d_ros.geometry.boxes import Box3D
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.grounding.objects import SceneObject

log = logging.getLogger(__name__)

GT_FORMAT = "lang3d_ros.synthetic_ground_truth"
GT_FORMAT_VERSION = 1
ROOM_ID = 0
WALL_THICKNESS_M = 0.1
CLEARANCE_M = 0.05
MAX_OBJECTS = 60


@dataclass
class SceneObjectGT:
    """One ground-truth object. aabb: axis-aligned hull of its mesh; obb: gravity-aligned box in the object's
    own yaw; support_id: the instance it rests on (0 = floor); size_name: small/medium/large within its
    category's size range; mesh: world-frame triangle mesh (None when loaded from a ground-truth file)."""

    instance_id: int
    label: str
    color_name: str
    color_rgb: np.ndarray
    aabb: Box3D
    obb: Box3D
    support_id: int
    yaw_rad: float
    size_name: str = "medium"
    mesh: o3d.geometry.TriangleMesh | None = field(default=None, repr=False, compare=False)

    def to_scene_object(self) -> SceneObject:
        return SceneObject(
            instance_id=self.instance_id,
            label=self.label,
            box=self.obb,
            color_rgb=np.asarray(self.color_rgb, dtype=float),
        )

    def to_dict(self) -> dict:
        return {
            "instance_id": int(self.instance_id),
            "label": self.label,
            "color_name": self.color_name,
            "color_rgb": [float(c) for c in self.color_rgb],
            "size_name": self.size_name,
            "support_id": int(self.support_id),
            "yaw_rad": float(self.yaw_rad),
            "aabb": {"min_xyz": self.aabb.min_xyz.tolist(), "max_xyz": self.aabb.max_xyz.tolist()},
            "obb": self.obb.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SceneObjectGT":
        try:
            return cls(
                instance_id=int(d["instance_id"]),
                label=str(d["label"]),
                color_name=str(d["color_name"]),
                color_rgb=np.asarray(d["color_rgb"], dtype=float).reshape(3),
                aabb=Box3D.from_min_max(d["aabb"]["min_xyz"], d["aabb"]["max_xyz"]),
                obb=Box3D.from_dict(d["obb"]),
                support_id=int(d["support_id"]),
                yaw_rad=float(d.get("yaw_rad", 0.0)),
                size_name=str(d.get("size_name", "medium")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"ground-truth object entry is malformed ({exc!r}): {d}") from exc


@dataclass
class SyntheticScene:
    """A generated room. room_meshes: name -> world-frame mesh (floor, wall_+x, ..., ceiling)."""

    seed: int
    room_size_m: tuple[float, float, float]
    objects: list[SceneObjectGT]
    room_meshes: dict[str, o3d.geometry.TriangleMesh] = field(repr=False)
    ceiling: bool = False
    generator: dict = field(default_factory=dict)

    # look-ups -------------------------------------------------------------------------------
    def object(self, instance_id: int) -> SceneObjectGT:
        for o in self.objects:
            if o.instance_id == instance_id:
                return o
        raise ValueError(f"no object with instance id {instance_id} (ids 1..{len(self.objects)})")

    @property
    def labels(self) -> list[str]:
        return [o.label for o in self.objects]

    @property
    def room_min_xyz(self) -> np.ndarray:
        lx, ly, _ = self.room_size_m
        return np.array([-lx / 2, -ly / 2, 0.0])

    @property
    def room_max_xyz(self) -> np.ndarray:
        lx, ly, lz = self.room_size_m
        return np.array([lx / 2, ly / 2, lz])

    def meshes(self) -> list[tuple[int, o3d.geometry.TriangleMesh]]:
        """(instance id, world mesh) for the room (id 0) and every object."""
        out = [(ROOM_ID, m) for m in self.room_meshes.values()]
        return out + [(o.instance_id, o.mesh) for o in self.objects if o.mesh is not None]

    def raycasting_scene(self) -> tuple[o3d.t.geometry.RaycastingScene, np.ndarray]:
        """Open3D raycasting scene of every mesh and a lookup array geometry id -> instance id (int32)."""
        rs = o3d.t.geometry.RaycastingScene()
        ids = []
        for inst, mesh in self.meshes():
            gid = rs.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
            if gid != len(ids):
                raise RuntimeError(f"open3d gave geometry id {gid}, expected {len(ids)}")
            ids.append(inst)
        return rs, np.asarray(ids, dtype=np.int32)

    def distance_to_surfaces(self, points_world: np.ndarray) -> np.ndarray:
        """(N,3) map-frame points -> (N,) float32 unsigned distance (m) to the nearest surface."""
        p = np.asarray(points_world, dtype=np.float32).reshape(-1, 3)
        rs, _ = self.raycasting_scene()
        return rs.compute_distance(o3d.core.Tensor(p)).numpy()

    # ground truth --------------------------------------------------------------------------
    def ground_truth_dict(self, T_world_cams=None, stamps_ns=None, intrinsics: Intrinsics | None = None) -> dict:
        poses = []
        if T_world_cams is not None:
            T = np.asarray(T_world_cams, dtype=np.float64).reshape(-1, 4, 4)
            stamps = np.zeros(len(T), dtype=np.int64) if stamps_ns is None else np.asarray(stamps_ns, dtype=np.int64)
            if len(stamps) != len(T):
                raise ValueError(f"{len(T)} camera poses but {len(stamps)} stamps")
            poses = [{"stamp_ns": int(s), "T_world_cam": t.tolist()} for s, t in zip(stamps, T)]
        intr = None
        if intrinsics is not None:
            intr = {k: getattr(intrinsics, k) for k in ("fx", "fy", "cx", "cy", "width", "height")}
        return {
            "format": GT_FORMAT,
            "format_version": GT_FORMAT_VERSION,
            "frame_id": "map",
            "units": "metres",
            "generator": dict(self.generator),
            "room": {
                "size_m": list(self.room_size_m),
                "min_xyz": self.room_min_xyz.tolist(),
                "max_xyz": self.room_max_xyz.tolist(),
                "ceiling": self.ceiling,
            },
            "objects": [o.to_dict() for o in self.objects],
            "camera": {"frame_id": "camera_color_optical_frame", "intrinsics": intr, "poses": poses},
        }

    def save_ground_truth(self, path, T_world_cams=None, stamps_ns=None, intrinsics: Intrinsics | None = None) -> Path:
        """Write the ground-truth JSON (docs/FORMATS.md) atomically; returns the path."""
        data = self.ground_truth_dict(T_world_cams, stamps_ns, intrinsics)
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
        return path


@dataclass
class GroundTruth:
    """A ground-truth file read back. T_world_cams: (N,4,4) float64; stamps_ns: (N,) int64."""

    objects: list[SceneObjectGT]
    room_size_m: tuple[float, float, float]
    generator: dict
    T_world_cams: np.ndarray
    stamps_ns: np.ndarray
    intrinsics: Intrinsics | None
    format_version: int = GT_FORMAT_VERSION

    def object(self, instance_id: int) -> SceneObjectGT:
        for o in self.objects:
            if o.instance_id == instance_id:
                return o
        raise ValueError(f"no object with instance id {instance_id}")

    def regenerate_scene(self) -> SyntheticScene:
        """Rebuild the meshes from the generator parameters (deterministic) and check they match."""
        g = self.generator
        if "seed" not in g:
            raise ValueError("ground truth has no generator parameters; it was not made by generate_scene")
        scene = generate_scene(
            int(g["seed"]),
            int(g["n_objects"]),
            tuple(g["room_size_m"]),
            ceiling=bool(g.get("ceiling", False)),
            vocabulary=g.get("vocabulary"),
        )
        if [(o.instance_id, o.label) for o in scene.objects] != [(o.instance_id, o.label) for o in self.objects]:
            raise ValueError("regenerated scene differs from the ground-truth file (different generator version?)")
        return scene


def load_ground_truth(path) -> GroundTruth:
    """Read a ground-truth JSON written by ``SyntheticScene.save_ground_truth``; ValueError names what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a ground-truth JSON file ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != GT_FORMAT:
        raise ValueError(f"{path}: not a {GT_FORMAT} file")
    version = data.get("format_version")
    if version != GT_FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {version} is not supported (this reader reads {GT_FORMAT_VERSION})")
    cam = data.get("camera") or {}
    poses = cam.get("poses") or []
    T = np.array([p["T_world_cam"] for p in poses], dtype=np.float64).reshape(-1, 4, 4)
    stamps = np.array([p["stamp_ns"] for p in poses], dtype=np.int64)
    intr = Intrinsics(**cam["intrinsics"]) if cam.get("intrinsics") else None
    return GroundTruth(
        objects=[SceneObjectGT.from_dict(o) for o in data.get("objects", [])],
        room_size_m=tuple(float(v) for v in data["room"]["size_m"]),
        generator=dict(data.get("generator") or {}),
        T_world_cams=T,
        stamps_ns=stamps,
        intrinsics=intr,
        format_version=int(version),
    )


# ---------------------------------------------------------------------------------------------
# meshes


def _rot_z(yaw: float) -> np.ndarray:
    return Rotation.from_euler("z", yaw).as_matrix()


def part_mesh(part: Part) -> o3d.geometry.TriangleMesh:
    """One primitive as a mesh in the object frame."""
    sx, sy, sz = part.size
    if part.kind == "box":
        m = o3d.geometry.TriangleMesh.create_box(sx, sy, sz)
        m.translate((-sx / 2, -sy / 2, -sz / 2))
    elif part.kind == "cylinder":
        length = {"z": sz, "x": sx, "y": sy}[part.axis]
        radius = {"z": sx, "x": sy, "y": sx}[part.axis] / 2
        m = o3d.geometry.TriangleMesh.create_cylinder(radius=radius, height=length, resolution=24, split=1)
        if part.axis != "z":
            R = Rotation.from_euler("y" if part.axis == "x" else "x", 90, degrees=True).as_matrix()
            m.rotate(R, center=(0, 0, 0))
    elif part.kind in ("sphere", "ellipsoid"):
        m = o3d.geometry.TriangleMesh.create_sphere(radius=0.5, resolution=12)
        m.vertices = o3d.utility.Vector3dVector(np.asarray(m.vertices) * np.array([sx, sy, sz]))
    else:
        raise ValueError(f"unknown primitive kind {part.kind!r}")
    m.translate(part.center)
    return m


def built_mesh(built: Built) -> o3d.geometry.TriangleMesh:
    mesh = o3d.geometry.TriangleMesh()
    for p in built.parts:
        mesh += part_mesh(p)
    return mesh


def _room_meshes(lx: float, ly: float, lz: float, ceiling: bool) -> dict[str, o3d.geometry.TriangleMesh]:
    t = WALL_THICKNESS_M

    def slab(lo, hi):
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        m = o3d.geometry.TriangleMesh.create_box(*(hi - lo))
        m.translate(lo)
        return m

    out = {
        "floor": slab((-lx / 2 - t, -ly / 2 - t, -t), (lx / 2 + t, ly / 2 + t, 0.0)),
        "wall_+x": slab((lx / 2, -ly / 2 - t, 0.0), (lx / 2 + t, ly / 2 + t, lz)),
        "wall_-x": slab((-lx / 2 - t, -ly / 2 - t, 0.0), (-lx / 2, ly / 2 + t, lz)),
        "wall_+y": slab((-lx / 2, ly / 2, 0.0), (lx / 2, ly / 2 + t, lz)),
        "wall_-y": slab((-lx / 2, -ly / 2 - t, 0.0), (lx / 2, -ly / 2, lz)),
    }
    if ceiling:
        out["ceiling"] = slab((-lx / 2 - t, -ly / 2 - t, lz), (lx / 2 + t, ly / 2 + t, lz + t))
    return out


# ---------------------------------------------------------------------------------------------
# placement


@dataclass
class _Placed:
    instance_id: int
    category: Category
    built: Built
    local_mesh: o3d.geometry.TriangleMesh
    lo: np.ndarray  # (3,) local extents of the mesh
    hi: np.ndarray
    xyz: np.ndarray  # (3,) world position of the object frame origin
    yaw: float
    support_id: int
    size_frac: float

    def footprint(self) -> Polygon:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        corners = np.array(
            [[self.lo[0], self.lo[1]], [self.hi[0], self.lo[1]], [self.hi[0], self.hi[1]], [self.lo[0], self.hi[1]]]
        )
        return Polygon(corners @ np.array([[c, s], [-s, c]]) + self.xyz[:2])

    def support_polygon(self) -> tuple[Polygon, float] | None:
        if self.built.support is None:
            return None
        x0, y0, x1, y1, z = self.built.support
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        return Polygon(corners @ np.array([[c, s], [-s, c]]) + self.xyz[:2]), float(self.xyz[2] + z)

    @property
    def top_z(self) -> float:
        return float(self.xyz[2] + self.hi[2])


def _sample_shape(cat: Category, rng: np.random.Generator) -> tuple[Built, float]:
    (w0, w1), (d0, d1), (h0, h1) = cat.size_range
    f = rng.uniform(0.0, 1.0, size=3)
    w, d, h = w0 + f[0] * (w1 - w0), d0 + f[1] * (d1 - d0), h0 + f[2] * (h1 - h0)
    if cat.round_footprint:
        d = w
        f[1] = f[0]
    return cat.build(w, d, h), float(f.mean())


def _try_place(cat, placed, room, rng, support_of: _Placed | None, lz: float) -> _Placed | None:
    """One attempt at a pose for ``cat``; None when it collides or leaves its surface."""
    built, frac = _sample_shape(cat, rng)
    mesh = built_mesh(built)
    v = np.asarray(mesh.vertices)
    lo, hi = v.min(0), v.max(0)
    lx, ly = room
    if support_of is None and cat.placement == "wall":
        side = int(rng.integers(4))
        yaw = (0.0, np.pi, -np.pi / 2, np.pi / 2)[side]
        gap = 0.02
        if side < 2:  # +y / -y walls: slide along x
            x = rng.uniform(-lx / 2 - lo[0] + gap, lx / 2 - hi[0] - gap) if lx - (hi[0] - lo[0]) > 2 * gap else np.nan
            y = (ly / 2 - hi[1] - gap) if side == 0 else -(ly / 2 - hi[1] - gap)
        else:
            y = rng.uniform(-ly / 2 - lo[0] + gap, ly / 2 - hi[0] - gap) if ly - (hi[0] - lo[0]) > 2 * gap else np.nan
            x = (lx / 2 - hi[1] - gap) if side == 2 else -(lx / 2 - hi[1] - gap)
        xyz = np.array([x, y, 0.0])
    elif support_of is None:
        yaw = (
            float(rng.choice([0.0, np.pi / 2, np.pi, -np.pi / 2]) + rng.normal(0, 0.15))
            if rng.random() < 0.5
            else float(rng.uniform(-np.pi, np.pi))
        )
        r = 0.5 * float(np.hypot(hi[0] - lo[0], hi[1] - lo[1]))
        xyz = np.array(
            [
                rng.uniform(-lx / 2 + r, lx / 2 - r) if lx > 2 * r else np.nan,
                rng.uniform(-ly / 2 + r, ly / 2 - r) if ly > 2 * r else np.nan,
                0.0,
            ]
        )
    else:
        poly, z_top = support_of.support_polygon()
        yaw = float(support_of.yaw + rng.choice([0.0, np.pi / 2, np.pi, -np.pi / 2]) + rng.normal(0, 0.3))
        minx, miny, maxx, maxy = poly.bounds
        xyz = np.array([rng.uniform(minx, maxx), rng.uniform(miny, maxy), z_top])
    if not np.all(np.isfinite(xyz)):
        return None
    cand = _Placed(
        len(placed) + 1,
        cat,
        built,
        mesh,
        lo,
        hi,
        xyz,
        float(yaw),
        0 if support_of is None else support_of.instance_id,
        frac,
    )
    if cand.top_z > lz - 0.1:
        return None
    fp = cand.footprint()
    if support_of is None:
        if not shapely_box(-lx / 2, -ly / 2, lx / 2, ly / 2).buffer(-0.01).contains(fp):
            return None
        siblings = [p for p in placed if p.support_id == 0]
        clearance = CLEARANCE_M
    else:
        if not support_of.support_polygon()[0].buffer(-0.005).contains(fp):
            return None
        siblings = [p for p in placed if p.support_id == support_of.instance_id]
        clearance = 0.01
    if any(fp.distance(p.footprint()) < clearance for p in siblings):
        return None
    return cand


def _finish(p: _Placed, rng: np.random.Generator) -> SceneObjectGT:
    R = _rot_z(p.yaw)
    mesh = o3d.geometry.TriangleMesh(p.local_mesh)
    mesh.rotate(R, center=(0, 0, 0))
    mesh.translate(p.xyz)
    color_name = str(rng.choice(p.category.colors))
    centre_local = (p.lo + p.hi) / 2
    obb = Box3D(R @ centre_local + p.xyz, p.hi - p.lo, R)
    size_name = "small" if p.size_frac < 1 / 3 else ("large" if p.size_frac > 2 / 3 else "medium")
    return SceneObjectGT(
        instance_id=p.instance_id,
        label=p.category.name,
        color_name=color_name,
        color_rgb=np.array(COLORS[color_name], dtype=float),
        aabb=Box3D.aabb_of(np.asarray(mesh.vertices)),
        obb=obb,
        support_id=p.support_id,
        yaw_rad=float(np.arctan2(np.sin(p.yaw), np.cos(p.yaw))),
        size_name=size_name,
        mesh=mesh,
    )


def generate_scene(
    seed: int,
    n_objects: int = 12,
    room_size_m: Sequence[float] = (6.0, 5.0, 2.6),
    ceiling: bool = False,
    vocabulary: Sequence[str] | None = None,
    max_attempts: int = 60,
) -> SyntheticScene:
    """A room with ``n_objects`` labelled objects; same arguments -> identical scene.

    About 40 % of the objects stand on the floor (furniture first, a table when the vocabulary has one),
    the rest rest on a supporting object (or the floor for boxes, balls, backpacks, plants, toy cars).
    Raises ValueError when the arguments are invalid or the objects cannot be placed without overlap.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not 1 <= int(n_objects) <= MAX_OBJECTS:
        raise ValueError(f"n_objects must be in 1..{MAX_OBJECTS}, got {n_objects}")
    size = tuple(float(v) for v in room_size_m)
    if len(size) != 3 or size[0] < 2.5 or size[1] < 2.5 or size[2] < 2.2 or max(size) > 30:
        raise ValueError(
            f"room_size_m must be (x, y, z) with x, y >= 2.5 m, z >= 2.2 m (and <= 30 m), got {room_size_m}"
        )
    vocab = list(CATEGORIES) if vocabulary is None else [str(v) for v in vocabulary]
    unknown = sorted(set(vocab) - set(CATEGORIES))
    if unknown or not vocab:
        raise ValueError(f"unknown categories {unknown} (or an empty vocabulary); known: {sorted(CATEGORIES)}")
    rng = np.random.default_rng(int(seed))
    lx, ly, lz = size
    large = [c for c in vocab if CATEGORIES[c].placement in ("wall", "floor")]
    small = [c for c in vocab if CATEGORIES[c].placement == "support"]
    n_large = min(n_objects, max(1, int(round(0.4 * n_objects)))) if small else n_objects
    if not large:
        n_large = 0
    plan = []
    for i in range(n_large):
        plan.append("table" if i == 0 and "table" in large else str(rng.choice(large)))
    plan += [str(rng.choice(small)) for _ in range(n_objects - n_large)]

    placed: list[_Placed] = []
    for name in plan:
        cand = None
        for attempt in range(max_attempts * 3):
            cat = CATEGORIES[
                name
                if attempt < max_attempts
                else str(rng.choice(large if CATEGORIES[name].placement != "support" else small))
            ]
            if cat.placement == "support":
                hosts = [p for p in placed if p.built.support is not None]
                on_floor = cat.floor_ok and (not hosts or rng.random() < 0.25)
                if not hosts and not on_floor:
                    continue
                host = None if on_floor else hosts[int(rng.integers(len(hosts)))]
                cand = _try_place(cat, placed, (lx, ly), rng, host, lz)
            else:
                cand = _try_place(cat, placed, (lx, ly), rng, None, lz)
            if cand is not None:
                break
        if cand is None:
            raise ValueError(
                f"could place only {len(placed)} of {n_objects} objects in a {lx}x{ly} m room (seed {seed}); use a "
                f"larger room or fewer objects"
            )
        placed.append(cand)
    objects = [_finish(p, rng) for p in placed]
    scene = SyntheticScene(
        seed=int(seed),
        room_size_m=size,
        objects=objects,
        room_meshes=_room_meshes(lx, ly, lz, ceiling),
        ceiling=bool(ceiling),
        generator={
            "seed": int(seed),
            "n_objects": int(n_objects),
            "room_size_m": list(size),
            "ceiling": bool(ceiling),
            "vocabulary": None if vocabulary is None else vocab,
        },
    )
    log.debug("generated scene seed=%d with %d objects: %s", seed, len(objects), scene.labels)
    return scene
