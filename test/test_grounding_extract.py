"""Labels of instance features with a stand-in text encoder whose phrase vectors are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lang3d_ros.grounding.config import ExtractionConfig
from lang3d_ros.grounding.extract import classify_segments, text_embeddings

PHRASES = ["chair", "table", "cabinet", "sofa", "shelf", "box", "bed", "desk", "floor", "wall", "ceiling"]


class KnownVectorEncoder:
    """Each phrase in PHRASES is one axis of a 16-d space (plus a shared offset, as CLIP's are not orthogonal)."""

    def vector(self, phrase: str) -> np.ndarray:
        v = np.full(16, 0.2)
        v[PHRASES.index(phrase)] = 1.0
        return v / np.linalg.norm(v)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor(np.stack([self.vector(t) for t in texts]), dtype=torch.float32)


def test_segments_get_their_label_structure_is_marked_by_phrase_and_by_shape():
    enc, rng = KnownVectorEncoder(), np.random.default_rng(0)
    cfg = ExtractionConfig(vocabulary=PHRASES[:8], structure_labels=PHRASES[8:])
    text = text_embeddings(enc, PHRASES)
    names = ["sofa", "chair", "floor", "bed", "desk"]
    feats = np.stack([enc.vector(n) for n in names]) + rng.normal(0, 0.05, (5, 16))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    sizes = np.array([[2.0, 0.9, 0.8], [0.5, 0.5, 0.9], [5.0, 4.0, 0.02], [2.0, 1.6, 0.5], [3.0, 2.6, 0.05]])
    lab = classify_segments(feats, sizes, text, cfg)
    assert [cfg.vocabulary[i] for i in lab.label_index[[0, 1, 3]]] == ["sofa", "chair", "bed"]
    assert lab.structure.tolist() == [False, False, True, False, True]  # the floor by phrase, the "desk" by shape
    assert lab.structure_phrase.tolist() == [-1, -1, 0, -1, -1]
    np.testing.assert_allclose(lab.label_prob.sum(1), 1.0)
    assert lab.label_prob.shape == (5, 8) and lab.label_prob[0, 3] > 0.9


def test_classification_bad_input():
    enc = KnownVectorEncoder()
    cfg = ExtractionConfig(vocabulary=PHRASES[:8], structure_labels=PHRASES[8:])
    text = text_embeddings(enc, PHRASES)
    with pytest.raises(ValueError):
        classify_segments(np.zeros((2, 16)), np.zeros((2, 3)), text[:5], cfg)
    with pytest.raises(ValueError):
        classify_segments(np.zeros((2, 16)), np.zeros((3, 3)), text, cfg)
    with pytest.raises(ValueError):
        text_embeddings(enc, [])

    class Broken:
        def encode_text(self, texts):
            return torch.zeros(len(texts), 16)

    with pytest.raises(ValueError, match="zero"):
        text_embeddings(Broken(), ["chair"])
    with pytest.raises(ValueError):
        ExtractionConfig(vocabulary=["floor"]).validate()
