"""3D and 2D language queries: a label's Gaussians score highest, codebook vs exact, level choice, LERF map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lang3d_ros.gaussians.config import GaussianConfig
from lang3d_ros.gaussians.model import GaussianModel
from lang3d_ros.gaussians.query import LanguageQueryEngine, kmeans

LABELS = ["chair", "table", "lamp", "plant"]
WORDS = LABELS + ["object", "things", "stuff", "texture"]
D = 16


class StandInTextEncoder:
    """Each known word -> a fixed random unit vector in R^16 (stands in for CLIP's text tower)."""

    def __init__(self):
        g = torch.Generator().manual_seed(42)
        self.table = dict(zip(WORDS, F.normalize(torch.randn(len(WORDS), D, generator=g), dim=-1)))
        self.calls = 0

    def encode_text(self, texts):
        self.calls += 1
        return torch.stack([self.table[t] for t in texts])


def _decoder_and_anchors(enc: StandInTextEncoder):
    """A small MLP decoder trained so that anchor latent i decodes to word i's feature."""
    torch.manual_seed(0)
    anchors = {w: z for w, z in zip(LABELS + ["stuff"], F.normalize(torch.randn(5, 3), dim=-1) * 2)}
    dec = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.ReLU(), torch.nn.Linear(64, D))
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    z = torch.stack(list(anchors.values()))
    target = torch.stack([enc.table[w] for w in anchors])
    for _ in range(400):
        opt.zero_grad()
        loss = (1 - F.cosine_similarity(dec(z), target)).mean()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-3
    return dec.eval(), anchors


def _scene(anchors, per_cluster=60):
    """Four object clusters on a line at y = 0, x = -1.5..1.5; level 2 (whole) carries the object's latent,
    levels 0-1 carry 'stuff'. Latents get small noise."""
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[-1.5, 0.0, 0.0], [-0.5, 0.0, 0.0], [0.5, 0.0, 0.0], [1.5, 0.0, 0.0]])
    means = torch.cat([c + 0.1 * torch.randn(per_cluster, 3, generator=g) for c in centres])
    labels = torch.arange(4).repeat_interleave(per_cluster)
    n = means.shape[0]
    lat = torch.empty(n, 3, 3)
    lat[:, :2] = anchors["stuff"]
    lat[:, 2] = torch.stack([anchors[LABELS[i]] for i in labels.tolist()])
    lat = lat + 0.03 * torch.randn(lat.shape, generator=g)
    pts = means.numpy()
    model = GaussianModel.from_points(pts, np.full((n, 3), 0.5), config=GaussianConfig(init_opacity=0.9), device="cpu")
    model.params["latents"] = lat
    return model, labels


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(0)
    truth = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    x = torch.cat([t + 0.1 * torch.randn(100, 2, generator=g) for t in truth])
    centers, assign = kmeans(x, 3, iterations=10)
    assert torch.cdist(truth, centers).min(1).values.max() < 0.1
    assert all(len(set(assign[i * 100 : (i + 1) * 100].tolist())) == 1 for i in range(3))
    with pytest.raises(ValueError):
        kmeans(torch.zeros(0, 2), 3)


@pytest.mark.parametrize("exact", [False, True])
def test_query_puts_the_named_objects_gaussians_highest(exact):
    enc = StandInTextEncoder()
    dec, anchors = _decoder_and_anchors(enc)
    model, labels = _scene(anchors)
    engine = LanguageQueryEngine(model.latents, dec, enc, codebook_size=32, device="cpu")
    for i, name in enumerate(LABELS):
        res = engine.query(name, exact=exact)
        assert res.level_name == "whole"
        ours, others = res.relevancy[labels == i], res.relevancy[labels != i]
        assert ours.min() > others.max(), name
        assert ours.min() > 0.5 and res.per_level[0].max() < 0.5
    calls = enc.calls
    engine.query("chair")
    assert enc.calls == calls  # text embeddings are cached
    err = engine.codebook_error(LABELS)
    assert err["max_abs"] < 0.05 and err["level_agreement"] == 1.0
    with pytest.raises(ValueError, match="non-empty"):
        engine.query("  ")
    with pytest.raises(ValueError, match="level"):
        engine.query("chair", level=3)


def test_codebook_error_grows_when_the_codebook_is_too_small():
    enc = StandInTextEncoder()
    dec, anchors = _decoder_and_anchors(enc)
    model, _ = _scene(anchors)
    fine = LanguageQueryEngine(model.latents, dec, enc, codebook_size=64, device="cpu").codebook_error(LABELS)
    coarse = LanguageQueryEngine(model.latents, dec, enc, codebook_size=2, device="cpu").codebook_error(LABELS)
    assert coarse["mean_abs"] > 5 * fine["mean_abs"]


def test_relevancy_map_localizes_the_object_in_the_image():
    enc = StandInTextEncoder()
    dec, anchors = _decoder_and_anchors(enc)
    model, _ = _scene(anchors)
    engine = LanguageQueryEngine(model.latents, dec, enc, codebook_size=0, device="cpu")
    # camera 4 m in front (at y = -4) looking along +y; image x grows with world x
    viewmat = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 4.0], [0, 0, 0, 1]])
    W, H = 64, 32
    K = torch.tensor([[40.0, 0, 31.5], [0, 40.0, 15.5], [0, 0, 1]])
    cfg = GaussianConfig(backend="torch")
    for i, name in enumerate(LABELS):
        maps, level = engine.relevancy_map(model, viewmat, K, W, H, name, cfg)
        assert maps.shape == (3, H, W) and level == 2
        col = int(maps[level].argmax()) % W
        expect_col = 31.5 + 40.0 * (-1.5 + i) / 4.0
        assert abs(col - expect_col) < 6, (name, col, expect_col)
