"""The numba backend (numba_backend.py, cpu_kernels.py) against the torch backend, the reference: stage by
stage and frame by frame."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from lang3d_ros.datasets.frame import Frame
from lang3d_ros.fusion import cpu_kernels
from lang3d_ros.fusion.analytic_scene import Corridor, corridor_walk
from lang3d_ros.fusion.backend import make_backend
from lang3d_ros.fusion.config import FusionConfig
from lang3d_ros.fusion.pointfusion import PointMap
from lang3d_ros.fusion.types import FrameObservation, PointStore
from lang3d_ros.fusion.voxel_index import LayeredIndex
from lang3d_ros.geometry.camera import Intrinsics

pytestmark = pytest.mark.skipif(not cpu_kernels.AVAILABLE, reason="numba is not installed")

INTR = Intrinsics(131.25, 131.25, 79.5, 59.5, 160, 120)


def _pixel_labels(frame: Frame, shift: int) -> np.ndarray:
    """(3, H*W) int32: per level a segment id per pixel from the frame's wall ids: covered, partly, uncovered;
    ``shift`` renames the ids between frames so that votes disagree and labels switch."""
    seg = frame.instance_map.astype(np.int32).reshape(-1)
    cols = np.tile(np.arange(frame.width) // 40, frame.height).astype(np.int32)
    return np.stack([seg * 4 + (cols + shift) % 4, np.where(seg % 3 == 0, -1, seg), np.full_like(seg, -1)])


def _run_both(frames, labelled=None, **cfg):
    """Fuse ``frames`` through a torch and a numba map; frames with labelled[i] also vote labels."""
    maps = {b: PointMap(FusionConfig(backend=b, **cfg), device="cpu") for b in ("torch", "numba")}
    for i, f in enumerate(frames):
        vote = labelled is not None and labelled[i]
        reps = {b: m.integrate(f, want_pixel_slots=vote) for b, m in maps.items()}
        a, b = reps["torch"], reps["numba"]
        counts = ("accepted", "n_matched", "n_new", "n_merged", "n_points", "n_pruned", "n_candidates")
        assert [getattr(a, k) for k in counts] == [getattr(b, k) for k in counts], (i, a, b)
        if vote:
            np.testing.assert_array_equal(a.pixel_slot, b.pixel_slot)
            np.testing.assert_array_equal(a.pixel_alpha, b.pixel_alpha)
            for m, r in zip(maps.values(), (a, b)):
                m.vote_labels(r.pixel_slot, r.pixel_alpha, _pixel_labels(f, i))
    return maps["torch"], maps["numba"]


def _assert_same_map(ref: PointMap, got: PointMap) -> None:
    a, b = ref.state_dict(), got.state_dict()
    assert a.keys() == b.keys()
    for k in ("voxel_key", "birth_frame", "frame_count", "labels"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for k in ("points_xyz", "normals", "colors", "confidence", "label_weight"):
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_backend_is_chosen_and_checked():
    assert PointMap(FusionConfig(backend="auto"), device="cpu").backend == "numba"
    assert PointMap(FusionConfig(backend="torch"), device="cpu").backend == "torch"
    with pytest.raises(ValueError, match="backend"):
        FusionConfig(backend="opencl").validate()


@pytest.mark.parametrize("cpu_threads", [1, 3])
def test_backends_agree_on_corridor_with_labels_and_revisits(cpu_threads):
    """Same counts and pixel slots every frame and the same map (slot for slot, labels included) on a walk that
    revisits, prunes, merges and compacts its index; frames without labels between keyframes, label ids that
    change between frames (votes against, switches), the frame split between 3 threads (uneven chunks)."""
    walk = list(corridor_walk(Corridor(length_m=5.0), 8, INTR, step_m=0.4, noise_m=0.003, seed=5, back_and_forth=True))
    frames = walk + walk
    keyframes = [i % 3 != 0 for i in range(len(frames))]
    ref, got = _run_both(
        frames, keyframes, prune_after_frames=4, cpu_threads=cpu_threads, index_delta_capacity=3000
    )  # small: index merges and compactions happen every frame or two
    assert ref.num_points > 5_000
    lab = ref.to_numpy()["labels"]
    assert (lab[0] >= 0).mean() > 0.5 and (lab[1] >= 0).any() and (lab[2] == -1).all()
    _assert_same_map(ref, got)


def test_backends_agree_on_real_frames_with_holes(gradslam_dir):
    d = {n: np.load(gradslam_dir / f"{n}.npy") for n in ("colors", "depths", "intrinsics", "poses")}
    intr = Intrinsics.from_K(d["intrinsics"][0, 0], 160, 120)
    frames = []
    for s in range(3):
        depth = d["depths"][0, s, ..., 0].astype(np.float32).copy()
        depth[10:14] = np.nan  # holes of every kind next to valid depth
        depth[20:22, :40] = np.inf
        depth[30:33, 50:] = -1.0
        pose = d["poses"][0, s].astype(np.float64)
        frames.append(Frame(d["colors"][0, s].astype(np.uint8), depth, intr, pose, index=s))
    for mode in ("radial", "gradslam"):
        ref, got = _run_both(frames + frames, confidence_mode=mode, min_depth_m=0.0, max_depth_m=10.0)
        _assert_same_map(ref, got)


@pytest.mark.parametrize("edge_normals", [False, True])
def test_observe_kernel_matches_torch_vertex_and_normal_maps(gradslam_dir, edge_normals):
    depth = np.load(gradslam_dir / "depths.npy")[0, 0, ..., 0].astype(np.float32).copy()
    depth[5, 5:9] = np.nan
    depth[60, :] = 0.0
    depth[20:80:3, 30:120:4] = 0.0  # dropouts: pixels next to them use the other neighbour with edge_normals
    intr = Intrinsics.from_K(np.load(gradslam_dir / "intrinsics.npy")[0, 0], 160, 120)
    pose = np.load(gradslam_dir / "poses.npy")[0, 1].astype(np.float64)
    f = Frame(np.zeros((120, 160, 3), np.uint8), depth, intr, pose)
    obs = {
        b: PointMap(
            FusionConfig(backend=b, min_depth_m=0.0, max_depth_m=10.0, edge_normals=edge_normals), device="cpu"
        )._observe(f)
        for b in ("torch", "numba")
    }
    a, b = obs["torch"], obs["numba"]
    assert torch.equal(a.use, b.use) and int(a.use.sum()) > 10_000
    # gradSLAM's rule: the pixel, its right and its lower neighbour have depth; edge_normals adds the others
    # that have a neighbour with depth on each axis
    v = np.isfinite(depth) & (depth > 0)
    pad = np.pad(v, 1)
    right, left, down, up = pad[1:-1, 2:], pad[1:-1, :-2], pad[2:, 1:-1], pad[:-2, 1:-1]
    right[:, -1], down[-1, :] = left[:, -1], up[-1, :]  # the last column / row: the previous one
    rule = v & (right | left) & (down | up) if edge_normals else v & right & down
    assert np.array_equal(a.use.numpy().reshape(depth.shape), rule)
    u = a.use
    torch.testing.assert_close(b.vertex_world[u], a.vertex_world[u], rtol=0, atol=1e-6)
    torch.testing.assert_close(b.normal_world[u], a.normal_world[u], rtol=0, atol=1e-5)
    torch.testing.assert_close(b.alpha, a.alpha)
    torch.testing.assert_close(b.lo_m, a.lo_m)
    torch.testing.assert_close(b.hi_m, a.hi_m)


def _associate_one_pixel(backend: str, conf, dist_m, slots) -> int:
    """Points straight ahead of an identity camera, all landing on the centre pixel of a 5x5 image, through the
    backend's ``associate`` stage (candidates listed in the given slot order)."""
    cap = max(slots) + 1
    store = PointStore.empty(cap, torch.device("cpu"))
    store.nrm[:, 2] = -1.0
    store.key[:] = 0
    for s, c, dm in zip(slots, conf, dist_m):
        store.xyz[s] = torch.tensor([0.0, 0.0, 1.0 + dm])
        store.conf[s] = c
        store.alive[s] = True
    vw, nw, use = torch.zeros(25, 3), torch.zeros(25, 3), torch.zeros(25, dtype=torch.bool)
    vw[12, 2], nw[12, 2], use[12] = 1.0, -1.0, True
    obs = FrameObservation(
        5,
        5,
        Intrinsics(2.0, 2.0, 2.0, 2.0, 5, 5),
        torch.eye(3),
        torch.zeros(3),
        use,
        vw,
        nw,
        torch.ones(25),
        torch.zeros(25, 3, dtype=torch.uint8),
        torch.zeros(3),
        torch.ones(3),
    )
    be = make_backend(FusionConfig(backend=backend, dist_threshold_m=0.05), torch.device("cpu"))
    local = LayeredIndex(torch.device("cpu"), 100, be.index_kernels)
    local.main.keys, local.main.slots = torch.zeros(len(slots), dtype=torch.int64), torch.as_tensor(slots)
    target = be.new_target(25)
    n_cand, n_matched = be.associate(store, obs, local, target)
    assert n_cand == len(slots) and n_matched == 1
    return int(target[12])


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_association_many_to_one_rule(backend):
    """Highest confidence, then smallest distance, then lowest slot, in any candidate order."""
    assert _associate_one_pixel(backend, [1.0, 2.0, 1.5], [0.0, 0.02, 0.01], [4, 9, 2]) == 9
    assert _associate_one_pixel(backend, [2.0, 2.0, 2.0], [0.02, 0.01, 0.03], [4, 9, 2]) == 9
    assert _associate_one_pixel(backend, [2.0, 2.0, 2.0], [0.01, 0.01, 0.01], [4, 9, 2]) == 2
    assert _associate_one_pixel(backend, [2.0, 2.0], [0.01, 0.06], [3, 1]) == 3  # slot 1 fails the distance gate


