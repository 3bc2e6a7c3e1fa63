"""Replay a rosbag2 (MCAP or sqlite3) into ROS 2 at its recorded rate (x ``--rate``), publishing the recorded CDR
bytes unchanged. Used where ``ros2 bag play`` is not installed, and by ``lang3d eval``.

Header stamps are those recorded: the mapper syncs on them, not on arrival time.

Publishers are reliable and keep the last ``queue_depth`` messages per topic (default 100; memory: that many
messages per topic at most) for retransmission: a reliable writer repairs a message a subscriber missed only while
it still holds it. With the ROS default depth of 10 (1.3 s of images at rate 0.25) a subscriber process that fell
behind lost images and poses for good: frozen 3 s (SIGSTOP), it received 27 of 40 images at 7.5 Hz; with 100, 40.
What it cannot do: repair for a best-effort subscriber, or for one that stalls longer than the depth covers. A
best-effort subscriber on this host gets what Fast DDS's shared-memory segment of the publishing process holds
(512 KiB by default: less than one 640x480 colour+depth pair); config/fastdds_live.xml gives the publisher 32 MiB.

Repairs wait for the writer's next heartbeat: Fast DDS sends one every 3 s by default, and a reliable reader holds
every later sample of the stream behind the missed one, so a replay's poses came up to 3.7 s after their images.
``config/fastdds_replay.xml`` (heartbeat 0.1 s) fixes that for the player's writers: the ``bag_player`` executable
uses it unless FASTRTPS_DEFAULT_PROFILES_FILE is set; another process that publishes with ``play`` must set the
variable itself before rclpy creates its node (``use_replay_dds_profile``). Seeds 42/43 with an extra busy process,
largest delay of a pose behind its images: 0.15 / 3.14 / 2.30 / 2.88 s with 3 s, 0.04 / 0.11 / 0.03 / 1.07 s with it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import time
from pathlib import Path

DEFAULT_QUEUE_DEPTH = 100


def installed_config_file(name: str, roots: list[Path] | None = None) -> Path:
    """The first existing ``<root>/<name>`` of: the source tree's config/ (a checkout), the package's share/config
    (ament index: a colcon install), ``<sys.prefix>/share/lang3d_ros/config`` (a pip install); the source tree's path
    when none exists."""
    if roots is None:
        roots = [Path(__file__).resolve().parents[2] / "config"]
        # not a colcon install (PackageNotFoundError is a KeyError) or no ament_index_python: skip that root
        with contextlib.suppress(ImportError, LookupError, ValueError):
            from ament_index_python.packages import get_package_share_directory

            roots.append(Path(get_package_share_directory("lang3d_ros")) / "config")
        roots.append(Path(sys.prefix) / "share" / "lang3d_ros" / "config")
    for root in roots:
        if (Path(root) / name).is_file():
            return Path(root) / name
    return Path(roots[0]) / name


REPLAY_DDS_PROFILE = installed_config_file("fastdds_replay.xml")

log = logging.getLogger(__name__)


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class (ValueError when its package is not installed)."""
    try:
        pkg, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ValueError, ImportError, AttributeError) as exc:
        raise ValueError(f"message type {msgtype!r} is not available in this ROS environment") from exc


def wait_for_subscribers(pubs: dict, timeout_s: float) -> bool:
    """Wait until every publisher has matched a subscriber (messages sent before discovery completes are lost on
    best-effort sensor topics), at most ``timeout_s``; then a short grace period. False when some stayed unmatched."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if all(p.get_subscription_count() > 0 for p in pubs.values()):
            time.sleep(0.3)
            return True
        time.sleep(0.05)
    unmatched = [t for t, p in pubs.items() if p.get_subscription_count() == 0]
    log.warning("no subscriber on %s after %.0f s; playing anyway", unmatched, timeout_s)
    return False


def use_replay_dds_profile(environ=os.environ) -> str:
    """Point FASTRTPS_DEFAULT_PROFILES_FILE at config/fastdds_replay.xml unless it is already set (or the file is
    not there, e.g. an install without the config folder); returns the value in effect ("" when unset). Call it
    before rclpy creates the publishing node: Fast DDS reads the file when a participant is created."""
    if not environ.get("FASTRTPS_DEFAULT_PROFILES_FILE") and REPLAY_DDS_PROFILE.is_file():
        environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(REPLAY_DDS_PROFILE)
    return environ.get("FASTRTPS_DEFAULT_PROFILES_FILE", "")


def player_qos(queue_depth: int = DEFAULT_QUEUE_DEPTH):
    """Reliable, volatile, keep-last ``queue_depth``: what the player publishes with (see the module docstring)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    if int(queue_depth) < 1:
        raise ValueError(f"queue_depth must be >= 1, got {queue_depth}")
    return QoSProfile(
        reliability=ReliabilityPolicy.RELIABLE,
        history=HistoryPolicy.KEEP_LAST,
        depth=int(queue_depth),
        durability=DurabilityPolicy.VOLATILE,
    )


