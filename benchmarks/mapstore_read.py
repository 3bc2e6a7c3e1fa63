"""Map file reading: time and peak memory of ``read_map`` on a map-sized file, before and after the hostile-file
checks (issue 15), and the cost of refusing a zip bomb.

    python benchmarks/mapstore_read.py --mb 256 --old-commit c51ea2b^

The "before" reader is the container module of ``--old-commit`` (it writes and reads format version 1); peak memory
is tracemalloc's (numpy registers its buffers with it), above the bundle already in memory.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _old_module(commit: str):
    src = subprocess.run(
        ["git", "show", f"{commit}:lang3d_ros/mapstore/container.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    spec = importlib.util.spec_from_loader("old_container", loader=None)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_container"] = mod  # dataclasses look their module up
    exec(compile(src, "old_container.py", "exec"), mod.__dict__)
    return mod


def _measure(fn) -> tuple[float, float]:
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        fn()
    except ValueError:
        pass
    dt = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return dt, peak / 2**20


def _bomb(path: Path, inflated: int, chunk: int = 1 << 24) -> None:
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = co.compress(bytes(chunk)) + co.flush(zlib.Z_FULL_FLUSH)

    class Repeated:
        def compress(self, data):
            return block

        def flush(self):
            return zlib.compressobj(9, zlib.DEFLATED, -15).flush()

    original = zipfile._get_compressor
    zipfile._get_compressor = lambda m, *a: Repeated() if m == zipfile.ZIP_DEFLATED else original(m, *a)
    try:
        manifest = {
            "format": "lang3d_ros.map",
            "version": 2,
            "metadata": {},
            "entries": {
                "arrays/x.npy": {
                    "kind": "array",
                    "name": "x",
                    "shape": [inflated // 4],
                    "dtype": "float32",
                    "bytes": inflated,
                    "sha256": "0" * 64,
                }
            },
        }
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("manifest.json", json.dumps(manifest))
            info = zipfile.ZipInfo("arrays/x.npy")
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                for _ in range(inflated // chunk):
                    fh.write(bytes(chunk))
    finally:
        zipfile._get_compressor = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256, help="size of the map's arrays")
    ap.add_argument("--old-commit", default="c51ea2b^")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from lang3d_ros.mapstore import MapBundle, read_map, write_map

    n = args.mb * 2**20 // (4 * (3 + 3 + 16) + 2 * 16)
    rng = np.random.default_rng(0)
    bundle = MapBundle(
        arrays={
            "points.points_xyz": rng.normal(size=(n, 3)).astype(np.float32),
            "points.normals": rng.normal(size=(n, 3)).astype(np.float32),
            "points.features_0": rng.normal(size=(n, 16)).astype(np.float32),
            "instances.feature": rng.normal(size=(n, 16)).astype(np.float16),
        },
        metadata={"frame_id": "map"},
    )
    old = _old_module(args.old_commit)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old.write_map(tmp / "old.l3dmap", bundle)
        write_map(tmp / "new.l3dmap", bundle)
        size_mb = (tmp / "new.l3dmap").stat().st_size / 2**20
        rows = []
        for label, fn in (
            ("before (old reader)", lambda: old.read_map(tmp / "old.l3dmap")),
            ("after (checked reader)", lambda: read_map(tmp / "new.l3dmap")),
        ):
            runs = [_measure(fn) for _ in range(args.repeats)]
            rows.append((label, min(r[0] for r in runs), min(r[1] for r in runs)))
        _bomb(tmp / "bomb.l3dmap", 2 << 30)
        bomb_mb = (tmp / "bomb.l3dmap").stat().st_size / 2**20
        dt, peak = _measure(lambda: read_map(tmp / "bomb.l3dmap"))
    print(f"map of {size_mb:.0f} MB ({n} points), best of {args.repeats}:")
    print("| reader | read s | peak MB |\n|---|---|---|")
    for label, t, p in rows:
        print(f"| {label} | {t:.2f} | {p:.0f} |")
    print(f"zip bomb ({bomb_mb:.1f} MB file declaring 2 GiB): refused in {dt * 1e3:.1f} ms, peak {peak:.2f} MB")


if __name__ == "__main__":
    main()
