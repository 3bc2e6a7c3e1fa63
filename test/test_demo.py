"""`lang3d demo` as a user runs it (a subprocess with the console entry point), at a small size: it prints the
report's path, and the report's numbers are those recompute(raw.json) gives."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ros_helpers import require_ros

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_demo_writes_the_report(tmp_path):
    require_ros()
    from lang3d_ros.evaluation.metrics import differences, recompute

    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "lang3d_ros.cli", "demo", "--out", str(out), "--frames", "16", "--width", "128",
                           "--height", "96", "--objects", "8", "--no-progress"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = Path(proc.stdout.strip().splitlines()[-2].split("report:", 1)[1].strip())
    assert report == (out / "report.md").resolve() and report.is_file() and (out / "report.html").is_file()
    raw = json.loads((out / "raw.json").read_text())
    results = recompute(raw)
    assert differences(results, json.loads((out / "results.json").read_text())) == []
    md = report.read_text()
    g = results["grounding"]
    assert f"{100 * g['acc@0.25']:.1f}%" in md and "not trained" in md
    assert {q["service"] for q in raw["queries"]} == {"ground", "navigate", "ask"}
