"""SAM masks at LangSplat's three levels: subpart / part / whole = SAM's multimask outputs 0 / 1 / 2.

The generator follows segment-anything's automatic generator (point grid over the image and its crops, predicted
IoU and stability filters, box NMS inside a crop, crop NMS preferring smaller crops, small-region clean-up), but
keeps the three outputs of every point apart, as LangSplat does, and then applies LangSplat's mask NMS per level
(vectorised, ``mask_nms``). Masks stay boolean tensors on the model's device (no RLE round trip).
It cannot run on images larger than 32767 px a side (SAM's int16 stability sums).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from scipy import ndimage
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.predictor import SamPredictor
from segment_anything.utils.amg import (
    batched_mask_to_box,
    build_all_layer_point_grids,
    calculate_stability_score,
    generate_crop_boxes,
    is_box_near_crop_edge,
    uncrop_boxes_xyxy,
)
from torchvision.ops import batched_nms, box_area

from lang3d_ros.semantics.config import SamConfig
from lang3d_ros.semantics.device import MissingModelError
from lang3d_ros.semantics.mask_nms import mask_nms

logger = logging.getLogger(__name__)

NUM_LEVELS = 3
SAM_URLS = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}
_REGISTRY_ARCHS = {
    "vit_h": dict(
        encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16, encoder_global_attn_indexes=[7, 15, 23, 31]
    ),
    "vit_l": dict(
        encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16, encoder_global_attn_indexes=[5, 11, 17, 23]
    ),
    "vit_b": dict(
        encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12, encoder_global_attn_indexes=[2, 5, 8, 11]
    ),
}
_ARCH_DEFAULTS = dict(
    image_size=1024,
    patch_size=16,
    window_size=14,
    prompt_embed_dim=256,
    decoder_depth=2,
    decoder_mlp_dim=2048,
    decoder_num_heads=8,
    iou_head_hidden_dim=256,
    mask_in_chans=16,
)


def sam_arch(model_type: str) -> dict:
    """Architecture dict of a registry model (vit_h | vit_l | vit_b), the format ``build_sam_from_arch`` reads."""
    if model_type not in _REGISTRY_ARCHS:
        raise ValueError(f"unknown SAM model_type {model_type!r}; known: {sorted(_REGISTRY_ARCHS)} or 'custom'")
    return {**_ARCH_DEFAULTS, **_REGISTRY_ARCHS[model_type]}


def build_sam_from_arch(arch: dict) -> Sam:
    """segment-anything's own modules at any size (random weights); keys: see ``_ARCH_DEFAULTS`` and vit_* entries."""
    a = {**_ARCH_DEFAULTS, **arch}
    unknown = set(a) - set(_ARCH_DEFAULTS) - set(_REGISTRY_ARCHS["vit_b"])
    if unknown:
        raise ValueError(f"unknown SAM arch keys {sorted(unknown)}")
    if a["image_size"] % a["patch_size"]:
        raise ValueError(f"image_size {a['image_size']} must be a multiple of patch_size {a['patch_size']}")
    grid = a["image_size"] // a["patch_size"]
    d = a["prompt_embed_dim"]
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=a["encoder_depth"],
            embed_dim=a["encoder_embed_dim"],
            img_size=a["image_size"],
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=a["encoder_num_heads"],
            patch_size=a["patch_size"],
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=list(a["encoder_global_attn_indexes"]),
            window_size=a["window_size"],
            out_chans=d,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=d,
            image_embedding_size=(grid, grid),
            input_image_size=(a["image_size"], a["image_size"]),
            mask_in_chans=a["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=a["decoder_depth"],
                embedding_dim=d,
                mlp_dim=a["decoder_mlp_dim"],
                num_heads=a["decoder_num_heads"],
            ),
            transformer_dim=d,
            iou_head_depth=3,
            iou_head_hidden_dim=a["iou_head_hidden_dim"],
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def load_sam(model_type: str, checkpoint: str, device: torch.device) -> Sam:
    """Build SAM and load its weights.

    model_type vit_h | vit_l | vit_b: ``checkpoint`` is Meta's state-dict file (sam_vit_h_4b8939.pth, ...).
    model_type custom: ``checkpoint`` is ``{"arch": dict, "model": state_dict}`` (``lang3d_ros.testing.tiny_models``).
    Raises MissingModelError (a FileNotFoundError) naming the file to download when the checkpoint is absent.
    """
    from pathlib import Path

    if model_type != "custom":
        sam_arch(model_type)  # validates the name
    if not checkpoint or not Path(checkpoint).is_file():
        url = SAM_URLS.get(model_type, "a {'arch', 'model'} file (see lang3d_ros.testing.tiny_models)")
        raise MissingModelError(
            f"SAM checkpoint {checkpoint!r} not found for model_type {model_type!r}: download {url} "
            f"and set semantics.sam.checkpoint to its path"
        )
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if model_type == "custom":
        if not isinstance(state, dict) or "arch" not in state or "model" not in state:
            raise ValueError(f"{checkpoint}: a custom SAM checkpoint must hold 'arch' and 'model'")
        sam = build_sam_from_arch(state["arch"])
        state = state["model"]
    else:
        sam = build_sam_from_arch(sam_arch(model_type))
    sam.load_state_dict(state)
    logger.info("loaded SAM %s from %s on %s", model_type, checkpoint, device)
    return sam.to(device).eval()


