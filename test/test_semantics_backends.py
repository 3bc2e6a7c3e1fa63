"""Backends end to end: ground-truth labels (real MiniLM text embeddings) and SAM + CLIP (tiny checkpoints)."""

from __future__ import annotations

import numpy as np
import pytest

from lang3d_ros.config_base import from_mapping
from lang3d_ros.datasets.frame import Frame
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.grounding.objects import LEVELS
from lang3d_ros.semantics.backends import (
    GroundTruthSemantics,
    SamClipSemantics,
    SemanticsBackend,
    build_semantics_backend,
    build_text_encoder,
    canonical_text_features,
)
from lang3d_ros.semantics.config import SemanticsConfig
from lang3d_ros.semantics.types import KeyframeSemantics
from lang3d_ros.testing.tiny_models import TINY_CLIP_DIM, tiny_semantics_config

LABELS = {0: "wall", 3: "chair", 5: "table", 7: "mug"}
COLORS = {3: "red", 5: "brown", 7: "blue"}


def make_frame(
    h: int = 48, w: int = 64, instance_map: np.ndarray | None = None, rgb: np.ndarray | None = None
) -> Frame:
    if rgb is None:
        rgb = np.full((h, w, 3), 120, np.uint8)
        rgb[10:30, 8:30] = (210, 30, 30)
    return Frame(
        rgb=rgb,
        depth_m=np.full((h, w), 2.0, np.float32),
        intrinsics=Intrinsics(50.0, 50.0, w / 2, h / 2, w, h),
        T_world_cam=np.eye(4),
        instance_map=instance_map,
    )


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
        want = np.where(np.isin(inst, [0, 3, 5, 7]), np.searchsorted([0, 3, 5, 7], inst), -1)
        np.testing.assert_array_equal(lvl.seg_map, want)
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


# ----------------------------------------------------------------------------- mask-noise model (SAM-like failures)
PAIR_LABELS = ["chair", "table", "mug", "sofa", "lamp", "bottle", "stool", "book"]


def pairs_scene(rows: int = 5, cols: int = 4, h: int = 10, w: int = 12) -> tuple[np.ndarray, dict[int, str]]:
    """(H,W) ids: rows x cols disjoint pairs of touching rectangles (h x w px each, sharing an edge), -1 between."""
    ids = np.full((rows * (h + 4) + 4, cols * (2 * w + 4) + 4), -1, np.int64)
    labels, k = {}, 0
    for r in range(rows):
        for c in range(cols):
            y, x = 4 + r * (h + 4), 4 + c * (2 * w + 4)
            for j in range(2):
                ids[y : y + h, x + j * w : x + (j + 1) * w] = k
                labels[k] = PAIR_LABELS[k % len(PAIR_LABELS)]
                k += 1
    return ids, labels


class FakeEmbed:
    """Deterministic unit vectors per text (D-dim), so rates are measured without a model."""

    def __init__(self, dim: int = 64):
        self.dim, self.cache = dim, {}

    def __call__(self, texts):
        for t in texts:
            if t not in self.cache:
                v = np.random.default_rng(abs(hash(t)) % 2**32).normal(size=self.dim)
                self.cache[t] = (v / np.linalg.norm(v)).astype(np.float32)
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


def _noise(**kw):
    from lang3d_ros.semantics.config import MaskNoiseConfig
    from lang3d_ros.semantics.mask_noise import MaskNoise

    base = dict(
        enabled=True,
        missed_prob=0.0,
        under_segment_prob=[0.0] * 3,
        over_segment_prob=[0.0] * 3,
        boundary_jitter_prob=0.0,
        label_confusion_prob=0.0,
        feature_noise_std=0.0,
        part_feature_noise_std=0.0,
    )
    base.update(kw)
    return MaskNoise(from_mapping(MaskNoiseConfig, base))


def _check_valid(lvl, ids: np.ndarray, dim: int) -> None:
    lvl.validate(*ids.shape)
    m = lvl.num_masks
    assert lvl.seg_map.dtype == np.int32 and lvl.seg_map.min() >= -1 and lvl.seg_map.max() < m
    assert np.all(np.bincount(lvl.seg_map[lvl.seg_map >= 0], minlength=m) > 0)  # no empty mask
    assert lvl.features.shape == (m, dim) and np.allclose(np.linalg.norm(lvl.features, axis=1), 1.0, atol=1e-5)
    assert len(lvl.labels) == m and len(lvl.instance_ids) == m and len(lvl.scores) == m
    assert set(lvl.instance_ids.tolist()) <= set(np.unique(ids[ids >= 0]).tolist())
    assert np.all((lvl.scores > 0) & (lvl.scores <= 1))


