"""PointMap behaviour: bad input leaves the map bit-identical, bounded memory, culling, features, map files."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.fusion.analytic_scene import Corridor, corridor_walk
from lang3d_ros.fusion.config import FusionConfig
from lang3d_ros.fusion.pointfusion import PointMap
from lang3d_ros.geometry.camera import Intrinsics
from lang3d_ros.semantics.types import KeyframeSemantics, LevelMasks

INTR = Intrinsics(131.25, 131.25, 79.5, 59.5, 160, 120)  # 640x480 Kinect-like optics at 160x120



def _semantics(frame: Frame, dim: int, levels=(True, True, True), seed: int = 0) -> KeyframeSemantics:
    """Per level: one mask per instance id of the frame (random unit vector per id), or none (-1)."""
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(64, dim)).astype(np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    out = []
    for on in levels:
        seg = frame.instance_map.astype(np.int32) if on else np.full(frame.depth_m.shape, -1, np.int32)
        out.append(LevelMasks(seg_map=seg, features=table.copy(), scores=np.ones(64, np.float32)))
    return KeyframeSemantics(levels=tuple(out))


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.asarray(a[k]).dtype == np.asarray(b[k]).dtype and np.array_equal(a[k], b[k]) for k in a
    )


@pytest.fixture(scope="module")
def frames():
    return list(corridor_walk(Corridor(length_m=6.0), 12, INTR, step_m=0.1, noise_m=0.002, seed=3))


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_bad_input_is_rejected_and_changes_nothing(frames, backend):
    m = PointMap(FusionConfig(backend=backend), feature_dim=8, device="cpu")
    for f in frames[:2]:
        assert m.integrate(f, _semantics(f, 8)).accepted
    before = m.state_dict()
    good = frames[2]
    bad_pose = good.T_world_cam.copy()
    bad_pose[0, 0] = np.nan
    scaled = good.T_world_cam.copy()
    scaled[:3, :3] *= 1.1
    seg_small = _semantics(good, 8)
    seg_small.levels[1].seg_map = seg_small.levels[1].seg_map[:, :-1]
    nan_feat = _semantics(good, 8)
    nan_feat.levels[2].features[0, 0] = np.nan
    cases = {
        "non-finite pose": (dataclasses.replace(good, T_world_cam=bad_pose), None),
        "non-rigid pose": (dataclasses.replace(good, T_world_cam=scaled), None),
        "rgb/depth size": (dataclasses.replace(good, rgb=good.rgb[:, :-2]), None),
        "all-zero depth": (dataclasses.replace(good, depth_m=np.zeros_like(good.depth_m)), None),
        "all-NaN depth": (dataclasses.replace(good, depth_m=np.full_like(good.depth_m, np.nan)), None),
        "negative depth": (dataclasses.replace(good, depth_m=-good.depth_m), None),
        "integer depth": (dataclasses.replace(good, depth_m=good.depth_m.astype(np.int32)), None),
        "seg map size": (good, seg_small),
        "feature dim": (good, _semantics(good, 5)),
        "non-finite features": (good, nan_feat),
        "not a frame": ("frame", None),
    }
    for name, (frame, sem) in cases.items():
        rep = m.integrate(frame, sem)
        assert not rep.accepted and rep.reason, name
        assert rep.n_points == m.num_points
        assert _state_equal(before, m.state_dict()), name
    assert m.integrate(good, _semantics(good, 8)).accepted
    assert not _state_equal(before, m.state_dict())


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_invalid_pixels_are_skipped(frames, backend):
    f = frames[0]
    d = f.depth_m.copy()
    d[:40] = np.nan
    d[40:50] = np.inf
    d[50:60] = -1.0
    m = PointMap(FusionConfig(backend=backend), device="cpu")
    rep = m.integrate(dataclasses.replace(f, depth_m=d))
    assert rep.accepted and 0 < rep.n_new < (d > 0).sum()
    out = m.to_numpy()
    assert all(np.all(np.isfinite(v)) for v in out.values())
    # nothing from the top rows: every point projects into the rows that had depth
    pc = (out["points_xyz"] - f.T_world_cam[:3, 3]) @ f.T_world_cam[:3, :3]
    v = pc[:, 1] / pc[:, 2] * INTR.fy + INTR.cy
    assert v.min() > 59.0


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_memory_is_flat_under_revisits(backend):
    corridor = Corridor(length_m=4.0)
    passes = []
    m = PointMap(FusionConfig(prune_after_frames=5, backend=backend), device="cpu")
    walk = list(corridor_walk(corridor, 10, INTR, step_m=0.6, noise_m=0.002, seed=1, back_and_forth=True))
    for p in range(10):
        for f in walk:
            assert m.integrate(f).accepted
        passes.append(m.num_points)
    assert max(passes[1:]) <= 1.05 * passes[0], passes
    assert m.num_points > 0.5 * passes[0]


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_culling_cost_does_not_grow_with_far_map(frames, backend):
    """A map with a second copy of the corridor 500 m away examines exactly the same candidates."""
    far = np.eye(4)
    far[0, 3] = 500.0
    near_only = PointMap(FusionConfig(backend=backend), device="cpu")
    with_far = PointMap(FusionConfig(backend=backend), device="cpu")
    for f in frames[:6]:
        with_far.integrate(dataclasses.replace(f, T_world_cam=far @ f.T_world_cam))
    assert with_far.num_points > 10_000
    for f in frames[6:]:
        a, b = near_only.integrate(f), with_far.integrate(f)
        assert a.n_candidates == b.n_candidates and a.n_new == b.n_new and a.n_matched == b.n_matched


def test_features_follow_masks_and_uncovered_pixels_do_not_pollute(frames):
    m = PointMap(FusionConfig(), device="cpu")  # feature_dim from the first semantics
    f0 = frames[0]
    m.integrate(f0, _semantics(f0, 6, levels=(False, True, True)))
    assert m.feature_dim == 6
    assert torch.all(m.feature_weight(0) == 0) and torch.all(m.features(0) == 0)
    w1, f1 = m.feature_weight(1).clone(), m.features(1).clone()
    assert torch.all(w1 > 0)
    m.integrate(f0, _semantics(f0, 6, levels=(False, False, True)))  # level 1 uncovered now
    assert torch.equal(m.feature_weight(1)[: len(w1)], w1) and torch.equal(m.features(1)[: len(f1)], f1)
    assert torch.all(m.feature_weight(2)[: len(w1)] > w1)
    # the feature of every point is its wall's unit vector (float32 storage for D <= 16)
    table = _semantics(f0, 6).levels[1].features
    wall, _ = Corridor(length_m=6.0).wall_and_color(m.points_xyz.numpy())
    got = m.features(2).float().numpy()
    cos = got @ table.T
    assert np.mean(np.argmax(cos, 1) == wall) > 0.95
    with pytest.raises(ValueError):
        m.features(3)


def test_state_dict_roundtrip_and_resume(frames):
    a = PointMap(FusionConfig(), device="cpu")
    for f in frames[:4]:
        a.integrate(f, _semantics(f, 4))
    b = PointMap(FusionConfig(), device="cpu")
    b.load_state_dict(a.state_dict())
    assert _state_equal(a.state_dict(), b.state_dict())
    ra, rb = a.integrate(frames[4], _semantics(frames[4], 4)), b.integrate(frames[4], _semantics(frames[4], 4))
    assert (ra.n_matched, ra.n_new, ra.n_points) == (rb.n_matched, rb.n_new, rb.n_points)
    np.testing.assert_allclose(np.sort(a.to_numpy()["confidence"]), np.sort(b.to_numpy()["confidence"]), rtol=1e-6)
    st = a.state_dict()
    bad = dict(st, normals=st["normals"][:-1])
    before = b.state_dict()
    with pytest.raises(ValueError):
        b.load_state_dict(bad)
    assert _state_equal(before, b.state_dict())
    assert b.bytes_per_point == a.bytes_per_point == 73 + 3 * (4 * 4 + 4)  # D = 4: float32 storage


def test_hard_cap_and_pruning(frames):
    m = PointMap(FusionConfig(max_points=5000, evict_fraction=0.1), device="cpu")
    for f in frames[:4]:
        rep = m.integrate(f)
        assert m.num_points <= 5000 and rep.n_points == m.num_points
    assert rep.n_pruned > 0
    # a floating patch seen in one frame only is pruned prune_after_frames frames later
    cfg = FusionConfig(prune_after_frames=3)
    m = PointMap(cfg, device="cpu")
    d = frames[0].depth_m.copy()
    d[50:70, 70:90] = 0.6
    m.integrate(dataclasses.replace(frames[0], depth_m=d))
    def n_patch():
        p = m.points_xyz.numpy()
        cam = (p - frames[0].T_world_cam[:3, 3]) @ frames[0].T_world_cam[:3, :3]
        return int(np.sum(np.abs(cam[:, 2] - 0.6) < 0.02))
    assert n_patch() > 50
    for f in frames[1:4]:
        m.integrate(f)
    assert n_patch() == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_cpu(frames):
    maps = [PointMap(FusionConfig(), device=d) for d in ("cpu", "cuda")]
    for f in frames[:5]:
        reps = [m.integrate(f, _semantics(f, 4)) for m in maps]
        assert abs(reps[0].n_points - reps[1].n_points) <= 0.001 * reps[0].n_points
    a, b = (m.to_numpy() for m in maps)
    np.testing.assert_allclose(np.sort(a["points_xyz"], 0), np.sort(b["points_xyz"], 0), atol=1e-3)
