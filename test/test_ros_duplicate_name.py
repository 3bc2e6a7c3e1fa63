"""Issue 15: a second node with the same name and namespace refuses to start (it would share every service of the
first, and a client could not tell which one answered); another name or namespace starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ros_helpers import next_domain_id, require_ros, spawn, stop

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[1]


def test_second_node_with_the_same_name_refuses_to_start(tmp_path):
    require_ros()
    import time

    # autostart false: the name check happens before any model is loaded, so these processes stay cheap
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump({"/**": {"ros__parameters": {"ros": {"autostart": False, "duplicate_check_s": 3.0}}}})
    )
    domain = next_domain_id()
    logs = tmp_path / "logs"
    exe = str(REPO / "scripts" / "query_server_node")
    first = spawn([exe, "--ros-args", "--params-file", str(params)], domain, logs)
    others = []
    try:
        deadline = time.monotonic() + 60
        while "waiting unconfigured" not in (logs / "proc-0.log").read_text() and time.monotonic() < deadline:
            assert first.poll() is None, (logs / "proc-0.log").read_text()
            time.sleep(0.2)
        second = spawn([exe, "--ros-args", "--params-file", str(params)], domain, logs)
        renamed = spawn([exe, "--ros-args", "--params-file", str(params), "-r", "__ns:=/robot2"], domain, logs)
        others = [second, renamed]
        assert second.wait(90) == 1
        text = (logs / "proc-1.log").read_text()
        assert "another node named /lang3d_query_server is already running" in text, text[-2000:]
        deadline = time.monotonic() + 60
        while "waiting unconfigured" not in (logs / "proc-2.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert renamed.poll() is None and first.poll() is None  # another namespace is another node; the first lives
    finally:
        for p in [first, *others]:
            stop(p)
