"""Training steps for language Gaussians: RGB with 3DGS densification, then language latents (LangSplat).

RGB: loss (1 - 0.2) L1 + 0.2 (1 - SSIM) on a keyframe rendered at 1/``downscale`` resolution (black
background); every ``densify_every`` iterations inside [densify_from, densify_until], Gaussians whose mean
view-space positional gradient (NDC units, as 3DGS) exceeds the threshold are cloned (small) or split in two
(large, scales / 1.6), and Gaussians with opacity below ``prune_opacity`` are removed; Adam moments follow
the surviving rows, and clones and split halves inherit their parent's instance codes (``model.codes``).
Language: geometry and colour frozen, all three levels' latents rendered in one pass
((N, 3 d) features) and fitted with L1 to the autoencoded feature maps on the pixels a mask covers.
``language_coverage`` measures which Gaussians the masks supervise (the query gate).
Cannot: opacity reset, screen-size pruning, SH bands above 0, exposure compensation.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.gaussians.config import GaussianConfig
from lang3d_ros.gaussians.losses import psnr, rgb_loss
from lang3d_ros.gaussians.model import NUM_LEVELS, GaussianModel
from lang3d_ros.gaussians.rasterizer import quat_to_rotmat
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.geometry.transforms import invert_rigid
from lang3d_ros.semantics.types import KeyframeSemantics

log = logging.getLogger(__name__)
FeatureEncoder = Callable[[torch.Tensor], torch.Tensor]  # (M, D) mask features -> (M, d) latents
RGB_PARAMS = ("means", "quats", "log_scales", "opacity_logits", "sh_dc", "sh_rest")


@dataclass
class Keyframe:
    """A training view at training resolution. rgb (H, W, 3) float in [0, 1]; viewmat (4, 4) world ->
    camera; K (3, 3) project pixel convention; lang_target (3, H, W, d) and lang_mask (3, H, W) bool or None;
    lang_seg (3, H, W) int64 mask row per pixel (-1: none) and lang_features (one (M_l, D) CPU tensor per level),
    kept so that ``reencode_keyframe`` can rebuild the targets after the autoencoder has trained on."""

    rgb: torch.Tensor
    viewmat: torch.Tensor
    K: torch.Tensor
    lang_target: torch.Tensor | None = None
    lang_mask: torch.Tensor | None = None
    lang_seg: torch.Tensor | None = None
    lang_features: list[torch.Tensor] | None = None

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def make_keyframe(
    frame: Frame,
    downscale: int = 1,
    device: str | torch.device = "cpu",
    semantics: KeyframeSemantics | None = None,
    encoder: FeatureEncoder | None = None,
) -> Keyframe:
    """Frame (+ its KeyframeSemantics and the autoencoder's encode) -> Keyframe at 1/downscale resolution.

    RGB is area-averaged; seg maps are sampled at the centre pixel of each block; the language target
    is encode(features)[seg_map] per level, masked where seg_map = -1. A negative fx / fy is turned into a
    positive one with a mirrored ``viewmat`` (the renderer needs positive focal lengths).
    """
    frame.validate()
    if downscale < 1:
        raise ValueError(f"downscale must be >= 1, got {downscale}")
    if semantics is not None and encoder is None:
        raise ValueError("semantics given without an encoder (M, D) -> (M, d) to make latent targets")
    s = downscale
    h, w = (frame.height // s) * s, (frame.width // s) * s
    if h == 0 or w == 0:
        raise ValueError(f"image {frame.width}x{frame.height} is smaller than downscale {s}")
    intr = Intrinsics(frame.intrinsics.fx, frame.intrinsics.fy, frame.intrinsics.cx, frame.intrinsics.cy, w, h)
    intr = intr.scaled(w // s, h // s)
    rgb = torch.from_numpy(frame.rgb[:h, :w]).float().div(255.0).permute(2, 0, 1)[None]
    rgb = F.avg_pool2d(rgb, s)[0].permute(1, 2, 0).contiguous() if s > 1 else rgb[0].permute(1, 2, 0).contiguous()
    target = mask = seg_t = feats = None
    if semantics is not None:
        segs, feats = [], []
        for lvl in semantics.levels:
            lvl.validate(frame.height, frame.width)
            segs.append(torch.from_numpy(np.ascontiguousarray(lvl.seg_map[s // 2 : h : s, s // 2 : w : s])).long())
            feats.append(torch.from_numpy(np.asarray(lvl.features, dtype=np.float32)))
        seg_t = torch.stack(segs)
        target, mask = _latent_targets(seg_t, feats, encoder)
    # a negative focal length (gradslam's y-up data) = a mirrored camera: mirror the view instead
    flip = np.diag([np.sign(intr.fx), np.sign(intr.fy), 1.0, 1.0])
    K = intr.K @ np.diag([np.sign(intr.fx), np.sign(intr.fy), 1.0])
    dev = torch.device(device)
    return Keyframe(
        rgb=rgb.to(dev),
        viewmat=torch.from_numpy(flip @ invert_rigid(frame.T_world_cam)).float().to(dev),
        K=torch.from_numpy(K).float().to(dev),
        lang_target=None if target is None else target.to(dev),
        lang_mask=None if mask is None else mask.to(dev),
        lang_seg=seg_t,
        lang_features=feats,
    )


def _latent_targets(
    seg: torch.Tensor, features: list[torch.Tensor], encoder: FeatureEncoder
) -> tuple[torch.Tensor, torch.Tensor]:
    """seg (L, H, W) int64 mask rows, features per level (M_l, D) -> (targets (L, H, W, d), mask (L, H, W) bool)."""
    targets = []
    for lvl, f in enumerate(features):
        with torch.no_grad():
            lat = torch.as_tensor(encoder(f.float())).float().cpu()
        if lat.ndim != 2 or lat.shape[0] != f.shape[0]:
            raise ValueError(f"encoder must map ({f.shape[0]}, D) -> (M, d), got {tuple(lat.shape)}")
        lat = torch.cat([lat, torch.zeros(1, lat.shape[1])])  # row -1 -> zeros
        targets.append(lat[seg[lvl]])
    return torch.stack(targets), seg >= 0


def reencode_keyframe(kf: Keyframe, encoder: FeatureEncoder) -> None:
    """Rebuild ``kf``'s latent targets from its stored masks with ``encoder`` (the scene autoencoder as it is now:
    it keeps training while mapping runs, so targets encoded at arrival drift from its decoder). No-op without
    stored masks."""
    if kf.lang_seg is None or kf.lang_features is None:
        return
    target, mask = _latent_targets(kf.lang_seg, kf.lang_features, encoder)
    kf.lang_target, kf.lang_mask = target.to(kf.rgb.device), mask.to(kf.rgb.device)


def scene_extent(model: GaussianModel, keyframes: list[Keyframe]) -> float:
    """3DGS's spatial scale: 1.1 x the largest camera distance from the cameras' centroid; with fewer than
    two distinct cameras, half the diagonal of the Gaussians' bounding box."""
    if len(keyframes) >= 2:
        centres = torch.stack([torch.linalg.inv(k.viewmat)[:3, 3] for k in keyframes])
        r = float((centres - centres.mean(0)).norm(dim=1).max()) * 1.1
        if r > 1e-3:
            return r
    m = model.means.detach()
    return max(float((m.max(0).values - m.min(0).values).norm()) / 2, 1e-3)


