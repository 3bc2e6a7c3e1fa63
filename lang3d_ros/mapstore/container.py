"""The map file: one zip container (``.l3dmap``) of named numpy arrays, binary blobs and JSON metadata.

Layout: ``arrays/<name>.npy`` and ``blobs/<name>``, then ``manifest.json`` (format name, version, created time,
metadata, and for every entry its kind, shape, dtype, byte size and SHA-256; written last, as the entries are
streamed in and hashed on the way, so the writer holds no second copy of the map). Entries are stored
uncompressed (arrays of floats hardly compress; reading stays fast).

Writing: to a temporary file ``<name>.writing-<pid>-<random>.tmp`` next to the target, fsynced and renamed over
the target, so a crash never leaves a half-written map; a temp file left by a killed writer is recognisable
(``temp_file_owner``) and ``MapFolder`` removes it on its next start.

Reading treats the file as hostile: the container, format name and version, the manifest's types and shapes, and
every entry's declared size are checked against ``MapReadLimits`` *before* anything is inflated (a zip bomb is
refused from its directory); each entry is then streamed with a cap equal to its declared size while its SHA-256 is
computed, arrays are rebuilt from their ``.npy`` header without pickle, and every float array must be finite.
Every refusal is a ``Lang3DError(ErrorCode.IO_ERROR)`` whose message names the problem (never a Python exception
name). The file is not encrypted or signed: a valid map from an untrusted source is still its author's content.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lang3d_ros.errors import ErrorCode, Lang3DError
from lang3d_ros.mapstore.config import MapReadLimits

FORMAT_NAME = "lang3d_ros.map"
FORMAT_VERSION = 2
"""2: instance content (written by LanguageMap); every float array finite. Version 1 files are refused."""
MAP_SUFFIX = ".l3dmap"
MAX_MANIFEST_BYTES = MapReadLimits.max_manifest_bytes
_TEMP_RE = re.compile(r"^(?P<target>.+)\.writing-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$")
_CHUNK_BYTES = 1 << 20
_NPY_HEADER_MAX_BYTES = 1 << 17


@dataclass
class MapBundle:
    """What a map file holds: arrays by name, opaque blobs by name (e.g. a PLY, a torch state) and JSON metadata."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)


def _err(message: str) -> Lang3DError:
    return Lang3DError(ErrorCode.IO_ERROR, message)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith(".") or len(name) > 128:
        raise ValueError(f"invalid entry name {name!r}")


class _HashingWriter:
    """A write-only stream that forwards to ``fh`` while counting bytes and hashing them (SHA-256)."""

    def __init__(self, fh):
        self.fh, self.sha, self.n = fh, hashlib.sha256(), 0

    def write(self, data) -> int:
        mv = memoryview(data).cast("B")
        self.sha.update(mv)
        self.n += len(mv)
        return self.fh.write(mv)


def _check_array(a: np.ndarray) -> None:
    if a.dtype == object:
        raise ValueError("object arrays cannot be stored in a map file")


def temp_file_owner(name: str) -> tuple[str, int] | None:
    """(target file name, writer pid) when ``name`` is a temp file of ``write_map``, else None."""
    m = _TEMP_RE.match(name)
    return (m.group("target"), int(m.group("pid"))) if m else None