@dataclass
class MaskSet:
    """Masks of one level of one image.

    masks: (M, H, W) bool; iou_preds, stability: (M,) float32; boxes_xyxy: (M, 4) int64 inclusive pixel box;
    crop_boxes: (M, 4) int64 crop each mask came from. ``scores`` = iou_preds * stability (LangSplat's NMS score).
    """

    masks: torch.Tensor
    iou_preds: torch.Tensor
    stability: torch.Tensor
    boxes_xyxy: torch.Tensor
    crop_boxes: torch.Tensor

    @staticmethod
    def empty(height: int, width: int, device: torch.device | str = "cpu") -> "MaskSet":
        z = partial(torch.zeros, device=device)
        return MaskSet(
            z((0, height, width), dtype=torch.bool),
            z(0),
            z(0),
            z((0, 4), dtype=torch.long),
            z((0, 4), dtype=torch.long),
        )

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def scores(self) -> torch.Tensor:
        return self.iou_preds * self.stability

    def select(self, keep: torch.Tensor) -> "MaskSet":
        return MaskSet(
            self.masks[keep], self.iou_preds[keep], self.stability[keep], self.boxes_xyxy[keep], self.crop_boxes[keep]
        )

    @staticmethod
    def cat(sets: list["MaskSet"], height: int, width: int, device: torch.device) -> "MaskSet":
        if not sets:
            return MaskSet.empty(height, width, device)
        return MaskSet(
            *(
                torch.cat([getattr(s, f) for s in sets])
                for f in ("masks", "iou_preds", "stability", "boxes_xyxy", "crop_boxes")
            )
        )


