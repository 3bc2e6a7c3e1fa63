"""Semantics backends: ``process(frame) -> KeyframeSemantics``, and the factories that build them from config.

- ``SamClipSemantics``: SAM's three levels + CLIP per mask (LangSplat), the real perception path.
- ``GroundTruthSemantics``: labels from a synthetic scene's instance map, embedded as text. An evaluation tool.
Models are built once per process (``build_image_encoder`` / ``build_text_encoder`` cache them).
"""

from __future__ import annotations

import logging
import time
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.device import resolve_device
from lang3d_ros.semantics.config import MaskNoiseConfig, SemanticsConfig
from lang3d_ros.semantics.crops import mask_crops
from lang3d_ros.semantics.encoders import HFClipEncoder, ImageEncoder, MiniLMTextEncoder, OpenClipEncoder, TextEncoder
from lang3d_ros.semantics.mask_noise import MaskNoise, MaskNoiseReport
from lang3d_ros.semantics.types import KeyframeSemantics, LevelMasks

logger = logging.getLogger(__name__)
_MODELS: dict[tuple, object] = {}


@runtime_checkable
class SemanticsBackend(Protocol):
    """What the mapping pipeline calls per keyframe."""

    feature_dim: int

    def process(self, frame: Frame) -> KeyframeSemantics: ...


def clear_model_cache() -> None:
    """Forget the models built so far (frees their memory once nothing else holds them)."""
    _MODELS.clear()


def build_image_encoder(config: SemanticsConfig, device: str | torch.device | None = None) -> ImageEncoder:
    """The configured CLIP (open_clip or transformers), built once per (backend, checkpoint, device)."""
    c = config.clip
    dev = resolve_device(device if device is not None else config.device)
    key = (
        "clip",
        c.backend,
        c.model_name,
        c.pretrained,
        c.checkpoint,
        c.image_size,
        c.half_precision,
        c.cache_dir,
        str(dev),
    )
    if key not in _MODELS:
        if c.backend == "open_clip":
            _MODELS[key] = OpenClipEncoder(
                c.model_name, c.pretrained, c.checkpoint, dev, c.image_size, c.batch_size, c.half_precision, c.cache_dir
            )
        elif c.backend == "transformers":
            enc = HFClipEncoder(c.checkpoint, dev, c.batch_size, c.half_precision)
            if enc.image_size != c.image_size:
                raise ValueError(f"clip.image_size {c.image_size} differs from the model's {enc.image_size}")
            _MODELS[key] = enc
        else:
            raise ValueError(f"unknown clip.backend {c.backend!r}")
    return _MODELS[key]  # type: ignore[return-value]


def build_text_encoder(config: SemanticsConfig, device: str | torch.device | None = None) -> TextEncoder:
    """The text encoder whose space matches this config's mask features: MiniLM for the ground-truth backend
    with ``gt_text_encoder="minilm"``, else the configured CLIP."""
    if config.backend == "ground_truth" and config.gt_text_encoder == "minilm":
        dev = resolve_device(device if device is not None else config.device)
        key = ("minilm", config.gt_text_encoder_path, str(dev))
        if key not in _MODELS:
            _MODELS[key] = MiniLMTextEncoder(config.gt_text_encoder_path, dev)
        return _MODELS[key]  # type: ignore[return-value]
    return build_image_encoder(config, device)


