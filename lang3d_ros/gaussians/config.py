"""Language-Gaussian parameters (3DGS / LangSplat / gsplat values as defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FieldChoice = Literal["points", "gaussians", "auto"]
"""Type of the ``grounding.field`` option (the field lives in the grounding config; see ``FIELD_CHOICE_DOC``)."""
FIELD_CHOICE_DOC = (
    "What answers Ground and renders relevancy: points (the fused map's segments, always available) | gaussians (the "
    "trained language Gaussians: their instance codes gather the segments' relevancy, so the instance ids are the "
    "points' ids; a relevancy image can be rendered for any camera pose; an error until training is done) | auto "
    "(gaussians once training is done and the Gaussians carry codes, points before)."
)


def resolve_field(choice: str, gaussians_ready: bool) -> Literal["points", "gaussians"]:
    """``grounding.field`` -> the field that answers now. ``gaussians_ready``: training done and codes assigned.
    ValueError for an unknown choice, or for "gaussians" while the Gaussians are not ready."""
    if choice not in ("points", "gaussians", "auto"):
        raise ValueError(f"grounding.field must be points, gaussians or auto, got {choice!r}")
    if choice == "gaussians" and not gaussians_ready:
        raise ValueError(
            "grounding.field is gaussians but no trained language Gaussians with instance codes exist "
            "(enable mapping.train_gaussians and wait for training_state done)"
        )
    if choice == "points" or not gaussians_ready:
        return "points"
    return "gaussians"


@dataclass
class GaussianConfig:
    device: str = "auto"
    """Where Gaussians train and render: auto (CUDA when available) | cpu | cuda."""
    backend: str = "auto"
    """Rasterizer: auto (gsplat on CUDA, the tiled torch rasterizer otherwise) | gsplat | torch."""
    near_m: float = 0.01
    """Near clip distance (m): Gaussians closer to the camera are not rendered (gsplat's default; the CPU rasterizer
    follows the same rules)."""
    far_m: float = 1e10
    """Far clip distance (m) of rendering."""
    eps2d: float = 0.3
    """Low-pass added to the 2D covariance diagonal, pixels^2."""
    tile_size: int = 16
    """Tile edge in pixels of the rasterizer (gsplat's default 16)."""
    # initialisation
    sh_degree: int = 0
    """0: colour as SH DC only; up to 3 stores f_rest."""
    init_opacity: float = 0.1
    """Opacity of newly initialised Gaussians (3DGS: 0.1)."""
    init_scale_factor: float = 1.0
    """Scale = factor * mean distance to the 3 nearest neighbours."""
    normal_flatness: float = 0.1
    """Scale along the normal = flatness * in-plane scale."""
    latent_dim: int = 3
    """LangSplat's autoencoder latent."""
    normalize_latents: bool = False
    """Render each Gaussian's latent / |latent| (LangSplat's renderer). Off: on this project's short CPU schedules
    (coarse geometry) it lets small objects' Gaussians flip to a neighbour's latent (docs/BENCHMARKS.md, Language
    Gaussians)."""
    max_init_points: int = 2_000_000
    """At most this many points initialise Gaussians (randomly subsampled above it)."""
    # RGB training (3DGS learning rates; position lr in metres, scaled by scene extent)
    downscale: int = 2
    """Train at 1/downscale resolution."""
    lr_means: float = 1.6e-4
    """Adam learning rate of positions, times the scene extent (3DGS: 1.6e-4)."""
    lr_quats: float = 1e-3
    """Adam learning rate of rotations (3DGS: 1e-3)."""
    lr_scales: float = 5e-3
    """Adam learning rate of log-scales (3DGS: 5e-3)."""
    lr_opacities: float = 5e-2
    """Adam learning rate of opacity logits (3DGS: 5e-2)."""
    lr_colors: float = 2.5e-3
    """Adam learning rate of colours / SH DC (3DGS: 2.5e-3)."""
    lr_latents: float = 2.5e-3
    """Adam learning rate of the language latents (LangSplat: 2.5e-3)."""
    ssim_lambda: float = 0.2
    """Loss = (1 - l) * L1 + l * (1 - SSIM)."""
    rgb_iterations: int = 3000
    """Iterations of the RGB phase (geometry and colour) before the language phase starts."""
    language_iterations: int = 3000
    """Iterations of the language phase (latents only, RGB frozen)."""
    densify_from: int = 500
    """First iteration of densification (3DGS: every 100 iterations from 500 until 15k, gradient threshold 2e-4 in
    NDC)."""
    densify_until: int = 15_000
    """Last iteration of densification."""
    densify_every: int = 100
    """Densify (clone / split / prune) every this many iterations."""
    densify_grad_threshold: float = 2e-4
    """Mean view-space position gradient (NDC) above which a Gaussian is cloned or split."""
    densify_scale_fraction: float = 0.01
    """Clone if max scale <= fraction * extent, else split."""
    prune_opacity: float = 0.005
    """Gaussians whose opacity falls below this are pruned at densification steps."""
    max_gaussians: int = 3_000_000
    """Hard cap on the number of Gaussians; densification stops adding above it."""
    queue_size: int = 64
    """Keyframes waiting for the online trainer; a full queue drops the keyframe (counted)."""
    log_every: int = 100
    """Log training loss and PSNR every this many iterations."""
    codebook_size: int = 512
    """3D queries: k-means codebook size over the Gaussians' decoded features."""
    kmeans_iterations: int = 20
    """Lloyd iterations of that k-means."""
    relevancy_smoothing_px: int = 5
    """Mean filter size for 2D relevancy maps (LERF protocol)."""
    min_language_coverage: float = 0.5
    """Query gate: a Gaussian (or pixel) counts when >= this share of it is mask-supervised."""
    weight_by_latent_norm: bool = True
    """Relevancy x min(|latent|, 1): the decoder only knows unit latents."""
    init_stride_px: int = 4
    """Online: back-project every this many-th pixel (in x and y) of a keyframe's depth into new Gaussians (the first
    keyframe, and ``grow_from_keyframes``)."""
    grow_from_keyframes: bool = True
    """Online: during the RGB phase, each new keyframe adds Gaussians for its pixels the model does not yet cover
    (rendered alpha below ``grow_alpha_threshold``, back-projected every ``init_stride_px``-th pixel), so the field
    covers every keyframe's view, not only the first one's."""
    grow_alpha_threshold: float = 0.5
    """Rendered opacity below which a keyframe pixel counts as not covered (``grow_from_keyframes``)."""
    code_neighbours: int = 4
    """Instance codes: this many nearest labelled points vote for a Gaussian's segment id, per level."""
    code_max_distance_m: float = 0.1
    """Instance codes: labelled points farther than this from a Gaussian's centre do not vote (no code: -1)."""
    code_refresh_every: int = 250
    """Online: re-assign instance codes from the map's labelled points every this many training iterations (and
    when training is done); needs the trainer's ``label_source``."""
    render_max_side_px: int = 4096
    """Largest image side (pixels) a relevancy render request may ask for (RenderRelevancy service); larger is
    refused as a bad request."""
    render_max_pixels: int = 3840 * 2160
    """Most pixels (width x height) a relevancy render request may ask for (4K UHD); more is refused as a bad
    request."""

    def validate(self) -> None:
        if self.backend not in ("auto", "gsplat", "torch"):
            raise ValueError(f"backend must be auto, gsplat or torch, got {self.backend!r}")
        if not 0 < self.near_m < self.far_m:
            raise ValueError(f"need 0 < near_m < far_m, got {self.near_m}, {self.far_m}")
        if self.eps2d < 0 or self.tile_size <= 0:
            raise ValueError("eps2d must be >= 0 and tile_size positive")
        if not 0 <= self.sh_degree <= 3:
            raise ValueError(f"sh_degree must be in 0..3, got {self.sh_degree}")
        if not 0 < self.init_opacity < 1:
            raise ValueError(f"init_opacity must be in (0, 1), got {self.init_opacity}")
        if self.latent_dim <= 0 or self.downscale <= 0 or self.queue_size <= 0:
            raise ValueError("latent_dim, downscale and queue_size must be positive")
        if not 0 <= self.ssim_lambda <= 1:
            raise ValueError(f"ssim_lambda must be in [0, 1], got {self.ssim_lambda}")
        if self.codebook_size <= 0 or self.kmeans_iterations <= 0:
            raise ValueError("codebook_size and kmeans_iterations must be positive")
        if not 0 <= self.min_language_coverage <= 1:
            raise ValueError(f"min_language_coverage must be in [0, 1], got {self.min_language_coverage}")
        if self.init_stride_px <= 0:
            raise ValueError(f"init_stride_px must be positive, got {self.init_stride_px}")
        if not 0 < self.grow_alpha_threshold <= 1:
            raise ValueError(f"grow_alpha_threshold must be in (0, 1], got {self.grow_alpha_threshold}")
        if self.code_neighbours <= 0 or self.code_max_distance_m <= 0 or self.code_refresh_every <= 0:
            raise ValueError("code_neighbours, code_max_distance_m and code_refresh_every must be positive")
        if self.render_max_side_px <= 0 or self.render_max_pixels <= 0:
            raise ValueError("render_max_side_px and render_max_pixels must be positive")
        if self.relevancy_smoothing_px <= 0 or self.relevancy_smoothing_px % 2 == 0:
            raise ValueError(f"relevancy_smoothing_px must be odd and positive, got {self.relevancy_smoothing_px}")
