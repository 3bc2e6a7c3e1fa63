"""LERF evaluation labels (labelme and LERF-OVS JSON) and nerfstudio scenes, read from fixture files written here,
then scored on a point map whose relevancy is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lang3d_ros.evaluation.lerf import (
    GL_TO_OPTICAL,
    evaluate_lerf,
    read_frame_labels,
    read_label_folder,
    read_transforms,
)
from lang3d_ros.evaluation.metrics import score_views


def _labelme(path, name, shapes, h=60, w=80):
    path.write_text(
        json.dumps(
            {
                "version": "5.0.1",
                "imagePath": name,
                "imageHeight": h,
                "imageWidth": w,
                "imageData": None,
                "shapes": [{"label": l, "points": p, "shape_type": "polygon", "flags": {}} for l, p in shapes],
            }
        )
    )


def test_labelme_and_lerf_ovs_layouts(tmp_path):
    square = [[10, 10], [29, 10], [29, 29], [10, 29]]
    tri = [[50, 40], [70, 40], [50, 55]]
    _labelme(
        tmp_path / "frame_00001.json",
        "frame_00001.jpg",
        [("mug", square), ("mug", tri), ("plate", [[0, 0], [5, 0], [5, 5]])],
    )
    fl = read_frame_labels(tmp_path / "frame_00001.json")
    assert (fl.image_name, fl.width, fl.height) == ("frame_00001.jpg", 80, 60) and set(fl.objects) == {"mug", "plate"}
    mug = fl.objects["mug"]
    assert mug.mask.shape == (60, 80) and mug.mask[20, 20] and mug.mask[42, 52] and not mug.mask[5, 40]
    assert 400 + 150 <= mug.mask.sum() <= 400 + 200  # the 20x20 square and a ~21x16/2 triangle, outlines included
    assert mug.boxes_xyxy.tolist() == [[10, 10, 29, 29], [50, 40, 70, 55]]
    (tmp_path / "frame_00002.json").write_text(
        json.dumps(
            {
                "info": {"name": "frame_00002.jpg", "width": 80, "height": 60},
                "objects": [{"category": "plate", "bbox": [10, 10, 29, 29], "segmentation": square}],
            }
        )
    )
    fl2 = read_frame_labels(tmp_path / "frame_00002.json")
    assert fl2.objects["plate"].mask.sum() == 400 and fl2.objects["plate"].boxes_xyxy.tolist() == [[10, 10, 29, 29]]
    assert [f.image_name for f in read_label_folder(tmp_path)] == ["frame_00001.jpg", "frame_00002.jpg"]
    (tmp_path / "bad.json").write_text(json.dumps({"something": 1}))
    with pytest.raises(ValueError, match="neither a labelme"):
        read_frame_labels(tmp_path / "bad.json")
    _labelme(tmp_path / "two.json", "x.jpg", [("line", [[0, 0], [3, 3]])])
    with pytest.raises(ValueError, match="at least 3 points"):
        read_frame_labels(tmp_path / "two.json")


def test_transforms_opengl_to_optical(tmp_path):
    T_gl = np.eye(4)
    T_gl[:3, 3] = [0.0, 0.0, 2.0]  # OpenGL camera at z=2 looking down -z (towards the origin)
    (tmp_path / "transforms.json").write_text(
        json.dumps(
            {
                "fl_x": 100,
                "fl_y": 100,
                "cx": 40,
                "cy": 30,
                "w": 80,
                "h": 60,
                "frames": [{"file_path": "images/frame_00001.jpg", "transform_matrix": T_gl.tolist()}],
            }
        )
    )
    cams = read_transforms(tmp_path)
    cam = cams["frame_00001.jpg"]
    assert cam.intrinsics.width == 80 and np.allclose(cam.T_world_cam, T_gl @ GL_TO_OPTICAL)
    assert np.allclose(cam.T_world_cam[:3, 2], [0, 0, -1])  # the optical z axis looks at the origin


class PlaneMap:
    """A plane of points at z=0 (x, y in [-1, 1]) whose relevancy is 1 inside a label's square, 0.1 elsewhere."""

    def __init__(self, squares):
        from types import SimpleNamespace

        import torch

        g = np.stack(np.meshgrid(np.arange(-1, 1, 0.01), np.arange(-1, 1, 0.01)), -1).reshape(-1, 2)
        self.xyz = np.column_stack([g, np.zeros(len(g))]).astype(np.float32)
        self.points = SimpleNamespace(points_xyz=torch.from_numpy(self.xyz))
        self.squares = squares

    def relevancy_by_level(self, label):
        x0, y0, x1, y1 = self.squares[label]
        inside = (self.xyz[:, 0] >= x0) & (self.xyz[:, 0] <= x1) & (self.xyz[:, 1] >= y0) & (self.xyz[:, 1] <= y1)
        rel = np.where(inside, 1.0, 0.1).astype(np.float32)
        return np.stack([rel * 0.5, rel, rel * 0.5]), self.xyz, np.zeros_like(self.xyz)


