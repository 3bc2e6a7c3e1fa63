"""Per-scene autoencoder: incremental training reconstructs a scene's real (MiniLM) features."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lang3d_ros.semantics.autoencoder import SceneAutoencoder
from lang3d_ros.semantics.config import AutoencoderConfig
from lang3d_ros.semantics.encoders import MiniLMTextEncoder

SCENE = [
    "chair",
    "red chair",
    "table",
    "sofa",
    "floor lamp",
    "coffee mug",
    "book",
    "potted plant",
    "floor",
    "wall",
    "bed",
    "television",
    "laptop",
    "water bottle",
    "bookshelf",
    "door",
    "window",
    "rug",
    "pillow",
    "wall clock",
]


@pytest.fixture(scope="module")
def scene_features() -> torch.Tensor:
    return MiniLMTextEncoder(device="cpu").encode_text(SCENE)


def keyframes(features: torch.Tensor, n_frames: int = 5, seed: int = 0):
    """Each keyframe sees a few objects several times, with small view-dependent noise (like mask crops)."""
    g = torch.Generator().manual_seed(seed)
    for k in range(n_frames):
        idx = torch.randint(0, features.shape[0], (12,), generator=g)
        idx[:4] = torch.arange(4 * k, 4 * k + 4) % features.shape[0]  # every object appears at least once
        yield F.normalize(features[idx] + 0.02 * torch.randn(12, features.shape[1], generator=g), dim=-1)


def test_incremental_training_reconstructs_scene(scene_features) -> None:
    ae = SceneAutoencoder(384, AutoencoderConfig(batch_size=64), device="cpu", seed=0)
    assert ae.latent_dim == 3
    first = 0.0
    for feats in keyframes(scene_features):
        ae.add_features(feats)
        ae.train_steps(80)
        first = first or ae.reconstruction_report(scene_features)["mean_cosine"]
    ae.train_steps(600)
    report = ae.reconstruction_report(scene_features)
    assert report["mean_cosine"] >= 0.9 and report["mean_cosine"] > first, report
    assert report["min_cosine"] >= 0.75, report
    assert report["num_features"] == len(SCENE)
    z = ae.encode(scene_features)
    assert z.shape == (len(SCENE), 3) and torch.allclose(z.norm(dim=1), torch.ones(len(SCENE)), atol=1e-5)
    assert ae.decode(z).shape == (len(SCENE), 384)


def test_untrained_reconstruction_is_poor(scene_features) -> None:
    ae = SceneAutoencoder(384, device="cpu", seed=0)
    assert ae.reconstruction_report(scene_features)["mean_cosine"] < 0.5


def test_state_dict_roundtrip(tmp_path, scene_features) -> None:
    ae = SceneAutoencoder(384, AutoencoderConfig(batch_size=16), device="cpu", seed=1)
    ae.add_features(scene_features)
    ae.train_steps(20)
    torch.save(ae.state_dict(), tmp_path / "ae.pt")
    other = SceneAutoencoder(384, AutoencoderConfig(batch_size=16), device="cpu", seed=2)
    other.load_state_dict(torch.load(tmp_path / "ae.pt", weights_only=True))
    assert torch.equal(other.encode(scene_features), ae.encode(scene_features))
    assert other.steps_done == 20
    wrong = SceneAutoencoder(512, device="cpu")
    before = [p.clone() for p in wrong.model.parameters()]
    with pytest.raises(ValueError, match="sizes differ"):
        wrong.load_state_dict(ae.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(before, wrong.model.parameters()))


def test_replay_buffer_is_bounded() -> None:
    ae = SceneAutoencoder(
        8, AutoencoderConfig(encoder_dims=[4, 3], decoder_dims=[4, 8], batch_size=4, buffer_size=10), device="cpu"
    )
    assert ae.add_features(torch.randn(6, 8)) == 6
    assert ae.add_features(torch.randn(30, 8)) == 10
    assert ae.num_seen == 36
    assert torch.allclose(ae.buffer.norm(dim=1), torch.ones(10), atol=1e-5)


def test_bad_input_changes_nothing() -> None:
    ae = SceneAutoencoder(
        8, AutoencoderConfig(encoder_dims=[4, 3], decoder_dims=[4, 8], batch_size=4, buffer_size=10), device="cpu"
    )
    with pytest.raises(ValueError, match="at least 2"):
        ae.train_steps(5)
    ae.add_features(torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        ae.add_features(torch.randn(3, 7))
    bad = torch.randn(3, 8)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ae.add_features(bad)
    assert ae.num_buffered == 3 and ae.num_seen == 3
    with pytest.raises(ValueError, match="latent"):
        ae.decode(torch.randn(2, 4))
    with pytest.raises(ValueError):
        SceneAutoencoder(8, AutoencoderConfig(batch_size=1), device="cpu")
