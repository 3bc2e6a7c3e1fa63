"""The prepared GPU check (scripts/gpu_check.sh): one command, one results file, <= 8 minutes on one H100 / H200.

Steps (each a child process with its own time cap, all inside ``--budget-s``; a step that fails or runs out of
time is recorded as such and the others still run):
1. environment: GPU name, memory, torch / CUDA / gsplat versions;
2. query: 1M-Gaussian 3D query latency (benchmarks/gaussians_query.py --sizes 1000000 --device cuda);
3. fusion: CUDA fusion throughput at 640x480 (benchmarks/fusion_throughput.py --device cuda);
4. semantics: SAM ViT-H + CLIP ViT-B-16 keyframe latency, randomly initialised weights of the real sizes
   (benchmarks/semantics_keyframe.py);
5. gsplat build: gsplat compiles its CUDA kernels on first use (JIT; cached afterwards), for this GPU's
   architecture only;
6. parity: test/test_rasterizer_gpu.py (gsplat vs the CPU rasterizer's code on CUDA, values and gradients) and the
   measured differences at 640x480;
7. render_service: latency of the RenderRelevancy service's library call at 640x480 from 1M language Gaussians
   (gsplat) and from the points' splats, on a synthetic room fused on CUDA;
8. training: gsplat training speed (RGB and language iterations/s) on a 640x480 synthetic scene.
Without CUDA it stops at once with a message and exit code 2 (nothing is measured, no file is written).
Exit code 0 when every step passed, 1 otherwise. Results: ``<out>/gpu_check.json`` and ``<out>/gpu_check.md``.
Cannot: measure anything on a CPU-only machine, or build gsplat without a CUDA compiler (the step says so).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NO_CUDA_EXIT = 2
RESULT_TAG = "GPU_CHECK_RESULT "


@dataclass
class StepResult:
    """One step: its command, status (passed | failed | timeout | skipped), wall time, parsed numbers (from a
    ``GPU_CHECK_RESULT {json}`` line) and the tail of its output."""

    name: str
    command: list[str]
    status: str = "skipped"
    wall_s: float = 0.0
    numbers: dict = field(default_factory=dict)
    output_tail: str = ""


def cuda_or_exit() -> None:
    """Exit with NO_CUDA_EXIT and a clear message when torch sees no CUDA device."""
    import torch

    if not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA device (torch {torch.__version__}, torch.version.cuda {torch.version.cuda}, "
            f"{torch.cuda.device_count()} devices): this check needs an NVIDIA GPU. Nothing was measured.",
            file=sys.stderr,
        )
        sys.exit(NO_CUDA_EXIT)


def run_step(name: str, command: list[str], cap_s: float, deadline: float, env: dict) -> StepResult:
    """Run ``command`` in the repository root with at most min(cap_s, time left); never raises."""
    res = StepResult(name, command)
    left = deadline - time.monotonic()
    if left < 5:
        res.output_tail = "no time left in the budget"
        return res
    t0 = time.monotonic()
    try:
        p = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=min(cap_s, left))
        out = p.stdout + p.stderr
        res.status = "passed" if p.returncode == 0 else "failed"
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        res.status = "timeout"
    res.wall_s = time.monotonic() - t0
    for line in out.splitlines():
        if line.startswith(RESULT_TAG):
            res.numbers.update(json.loads(line[len(RESULT_TAG) :]))
    res.output_tail = out[-4000:]
    print(f"[gpu_check] {name}: {res.status} in {res.wall_s:.0f} s", flush=True)
    return res


# ------------------------------------------------------------------------------------- in-child measurements
def environment() -> dict:
    import torch

    props = torch.cuda.get_device_properties(0)
    try:
        import gsplat

        gs = gsplat.__version__
    except ImportError as exc:
        gs = f"not importable: {exc}"
    return {
        "gpu": props.name,
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gsplat": gs,
        "python": platform.python_version(),
        "host": platform.node(),
    }


def build_gsplat() -> dict:
    """Import gsplat's compiled extension (JIT-compiles it on first use); returns the build time."""
    t0 = time.perf_counter()
    from gsplat.cuda._backend import _C

    if _C is None:
        raise RuntimeError("gsplat's CUDA extension did not build (see the log above: is nvcc on PATH?)")
    return {"gsplat_build_s": round(time.perf_counter() - t0, 1)}


