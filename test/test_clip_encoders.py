"""CLIP (open_clip and transformers, tiny random checkpoints), MiniLM (real weights) and the per-mask crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lang3d_ros.semantics.crops import mask_boxes, mask_crops
from lang3d_ros.semantics.device import MissingModelError
from lang3d_ros.semantics.encoders import (
    CLIP_MEAN,
    CLIP_STD,
    HFClipEncoder,
    ImageEncoder,
    MiniLMTextEncoder,
    OpenClipEncoder,
    TextEncoder,
)
from lang3d_ros.testing.tiny_models import TINY_CLIP_DIM, TINY_CLIP_IMAGE_SIZE, save_tiny_hf_clip, save_tiny_open_clip


@pytest.fixture(scope="module")
def open_clip_dir(tmp_path_factory):
    return save_tiny_open_clip(tmp_path_factory.mktemp("oc"), seed=1)


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory):
    return save_tiny_hf_clip(tmp_path_factory.mktemp("hf"), seed=2)


@pytest.fixture(scope="module")
def minilm():
    return MiniLMTextEncoder(device="cpu")


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)


def test_open_clip_matches_direct_model(open_clip_dir) -> None:
    import open_clip

    enc = OpenClipEncoder(checkpoint=str(open_clip_dir), device="cpu", image_size=TINY_CLIP_IMAGE_SIZE, batch_size=3)
    assert isinstance(enc, ImageEncoder) and enc.feature_dim == TINY_CLIP_DIM
    ref = open_clip.create_model(f"local-dir:{open_clip_dir}").eval()
    tok = open_clip.get_tokenizer(f"local-dir:{open_clip_dir}")
    texts = ["a red chair", "table", "object"]
    got = enc.encode_text(texts)
    with torch.no_grad():
        want = F.normalize(ref.encode_text(tok(texts)), dim=-1)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(got.norm(dim=1), torch.ones(3), atol=1e-5)
    crops = torch.rand(7, 3, TINY_CLIP_IMAGE_SIZE, TINY_CLIP_IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = F.normalize(ref.encode_image(_normalise(crops)), dim=-1)
    assert torch.allclose(enc.encode_images(crops), want, atol=1e-5)  # batched in 3+3+1
    assert enc.encode_images(crops[:0]).shape == (0, TINY_CLIP_DIM)


def test_hf_clip_matches_direct_model(hf_clip_dir) -> None:
    from transformers import CLIPModel, CLIPTokenizer

    enc = HFClipEncoder(str(hf_clip_dir), device="cpu", batch_size=2)
    assert enc.image_size == TINY_CLIP_IMAGE_SIZE and enc.feature_dim == TINY_CLIP_DIM
    ref = CLIPModel.from_pretrained(str(hf_clip_dir)).eval()
    tok = CLIPTokenizer.from_pretrained(str(hf_clip_dir))
    assert tok("a chair")["input_ids"][0] == 49406  # CLIP's real <|startoftext|>
    texts = ["a chair", "a much longer description of a wooden table"]
    t = tok(texts, padding=True, return_tensors="pt")
    crops = torch.rand(3, 3, TINY_CLIP_IMAGE_SIZE, TINY_CLIP_IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want_t = F.normalize(ref.get_text_features(**t).pooler_output, dim=-1)
        want_i = F.normalize(ref.get_image_features(pixel_values=_normalise(crops)).pooler_output, dim=-1)
    assert torch.allclose(enc.encode_text(texts), want_t, atol=1e-5)
    assert torch.allclose(enc.encode_images(crops), want_i, atol=1e-5)


def test_missing_weights_name_what_to_download(tmp_path) -> None:
    with pytest.raises(MissingModelError, match="CLIP-ViT-B-16-laion2B-s34B-b88K"):
        OpenClipEncoder("ViT-B-16", "laion2b_s34b_b88k", "", device="cpu", cache_dir=str(tmp_path))
    with pytest.raises(MissingModelError, match="semantics.clip.checkpoint"):
        OpenClipEncoder(checkpoint=str(tmp_path / "none.bin"), device="cpu")
    with pytest.raises(MissingModelError, match="config.json"):
        HFClipEncoder(str(tmp_path), device="cpu")


def test_bad_encoder_input(open_clip_dir) -> None:
    enc = OpenClipEncoder(checkpoint=str(open_clip_dir), device="cpu", image_size=TINY_CLIP_IMAGE_SIZE)
    with pytest.raises(ValueError, match="32x32"):
        enc.encode_images(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="list of str"):
        enc.encode_text("chair")
    with pytest.raises(ValueError, match="image_size"):
        OpenClipEncoder(checkpoint=str(open_clip_dir), device="cpu", image_size=224)


def test_minilm_gives_real_semantic_similarity(minilm) -> None:
    assert isinstance(minilm, TextEncoder) and minilm.feature_dim == 384
    e = minilm.encode_text(["a red chair", "chair", "armchair", "banana", "kitchen sink"])
    assert e.shape == (5, 384) and torch.allclose(e.norm(dim=1), torch.ones(5), atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 3] + 0.3 and sim[1, 2] > sim[1, 3] and sim[1, 2] > sim[1, 4]
    single = minilm.encode_text(["armchair"])[0]
    assert torch.allclose(single, e[2], atol=1e-5)  # padding in a batch does not change an embedding
    assert minilm.encode_text([]).shape == (0, 384)


def test_crops_reference_and_layout() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    masks = torch.zeros((3, 50, 60), dtype=torch.bool)
    masks[0, 5:37, 10:42] = True  # 32x32 box -> identity resize
    masks[0, 20, 20] = False  # a background pixel inside the box
    masks[1, 10:18, 4:36] = True  # 32 wide, 8 high -> centred, padded rows above/below
    assert mask_boxes(masks).tolist() == [[10, 5, 42, 37], [4, 10, 36, 18], [0, 0, 0, 0]]
    crops = mask_crops(rgb, masks, size=32)
    assert crops.shape == (3, 3, 32, 32)
    want0 = torch.from_numpy(rgb[5:37, 10:42]).permute(2, 0, 1).float() / 255 * masks[0, 5:37, 10:42]
    assert torch.allclose(crops[0], want0, atol=1e-6)
    assert float(crops[0][:, 15, 10].abs().sum()) == 0.0  # zeroed background
    want1 = torch.zeros(3, 32, 32)
    want1[:, 12:20, :] = torch.from_numpy(rgb[10:18, 4:36]).permute(2, 0, 1).float() / 255
    assert torch.allclose(crops[1], want1, atol=1e-6)
    assert float(crops[2].abs().sum()) == 0.0  # empty mask
    big = mask_crops(rgb, torch.ones((1, 50, 60), dtype=torch.bool), size=16)  # downsampled with antialiasing
    assert abs(float(big.mean()) - float(rgb.mean() / 255) * 50 / 60) < 0.03
    with pytest.raises(ValueError, match="uint8"):
        mask_crops(rgb.astype(np.float32), masks)
    with pytest.raises(ValueError, match="matching"):
        mask_crops(rgb, masks[:, :10])
