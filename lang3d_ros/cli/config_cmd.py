"""``lang3d config``: print the effective configuration (defaults <- YAML files <- --set), or check files."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("config", help="print or check the effective configuration", description=__doc__)
    p.add_argument("files", nargs="*", type=Path, help="parameter files, later ones override")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--describe", action="store_true", help="list every parameter with its description")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lang3d_ros.cli.launch import parse_overrides
    from lang3d_ros.config import dump_config, flat_parameters, load_config

    cfg = load_config(*args.files, overrides=parse_overrides(args.set))
    if args.describe:
        for name, value, desc in flat_parameters(cfg):
            print(f"{name} = {value!r}\n    {desc}")
    else:
        print(dump_config(cfg), end="")
    return 0
