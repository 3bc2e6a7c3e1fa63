"""Keyframe semantics latency (SAM masks, CLIP embeddings, total) and mask NMS: vectorised vs a direct loop.

Weights are random (no checkpoints here): latency depends on the architecture and the mask count, not on the
weights, but random SAM yields different mask counts than a trained one, so the filters are opened
(thresholds 0) to keep the CLIP stage busy; the mask counts are printed. Examples:
  .venv/bin/python benchmarks/semantics_keyframe.py                       # tiny models, CPU
  .venv/bin/python benchmarks/semantics_keyframe.py --device cuda --sam vit_h --clip ViT-B-16 --points-per-side 32
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.device import resolve_device
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.semantics.backends import SamClipSemantics
from lang3d_ros.semantics.encoders import OpenClipEncoder
from lang3d_ros.semantics.mask_nms import mask_nms
from lang3d_ros.semantics.sam_masks import build_sam_from_arch, sam_arch
from lang3d_ros.testing.tiny_models import tiny_semantics_config


def loop_mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_thr=0.8, score_thr=0.7, inner_thr=0.5) -> torch.Tensor:
    """The direct O(n^2) pair loop (LangSplat's structure), same semantics as ``mask_nms``."""
    scores, idx = torch.sort(scores, descending=True, stable=True)
    n = idx.shape[0]
    m = masks[idx]
    area = m.flatten(1).sum(1).float()
    iou = torch.zeros((n, n), device=masks.device)
    inner = torch.zeros((n, n), device=masks.device)
    for i in range(n):
        for j in range(i, n):
            inter = torch.logical_and(m[i], m[j]).sum().float()
            union = torch.logical_or(m[i], m[j]).sum().float()
            iou[i, j] = inter / union
            ri, rj = inter / area[i], inter / area[j]
            if ri < 0.5 and rj >= 0.85:
                inner[i, j] = 1 - rj * ri
            if ri >= 0.85 and rj < 0.5:
                inner[j, i] = 1 - rj * ri
    keep = iou.triu(1).amax(0) <= iou_thr
    top = torch.arange(n, device=masks.device) < 3
    conf = scores > score_thr
    ku = inner.triu(1).amax(0) <= 1 - inner_thr
    kl = inner.tril(1).amax(0) <= 1 - inner_thr
    keep &= (conf if conf.any() else top) & (ku if ku.any() else top) & (kl if kl.any() else top)
    return idx[keep]


def realistic_masks(n: int, h: int, w: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n ellipse/rectangle masks of SAM-like sizes (1% to 40% of the image), some near-duplicates and nested."""
    rng = np.random.default_rng(seed)
    yy, xx = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    out = []
    for k in range(n):
        if k and rng.random() < 0.2:
            base = out[rng.integers(len(out))]
            out.append(base & (torch.rand((h, w), device=device) > 0.02))
            continue
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.05, 0.35) * h, rng.uniform(0.05, 0.35) * w
        out.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
    masks = torch.stack(out)
    keep = masks.flatten(1).any(1)
    masks = masks[keep]
    return masks, torch.from_numpy(rng.uniform(0.6, 1.0, masks.shape[0]).astype(np.float32)).to(device)


def timed(fn, device: torch.device, repeats: int, warmup: bool = True) -> tuple[float, object]:
    """Best of ``repeats`` wall-clock runs in ms (after one warm-up call when ``warmup``), and the last output."""
    out = fn() if warmup else None
    best = float("inf")
    for _ in range(max(1, repeats)):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best * 1e3, out


def keyframe_rows(args, device: torch.device) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = tiny_semantics_config(tmp)
        cfg.device = str(device)
        cfg.sam.points_per_side = args.points_per_side
        cfg.sam.crop_n_layers = args.crop_n_layers
        cfg.sam.min_mask_region_area = args.min_region
        if args.sam != "tiny":
            torch.manual_seed(0)
            sam = build_sam_from_arch(sam_arch(args.sam))
            path = Path(tmp) / "sam_random.pth"
            torch.save({"arch": sam_arch(args.sam), "model": sam.state_dict()}, path)
            cfg.sam.checkpoint = str(path)
        if args.clip == "tiny":
            encoder = None
        else:  # the real architecture, random weights, written as a local-dir checkpoint
            import json

            import open_clip

            clip_dir = Path(tmp) / "clip"
            clip_dir.mkdir()
            model_cfg = open_clip.get_model_config(args.clip)
            (clip_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
            torch.save(open_clip.create_model(args.clip).state_dict(), clip_dir / "open_clip_pytorch_model.bin")
            size = model_cfg["vision_cfg"]["image_size"]
            encoder = OpenClipEncoder(checkpoint=str(clip_dir), device=device, image_size=size, batch_size=64)
            cfg.clip.image_size, cfg.feature_dim = size, encoder.feature_dim
        backend = SamClipSemantics(cfg, image_encoder=encoder, device=device)
        rng = np.random.default_rng(0)
        rgb = np.full((args.height, args.width, 3), 100, np.uint8)
        for _ in range(12):  # a few coloured boxes on a flat background
            y0, x0 = rng.integers(0, args.height - 40), rng.integers(0, args.width - 40)
            rgb[y0 : y0 + rng.integers(20, args.height // 2), x0 : x0 + rng.integers(20, args.width // 2)] = (
                rng.integers(0, 256, 3)
            )
        frame = Frame(
            rgb=rgb,
            depth_m=np.ones((args.height, args.width), np.float32),
            intrinsics=Intrinsics(500.0, 500.0, args.width / 2, args.height / 2, args.width, args.height),
            T_world_cam=np.eye(4),
        )
        backend.process(frame)  # warm-up
        runs = []
        for _ in range(args.repeats):
            ks = backend.process(frame)
            runs.append(dict(backend.last_latency_ms))
        med = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
        counts = "/".join(str(lvl.num_masks) for lvl in ks.levels)
        return [
            f"| {args.width}x{args.height} | SAM {args.sam}, {args.points_per_side}^2 pts, crop layers "
            f"{args.crop_n_layers} "
            f"| CLIP {args.clip} ({cfg.feature_dim}-d) | {counts} | {med['masks_ms']:.0f} | {med['embed_ms']:.0f} | "
            f"{med['total_ms']:.0f} |"
        ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--sam", default="tiny", choices=["tiny", "vit_b", "vit_l", "vit_h"])
    p.add_argument("--clip", default="tiny", help="tiny or an open_clip model name (random weights), e.g. ViT-B-16")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--points-per-side", type=int, default=16)
    p.add_argument("--crop-n-layers", type=int, default=0)
    p.add_argument("--min-region", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--nms-counts", default="100,200,400")
    p.add_argument("--loop-max", type=int, default=400, help="skip the direct loop above this mask count")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device: {device}, torch threads: {torch.get_num_threads()}\n")
    print("| image | masks | embeddings | masks per level (s/p/w) | masks ms | CLIP ms | total ms |")
    print("|---|---|---|---|---|---|---|")
    for row in keyframe_rows(args, device):
        print(row, flush=True)
    print("\n| masks | image | vectorised ms | direct loop ms | speed-up | same result |")
    print("|---|---|---|---|---|---|")
    for n in [int(c) for c in args.nms_counts.split(",")]:
        masks, scores = realistic_masks(n, args.height, args.width, device)
        t_vec, keep_vec = timed(lambda: mask_nms(masks, scores), device, args.repeats)
        if masks.shape[0] <= args.loop_max:
            t_loop, keep_loop = timed(lambda: loop_mask_nms(masks, scores), device, 1, warmup=False)
            same = "yes" if keep_loop.tolist() == keep_vec.tolist() else "NO"
            print(
                f"| {masks.shape[0]} | {args.width}x{args.height} | {t_vec:.1f} | {t_loop:.0f} | "
                f"{t_loop / t_vec:.0f}x | {same} |",
                flush=True,
            )
        else:
            print(f"| {masks.shape[0]} | {args.width}x{args.height} | {t_vec:.1f} | (skipped) | | |", flush=True)


if __name__ == "__main__":
    main()
