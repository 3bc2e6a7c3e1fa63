"""Helpers for tests that run real rclpy: a private ROS_DOMAIN_ID per test, loopback-only discovery.
The process helpers live in lang3d_ros.evaluation.processes (the `lang3d eval` CLI uses them too)."""

from __future__ import annotations

import pytest

from lang3d_ros.evaluation.processes import next_domain_id, ros_env, spawn, stop  # noqa: F401  (re-exported)


def require_ros():
    """Skip (with the reason) unless rclpy and the built lang3d_ros interfaces import."""
    try:
        import lang3d_ros.msg  # noqa: F401
        import lang3d_ros.srv  # noqa: F401
        import rclpy  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"ROS 2 or the built interfaces are not importable ({exc}); run scripts/setup.sh and source env.sh")
