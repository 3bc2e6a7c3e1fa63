"""Backends end to end: ground-truth labels (real MiniLM text embeddings) and SAM + CLIP (tiny checkpoints)."""
from __future__ import annotations

import numpy as np
import pytest

from lang3d_ros.config_base import from_mapping
from lang3d_ros.datasets.frame import Frame
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.grounding.objects import LEVELS
from lang3d_ros.semantics.backends import (
    GroundTruthSemantics, SamClipSemantics, SemanticsBackend, build_semantics_backend, build_text_encoder,
    canonical_text_features,
)
from lang3d_ros.semantics.config import SemanticsConfig
from lang3d_ros.semantics.types import KeyframeSemantics
from lang3d_ros.testing.tiny_models import TINY_CLIP_DIM, tiny_semantics_config

LABELS = {0: "wall", 3: "chair", 5: "table", 7: "mug"}
COLORS = {3: "red", 5: "brown", 7: "blue"}



def make_frame(h: int = 48, w: int = 64, instance_map: np.ndarray | None = None, rgb: np.ndarray | None = None) -> Frame:
    if rgb is None:
        rgb = np.full((h, w, 3), 120, np.uint8)
        rgb[10:30, 8:30] = (210, 30, 30)
    return Frame(rgb=rgb, depth_m=np.full((h, w), 2.0, np.float32), intrinsics=Intrinsics(50.0, 50.0, w / 2, h / 2, w, h),
                 T_world_cam=np.eye(4), instance_map=instance_map)


def gt_instance_map(h: int = 48, w: int = 64) -> np.ndarray:
    inst = np.zeros((h, w), np.int32)  # room structure everywhere
    inst[10:30, 8:30] = 5  # table
    inst[12:18, 12:18] = 7  # mug on the table
    inst[30:45, 40:60] = 3  # chair
    inst[0:4, 0:4] = -1  # nothing
    inst[40:42, 0:2] = 9  # unlabelled instance
    return inst


@pytest.fixture(scope="module")
def gt_config() -> SemanticsConfig:
    return from_mapping(SemanticsConfig, {"backend": "ground_truth", "device": "cpu"})


def test_ground_truth_levels(gt_config) -> None:
    backend = build_semantics_backend(gt_config, instance_labels=LABELS)
    assert isinstance(backend, GroundTruthSemantics) and isinstance(backend, SemanticsBackend)
    inst = gt_instance_map()
    ks = backend.process(make_frame(instance_map=inst))
    assert isinstance(ks, KeyframeSemantics) and ks.feature_dim == 384
    for name in LEVELS:
        lvl = ks.level(name)
        lvl.validate(48, 64)
        assert lvl.instance_ids.tolist() == [0, 3, 5, 7] and lvl.labels == ["wall", "chair", "table", "mug"]
        np.testing.assert_array_equal(lvl.seg_map, np.where(np.isin(inst, [0, 3, 5, 7]), np.searchsorted([0, 3, 5, 7], inst), -1))
        assert np.allclose(lvl.scores, 1.0)
    text = build_text_encoder(gt_config)
    want = text.encode_text(["wall", "chair", "table", "mug"]).numpy()
    np.testing.assert_allclose(ks.levels[0].features, want, atol=1e-5)
    # the query "a cup" is nearest to the mug's mask feature: real semantics
    q = text.encode_text(["a cup"]).numpy()[0]
    assert ks.levels[0].labels[int(np.argmax(ks.levels[0].features @ q))] == "mug"
    canon = canonical_text_features(text, gt_config)
    assert canon.shape == (4, 384)


