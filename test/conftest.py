"""Shared fixtures. Tests that read ../shared/data skip with a reason when it is absent."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LANG3D_SHARED_DATA", REPO.parent / "shared" / "data"))

if importlib.util.find_spec("torch") is not None:  # the torch-free subset runs without it
    import torch

    # one intra-op thread: most tensors in the tests are small, and on a shared 2-core machine a second thread that
    # is not scheduled stalls every op (measured 4x slower for fusion under load)
    torch.set_num_threads(int(os.environ.get("LANG3D_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set LANG3D_SHARED_DATA); a user's clone has none")
    return SHARED_DATA


@pytest.fixture(scope="session")
def gradslam_dir(shared_data: Path) -> Path:
    d = shared_data / "gradslam_msrd_b2s3"
    if not d.is_dir():
        pytest.skip(f"{d} missing")
    return d


@pytest.fixture(scope="session")
def garden_npz(shared_data: Path) -> Path:
    f = shared_data / "gsplat_garden" / "test_garden.npz"
    if not f.is_file():
        pytest.skip(f"{f} missing")
    return f


def synthetic_config(**overrides):
    """config/synthetic.yaml (what the demo and `lang3d eval` run with) + nested overrides, CPU only."""
    from lang3d_ros.config import load_config

    return load_config(REPO / "config" / "synthetic.yaml", overrides=overrides)
