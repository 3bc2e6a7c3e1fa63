"""Dataset readers on small folders written here (TUM, Replica, ScanNet layouts) and the real gradslam batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lang3d_ros.datasets import (
    GradslamBatchSource,
    ReplicaSource,
    RosbagSource,
    ScanNetSource,
    TumSource,
    detect_kind,
    open_source,
    write_bag,
)
from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory, render_frames
from lang3d_ros.geometry.transforms import pose_from_matrix, transform_points

TINY = DEFAULT_INTRINSICS.scaled(64, 48)


@pytest.fixture(scope="module")
def frames():
    scene = generate_scene(5, n_objects=8)
    return list(render_frames(scene, make_trajectory(scene, "walk", n_frames=4, seed=0), TINY))


def _png16(path, depth_m, units_per_m):
    Image.fromarray(np.round(depth_m * units_per_m).astype(np.uint16)).save(path)


def _write_tum(root, frames):
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    rgb_lines, depth_lines, gt_lines = ["# colour images"], ["# depth"], ["# timestamp tx ty tz qx qy qz qw"]
    for f in frames:
        t = f.stamp_ns * 1e-9
        Image.fromarray(f.rgb).save(root / "rgb" / f"{t:.6f}.png")
        _png16(root / "depth" / f"{t + 0.004:.6f}.png", f.depth_m, 5000.0)
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        depth_lines.append(f"{t + 0.004:.6f} depth/{t + 0.004:.6f}.png")
        p, q = pose_from_matrix(f.T_world_cam)
        gt_lines.append(f"{t:.6f} " + " ".join(f"{v:.9f}" for v in (*p, *q)))
    t_last = frames[-1].stamp_ns * 1e-9 + 5.0  # a colour image with neither depth nor pose: skipped
    Image.fromarray(frames[-1].rgb).save(root / "rgb" / "late.png")
    rgb_lines.append(f"{t_last:.6f} rgb/late.png")
    for name, lines in (("rgb.txt", rgb_lines), ("depth.txt", depth_lines), ("groundtruth.txt", gt_lines)):
        (root / name).write_text("\n".join(lines) + "\n")


def test_tum_reader(frames, tmp_path):
    root = tmp_path / "rgbd_dataset_freiburg1_xyz"
    _write_tum(root, frames)
    assert detect_kind(root) == "tum"
    src = open_source(root)
    assert isinstance(src, TumSource) and len(src) == len(frames) and src.skipped == 1
    assert src.intrinsics.fx == 517.3 and (src.intrinsics.width, src.intrinsics.height) == (64, 48)
    for a, b in zip(src, frames):
        assert abs(a.stamp_ns - b.stamp_ns) < 1000
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_allclose(a.depth_m, b.depth_m, atol=1.01e-4)  # 1/5000 m steps
        np.testing.assert_allclose(a.T_world_cam, b.T_world_cam, atol=1e-6)
    with pytest.raises(ValueError, match="no colour image has a depth image"):  # depth is 4 ms late
        TumSource(root, max_dt_s=0.001)
    (root / "groundtruth.txt").write_text("1.0 2.0 3.0\n")
    with pytest.raises(ValueError, match="groundtruth.txt:1: expected at least 8 columns"):
        TumSource(root)


def test_replica_reader(frames, tmp_path):
    root = tmp_path / "room0"
    (root / "results").mkdir(parents=True)
    rows = []
    for i, f in enumerate(frames):
        Image.fromarray(f.rgb).save(root / "results" / f"frame{i:06d}.jpg", quality=95)
        _png16(root / "results" / f"depth{i:06d}.png", f.depth_m, 6553.5)
        rows.append(" ".join(f"{v:.12e}" for v in f.T_world_cam.reshape(-1)))
    (root / "traj.txt").write_text("\n".join(rows) + "\n")
    k = TINY
    (tmp_path / "cam_params.json").write_text(
        json.dumps(
            {"camera": {"w": k.width, "h": k.height, "fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy, "scale": 6553.5}}
        )
    )
    src = open_source(root)
    assert isinstance(src, ReplicaSource) and len(src) == len(frames) and src.intrinsics == TINY
    for a, b in zip(src, frames):
        assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).mean() < 4  # JPEG
        np.testing.assert_allclose(a.depth_m, b.depth_m, atol=0.51 / 6553.5)
        np.testing.assert_allclose(a.T_world_cam, b.T_world_cam, atol=1e-9)
    (root / "traj.txt").write_text(rows[0] + "\n")
    with pytest.raises(ValueError, match="4 results/frame"):
        ReplicaSource(root)


def test_scannet_reader_resizes_colour_and_skips_invalid_poses(frames, tmp_path):
    root = tmp_path / "scene0000_00"
    for d in ("color", "depth", "pose", "intrinsic"):
        (root / d).mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f.rgb).resize((128, 96), Image.BILINEAR).save(root / "color" / f"{i}.jpg", quality=95)
        _png16(root / "depth" / f"{i}.png", f.depth_m, 1000.0)
        T = np.full((4, 4), -np.inf) if i == 1 else f.T_world_cam
        np.savetxt(root / "pose" / f"{i}.txt", T)
    np.savetxt(root / "intrinsic" / "intrinsic_depth.txt", np.pad(TINY.K, ((0, 1), (0, 1))) + np.diag([0, 0, 0, 1.0]))
    src = open_source("scannet://" + str(root))
    assert isinstance(src, ScanNetSource) and len(src) == len(frames) - 1 and src.skipped == 1
    got = list(src)
    for a, b in zip(got, [f for i, f in enumerate(frames) if i != 1]):
        assert a.rgb.shape == (48, 64, 3) and a.intrinsics == TINY
        np.testing.assert_allclose(a.depth_m, b.depth_m, atol=5.01e-4)
        np.testing.assert_allclose(a.T_world_cam, b.T_world_cam, atol=1e-9)
        assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).mean() < 12


def test_gradslam_batch_reproduces_reference_vertex_maps(gradslam_dir):
    vertex = np.load(gradslam_dir / "vertex_map.npy")
    global_vertex = np.load(gradslam_dir / "global_vertex_map.npy")
    for b in range(vertex.shape[0]):
        src = open_source(gradslam_dir, sequence=b)
        assert isinstance(src, GradslamBatchSource) and len(src) == 3
        assert src.intrinsics.fy < 0  # gradslam's y-up camera, kept signed
        for f in src:
            v, u = np.nonzero(f.depth_m > 0)
            assert len(v) > 0.5 * f.depth_m.size
            p_cam = f.intrinsics.backproject(u, v, f.depth_m[v, u])
            np.testing.assert_allclose(p_cam, vertex[b, f.index][v, u], atol=1e-5)
            np.testing.assert_allclose(
                transform_points(f.T_world_cam, p_cam), global_vertex[b, f.index][v, u], atol=1e-4
            )
    with pytest.raises(ValueError, match="sequence must be in 0..1"):
        GradslamBatchSource(gradslam_dir, sequence=5)


def test_open_source_picks_the_bag_reader_and_rejects_unknown(frames, tmp_path):
    write_bag(iter(frames), tmp_path / "bag")
    assert isinstance(open_source(tmp_path / "bag"), RosbagSource)
    assert isinstance(open_source(tmp_path / "bag" / "bag.mcap"), RosbagSource)
    (tmp_path / "junk").mkdir()
    with pytest.raises(ValueError, match="not a recognised RGB-D source"):
        open_source(tmp_path / "junk")
    with pytest.raises(ValueError, match="unknown source scheme"):
        open_source("ftp://" + str(tmp_path))
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "missing")