def test_ground_truth_colors_parts_and_cache(gt_config) -> None:
    calls = []
    text = build_text_encoder(gt_config)

    class Counting:
        feature_dim = text.feature_dim

        def encode_text(self, texts):
            calls.append(list(texts))
            return text.encode_text(texts)

    backend = GroundTruthSemantics(LABELS, Counting(), COLORS, color_in_label=True, part_of={7: 5})
    frame = make_frame(instance_map=gt_instance_map())
    ks = backend.process(frame)
    backend.process(frame)
    assert ks.levels[0].labels == ["wall", "red chair", "brown table", "blue mug"]
    whole = ks.level("whole")
    assert whole.instance_ids.tolist() == [0, 3, 5] and whole.labels == ["wall", "red chair", "brown table"]
    assert whole.seg_map[14, 14] == 2  # the mug pixel belongs to the table as a whole
    assert sum(len(c) for c in calls) == 4  # each text embedded once
    with pytest.raises(ValueError, match="cycle"):
        GroundTruthSemantics(LABELS, Counting(), part_of={3: 5, 5: 3})


def test_ground_truth_bad_input_and_empty(gt_config) -> None:
    backend = build_semantics_backend(gt_config, instance_labels=LABELS)
    with pytest.raises(ValueError, match="instance_map"):
        backend.process(make_frame())
    with pytest.raises(ValueError, match="integer"):
        backend.process(make_frame(instance_map=gt_instance_map().astype(np.float32)))
    with pytest.raises(ValueError, match="rgb"):
        backend.process(make_frame(instance_map=gt_instance_map(), rgb=np.zeros((48, 64, 3), np.float32)))
    with pytest.raises(ValueError, match="instance_labels"):
        build_semantics_backend(gt_config)
    ks = backend.process(make_frame(instance_map=np.full((48, 64), -1, np.int32)))
    for lvl in ks.levels:
        assert lvl.num_masks == 0 and lvl.features.shape == (0, 384) and (lvl.seg_map == -1).all()


@pytest.mark.parametrize("clip_backend", ["open_clip", "transformers"])
def test_sam_clip_backend_end_to_end(tmp_path_factory, clip_backend) -> None:
    cfg = tiny_semantics_config(tmp_path_factory.mktemp("tiny"), clip_backend=clip_backend)
    backend = build_semantics_backend(cfg)
    assert isinstance(backend, SamClipSemantics) and backend.feature_dim == TINY_CLIP_DIM
    frame = make_frame()
    ks = backend.process(frame)
    assert sum(lvl.num_masks for lvl in ks.levels) > 0
    for lvl in ks.levels:
        lvl.validate(48, 64)
        assert lvl.seg_map.dtype == np.int32 and lvl.features.dtype == np.float32
        if lvl.num_masks:
            np.testing.assert_allclose(np.linalg.norm(lvl.features, axis=1), 1.0, atol=1e-4)
    assert set(backend.last_latency_ms) == {"masks_ms", "embed_ms", "total_ms"}
    assert backend.text_encoder.encode_text(["chair"]).shape == (1, TINY_CLIP_DIM)
    with pytest.raises(ValueError, match="sizes differ"):
        backend.process(make_frame(rgb=np.zeros((40, 64, 3), np.uint8)))


def test_sam_clip_blank_wall_gives_empty_levels(tmp_path_factory) -> None:
    cfg = tiny_semantics_config(tmp_path_factory.mktemp("tiny_wall"))
    cfg.sam.pred_iou_thresh, cfg.sam.stability_score_thresh = 0.7, 0.85  # LangSplat's filters
    ks = SamClipSemantics(cfg).process(make_frame(rgb=np.full((48, 64, 3), 128, np.uint8)))
    for lvl in ks.levels:
        assert lvl.num_masks == 0 and lvl.features.shape == (0, TINY_CLIP_DIM) and (lvl.seg_map == -1).all()


def test_feature_dim_mismatch_is_reported(tmp_path_factory) -> None:
    cfg = tiny_semantics_config(tmp_path_factory.mktemp("tiny_dim"))
    cfg.feature_dim = 512
    with pytest.raises(ValueError, match="feature_dim 512"):
        SamClipSemantics(cfg)
