"""PointFusion throughput: PointMap (with / without 3-level segment label votes) vs gradSLAM's own PointFusion,
and optionally vs an older PointMap checked out elsewhere (``--old-path``, e.g. the per-point feature version).

Same frames, same machine, one process: an analytic RGB-D corridor walk (exact depth + Gaussian noise), GT poses.
The systems are stepped frame by frame in turn (interleaved, the order rotating every frame), so load from other
work hits all of them alike; "CPU ms/frame" is the process CPU time of a step (all its threads), which a loaded
machine inflates far less than wall time (it still pays for shared caches).
Label votes: on the frames that carry semantics (``--keyframe-every``), PointMap fuses with pixel slots and votes
three levels of segment labels (a label per wall, per 0.5 m cell, per 0.25 m cell); the old PointMap fuses
3-level mask features of each dim of ``--old-feature-dims`` on the same frames (its per-point feature path).
gradSLAM 0.1.0 is not a dependency: point --gradslam-path at a folder holding it (``pip install --no-deps
gradslam==0.1.0 kornia==0.6.12 --target DIR``); the harness stubs ``chamferdist`` (ICP only, unused with GT
poses) and ``cv2`` (plotting only) when they are missing. Without gradSLAM its column is skipped with a message.

    python benchmarks/fusion_throughput.py --frames 30 --step-m 0.3 --prefill-frames 40 --backends numba,torch \
        --gradslam-path /tmp/gradslam_env
    git worktree add /tmp/fusion_old <commit>   # the old code, side by side in the same run
    python benchmarks/fusion_throughput.py --old-path /tmp/fusion_old --threads 2 --no-gradslam
    git archive <commit> lang3d_ros | tar -x -C /tmp/fus_before   # this code before a change, side by side
    python benchmarks/fusion_throughput.py --before-path /tmp/fus_before --threads 2 --no-gradslam
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import importlib
import os
import resource
import shutil
import sys
import tempfile
import time
import types

import numpy as np
import torch


def _import_as(path: str, prefix: str) -> dict:
    """Import the lang3d_ros package under ``path`` (its fusion modules, the semantics types and the frame) and move
    its modules to ``prefix + name`` in sys.modules, before this checkout's own package is imported (all live in
    one process). Returns {name: module} of the moved modules, for ``_as_current``."""
    sys.path.insert(0, path)
    try:
        importlib.import_module("lang3d_ros.datasets.frame")
        importlib.import_module("lang3d_ros.fusion.pointfusion")
        importlib.import_module("lang3d_ros.fusion.config")
        for name in ("lang3d_ros.fusion.numba_backend", "lang3d_ros.fusion.torch_backend"):
            with contextlib.suppress(ModuleNotFoundError):  # stage backends of newer checkouts (imported lazily)
                importlib.import_module(name)
        importlib.import_module("lang3d_ros.semantics.types")
    finally:
        sys.path.remove(path)
    moved = {}
    for name in [n for n in sys.modules if n == "lang3d_ros" or n.startswith("lang3d_ros.")]:
        moved[name] = sys.modules[prefix + name] = sys.modules.pop(name)
    return moved


class _as_current:
    """Context: the moved modules of another checkout stand as ``lang3d_ros.*`` in sys.modules, so that the
    imports its code makes inside functions (backend choice, kernel warm-up) reach its own modules."""

    def __init__(self, moved: dict):
        self.moved = moved

    def __enter__(self):
        self.saved = {n: sys.modules.get(n) for n in self.moved}
        sys.modules.update(self.moved)

    def __exit__(self, *exc):
        for n, m in self.saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def load_old_pointmap(path: str):
    """(PointMap, FusionConfig, KeyframeSemantics, LevelMasks, Frame, moved modules) of the lang3d_ros package
    under ``path``, imported under the module prefix ``old_lang3d_ros``. The old fusion code must import its
    dependencies at module level (true of this project's)."""
    moved = _import_as(path, "old_")
    m = {n[len("lang3d_ros.") :]: mod for n, mod in moved.items() if n != "lang3d_ros"}
    return (
        m["fusion.pointfusion"].PointMap,
        m["fusion.config"].FusionConfig,
        m["semantics.types"].KeyframeSemantics,
        m["semantics.types"].LevelMasks,
        m["datasets.frame"].Frame,
        moved,
    )


def load_before_pointmap(path: str):
    """(PointMap, FusionConfig, Frame, moved modules) of an earlier checkout of this same code (segment label
    votes), imported under the module prefix ``before_lang3d_ros``, to step it side by side with this one."""
    moved = _import_as(path, "before_")
    return (
        moved["lang3d_ros.fusion.pointfusion"].PointMap,
        moved["lang3d_ros.fusion.config"].FusionConfig,
        moved["lang3d_ros.datasets.frame"].Frame,
        moved,
    )


if "--old-path" in sys.argv and "--before-path" in sys.argv and "NUMBA_CACHE_DIR" not in os.environ:
    # kernels of two other checkouts (same module names) loaded from numba's on-disk cache in one process fail
    # ("NRT_adapt_ndarray_to_python: descr is NULL"); compiled afresh into an empty cache they run
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="fusion_throughput_numba_")
    atexit.register(shutil.rmtree, os.environ["NUMBA_CACHE_DIR"], True)
