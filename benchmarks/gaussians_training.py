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
import time

import numpy as np
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
    print(f"{platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, device {a.device}, "
          f"{a.threads} threads; {a.frames} frames {a.width}x{a.height} per scene, every {a.holdout_every}-th held out")
    print("| seed | Gaussians | RGB it/s | PSNR before -> after (dB) | language it/s | latent L1 before -> after | "
          "oracle | Gaussians | Gaussians, no gate / no norm weight |")
    print("|---:|---:|---:|---|---:|---|---:|---:|---:|")
    totals = {"oracle": [], "gauss": [], "plain": []}
    for seed in a.seeds:
        row, res = run_scene(a, seed)
        print(row, flush=True)
        for k in totals:
            totals[k] += res[k]
    from lang3d_ros.gaussians.evaluation import accuracy

    print(f"| all | | | | | | {_pct(totals['oracle'])} | {_pct(totals['gauss'])} | {_pct(totals['plain'])} |")
    print(f"\nLERF localization on held-out views: Gaussians {accuracy(totals['gauss']):.1%}, oracle {accuracy(totals['oracle']):.1%}")
    for q in totals["gauss"]:
        if not q.hit:
            print(f"miss: view {q.view} '{q.label}' ({q.gt_pixels} px), level {q.level}, smoothed max {q.score:.3f}")


def _pct(queries) -> str:
    return f"{sum(q.hit for q in queries)}/{len(queries)} = {100.0 * sum(q.hit for q in queries) / max(len(queries), 1):.1f}%"


def run_scene(a, seed: int):
    """Train one scene; -> (Markdown row, {"oracle" | "gauss" | "plain": [ViewQuery]})."""
    from lang3d_ros.config import Lang3DConfig
    from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory, render_frames
    from lang3d_ros.gaussians.evaluation import gaussian_view_queries, oracle_view_queries
    from lang3d_ros.gaussians.model import GaussianModel
    from lang3d_ros.gaussians.query import LanguageQueryEngine
    from lang3d_ros.gaussians.training import GaussianOptimizer, evaluate_psnr, language_coverage, make_keyframe, scene_extent
    from lang3d_ros.gaussians.worker import points_from_frame
    from lang3d_ros.mapping.build import ground_truth_tables
    from lang3d_ros.semantics.autoencoder import SceneAutoencoder
    from lang3d_ros.semantics.backends import build_semantics_backend

    cfg = Lang3DConfig()
    cfg.gaussians.device = a.device
    cfg.gaussians.downscale = 1
    cfg.semantics.backend, cfg.semantics.gt_text_encoder = "ground_truth", "minilm"
    scene = generate_scene(seed, n_objects=8)
    frames = list(render_frames(scene, make_trajectory(scene, "orbit", a.frames, seed=seed),
                                DEFAULT_INTRINSICS.scaled(a.width, a.height), seed=seed))
    k = a.holdout_every
    train, held = [f for i, f in enumerate(frames) if i % k], [f for i, f in enumerate(frames) if not i % k]
    sem = build_semantics_backend(cfg.semantics, **ground_truth_tables(scene))
    ae = SceneAutoencoder(sem.feature_dim, cfg.semantics.autoencoder, device="cpu")
    sems = {id(f): sem.process(f) for f in frames}
    for s in sems.values():
        ae.add_features(torch.as_tensor(np.concatenate([lv.features for lv in s.levels if lv.num_masks])))
    ae.train_steps(400)
    enc = lambda x: ae.encode(torch.as_tensor(x)).detach()  # noqa: E731
    kf_train = [make_keyframe(f, 1, a.device, sems[id(f)], enc) for f in train]
    kf_held = [make_keyframe(f, 1, a.device, sems[id(f)], enc) for f in held]
    pts, cols = zip(*(points_from_frame(f, stride=4) for f in train[::2]))
    model = GaussianModel.from_points(np.concatenate(pts), np.concatenate(cols) / 255.0, device=a.device)
    opt = GaussianOptimizer(model, cfg.gaussians, extent=scene_extent(model, kf_train))
    rng = np.random.default_rng(0)
    psnr0 = evaluate_psnr(model, kf_held, cfg.gaussians)
    t0 = time.perf_counter()
    for _ in range(a.rgb_iters):
        opt.rgb_step(kf_train[rng.integers(len(kf_train))])
    rgb_s = time.perf_counter() - t0
    psnr1 = evaluate_psnr(model, kf_held, cfg.gaussians)

    @torch.no_grad()
    def latent_err() -> float:
        """Mean L1 between rendered and target latents on masked pixels of the held-out views."""
        errs = []
        for k in kf_held:
            out = model.render_latents(k.viewmat[None], k.K[None], k.width, k.height, cfg.gaussians)
            img = out.image[0].reshape(k.height, k.width, 3, -1).permute(2, 0, 1, 3)
            errs.append(float((img - k.lang_target).abs().mean(-1)[k.lang_mask].mean()))
        return float(np.mean(errs))

    err0 = latent_err()
    t0 = time.perf_counter()
    for _ in range(a.lang_iters):
        opt.language_step(kf_train[rng.integers(len(kf_train))])
    lang_s = time.perf_counter() - t0
    err1 = latent_err()
    cov = language_coverage(model, kf_train, cfg.gaussians)
    g = cfg.gaussians
    lat = (model.unit_latents() if g.normalize_latents else model.params["latents"]).detach()
    res = {}
    for name, kw in (("gauss", dict(coverage=cov, min_coverage=g.min_language_coverage, weight_by_latent_norm=g.weight_by_latent_norm)),
                     ("plain", dict(coverage=None, weight_by_latent_norm=False))):
        engine = LanguageQueryEngine(lat, lambda z: ae.decode(z), sem.text_encoder, codebook_size=0, device=a.device, **kw)
        res[name] = gaussian_view_queries(engine, model, held, kf_held, sem.instance_labels, g)
    res["oracle"] = oracle_view_queries(engine, held, kf_held, sem.instance_labels)
    row = (f"| {seed} | {model.num_gaussians} | {a.rgb_iters / rgb_s:.2f} | {psnr0:.2f} -> {psnr1:.2f} | {a.lang_iters / lang_s:.2f} | "
           f"{err0:.4f} -> {err1:.4f} | {_pct(res['oracle'])} | {_pct(res['gauss'])} | {_pct(res['plain'])} |")
    return row, res


if __name__ == "__main__":
    main()
