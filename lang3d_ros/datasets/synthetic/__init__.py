"""Synthetic indoor scenes with known answers: generator, camera trajectories, ray-cast RGB-D frames."""

from lang3d_ros.datasets.synthetic.catalog import CATEGORIES, COLORS, LABELS
from lang3d_ros.datasets.synthetic.render import DEFAULT_INTRINSICS, RenderNoise, make_stamps, render_frames
from lang3d_ros.datasets.synthetic.scene import (
    GroundTruth,
    SceneObjectGT,
    SyntheticScene,
    generate_scene,
    load_ground_truth,
)
from lang3d_ros.datasets.synthetic.trajectory import look_at, make_trajectory

__all__ = [
    "CATEGORIES",
    "COLORS",
    "LABELS",
    "DEFAULT_INTRINSICS",
    "GroundTruth",
    "RenderNoise",
    "SceneObjectGT",
    "SyntheticScene",
    "generate_scene",
    "load_ground_truth",
    "look_at",
    "make_stamps",
    "make_trajectory",
    "render_frames",
]
