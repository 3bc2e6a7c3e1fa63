"""scripts/gpu_check.sh's render-service step, as far as a CPU runs it: the RenderRelevancy library call timed from a
map file's Gaussians (upsampled coded field) and from the points, at toy sizes; the step is planned before training
and skipped with the other gsplat steps when gsplat does not build."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_render_service_step_measures_both_fields_on_cpu():
    gc = _gpu_check()
    res = gc.render_service("cpu", width=80, height=60, frames=4, gaussians=60_000, repeats=1, seed=46)
    assert res["render_image"] == "80x60" and res["render_gaussians"] == 60_000 > res["render_map_points"] > 1000
    for name in ("gaussians", "points"):
        assert 0 < res[f"render_{name}_p50_ms"] <= res[f"render_{name}_p95_ms"] <= res[f"render_{name}_max_ms"]
        hits, tried = map(int, res[f"render_{name}_best_pixel_in_gt_box"].split("/"))
        assert tried >= 2 and hits >= 1, res


def test_render_service_is_planned_before_training_and_needs_gsplat(tmp_path, monkeypatch):
    gc = _gpu_check()
    steps = gc.plan(sys.executable)
    names = [s[0] for s in steps]
    assert names.index("render_service") == len(names) - 2 and names[-1] == "training"
    cmd, cap = steps[names.index("render_service")][1:]
    assert cmd[-1] == "render_service" in gc.CHILD_STEPS and cap <= 240
    # without gsplat the render step is skipped like parity and training (not run on the CPU rasterizer)
    ran = []

    def fake_run_step(name, command, cap_s, deadline, env):
        ran.append(name)
        return gc.StepResult(name, command, "failed" if name == "gsplat_build" else "passed")

    monkeypatch.setattr(gc, "run_step", fake_run_step)
    monkeypatch.setattr(gc, "cuda_or_exit", lambda: None)
    monkeypatch.setattr("torch.cuda.get_device_capability", lambda *a: (9, 0))
    assert gc.main(["--out", str(tmp_path), "--budget-s", "60"]) == 1
    assert "render_service" not in ran and "training" not in ran and "semantics" in ran
    assert "| render_service | skipped |" in (tmp_path / "gpu_check.md").read_text()