def test_maps_in_two_threads_fuse_safely():
    """The kernels release the GIL and keep no shared state: two maps fusing at once give the solo result."""
    frames = list(corridor_walk(Corridor(length_m=4.0), 6, INTR, step_m=0.3, noise_m=0.002, seed=2))
    solo = PointMap(FusionConfig(), device="cpu")
    for f in frames:
        solo.integrate(f)
    maps = [PointMap(FusionConfig(), device="cpu") for _ in range(2)]
    errors = []

    def run(m):
        try:
            for f in frames:
                assert m.integrate(dataclasses.replace(f)).accepted
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(m,)) for m in maps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for m in maps:
        _assert_same_map(solo, m)


def _vote_both(n_slots: int, calls: list[tuple[np.ndarray, np.ndarray, np.ndarray]], dead=()) -> list[PointMap]:
    """Two maps with the same ``n_slots`` live points (slots 0..n-1; ``dead`` ones killed), the same vote calls."""
    frame = next(iter(corridor_walk(Corridor(length_m=4.0), 1, INTR, step_m=0.1, noise_m=0.0, seed=0)))
    maps = []
    for b in ("torch", "numba"):
        m = PointMap(FusionConfig(backend=b), device="cpu")
        assert m.integrate(frame).n_new >= n_slots
        m._kill(torch.as_tensor(list(dead), dtype=torch.int64))
        for slot, alpha, labels in calls:
            m.vote_labels(slot, alpha, labels)
        maps.append(m)
    return maps


