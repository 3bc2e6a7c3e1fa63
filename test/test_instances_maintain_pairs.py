"""The merge pass's candidate search against the all-pairs reference it replaced."""

from __future__ import annotations

import numpy as np
import pytest

from lang3d_ros.instances.associate import CoObservation
from lang3d_ros.instances.config import InstanceConfig
from lang3d_ros.instances.maintain import _overlapping_pairs, merge_candidates
from lang3d_ros.instances.table import SegmentTable


def _all_pairs(lo: np.ndarray, hi: np.ndarray, min_fraction: float) -> set[tuple[int, int]]:
    inter = np.prod(np.clip(np.minimum(hi[:, None], hi[None]) - np.maximum(lo[:, None], lo[None]), 0, None), 2)
    vol = np.prod(hi - lo, axis=1)
    frac = inter / np.minimum(vol[:, None], vol[None])
    ia, ib = np.nonzero(np.triu(frac >= min_fraction, 1))
    return set(zip(ia.tolist(), ib.tolist()))


@pytest.mark.parametrize("min_fraction", [0.0, 0.3, 0.6, 1.0])
def test_sweep_finds_the_all_pairs_overlaps(min_fraction):
    rng = np.random.default_rng(7)
    lo = rng.uniform(0, 6, (400, 3))
    hi = lo + rng.uniform(0.02, 1.5, (400, 3))
    lo[::37] = lo[1::37][: len(lo[::37])]  # equal starts and nested boxes
    hi[::37] = hi[1::37][: len(hi[::37])]
    ia, ib = _overlapping_pairs(lo, hi, min_fraction)
    got = set(zip(ia.tolist(), ib.tolist()))
    assert got == _all_pairs(lo, hi, min_fraction) and len(got) == len(ia)
    assert all(a < b for a, b in got)


def test_merge_candidates_by_box_and_by_co_observation():
    """Two overlapping segments with agreeing features merge unless seen apart; a co-observed pair merges when
    together outweighs apart; different levels never pair."""
    cfg = InstanceConfig()
    t = SegmentTable(4)
    e = np.eye(4, dtype=np.float32)
    t.append(0, e[[0, 0, 0, 1]], np.ones(4, np.float32), 0, 1)  # ids 0-3 on level 0
    t.append(1, e[[0]], np.ones(1, np.float32), 0, 1)  # id 4 on level 1, same place as 0
    t.n_points[:] = 20
    t.aabb_min[:] = [[0, 0, 0], [0.1, 0, 0], [3, 3, 0], [0, 0, 0], [0, 0, 0]]
    t.aabb_max[:] = [[1, 1, 1], [1.1, 1, 1], [3.2, 3.2, 0.2], [1, 1, 1], [1, 1, 1]]
    co = CoObservation()
    assert sorted(merge_candidates(t, co, cfg)) == [(0, 1)]  # 3 overlaps 0 and 1 but disagrees; 4 is level 1
    co.add(0, 1, 0, 1)  # seen apart once: no box merge
    co.add(0, 2, 3, 1)  # covered by one mask 3 times, apart once: merge by co-observation
    assert sorted(merge_candidates(t, co, cfg)) == [(0, 2)]
