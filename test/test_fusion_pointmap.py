"""PointMap behaviour: bad input leaves the map bit-identical, bounded memory, culling, label votes, map files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.fusion.analytic_scene import Corridor, corridor_walk
from lang3d_ros.fusion.config import FusionConfig
from lang3d_ros.fusion.pointfusion import STATE_VERSION, PointMap
from lang3d_ros.geometry.camera import Intrinsics

INTR = Intrinsics(131.25, 131.25, 79.5, 59.5, 160, 120)  # 640x480 Kinect-like optics at 160x120


def _labels(frame: Frame, levels=(True, True, True), offset: int = 0) -> np.ndarray:
    """(3, H*W) int32 pixel labels: per level the frame's wall id (+ offset), or -1 for a level switched off."""
    seg = frame.instance_map.astype(np.int32).reshape(-1) + offset
    return np.stack([seg if on else np.full_like(seg, -1) for on in levels])


def _fuse_and_vote(m: PointMap, frame: Frame, labels: np.ndarray):
    rep = m.integrate(frame, want_pixel_slots=True)
    assert rep.accepted, rep.reason
    m.vote_labels(rep.pixel_slot, rep.pixel_alpha, labels)
    return rep


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.asarray(a[k]).dtype == np.asarray(b[k]).dtype and np.array_equal(a[k], b[k]) for k in a
    )


