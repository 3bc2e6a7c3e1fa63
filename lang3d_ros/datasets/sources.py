"""``open_source``: pick a FrameSource from what is at a path, or from a scheme (``tum://``, ``replica://``,
``scannet://``, ``gradslam://``, ``rosbag://``); keyword arguments go to the reader."""

from __future__ import annotations

from pathlib import Path

from lang3d_ros.datasets.folders import ReplicaSource, ScanNetSource, TumSource
from lang3d_ros.datasets.frame import FrameSource
from lang3d_ros.datasets.gradslam import GradslamBatchSource
from lang3d_ros.datasets.rosbag import RosbagSource

READERS = {
    "rosbag": RosbagSource,
    "tum": TumSource,
    "replica": ReplicaSource,
    "scannet": ScanNetSource,
    "gradslam": GradslamBatchSource,
}


def detect_kind(path: Path) -> str:
    """The reader name for ``path``, or ValueError listing what was looked for."""
    if path.is_file() and path.suffix in (".mcap", ".db3"):
        return "rosbag"
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if "metadata.yaml" in names or any(n.endswith((".mcap", ".db3")) for n in names):
            return "rosbag"
        if {"rgb.txt", "depth.txt"} <= names:
            return "tum"
        if "traj.txt" in names and "results" in names:
            return "replica"
        if {"color", "depth", "pose", "intrinsic"} <= names:
            return "scannet"
        if {"colors.npy", "depths.npy", "poses.npy", "intrinsics.npy"} <= names:
            return "gradslam"
    raise ValueError(
        f"{path}: not a recognised RGB-D source (looked for a rosbag2 folder or .mcap/.db3, TUM rgb.txt+depth.txt, "
        "Replica traj.txt+results/, ScanNet color/depth/pose/intrinsic, gradslam colors/depths/poses/intrinsics.npy)"
    )


def open_source(path_or_uri, **kw) -> FrameSource:
    s = str(path_or_uri)
    kind = None
    if "://" in s:
        kind, s = s.split("://", 1)
        if kind not in READERS:
            raise ValueError(f"unknown source scheme {kind!r}; known: {sorted(READERS)}")
    path = Path(s)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return READERS[kind or detect_kind(path)](path, **kw)