def write_map(path: str | os.PathLike, bundle: MapBundle) -> int:
    """Write ``bundle`` atomically to ``path``; returns the file size in bytes.

    Creates missing parent folders: callers that serve clients confine ``path`` with ``MapFolder.for_write`` first.
    Raises ValueError (nothing written) for invalid entry names and object arrays. It writes float arrays holding
    NaN or infinity (tests craft such files), which ``read_map`` refuses: the map's writer must not produce them.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a map file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, a in bundle.arrays.items():  # everything is checked before anything is written
        _check_name(name)
        arrays[name] = np.asarray(a)
        _check_array(arrays[name])
    for name in bundle.blobs:
        _check_name(name)
    entries = {}
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.writing-{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                # each array is streamed into its entry as .npy (hashed on the way): no second copy of the map
                for name, a in arrays.items():
                    arcname = f"arrays/{name}.npy"
                    with zf.open(arcname, "w", force_zip64=True) as out:
                        w = _HashingWriter(out)
                        c = a if a.flags.c_contiguous else a.copy(order="C")  # keeps 0-d arrays 0-d
                        np.lib.format.write_array(w, c, allow_pickle=False)  # in chunks of 16 MiB
                    entries[arcname] = {
                        "kind": "array",
                        "name": name,
                        "shape": list(a.shape),
                        "dtype": str(a.dtype),
                        "bytes": w.n,
                        "sha256": w.sha.hexdigest(),
                    }
                for name, data in bundle.blobs.items():
                    data = bytes(data)
                    arcname = f"blobs/{name}"
                    zf.writestr(arcname, data)
                    entries[arcname] = {
                        "kind": "blob",
                        "name": name,
                        "bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                    }
                manifest = {
                    "format": FORMAT_NAME,
                    "version": FORMAT_VERSION,
                    "created_unix_s": time.time(),
                    "metadata": bundle.metadata,
                    "entries": entries,
                }
                zf.writestr("manifest.json", json.dumps(manifest, indent=1, sort_keys=True, allow_nan=True).encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path.stat().st_size


# ---------------------------------------------------------------------------------------------------- reading
@dataclass
class _Entry:
    arcname: str
    kind: str
    name: str
    num_bytes: int
    sha256: str
    shape: tuple[int, ...] = ()
    dtype: str = ""


def _read_manifest(zf: zipfile.ZipFile, where: str, limits: MapReadLimits) -> dict:
    try:
        info = zf.getinfo("manifest.json")
    except KeyError:
        raise _err(f"{where} is not a lang3d_ros map file (no manifest.json)") from None
    if info.file_size > limits.max_manifest_bytes:
        raise _err(f"{where}: manifest is {info.file_size} bytes, larger than allowed ({limits.max_manifest_bytes})")
    try:
        with zf.open(info) as fh:
            raw = fh.read(limits.max_manifest_bytes + 1)
        manifest = json.loads(raw)
    except RecursionError:
        raise _err(f"{where}: manifest is nested too deeply") from None
    except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:  # JSON and Unicode errors are ValueErrors
        raise _err(f"{where}: manifest is unreadable ({exc}); the file may be corrupt or truncated") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise _err(f"{where} is not a lang3d_ros map file (format {found!r})")
    return manifest


def _check_version(manifest: dict, where: str) -> None:
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _err(f"{where}: map format version {version!r} is not a number")
    if version < FORMAT_VERSION:
        raise _err(
            f"{where}: map format version {version} is older than this build reads ({FORMAT_VERSION}): "
            f"rebuild the map (replay its recording) with this version"
        )
    if version > FORMAT_VERSION:
        raise _err(f"{where}: map format version {version} is newer than this build reads ({FORMAT_VERSION})")


def _parse_entries(manifest: dict, where: str, limits: MapReadLimits) -> list[_Entry]:
    table = manifest.get("entries")
    if not isinstance(table, dict):
        raise _err(f"{where}: manifest 'entries' must be an object, got {type(table).__name__}")
    if len(table) > limits.max_entries:
        raise _err(f"{where}: manifest lists {len(table)} entries, more than allowed ({limits.max_entries})")
    out = []
    for arcname, e in table.items():
        if not isinstance(e, dict):
            raise _err(f"{where}: manifest entry {arcname!r} must be an object, got {type(e).__name__}")
        kind, name, nbytes, sha = e.get("kind"), e.get("name"), e.get("bytes"), e.get("sha256")
        try:
            _check_name(name)
        except ValueError:
            raise _err(f"{where}: manifest entry {arcname!r} has an invalid name {name!r}") from None
        if kind not in ("array", "blob"):
            raise _err(f"{where}: entry {arcname} has unknown kind {kind!r}")
        expected = f"arrays/{name}.npy" if kind == "array" else f"blobs/{name}"
        if arcname != expected:
            raise _err(f"{where}: manifest entry {arcname!r} should be named {expected!r}")
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise _err(f"{where}: entry {arcname} declares a size of {nbytes!r} bytes")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise _err(f"{where}: entry {arcname} has no valid sha256")
        entry = _Entry(arcname, kind, name, nbytes, sha)
        if kind == "array":
            shape, dtype = e.get("shape"), e.get("dtype")
            if (
                not isinstance(shape, list)
                or len(shape) > limits.max_array_dims
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
            ):
                raise _err(f"{where}: entry {arcname} has an invalid shape {str(shape)[:80]}")
            if not isinstance(dtype, str) or not _plain_dtype(dtype):
                raise _err(f"{where}: entry {arcname} has an unsupported dtype {str(dtype)[:40]!r}")
            entry.shape, entry.dtype = tuple(shape), dtype
        out.append(entry)
    return out


def _plain_dtype(text: str) -> bool:
    """A bool, integer or float dtype without fields (what map files store)."""
    try:
        dt = np.dtype(text)
    except (TypeError, ValueError, SyntaxError):
        return False
    return dt.kind in "biuf" and dt.fields is None and dt.subdtype is None and str(dt) == text


def _check_directory(
    zf: zipfile.ZipFile, entries: list[_Entry], file_bytes: int, where: str, limits: MapReadLimits
) -> dict[str, zipfile.ZipInfo]:
    """Declared sizes against the zip directory, the file size and the limits: nothing is inflated here."""
    infos = zf.infolist()
    if len(infos) > limits.max_entries + 1:
        raise _err(f"{where}: zip holds {len(infos)} entries, more than allowed ({limits.max_entries})")
    by_name = {i.filename: i for i in infos}
    total = 0
    out = {}
    for e in entries:
        info = by_name.get(e.arcname)
        if info is None:
            raise _err(f"{where}: entry {e.arcname} is missing (truncated file?)")
        if info.file_size != e.num_bytes:
            raise _err(
                f"{where}: entry {e.arcname} is {info.file_size} bytes in the zip directory, the manifest "
                f"says {e.num_bytes}: corrupt or crafted file"
            )
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise _err(f"{where}: stored entry {e.arcname} has inconsistent sizes: corrupt file")
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            if info.file_size > limits.max_inflate_ratio * info.compress_size + 4096:
                raise _err(
                    f"{where}: entry {e.arcname} declares {info.file_size} bytes from {info.compress_size} "
                    f"compressed (ratio above {limits.max_inflate_ratio:g}): refused as a zip bomb"
                )
        else:
            raise _err(f"{where}: entry {e.arcname} uses an unsupported compression method {info.compress_type}")
        if info.header_offset + info.compress_size > file_bytes:
            raise _err(f"{where}: entry {e.arcname} extends past the end of the file (truncated file?)")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise _err(
                f"{where}: entries declare more than {limits.max_total_bytes} bytes in total "
                f"(mapping.map_files.max_total_bytes)"
            )
        out[e.arcname] = info
    return out


def _stream_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, e: _Entry, where: str) -> bytearray:
    """The entry's bytes, read in chunks with a cap of its declared size, checked against its SHA-256."""
    buf = bytearray(e.num_bytes)
    view = memoryview(buf)
    digest = hashlib.sha256()
    pos = 0
    try:
        with zf.open(info) as fh:
            while pos < e.num_bytes:
                chunk = fh.read(min(_CHUNK_BYTES, e.num_bytes - pos))
                if not chunk:
                    break
                view[pos : pos + len(chunk)] = chunk
                digest.update(chunk)
                pos += len(chunk)
            extra = fh.read(1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise _err(f"{where}: entry {e.arcname} is unreadable ({exc}): the file is corrupt or truncated") from exc
    finally:
        view.release()
    if pos != e.num_bytes or extra or digest.hexdigest() != e.sha256:
        raise _err(f"{where}: entry {e.arcname} fails its checksum (corrupt or truncated file)")
    return buf


def _array_from_npy(data: bytearray, e: _Entry, where: str) -> np.ndarray:
    """An array backed by ``data`` (no copy), from its .npy header; no pickle, header checked against manifest."""
    try:
        fh = io.BytesIO(bytes(memoryview(data)[:_NPY_HEADER_MAX_BYTES]))  # the header only: no copy of the data
        major, _minor = np.lib.format.read_magic(fh)
        reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(fh)
        offset = fh.tell()
    except (ValueError, TypeError, SyntaxError, EOFError) as exc:
        raise _err(f"{where}: entry {e.arcname} is not a valid .npy array ({exc})") from exc
    if tuple(shape) != e.shape or str(dtype) != e.dtype:
        raise _err(
            f"{where}: entry {e.arcname} has shape {tuple(shape)} {dtype}, manifest says {list(e.shape)} {e.dtype}"
        )
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if offset + count * dtype.itemsize != len(data):
        raise _err(
            f"{where}: entry {e.arcname} holds {len(data) - offset} data bytes, its header needs "
            f"{count * dtype.itemsize}"
        )
    a = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return a.reshape(shape, order="F" if fortran else "C")


def _all_finite(a: np.ndarray) -> bool:
    """Chunked, so that a multi-GB array needs no array-sized temporary."""
    flat = a.reshape(-1, order="A") if a.flags.f_contiguous or a.flags.c_contiguous else a.ravel()
    step = 1 << 22
    return all(np.isfinite(flat[i : i + step]).all() for i in range(0, flat.size, step))


def _check_finite(a: np.ndarray, e: _Entry, where: str) -> None:
    if a.dtype.kind == "f" and not _all_finite(a):
        raise _err(f"{where}: array {e.name} contains NaN or infinite values")


def peek_map_format(path: str | os.PathLike) -> tuple[str, int] | None:
    """(format name, version) from a file's manifest, or None when it is not a zip with a readable manifest.

    Cheap (reads the zip directory and at most the manifest): for deciding whether a file may be overwritten.
    """
    try:
        with zipfile.ZipFile(path, "r") as zf:
            info = zf.getinfo("manifest.json")
            if info.file_size > MAX_MANIFEST_BYTES:
                return None
            with zf.open(info) as fh:
                manifest = json.loads(fh.read(MAX_MANIFEST_BYTES + 1))
    except (OSError, EOFError, KeyError, ValueError, RecursionError, zipfile.BadZipFile):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("format"), str):
        return None
    version = manifest.get("version")
    return manifest["format"], version if isinstance(version, int) else -1