@pytest.fixture(scope="module")
def frames():
    return list(corridor_walk(Corridor(length_m=6.0), 12, INTR, step_m=0.1, noise_m=0.002, seed=3))


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_bad_input_is_rejected_and_changes_nothing(frames, backend):
    m = PointMap(FusionConfig(backend=backend), device="cpu")
    for f in frames[:2]:
        rep = _fuse_and_vote(m, f, _labels(f))
    before = m.state_dict()
    good = frames[2]
    bad_pose = good.T_world_cam.copy()
    bad_pose[0, 0] = np.nan
    scaled = good.T_world_cam.copy()
    scaled[:3, :3] *= 1.1
    cases = {
        "non-finite pose": dataclasses.replace(good, T_world_cam=bad_pose),
        "non-rigid pose": dataclasses.replace(good, T_world_cam=scaled),
        "rgb/depth size": dataclasses.replace(good, rgb=good.rgb[:, :-2]),
        "all-zero depth": dataclasses.replace(good, depth_m=np.zeros_like(good.depth_m)),
        "all-NaN depth": dataclasses.replace(good, depth_m=np.full_like(good.depth_m, np.nan)),
        "negative depth": dataclasses.replace(good, depth_m=-good.depth_m),
        "integer depth": dataclasses.replace(good, depth_m=good.depth_m.astype(np.int32)),
        "not a frame": "frame",
    }
    for name, frame in cases.items():
        rep_bad = m.integrate(frame, want_pixel_slots=True)
        assert not rep_bad.accepted and rep_bad.reason and rep_bad.pixel_slot is None, name
        assert rep_bad.n_points == m.num_points
        assert _state_equal(before, m.state_dict()), name
    slot, alpha, lab = rep.pixel_slot, rep.pixel_alpha, _labels(frames[1], offset=5)
    nan_alpha, inf_alpha, big_lab = alpha.copy(), alpha.copy(), lab.astype(np.int64)
    nan_alpha[3], inf_alpha[5], big_lab[1, 7] = np.nan, np.inf, 2**31
    votes = {
        "slot 2-D": (slot[None], alpha, lab),
        "slot float": (slot.astype(np.float64), alpha, lab),
        "alpha length": (slot, alpha[:-1], lab),
        "alpha NaN": (slot, nan_alpha, lab),
        "alpha inf": (slot, inf_alpha, lab),
        "alpha negative": (slot, -alpha - 1, lab),
        "labels 2 levels": (slot, alpha, lab[:2]),
        "labels float": (slot, alpha, lab.astype(np.float32)),
        "labels below -1": (slot, alpha, lab - 10),
        "labels above int32": (slot, alpha, big_lab),
        "labels uint32 above int32": (slot, alpha, np.abs(big_lab).astype(np.uint32)),
    }
    for name, args in votes.items():
        with pytest.raises(ValueError):
            m.vote_labels(*args)
        assert _state_equal(before, m.state_dict()), name
    m.vote_labels(slot, alpha, lab)
    assert not _state_equal(before, m.state_dict())


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_labels_follow_votes_and_uncovered_levels_stay_unlabelled(frames, backend):
    m = PointMap(FusionConfig(backend=backend), device="cpu")
    f0 = frames[0]
    rep = _fuse_and_vote(m, f0, _labels(f0, levels=(False, True, True)))
    used = rep.pixel_slot >= 0
    assert used.sum() > 10_000 and np.all(rep.pixel_alpha[used] > 0) and np.all(rep.pixel_alpha[~used] == 0)
    assert set(np.unique(rep.pixel_slot[used])) == set(m.live_slots())  # every new point came from a pixel
    assert torch.all(m.labels(0) == -1) and torch.all(m.label_weight(0) == 0)
    wall, _ = Corridor(length_m=6.0).wall_and_color(m.points_xyz.numpy())
    assert np.mean(m.labels(2).numpy() == wall) > 0.95  # each point's label is the wall it lies on
    lab1, w1 = m.labels(1).clone(), m.label_weight(1).clone()
    rep = _fuse_and_vote(m, f0, _labels(f0, levels=(False, False, True)))  # level 1 uncovered now
    assert torch.equal(m.labels(1)[: len(lab1)], lab1) and torch.equal(m.label_weight(1)[: len(w1)], w1)
    assert torch.all(m.label_weight(2)[: len(w1)] > w1)  # the same label again: the weight grows
    # slot_labels reads labels through pixel slots; -1 for slot -1 and unknown slots
    got = m.slot_labels(2, rep.pixel_slot)
    used = rep.pixel_slot >= 0
    assert np.mean(got[used] == f0.instance_map.reshape(-1)[used]) > 0.95
    assert np.all(got[~used] == -1)
    np.testing.assert_array_equal(m.slot_labels(2, np.array([-1, 10**9], np.int64)), [-1, -1])
    # relabel: wall 1 -> 7, wall 2 dropped, labels beyond the lut untouched
    before, w_before = m.labels(2).numpy().copy(), m.label_weight(2).numpy().copy()
    assert {1, 2, 3} <= set(before.tolist())
    m.relabel(2, np.array([0, 7, -1], np.int32))
    after, w = m.labels(2).numpy(), m.label_weight(2).numpy()
    np.testing.assert_array_equal(after[before == 1], 7)
    assert np.all(after[before == 2] == -1) and np.all(w[before == 2] == 0)
    np.testing.assert_array_equal(after[before >= 3], before[before >= 3])
    np.testing.assert_array_equal(w[before != 2], w_before[before != 2])
    with pytest.raises(ValueError):
        m.relabel(2, np.array([[0]], np.int32))
    with pytest.raises(ValueError):
        m.relabel(2, np.array([-2], np.int32))
    with pytest.raises(ValueError):
        m.labels(3)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_other_labels_outvote_and_dead_points_are_reset(frames, backend):
    cfg = FusionConfig(backend=backend, prune_after_frames=2, stable_confidence=1e9, prune_only_seen=False)
    m = PointMap(cfg, device="cpu")
    f0 = frames[0]
    _fuse_and_vote(m, f0, _labels(f0))
    n0 = m.num_points
    wall, _ = Corridor(length_m=6.0).wall_and_color(m.points_xyz.numpy())
    # the same pixels voting another label with the same mass: a draw (weight 0, label kept) ...
    rep = m.integrate(f0, want_pixel_slots=True)
    w_first = m.label_weight(0)[:n0].clone()
    m.vote_labels(rep.pixel_slot, rep.pixel_alpha, _labels(f0))  # second vote, same labels: w doubles
    m.vote_labels(rep.pixel_slot, rep.pixel_alpha, _labels(f0, offset=10))
    m.vote_labels(rep.pixel_slot, rep.pixel_alpha, _labels(f0, offset=10))
    assert np.mean(m.labels(0).numpy()[:n0] == wall) > 0.95  # two for, two against: kept
    assert float(m.label_weight(0)[:n0].max()) <= float(w_first.max()) + 1e-5
    m.vote_labels(rep.pixel_slot, rep.pixel_alpha, _labels(f0, offset=10))  # ... then outvoted
    assert np.mean(m.labels(0).numpy()[:n0] == wall + 10) > 0.95
    # every point is pruned (stable_confidence unreachable): pruned slots hold label -1, weight 0
    assert m.integrate(frames[1]).n_pruned >= n0  # frame 2 of the map: the points of frame 0 go (slots not reused yet)
    dead = np.setdiff1d(np.arange(n0), m.live_slots())
    assert len(dead) > 0.9 * n0
    assert np.all(m._store.label[:, dead].numpy() == -1) and np.all(m._store.label_w[:, dead].numpy() == 0)
    assert np.all(m.slot_labels(0, dead) == -1)


