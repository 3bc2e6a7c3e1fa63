"""``lang3d info BAG``: topics, message counts, rates, image sizes and encodings, intrinsics, trajectory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="summarise a rosbag2 (mcap or sqlite3)", description=__doc__)
    p.add_argument("bag", type=Path, help="bag folder or .mcap/.db3 file")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lang3d_ros.datasets.rosbag import bag_info

    info = bag_info(args.bag)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"bag: {info['path']}")
    print(f"duration: {info['duration_s']:.3f} s, messages: {info['message_count']}")
    print()
    print("| topic | type | count | rate (Hz) | image |")
    print("|---|---|---:|---:|---|")
    for t in info["topics"]:
        image = f"{t['width']}x{t['height']} {t['encoding']}" if "encoding" in t else ""
        print(f"| {t['topic']} | {t['msgtype']} | {t['count']} | {t['rate_hz']:.2f} | {image} |")
    for topic, k in info["intrinsics"].items():
        print(
            f"\nintrinsics ({topic}): {k['width']}x{k['height']} fx={k['fx']:.3f} fy={k['fy']:.3f} cx={k['cx']:.3f} "
            f"cy={k['cy']:.3f}"
        )
    for topic, tr in info["trajectory"].items():
        print(f"trajectory ({topic}): {tr['length_m']:.3f} m over {tr['duration_s']:.3f} s")
    return 0
