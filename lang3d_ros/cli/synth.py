"""``lang3d synth``: generate a synthetic room, render a camera trajectory, write bag + ground truth."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("synth", help="write a synthetic RGB-D bag with ground truth", description=__doc__)
    p.add_argument("--seed", type=int, required=True, help="scene, trajectory and noise seed")
    p.add_argument("--out", type=Path, required=True, help="output folder (created; must not hold a bag already)")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--objects", type=int, default=12)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--trajectory", choices=("orbit", "walk"), default="orbit")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--depth-encoding", choices=("16UC1", "32FC1"), default="16UC1")
    p.add_argument("--pose-msg", choices=("pose", "odom", "both"), default="both")
    p.add_argument("--pose-rate", type=float, default=None, help="pose messages per second (default: one per frame)")
    p.add_argument("--no-noise", action="store_true", help="exact raycast depth and colour")
    p.add_argument("--ceiling", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lang3d_ros.datasets.rosbag import write_bag
    from lang3d_ros.datasets.synthetic import (
        DEFAULT_INTRINSICS,
        RenderNoise,
        generate_scene,
        make_trajectory,
        render_frames,
    )

    if args.frames < 1 or args.width < 16 or args.height < 16:
        raise ValueError(
            f"need --frames >= 1 and an image of at least 16x16, got {args.frames} frames {args.width}x{args.height}"
        )
    scene = generate_scene(args.seed, n_objects=args.objects, ceiling=args.ceiling)
    poses = make_trajectory(scene, args.trajectory, args.frames, seed=args.seed)
    intr = DEFAULT_INTRINSICS.scaled(args.width, args.height)
    noise = None if args.no_noise else RenderNoise()
    frames = render_frames(scene, poses, intr, noise=noise, seed=args.seed)
    bag = args.out / "bag"
    summary = write_bag(
        frames,
        bag,
        storage=args.storage,
        depth_encoding=args.depth_encoding,
        pose_msg=args.pose_msg,
        pose_rate_hz=args.pose_rate,
        scene=scene,
        seed=args.seed,
        progress=True,
        total=args.frames,
    )
    print(
        f"wrote {summary.n_frames} frames to {summary.path} ({args.storage}, depth {args.depth_encoding}); ground "
        f"truth: {summary.ground_truth}"
    )
    print("objects: " + ", ".join(f"{o.instance_id}:{o.color_name} {o.label}" for o in scene.objects))
    return 0