def test_mask_noise_each_failure_happens_at_its_configured_rate():
    ids, labels = pairs_scene()
    texts = dict(labels)
    embed = FakeEmbed()
    rates = dict(
        missed_prob=0.1,
        under_segment_prob=[0.1, 0.25, 0.5],
        over_segment_prob=[0.4, 0.2, 0.1],
        boundary_jitter_prob=0.3,
        label_confusion_prob=0.15,
        feature_noise_std=0.3,
    )
    noise = _noise(**rates)
    tot: dict[int, dict[str, int]] = {k: {} for k in range(3)}
    for frame in range(200):
        for level in range(3):
            lvl, rep = noise.apply(ids, level, frame, labels, texts, embed, embed.dim)
            _check_valid(lvl, ids, embed.dim)
            for key, v in vars(rep).items():
                tot[level][key] = tot[level].get(key, 0) + v

    def near(k: int, num: str, den: str, p: float) -> None:
        n = tot[k][den]
        tol = 4 * np.sqrt(p * (1 - p) / n) + 1e-3
        assert abs(tot[k][num] / n - p) <= tol, (k, num, tot[k][num] / n, p)

    for k in range(3):
        near(k, "missed", "masks_in", rates["missed_prob"])
        near(k, "merged_pairs", "touching_pairs", rates["under_segment_prob"][k])
        near(k, "split", "split_candidates", rates["over_segment_prob"][k])
        near(k, "jittered", "jitter_candidates", rates["boundary_jitter_prob"])
        near(k, "confused", "confusable", rates["label_confusion_prob"])
        assert tot[k]["touching_pairs"] > 1000 and tot[k]["split_candidates"] > 1000
        assert 2 * tot[k]["split"] <= tot[k]["parts"] <= 3 * tot[k]["split"]


def test_mask_noise_off_is_the_identity_and_each_mode_does_what_it_says():
    from scipy import ndimage

    ids, labels = pairs_scene(rows=2, cols=2)
    embed = FakeEmbed()
    clean, rep = _noise().apply(ids, 0, 0, labels, dict(labels), embed, embed.dim)
    assert rep.masks_out == rep.masks_in == 8
    np.testing.assert_array_equal(clean.instance_ids[clean.seg_map[ids >= 0]], ids[ids >= 0])
    np.testing.assert_allclose(clean.features, embed(clean.labels), atol=1e-6)
    assert np.all(clean.scores == 1.0)
    # missed: every mask dropped
    gone, _ = _noise(missed_prob=1.0).apply(ids, 0, 0, labels, dict(labels), embed, embed.dim)
    assert gone.num_masks == 0 and np.all(gone.seg_map == -1)
    # under-segmentation: each touching pair becomes one mask covering both, feature of one or the area mix
    merged, rep = _noise(under_segment_prob=[1.0, 0, 0]).apply(ids, 0, 3, labels, dict(labels), embed, embed.dim)
    _check_valid(merged, ids, embed.dim)
    assert merged.num_masks == 4 and rep.merged_pairs == 4
    for m in range(4):
        covered = set(np.unique(ids[merged.seg_map == m]).tolist())
        a, b = sorted(covered)
        assert b == a + 1 and a % 2 == 0
        f = merged.features[m]
        pure = [float(f @ embed([labels[i]])[0]) for i in (a, b)]
        mix = embed([labels[a], labels[b]]).sum(0)
        assert max(pure) > 0.999 or float(f @ mix / np.linalg.norm(mix)) > 0.999
    # over-segmentation: a mask becomes 2..3 parts whose union is the mask, each part one GT instance
    split, rep = _noise(over_segment_prob=[1.0, 0, 0]).apply(ids, 0, 5, labels, dict(labels), embed, embed.dim)
    _check_valid(split, ids, embed.dim)
    assert rep.split == 8 and 16 <= split.num_masks <= 24
    np.testing.assert_array_equal(split.seg_map >= 0, ids >= 0)
    for m in range(split.num_masks):
        assert len(np.unique(ids[split.seg_map == m])) == 1 and (split.seg_map == m).sum() >= 20
    # boundary jitter: changes stay within boundary_jitter_px of the original boundaries
    jit, rep = _noise(boundary_jitter_prob=1.0, boundary_jitter_px=2).apply(
        ids, 0, 9, labels, dict(labels), embed, embed.dim
    )
    _check_valid(jit, ids, embed.dim)
    changed = jit.instance_ids[np.maximum(jit.seg_map, 0)] * (jit.seg_map >= 0) + -1 * (jit.seg_map < 0) != ids
    edge = ndimage.binary_dilation(ids != np.roll(ids, 1, 0), iterations=3) | ndimage.binary_dilation(
        ids != np.roll(ids, 1, 1), iterations=3
    )
    assert changed.any() and not (changed & ~edge).any() and rep.jittered == 8
    # label confusion: every mask embedded as one of its label's confusers
    conf, rep = _noise(label_confusion_prob=1.0).apply(ids, 0, 0, labels, dict(labels), embed, embed.dim)
    table = _noise().table
    assert rep.confused == 8
    for text, iid in zip(conf.labels, conf.instance_ids):
        assert text in table[labels[int(iid)]]
        np.testing.assert_allclose(conf.features[list(conf.labels).index(text)], embed([text])[0], atol=1e-6)


