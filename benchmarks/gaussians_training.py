"""Language-Gaussian training on a synthetic scene: RGB iterations/s and PSNR on held-out views, then language
iterations/s and the latent error on held-out views. Prints a Markdown table.

    python benchmarks/gaussians_training.py --frames 16 --width 160 --height 120 --rgb-iters 300 --lang-iters 150
    python benchmarks/gaussians_training.py --device cuda --width 640 --height 480 --rgb-iters 3000   # gsplat
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch


def main() -> None:
    from lang3d_ros.config import Lang3DConfig
    from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory, render_frames
    from lang3d_ros.gaussians.model import GaussianModel
    from lang3d_ros.gaussians.training import GaussianOptimizer, evaluate_psnr, make_keyframe, scene_extent
    from lang3d_ros.gaussians.worker import points_from_frame
    from lang3d_ros.mapping.build import ground_truth_tables
    from lang3d_ros.semantics.autoencoder import SceneAutoencoder
    from lang3d_ros.semantics.backends import build_semantics_backend

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--rgb-iters", type=int, default=300)
    ap.add_argument("--lang-iters", type=int, default=150)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=4)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = Lang3DConfig()
    cfg.gaussians.device = a.device
    cfg.gaussians.downscale = 1
    cfg.semantics.backend, cfg.semantics.gt_text_encoder = "ground_truth", "minilm"
    scene = generate_scene(a.seed, n_objects=8)
    frames = list(render_frames(scene, make_trajectory(scene, "orbit", a.frames, seed=a.seed),
                                DEFAULT_INTRINSICS.scaled(a.width, a.height), seed=a.seed))
    train, held = [f for i, f in enumerate(frames) if i % 4], [f for i, f in enumerate(frames) if not i % 4]
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
    loc_hits, loc_n = lerf_localization(model, ae, sem, held, kf_held, cfg, a.device)
    print(f"{platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, device {a.device}, "
          f"{a.threads} threads; {a.frames} frames {a.width}x{a.height} ({len(train)} train / {len(held)} held out); "
          f"{model.num_gaussians} Gaussians at the end")
    print("| phase | iterations | it/s | held-out before | held-out after |")
    print("|---|---:|---:|---:|---:|")
    print(f"| RGB (L1 + D-SSIM, densify) | {a.rgb_iters} | {a.rgb_iters / rgb_s:.2f} | PSNR {psnr0:.2f} dB | PSNR {psnr1:.2f} dB |")
    print(f"| language latents (3 levels) | {a.lang_iters} | {a.lang_iters / lang_s:.2f} | L1 {err0:.4f} | L1 {err1:.4f} |")
    print(f"\nLERF localization on held-out views (argmax of the smoothed relevancy map inside the object's 2D box): "
          f"{loc_hits}/{loc_n} = {100.0 * loc_hits / max(loc_n, 1):.1f}%")


def lerf_localization(model, ae, sem, frames, keyframes, cfg, device) -> tuple[int, int]:
    """Per held-out view and per object covering >= 200 px: query its label, hit when the relevancy argmax
    falls inside the object's 2D bounding box (LERF's protocol, boxes from the ground-truth instance map)."""
    from lang3d_ros.gaussians.query import LanguageQueryEngine

    engine = LanguageQueryEngine(model.params["latents"].detach(), lambda z: ae.decode(z), sem.text_encoder,
                                 codebook_size=256, device=device)
    hits = n = 0
    for f, kf in zip(frames, keyframes):
        ids, counts = np.unique(f.instance_map, return_counts=True)
        for iid, c in zip(ids, counts):
            if iid <= 0 or c < 200 or iid not in sem.instance_labels:
                continue
            rel, lvl = engine.relevancy_map(model, kf.viewmat, kf.K, kf.width, kf.height, sem.instance_labels[int(iid)], cfg.gaussians)
            r = rel[lvl].cpu().numpy()
            v, u = np.unravel_index(int(np.argmax(r)), r.shape)
            vv, uu = np.nonzero(f.instance_map == iid)
            hits += int(vv.min() <= v <= vv.max() and uu.min() <= u <= uu.max())
            n += 1
    return hits, n


if __name__ == "__main__":
    main()
