"""3D query latency of language Gaussians (codebook vs exact decoding) and rendering speed.

Latents: N Gaussians x 3 levels x 3-d, drawn around 64 cluster centres (a trained map is clustered like
this); decoder: LangSplat's decoder shape 3-16-32-64-128-256-256-512 (random weights); text encoder: a
fixed 512-d unit vector per phrase (the text tower's cost is not part of this figure). Prints a Markdown table.

    .venv/bin/python benchmarks/gaussians_query.py --sizes 200000 1000000 [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lang3d_ros.device import resolve_device
from lang3d_ros.gaussians.query import LanguageQueryEngine
from lang3d_ros.gaussians.render import render

QUERIES = ["chair", "table", "lamp", "plant", "mug", "book", "sofa", "window"]


class FixedTextEncoder:
    def __init__(self, dim: int, device: torch.device):
        self.dim, self.device = dim, device

    def encode_text(self, texts):
        rows = [torch.randn(self.dim, generator=torch.Generator().manual_seed(hash(t) % (1 << 31))) for t in texts]
        return F.normalize(torch.stack(rows), dim=-1).to(self.device)


def decoder(device: torch.device) -> torch.nn.Module:
    dims = [3, 16, 32, 64, 128, 256, 256, 512]
    layers: list[torch.nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    torch.manual_seed(0)
    return torch.nn.Sequential(*layers[:-1]).to(device).eval()


def bench_query(n: int, k: int, device: torch.device, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(3, 64, 3, generator=g), dim=-1)
    pick = torch.randint(0, 64, (3, n), generator=g)
    lat = torch.stack([centres[lvl][pick[lvl]] for lvl in range(3)], 1) + 0.05 * torch.randn(n, 3, 3, generator=g)
    t0 = time.perf_counter()
    engine = LanguageQueryEngine(
        lat, decoder(device), FixedTextEncoder(512, device), codebook_size=k, kmeans_iterations=10, device=device
    )
    build_s = time.perf_counter() - t0
    for q in QUERIES:  # warm-up, fills the text cache
        engine.query(q)
    code_ms = [engine.query(QUERIES[i % len(QUERIES)]).latency_ms for i in range(repeats)]
    exact_ms = [engine.query(QUERIES[i % len(QUERIES)], exact=True).latency_ms for i in range(2)]
    err = engine.codebook_error(QUERIES[:4])
    return {
        "n": n,
        "k": k,
        "build_s": build_s,
        "code_ms": statistics.median(code_ms),
        "exact_ms": statistics.median(exact_ms),
        **err,
    }


def bench_render(n: int, width: int, height: int, device: torch.device, backend: str, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    means = (torch.rand(n, 3, generator=g) * torch.tensor([4.0, 3.0, 2.0]) + torch.tensor([-2.0, -1.5, 3.0])).to(device)
    quats = torch.randn(n, 4, generator=g).to(device)
    scales = (torch.rand(n, 3, generator=g) * 0.02 + 0.005).to(device)
    opac = (torch.rand(n, generator=g) * 0.8 + 0.1).to(device)
    feats = torch.rand(n, 3, generator=g).to(device)
    vm = torch.eye(4, device=device)[None]
    K = torch.tensor([[[width * 0.8, 0, width / 2], [0, width * 0.8, height / 2], [0, 0, 1.0]]], device=device)
    fwd, fb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            render(means, quats, scales, opac, feats, vm, K, width, height, backend=backend)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, feats)]
        out = render(*leaves, vm, K, width, height, backend=backend)
        out.image.sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        fwd.append(t1 - t0)
        fb.append(time.perf_counter() - t1)
    return {
        "n": n,
        "size": f"{width}x{height}",
        "backend": backend,
        "fwd_ms": 1e3 * statistics.median(fwd),
        "fwdbwd_ms": 1e3 * statistics.median(fb),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    ap.add_argument("--codebook", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--render", type=int, default=20_000, help="Gaussians for the render timing (0: skip)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    print(f"device {dev}, torch {torch.__version__}, {args.threads} threads\n")
    print(
        "| Gaussians | codebook K | build (s) | query, codebook (ms) | query, exact decode (ms) | max abs err "
        "| mean abs err | level agreement |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in tqdm(args.sizes, desc="query sizes", leave=False):
        r = bench_query(n, args.codebook, dev, args.repeats)
        print(
            f"| {n:,} | {r['k']} | {r['build_s']:.1f} | {r['code_ms']:.1f} | {r['exact_ms']:.0f} | "
            f"{r['max_abs']:.3f} | "
            f"{r['mean_abs']:.4f} | {r['level_agreement']:.2f} |"
        )
    if args.render:
        print("\n| Gaussians | image | backend | forward (ms) | forward+backward (ms) |")
        print("|---:|---:|---|---:|---:|")
        backends = ["torch"] + (["gsplat"] if dev.type == "cuda" else [])
        for b in backends:
            r = bench_render(args.render, 320, 240, dev, b, 3)
            print(f"| {r['n']:,} | {r['size']} | {b} | {r['fwd_ms']:.0f} | {r['fwdbwd_ms']:.0f} |")


if __name__ == "__main__":
    np.random.seed(0)
    main()
