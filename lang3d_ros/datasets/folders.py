"""Readers for RGB-D datasets stored as image folders: TUM RGB-D, Replica as rendered by NICE-SLAM, and
ScanNet's exported frames. Each is a FrameSource: opening indexes the files (no image is read), iteration
loads one frame at a time in time order. Images load with PIL. What they cannot do: undistort (TUM's
fr1/fr2 lenses have distortion that is ignored here), read ScanNet .sens files, or Replica meshes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.datasets.poses import interpolate_poses
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.geometry.transforms import matrix_from_pose, validate_rigid

log = logging.getLogger(__name__)

TUM_INTRINSICS = {  # fx, fy, cx, cy of the colour cameras (TUM's file_formats page); 640x480
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
    "default": (525.0, 525.0, 319.5, 239.5),
}
REPLICA_CAMERA = {"w": 1200, "h": 680, "fx": 600.0, "fy": 600.0, "cx": 599.5, "cy": 339.5, "scale": 6553.5}


def load_rgb(path: Path) -> np.ndarray:
    """(H,W,3) uint8 from any PIL-readable colour file."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read colour image ({exc})") from exc


def load_depth(path: Path, scale_units_per_m: float) -> np.ndarray:
    """(H,W) float32 metres from a 16-bit PNG holding ``scale_units_per_m`` units per metre (0 = missing)."""
    try:
        with Image.open(path) as im:
            raw = np.asarray(im)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read depth image ({exc})") from exc
    if raw.ndim != 2 or raw.dtype.kind not in "ui":
        raise ValueError(f"{path}: depth must be a single-channel integer PNG, got shape {raw.shape} dtype {raw.dtype}")
    return (raw.astype(np.float32) / np.float32(scale_units_per_m)).astype(np.float32)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise ValueError(f"{path}: missing ({what})")
    return path


def read_list(path: Path, min_cols: int) -> list[list[str]]:
    """TUM-style text list: '#' comments, whitespace-separated columns."""
    rows = []
    for n, line in enumerate(_need(path, "list file").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cols = line.replace(",", " ").split()
        if len(cols) < min_cols:
            raise ValueError(f"{path}:{n}: expected at least {min_cols} columns, got {line!r}")
        rows.append(cols)
    return rows


class TumSource:
    """TUM RGB-D sequence folder (rgb.txt, depth.txt, groundtruth.txt; depth PNG / 5000).

    Colour images are matched to the nearest depth image within ``max_dt_s``; poses (the colour optical
    centre in the motion-capture world, which is not z-up) are slerped at the colour stamps. Colour images
    without depth or pose are skipped and counted in ``skipped``."""

    def __init__(
        self,
        root,
        intrinsics: Intrinsics | None = None,
        max_dt_s: float = 0.02,
        max_pose_gap_s: float = 0.1,
        depth_scale: float = 5000.0,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such TUM sequence folder")
        rgb = read_list(self.root / "rgb.txt", 2)
        depth = read_list(self.root / "depth.txt", 2)
        gt = read_list(self.root / "groundtruth.txt", 8)
        if not rgb or not depth or not gt:
            raise ValueError(f"{self.root}: rgb.txt, depth.txt and groundtruth.txt must each list at least one entry")
        self.depth_scale = float(depth_scale)
        rgb_t = np.array([round(float(r[0]) * 1e9) for r in rgb], dtype=np.int64)
        d_t = np.array([round(float(r[0]) * 1e9) for r in depth], dtype=np.int64)
        order = np.argsort(d_t)
        d_sorted = d_t[order]
        j = (
            np.clip(np.searchsorted(d_sorted, rgb_t), 1, max(1, len(d_sorted) - 1))
            if len(d_sorted) > 1
            else np.zeros(len(rgb_t), int)
        )
        if len(d_sorted) > 1:
            j = np.where(np.abs(d_sorted[j - 1] - rgb_t) <= np.abs(d_sorted[j] - rgb_t), j - 1, j)
        d_ok = np.abs(d_sorted[j] - rgb_t) <= max_dt_s * 1e9
        g = np.array([[float(v) for v in r[:8]] for r in gt])
        g_t = np.round(g[:, 0] * 1e9).astype(np.int64)
        go = np.argsort(g_t)
        T_gt = np.stack([matrix_from_pose(r[1:4], r[4:8]) for r in g[go]])
        T, p_ok = interpolate_poses(g_t[go], T_gt, rgb_t, int(max_pose_gap_s * 1e9), int(max_dt_s * 1e9))
        keep = np.nonzero(d_ok & p_ok)[0]
        self.skipped = int(len(rgb_t) - len(keep))
        if not len(keep):
            raise ValueError(
                f"{self.root}: no colour image has a depth image within {max_dt_s} s and a ground-truth pose"
            )
        self._items = [(int(rgb_t[k]), self.root / rgb[k][1], self.root / depth[order[j[k]]][1], T[k]) for k in keep]
        self._items.sort(key=lambda it: it[0])
        if intrinsics is None:
            name = next((k for k in TUM_INTRINSICS if k in self.root.name), "default")
            w, h = Image.open(_need(self._items[0][1], "colour image")).size
            intrinsics = Intrinsics(*TUM_INTRINSICS[name], width=w, height=h)
        self.intrinsics = intrinsics

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Frame]:
        for i, (stamp, rgb_p, d_p, T) in enumerate(self._items):
            yield Frame(
                load_rgb(_need(rgb_p, "colour image")),
                load_depth(_need(d_p, "depth image"), self.depth_scale),
                self.intrinsics,
                T.copy(),
                stamp,
                i,
            ).validate()


class _IndexedFolderSource:
    """Frames numbered 0..N-1 with a pose each; stamps are index / fps."""

    fps = 30.0

    def __init__(self):
        self._items: list[tuple[Path, Path, np.ndarray]] = []
        self.intrinsics: Intrinsics
        self.depth_scale = 1000.0

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Frame]:
        for i, (rgb_p, d_p, T) in enumerate(self._items):
            depth = load_depth(_need(d_p, "depth image"), self.depth_scale)
            rgb = load_rgb(_need(rgb_p, "colour image"))
            if rgb.shape[:2] != depth.shape:
                rgb = np.asarray(Image.fromarray(rgb).resize((depth.shape[1], depth.shape[0]), Image.BILINEAR))
            yield Frame(rgb, depth, self.intrinsics, T.copy(), int(round(i * 1e9 / self.fps)), i).validate()


