"""Memory of the node processes the project starts: few glibc malloc arenas unless the user chose a number, and
no SAM stack (segment_anything, torchvision) imported by the semantics backends until the SAM backend is built."""

from __future__ import annotations

import subprocess
import sys


def test_eval_nodes_get_two_malloc_arenas_unless_the_user_chose(monkeypatch, tmp_path):
    from lang3d_ros.evaluation.processes import ros_env

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert ros_env(42, tmp_path)["MALLOC_ARENA_MAX"] == "2"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert ros_env(42, tmp_path)["MALLOC_ARENA_MAX"] == "8"


def test_lang3d_launch_nodes_get_two_malloc_arenas_unless_the_user_chose(monkeypatch):
    import lang3d_ros.cli.launch as launch

    seen = []
    monkeypatch.setattr(launch.subprocess, "Popen", lambda cmd, **kw: seen.append(kw["env"]))
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    launch._spawn("mapper", [])
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    launch._spawn("mapper", [])
    assert [e["MALLOC_ARENA_MAX"] for e in seen] == ["2", "4"]


def test_semantics_backends_do_not_import_sam():
    code = (
        "import sys, lang3d_ros.semantics.backends; "
        "print(sorted({'segment_anything', 'lang3d_ros.semantics.sam_masks'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]"
