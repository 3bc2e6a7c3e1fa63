"""Whole-map object extraction with a stand-in text encoder whose phrase vectors are known."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lang3d_ros.geometry.boxes import iou_3d
from lang3d_ros.grounding.config import ExtractionConfig
from lang3d_ros.grounding.extract import extract_objects, point_phrase_labels, text_embeddings
from lang3d_ros.grounding.synthetic_room import FLOOR_ID, WALL_ID, make_room

PHRASES = ["chair", "table", "cabinet", "sofa", "shelf", "box", "bed", "desk", "floor", "wall", "ceiling"]


class KnownVectorEncoder:
    """Each phrase in PHRASES is one axis of a 16-d space (plus a shared offset, as CLIP's are not orthogonal)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def vector(self, phrase: str) -> np.ndarray:
        v = np.full(16, 0.2)
        v[PHRASES.index(phrase)] = 1.0
        return v / np.linalg.norm(v)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        self.calls.append(list(texts))
        return torch.tensor(np.stack([self.vector(t) for t in texts]), dtype=torch.float32)


def scene_features(scene, encoder: KnownVectorEncoder, rng: np.random.Generator, noise: float = 0.15) -> np.ndarray:
    feats = np.zeros((len(scene.points), 16), dtype=np.float32)
    for i, label in enumerate(scene.labels):
        feats[scene.instance_ids == i] = encoder.vector(label)
    feats[scene.instance_ids == FLOOR_ID] = encoder.vector("floor")
    feats[scene.instance_ids == WALL_ID] = encoder.vector("wall")
    feats += rng.normal(0, noise, feats.shape).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    unseen = rng.random(len(feats)) < 0.05
    feats[unseen] = 0.0  # points no mask ever covered
    return feats


def test_extraction_finds_each_object_with_its_label_and_drops_structure():
    enc = KnownVectorEncoder()
    rng = np.random.default_rng(0)
    cfg = ExtractionConfig(vocabulary=PHRASES[:8], structure_labels=["floor", "wall", "ceiling"])
    hits, total = 0, 0
    for seed in range(3):
        scene = make_room(seed, n_objects=4, noise_m=0.003)
        feats = scene_features(scene, enc, rng)
        objs = extract_objects(scene.points, feats, enc, colors=scene.colors, config=cfg)
        assert all(not o.label.startswith("structure") for o in objs)
        assert all(o.label in cfg.vocabulary for o in objs)
        for gt_box, gt_label in zip(scene.boxes, scene.labels):
            total += 1
            match = [o for o in objs if o.label == gt_label and iou_3d(o.box, gt_box) >= 0.5]
            hits += len(match) == 1
        for o in objs:
            assert set(o.label_scores) == set(cfg.vocabulary)
            assert sum(o.label_scores.values()) == pytest.approx(1.0)
            assert o.score == pytest.approx(max(o.label_scores.values()))
            assert o.feature is not None and np.linalg.norm(o.feature) == pytest.approx(1.0)
            assert o.n_points == len(o.point_indices) >= cfg.min_points
            assert np.all((o.color_rgb >= 0) & (o.color_rgb <= 1))
            assert o.level == "whole"
        assert [o.instance_id for o in objs] == list(range(len(objs)))
        assert all(a.n_points >= b.n_points for a, b in zip(objs, objs[1:]))
    assert hits / total >= 0.9, (hits, total)
    assert enc.calls[0] == cfg.vocabulary + cfg.structure_labels


def test_planar_clusters_are_structure_whatever_their_label():
    enc = KnownVectorEncoder()
    rng = np.random.default_rng(1)
    scene = make_room(5, n_objects=2)
    feats = scene_features(scene, enc, rng, noise=0.05)
    feats[scene.instance_ids == WALL_ID] = enc.vector("shelf")  # walls that CLIP thinks are shelves
    cfg = ExtractionConfig(vocabulary=PHRASES[:8])
    objs = extract_objects(scene.points, feats, enc, config=cfg)
    assert len(objs) == 2 and sorted(o.label for o in objs) == sorted(scene.labels)
    kept = extract_objects(scene.points, feats, enc, config=ExtractionConfig(vocabulary=PHRASES[:8], keep_structure=True))
    structure = [o for o in kept if o.label.startswith("structure:")]
    assert any(o.label == "structure:floor" for o in structure)
    assert any(o.label == "structure:shelf" for o in structure)  # a wall labelled shelf, caught by shape


def test_point_phrase_labels_marks_empty_and_dissimilar_rows():
    text = np.eye(3, dtype=np.float32)
    feats = np.array([[0, 2, 0], [0, 0, 0], [-1, -1, -1], [0.1, 0, 1]], dtype=np.float32)
    assert list(point_phrase_labels(feats, text, min_similarity=0.0)) == [1, -1, -1, 2]


def test_extraction_bad_input():
    enc = KnownVectorEncoder()
    pts = np.zeros((10, 3))
    cfg = ExtractionConfig(vocabulary=PHRASES[:8])
    with pytest.raises(ValueError, match="features"):
        extract_objects(pts, np.zeros((9, 16)), enc, config=cfg)
    with pytest.raises(ValueError, match="dim"):
        extract_objects(pts, np.zeros((10, 8)), enc, config=cfg)
    with pytest.raises(ValueError, match="level"):
        extract_objects(pts, np.zeros((10, 16)), enc, config=cfg, level="room")
    with pytest.raises(ValueError, match="both"):
        extract_objects(pts, np.zeros((10, 16)), enc, config=ExtractionConfig(vocabulary=["floor"]))
    with pytest.raises(ValueError, match="phrase"):
        text_embeddings(enc, [])

    class Broken:
        def encode_text(self, texts):
            return torch.zeros(len(texts), 16)

    with pytest.raises(ValueError, match="zero rows"):
        extract_objects(pts, np.zeros((10, 16)), Broken(), config=cfg)
