"""/diagnostics grading (DiagnosticsMonitor, thresholds from DiagnosticsConfig) and the autosave rotation, without
ROS processes: a status stream with known counters in, levels and values out; saves of a real LanguageMap."""

from __future__ import annotations

import pytest

from lang3d_ros.config_base import ConfigError, from_mapping
from lang3d_ros.ros.config import AutosaveConfig, DiagnosticsConfig
from lang3d_ros.ros.diagnostics import DiagnosticsMonitor


def _status(received, fused, dropped=0, rejected=0, **extra):
    st = {
        "frames_received": received,
        "frames_fused": fused,
        "frames_dropped": dropped,
        "frames_rejected": rejected,
        "semantics_ms": 100.0,
        "memory_mb": 50.0,
        "num_points": 1000,
        "training_state": "idle",
    }
    st.update(extra)
    return st


def _by_part(items):
    return {d.name.split(": ")[1]: d for d in items}


def test_levels_follow_the_configured_thresholds():
    cfg = DiagnosticsConfig(
        window_s=10.0,
        drop_fraction_warn=0.3,
        drop_fraction_error=0.8,
        min_fusion_hz_warn=0.5,
        semantics_latency_warn_ms=500.0,
        semantics_latency_error_ms=2000.0,
        memory_warn_mb=100.0,
        memory_error_mb=200.0,
        top_reasons=2,
    )
    mon = DiagnosticsMonitor(cfg, "lang3d_mapper")
    _by_part(mon.update(_status(0, 0), 0.0))
    healthy = _by_part(mon.update(_status(50, 48, dropped=2), 5.0))  # 48 fused in 5 s, 4% lost
    assert {p: d.level for p, d in healthy.items()} == {
        p: "OK" for p in ("intake", "semantics", "map", "models", "training")
    }
    assert float(healthy["intake"].values["fusion_rate_hz"]) == pytest.approx(9.6)
    # 42 of 120 frames lost: WARN with the reasons, most frequent first
    reasons = {"pipeline busy": 30, "no pose for the image stamp": 10, "stale stamp": 1}
    warn = _by_part(mon.update(_status(120, 78, dropped=42, reasons=reasons), 10.0))
    assert warn["intake"].level == "WARN" and "dropped or rejected" in warn["intake"].message
    assert warn["intake"].values["top_reasons"] == "pipeline busy (30); no pose for the image stamp (10)"
    # over the last 10 s (t = 5..15) 130 of 160 frames lost: ERROR
    err = _by_part(mon.update(_status(210, 78, dropped=132), 15.0))
    assert err["intake"].level == "ERROR" and err["intake"].message.startswith("81% of frames")
    # the window forgets: after 10 s of healthy intake the old losses no longer count
    mon.update(_status(310, 178, dropped=132), 25.0)
    ok = _by_part(mon.update(_status(410, 278, dropped=132), 35.0))
    assert ok["intake"].level == "OK", ok["intake"]
    # semantics latency, memory, model fallback and training error
    graded = _by_part(
        mon.update(
            _status(
                410,
                278,
                dropped=132,
                semantics_ms=900.0,
                memory_mb=250.0,
                llm_status="fallback (parser): weights missing",
                training_state="error",
            ),
            36.0,
        )
    )
    assert (graded["semantics"].level, graded["map"].level, graded["models"].level, graded["training"].level) == (
        "WARN",
        "ERROR",
        "WARN",
        "ERROR",
    )
    assert _by_part(mon.update(_status(410, 278, dropped=132, semantics_ms=2500.0), 37.0))["semantics"].level == "ERROR"


def test_no_frames_is_not_an_error_and_config_is_checked():
    mon = DiagnosticsMonitor(DiagnosticsConfig(), "lang3d_query_server")
    idle = _by_part(mon.update({"num_points": 5, "source": "file:/maps/a.l3dmap"}, 1.0))
    assert idle["intake"].level == "OK" and idle["intake"].message == "no frames in the window"
    assert idle["map"].values["source"] == "file:/maps/a.l3dmap"
    with pytest.raises(ConfigError):
        from_mapping(DiagnosticsConfig, {"drop_fraction_warn": 0.9, "drop_fraction_error": 0.5})
    with pytest.raises(ConfigError):
        from_mapping(AutosaveConfig, {"keep": 0})


def test_autosave_is_atomic_rotates_and_resumes(tmp_path):
    from conftest import synthetic_config

    from lang3d_ros.datasets.synthetic import DEFAULT_INTRINSICS, generate_scene, make_trajectory, render_frames
    from lang3d_ros.mapping.build import build_stack, ground_truth_tables
    from lang3d_ros.ros.autosave import Autosaver, autosaves

    scene = generate_scene(seed=47, n_objects=4)
    cfg = synthetic_config(mapping={"train_gaussians": False})
    stack = build_stack(cfg, **ground_truth_tables(scene), start=False)
    lines = []
    saver = Autosaver(AutosaveConfig(keep=2), str(tmp_path), stack.language_map, lines.append)
    assert saver.save("periodic") is None and "empty" in lines[-1]  # nothing to save yet
    frames = list(
        render_frames(scene, make_trajectory(scene, "orbit", 6, seed=47), DEFAULT_INTRINSICS.scaled(160, 120), seed=47)
    )
    paths = []
    for f in frames[:3]:
        stack.pipeline.process_now(f)
        paths.append(saver.save("periodic"))
        assert saver.save("periodic") is None  # unchanged since the last save: no new file
    kept = autosaves(tmp_path)
    assert kept == paths[1:] and not paths[0].exists()  # the newest 2, oldest first
    assert not list(tmp_path.glob(".*"))  # no temp file left behind
    n_saved = stack.language_map.num_points
    # a restart resumes from the newest one
    fresh = build_stack(cfg, **ground_truth_tables(scene), start=False)
    resumed = Autosaver(AutosaveConfig(keep=2), str(tmp_path), fresh.language_map, lines.append)
    assert resumed.resume() == paths[-1] and fresh.language_map.num_points == n_saved > 0
    stack.pipeline.process_now(frames[3])
    assert saver.save("SIGTERM", force=True) is not None and len(autosaves(tmp_path)) == 2