def test_state_dict_roundtrip_and_resume(frames):
    a = PointMap(FusionConfig(), device="cpu")
    for f in frames[:4]:
        _fuse_and_vote(a, f, _labels(f))
    b = PointMap(FusionConfig(), device="cpu")
    b.load_state_dict(a.state_dict())
    assert _state_equal(a.state_dict(), b.state_dict())
    assert a.state_dict()["labels"].dtype == np.int32 and int(a.state_dict()["version"]) == STATE_VERSION == 2
    ra, rb = _fuse_and_vote(a, frames[4], _labels(frames[4])), _fuse_and_vote(b, frames[4], _labels(frames[4]))
    assert (ra.n_matched, ra.n_new, ra.n_points) == (rb.n_matched, rb.n_new, rb.n_points)
    np.testing.assert_allclose(np.sort(a.to_numpy()["confidence"]), np.sort(b.to_numpy()["confidence"]), rtol=1e-6)
    np.testing.assert_array_equal(np.sort(a.to_numpy()["labels"], 1), np.sort(b.to_numpy()["labels"], 1))
    st = a.state_dict()
    lw_nan = st["label_weight"].copy()
    lw_nan[1, 3] = np.nan
    bad_states = {
        "normals rows": dict(st, normals=st["normals"][:-1]),
        "labels rows": dict(st, labels=st["labels"][:, :-1]),
        "labels int64": dict(st, labels=st["labels"].astype(np.int64)),
        "labels below -1": dict(st, labels=st["labels"] - 5),
        "weight NaN": dict(st, label_weight=lw_nan),
        "weight negative": dict(st, label_weight=-1.0 - st["label_weight"]),
        "no labels": {k: v for k, v in st.items() if k != "labels"},
    }
    before = b.state_dict()
    for name, bad in bad_states.items():
        with pytest.raises(ValueError):
            b.load_state_dict(bad)
        assert _state_equal(before, b.state_dict()), name
    with pytest.raises(ValueError, match="version 1"):
        b.load_state_dict(dict(st, version=np.array(1)))
    assert _state_equal(before, b.state_dict())


def test_empty_map_answers_every_accessor():
    """Before the first frame (capacity 0): sizes, labels, votes, relabel and map files work on nothing."""
    m = PointMap(FusionConfig(), device="cpu")
    assert m.bytes_per_point == 97 and m.num_points == 0
    assert m.labels(0).shape == (0,) and m.live_slots().shape == (0,)
    np.testing.assert_array_equal(m.slot_labels(1, np.array([0, -1], np.int64)), [-1, -1])
    m.vote_labels(np.array([0], np.int64), np.array([1.0], np.float32), np.zeros((3, 1), np.int32))
    m.relabel(2, np.array([1], np.int32))
    b = PointMap(FusionConfig(), device="cpu")
    b.load_state_dict(m.state_dict())
    assert _state_equal(m.state_dict(), b.state_dict()) and b.num_points == 0


