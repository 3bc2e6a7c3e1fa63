"""Reading hostile map files: zip bombs refused from the directory (flat memory), NaN arrays and malformed manifests
refused with clear messages, old format versions named."""

from __future__ import annotations

import json
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from lang3d_ros.errors import ErrorCode, Lang3DError
from lang3d_ros.mapstore import FORMAT_VERSION, MapBundle, MapReadLimits, read_map, write_map

GIB = 1 << 30
PY_EXCEPTION_NAMES = ("AttributeError", "RecursionError", "KeyError", "TypeError", "IndexError", "Traceback")


def _write_bomb(path, monkeypatch, inflated_bytes: int = 2 * GIB, chunk: int = 1 << 24) -> None:
    """A map whose one array entry is ``inflated_bytes`` of zeros deflated to about 2 MB. The deflate stream is
    one full-flushed block repeated (identical for identical input), so building it costs a CRC pass, not a
    2 GiB compression."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = co.compress(bytes(chunk)) + co.flush(zlib.Z_FULL_FLUSH)

    class Repeated:
        def compress(self, data):
            assert len(data) == chunk
            return block

        def flush(self):
            return zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # the final (empty) block

    manifest = {
        "format": "lang3d_ros.map",
        "version": FORMAT_VERSION,
        "metadata": {},
        "entries": {
            "arrays/x.npy": {
                "kind": "array",
                "name": "x",
                "shape": [inflated_bytes // 4],
                "dtype": "float32",
                "bytes": inflated_bytes,
                "sha256": "0" * 64,
            }
        },
    }
    original = zipfile._get_compressor
    monkeypatch.setattr(
        zipfile,
        "_get_compressor",
        lambda method, *a: Repeated() if method == zipfile.ZIP_DEFLATED else original(method, *a),
    )
    zeros = bytes(chunk)
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("manifest.json")
        zf.writestr(info, json.dumps(manifest))
        info = zipfile.ZipInfo("arrays/x.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as fh:
            for _ in range(inflated_bytes // chunk):
                fh.write(zeros)
    monkeypatch.undo()


def test_zip_bomb_is_refused_from_the_directory_with_flat_memory(tmp_path, monkeypatch):
    path = tmp_path / "bomb.l3dmap"
    _write_bomb(path, monkeypatch)
    assert path.stat().st_size < 4 << 20
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("arrays/x.npy").file_size == 2 * GIB  # it really declares (and inflates to) 2 GiB
        with zf.open("arrays/x.npy") as fh:
            assert fh.read(1 << 20) == bytes(1 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(Lang3DError, match="zip bomb") as info:
            read_map(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == ErrorCode.IO_ERROR
    assert peak < 16 << 20, f"reading the bomb allocated {peak / 1e6:.1f} MB"


def test_total_size_cap_refuses_before_reading(tmp_path):
    path = tmp_path / "big.l3dmap"
    write_map(path, MapBundle(arrays={"a": np.zeros((1 << 18,), np.float32), "b": np.zeros((1 << 18,), np.float32)}))
    read_map(path)
    tracemalloc.start()
    try:
        with pytest.raises(Lang3DError, match="max_total_bytes"):
            read_map(path, MapReadLimits(max_total_bytes=1 << 20))  # each entry fits, the two together do not
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # refused from the directory: no entry was read


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_arrays_are_refused(tmp_path, bad):
    xyz = np.zeros((100, 3), np.float32)
    xyz[57, 1] = bad
    write_map(
        tmp_path / "nan.l3dmap",
        MapBundle(arrays={"points.features_0": np.ones((10, 4), np.float16), "points.points_xyz": xyz}),
    )
    with pytest.raises(Lang3DError, match="points.points_xyz contains NaN or infinite"):
        read_map(tmp_path / "nan.l3dmap")


def test_arrays_are_writable_and_exact(tmp_path):
    a = np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4))
    write_map(tmp_path / "m.l3dmap", MapBundle(arrays={"a": a, "s": np.array(3, np.int64)}))
    r = read_map(tmp_path / "m.l3dmap")
    assert np.array_equal(r.arrays["a"], a) and r.arrays["a"].flags.writeable and r.arrays["s"].shape == ()


def _zip_with_manifest(path, manifest_text: str | bytes, entries: dict[str, bytes] | None = None) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", manifest_text)
        for name, data in (entries or {}).items():
            zf.writestr(name, data)


def _manifest(**over) -> dict:
    m = {"format": "lang3d_ros.map", "version": FORMAT_VERSION, "metadata": {}, "entries": {}}
    m.update(over)
    return m


def _entry(**over) -> dict:
    e = {"kind": "array", "name": "x", "shape": [2], "dtype": "float32", "bytes": 136, "sha256": "0" * 64}
    e.update(over)
    return e


MALFORMED = {
    "not json": (b'{"format": ', "unreadable"),
    "not utf-8": (b"\xff\xfe\x00", "unreadable"),
    "a list": ("[1, 2]", "not a lang3d_ros map file"),
    "deep nesting": ("[" * 200000 + "]" * 200000, "nested too deeply|unreadable"),
    "version as text": (json.dumps(_manifest(version="2")), "not a number"),
    "version 1": (json.dumps(_manifest(version=1)), "version 1 is older .* rebuild the map"),
    "entries a list": (json.dumps(_manifest(entries=[1])), "'entries' must be an object"),
    "metadata a list": (json.dumps(_manifest(metadata=[1])), "'metadata' must be an object"),
    "entry a string": (json.dumps(_manifest(entries={"arrays/x.npy": "x"})), "must be an object"),
    "bytes as text": (json.dumps(_manifest(entries={"arrays/x.npy": _entry(bytes="136")})), "declares a size"),
    "negative bytes": (json.dumps(_manifest(entries={"arrays/x.npy": _entry(bytes=-1)})), "declares a size"),
    "shape text": (json.dumps(_manifest(entries={"arrays/x.npy": _entry(shape="abc")})), "invalid shape"),
    "shape floats": (json.dumps(_manifest(entries={"arrays/x.npy": _entry(shape=[1.5])})), "invalid shape"),
    "too many dims": (json.dumps(_manifest(entries={"arrays/x.npy": _entry(shape=[1] * 40)})), "invalid shape"),
    "object dtype": (json.dumps(_manifest(entries={"arrays/x.npy": _entry(dtype="object")})), "unsupported dtype"),
    "string dtype": (json.dumps(_manifest(entries={"arrays/x.npy": _entry(dtype="<U8")})), "unsupported dtype"),
    "dtype a dict": (json.dumps(_manifest(entries={"arrays/x.npy": _entry(dtype={"a": 1})})), "unsupported dtype"),
    "bad name": (json.dumps(_manifest(entries={"arrays/../x.npy": _entry(name="../x")})), "invalid name"),
    "name mismatch": (json.dumps(_manifest(entries={"arrays/y.npy": _entry()})), "should be named"),
    "unknown kind": (json.dumps(_manifest(entries={"code/x": _entry(kind="code")})), "unknown kind"),
    "no sha": (json.dumps(_manifest(entries={"arrays/x.npy": _entry(sha256=None)})), "sha256"),
    "missing entry": (json.dumps(_manifest(entries={"arrays/x.npy": _entry()})), "missing"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_manifests_give_clear_messages(tmp_path, case):
    text, pattern = MALFORMED[case]
    _zip_with_manifest(tmp_path / "m.l3dmap", text)
    with pytest.raises(Lang3DError, match=pattern) as info:
        read_map(tmp_path / "m.l3dmap")
    assert not any(n in str(info.value) for n in PY_EXCEPTION_NAMES), str(info.value)


def test_npy_header_disagreeing_with_the_manifest_is_refused(tmp_path):
    import hashlib
    import io

    buf = io.BytesIO()
    np.save(buf, np.zeros(4, np.float64))  # manifest says float32 (2,), the .npy says float64 (4,)
    data = buf.getvalue()
    entry = _entry(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    _zip_with_manifest(
        tmp_path / "m.l3dmap", json.dumps(_manifest(entries={"arrays/x.npy": entry})), {"arrays/x.npy": data}
    )
    with pytest.raises(Lang3DError, match="manifest says"):
        read_map(tmp_path / "m.l3dmap")


def test_pickled_npy_is_refused(tmp_path):
    import hashlib
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    data = buf.getvalue()
    entry = _entry(bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), dtype="float32", shape=[1])
    _zip_with_manifest(
        tmp_path / "m.l3dmap", json.dumps(_manifest(entries={"arrays/x.npy": entry})), {"arrays/x.npy": data}
    )
    with pytest.raises(Lang3DError, match="manifest says"):
        read_map(tmp_path / "m.l3dmap")