def remove_small_regions(mask: np.ndarray, min_area: int, fill_holes: bool) -> tuple[np.ndarray, bool]:
    """(H, W) bool -> (mask, changed): fill holes (or drop islands) smaller than ``min_area`` px, 8-connectivity.

    Dropping islands keeps the largest one when all are small (segment-anything's rule).
    """
    work = ~mask if fill_holes else mask
    labels, n = ndimage.label(work, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return mask, False
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    small = sizes < min_area
    if not small.any():
        return mask, False
    if fill_holes:
        return mask | np.isin(labels, np.flatnonzero(small) + 1), True
    keep = np.flatnonzero(~small) + 1
    if keep.size == 0:
        keep = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(labels, keep), True


class LevelMaskGenerator:
    """SAM automatic masks per level: ``generate(rgb) -> (subpart, part, whole)`` MaskSets.

    Not thread-safe (SamPredictor holds the current image); one generator per worker.
    """

    def __init__(self, sam: Sam, config: SamConfig) -> None:
        self.predictor = SamPredictor(sam)
        self.config = config
        self.point_grids = build_all_layer_point_grids(
            config.points_per_side, config.crop_n_layers, config.crop_n_points_downscale_factor
        )

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    @torch.no_grad()
    def generate(self, rgb: np.ndarray) -> tuple[MaskSet, MaskSet, MaskSet]:
        """rgb (H, W, 3) uint8 -> three MaskSets (subpart, part, whole), each after LangSplat's mask NMS."""
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(
                f"rgb must be (H,W,3) uint8, got {getattr(rgb, 'shape', None)} {getattr(rgb, 'dtype', None)}"
            )
        h, w = rgb.shape[:2]
        if min(h, w) < 8 or max(h, w) > 32767:
            raise ValueError(f"image {w}x{h} outside the supported 8..32767 px per side")
        cfg = self.config
        crop_boxes, layer_idxs = generate_crop_boxes((h, w), cfg.crop_n_layers, cfg.crop_overlap_ratio)
        per_level: list[list[MaskSet]] = [[] for _ in range(NUM_LEVELS)]
        for crop_box, layer in zip(crop_boxes, layer_idxs):
            for lvl, ms in enumerate(self._process_crop(rgb, crop_box, layer)):
                per_level[lvl].append(ms)
        out = []
        for sets in per_level:
            data = MaskSet.cat(sets, h, w, self.device)
            if len(crop_boxes) > 1 and len(data):
                keep = batched_nms(
                    data.boxes_xyxy.float(),
                    1.0 / box_area(data.crop_boxes.float()),
                    torch.zeros(len(data), device=self.device),
                    cfg.box_nms_thresh,
                )
                data = data.select(keep)
            if cfg.min_mask_region_area > 0 and len(data):
                data = self._postprocess_small_regions(data)
            if len(data):
                data = data.select(
                    mask_nms(data.masks, data.scores, cfg.mask_nms_iou, cfg.mask_nms_score, cfg.mask_nms_inner)
                )
            out.append(data)
        return out[0], out[1], out[2]

    def _process_crop(self, rgb: np.ndarray, crop_box: list[int], layer: int) -> list[MaskSet]:
        cfg = self.config
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = crop_box
        crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        self.predictor.set_image(crop)
        points = self.point_grids[layer] * np.array(crop.shape[:2])[None, ::-1]
        sets: list[list[MaskSet]] = [[] for _ in range(NUM_LEVELS)]
        for start in range(0, len(points), cfg.points_per_batch):
            batch = points[start : start + cfg.points_per_batch]
            coords = torch.as_tensor(
                self.predictor.transform.apply_coords(batch, crop.shape[:2]), device=self.device, dtype=torch.float32
            )
            labels = torch.ones(coords.shape[0], dtype=torch.int, device=self.device)
            low_res, iou_preds = self._decode(coords, labels)
            for lvl in range(NUM_LEVELS):
                sets[lvl].append(self._filter_batch(low_res[:, lvl], iou_preds[:, lvl], crop_box, h, w))
        self.predictor.reset_image()
        out = []
        for lvl_sets in sets:
            data = MaskSet.cat(lvl_sets, h, w, self.device)
            if len(data):
                keep = batched_nms(
                    data.boxes_xyxy.float(),
                    data.iou_preds,
                    torch.zeros(len(data), device=self.device),
                    cfg.box_nms_thresh,
                )
                data = data.select(keep)
            out.append(data)
        return out

    def _decode(self, coords: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SamPredictor.predict_torch without its upsampling: (B, 3, 4g, 4g) low-res logits, (B, 3) predicted IoU."""
        model = self.predictor.model
        sparse, dense = model.prompt_encoder(points=(coords[:, None, :], labels[:, None]), boxes=None, masks=None)
        return model.mask_decoder(
            image_embeddings=self.predictor.features,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )

    def _filter_batch(
        self, low_res: torch.Tensor, iou_preds: torch.Tensor, crop_box: list[int], h: int, w: int
    ) -> MaskSet:
        """low_res (B, 4g, 4g) logits, iou_preds (B,) -> filtered MaskSet in full-image coordinates.

        The predicted-IoU filter runs before upsampling (same result as SAM, less work)."""
        cfg = self.config
        thr = self.predictor.model.mask_threshold
        if cfg.pred_iou_thresh > 0.0:  # a threshold of 0 switches a filter off (segment-anything's rule)
            keep = iou_preds > cfg.pred_iou_thresh
            low_res, iou_preds = low_res[keep], iou_preds[keep]
        logits = self.predictor.model.postprocess_masks(
            low_res[:, None], self.predictor.input_size, self.predictor.original_size
        )[:, 0]
        stability = calculate_stability_score(logits, thr, cfg.stability_score_offset).nan_to_num_(0.0)
        if cfg.stability_score_thresh > 0.0:
            keep = stability >= cfg.stability_score_thresh
            logits, iou_preds, stability = logits[keep], iou_preds[keep], stability[keep]
        masks = logits > thr
        boxes = batched_mask_to_box(masks)
        keep = ~is_box_near_crop_edge(boxes, crop_box, [0, 0, w, h])
        masks, iou_preds, stability, boxes = masks[keep], iou_preds[keep], stability[keep], boxes[keep]
        x0, y0, x1, y1 = crop_box
        full = torch.zeros((masks.shape[0], h, w), dtype=torch.bool, device=masks.device)
        full[:, y0:y1, x0:x1] = masks
        crops = torch.tensor([crop_box], dtype=torch.long, device=masks.device).expand(masks.shape[0], 4)
        return MaskSet(
            full, iou_preds.float(), stability.float(), uncrop_boxes_xyxy(boxes, crop_box).long(), crops.clone()
        )

    def _postprocess_small_regions(self, data: MaskSet) -> MaskSet:
        """Fill small holes, drop small islands, then box NMS preferring unchanged masks (segment-anything's rule)."""
        min_area = self.config.min_mask_region_area
        host = data.masks.cpu().numpy()
        unchanged = np.ones(len(data), dtype=np.float32)
        for i in range(len(data)):
            m, c1 = remove_small_regions(host[i], min_area, fill_holes=True)
            m, c2 = remove_small_regions(m, min_area, fill_holes=False)
            if c1 or c2:
                host[i] = m
                unchanged[i] = 0.0
        masks = torch.from_numpy(host).to(self.device)
        boxes = batched_mask_to_box(masks)
        keep = batched_nms(
            boxes.float(),
            torch.from_numpy(unchanged).to(self.device),
            torch.zeros(len(data), device=self.device),
            self.config.box_nms_thresh,
        )
        data = MaskSet(masks, data.iou_preds, data.stability, boxes.long(), data.crop_boxes)
        return data.select(keep)


def segmentation_map(masks: torch.Tensor) -> torch.Tensor:
    """masks (M, H, W) bool -> (H, W) int32 mask id per pixel, -1 where no mask; where masks overlap the
    smallest one wins (masks are painted by decreasing area; of equal areas the higher id wins)."""
    if masks.ndim != 3 or masks.dtype != torch.bool:
        raise ValueError(f"masks must be (M,H,W) bool, got {tuple(masks.shape)} {masks.dtype}")
    seg = torch.full(masks.shape[1:], -1, dtype=torch.int32, device=masks.device)
    if masks.shape[0] == 0:
        return seg
    areas = masks.flatten(1).sum(dim=1)
    order = torch.sort(areas, descending=True, stable=True).indices
    for i in order.tolist():
        seg[masks[i]] = i
    return seg