def read_map(path: str | os.PathLike, limits: MapReadLimits | None = None) -> MapBundle:
    """Read and validate a map file (see the module docstring for every check).

    Raises ``Lang3DError(ErrorCode.IO_ERROR)`` (a ValueError) naming what is wrong: missing, truncated, foreign,
    old version, corrupt, over the limits, malformed manifest, non-finite floats. The arrays returned are backed by
    writable buffers owned by the bundle.
    """
    limits = limits or MapReadLimits()
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise _err(f"map file {where} does not exist")
    try:
        zf = zipfile.ZipFile(path, "r")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise _err(f"{where} is not a lang3d_ros map file (not a zip container: {exc}); it may be truncated") from exc
    with zf:
        manifest = _read_manifest(zf, where, limits)
        _check_version(manifest, where)
        metadata = manifest.get("metadata", {})
        if not isinstance(metadata, dict):
            raise _err(f"{where}: manifest 'metadata' must be an object, got {type(metadata).__name__}")
        entries = _parse_entries(manifest, where, limits)
        infos = _check_directory(zf, entries, path.stat().st_size, where, limits)
        bundle = MapBundle(metadata=metadata)
        for e in entries:
            data = _stream_entry(zf, infos[e.arcname], e, where)
            if e.kind == "array":
                a = _array_from_npy(data, e, where)
                _check_finite(a, e, where)
                bundle.arrays[e.name] = a
            else:
                bundle.blobs[e.name] = bytes(data)
    return bundle