def play(
    node,
    bag: Path,
    rate: float = 1.0,
    topics: list[str] | None = None,
    progress=None,
    stop=None,
    wait_subscribers_s: float = 10.0,
    queue_depth: int = DEFAULT_QUEUE_DEPTH,
    hold=None,
    hold_poll_s: float = 0.5,
) -> dict:
    """Publish the bag's messages on ``node``; returns {topic: count}. ``stop()`` True ends early. ``queue_depth``:
    messages per topic kept for retransmission to a subscriber that fell behind. ``hold()`` (offline replays):
    asked at most every ``hold_poll_s`` of wall time before a message; while it returns True the player waits and
    the bag clock pauses with it (the messages after keep their spacing), so a slow consumer gets every message."""
    from rosbags.highlevel import AnyReader

    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    qos = player_qos(queue_depth)
    counts: dict[str, int] = {}
    with AnyReader([Path(bag)]) as reader:
        conns = [c for c in reader.connections if not topics or c.topic in topics]
        missing = sorted(set(topics or []) - {c.topic for c in conns})
        if missing:
            have = sorted({c.topic for c in reader.connections})
            raise ValueError(f"{bag}: topics {missing} are not in the bag (it has {have})")
        pubs = {}
        for c in conns:
            if c.topic not in pubs:
                pubs[c.topic] = node.create_publisher(message_class(c.msgtype), c.topic, qos)
        wait_for_subscribers(pubs, wait_subscribers_s)
        t_bag0, t_wall0 = None, time.monotonic()
        last_ask = -float("inf")
        for conn, t_ns, raw in reader.messages(connections=conns):
            if stop is not None and stop():
                break
            if t_bag0 is None:
                t_bag0 = t_ns
            if hold is not None and time.monotonic() - last_ask >= hold_poll_s:
                held_from = time.monotonic()
                while hold() and not (stop is not None and stop()):
                    time.sleep(hold_poll_s)
                last_ask = time.monotonic()
                t_wall0 += last_ask - held_from if last_ask - held_from > hold_poll_s / 2 else 0.0
            due = t_wall0 + (t_ns - t_bag0) * 1e-9 / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pubs[conn.topic].publish(bytes(raw))
            counts[conn.topic] = counts.get(conn.topic, 0) + 1
            if progress is not None:
                progress(conn.topic)
    return counts


def main(argv: list[str] | None = None) -> int:
    import rclpy

    parser = argparse.ArgumentParser(prog="bag_player", description=__doc__)
    parser.add_argument("bag", type=Path)
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2 = twice as fast)")
    parser.add_argument("--topics", nargs="*", default=None)
    parser.add_argument(
        "--wait-subscribers",
        type=float,
        default=10.0,
        metavar="S",
        help="wait up to S seconds for every topic to have a subscriber before playing",
    )
    parser.add_argument(
        "--queue-depth",
        type=int,
        default=DEFAULT_QUEUE_DEPTH,
        metavar="N",
        help="messages per topic kept for retransmission to a subscriber that fell behind",
    )
    args, ros_args = parser.parse_known_args(argv)
    use_replay_dds_profile()
    rclpy.init(args=["bag_player", *ros_args])
    node = rclpy.create_node("lang3d_bag_player")
    try:
        counts = play(
            node,
            args.bag,
            args.rate,
            args.topics,
            wait_subscribers_s=args.wait_subscribers,
            queue_depth=args.queue_depth,
        )
        node.get_logger().info(f"played {sum(counts.values())} messages: {counts}")
        return 0
    except ValueError as exc:
        node.get_logger().error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
