"""Helpers for tests that run real rclpy: a private ROS_DOMAIN_ID per test, loopback-only discovery."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

_ids = itertools.count()


def require_ros():
    """Skip (with the reason) unless rclpy and the built lang3d_ros interfaces import."""
    try:
        import rclpy  # noqa: F401
        import lang3d_ros.msg  # noqa: F401
        import lang3d_ros.srv  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"ROS 2 or the built interfaces are not importable ({exc}); run scripts/setup.sh and source env.sh")


def next_domain_id() -> int:
    """A domain id no other test of this run uses (0..101 is the portable range; 30..99 here)."""
    return 30 + (os.getpid() * 7 + next(_ids)) % 70


def ros_env(domain_id: int, log_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_LOG_DIR=str(log_dir),
               PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
    return env


def spawn(args: list[str], domain_id: int, log_dir: Path) -> subprocess.Popen:
    """Start a Python process in its own session (so SIGINT reaches only it), output to log_dir/<name>.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out = open(log_dir / f"proc-{len(list(log_dir.glob('proc-*.log')))}.log", "w")
    return subprocess.Popen([sys.executable, *args], env=ros_env(domain_id, log_dir), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> int:
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode
