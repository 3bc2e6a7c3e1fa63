"""2D semantics parameters (LangSplat's values as defaults)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamConfig:
    model_type: str = "vit_h"  # vit_h | vit_l | vit_b
    checkpoint: str = ""  # path to sam_vit_h_4b8939.pth; empty -> error that says what to download
    points_per_side: int = 32
    pred_iou_thresh: float = 0.7
    stability_score_thresh: float = 0.85
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 1
    min_mask_region_area: int = 100
    mask_nms_iou: float = 0.8
    mask_nms_score: float = 0.7
    mask_nms_inner: float = 0.5


@dataclass
class ClipConfig:
    backend: str = "open_clip"  # open_clip | transformers
    model_name: str = "ViT-B-16"
    pretrained: str = "laion2b_s34b_b88k"
    checkpoint: str = ""  # local file or folder; empty -> open_clip's cache
    image_size: int = 224
    batch_size: int = 64
    half_precision: bool = True  # on CUDA only
    canonical_phrases: list[str] = field(default_factory=lambda: ["object", "things", "stuff", "texture"])


@dataclass
class AutoencoderConfig:
    encoder_dims: list[int] = field(default_factory=lambda: [256, 128, 64, 32, 3])
    decoder_dims: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256, 256, 512])
    learning_rate: float = 1e-3
    cosine_weight: float = 1e-3  # LangSplat: l2 + 1e-3 * cosine
    steps_per_keyframe: int = 50


@dataclass
class SemanticsConfig:
    backend: str = "sam_clip"  # sam_clip | ground_truth (synthetic scenes only)
    device: str = "auto"
    feature_dim: int = 512
    sam: SamConfig = field(default_factory=SamConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)

    def validate(self) -> None:
        if self.backend not in ("sam_clip", "ground_truth"):
            raise ValueError(f"backend must be sam_clip or ground_truth, got {self.backend!r}")