def test_vote_rule_heaviest_label_then_boyer_moore():
    """Per point the label with the most alpha mass votes (lowest label on ties); same label adds, another
    subtracts and switches below zero; -1 pixels, slot -1, unknown and dead slots take no part."""
    slot = np.array([0, 0, 0, 1, 1, 2, -1, 10**9, 3], np.int64)
    alpha = np.array([0.5, 0.25, 0.5, 0.5, 0.5, 0.25, 1.0, 1.0, 1.0], np.float32)
    lab = np.array([7, 7, 3, 9, 4, -1, 5, 5, 5], np.int32)
    labels = np.stack([lab, lab, np.full_like(lab, -1)])
    second = (np.array([0, 1], np.int64), np.array([1.0, 0.25], np.float32), np.array([[3, 9]] * 3, np.int32))
    for m in _vote_both(5, [(slot, alpha, labels), second], dead=(3,)):
        # slot 0: 7 has 0.75 > 3's 0.5 -> (7, 0.75); then 3 with 1.0 -> switch to (3, 0.25)
        # slot 1: tie 9 / 4 at 0.5 -> 4 (lowest); then 9 with 0.25 -> (4, 0.25)
        lab0, w0 = m._store.label[0, :5].numpy(), m._store.label_w[0, :5].numpy()
        np.testing.assert_array_equal(lab0, [3, 4, -1, -1, -1], err_msg=m.backend)
        np.testing.assert_allclose(w0, [0.25, 0.25, 0, 0, 0], err_msg=m.backend)
        np.testing.assert_array_equal(m._store.label[2, :5].numpy(), [3, 9, -1, -1, -1], err_msg=m.backend)


def test_vote_kernel_matches_torch_on_random_votes():
    """Per-stage parity of the vote: many random calls (several labels per point, ties, zero alphas)."""
    rng = np.random.default_rng(11)
    calls = []
    for _ in range(12):
        p = 4000
        slot = rng.integers(-1, 600, p)
        alpha = rng.choice(np.float32([0.0, 0.25, 0.5, 0.75, 1.0]), p)  # exact sums: ties are real ties
        labels = rng.integers(-1, 6, (3, p)).astype(np.int32)
        calls.append((slot, alpha, labels))
    ref, got = _vote_both(600, calls, dead=(5, 17, 300))
    np.testing.assert_array_equal(ref._store.label.numpy(), got._store.label.numpy())
    np.testing.assert_array_equal(ref._store.label_w.numpy(), got._store.label_w.numpy())
    assert (ref._store.label.numpy()[:, :600] >= 0).mean() > 0.9


