"""gsplat (CUDA) against the tiled PyTorch rasterizer on real garden points; skips without CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lang3d_ros.gaussians.render import render

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (gsplat rasterization is CUDA-only)")


@cuda
def test_gsplat_matches_torch_rasterizer(garden_npz):
    pytest.importorskip("gsplat")
    d = np.load(garden_npz)
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(d["means3d"].shape[0], generator=g)[:30000]
    n = idx.numel()
    means = torch.from_numpy(d["means3d"])[idx].to(dev)
    quats = torch.randn(n, 4, generator=g).to(dev)
    scales = (torch.rand(n, 3, generator=g) * 0.03 + 0.005).to(dev)
    opac = (torch.rand(n, generator=g) * 0.9 + 0.05).to(dev)
    feats = torch.cat([torch.from_numpy(d["colors"])[idx].float() / 255, torch.randn(n, 3, generator=g)], 1).to(dev)
    W, H = int(d["width"]) // 2, int(d["height"]) // 2
    Ks = torch.from_numpy(d["Ks"]).float().clone()
    Ks[:, :2] /= 2
    viewmats, Ks = torch.from_numpy(d["viewmats"]).float().to(dev), Ks.to(dev)
    outs, grads = {}, {}
    for backend in ("gsplat", "torch"):
        leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, feats)]
        out = render(*leaves, viewmats, Ks, W, H, backend=backend, expected_depth=True)
        assert out.meta["backend"] == backend
        (out.image.square().sum() + out.alpha.sum()).backward()
        outs[backend] = out
        grads[backend] = [t.grad for t in leaves]
    a, b = outs["gsplat"], outs["torch"]
    assert (a.image - b.image).abs().mean() < 1e-5 and (a.image - b.image).abs().max() < 1e-2
    assert (a.alpha - b.alpha).abs().mean() < 1e-5
    valid = (a.alpha > 0.5) & (b.alpha > 0.5)
    assert torch.allclose(a.depth[valid], b.depth[valid], rtol=1e-3)
    for name, ga, gb in zip(["means", "quats", "scales", "opacities", "features"], grads["gsplat"], grads["torch"]):
        rel = (ga - gb).norm() / gb.norm().clamp(min=1e-12)
        assert rel < 1e-2, f"{name}: relative gradient difference {rel:.2e}"


# --------------------------------------------------------------------------- scripts/gpu_check.sh (runs these tests)
REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def _gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    __import__("sys").modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_gpu_check_stops_at_once_without_cuda(tmp_path):
    import subprocess

    p = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, p.stdout + p.stderr
    assert "no CUDA device" in p.stderr and "Nothing was measured" in p.stderr
    assert not (tmp_path / "out").exists()


def test_gpu_check_steps_run_and_report_on_cpu(tmp_path):
    """The check's own measurements and bookkeeping, at toy sizes on the CPU (torch rasterizer on both sides)."""
    import sys
    import time

    gc = _gpu_check()
    par = gc.parity_numbers("cpu", ("torch", "torch"), n=500, width=48, height=32)
    assert par["image_max_abs"] == 0.0 and par["grad_rel_means"] == 0.0 and par["parity_image"] == "48x32"
    speed = gc.training_speed("cpu", width=64, height=48, frames=2, stride=8, iterations=2, warmup=1)
    assert speed["backend"] == "torch" and speed["train_gaussians"] > 0 and speed["rgb_it_per_s"] > 0
    assert speed["language_it_per_s"] > 0 and speed["train_image"] == "64x48"
    deadline = time.monotonic() + 60
    ok = gc.run_step("ok", [sys.executable, "-c", f"print('{gc.RESULT_TAG}' + '{{\"x\": 3}}')"], 30, deadline, {})
    slow = gc.run_step("slow", [sys.executable, "-c", "import time; time.sleep(30)"], 1, deadline, {})
    bad = gc.run_step("bad", [sys.executable, "-c", "raise SystemExit(3)"], 30, deadline, {})
    late = gc.run_step("late", [sys.executable, "-c", "pass"], 30, time.monotonic(), {})
    assert (ok.status, ok.numbers) == ("passed", {"x": 3})
    assert [slow.status, bad.status, late.status] == ["timeout", "failed", "skipped"]
    jpath, mpath = gc.write_results(tmp_path, [ok, slow, bad, late], time.time())
    text = mpath.read_text()
    assert "| ok | passed |" in text and "| slow | timeout |" in text and "- x: 3" in text
    statuses = [s["status"] for s in __import__("json").loads(jpath.read_text())["steps"]]
    assert statuses == ["passed", "timeout", "failed", "skipped"]


@pytest.mark.slow
def test_gpu_check_plan_fits_the_budget_and_its_scripts_take_its_flags():
    """Every benchmark the check runs accepts the flags it passes (their --help lists them), the test file exists,
    and the caps fit the 8-minute budget (the sum may exceed the default budget; steps share what is left)."""
    import subprocess
    import sys

    gc = _gpu_check()
    steps = gc.plan(sys.executable)
    assert [s[0] for s in steps][:2] == ["environment", "query"] and steps[-1][0] == "training"
    assert max(cap for _, _, cap in steps) <= 240 and 300 <= 450 <= 8 * 60
    for name, cmd, _ in steps:
        if cmd[1].startswith("benchmarks/") and cmd[1] != "benchmarks/gpu_check.py":
            helptext = subprocess.run(
                [sys.executable, cmd[1], "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
            ).stdout
            for flag in (a for a in cmd[2:] if a.startswith("--")):
                assert flag in helptext, f"{name}: {cmd[1]} has no {flag}"
        elif cmd[1] == "-m":
            assert (REPO / cmd[-1]).is_file()
        else:
            assert cmd[3] in gc.CHILD_STEPS
