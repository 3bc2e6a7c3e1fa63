"""Benchmark: generate a synthetic scene, render N frames, write a bag, read it back. Prints a Markdown table.

.venv/bin/python benchmarks/synth_generate.py --frames 200 --width 640 --height 480
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from lang3d_ros.datasets.rosbag import RosbagSource, write_bag
from lang3d_ros.datasets.synthetic import (
    DEFAULT_INTRINSICS,
    RenderNoise,
    generate_scene,
    make_trajectory,
    render_frames,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--objects", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    args = ap.parse_args()

    intr = DEFAULT_INTRINSICS.scaled(args.width, args.height)
    rows = []
    t0 = time.perf_counter()
    scene = generate_scene(args.seed, n_objects=args.objects)
    rows.append(("generate scene", time.perf_counter() - t0, f"{len(scene.objects)} objects"))
    t0 = time.perf_counter()
    poses = make_trajectory(scene, "orbit", args.frames, seed=args.seed)
    rows.append(("trajectory (orbit)", time.perf_counter() - t0, f"{args.frames} poses"))

    t0 = time.perf_counter()
    n = 0
    for _ in render_frames(scene, poses[: min(20, args.frames)], intr, noise=RenderNoise(), seed=args.seed):
        n += 1
    t_render = (time.perf_counter() - t0) / n
    rows.append(
        ("render only (extrapolated)", t_render * args.frames, f"{1e3 * t_render:.0f} ms/frame (first {n} frames)")
    )

    tmp = Path(tempfile.mkdtemp(prefix="synth_bench_"))
    try:
        t0 = time.perf_counter()
        frames = render_frames(scene, poses, intr, noise=RenderNoise(), seed=args.seed)
        write_bag(
            frames, tmp / "bag", storage=args.storage, pose_msg="both", scene=scene, progress=True, total=args.frames
        )
        t_total = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in (tmp / "bag").iterdir()) / 1e6
        rows.append(
            (f"render + write bag ({args.storage})", t_total, f"{args.frames / t_total:.1f} frames/s, {size_mb:.0f} MB")
        )
        t0 = time.perf_counter()
        src = RosbagSource(tmp / "bag")
        count = sum(1 for _ in src)
        t_read = time.perf_counter() - t0
        rows.append(("read back (index + decode)", t_read, f"{count / t_read:.1f} frames/s"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{args.frames} frames {args.width}x{args.height}, {args.objects} objects, seed {args.seed}\n")
    print("| step | seconds | note |")
    print("|---|---:|---|")
    for name, sec, note in rows:
        print(f"| {name} | {sec:.2f} | {note} |")


if __name__ == "__main__":
    main()