class ReplicaSource(_IndexedFolderSource):
    """Replica as rendered by NICE-SLAM: results/frame%06d.jpg, results/depth%06d.png (/ 6553.5), traj.txt
    (one row-major 4x4 camera-to-world per line, OpenCV optical frame). Intrinsics from cam_params.json in the
    scene folder or its parent, else NICE-SLAM's Replica defaults (1200x680, f=600)."""

    def __init__(self, root, intrinsics: Intrinsics | None = None, fps: float = 30.0):
        super().__init__()
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such Replica scene folder")
        self.fps = float(fps)
        cam = dict(REPLICA_CAMERA)
        for p in (self.root / "cam_params.json", self.root.parent / "cam_params.json"):
            if p.is_file():
                try:
                    cam.update(json.loads(p.read_text())["camera"])
                except (json.JSONDecodeError, KeyError) as exc:
                    raise ValueError(f"{p}: expected {{'camera': {{w, h, fx, fy, cx, cy, scale}}}} ({exc})") from exc
                break
        self.depth_scale = float(cam["scale"])
        self.intrinsics = intrinsics or Intrinsics(
            float(cam["fx"]), float(cam["fy"]), float(cam["cx"]), float(cam["cy"]), int(cam["w"]), int(cam["h"])
        )
        rows = [r for r in read_list(self.root / "traj.txt", 16)]
        colors = sorted((self.root / "results").glob("frame*.jpg"))
        if len(colors) != len(rows):
            raise ValueError(f"{self.root}: {len(colors)} results/frame*.jpg but {len(rows)} poses in traj.txt")
        for i, (c, r) in enumerate(zip(colors, rows)):
            T = validate_rigid(
                np.array([float(v) for v in r[:16]]).reshape(4, 4), f"{self.root / 'traj.txt'} line {i + 1}"
            )
            self._items.append((c, self.root / "results" / c.name.replace("frame", "depth").replace(".jpg", ".png"), T))


class ScanNetSource(_IndexedFolderSource):
    """ScanNet exported frames: color/<i>.jpg, depth/<i>.png (mm), pose/<i>.txt (4x4 camera-to-world),
    intrinsic/intrinsic_depth.txt. Colour is resized to the depth size (depth intrinsics apply to both;
    the colour/depth registration of ScanNet's export is assumed). Frames with a non-finite pose are skipped."""

    def __init__(self, root, fps: float = 30.0, depth_scale: float = 1000.0):
        super().__init__()
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such ScanNet scene folder")
        self.fps, self.depth_scale = float(fps), float(depth_scale)
        depth_files = sorted((self.root / "depth").glob("*.png"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
        if not depth_files:
            raise ValueError(f"{self.root / 'depth'}: no depth PNGs")
        K = np.loadtxt(_need(self.root / "intrinsic" / "intrinsic_depth.txt", "depth intrinsics"))
        w, h = Image.open(depth_files[0]).size
        self.intrinsics = Intrinsics.from_K(K, w, h)
        self.skipped = 0
        for d in depth_files:
            T = np.loadtxt(_need(self.root / "pose" / f"{d.stem}.txt", "pose"))
            if T.shape != (4, 4) or not np.all(np.isfinite(T)):
                self.skipped += 1
                continue
            self._items.append((self.root / "color" / f"{d.stem}.jpg", d, validate_rigid(T, f"pose/{d.stem}.txt")))
        if not self._items:
            raise ValueError(f"{self.root}: no frame has a valid pose")