class GaussianOptimizer:
    """Adam over a GaussianModel's parameters (in place), with densification for the RGB phase."""

    def __init__(self, model: GaussianModel, config: GaussianConfig, extent: float = 1.0, seed: int = 0):
        self.model, self.cfg, self.extent = model, config, float(extent)
        self.gen = torch.Generator(device="cpu").manual_seed(seed)
        lrs = {
            "means": config.lr_means * self.extent,
            "quats": config.lr_quats,
            "log_scales": config.lr_scales,
            "opacity_logits": config.lr_opacities,
            "sh_dc": config.lr_colors,
            "sh_rest": config.lr_colors / 20,
        }
        for k in model.params:
            model.params[k] = model.params[k].detach().requires_grad_(k in RGB_PARAMS)
        self.rgb_opt = torch.optim.Adam(
            [{"params": [model.params[k]], "lr": lrs[k], "name": k} for k in RGB_PARAMS], eps=1e-15
        )
        self.lang_opt: torch.optim.Adam | None = None
        self.rgb_iterations = 0
        self.language_iterations = 0
        self._reset_stats()

    def _reset_stats(self) -> None:
        n, dev = self.model.num_gaussians, self.model.device
        self.grad_accum = torch.zeros(n, device=dev)
        self.grad_count = torch.zeros(n, device=dev)

    # RGB ------------------------------------------------------------------------------------------
    def rgb_step(self, kf: Keyframe) -> dict[str, float]:
        """One RGB iteration on keyframe ``kf`` -> {"loss", "psnr"}; may densify and prune."""
        out = self.model.render_rgb(kf.viewmat[None], kf.K[None], kf.width, kf.height, self.cfg)
        img = out.image[0]
        loss = rgb_loss(img, kf.rgb, self.cfg.ssim_lambda)
        self.rgb_opt.zero_grad(set_to_none=True)
        loss.backward()
        m2d = out.meta["means2d"]
        if m2d.grad is not None:
            g = m2d.grad[0] * torch.tensor([kf.width / 2.0, kf.height / 2.0], device=m2d.device)
            vis = (out.meta["radii"][0] > 0).all(dim=-1)
            self.grad_accum += g.norm(dim=-1) * vis
            self.grad_count += vis
        self.rgb_opt.step()
        self.rgb_iterations += 1
        it, c = self.rgb_iterations, self.cfg
        if c.densify_from <= it <= c.densify_until and it % c.densify_every == 0:
            self.densify_and_prune()
        return {"loss": float(loss.detach()), "psnr": psnr(img, kf.rgb)}

    @torch.no_grad()
    def densify_and_prune(self) -> dict[str, int]:
        """Clone / split Gaussians with large view-space gradients, prune transparent ones."""
        p, c = self.model.params, self.cfg
        n = self.model.num_gaussians
        avg = self.grad_accum / self.grad_count.clamp(min=1)
        cand = avg >= c.densify_grad_threshold
        budget = max(c.max_gaussians - n, 0)
        if int(cand.sum()) > budget // 2:  # a split adds up to two rows
            top = torch.topk(torch.where(cand, avg, torch.zeros_like(avg)), budget // 2).indices
            cand = torch.zeros_like(cand)
            cand[top] = True
        scales = torch.exp(p["log_scales"])
        big = scales.max(dim=1).values > c.densify_scale_fraction * self.extent
        clone, split = cand & ~big, cand & big
        new = {k: torch.cat([v[clone], v[split], v[split]]) for k, v in p.items()}
        codes = self.model.codes
        new_codes = torch.cat([codes[clone], codes[split], codes[split]])
        if int(split.sum()):
            s = scales[split].repeat(2, 1)
            R = quat_to_rotmat(p["quats"][split]).repeat(2, 1, 1)
            offs = (R @ (torch.randn(s.shape, generator=self.gen).to(s.device) * s)[..., None])[..., 0]
            ns = int(clone.sum())
            new["means"][ns:] = new["means"][ns:] + offs
            new["log_scales"][ns:] = torch.log(s / 1.6)
        keep = ~split & (torch.sigmoid(p["opacity_logits"]) >= c.prune_opacity)
        self._replace_rows(keep, new, new_codes)
        stats = {
            "cloned": int(clone.sum()),
            "split": int(split.sum()),
            "pruned": int((~keep).sum()) - int(split.sum()),
            "num_gaussians": self.model.num_gaussians,
        }
        log.debug("densify at %d: %s", self.rgb_iterations, stats)
        return stats

    @torch.no_grad()
    def add_gaussians(self, new: GaussianModel) -> int:
        """Append ``new``'s Gaussians (same SH degree and latent size, any device) with fresh Adam moments and their
        instance codes; returns the new total."""
        if new.sh_degree != self.model.sh_degree or new.latent_dim != self.model.latent_dim:
            raise ValueError("new Gaussians must have the model's SH degree and latent size")
        dev = self.model.device
        keep = torch.ones(self.model.num_gaussians, dtype=torch.bool, device=dev)
        self._replace_rows(keep, {k: v.detach().to(dev) for k, v in new.params.items()}, new.codes.to(dev))
        return self.model.num_gaussians

    def _replace_rows(
        self, keep: torch.Tensor, appended: dict[str, torch.Tensor], appended_codes: torch.Tensor
    ) -> None:
        """Keep rows ``keep`` (N,) bool and append ``appended`` rows (with ``appended_codes`` (M, 3) int32); carry Adam
        moments (zeros for new rows)."""
        self.model.codes = torch.cat([self.model.codes[keep], appended_codes.to(torch.int32)])
        self.model.coverage = None
        for k in list(self.model.params):
            old = self.model.params[k]
            new = torch.cat([old.detach()[keep], appended[k]]).requires_grad_(old.requires_grad)
            for opt in (self.rgb_opt, self.lang_opt):
                if opt is None:
                    continue
                for group in opt.param_groups:
                    if group["params"][0] is old:
                        state = opt.state.pop(old, None)
                        if state:
                            for sk in ("exp_avg", "exp_avg_sq"):
                                pad = torch.zeros_like(appended[k])
                                state[sk] = torch.cat([state[sk][keep], pad])
                            opt.state[new] = state
                        group["params"][0] = new
            self.model.params[k] = new
        self._reset_stats()

    # language -------------------------------------------------------------------------------------
    def language_step(self, kf: Keyframe) -> float:
        """One latent iteration on ``kf`` (needs lang_target): L1 over masked pixels, all levels at once."""
        if kf.lang_target is None or kf.lang_mask is None:
            raise ValueError("keyframe has no language target (make_keyframe with semantics and an encoder)")
        if self.lang_opt is None:
            for k in RGB_PARAMS:
                self.model.params[k].requires_grad_(False)
            self.model.params["latents"] = self.model.params["latents"].detach().requires_grad_(True)
            self.lang_opt = torch.optim.Adam(
                [{"params": [self.model.params["latents"]], "lr": self.cfg.lr_latents, "name": "latents"}], eps=1e-15
            )
        d = self.model.latent_dim
        out = self.model.render_latents(kf.viewmat[None], kf.K[None], kf.width, kf.height, self.cfg)
        img = out.image[0].reshape(kf.height, kf.width, NUM_LEVELS, d).permute(2, 0, 1, 3)  # (L, H, W, d)
        mask = kf.lang_mask[..., None].to(img.dtype)
        loss = ((img - kf.lang_target).abs() * mask).sum() / (mask.sum() * d).clamp(min=1)
        self.lang_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.lang_opt.step()
        self.language_iterations += 1
        return float(loss.detach())


def language_coverage(model: GaussianModel, keyframes: list[Keyframe], config: GaussianConfig) -> torch.Tensor:
    """(N, L) share of each Gaussian's blending weight, summed over the pixels of ``keyframes`` (with language
    targets), that lands on pixels a mask of level l covers; 0 for a Gaussian no keyframe sees.

    The latent of a Gaussian with a low share was fitted (if at all) only by the few mask pixels it bleeds into,
    e.g. floor and walls that the ground-truth semantics leave unlabelled: the query gate (``LanguageQueryEngine``
    ``coverage``) is the Gaussian counterpart of the fused map's "points no mask covered score 0". One render and
    backward per keyframe (the weights are the gradient of the masked / total rendered ones w.r.t. the features).
    """
    lang = [k for k in keyframes if k.lang_mask is not None]
    if not lang:
        raise ValueError("no keyframe with a language target to measure coverage on")
    levels = int(lang[0].lang_mask.shape[0])
    ones = torch.ones(model.num_gaussians, levels + 1, device=model.device, requires_grad=True)
    for k in lang:
        img = model.render(ones, k.viewmat[None], k.K[None], k.width, k.height, config, detach_geometry=True).image[0]
        masked = (img[..., :levels] * k.lang_mask.permute(1, 2, 0).to(img.dtype)).sum()
        (masked + img[..., levels].sum()).backward()
    w = ones.grad.detach()
    total = w[:, levels:]
    return torch.where(total > 0, w[:, :levels] / total.clamp(min=1e-12), torch.zeros((), device=w.device))


@torch.no_grad()
def evaluate_psnr(model: GaussianModel, keyframes: list[Keyframe], config: GaussianConfig) -> float:
    """Mean PSNR (dB) of the model rendered at each keyframe's view."""
    if not keyframes:
        raise ValueError("no keyframes to evaluate")
    vals = [
        psnr(model.render_rgb(k.viewmat[None], k.K[None], k.width, k.height, config).image[0], k.rgb) for k in keyframes
    ]
    return float(np.mean(vals)) if all(math.isfinite(v) for v in vals) else float("inf")
