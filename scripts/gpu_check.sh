#!/usr/bin/env bash
# The prepared GPU check (issue 18): gsplat vs CPU-rasterizer parity, gsplat training speed at 640x480, 1M-Gaussian
# query latency, RenderRelevancy latency at 640x480 from 1M Gaussians, CUDA fusion throughput, SAM ViT-H + CLIP
# ViT-B-16 keyframe latency. One command, <= 8 minutes on one H100 / H200; writes OUT/gpu_check.md and
# OUT/gpu_check.json (OUT: first argument, default gpu_check_results).
# Without CUDA it stops at once with a message and exit code 2. Steps: benchmarks/gpu_check.py.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -f "$REPO/env.sh" ]]; then
    set +u
    # shellcheck disable=SC1091
    source "$REPO/env.sh"
    set -u
fi
cd "$REPO"
exec python benchmarks/gpu_check.py --out "${1:-gpu_check_results}" --budget-s "${GPU_CHECK_BUDGET_S:-450}"
