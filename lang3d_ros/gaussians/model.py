"""GaussianModel: the raw (pre-activation) parameters of N language Gaussians, gsplat's conventions.

means (N, 3) world metres; quats (N, 4) wxyz, not normalised; log_scales (N, 3) log metres;
opacity_logits (N,); sh_dc (N, 3) and sh_rest (N, K-1, 3) RGB spherical-harmonic coefficients
(K = (sh_degree + 1)^2; colour = 0.5 + C0 * sh_dc, view-dependent bands are stored but not rendered);
latents (N, 3 levels, d) LangSplat language latents (autoencoder space), zero until trained.
Beside the parameters (not trained by gradients): ``codes`` (N, 3 levels) int32, each Gaussian's instance code
(segment id of the fused map's instance table) per level, -1 for none (``lang3d_ros.gaussians.instances``), and
``coverage`` (N, 3) float32 or None: the share of each Gaussian's training blend weight on mask pixels per level
(``training.language_coverage``, set when language training is done; the query gate), dropped when rows change.
Cannot: render SH bands above 0 (the renderer takes post-activation features).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from scipy.spatial import cKDTree

from lang3d_ros.device import resolve_device
from lang3d_ros.gaussians.config import GaussianConfig
from lang3d_ros.gaussians.render import RenderOutput, render

log = logging.getLogger(__name__)
SH_C0 = 0.28209479177387814
NUM_LEVELS = 3
NO_CODE = -1
PARAM_NAMES = ("means", "quats", "log_scales", "opacity_logits", "sh_dc", "sh_rest", "latents")


def rgb_to_sh_dc(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - 0.5) / SH_C0


def quats_from_normals(normals: np.ndarray) -> np.ndarray:
    """(N, 3) unit normals -> (N, 4) wxyz rotations taking the local z axis onto each normal."""
    n = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    q = np.stack([1.0 + n[:, 2], -n[:, 1], n[:, 0], np.zeros(len(n))], axis=1)
    opposite = q[:, 0] < 1e-8  # normal = -z: rotate 180 degrees about x
    q[opposite] = [0.0, 1.0, 0.0, 0.0]
    return q / np.linalg.norm(q, axis=1, keepdims=True)


class GaussianModel:
    """Holds the parameters as leaf tensors (requires_grad set by the trainer) on one device."""

    def __init__(self, params: dict[str, torch.Tensor], sh_degree: int = 0, codes: torch.Tensor | None = None):
        """params: the PARAM_NAMES tensors (shapes in the module docstring); codes (N, 3) int32 or None (all -1)."""
        missing = [k for k in PARAM_NAMES if k not in params]
        if missing:
            raise ValueError(f"missing Gaussian parameters {missing}")
        n = params["means"].shape[0]
        shapes = {
            "means": (n, 3),
            "quats": (n, 4),
            "log_scales": (n, 3),
            "opacity_logits": (n,),
            "sh_dc": (n, 3),
            "sh_rest": (n, (sh_degree + 1) ** 2 - 1, 3),
        }
        for k, shape in shapes.items():
            if tuple(params[k].shape) != shape:
                raise ValueError(f"{k} must have shape {shape}, got {tuple(params[k].shape)}")
        lat = params["latents"]
        if lat.ndim != 3 or lat.shape[0] != n or lat.shape[1] != NUM_LEVELS:
            raise ValueError(f"latents must be (N, {NUM_LEVELS}, d), got {tuple(lat.shape)}")
        self.sh_degree = int(sh_degree)
        self.params = {k: params[k] for k in PARAM_NAMES}
        dev = params["means"].device
        if codes is None:
            codes = torch.full((n, NUM_LEVELS), NO_CODE, dtype=torch.int32, device=dev)
        if tuple(codes.shape) != (n, NUM_LEVELS):
            raise ValueError(f"codes must have shape ({n}, {NUM_LEVELS}), got {tuple(codes.shape)}")
        self.codes = torch.as_tensor(codes).to(device=dev, dtype=torch.int32)
        self.coverage: torch.Tensor | None = None

    # construction -------------------------------------------------------------------------------
    @classmethod
    def from_points(
        cls,
        points: np.ndarray,
        colors: np.ndarray,
        normals: np.ndarray | None = None,
        config: GaussianConfig | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        codes: np.ndarray | None = None,
    ) -> "GaussianModel":
        """points (N, 3) metres; colors (N, 3) in [0, 1] (or uint8 0..255); normals (N, 3) or None; codes (N, 3)
        int instance codes per level (-1: none) or None.

        Scale: ``init_scale_factor`` x RMS distance to the 3 nearest neighbours (3DGS). With normals,
        each Gaussian is a disc in the surface plane (thickness ``normal_flatness`` x scale); zero normals
        give spheres. More than ``max_init_points`` points are subsampled at random.
        """
        cfg = config or GaussianConfig()
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) < 4:
            raise ValueError(f"points must be (N >= 4, 3), got {pts.shape}")
        if not np.all(np.isfinite(pts)):
            raise ValueError("points contain non-finite values")
        col = np.asarray(colors)
        if col.shape != pts.shape:
            raise ValueError(f"colors must be (N, 3) like points {pts.shape}, got {col.shape}")
        col = col.astype(np.float64) / 255.0 if col.dtype == np.uint8 else col.astype(np.float64)
        if col.min(initial=0.0) < 0 or col.max(initial=0.0) > 1:
            raise ValueError("colors must be in [0, 1] (float) or uint8")
        if normals is not None and np.asarray(normals).shape != pts.shape:
            raise ValueError(f"normals must be (N, 3) like points {pts.shape}, got {np.asarray(normals).shape}")
        if codes is not None and np.asarray(codes).shape != (len(pts), NUM_LEVELS):
            raise ValueError(f"codes must be ({len(pts)}, {NUM_LEVELS}), got {np.asarray(codes).shape}")
        if len(pts) > cfg.max_init_points:
            keep = np.random.default_rng(seed).choice(len(pts), cfg.max_init_points, replace=False)
            pts, col = pts[keep], col[keep]
            normals = None if normals is None else np.asarray(normals)[keep]
            codes = None if codes is None else np.asarray(codes)[keep]
        d, _ = cKDTree(pts).query(pts, k=4)
        scale = cfg.init_scale_factor * np.sqrt(np.mean(d[:, 1:] ** 2, axis=1))
        scale = np.maximum(scale, 1e-7)
        n = len(pts)
        scales = np.repeat(scale[:, None], 3, axis=1)
        quats = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
        if normals is not None:
            nrm = np.asarray(normals, dtype=np.float64)
            has = np.linalg.norm(nrm, axis=1) > 1e-6
            quats[has] = quats_from_normals(nrm[has])
            scales[has, 2] *= cfg.normal_flatness
        dev = resolve_device(device)
        f32 = dict(dtype=torch.float32, device=dev)
        logit = float(np.log(cfg.init_opacity / (1 - cfg.init_opacity)))
        params = {
            "means": torch.tensor(pts, **f32),
            "quats": torch.tensor(quats, **f32),
            "log_scales": torch.tensor(np.log(scales), **f32),
            "opacity_logits": torch.full((n,), logit, **f32),
            "sh_dc": rgb_to_sh_dc(torch.tensor(col, **f32)),
            "sh_rest": torch.zeros(n, (cfg.sh_degree + 1) ** 2 - 1, 3, **f32),
            "latents": torch.zeros(n, NUM_LEVELS, cfg.latent_dim, **f32),
        }
        log.info("initialised %d Gaussians (median scale %.4f m)", n, float(np.median(scale)))
        code_t = None if codes is None else torch.as_tensor(np.asarray(codes, dtype=np.int32), device=dev)
        return cls(params, cfg.sh_degree, code_t)

    # views --------------------------------------------------------------------------------------
    def __getattr__(self, name: str) -> torch.Tensor:
        params = self.__dict__.get("params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(name)

    @property
    def num_gaussians(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    @property
    def latent_dim(self) -> int:
        return int(self.params["latents"].shape[2])

    def scales(self) -> torch.Tensor:
        return torch.exp(self.params["log_scales"])

    def opacities(self) -> torch.Tensor:
        return torch.sigmoid(self.params["opacity_logits"])

    def colors(self) -> torch.Tensor:
        """(N, 3) view-independent RGB in [0, 1] from the SH DC band."""
        return torch.clamp(0.5 + SH_C0 * self.params["sh_dc"], 0.0, 1.0)

    def clone(self, device: str | torch.device | None = None) -> "GaussianModel":
        dev = self.device if device is None else resolve_device(device)
        out = GaussianModel(
            {k: v.detach().to(dev).clone() for k, v in self.params.items()}, self.sh_degree, self.codes.to(dev).clone()
        )
        out.coverage = None if self.coverage is None else self.coverage.to(dev).clone()
        return out

    def select(self, keep: torch.Tensor) -> "GaussianModel":
        """A new model with the Gaussians where ``keep`` (N,) bool (or index tensor) selects."""
        out = GaussianModel(
            {k: v.detach()[keep].clone() for k, v in self.params.items()}, self.sh_degree, self.codes[keep].clone()
        )
        out.coverage = None if self.coverage is None else self.coverage[keep].clone()
        return out

    # rendering ----------------------------------------------------------------------------------
    def render(
        self,
        features: torch.Tensor,
        viewmats: torch.Tensor,
        Ks: torch.Tensor,
        width: int,
        height: int,
        config: GaussianConfig | None = None,
        background: torch.Tensor | None = None,
        expected_depth: bool = False,
        detach_geometry: bool = False,
    ) -> RenderOutput:
        """Render ``features`` (N, D) through this model's geometry; viewmats (C, 4, 4), Ks (C, 3, 3) on
        the model's device. ``detach_geometry`` freezes means/quats/scales/opacities (language training)."""
        cfg = config or GaussianConfig()
        geo = [self.params["means"], self.params["quats"], self.scales(), self.opacities()]
        if detach_geometry:
            geo = [g.detach() for g in geo]
        return render(
            *geo,
            features,
            viewmats,
            Ks,
            width,
            height,
            backend=cfg.backend,
            near=cfg.near_m,
            far=cfg.far_m,
            background=background,
            expected_depth=expected_depth,
            eps2d=cfg.eps2d,
            tile_size=cfg.tile_size,
        )

    def render_rgb(
        self, viewmats, Ks, width, height, config=None, background=None, expected_depth=False
    ) -> RenderOutput:
        return self.render(self.colors(), viewmats, Ks, width, height, config, background, expected_depth)

    def unit_latents(self, eps: float = 1e-9) -> torch.Tensor:
        """(N, 3, d) latents projected onto the autoencoder's unit sphere, x / (|x| + eps), per Gaussian and level
        (LangSplat's renderer); an all-zero (never trained) latent stays zero."""
        lat = self.params["latents"]
        return lat / (lat.norm(dim=-1, keepdim=True) + eps)

    def render_latents(self, viewmats, Ks, width, height, config=None) -> RenderOutput:
        """All levels in one pass: image (C, H, W, 3 * d), level-major (level l at [l * d:(l + 1) * d]). With
        ``config.normalize_latents`` each Gaussian's latent is first put on the unit sphere (``unit_latents``)."""
        cfg = config or GaussianConfig()
        lat = self.unit_latents() if cfg.normalize_latents else self.params["latents"]
        return self.render(lat.reshape(lat.shape[0], -1), viewmats, Ks, width, height, cfg, detach_geometry=True)
