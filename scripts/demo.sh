#!/usr/bin/env bash
# The README's main command: set up (idempotent), then run the demo on built-in synthetic data:
# a synthetic room -> RGB-D bag -> the real mapper node -> grounding / navigation / Ask services -> report.
# Extra arguments go to `lang3d demo` (e.g. --out DIR --frames 64).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
set +u
# shellcheck disable=SC1091
source "$REPO/env.sh"
set -u
export ROS_LOG_DIR="${ROS_LOG_DIR:-$REPO/out/ros_logs}"
exec lang3d demo --out "$REPO/out/demo" "$@"
