"""Language-Gaussian training on synthetic scenes: RGB iterations/s and PSNR on held-out views, language
iterations/s and the latent error on held-out views, and LERF localization on the held-out views (the project's
LERF protocol, every label covering >= 0.4 % of a view) from (a) the oracle (the view's autoencoded mask latents
decoded per pixel, no Gaussians) and (b) the Gaussians' rendered latents. Prints Markdown tables.

    python benchmarks/gaussians_training.py --seeds 4 5 --frames 32 --holdout-every 2 --threads 1
    python benchmarks/gaussians_training.py --device cuda --width 640 --height 480 --rgb-iters 3000   # gsplat
"""

from __future__ import annotations

import argparse
import platform

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--holdout-every", type=int, default=2, help="every k-th frame is held out (the rest train)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[4, 5])
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--rgb-iters", type=int, default=300)
    ap.add_argument("--lang-iters", type=int, default=1000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(
        f"{platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"device {a.device}, "
        f"{a.threads} threads; {a.frames} frames {a.width}x{a.height} per scene, every {a.holdout_every}-th held out"
    )
    print(
        "| seed | Gaussians | RGB it/s | PSNR before -> after (dB) | language it/s | latent L1 before -> after | "
        "oracle | Gaussians | Gaussians, no gate / no norm weight |"
    )
    print("|---:|---:|---:|---|---:|---|---:|---:|---:|")
    totals = {"oracle": [], "gauss": [], "plain": []}
    for seed in a.seeds:
        row, res = run_scene(a, seed)
        print(row, flush=True)
        for k in totals:
            totals[k] += res[k]
    from lang3d_ros.gaussians.evaluation import accuracy

    print(f"| all | | | | | | {_pct(totals['oracle'])} | {_pct(totals['gauss'])} | {_pct(totals['plain'])} |")
    print(
        f"\nLERF localization on held-out views: Gaussians {accuracy(totals['gauss']):.1%}, "
        f"oracle {accuracy(totals['oracle']):.1%}"
    )
    for q in totals["gauss"]:
        if not q.hit:
            print(f"miss: view {q.view} '{q.label}' ({q.gt_pixels} px), level {q.level}, smoothed max {q.score:.3f}")


def _pct(queries) -> str:
    hits = sum(q.hit for q in queries)
    return f"{hits}/{len(queries)} = {100.0 * hits / max(len(queries), 1):.1f}%"


def run_scene(a, seed: int):
    """Train one scene; -> (Markdown row, {"oracle" | "gauss" | "plain": [ViewQuery]})."""
    from lang3d_ros.gaussians.synthetic_eval import (
        SyntheticSceneSettings,
        gaussian_localization,
        oracle_localization,
        train_synthetic_scene,
    )

    settings = SyntheticSceneSettings(
        frames=a.frames,
        holdout_every=a.holdout_every,
        width_px=a.width,
        height_px=a.height,
        rgb_iters=a.rgb_iters,
        lang_iters=a.lang_iters,
        device=a.device,
    )
    sc = train_synthetic_scene(seed, settings)
    res = {
        "gauss": gaussian_localization(sc, gated=True),
        "plain": gaussian_localization(sc, gated=False),
        "oracle": oracle_localization(sc),
    }
    st = sc.stats
    row = (
        f"| {seed} | {sc.model.num_gaussians} | {a.rgb_iters / st['rgb_s']:.2f} | "
        f"{st['psnr_before_db']:.2f} -> {st['psnr_after_db']:.2f} | "
        f"{a.lang_iters / st['lang_s']:.2f} | {st['latent_l1_before']:.4f} -> {st['latent_l1_after']:.4f} | "
        f"{_pct(res['oracle'])} | {_pct(res['gauss'])} | {_pct(res['plain'])} |"
    )
    return row, res


if __name__ == "__main__":
    main()
