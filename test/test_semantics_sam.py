"""SAM three-level masks on a tiny randomly initialised SAM saved and loaded as a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lang3d_ros.semantics.config import SamConfig
from lang3d_ros.semantics.device import MissingModelError
from lang3d_ros.semantics.sam_masks import LevelMaskGenerator, load_sam, remove_small_regions, segmentation_map
from lang3d_ros.testing.tiny_models import TINY_SAM_ARCH, save_tiny_sam


@pytest.fixture(scope="module")
def sam_path(tmp_path_factory):
    return save_tiny_sam(tmp_path_factory.mktemp("sam") / "tiny_sam.pth", seed=0)


def open_config(**kw) -> SamConfig:
    cfg = SamConfig(
        model_type="custom",
        points_per_side=6,
        crop_n_layers=0,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        mask_nms_score=0.0,
        min_mask_region_area=10,
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def scene_rgb() -> np.ndarray:
    rgb = np.full((60, 80, 3), 90, np.uint8)
    rgb[10:35, 10:45] = (200, 40, 40)
    rgb[30:55, 50:75] = (40, 200, 40)
    return rgb


def test_load_checkpoint_roundtrip(sam_path) -> None:
    sam = load_sam("custom", str(sam_path), torch.device("cpu"))
    state = torch.load(sam_path, weights_only=True)
    assert state["arch"] == TINY_SAM_ARCH
    for k, v in sam.state_dict().items():
        assert torch.equal(v, state["model"][k]), k
    assert sam.image_encoder.img_size == TINY_SAM_ARCH["image_size"]


def test_missing_checkpoint_names_download(tmp_path) -> None:
    with pytest.raises(MissingModelError, match="sam_vit_h_4b8939.pth"):
        load_sam("vit_h", "", torch.device("cpu"))
    with pytest.raises(MissingModelError, match="semantics.sam.checkpoint"):
        load_sam("vit_b", str(tmp_path / "absent.pth"), torch.device("cpu"))
    with pytest.raises(ValueError, match="model_type"):
        load_sam("vit_x", "", torch.device("cpu"))


def test_three_levels_with_consistent_seg_maps(sam_path) -> None:
    gen = LevelMaskGenerator(load_sam("custom", str(sam_path), torch.device("cpu")), open_config())
    levels = gen.generate(scene_rgb())
    assert len(levels) == 3
    assert sum(len(s) for s in levels) > 0
    for s in levels:
        assert s.masks.shape[1:] == (60, 80) and s.masks.dtype == torch.bool
        assert s.iou_preds.shape == s.stability.shape == (len(s),)
        seg = segmentation_map(s.masks)
        assert seg.shape == (60, 80) and seg.dtype == torch.int32
        covered = s.masks.any(dim=0)
        assert torch.equal(seg >= 0, covered)
        for i in torch.unique(seg[seg >= 0]).tolist():
            assert bool(s.masks[i][seg == i].all())
        if len(s):  # boxes are the masks' tight inclusive boxes
            ys, xs = torch.nonzero(s.masks[0], as_tuple=True)
            assert s.boxes_xyxy[0].tolist() == [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
    # same input, same output
    again = gen.generate(scene_rgb())
    assert all(torch.equal(a.masks, b.masks) for a, b in zip(levels, again))


def test_crops_layer_runs(sam_path) -> None:
    gen = LevelMaskGenerator(
        load_sam("custom", str(sam_path), torch.device("cpu")), open_config(crop_n_layers=1, points_per_side=4)
    )
    levels = gen.generate(scene_rgb())
    assert all(s.masks.shape[1:] == (60, 80) for s in levels)


def test_blank_wall_with_langsplat_filters_gives_empty_levels(sam_path) -> None:
    cfg = SamConfig(model_type="custom", points_per_side=4, crop_n_layers=0)  # LangSplat's thresholds
    gen = LevelMaskGenerator(load_sam("custom", str(sam_path), torch.device("cpu")), cfg)
    levels = gen.generate(np.full((40, 50, 3), 128, np.uint8))
    for s in levels:
        assert len(s) == 0
        assert bool((segmentation_map(s.masks) == -1).all())


def test_bad_images_raise(sam_path) -> None:
    gen = LevelMaskGenerator(load_sam("custom", str(sam_path), torch.device("cpu")), open_config())
    with pytest.raises(ValueError, match="uint8"):
        gen.generate(np.zeros((40, 50, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        gen.generate(np.zeros((40, 50), np.uint8))
    with pytest.raises(ValueError, match="px"):
        gen.generate(np.zeros((4, 50, 3), np.uint8))


def test_segmentation_map_smallest_on_top() -> None:
    m = torch.zeros((3, 6, 6), dtype=torch.bool)
    m[0] = True
    m[1, :3, :3] = True
    m[2, 1:2, 1:2] = True
    seg = segmentation_map(m)
    assert seg[1, 1] == 2 and seg[0, 0] == 1 and seg[5, 5] == 0
    assert bool((segmentation_map(torch.zeros((0, 4, 5), dtype=torch.bool)) == -1).all())


def test_remove_small_regions() -> None:
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[5, 5] = False  # 1-px hole
    m[16:18, 16:18] = True  # 4-px island
    filled, changed = remove_small_regions(m, 5, fill_holes=True)
    assert changed and filled[5, 5] and filled[16, 16]
    cleaned, changed = remove_small_regions(filled, 5, fill_holes=False)
    assert changed and not cleaned[16:18, 16:18].any() and cleaned[2:12, 2:12].all()
    same, changed = remove_small_regions(cleaned, 5, fill_holes=False)
    assert not changed and np.array_equal(same, cleaned)
    only_small = np.zeros((10, 10), bool)
    only_small[1, 1] = True
    only_small[5:7, 5:7] = True
    kept, _ = remove_small_regions(only_small, 50, fill_holes=False)
    assert kept.sum() == 4  # all islands small: the largest stays


def test_generator_equals_segment_anything_predictor_path(sam_path) -> None:
    """Our decode + late upsampling gives SamPredictor.predict_torch's logits and IoU (the reference path)."""
    from segment_anything import SamPredictor

    sam = load_sam("custom", str(sam_path), torch.device("cpu"))
    gen = LevelMaskGenerator(sam, open_config())
    rgb = scene_rgb()
    gen.predictor.set_image(rgb)
    pts = gen.predictor.transform.apply_coords(np.array([[20.0, 15.0], [60.0, 40.0]]), rgb.shape[:2])
    coords = torch.as_tensor(pts, dtype=torch.float32)
    labels = torch.ones(2, dtype=torch.int)
    low_res, iou = gen._decode(coords, labels)
    up = sam.postprocess_masks(low_res, gen.predictor.input_size, gen.predictor.original_size)
    ref = SamPredictor(sam)
    ref.set_image(rgb)
    want, want_iou, _ = ref.predict_torch(coords[:, None], labels[:, None], multimask_output=True, return_logits=True)
    assert torch.allclose(up, want, atol=1e-5) and torch.allclose(iou, want_iou, atol=1e-6)