def test_mask_noise_feature_noise_and_determinism():
    ids, labels = pairs_scene()
    embed = FakeEmbed(dim=384)
    noise = _noise(
        feature_noise_std=0.3,
        over_segment_prob=[0.3, 0.3, 0.3],
        boundary_jitter_prob=0.5,
        missed_prob=0.1,
        under_segment_prob=[0.2, 0.2, 0.2],
        label_confusion_prob=0.1,
    )
    a, _ = noise.apply(ids, 1, 17, labels, dict(labels), embed, embed.dim)
    b, _ = noise.apply(ids, 1, 17, labels, dict(labels), embed, embed.dim)
    c, _ = noise.apply(ids, 1, 18, labels, dict(labels), embed, embed.dim)
    np.testing.assert_array_equal(a.seg_map, b.seg_map)
    np.testing.assert_array_equal(a.features, b.features)
    assert a.labels == b.labels and not np.array_equal(a.seg_map, c.seg_map)
    only_feat = _noise(feature_noise_std=0.3)
    cos = []
    for frame in range(20):
        lvl, _ = only_feat.apply(ids, 0, frame, labels, dict(labels), embed, embed.dim)
        cos += np.sum(lvl.features * embed(lvl.labels), axis=1).tolist()
    assert abs(np.mean(cos) - 1 / np.sqrt(1 + 0.3**2)) < 0.01


def test_ground_truth_backend_with_mask_noise(gt_config) -> None:
    from lang3d_ros.semantics.config import MaskNoiseConfig

    noise = {"enabled": True, "seed": 3, "over_segment_prob": [1.0, 1.0, 1.0], "min_part_area_px": 5}
    cfg = from_mapping(SemanticsConfig, {"backend": "ground_truth", "device": "cpu", "mask_noise": noise})
    backend = build_semantics_backend(cfg, instance_labels=LABELS)
    assert backend.noise is not None
    inst = gt_instance_map()
    frame = make_frame(instance_map=inst)
    ks = backend.process(frame)
    assert len(backend.last_noise_reports) == 3
    for lvl in ks.levels:
        _check_valid(lvl, np.where(np.isin(inst, list(LABELS)), inst, -1), 384)
        assert lvl.num_masks > 4  # every object split into parts
    again = build_semantics_backend(cfg, instance_labels=LABELS).process(frame)
    for x, y in zip(ks.levels, again.levels):
        np.testing.assert_array_equal(x.seg_map, y.seg_map)
    clean = build_semantics_backend(gt_config, instance_labels=LABELS)
    assert clean.noise is None and not MaskNoiseConfig().enabled
    with pytest.raises(ValueError, match="confusions"):
        from_mapping(MaskNoiseConfig, {"confusions": ["mug"]}).validate()
    with pytest.raises(ValueError, match="3 probabilities"):
        from_mapping(MaskNoiseConfig, {"over_segment_prob": [0.1]}).validate()
