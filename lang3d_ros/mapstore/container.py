"""The map file: one zip container (``.l3dmap``) of named numpy arrays, binary blobs and JSON metadata.

Layout: ``manifest.json`` (format name, version, created time, metadata, and for every entry its kind, shape,
dtype, byte size and SHA-256), then ``arrays/<name>.npy`` and ``blobs/<name>``. Entries are stored uncompressed
(arrays of floats hardly compress; reading stays fast). Writes go to a temporary file in the target folder,
are fsynced and renamed over the target, so a crash never leaves a half-written map. Reading checks the container,
the format name and version, every entry's presence, size and checksum, and refuses anything else with a
ValueError that names the problem. The file is not encrypted or signed: load maps you trust.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_NAME = "lang3d_ros.map"
FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 16 << 20


@dataclass
class MapBundle:
    """What a map file holds: arrays by name, opaque blobs by name (e.g. a PLY, a torch state) and JSON metadata."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith(".") or len(name) > 128:
        raise ValueError(f"invalid entry name {name!r}")


def _npy_bytes(a: np.ndarray) -> bytes:
    if a.dtype == object:
        raise ValueError("object arrays cannot be stored in a map file")
    buf = io.BytesIO()
    np.save(buf, a if a.flags.c_contiguous else a.copy(order="C"), allow_pickle=False)  # keeps 0-d arrays 0-d
    return buf.getvalue()


def write_map(path: str | os.PathLike, bundle: MapBundle) -> int:
    """Write ``bundle`` atomically to ``path``; returns the file size in bytes."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a map file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    entries, payloads = {}, {}
    for name, a in bundle.arrays.items():
        _check_name(name)
        data = _npy_bytes(np.asarray(a))
        entries[f"arrays/{name}.npy"] = {"kind": "array", "name": name, "shape": list(np.shape(a)), "dtype": str(np.asarray(a).dtype),
                                         "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        payloads[f"arrays/{name}.npy"] = data
    for name, data in bundle.blobs.items():
        _check_name(name)
        data = bytes(data)
        entries[f"blobs/{name}"] = {"kind": "blob", "name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        payloads[f"blobs/{name}"] = data
    manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "created_unix_s": time.time(),
                "metadata": bundle.metadata, "entries": entries}
    manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True, allow_nan=True).encode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                zf.writestr("manifest.json", manifest_bytes)
                for arcname, data in payloads.items():
                    zf.writestr(arcname, data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path.stat().st_size


def read_map(path: str | os.PathLike) -> MapBundle:
    """Read and validate a map file; ValueError names what is wrong (missing, truncated, foreign, corrupt)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"map file {path} does not exist")
    try:
        zf = zipfile.ZipFile(path, "r")
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path} is not a lang3d_ros map file (not a zip container: {exc}); it may be truncated") from exc
    with zf:
        names = set(zf.namelist())
        if "manifest.json" not in names:
            raise ValueError(f"{path} is not a lang3d_ros map file (no manifest.json)")
        info = zf.getinfo("manifest.json")
        if info.file_size > MAX_MANIFEST_BYTES:
            raise ValueError(f"{path}: manifest is {info.file_size} bytes, larger than allowed")
        try:
            manifest = json.loads(zf.read("manifest.json"))
        except (json.JSONDecodeError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: manifest is unreadable ({exc})") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise ValueError(f"{path} is not a lang3d_ros map file (format {manifest.get('format') if isinstance(manifest, dict) else None!r})")
        version = manifest.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise ValueError(f"{path}: map format version {version!r} is not supported (this build reads 1..{FORMAT_VERSION})")
        bundle = MapBundle(metadata=manifest.get("metadata", {}))
        for arcname, entry in manifest.get("entries", {}).items():
            if arcname not in names:
                raise ValueError(f"{path}: entry {arcname} is missing (truncated file?)")
            try:
                data = zf.read(arcname)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise ValueError(f"{path}: entry {arcname} is unreadable ({exc}): the file is corrupt or truncated") from exc
            if len(data) != entry.get("bytes") or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
                raise ValueError(f"{path}: entry {arcname} fails its checksum (corrupt or truncated file)")
            if entry.get("kind") == "array":
                a = np.load(io.BytesIO(data), allow_pickle=False)
                if list(a.shape) != entry.get("shape") or str(a.dtype) != entry.get("dtype"):
                    raise ValueError(f"{path}: entry {arcname} has shape {a.shape} {a.dtype}, manifest says {entry.get('shape')} {entry.get('dtype')}")
                bundle.arrays[entry["name"]] = a
            elif entry.get("kind") == "blob":
                bundle.blobs[entry["name"]] = data
            else:
                raise ValueError(f"{path}: entry {arcname} has unknown kind {entry.get('kind')!r}")
    return bundle
