"""Tiny randomly initialised SAM and CLIP checkpoints, written in the formats the real loaders read.

For tests and demos on machines without model weights: the code paths (loading, batching, masks, crops,
embeddings) are the real ones; the outputs are meaningless (random weights). They cannot stand in for
accuracy figures. Everything is deterministic given ``seed``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lang3d_ros.semantics.config import SemanticsConfig

TINY_SAM_ARCH = dict(
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=[1],
    image_size=64,
    patch_size=8,
    window_size=4,
    prompt_embed_dim=32,
    decoder_depth=1,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
    mask_in_chans=4,
)
TINY_CLIP_IMAGE_SIZE = 32
TINY_CLIP_DIM = 32
TINY_OPEN_CLIP_CFG = {
    "embed_dim": TINY_CLIP_DIM,
    "vision_cfg": {"image_size": TINY_CLIP_IMAGE_SIZE, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def save_tiny_sam(path: str | Path, seed: int = 0) -> Path:
    """Write a ``{"arch", "model"}`` SAM checkpoint (load with model_type "custom"); returns the path."""
    from lang3d_ros.semantics.sam_masks import build_sam_from_arch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    sam = build_sam_from_arch(TINY_SAM_ARCH)
    torch.save({"arch": dict(TINY_SAM_ARCH), "model": sam.state_dict()}, path)
    return path


def save_tiny_open_clip(folder: str | Path, seed: int = 0) -> Path:
    """Write open_clip's local-dir layout (open_clip_config.json + open_clip_pytorch_model.bin); returns the folder."""
    import open_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_OPEN_CLIP_CFG)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_OPEN_CLIP_CFG, "preprocess_cfg": {}}, indent=1)
    )
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def _write_clip_tokenizer_files(folder: Path) -> None:
    """CLIP's real BPE vocabulary (open_clip ships it) as Hugging Face vocab.json / merges.txt."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {rename.get(k, k): v for k, v in tok.encoder.items()}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    merges = sorted(tok.bpe_ranks.items(), key=lambda kv: kv[1])
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for (a, b), _ in merges) + "\n")


def save_tiny_hf_clip(folder: str | Path, seed: int = 0) -> Path:
    """Write a transformers CLIPModel folder (config, safetensors, CLIP tokenizer files); returns the folder."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=32,
        ),
        vision_config=dict(
            image_size=TINY_CLIP_IMAGE_SIZE,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
        ),
        projection_dim=TINY_CLIP_DIM,
    )
    CLIPModel(cfg).save_pretrained(folder)
    _write_clip_tokenizer_files(folder)
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    return folder


def tiny_semantics_config(folder: str | Path, clip_backend: str = "open_clip", seed: int = 0) -> SemanticsConfig:
    """Write tiny SAM + CLIP checkpoints under ``folder`` and return a sam_clip SemanticsConfig that uses them
    on CPU, with a small point grid, no crops and filters opened so that random weights still yield masks."""
    folder = Path(folder)
    sam_path = folder / "tiny_sam.pth"
    if not sam_path.is_file():
        save_tiny_sam(sam_path, seed)
    if clip_backend == "open_clip":
        clip_dir = folder / "tiny_open_clip"
        if not (clip_dir / "open_clip_config.json").is_file():
            save_tiny_open_clip(clip_dir, seed)
    else:
        clip_dir = folder / "tiny_hf_clip"
        if not (clip_dir / "config.json").is_file():
            save_tiny_hf_clip(clip_dir, seed)
    cfg = SemanticsConfig(backend="sam_clip", device="cpu", feature_dim=TINY_CLIP_DIM)
    cfg.sam.model_type = "custom"
    cfg.sam.checkpoint = str(sam_path)
    cfg.sam.points_per_side = 8
    cfg.sam.crop_n_layers = 0
    cfg.sam.pred_iou_thresh = 0.0
    cfg.sam.stability_score_thresh = 0.0
    cfg.sam.mask_nms_score = 0.0
    cfg.sam.min_mask_region_area = 20
    cfg.clip.backend = clip_backend
    cfg.clip.checkpoint = str(clip_dir)
    cfg.clip.image_size = TINY_CLIP_IMAGE_SIZE
    cfg.validate()
    return cfg
