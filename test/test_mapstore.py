"""Map files: bit-identical round trip, atomic writes, and clear errors for truncated, foreign or corrupt files."""

from __future__ import annotations

import json
import os
import tracemalloc
import zipfile

import numpy as np
import pytest

from lang3d_ros.mapstore import MapBundle, read_map, write_map


def _bundle():
    rng = np.random.default_rng(0)
    return MapBundle(
        arrays={
            "points_xyz": rng.normal(size=(1000, 3)).astype(np.float32),
            "features_whole": rng.normal(size=(1000, 16)).astype(np.float16),
            "ids": np.arange(1000, dtype=np.int64),
            "version": np.array(3),
            "view": np.arange(12.0).reshape(3, 4)[:, ::2],
        },
        blobs={"gaussians.ply": b"ply\nformat binary_little_endian 1.0\n" + bytes(range(256))},
        metadata={"frame_id": "map", "levels": ["subpart", "part", "whole"], "nan": float("nan")},
    )


def test_roundtrip_is_bit_identical(tmp_path):
    b = _bundle()
    size = write_map(tmp_path / "a.l3dmap", b)
    assert size == (tmp_path / "a.l3dmap").stat().st_size > 0
    r = read_map(tmp_path / "a.l3dmap")
    assert set(r.arrays) == set(b.arrays)
    for k in b.arrays:
        assert r.arrays[k].dtype == b.arrays[k].dtype
        assert r.arrays[k].tobytes() == b.arrays[k].tobytes()
    assert r.blobs == b.blobs
    assert r.metadata["frame_id"] == "map" and np.isnan(r.metadata["nan"])
    assert [p.name for p in tmp_path.iterdir()] == ["a.l3dmap"]  # no temp file left


def test_arrays_are_streamed_into_the_file_without_a_second_copy(tmp_path):
    """A 96 MB array (and a Fortran-ordered one) written and read back; the writer's own allocations stay under
    half the array: it is not serialised to bytes first (before: a BytesIO copy and its value, 2x the map)."""
    big = np.arange(12_000_000, dtype=np.float64)
    fortran = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    tracemalloc.start()
    try:
        write_map(tmp_path / "big.l3dmap", MapBundle(arrays={"big": big, "f": fortran, "zero_d": np.array(3.0)}))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.5 * big.nbytes, peak
    back = read_map(tmp_path / "big.l3dmap")
    np.testing.assert_array_equal(back.arrays["big"], big)
    np.testing.assert_array_equal(back.arrays["f"], fortran)
    assert back.arrays["zero_d"].shape == () and float(back.arrays["zero_d"]) == 3.0


def test_failed_write_leaves_previous_file_untouched(tmp_path):
    target = tmp_path / "m.l3dmap"
    write_map(target, _bundle())
    before = target.read_bytes()
    bad = _bundle()
    bad.arrays["obj"] = np.array([object()], dtype=object)
    with pytest.raises(ValueError, match="object arrays"):
        write_map(target, bad)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.l3dmap"]


@pytest.mark.parametrize("cut", [10, 200, 0.5, 0.95])
def test_truncated_file_is_refused(tmp_path, cut):
    target = tmp_path / "m.l3dmap"
    write_map(target, _bundle())
    data = target.read_bytes()
    n = int(cut if cut >= 1 else cut * len(data))
    (tmp_path / "t.l3dmap").write_bytes(data[:n])
    with pytest.raises(ValueError, match="truncated|not a zip|unreadable|missing"):
        read_map(tmp_path / "t.l3dmap")


def test_foreign_and_corrupt_files_are_refused(tmp_path):
    (tmp_path / "x.ply").write_bytes(b"ply\nformat ascii 1.0\nend_header\n")
    with pytest.raises(ValueError, match="not a lang3d_ros map file"):
        read_map(tmp_path / "x.ply")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("manifest.json", json.dumps({"format": "something.else", "version": 1}))
    with pytest.raises(ValueError, match="format"):
        read_map(tmp_path / "other.zip")
    with zipfile.ZipFile(tmp_path / "future.zip", "w") as zf:
        zf.writestr("manifest.json", json.dumps({"format": "lang3d_ros.map", "version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        read_map(tmp_path / "future.zip")
    # flip one byte inside an array payload: the checksum catches it
    target = tmp_path / "m.l3dmap"
    write_map(target, _bundle())
    data = bytearray(target.read_bytes())
    with zipfile.ZipFile(target) as zf:
        info = zf.getinfo("arrays/points_xyz.npy")
    off = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    data[off] ^= 0xFF
    (tmp_path / "c.l3dmap").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        read_map(tmp_path / "c.l3dmap")
    with pytest.raises(ValueError, match="does not exist"):
        read_map(tmp_path / "nope.l3dmap")
    os.mkdir(tmp_path / "dir.l3dmap")
    with pytest.raises(ValueError, match="folder"):
        write_map(tmp_path / "dir.l3dmap", _bundle())
