"""Bags: write synthetic frames, read them back through the synchronising reader, and reject bad bags."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from lang3d_ros.datasets.rosbag import BagTopics, RosbagSource, write_bag
from lang3d_ros.datasets.rosbag.topics import CAMERA_INFO, IMAGE, POSE_STAMPED
from lang3d_ros.datasets.rosbag.writer import _Msgs
from lang3d_ros.datasets.synthetic import (
    DEFAULT_INTRINSICS,
    RenderNoise,
    generate_scene,
    load_ground_truth,
    make_trajectory,
    render_frames,
)
from lang3d_ros.geometry.transforms import transform_points

SMALL = DEFAULT_INTRINSICS.scaled(160, 120)
NOISE = RenderNoise(depth_sigma_at_1m_m=0.002)


@pytest.fixture(scope="module")
def scene():
    return generate_scene(7, n_objects=10)


@pytest.fixture(scope="module")
def poses(scene):
    return make_trajectory(scene, "walk", n_frames=60, seed=2)[::10]


def _frames(scene, poses, noise=NOISE, seed=1):
    return render_frames(scene, poses, SMALL, noise=noise, seed=seed)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_round_trip(scene, poses, tmp_path, storage, encoding):
    summary = write_bag(_frames(scene, poses), tmp_path / "bag", storage=storage, depth_encoding=encoding, scene=scene)
    assert summary.n_frames == len(poses) and summary.message_counts["/camera/pose"] == len(poses)
    src = RosbagSource(tmp_path / "bag")
    got, ref = list(src), list(_frames(scene, poses))
    assert len(src) == len(got) == len(ref) and src.skipped == 0
    for a, b in zip(got, ref):
        assert a.stamp_ns == b.stamp_ns and a.intrinsics == b.intrinsics
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_allclose(a.T_world_cam, b.T_world_cam, atol=1e-9)
        np.testing.assert_allclose(a.depth_m, b.depth_m, atol=5.001e-4 if encoding == "16UC1" else 0.0)
        assert np.array_equal(a.depth_m > 0, b.depth_m > 0)
    gt = load_ground_truth(tmp_path / "bag" / "ground_truth.json")
    np.testing.assert_array_equal(gt.stamps_ns, [f.stamp_ns for f in ref])
    assert [o.label for o in gt.objects] == scene.labels


def test_backprojected_bag_depth_lies_on_ground_truth_within_noise(scene, poses, tmp_path):
    write_bag(_frames(scene, poses), tmp_path / "bag", storage="mcap", depth_encoding="16UC1")
    clean = list(_frames(scene, poses, noise=None))
    ratios, dists, sig = [], [], []
    for f, c in zip(RosbagSource(tmp_path / "bag"), clean):
        v, u = np.nonzero(f.depth_m > 0)
        z = f.depth_m[v, u]
        sigma = NOISE.depth_sigma_at_1m_m * c.depth_m[v, u] ** 2
        ratios.append((z - c.depth_m[v, u]) / np.sqrt(sigma**2 + 0.001**2 / 12))  # noise + 1 mm quantisation
        pts = transform_points(f.T_world_cam, f.intrinsics.backproject(u, v, z))
        dists.append(scene.distance_to_surfaces(pts))
        sig.append(sigma)
    r, d, s = np.concatenate(ratios), np.concatenate(dists), np.concatenate(sig)
    assert 0.85 < r.std() < 1.15 and abs(r.mean()) < 0.1
    # a point is never farther from the surfaces than its depth error
    assert np.mean(d < 4 * s + 1e-3) > 0.995, np.percentile(d, 99.9)


def test_odometry_at_another_rate_is_interpolated(scene, tmp_path):
    T = make_trajectory(scene, "orbit", n_frames=90, seed=0)[:12]
    write_bag(_frames(scene, T, noise=None), tmp_path / "bag", pose_msg="odom", pose_rate_hz=100.0)
    src = RosbagSource(tmp_path / "bag")
    assert src.pose_topic == "/odom" and len(src) == 12
    for f, Tref in zip(src, T):
        assert np.abs(f.T_world_cam[:3, 3] - Tref[:3, 3]).max() < 5e-3
        cos = (np.trace(f.T_world_cam[:3, :3].T @ Tref[:3, :3]) - 1) / 2
        assert np.degrees(np.arccos(np.clip(cos, -1, 1))) < 0.5


def test_same_seed_identical_bytes(scene, poses, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        write_bag(_frames(scene, poses[:3], seed=seed), tmp_path / name / "bag", scene=scene, seed=seed)
    read = lambda n: (tmp_path / n / "bag" / "bag.mcap").read_bytes()  # noqa: E731
    assert read("a") == read("b") and read("a") != read("c")
    assert (tmp_path / "a/bag/ground_truth.json").read_bytes() == (tmp_path / "b/bag/ground_truth.json").read_bytes()


def test_failed_write_leaves_nothing(scene, poses, tmp_path):
    def broken():
        yield from _frames(scene, poses[:2])
        raise RuntimeError("camera unplugged")

    with pytest.raises(RuntimeError):
        write_bag(broken(), tmp_path / "bag")
    assert list(tmp_path.iterdir()) == []
    write_bag(_frames(scene, poses[:1]), tmp_path / "bag")
    with pytest.raises(ValueError, match="exists already"):
        write_bag(_frames(scene, poses[:1]), tmp_path / "bag")
    with pytest.raises(ValueError, match="depth_encoding"):
        write_bag(_frames(scene, poses[:1]), tmp_path / "other", depth_encoding="rgb8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]


def _hand_bag(path, scene, poses, depth_offset_ns=0, color_encoding="rgb8", storage=StoragePlugin.MCAP):
    """A bag written message by message, to make the faults the writer never makes."""
    topics = BagTopics()
    msgs = _Msgs(topics)
    w = Writer(path, version=8, storage_plugin=storage)
    w.open()
    c = w.add_connection(topics.color, IMAGE, typestore=msgs.ts)
    d = w.add_connection(topics.depth, IMAGE, typestore=msgs.ts)
    i = w.add_connection(topics.camera_info, CAMERA_INFO, typestore=msgs.ts)
    p = w.add_connection(topics.pose, POSE_STAMPED, typestore=msgs.ts)
    for f in _frames(scene, poses):
        s = f.stamp_ns
        w.write(p, s, msgs.pose_stamped(f.T_world_cam, s))
        w.write(i, s, msgs.camera_info(f, s))
        color = f.rgb if color_encoding == "rgb8" else (f.depth_m * 1000).astype(np.uint16)
        w.write(c, s, msgs.image(color, color_encoding, s))
        w.write(d, s + depth_offset_ns, msgs.image((f.depth_m * 1000).astype(np.uint16), "16UC1", s + depth_offset_ns))
    w.close()


def test_bad_bags_raise_value_errors_that_name_the_problem(scene, poses, tmp_path):
    write_bag(_frames(scene, poses[:2]), tmp_path / "nopose", pose_msg="none")
    with pytest.raises(ValueError, match="/camera/pose is missing"):
        RosbagSource(tmp_path / "nopose")
    with pytest.raises(ValueError, match="/rgb is missing"):
        RosbagSource(tmp_path / "nopose", topics=BagTopics(color="/rgb"))
    with pytest.raises(ValueError, match="/camera/color/camera_info has type"):
        RosbagSource(tmp_path / "nopose", topics=BagTopics(pose="/camera/color/camera_info"))

    _hand_bag(tmp_path / "late", scene, poses[:3], depth_offset_ns=1_000_000_000)
    with pytest.raises(ValueError, match="not synchronised"):
        RosbagSource(tmp_path / "late")
    assert len(RosbagSource(tmp_path / "late", slop_ms=1010.0)) == 3

    _hand_bag(tmp_path / "enc", scene, poses[:2], color_encoding="16UC1")
    with pytest.raises(ValueError, match="/camera/color/image_raw has encoding '16UC1'"):
        RosbagSource(tmp_path / "enc")

    for storage, ext in (("mcap", "mcap"), ("sqlite3", "db3")):
        bag = tmp_path / f"trunc_{storage}"
        write_bag(_frames(scene, poses[:4]), bag, storage=storage)
        f = bag / f"{bag.name}.{ext}"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        with pytest.raises(ValueError, match=f"trunc_{storage}"):
            list(RosbagSource(bag))
    with pytest.raises(FileNotFoundError):
        RosbagSource(tmp_path / "nothing")
