"""`lang3d demo` as a user runs it (a subprocess with the console entry point), at a small size, clean and with the
mask-noise model side by side: it prints the report's path, each run's numbers are those recompute(raw.json)
gives, and the side-by-side report shows both."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ros_helpers import require_ros

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_demo_writes_the_report_clean_and_noisy(tmp_path):
    require_ros()
    from lang3d_ros.evaluation.metrics import differences, recompute

    out = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lang3d_ros.cli",
            "demo",
            "--out",
            str(out),
            "--frames",
            "16",
            "--width",
            "128",
            "--height",
            "96",
            "--objects",
            "6",
            "--mask-noise",
            "both",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    report = Path(lines[-2].split("report:", 1)[1].strip())
    assert report == (out / "report.md").resolve() and report.is_file() and (out / "report.html").is_file()
    assert any(line.startswith("[3/3] [clean]") for line in lines) and any(
        line.startswith("[3/3] [noisy]") for line in lines
    )
    md = report.read_text()
    assert "not trained" in md and (out / "comparison.png").is_file()
    table = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    for name in ("clean", "noisy"):
        raw = json.loads((out / name / "raw.json").read_text())
        results = recompute(raw)
        assert differences(results, json.loads((out / name / "results.json").read_text())) == []
        assert {q["service"] for q in raw["queries"]} == {"ground", "navigate", "ask"}
        assert raw["run"]["params"]["semantics"].get("mask_noise", {}).get("enabled", False) == (name == "noisy")
        g = results["grounding"]
        assert f"{100 * g['acc@0.25']:.1f}% (n={g['n']})" in table["Ground Acc@0.25 (all kinds)"]
        assert (out / name / "report.md").is_file() and (out / name / "map.l3dmap").is_file()
    noisy_params = json.loads((out / "noisy" / "raw.json").read_text())["run"]["params"]
    assert noisy_params["semantics"]["mask_noise"] == {"enabled": True, "seed": 0}