def test_bytes_per_point_from_allocated_arrays(frames):
    """<= 128 B/point all-in with 3 label levels (issue 13), counted from the per-slot arrays."""
    m = PointMap(FusionConfig(), device="cpu")
    _fuse_and_vote(m, frames[0], _labels(frames[0]))
    st = m._store
    per_slot = [st.xyz, st.nrm, st.rgb, st.conf, st.key, st.birth, st.alive, st.scratch[:-1], st.label, st.label_w]
    assert len(per_slot) == len(dataclasses.fields(st))
    counted = sum(t.numel() * t.element_size() for t in per_slot) / st.capacity + 16  # + one index entry
    assert m.bytes_per_point == counted == 97
    assert m.bytes_per_point <= 128


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


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_a_surface_no_later_frame_could_see_is_kept_until_one_sees_through_it(frames, backend):
    """prune_only_seen: a patch seen in one frame survives frames that had no depth there or saw something in
    front of it, and goes once a frame sees through it; gradSLAM's rule (off) prunes it unseen."""
    f0 = frames[0]
    d = f0.depth_m.copy()
    d[50:70, 70:90] = 0.6  # a patch floating 0.6 m in front of the camera, in frame 0 only
    blind = f0.depth_m.copy()
    blind[40:80, 60:100] = 0.0  # no depth where the patch is
    occluded = f0.depth_m.copy()
    occluded[40:80, 60:100] = 0.3  # something nearer hides it

    def n_patch(m):
        cam = (m.points_xyz.numpy() - f0.T_world_cam[:3, 3]) @ f0.T_world_cam[:3, :3]
        return int(np.sum(np.abs(cam[:, 2] - 0.6) < 0.02))

    for only_seen in (True, False):
        m = PointMap(FusionConfig(backend=backend, prune_after_frames=3, prune_only_seen=only_seen), device="cpu")
        m.integrate(dataclasses.replace(f0, depth_m=d))
        n0 = n_patch(m)
        assert n0 > 50
        for depth in (blind, occluded, blind, occluded, blind):  # two full prune windows
            assert m.integrate(dataclasses.replace(f0, depth_m=depth)).accepted
        assert n_patch(m) == (n0 if only_seen else 0)
        if only_seen:
            for _ in range(4):  # the plain frame sees the wall behind the patch: seen through, not confirmed
                m.integrate(f0)
            assert n_patch(m) == 0
            assert m._views.shape == (3, *f0.depth_m.shape)  # one depth image per frame of the window, no more


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_a_point_observed_again_is_kept_whatever_its_confidence(frames, backend):
    """prune_only_seen: a point a later frame fused into is confirmed, even below stable_confidence (seen again
    near the image border, where alpha is low); gradSLAM's rule prunes it."""
    for only_seen in (True, False):
        cfg = FusionConfig(backend=backend, prune_after_frames=2, stable_confidence=1e9, prune_only_seen=only_seen)
        m = PointMap(cfg, device="cpu")
        n0 = m.integrate(frames[0]).n_points
        for _ in range(2):  # the second one prunes frame 0's points, after its new points took their slots
            m.integrate(frames[0])
        first = np.count_nonzero(m.live_slots() < n0)  # frame 0's points still alive
        assert first == n0 if only_seen else first < 0.05 * n0, (only_seen, first, n0)


def test_live_slots_match_torch_nonzero_after_pruning_and_eviction(frames):
    """The CPU fast path of the live-slot list (numpy flatnonzero) against torch.nonzero, the reference, on a map
    with holes (pruned and evicted points)."""
    m = PointMap(FusionConfig(max_points=6000, evict_fraction=0.2, prune_after_frames=2), device="cpu")
    for f in frames[:6]:
        m.integrate(f)
        ref = torch.nonzero(m._store.alive[: m._used]).squeeze(1)
        got = m._live()
        assert got.dtype == ref.dtype == torch.int64 and torch.equal(got, ref)
    assert m._used > m.num_points == len(m.live_slots())  # there are holes


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_cpu(frames):
    maps = [PointMap(FusionConfig(), device=d) for d in ("cpu", "cuda")]
    for f in frames[:5]:
        reps = [_fuse_and_vote(m, f, _labels(f)) for m in maps]
        assert abs(reps[0].n_points - reps[1].n_points) <= 0.001 * reps[0].n_points
    a, b = (m.to_numpy() for m in maps)
    np.testing.assert_allclose(np.sort(a["points_xyz"], 0), np.sort(b["points_xyz"], 0), atol=1e-3)
