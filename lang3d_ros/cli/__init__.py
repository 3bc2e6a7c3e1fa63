"""``lang3d``: the command-line tool. Each sub-command lives in its own module of this package and
exposes ``add_parser(subparsers)``, which registers the command with ``set_defaults(func=...)``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# module names under lang3d_ros.cli, in the order shown by --help
COMMANDS = ["synth", "info", "launch", "call", "config_cmd", "eval", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lang3d", description="Open-vocabulary 3D mapping for ROS 2 robots.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"lang3d_ros.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="[%(levelname)s] %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"lang3d {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