def canonical_text_features(encoder: TextEncoder, config: SemanticsConfig) -> torch.Tensor:
    """(C, D) unit rows of the canonical phrases (LERF relevancy's negatives) in the encoder's space."""
    return encoder.encode_text(list(config.clip.canonical_phrases))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SamClipSemantics:
    """LangSplat's 2D semantics: SAM's three levels, LangSplat's filters and mask NMS, CLIP per mask.

    ``last_latency_ms`` holds masks_ms / embed_ms / total_ms of the latest ``process``. Not thread-safe.
    """

    def __init__(
        self,
        config: SemanticsConfig,
        image_encoder: ImageEncoder | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        # SAM (segment_anything, torchvision and the torch compiler stack they pull in: ~300 MiB) only here: the
        # ground-truth backend never needs it
        from lang3d_ros.semantics.sam_masks import LevelMaskGenerator, load_sam

        config.validate()
        self.config = config
        self.device = resolve_device(device if device is not None else config.device)
        key = ("sam", config.sam.model_type, config.sam.checkpoint, str(self.device))
        if key not in _MODELS:
            _MODELS[key] = load_sam(config.sam.model_type, config.sam.checkpoint, self.device)
        self.generator = LevelMaskGenerator(_MODELS[key], config.sam)  # type: ignore[arg-type]
        self.encoder = image_encoder if image_encoder is not None else build_image_encoder(config, self.device)
        if self.encoder.feature_dim != config.feature_dim:
            raise ValueError(
                f"semantics.feature_dim {config.feature_dim} != CLIP embedding size {self.encoder.feature_dim}"
            )
        self.feature_dim = self.encoder.feature_dim
        self.last_latency_ms: dict[str, float] = {}

    @property
    def text_encoder(self) -> TextEncoder:
        return self.encoder

    def process(self, frame: Frame) -> KeyframeSemantics:
        from lang3d_ros.semantics.sam_masks import segmentation_map

        frame.validate()
        t0 = time.perf_counter()
        sets = self.generator.generate(frame.rgb)
        _sync(self.device)
        t1 = time.perf_counter()
        counts = [len(s) for s in sets]
        all_masks = torch.cat([s.masks for s in sets]) if sum(counts) else sets[0].masks
        feats = self.encoder.encode_images(mask_crops(frame.rgb, all_masks, self.encoder.image_size))
        _sync(self.device)
        t2 = time.perf_counter()
        levels = []
        start = 0
        for s, n in zip(sets, counts):
            if n == 0:
                levels.append(LevelMasks.empty(frame.height, frame.width, self.feature_dim))
                continue
            levels.append(
                LevelMasks(
                    seg_map=segmentation_map(s.masks).cpu().numpy(),
                    features=feats[start : start + n].cpu().numpy().astype(np.float32),
                    scores=s.iou_preds.cpu().numpy().astype(np.float32),
                )
            )
            start += n
        t3 = time.perf_counter()
        self.last_latency_ms = {"masks_ms": (t1 - t0) * 1e3, "embed_ms": (t2 - t1) * 1e3, "total_ms": (t3 - t0) * 1e3}
        logger.debug("keyframe %d: masks per level %s, %s", frame.index, counts, self.last_latency_ms)
        return KeyframeSemantics(levels=(levels[0], levels[1], levels[2]))


class GroundTruthSemantics:
    """EVALUATION TOOL for synthetic scenes: masks from ``frame.instance_map``, each embedded as the text of its
    ground-truth label (optionally "<color> <label>") through ``text_encoder``, cached per text.

    Levels: subpart = part = the object instance (synthetic scenes have no parts); whole = the instance's root
    in ``part_of`` (child id -> parent id), i.e. the union of an object and everything declared part of it,
    labelled with the root's label (identical to the instance level when ``part_of`` is empty).
    Instance ids absent from ``instance_labels`` (e.g. -1 = nothing, or 0 = room structure unless it is given
    a label) map to -1. It cannot see anything a real camera would add (unlabelled clutter).

    With ``mask_noise`` enabled, each level of each keyframe goes through ``MaskNoise`` (semantics/mask_noise.py):
    missed, merged, split and jittered masks, confused labels and feature noise, seeded by (seed, frame.index,
    level); ``last_noise_reports`` holds the three levels' counts of the latest ``process``.
    """

    def __init__(
        self,
        instance_labels: dict[int, str],
        text_encoder: TextEncoder,
        instance_colors: dict[int, str] | None = None,
        color_in_label: bool = False,
        part_of: dict[int, int] | None = None,
        min_mask_area_px: int = 1,
        mask_noise: MaskNoiseConfig | None = None,
    ) -> None:
        if not isinstance(instance_labels, dict) or not all(
            isinstance(k, (int, np.integer)) and isinstance(v, str) for k, v in instance_labels.items()
        ):
            raise ValueError("instance_labels must be a dict {instance_id: label}")
        if color_in_label and not instance_colors:
            raise ValueError("color_in_label needs instance_colors {instance_id: color_name}")
        self.instance_labels = {int(k): v for k, v in instance_labels.items()}
        self.instance_colors = {int(k): v for k, v in (instance_colors or {}).items()}
        self.color_in_label = color_in_label
        self.part_of = {int(k): int(v) for k, v in (part_of or {}).items()}
        self.root = {i: self._root_of(i) for i in self.instance_labels}
        self.text_encoder = text_encoder
        self.feature_dim = int(text_encoder.feature_dim)
        self.min_mask_area_px = min_mask_area_px
        self._cache: dict[str, np.ndarray] = {}
        self.noise = MaskNoise(mask_noise) if mask_noise is not None and mask_noise.enabled else None
        if self.noise is not None:
            logger.info("ground-truth semantics with the mask-noise model (seed %d)", mask_noise.seed)
        self.last_noise_reports: list[MaskNoiseReport] = []

    def _root_of(self, iid: int) -> int:
        seen = {iid}
        while iid in self.part_of:
            iid = self.part_of[iid]
            if iid in seen:
                raise ValueError(f"part_of has a cycle through instance {iid}")
            seen.add(iid)
        return iid

    def text_of(self, instance_id: int) -> str:
        label = self.instance_labels[instance_id]
        color = self.instance_colors.get(instance_id, "")
        return f"{color} {label}" if self.color_in_label and color else label

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(N, D) float32 cached text embeddings."""
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            for t, row in zip(missing, self.text_encoder.encode_text(missing).cpu().numpy()):
                self._cache[t] = row.astype(np.float32)
        if not texts:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def _maskable(self, ids_map: np.ndarray) -> np.ndarray:
        """(H,W) int64 -> (H,W) int64 with -1 where no mask may be (unlabelled ids, instances below min area)."""
        ids, counts = np.unique(ids_map, return_counts=True)
        ok = np.array(
            [
                i
                for i, c in zip(ids.tolist(), counts.tolist())
                if i in self.instance_labels and c >= self.min_mask_area_px
            ],
            dtype=np.int64,
        )
        return np.where(np.isin(ids_map, ok), ids_map, -1)

    def _noisy_level(self, ids_map: np.ndarray, level: int, frame_index: int) -> LevelMasks:
        ids_map = self._maskable(ids_map)
        present = [int(i) for i in np.unique(ids_map) if i >= 0]
        labels = {i: self.instance_labels[i] for i in present}
        texts = {i: self.text_of(i) for i in present}
        level_masks, report = self.noise.apply(
            ids_map, level, frame_index, labels, texts, self.embed_texts, self.feature_dim
        )
        self.last_noise_reports.append(report)
        return level_masks

    def _level(self, ids_map: np.ndarray) -> LevelMasks:
        h, w = ids_map.shape
        ids, counts = np.unique(ids_map, return_counts=True)
        ids = np.array(
            [
                i
                for i, c in zip(ids.tolist(), counts.tolist())
                if i in self.instance_labels and c >= self.min_mask_area_px
            ],
            dtype=np.int64,
        )
        if ids.size == 0:
            return LevelMasks.empty(h, w, self.feature_dim)
        pos = np.clip(np.searchsorted(ids, ids_map), 0, ids.size - 1)
        seg = np.where(ids[pos] == ids_map, pos, -1).astype(np.int32)
        texts = [self.text_of(int(i)) for i in ids]
        return LevelMasks(
            seg_map=seg,
            features=self.embed_texts(texts),
            scores=np.ones(ids.size, dtype=np.float32),
            labels=texts,
            instance_ids=ids,
        )

    def process(self, frame: Frame) -> KeyframeSemantics:
        frame.validate()
        inst = frame.instance_map
        if inst is None:
            raise ValueError("GroundTruthSemantics needs frame.instance_map (synthetic frames only)")
        if not np.issubdtype(inst.dtype, np.integer):
            raise ValueError(f"instance_map must be an integer array, got {inst.dtype}")
        inst = inst.astype(np.int64)
        whole_ids = inst
        if self.part_of:
            lut_ids = np.array(sorted(self.root), dtype=np.int64)
            lut_roots = np.array([self.root[i] for i in lut_ids], dtype=np.int64)
            pos = np.clip(np.searchsorted(lut_ids, inst), 0, lut_ids.size - 1)
            whole_ids = np.where(lut_ids[pos] == inst, lut_roots[pos], -1)
        if self.noise is not None:
            self.last_noise_reports = []
            levels = tuple(self._noisy_level(m, k, frame.index) for k, m in enumerate((inst, inst, whole_ids)))
            return KeyframeSemantics(levels=levels)  # type: ignore[arg-type]
        instance_level = self._level(inst)
        whole = self._level(whole_ids) if self.part_of else instance_level
        return KeyframeSemantics(levels=(instance_level, instance_level, whole))


def build_semantics_backend(
    config: SemanticsConfig,
    instance_labels: dict[int, str] | None = None,
    instance_colors: dict[int, str] | None = None,
    part_of: dict[int, int] | None = None,
    device: str | torch.device | None = None,
) -> SemanticsBackend:
    """The backend named by ``config.backend``; ground_truth needs ``instance_labels`` (synthetic scenes)."""
    config.validate()
    if config.backend == "sam_clip":
        return SamClipSemantics(config, device=device)
    if instance_labels is None:
        raise ValueError("the ground_truth backend needs instance_labels {instance_id: label} from the synthetic scene")
    return GroundTruthSemantics(
        instance_labels,
        build_text_encoder(config, device),
        instance_colors,
        config.gt_color_in_label,
        part_of,
        config.min_mask_area_px,
        config.mask_noise,
    )
