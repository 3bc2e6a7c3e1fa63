#!/usr/bin/env python3
"""A keyframe's largest-3D-part pass over its three levels (instances.mapper.largest_3d_part with one PixelVoxels
per keyframe) against the per-level function it replaced (instances.stats_reference.largest_3d_part_reference),
side by side in one process, on a generated room's keyframes at 320 x 240 and 640 x 480 and on a worst case
(every pixel a point, 40 masks spread over the frame).

    .venv/bin/python benchmarks/instances_mask_parts.py --frames 6

Masks per level: the objects' instance map, the same merged over every third object (under-segmented, far apart
in depth), and one mask over all objects. Both must give the same ids (checked); prints median ms per keyframe.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def keyframes(width: int, height: int, n_frames: int, seed: int = 3):
    from lang3d_ros.datasets.synthetic.render import render_frames
    from lang3d_ros.datasets.synthetic.scene import generate_scene
    from lang3d_ros.datasets.synthetic.trajectory import make_trajectory
    from lang3d_ros.geometry.camera import Intrinsics
    from lang3d_ros.instances.mapper import pixel_points

    scene = generate_scene(seed, n_objects=14)
    f_px = 0.75 * width
    K = Intrinsics(f_px, f_px, (width - 1) / 2, (height - 1) / 2, width, height)
    for f in render_frames(scene, make_trajectory(scene, "orbit", n_frames, seed=1), K, noise=None, seed=0):
        inst = np.asarray(f.instance_map).reshape(-1).astype(np.int32)
        yield pixel_points(f), [inst, np.where(inst >= 0, inst % 3, -1), np.where(inst >= 0, 0, -1)]


def worst_case(n_frames: int, seed: int = 0):
    """76.8k pixels, all with points (a 320 x 240 depth image of a bumpy wall 1-4 m away), 40 masks of blocks."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:240, 0:320]
    for _ in range(n_frames):
        z = 1.0 + 3.0 * rng.random((6, 8)).repeat(40, 0).repeat(40, 1) + 0.02 * rng.standard_normal((240, 320))
        xyz = np.stack([(u - 160) / 240 * z, (v - 120) / 240 * z, z], -1).reshape(-1, 3)
        blocks = (v // 48) * 8 + (u // 40)
        seg = (blocks % 40).reshape(-1).astype(np.int32)
        yield xyz, [seg, (seg // 2).astype(np.int32), (seg // 5).astype(np.int32)]


def main() -> None:
    from lang3d_ros.config import load_config
    from lang3d_ros.instances.mapper import PixelVoxels, largest_3d_part
    from lang3d_ros.instances.stats_reference import largest_3d_part_reference

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--link-m", type=float, default=None, help="voxel link (default: instances.mask_part_link_m)")
    a = ap.parse_args()
    link = load_config().instances.mask_part_link_m if a.link_m is None else a.link_m
    cases = {
        "room 320x240": keyframes(320, 240, a.frames),
        "room 640x480": keyframes(640, 480, a.frames),
        "worst case 320x240, 40 masks": worst_case(a.frames),
    }
    print(f"link {link} m; 3 levels per keyframe; median over {a.frames} keyframes; {platform.machine()}\n")
    print("| keyframes | pixels with a point | reference ms | shared voxels ms | speed-up |\n|---|---:|---:|---:|---:|")
    for name, frames in cases.items():
        t_ref, t_new, n_pts = [], [], []
        for xyz, segs in frames:
            segs = [s.astype(np.int32) for s in segs]
            t0 = time.perf_counter()
            want = [largest_3d_part_reference(s, xyz, link) for s in segs]
            t1 = time.perf_counter()
            voxels = PixelVoxels(xyz, link)
            got = [largest_3d_part(s, xyz, link, voxels) for s in segs]
            t2 = time.perf_counter()
            assert all(np.array_equal(w, g) for w, g in zip(want, got)), "the two disagree"
            t_ref.append(t1 - t0)
            t_new.append(t2 - t1)
            n_pts.append(int(np.isfinite(xyz[:, 0]).sum()))
        r, n = 1e3 * np.median(t_ref), 1e3 * np.median(t_new)
        print(f"| {name} | {int(np.median(n_pts))} | {r:.1f} | {n:.1f} | {r / n:.1f}x |")


if __name__ == "__main__":
    main()