_OLD = None
if "--old-path" in sys.argv:  # before this checkout's lang3d_ros is imported
    _OLD = load_old_pointmap(sys.argv[sys.argv.index("--old-path") + 1])
_BEFORE = None
if "--before-path" in sys.argv:
    _BEFORE = load_before_pointmap(sys.argv[sys.argv.index("--before-path") + 1])

from lang3d_ros.device import resolve_device  # noqa: E402
from lang3d_ros.fusion.analytic_scene import Corridor, corridor_walk  # noqa: E402
from lang3d_ros.fusion.config import FusionConfig  # noqa: E402
from lang3d_ros.fusion.pointfusion import PointMap  # noqa: E402
from lang3d_ros.geometry.camera import Intrinsics  # noqa: E402


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
        parts = (p.points_padded, p.normals_padded, p.colors_padded, p.features_padded)
        return sum(t.numel() * t.element_size() for t in parts if t is not None)


def seg_maps(frame, n_masks: int = 48) -> list[np.ndarray]:
    """Three levels of (H, W) int32 mask ids from the wall id map: a mask per 0.25 m-ish cell, per 0.5 m cell,
    per wall."""
    wall = frame.instance_map.astype(np.int32)
    h, w = wall.shape
    cols = np.arange(w)[None, :] * 8 // w
    rows = np.arange(h)[:, None] * 4 // h
    return [wall * 0 + (wall * 7 + cols + rows * 8) % n_masks, (wall * 5 + cols // 2) % n_masks, wall]


def labels_for(frame) -> np.ndarray:
    """(3, H*W) int32 segment labels per pixel (the mask ids, standing in for the instance layer's segments)."""
    return np.stack([s.reshape(-1) for s in seg_maps(frame)]).astype(np.int32)


def old_semantics_for(frame, dim: int, n_masks: int = 48):
    """The same masks as KeyframeSemantics with random unit features of dim ``dim``, for the old PointMap."""
    _, _, semantics_cls, masks_cls, _, _ = _OLD
    rng = np.random.default_rng(dim)
    feats = rng.normal(size=(n_masks, dim)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    return semantics_cls(tuple(masks_cls(s, feats, np.ones(n_masks, np.float32)) for s in seg_maps(frame, n_masks)))


STAGES = (
    "observe",
    "candidate_blocks",
    "associate",
    "leftovers",
    "accumulate",
    "update_points",
    "write_new_points",
    "pixel_slots",
    "vote_labels",
    "seen_after",
    "kill_unstable",
)
"""Backend stages timed by ``--stage-profile`` (``fusion.backend.FusionBackend``), plus the index's gather and
insert; "other" is the rest of the step (PointMap glue, input checks, pruning bookkeeping)."""


def profile_stages(point_map) -> dict[str, float]:
    """Wrap the map's backend stages and index calls to sum their process CPU seconds (all threads; the systems
    are stepped one at a time) into the returned dict, filled as the map runs."""
    cpu: dict[str, float] = {}

    def wrap(obj, name, label):
        fn = getattr(obj, name)

        def timed(*a, **k):
            c = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                cpu[label] = cpu.get(label, 0.0) + time.process_time() - c

        setattr(obj, name, timed)

    backend, index = getattr(point_map, "_backend", None), getattr(point_map, "_index", None)
    for name in STAGES:
        if backend is not None and hasattr(backend, name):
            wrap(backend, name, name)
    for name, label in (("gather_blocks", "index gather"), ("insert", "index insert")):
        if index is not None and hasattr(index, name):
            wrap(index, name, label)
    return cpu


class OursRunner:
    """This checkout's PointMap; on keyframes fused with pixel slots and 3-level label votes."""

    def __init__(self, backend: str, dev, votes: bool, prune_only_seen: bool = True):
        self.map = PointMap(FusionConfig(backend=backend, prune_only_seen=prune_only_seen), device=dev)
        self.votes = votes
        self.name = f"PointMap [{self.map.backend}]" + (" + 3-level label votes" if votes else "")
        self.name += "" if prune_only_seen else " (prunes every unconfirmed point)"

    def prepare(self, f, keyframe: bool):
        """The step's inputs, built outside the timed region: (frame, (3, H*W) pixel labels or None)."""
        return f, (labels_for(f) if self.votes and keyframe else None)

    def step(self, inputs) -> int:
        f, labels = inputs
        if labels is not None:
            rep = self.map.integrate(f, want_pixel_slots=True)
            self.map.vote_labels(rep.pixel_slot, rep.pixel_alpha, labels)
        else:
            rep = self.map.integrate(f)
        return rep.n_points

    def bytes_per_point(self) -> int:
        return self.map.bytes_per_point


class OldRunner:
    """The PointMap of ``--old-path``; on keyframes fused with 3-level features of dim d (0: none)."""

    def __init__(self, backend: str, dev, dim: int):
        point_map_cls, config_cls, _, _, self.frame_cls, moved = _OLD
        with _as_current(moved):
            self.map = point_map_cls(config_cls(backend=backend), feature_dim=dim or None, device=dev)
        self.dim = dim
        self.name = f"old PointMap [{self.map.backend}]" + (f" + 3x{dim}-d features" if dim else "")

    def prepare(self, f, keyframe: bool):
        """The step's inputs, built outside the timed region: (the old package's Frame, its semantics or None)."""
        sem = old_semantics_for(f, self.dim) if self.dim and keyframe else None
        return self.frame_cls(**{k.name: getattr(f, k.name) for k in dataclasses.fields(f)}), sem

    def step(self, inputs) -> int:
        return self.map.integrate(*inputs).n_points

    def bytes_per_point(self) -> int:
        return self.map.bytes_per_point


class BeforeRunner(OursRunner):
    """The PointMap of ``--before-path`` (an earlier checkout of this code), with or without label votes."""

    def __init__(self, backend: str, dev, votes: bool):
        point_map_cls, config_cls, self.frame_cls, moved = _BEFORE
        with _as_current(moved):
            self.map = point_map_cls(config_cls(backend=backend), device=dev)
        self.votes = votes
        self.name = f"before PointMap [{self.map.backend}]" + (" + 3-level label votes" if votes else "")

    def prepare(self, f, keyframe: bool):
        f2 = self.frame_cls(**{k.name: getattr(f, k.name) for k in dataclasses.fields(f)})
        return f2, (labels_for(f) if self.votes and keyframe else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=80)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument(
        "--keyframe-every",
        type=int,
        default=1,
        help="frames with semantics (label votes / old features): every n-th frame",
    )
    ap.add_argument("--old-path", default="", help="a checkout of older lang3d_ros code to run side by side")
    ap.add_argument(
        "--before-path",
        default="",
        help="an earlier checkout of this code (same API: segment label votes) to run side by side, e.g. the "
        "commit before a change: git archive <commit> lang3d_ros | tar -x -C DIR",
    )
    ap.add_argument(
        "--old-feature-dims",
        default="0,3",
        help="comma list of feature dims for old PointMaps (0: geometry only), one map each",
    )
    ap.add_argument(
        "--backends",
        default="auto",
        help="comma list of fusion.backend values to run side by side (auto, numba, torch)",
    )
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument(
        "--stage-profile",
        action="store_true",
        help="print each PointMap's CPU time per frame by fusion stage (timed frames only)",
    )
    ap.add_argument(
        "--prune-all",
        action="store_true",
        help="also run this checkout with fusion.prune_only_seen off (gradSLAM's pruning), side by side",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gradslam-path", default="/tmp/gradslam_env")
    ap.add_argument("--no-gradslam", action="store_true")
    ap.add_argument("--step-m", type=float, default=0.08, help="camera advance per frame (map growth)")
    ap.add_argument(
        "--prefill-frames",
        type=int,
        default=0,
        help="untimed: first fuse this many frames of a copy of the walk 1 km away into the PointMaps "
        "(a large map elsewhere; gradSLAM starts empty, which favours it)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)

    intr = Intrinsics(525.0, 525.0, 319.5, 239.5, 640, 480).scaled(args.width, args.height)
    corridor = Corridor(length_m=40.0, width_m=3.0, height_m=3.0)
    t0 = time.perf_counter()
    frames = list(corridor_walk(corridor, args.frames, intr, step_m=args.step_m, noise_m=0.002, seed=0))
    print(
        f"rendered {len(frames)} frames {args.width}x{args.height} in {time.perf_counter() - t0:.1f} s", file=sys.stderr
    )

    systems: dict[str, dict] = {}
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    runners = []
    for b in backends:
        if _OLD is not None:
            runners += [OldRunner(b, dev, int(d)) for d in args.old_feature_dims.split(",") if d.strip()]
        if _BEFORE is not None:
            runners += [BeforeRunner(b, dev, votes=False), BeforeRunner(b, dev, votes=True)]
        runners += [OursRunner(b, dev, votes=False), OursRunner(b, dev, votes=True)]
        if args.prune_all:
            runners += [OursRunner(b, dev, votes, prune_only_seen=False) for votes in (False, True)]
    for r in runners:
        systems[r.name] = dict(kind="ours", map=r)
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
                    s["map"].step(s["map"].prepare(f, keyframe=True))
        print(
            f"prefilled PointMaps with {args.prefill_frames} far-away frames in {time.perf_counter() - t0:.0f} s: "
            + ", ".join(f"{k} {v['map'].map.num_points:,} pts" for k, v in systems.items() if v["kind"] == "ours"),
            file=sys.stderr,
        )
    for s in systems.values():
        s.update(times=[], cpu=[], points=[])
        if args.stage_profile and s["kind"] == "ours" and hasattr(s["map"].map, "_backend"):
            s["stages"] = profile_stages(s["map"].map)

    names = list(systems)
    for i, f in enumerate(frames):
        for name in names[i % len(names) :] + names[: i % len(names)]:  # stepping order rotates every frame
            s = systems[name]
            inputs = s["map"].prepare(f, keyframe=i % args.keyframe_every == 0) if s["kind"] == "ours" else None
            t, c = time.perf_counter(), time.process_time()
            if s["kind"] == "ours":
                n = s["map"].step(inputs)
            else:
                n = s["map"].step(f)
            s["times"].append(time.perf_counter() - t)
            s["cpu"].append(time.process_time() - c)
            s["points"].append(n)
        if i % 10 == 0:
            print(
                f"frame {i}: "
                + ", ".join(f"{k}: {v['points'][-1]} pts {1 / v['times'][-1]:.1f} fps" for k, v in systems.items()),
                file=sys.stderr,
            )

    def fps(ts):
        return len(ts) / sum(ts) if ts else float("nan")

    q = max(1, len(frames) // 4)
    print(
        f"\n{args.width}x{args.height}, {len(frames)} frames (PointMaps prefilled with {args.prefill_frames} far "
        f"frames), semantics every {args.keyframe_every} frame(s), device {dev}, {args.threads} threads, "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (whole process)\n"
    )
    print(
        "| system | fps all frames | fps last quarter | fps while map > 1M pts | CPU ms/frame | final points | "
        "bytes/point | map MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    base = None
    for name, s in systems.items():
        ts, pts = s["times"], np.array(s["points"])
        big = [t for t, n in zip(ts, pts) if n > 1_000_000]
        if s["kind"] == "ours":
            bpp = s["map"].bytes_per_point()
            mib = pts[-1] * bpp / 2**20
        else:
            mib = s["map"].map_bytes() / 2**20
            bpp = round(mib * 2**20 / max(pts[-1], 1))
            base = s
        print(
            f"| {name} | {fps(ts):.2f} | {fps(ts[-q:]):.2f} | {fps(big) if big else float('nan'):.2f} | "
            f"{1e3 * np.mean(s['cpu']):.1f} | {pts[-1]:,} | {bpp} | {mib:.0f} |"
        )
    olds = [s for s in systems.values() if s["kind"] == "ours" and s["map"].name.startswith(("old", "before"))]
    if olds:
        print("\nSame run, throughput ratios new / old (all frames; last quarter; CPU time per frame old / new):")
        for name, s in systems.items():
            if s["kind"] == "ours" and s not in olds:
                print(
                    f"- {name}: "
                    + ", ".join(
                        f"{fps(s['times']) / fps(o['times']):.2f}x "
                        f"({fps(s['times'][-q:]) / fps(o['times'][-q:]):.2f}x; "
                        f"CPU {np.sum(o['cpu']) / np.sum(s['cpu']):.2f}x) "
                        f"{o['map'].name}"
                        for o in olds
                    )
                )
    profiled = {name: s for name, s in systems.items() if "stages" in s}
    if profiled:
        print("\nCPU ms per frame by stage (process CPU time, all threads; share of the step's CPU time):\n")
        print("| stage | " + " | ".join(profiled) + " |")
        print("|---|" + "---|" * len(profiled))
        rows = {}
        for name, s in profiled.items():
            total = float(np.sum(s["cpu"]))
            st = dict(s["stages"], other=total - sum(s["stages"].values()))
            for k, v in st.items():
                rows.setdefault(k, {})[name] = (1e3 * v / len(s["cpu"]), 100 * v / total)
        first = next(iter(profiled))
        for k in sorted(rows, key=lambda k: -rows[k].get(first, (0, 0))[0]):
            cells = [f"{rows[k][n][0]:.1f} ({rows[k][n][1]:.0f} %)" if n in rows[k] else "" for n in profiled]
            print(f"| {k} | " + " | ".join(cells) + " |")
    if base is not None:
        print()
        for name, s in systems.items():
            if s is not base:
                print(
                    f"- {name}: {fps(s['times']) / fps(base['times']):.1f}x gradSLAM's throughput (all frames), "
                    f"{fps(s['times'][-q:]) / fps(base['times'][-q:]):.1f}x over the last quarter"
                )


if __name__ == "__main__":
    main()
