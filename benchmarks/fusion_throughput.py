"""PointFusion throughput: PointMap (with / without 3-level features) vs gradSLAM's own PointFusion.

Same frames, same machine, one process: an analytic RGB-D corridor walk (exact depth + Gaussian noise), GT poses.
The systems are stepped frame by frame in turn (interleaved), so load from other work hits all of them alike.
gradSLAM 0.1.0 is not a dependency: point --gradslam-path at a folder holding it (``pip install --no-deps
gradslam==0.1.0 kornia==0.6.12 --target DIR``); the harness stubs ``chamferdist`` (ICP only, unused with GT
poses) and ``cv2`` (plotting only) when they are missing. Without gradSLAM its column is skipped with a message.

    python benchmarks/fusion_throughput.py --frames 30 --step-m 0.3 --prefill-frames 40 --backends numba,torch \
        --gradslam-path /tmp/gradslam_env
"""
from __future__ import annotations

import argparse
import importlib
import resource
import sys
import time
import types

import numpy as np
import torch

from lang3d_ros.fusion.analytic_scene import Corridor, corridor_walk
from lang3d_ros.fusion.config import FusionConfig
from lang3d_ros.fusion.pointfusion import PointMap
from lang3d_ros.device import resolve_device
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.semantics.types import KeyframeSemantics, LevelMasks


def load_gradslam(path: str | None):
    """(PointFusion, RGBDImages, Pointclouds) classes, or None with a printed reason."""
    if path:
        sys.path.insert(0, path)
    for name in ("chamferdist", "cv2"):
        try:
            importlib.import_module(name)
        except ImportError:
            stub = types.ModuleType(name)
            if name == "chamferdist":
                chamfer = types.ModuleType("chamferdist.chamfer")

                def knn_points(*_a, **_k):
                    raise RuntimeError("chamferdist stub: ICP odometry is not available in this harness")

                chamfer.knn_points = knn_points
                sys.modules["chamferdist.chamfer"] = chamfer
            sys.modules[name] = stub
    try:
        from gradslam.slam.pointfusion import PointFusion
        from gradslam.structures.pointclouds import Pointclouds
        from gradslam.structures.rgbdimages import RGBDImages
    except Exception as exc:  # noqa: BLE001 - any import failure means: skip the column
        print(f"gradSLAM not importable ({type(exc).__name__}: {exc}); its column is skipped", file=sys.stderr)
        return None
    return PointFusion, RGBDImages, Pointclouds


class GradslamRunner:
    def __init__(self, classes, device: torch.device):
        PointFusion, self.RGBDImages, Pointclouds = classes
        self.slam = PointFusion(odom="gt", dsratio=1, device=device)
        self.pcs = Pointclouds(device=device)
        self.device = device

    def step(self, f) -> int:
        dev = self.device
        K = torch.eye(4)
        K[:3, :3] = torch.from_numpy(f.intrinsics.K)
        rgbd = self.RGBDImages(
            torch.from_numpy(f.rgb.astype(np.float32))[None, None].to(dev),
            torch.from_numpy(f.depth_m)[None, None, ..., None].to(dev),
            K[None, None].to(dev),
            torch.from_numpy(f.T_world_cam.astype(np.float32))[None, None].to(dev),
        )
        self.pcs, _ = self.slam.step(self.pcs, rgbd, None, inplace=True)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return int(self.pcs.num_points_per_pointcloud[0]) if self.pcs.has_points else 0

    def map_bytes(self) -> int:
        p = self.pcs
        return sum(t.numel() * t.element_size() for t in (p.points_padded, p.normals_padded, p.colors_padded, p.features_padded) if t is not None)


