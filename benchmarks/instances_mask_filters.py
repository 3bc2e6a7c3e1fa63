#!/usr/bin/env python3
"""The per-level mask filters of a keyframe's instance pass (instances.mapper): ``depth_consistent`` then
``erode_labels`` (vote erosion, graded per mask and per part), on a generated room's keyframes at 320 x 240 and
640 x 480.

    .venv/bin/python benchmarks/instances_mask_filters.py --frames 6

Masks per level: the objects' instance map, the same with every mask dilated by 2 px (SAM's boundary bleeding,
the case graded erosion is for), and one mask over all objects. Prints median ms per keyframe (3 levels) and the
share of mask pixels the filters keep. Runs on the mapping worker after fusion, never on the query path.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def keyframes(width: int, height: int, n_frames: int, seed: int = 3):
    """(depth (H, W) float32, [3 level seg maps (H, W) int32]) per keyframe of a 14-object room."""
    from scipy import ndimage

    from lang3d_ros.datasets.synthetic.render import RenderNoise, render_frames
    from lang3d_ros.datasets.synthetic.scene import generate_scene
    from lang3d_ros.datasets.synthetic.trajectory import make_trajectory
    from lang3d_ros.geometry.camera import Intrinsics

    scene = generate_scene(seed, n_objects=14)
    f_px = 0.75 * width
    K = Intrinsics(f_px, f_px, (width - 1) / 2, (height - 1) / 2, width, height)
    for f in render_frames(scene, make_trajectory(scene, "orbit", n_frames, seed=1), K, noise=RenderNoise(), seed=0):
        inst = np.asarray(f.instance_map).astype(np.int32)
        ids = np.unique(inst[inst >= 0])
        lut = np.full(int(inst.max(initial=0)) + 1, -1, np.int32)
        lut[ids] = np.arange(len(ids), dtype=np.int32)
        seg = np.where(inst >= 0, lut[np.maximum(inst, 0)], -1).astype(np.int32)
        grown = seg.copy()  # each mask dilated by 2 px into the pixels of no mask
        for _ in range(2):
            near = ndimage.grey_dilation(grown, size=(3, 3))
            grown = np.where(grown < 0, near, grown).astype(np.int32)
        yield np.asarray(f.depth_m, np.float32), [seg, grown, np.where(seg >= 0, 0, -1).astype(np.int32)]


def main() -> None:
    from lang3d_ros.config import load_config
    from lang3d_ros.instances.mapper import depth_consistent, erode_labels

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=6)
    a = ap.parse_args()
    cfg = load_config().instances
    print(
        f"vote_erode_px {cfg.vote_erode_px}, depth_edge_radius_px {cfg.depth_edge_radius_px}; 3 levels per "
        f"keyframe; median over {a.frames} keyframes; {platform.node()} {platform.machine()}\n"
    )
    print("| keyframes | depth_consistent ms | erode_labels ms | mask pixels kept |\n|---|---:|---:|---:|")
    for w, h in ((320, 240), (640, 480)):
        t_dc, t_er, kept = [], [], []
        for depth, segs in keyframes(w, h, a.frames):
            t0 = time.perf_counter()
            dcs = [
                depth_consistent(s, depth, cfg.depth_edge_radius_px, cfg.depth_edge_tol_m, cfg.depth_edge_tol_per_m2)
                for s in segs
            ]
            t1 = time.perf_counter()
            outs = [
                erode_labels(d, cfg.vote_erode_px, depth, cfg.depth_edge_tol_m, cfg.depth_edge_tol_per_m2) for d in dcs
            ]
            t2 = time.perf_counter()
            t_dc.append(t1 - t0)
            t_er.append(t2 - t1)
            kept.append(sum(int((o >= 0).sum()) for o in outs) / max(sum(int((s >= 0).sum()) for s in segs), 1))
        print(
            f"| room {w}x{h} | {1e3 * np.median(t_dc):.1f} | {1e3 * np.median(t_er):.1f} | "
            f"{100 * np.mean(kept):.1f} % |"
        )


if __name__ == "__main__":
    main()
