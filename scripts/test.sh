#!/usr/bin/env bash
# The README's test command: set up (idempotent, fast when nothing changed), then run the whole test suite.
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
exec python -m pytest -q -p no:cacheprovider --durations=15 "$@"
