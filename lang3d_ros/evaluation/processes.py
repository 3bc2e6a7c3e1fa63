"""Real ROS processes for evaluation: a private ROS_DOMAIN_ID per run, loopback-only discovery, nodes started
as separate Python processes with a params file, a service client in this process, peak memory from /proc.

What it cannot do: measure memory on systems without /proc (VmHWM is then None), or isolate runs that share a
domain id with an unrelated process on the same machine.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

log = logging.getLogger(__name__)
_ids = itertools.count()

# the node entry points, run as `python -c` so an installed package needs no scripts/ folder
MAPPER_CODE = "import sys; from lang3d_ros.ros.entry_points import mapper_node; sys.exit(mapper_node())"
SERVER_CODE = "import sys; from lang3d_ros.ros.entry_points import query_server_node; sys.exit(query_server_node())"


_held_domains: list[tuple[int, object]] = []  # (domain id, locked file) claimed by this process, oldest first


def next_domain_id() -> int:
    """A domain id (30..99 of the portable 0..101 range) that no other process on this machine holds: each id is
    claimed by an exclusive lock on a file in the temp folder, held until this process exits, so concurrent
    evaluations and tests do not hear each other's topics. When this process holds all 70, its oldest is reused."""
    import fcntl
    import tempfile

    folder = Path(tempfile.gettempdir()) / "lang3d_ros_domains"
    folder.mkdir(exist_ok=True)
    start = (os.getpid() * 7 + next(_ids)) % 70
    for k in range(70):
        domain = 30 + (start + k) % 70
        f = open(folder / f"{domain}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _held_domains.append((domain, f))
        return domain
    if not _held_domains:
        raise RuntimeError("every ROS domain id in 30..99 is held by other processes on this machine")
    _held_domains.append(_held_domains.pop(0))
    return _held_domains[-1][0]


MALLOC_ARENA_MAX_DEFAULT = "2"
"""glibc malloc arenas of the node processes we start, unless the user's environment sets MALLOC_ARENA_MAX: each
worker thread (executor, mapping workers, torch's pool) otherwise gets its own arena, whose freed memory stays
in the process (~30 MiB of the mapper's peak resident set on the eval)."""


def node_env() -> dict[str, str]:
    """This process's environment for a node process we start: MALLOC_ARENA_MAX defaults to
    ``MALLOC_ARENA_MAX_DEFAULT`` unless the user set it."""
    env = dict(os.environ)
    env.setdefault("MALLOC_ARENA_MAX", MALLOC_ARENA_MAX_DEFAULT)
    return env


def ros_env(domain_id: int, log_dir: Path) -> dict[str, str]:
    env = node_env()
    env.update(
        ROS_DOMAIN_ID=str(domain_id),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_LOG_DIR=str(log_dir),
        PYTHONUNBUFFERED="1",
        RCUTILS_COLORIZED_OUTPUT="0",
    )
    return env


def spawn(args: list[str], domain_id: int, log_dir: Path) -> subprocess.Popen:
    """Start a Python process in its own session (so SIGINT reaches only it), output to log_dir/proc-<k>.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out = open(log_dir / f"proc-{len(list(log_dir.glob('proc-*.log')))}.log", "w")
    return subprocess.Popen(
        [sys.executable, *args],
        env=ros_env(domain_id, log_dir),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> int:
    """SIGINT, then SIGKILL after timeout_s; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def write_params(path: Path, params: dict) -> Path:
    """A ROS 2 params file applying ``params`` (nested dict) to every node."""
    path = Path(path)
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=True))
    return path


def peak_memory_mb(pid: int) -> float | None:
    """VmHWM (peak resident set) of a live process in MiB, or None when /proc does not say."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


class ServiceTimeout(RuntimeError):
    """A service did not answer in time (counted as a miss by the evaluation)."""


class ServiceClient:
    """rclpy client node in its own context and domain; ``call`` returns (response, round-trip ms)."""

    def __init__(self, domain_id: int, name: str = "lang3d_eval_client"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._clients: dict[str, object] = {}

    def wait_for(self, srv_type, name: str, timeout_s: float) -> bool:
        return self._client(srv_type, name).wait_for_service(timeout_sec=timeout_s)

    def _client(self, srv_type, name: str):
        if name not in self._clients:
            self._clients[name] = self.node.create_client(srv_type, name)
        return self._clients[name]

    def call(self, srv_type, name: str, timeout_s: float = 30.0, **fields):
        """-> (response, latency_ms). Raises ServiceTimeout when unavailable or unanswered in timeout_s."""
        cli = self._client(srv_type, name)
        if not cli.service_is_ready() and not cli.wait_for_service(timeout_sec=timeout_s):
            raise ServiceTimeout(f"service {name} not available after {timeout_s:.0f} s")
        request = srv_type.Request(**fields)
        t0 = time.perf_counter()
        fut = cli.call_async(request)
        self.executor.spin_until_future_complete(fut, timeout_sec=timeout_s)
        latency_ms = (time.perf_counter() - t0) * 1e3
        if not fut.done():
            cli.remove_pending_request(fut)
            raise ServiceTimeout(f"{name} did not answer in {timeout_s:.0f} s")
        return fut.result(), latency_ms

    def close(self) -> None:
        import rclpy

        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)