def parity_numbers(
    device: str = "cuda",
    backends: tuple[str, str] = ("gsplat", "torch"),
    n: int = 100_000,
    width: int = 640,
    height: int = 480,
    seed: int = 0,
) -> dict:
    """Render n random Gaussians (2 m to 6 m in front of the camera) with two backends at width x height; returns
    max / mean absolute image and alpha differences and the relative gradient difference per input."""
    import torch

    from lang3d_ros.gaussians.render import render

    dev = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) * torch.tensor([4.0, 3.0, 4.0]) + torch.tensor([-2.0, -1.5, 2.0])).to(dev)
    quats = torch.randn(n, 4, generator=g).to(dev)
    scales = (torch.rand(n, 3, generator=g) * 0.03 + 0.005).to(dev)
    opac = (torch.rand(n, generator=g) * 0.9 + 0.05).to(dev)
    feats = torch.rand(n, 6, generator=g).to(dev)
    vm = torch.eye(4, device=dev)[None]
    K = torch.tensor([[[width * 0.8, 0, width / 2 - 0.5], [0, width * 0.8, height / 2 - 0.5], [0, 0, 1.0]]], device=dev)
    outs, grads = {}, {}
    for b in backends:
        leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, feats)]
        out = render(*leaves, vm, K, width, height, backend=b)
        (out.image.square().sum() + out.alpha.sum()).backward()
        outs[b], grads[b] = out, [t.grad for t in leaves]
    a, c = outs[backends[0]], outs[backends[1]]
    diff = (a.image - c.image).detach().abs()
    res = {
        "parity_gaussians": n,
        "parity_image": f"{width}x{height}",
        "image_max_abs": float(diff.max()),
        "image_mean_abs": float(diff.mean()),
        "alpha_max_abs": float((a.alpha - c.alpha).detach().abs().max()),
    }
    names = ["means", "quats", "scales", "opacities", "features"]
    for name, ga, gc in zip(names, grads[backends[0]], grads[backends[1]]):
        res[f"grad_rel_{name}"] = float((ga - gc).norm() / gc.norm().clamp(min=1e-12))
    return res


def training_speed(
    device: str = "cuda",
    width: int = 640,
    height: int = 480,
    frames: int = 8,
    stride: int = 4,
    iterations: int = 50,
    warmup: int = 5,
    seed: int = 11,
) -> dict:
    """RGB and language iterations/s on a synthetic scene rendered at width x height (``frames`` views, Gaussians
    back-projected every ``stride``-th pixel of each). Language targets: random unit latents per ground-truth
    instance (speed does not depend on their values)."""
    import numpy as np
    import torch

    from lang3d_ros.config import Lang3DConfig
    from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory, render_frames
    from lang3d_ros.gaussians.model import GaussianModel
    from lang3d_ros.gaussians.training import GaussianOptimizer, evaluate_psnr, make_keyframe, scene_extent
    from lang3d_ros.gaussians.worker import points_from_frame
    from lang3d_ros.semantics.types import KeyframeSemantics, LevelMasks

    cfg = Lang3DConfig().gaussians
    cfg.device = device
    scene = generate_scene(seed, n_objects=8)
    fr = list(
        render_frames(
            scene,
            make_trajectory(scene, "orbit", frames, seed=seed),
            DEFAULT_INTRINSICS.scaled(width, height),
            seed=seed,
        )
    )
    rng = np.random.default_rng(seed)
    ids = sorted({int(i) for f in fr for i in np.unique(f.instance_map) if i > 0})
    feats = rng.normal(size=(len(ids), 8)).astype(np.float32)
    enc = torch.nn.Linear(8, cfg.latent_dim)

    def semantics(f) -> KeyframeSemantics:
        pos = np.clip(np.searchsorted(ids, f.instance_map), 0, len(ids) - 1)
        seg = np.where(np.asarray(ids)[pos] == f.instance_map, pos, -1).astype(np.int32)
        lv = LevelMasks(seg, feats, np.ones(len(ids), np.float32))
        return KeyframeSemantics((lv, lv, lv))

    kfs = [make_keyframe(f, 1, device, semantics(f), lambda x: enc(x).detach()) for f in fr]
    pts, cols = zip(*(points_from_frame(f, stride=stride) for f in fr))
    model = GaussianModel.from_points(np.concatenate(pts), np.concatenate(cols), config=cfg, device=device)
    opt = GaussianOptimizer(model, cfg, extent=scene_extent(model, kfs))
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    psnr0 = evaluate_psnr(model, kfs, cfg)
    for i in range(warmup):
        opt.rgb_step(kfs[i % len(kfs)])
    sync()
    t0 = time.perf_counter()
    for i in range(iterations):
        opt.rgb_step(kfs[i % len(kfs)])
    sync()
    rgb_s = time.perf_counter() - t0
    for i in range(warmup):
        opt.language_step(kfs[i % len(kfs)])
    sync()
    t0 = time.perf_counter()
    for i in range(iterations):
        opt.language_step(kfs[i % len(kfs)])
    sync()
    lang_s = time.perf_counter() - t0
    return {
        "train_image": f"{width}x{height}",
        "train_gaussians": model.num_gaussians,
        "backend": model.render_rgb(kfs[0].viewmat[None], kfs[0].K[None], 8, 8, cfg).meta["backend"],
        "rgb_it_per_s": round(iterations / rgb_s, 2),
        "language_it_per_s": round(iterations / lang_s, 2),
        "train_psnr_before_db": round(psnr0, 2),
        "train_psnr_after_db": round(evaluate_psnr(model, kfs, cfg), 2),
    }