def semantics_for(frame, dim: int, n_masks: int = 48) -> KeyframeSemantics:
    """Three levels of masks from the wall id map (a mask per wall, per 0.5 m cell, per 0.25 m cell)."""
    rng = np.random.default_rng(dim)
    feats = rng.normal(size=(n_masks, dim)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    wall = frame.instance_map.astype(np.int32)
    h, w = wall.shape
    cols = np.arange(w)[None, :] * 8 // w
    rows = np.arange(h)[:, None] * 4 // h
    levels = [wall * 0 + (wall * 7 + cols + rows * 8) % n_masks, (wall * 5 + cols // 2) % n_masks, wall]
    return KeyframeSemantics(tuple(LevelMasks(s.astype(np.int32), feats, np.ones(n_masks, np.float32)) for s in levels))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=80)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--feature-dims", default="0,3", help="comma list; 0 = no features (e.g. 0,3,512)")
    ap.add_argument("--backends", default="auto",
                    help="comma list of fusion.backend values to run side by side (auto, numba, torch)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gradslam-path", default="/tmp/gradslam_env")
    ap.add_argument("--no-gradslam", action="store_true")
    ap.add_argument("--step-m", type=float, default=0.08, help="camera advance per frame (map growth)")
    ap.add_argument("--prefill-frames", type=int, default=0,
                    help="untimed: first fuse this many frames of a copy of the walk 1 km away into the PointMaps "
                         "(a large map elsewhere; gradSLAM starts empty, which favours it)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)

    intr = Intrinsics(525.0, 525.0, 319.5, 239.5, 640, 480).scaled(args.width, args.height)
    corridor = Corridor(length_m=40.0, width_m=3.0, height_m=3.0)
    t0 = time.perf_counter()
    frames = list(corridor_walk(corridor, args.frames, intr, step_m=args.step_m, noise_m=0.002, seed=0))
    print(f"rendered {len(frames)} frames {args.width}x{args.height} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    dims = [int(x) for x in args.feature_dims.split(",") if x.strip()]
    systems: dict[str, dict] = {}
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for d in dims:
        sem = [semantics_for(f, d) for f in frames] if d else [None] * len(frames)
        for b in backends:
            pm = PointMap(FusionConfig(backend=b), feature_dim=d or None, device=dev)
            name = f"PointMap [{pm.backend}]" + (f" + 3x{d}-d features" if d else "")
            systems[name] = dict(kind="ours", map=pm, sem=sem)
    if not args.no_gradslam:
        classes = load_gradslam(args.gradslam_path)
        if classes is not None:
            systems["gradSLAM 0.1.0 PointFusion"] = dict(kind="gradslam", map=GradslamRunner(classes, dev))
    if args.prefill_frames:
        far = np.eye(4)
        far[0, 3] = 1000.0
        t0 = time.perf_counter()
        for f in corridor_walk(corridor, args.prefill_frames, intr, step_m=args.step_m, noise_m=0.002, seed=1):
            f.T_world_cam = far @ f.T_world_cam
            for s in systems.values():
                if s["kind"] == "ours":
                    s["map"].integrate(f, semantics_for(f, s["map"].feature_dim) if s["map"].feature_dim else None)
        print(f"prefilled PointMaps with {args.prefill_frames} far-away frames in {time.perf_counter() - t0:.0f} s: "
              + ", ".join(f"{k} {v['map'].num_points:,} pts" for k, v in systems.items() if v["kind"] == "ours"), file=sys.stderr)
    for s in systems.values():
        s.update(times=[], points=[])

    for i, f in enumerate(frames):
        for name, s in systems.items():
            t = time.perf_counter()
            if s["kind"] == "ours":
                rep = s["map"].integrate(f, s["sem"][i])
                n = rep.n_points
            else:
                n = s["map"].step(f)
            s["times"].append(time.perf_counter() - t)
            s["points"].append(n)
        if i % 10 == 0:
            print(f"frame {i}: " + ", ".join(f"{k}: {v['points'][-1]} pts {1 / v['times'][-1]:.1f} fps" for k, v in systems.items()), file=sys.stderr)

    def fps(ts):
        return len(ts) / sum(ts) if ts else float("nan")

    q = max(1, len(frames) // 4)
    print(f"\n{args.width}x{args.height}, {len(frames)} frames (PointMaps prefilled with {args.prefill_frames} far frames), "
          f"device {dev}, {args.threads} threads, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (whole process)\n")
    print("| system | fps all frames | fps last quarter | fps while map > 1M pts | final points | bytes/point | map MiB |")
    print("|---|---|---|---|---|---|---|")
    base = None
    for name, s in systems.items():
        ts, pts = s["times"], np.array(s["points"])
        big = [t for t, n in zip(ts, pts) if n > 1_000_000]
        if s["kind"] == "ours":
            bpp = s["map"].bytes_per_point
            mib = pts[-1] * bpp / 2**20
        else:
            mib = s["map"].map_bytes() / 2**20
            bpp = round(mib * 2**20 / max(pts[-1], 1))
            base = s
        print(f"| {name} | {fps(ts):.2f} | {fps(ts[-q:]):.2f} | {fps(big) if big else float('nan'):.2f} | {pts[-1]:,} | {bpp} | {mib:.0f} |")
    if base is not None:
        print()
        for name, s in systems.items():
            if s is not base:
                print(f"- {name}: {fps(s['times']) / fps(base['times']):.1f}x gradSLAM's throughput (all frames), "
                      f"{fps(s['times'][-q:]) / fps(base['times'][-q:]):.1f}x over the last quarter")


if __name__ == "__main__":
    main()
