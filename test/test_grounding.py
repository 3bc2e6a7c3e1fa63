"""Query grounding on segment tables: LERF relevancy per segment, level choice, which segments a query keeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lang3d_ros.config_base import ConfigError, from_mapping, to_mapping
from lang3d_ros.grounding.config import GroundingConfig
from lang3d_ros.grounding.ground import choose_level, segment_relevancy, select_segments
from lang3d_ros.grounding.objects import LEVELS
from lang3d_ros.grounding.relevancy import relevancy


def _unit(rng, n, d=32):
    v = rng.normal(size=(n, d))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_segment_relevancy_matches_the_torch_lerf_score_and_ranks_the_matching_segment_first():
    rng = np.random.default_rng(0)
    feats, canonical = _unit(rng, 50), _unit(rng, 4)
    q = feats[17] * 0.9 + _unit(rng, 1)[0] * 0.1
    q /= np.linalg.norm(q)
    rel = segment_relevancy(feats, q, canonical)
    ref = relevancy(torch.as_tensor(feats), torch.as_tensor(q), torch.as_tensor(canonical)).numpy()
    np.testing.assert_allclose(rel, ref, atol=1e-5)
    assert rel.dtype == np.float32 and int(np.argmax(rel)) == 17 and np.all((rel > 0) & (rel < 1))
    assert segment_relevancy(np.zeros((0, 32), np.float32), q, canonical).shape == (0,)
    with pytest.raises(ValueError):
        segment_relevancy(feats, q[None], canonical)


def test_level_choice_named_best_and_ties_to_the_coarser_level():
    assert choose_level([0.9, 0.6, 0.7]) == 0
    assert choose_level([0.7, 0.7, 0.7]) == LEVELS.index("whole")
    assert choose_level([0.8, 0.8, -1.0]) == 1
    assert choose_level([0.9, 0.6, 0.7], "part") == 1
    with pytest.raises(ValueError, match="unknown level"):
        choose_level([0.9, 0.6, 0.7], "room")
    with pytest.raises(ValueError):
        choose_level([0.9, 0.6])


def test_select_segments_thresholds_orders_and_caps():
    cfg = GroundingConfig(absolute_threshold=0.5, relative_threshold=0.9, min_score=0.5, top_k=2)
    rel = np.array([0.30, 0.80, 0.78, 0.79, 0.60, 0.80], np.float32)
    n_points = np.array([10, 50, 300, 20, 10, 900])
    assert select_segments(rel, n_points, cfg).tolist() == [5, 1]  # ties by size, then top_k
    assert select_segments(rel, n_points, cfg, max_results=10).tolist() == [5, 1, 3, 2]
    assert select_segments(rel, n_points, cfg, max_results=10, min_score=0.795).tolist() == [5, 1]
    low = np.array([0.45, 0.40], np.float32)  # nothing above the absolute threshold
    assert select_segments(low, np.array([5, 5]), cfg).tolist() == []
    assert select_segments(np.zeros(0, np.float32), np.zeros(0, np.int64), cfg).tolist() == []
    with pytest.raises(ValueError):
        select_segments(rel, n_points[:3], cfg)


def test_config_from_mapping_and_rejects_bad_values():
    cfg = from_mapping(GroundingConfig, {"absolute_threshold": 0.55, "top_k": 3})
    assert cfg.absolute_threshold == 0.55 and cfg.top_k == 3
    assert from_mapping(GroundingConfig, to_mapping(cfg)) == cfg
    with pytest.raises(ConfigError, match="top_k"):
        from_mapping(GroundingConfig, {"top_k": 0})
    with pytest.raises(ConfigError, match="unknown"):
        from_mapping(GroundingConfig, {"cluster": {"eps_m": 0.1}})
