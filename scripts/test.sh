#!/usr/bin/env bash
# The README's test command: set up (idempotent, fast when nothing changed), lint with ruff, then run the whole test suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k fusion`).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
set +u
# shellcheck disable=SC1091
source "$REPO/env.sh"
set -u
cd "$REPO"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$(mktemp -d)}"
# lint first (ruff.toml: pyflakes, pycodestyle, import order, 120 columns); a finding fails the run
ruff check --no-cache . && ruff format --check --no-cache . >/dev/null || { echo "[test] ruff: fix the findings above (ruff check --fix . && ruff format .)" >&2; exit 1; }
exec python -m pytest -q -p no:cacheprovider --durations=15 "$@"