def test_eval_lerf_scores_a_known_map(tmp_path):
    # camera 2 m above the plane, looking down: f=40 px -> 1 m = 20 px; world x -> +u, world y -> -v
    T_gl = np.eye(4)
    T_gl[:3, 3] = [0.0, 0.0, 2.0]
    (tmp_path / "transforms.json").write_text(
        json.dumps(
            {
                "fl_x": 40,
                "fl_y": 40,
                "cx": 39.5,
                "cy": 29.5,
                "w": 80,
                "h": 60,
                "frames": [{"file_path": "images/frame_00001.jpg", "transform_matrix": T_gl.tolist()}],
            }
        )
    )
    labels = tmp_path / "labels"
    labels.mkdir()
    # "mug" occupies x, y in [0.2, 0.6]: u in [43.5, 51.5], v in [17.5, 25.5]; the polygon says so, "bowl" is
    # labelled elsewhere
    _labelme(
        labels / "frame_00001.json",
        "frame_00001.jpg",
        [("mug", [[44, 18], [51, 18], [51, 25], [44, 25]]), ("bowl", [[5, 5], [12, 5], [12, 12], [5, 12]])],
    )
    lmap = PlaneMap({"mug": (0.2, 0.2, 0.6, 0.6), "bowl": (-0.6, -0.6, -0.2, -0.2)})
    raw = evaluate_lerf(lmap, read_label_folder(labels), read_transforms(tmp_path), point_size_m=0.01, progress=False)
    res = {q["label"]: q for q in score_views(raw)["per_view_query"]}
    assert res["mug"]["hit"] and res["mug"]["iou"] > 0.5 and res["mug"]["level"] == 1
    assert not res["bowl"]["hit"] and res["bowl"]["iou"] == 0.0  # relevant region is not where the label says
    assert score_views(raw)["localization_accuracy"] == 0.5


class _AxisText:
    """Text encoder for the Gaussians test: "mug" is the x axis, every other phrase (canonical ones included) z."""

    feature_dim = 3

    def encode_text(self, texts):
        import torch

        return torch.tensor([[1.0, 0.0, 0.0] if t == "mug" else [0.0, 0.0, 1.0] for t in texts])


def test_eval_lerf_scores_the_gaussians_side_by_side(tmp_path):
    """Same frames and labels rendered from language Gaussians (decoded latents): the mug's Gaussians decode to the
    mug's feature, so the Gaussian-rendered map localizes it; both records share one layout."""
    import torch

    from lang3d_ros.gaussians.config import GaussianConfig
    from lang3d_ros.gaussians.evaluation import MapField
    from lang3d_ros.gaussians.model import GaussianModel
    from lang3d_ros.gaussians.query import LanguageQueryEngine

    T_gl = np.eye(4)
    T_gl[:3, 3] = [0.0, 0.0, 2.0]
    (tmp_path / "transforms.json").write_text(
        json.dumps(
            {
                "fl_x": 40,
                "fl_y": 40,
                "cx": 39.5,
                "cy": 29.5,
                "w": 80,
                "h": 60,
                "frames": [{"file_path": "images/frame_00001.jpg", "transform_matrix": T_gl.tolist()}],
            }
        )
    )
    labels = tmp_path / "labels"
    labels.mkdir()
    _labelme(
        labels / "frame_00001.json",
        "frame_00001.jpg",
        [("mug", [[44, 18], [51, 18], [51, 25], [44, 25]]), ("bowl", [[5, 5], [12, 5], [12, 12], [5, 12]])],
    )
    g = np.stack(np.meshgrid(np.linspace(-1.0, 1.0, 41), np.linspace(-0.8, 0.8, 33)), -1).reshape(-1, 2)
    pts = np.concatenate([g, np.zeros((len(g), 1))], 1)
    cfg = GaussianConfig(device="cpu", backend="torch", init_opacity=0.9)
    model = GaussianModel.from_points(pts, np.full(pts.shape, 0.5), config=cfg, device="cpu")
    mug = (pts[:, 0] >= 0.2) & (pts[:, 0] <= 0.6) & (pts[:, 1] >= 0.2) & (pts[:, 1] <= 0.6)
    lat = torch.zeros(len(pts), 3, 3)
    lat[:, :, 1] = 1.0
    lat[torch.from_numpy(mug)] = torch.tensor([1.0, 0.0, 0.0])
    model.params["latents"] = lat
    engine = LanguageQueryEngine(lat, lambda z: z, _AxisText(), codebook_size=0, device="cpu")
    field = MapField(model, engine, cfg)
    lmap = PlaneMap({"mug": (0.2, 0.2, 0.6, 0.6), "bowl": (-0.6, -0.6, -0.2, -0.2)})
    raw = evaluate_lerf(
        lmap, read_label_folder(labels), read_transforms(tmp_path), point_size_m=0.01, progress=False, field=field
    )
    assert len(raw["views_gaussians"]) == len(raw["views"]) == 1
    gres = {q["label"]: q for q in score_views({"views": raw["views_gaussians"]})["per_view_query"]}
    assert set(gres) == {"mug", "bowl"} and gres["mug"]["hit"] and gres["mug"]["iou"] > 0.3
    assert not gres["bowl"]["hit"]