def _clone(store: PointStore) -> PointStore:
    return PointStore(**{f.name: getattr(store, f.name).clone() for f in dataclasses.fields(store)})


@pytest.mark.parametrize("merge_neighbour_px", [0, 1])
def test_stages_agree_one_by_one(merge_neighbour_px):
    """Each stage of the two backends on the same inputs (the torch stage's output feeds the next stage of both),
    on a map mid-walk: candidate blocks, association, leftovers (voxel owner, neighbour owner, grouping),
    accumulation, point update, new points, pixel slots, pruning. A rule changed in one backend only fails here,
    by stage."""
    cfg = FusionConfig(prune_after_frames=4, merge_neighbour_px=merge_neighbour_px, backend="torch")
    walk = list(corridor_walk(Corridor(length_m=5.0), 8, INTR, step_m=0.25, noise_m=0.003, seed=9))
    pm = PointMap(cfg, device="cpu")
    for f in walk[:5]:
        pm.integrate(f)
    keys, store = pm._keys, pm._store
    be = {b: make_backend(dataclasses.replace(cfg, backend=b), torch.device("cpu")) for b in ("torch", "numba")}
    obs = pm._observe(walk[5])

    blocks = {b: x.candidate_blocks(obs, keys) for b, x in be.items()}
    assert torch.equal(blocks["torch"], blocks["numba"]) and blocks["torch"].numel() > 10
    local = pm._index.gather_blocks(blocks["torch"], keys.shift)

    targets, counts = {}, {}
    for b, x in be.items():
        targets[b] = x.new_target(obs.num_pixels)
        counts[b] = x.associate(_clone(store), obs, local, targets[b])
    assert counts["torch"] == counts["numba"] and counts["torch"][1] > 1000
    assert torch.equal(targets["torch"], targets["numba"])

    left = {}
    for b, x in be.items():
        t = targets["torch"].clone()
        n_merged, new_keys = x.leftovers(_clone(store), obs, local, t, keys)
        left[b] = (t, n_merged, new_keys)
    assert torch.equal(left["torch"][0], left["numba"][0])
    assert left["torch"][1] == left["numba"][1] > 0
    assert torch.equal(left["torch"][2], left["numba"][2])
    target, new_keys = left["torch"][0], left["torch"][2]

    accs = {b: x.accumulate(_clone(store), obs, target, int(new_keys.numel())) for b, x in be.items()}
    a, n = accs["torch"], accs["numba"]
    assert torch.equal(a.uslots, n.uslots) and torch.equal(a.tid, n.tid)
    for k in ("wsum", "wmax", "mean"):
        torch.testing.assert_close(getattr(n, k), getattr(a, k), rtol=1e-5, atol=1e-6, msg=k)

    stores = {b: _clone(store) for b in be}
    slots = torch.arange(pm._used, pm._used + new_keys.numel())
    for b, x in be.items():
        stores[b] = stores[b].grown(max(store.capacity, pm._used + new_keys.numel()))
        x.update_points(stores[b], a)
        x.write_new_points(stores[b], a, slots, new_keys, 5)
    for f in dataclasses.fields(PointStore):
        torch.testing.assert_close(
            getattr(stores["numba"], f.name), getattr(stores["torch"], f.name), rtol=1e-5, atol=1e-6, msg=f.name
        )

    pix = {b: x.pixel_slots(obs, target, slots) for b, x in be.items()}
    for ref_arr, got_arr in zip(pix["torch"], pix["numba"]):
        np.testing.assert_array_equal(got_arr, ref_arr)
    assert (pix["torch"][0] >= pm._used).sum() == (target <= -2).sum() > 0  # new points' pixels name their slots

    every = torch.arange(pm._used + new_keys.numel())
    dead = {b: x.kill_unstable(stores[b], every, 5) for b, x in be.items()}  # the new points: confidence < 1
    assert torch.equal(dead["torch"], dead["numba"]) and dead["torch"].numel() > 0
    assert torch.equal(stores["torch"].alive, stores["numba"].alive)

    # pruning's visibility test, every live point against the remembered frames (1-4) and those after frame 2
    live = torch.from_numpy(pm.live_slots())
    assert pm._views.shape[0] == 4 and sorted(pm._views.frame_no.tolist()) == [1, 2, 3, 4]
    for born in (0, 2):
        seen = {b: x.seen_after(store, live, pm._views, born) for b, x in be.items()}
        assert torch.equal(seen["torch"], seen["numba"])
        assert 0 < int(seen["torch"].sum()) < live.numel()  # the walk left some points behind it