def render_service(
    device: str = "cuda",
    width: int = 640,
    height: int = 480,
    frames: int = 12,
    gaussians: int = 1_000_000,
    repeats: int = 5,
    seed: int = 45,
) -> dict:
    """Latency of the RenderRelevancy service's library call (``render_query_view``: Ground, the relevancy render,
    instance shares, expected depth, best pixel) at width x height, from a map file's language Gaussians and from
    the points' splats. The map: a synthetic room fused from ``frames`` orbit views at width x height on ``device``;
    its Gaussians: the untrained coded field of its points upsampled to ``gaussians`` (``gaussians_from_point_map``),
    saved into the map file and served as a query server does. Per unique label and view: p50 / p95 / max ms over
    ``repeats`` calls after one warm-up, and whether the best pixel lies in the object's ground-truth box."""
    import tempfile

    import numpy as np
    import torch

    from lang3d_ros.config import load_config
    from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory, render_frames
    from lang3d_ros.evaluation.lerf_protocol import box_contains, mask_boxes
    from lang3d_ros.evaluation.render import gt_instance_map
    from lang3d_ros.gaussians.instances import gaussians_from_point_map
    from lang3d_ros.gaussians.ply import save_gaussians
    from lang3d_ros.gaussians.relevancy_render import render_query_view
    from lang3d_ros.mapping.build import build_stack, ground_truth_tables
    from lang3d_ros.mapping.language_map import LanguageMap
    from lang3d_ros.mapstore import write_map

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    scene = generate_scene(seed, n_objects=8)
    overrides = {k: {"device": device} for k in ("fusion", "gaussians", "semantics")}
    cfg = load_config(REPO / "config" / "synthetic.yaml", overrides={**overrides, "llm": {"mode": "parser_only"}})
    stack = build_stack(cfg, **ground_truth_tables(scene), start=False)
    K = DEFAULT_INTRINSICS.scaled(width, height)
    poses = make_trajectory(scene, "orbit", frames, seed=seed)
    t0 = time.perf_counter()
    for f in render_frames(scene, poses, K, seed=seed):
        stack.pipeline.process_now(f)
    fuse_s = time.perf_counter() - t0
    lmap = stack.language_map
    t0 = time.perf_counter()
    model = gaussians_from_point_map(lmap, num_gaussians=gaussians, seed=seed)
    init_s = time.perf_counter() - t0
    served = LanguageMap(cfg, lmap.text_encoder, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        ply, path = Path(tmp) / "g.ply", Path(tmp) / "m.l3dmap"
        save_gaussians(ply, model, metadata={"frame_id": cfg.frames.map_frame})
        bundle = lmap.to_bundle()
        bundle.blobs["gaussians.ply"] = ply.read_bytes()
        write_map(path, bundle)
        served.load(path)
    labels = [o.label for o in scene.objects]
    res = {"render_image": f"{width}x{height}", "render_gaussians": int(model.num_gaussians)}
    res.update({"render_map_points": int(lmap.num_points), "render_fuse_s": round(fuse_s, 1)})
    res["render_field_init_s"] = round(init_s, 1)
    for name, m in (("gaussians", served), ("points", lmap)):
        times, hits, tried = [], 0, 0
        for vi in (frames // 4, (3 * frames) // 4):
            inst = gt_instance_map(scene, poses[vi], K)
            for o in scene.objects:
                gt = inst == o.instance_id
                if labels.count(o.label) != 1 or gt.mean() < 0.002:
                    continue
                view = render_query_view(m, o.label, poses[vi], K)  # warm-up (text encoder, caches)
                assert view.answered_by == name, (view.answered_by, name)
                for _ in range(repeats):
                    sync()
                    t = time.perf_counter()
                    view = render_query_view(m, o.label, poses[vi], K)
                    sync()
                    times.append((time.perf_counter() - t) * 1e3)
                tried += 1
                hits += box_contains(mask_boxes(gt), *view.best_uv)
        if times:
            res[f"render_{name}_p50_ms"] = round(float(np.percentile(times, 50)), 1)
            res[f"render_{name}_p95_ms"] = round(float(np.percentile(times, 95)), 1)
            res[f"render_{name}_max_ms"] = round(float(np.max(times)), 1)
        res[f"render_{name}_best_pixel_in_gt_box"] = f"{hits}/{tried}"
    return res


CHILD_STEPS = {
    "environment": environment,
    "build_gsplat": build_gsplat,
    "parity_numbers": parity_numbers,
    "render_service": render_service,
    "training_speed": training_speed,
}


def write_results(out_dir: Path, steps: list[StepResult], started: float) -> tuple[Path, Path]:
    """gpu_check.json (every step) and gpu_check.md (a summary table, then each step's numbers)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"started_unix_s": started, "total_s": round(time.time() - started, 1), "steps": [asdict(s) for s in steps]}
    jpath = out_dir / "gpu_check.json"
    jpath.write_text(json.dumps(doc, indent=1))
    lines = [
        f"# GPU check ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, {doc['total_s']} s)",
        "",
        "| step | status | wall (s) |",
        "|---|---|---:|",
    ]
    lines += [f"| {s.name} | {s.status} | {s.wall_s:.0f} |" for s in steps]
    for s in steps:
        lines += ["", f"## {s.name}", "", "`" + " ".join(s.command) + "`", ""]
        lines += [f"- {k}: {v}" for k, v in s.numbers.items()]
        if s.name in ("query", "fusion", "semantics") or s.status != "passed":
            lines += ["", "```", s.output_tail[-2500:], "```"]
    mpath = out_dir / "gpu_check.md"
    mpath.write_text("\n".join(lines) + "\n")
    return jpath, mpath


def plan(py: str) -> list[tuple[str, list[str], float]]:
    """The steps in order: (name, command run in the repository root, time cap in seconds)."""
    me = str(Path(__file__).resolve())
    return [
        ("environment", [py, me, "--child", "environment"], 30),
        (
            "query",
            [
                py,
                "benchmarks/gaussians_query.py",
                "--sizes",
                "1000000",
                "--device",
                "cuda",
                "--repeats",
                "20",
                "--render",
                "0",
            ],
            60,
        ),
        (
            "fusion",
            [
                py,
                "benchmarks/fusion_throughput.py",
                "--device",
                "cuda",
                "--frames",
                "80",
                "--no-gradslam",
                "--keyframe-every",
                "1",
            ],
            75,
        ),
        (
            "semantics",
            [
                py,
                "benchmarks/semantics_keyframe.py",
                "--device",
                "cuda",
                "--sam",
                "vit_h",
                "--clip",
                "ViT-B-16",
                "--points-per-side",
                "32",
                "--repeats",
                "3",
                "--nms-counts",
                "100",
                "--loop-max",
                "100",
            ],
            120,
        ),
        ("gsplat_build", [py, me, "--child", "build_gsplat"], 240),
        ("parity_tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test/test_rasterizer_gpu.py"], 60),
        ("parity_numbers", [py, me, "--child", "parity_numbers"], 45),
        ("render_service", [py, me, "--child", "render_service"], 90),
        ("training", [py, me, "--child", "training_speed"], 90),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gpu_check_results"), help="folder for gpu_check.json / .md")
    ap.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget of all steps together")
    ap.add_argument("--child", choices=sorted(CHILD_STEPS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(RESULT_TAG + json.dumps(CHILD_STEPS[args.child]()), flush=True)
        return 0
    cuda_or_exit()
    import torch

    started, deadline = time.time(), time.monotonic() + args.budget_s
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    major, minor = torch.cuda.get_device_capability(0)
    env.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")  # gsplat's JIT build: this GPU only
    env.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
    steps = []
    for name, cmd, cap in plan(sys.executable):
        no_gsplat = any(s.name == "gsplat_build" and s.status != "passed" for s in steps)
        if name.startswith(("parity", "render", "training")) and no_gsplat:
            steps.append(StepResult(name, cmd, "skipped", 0.0, {}, "gsplat did not build"))
            continue
        steps.append(run_step(name, cmd, cap, deadline, env))
    jpath, mpath = write_results(args.out, steps, started)
    print(f"[gpu_check] results: {mpath.resolve()} and {jpath.name}")
    return 0 if all(s.status == "passed" for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
