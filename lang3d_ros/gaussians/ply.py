"""Language Gaussians as a standard 3DGS PLY that splat viewers open, plus language data.

Layout (binary little-endian, every property ``float`` = float32)::

    ply
    format binary_little_endian 1.0
    comment lang3d_ros_gaussians {"version": 1, "sh_degree": ..., "latent_dim": ..., "num_levels": 3,
            "vertex_crc32": ..., "blob_crc32": ..., "blob_bytes": ..., "metadata": {...}}   (one line of JSON)
    element vertex N
    property float x, y, z, nx, ny, nz            (normals written as 0, as 3DGS does)
    property float f_dc_0..2                      (SH DC)
    property float f_rest_0..3(K-1)-1             (3DGS order: channel-major, i.e. (N, 3, K-1) flattened)
    property float opacity                        (logit)
    property float scale_0..2                     (log metres)
    property float rot_0..3                       (quaternion wxyz, not normalised)
    property float lang_{level}_{k}               (level 0..2, k < latent_dim: LangSplat latents)
    property float cov_{level}                    (version 2, optional: language coverage per level, the query gate)
    property int seg_{level}                      (version 2: instance code per level, -1 none; int32)
    element lang3d_blob B                         (only when an autoencoder state is stored)
    property uchar b                              (a NumPy .npz, no pickles: the autoencoder state_dict)
    end_header

Viewers read the vertex element and ignore unknown properties and elements. Files are written to a
temporary file in the same folder and moved into place with ``os.replace`` (atomic). Reading validates
the header, the exact body size (truncation), the CRCs and the version; a plain 3DGS PLY from another tool
(no ``lang3d_ros_gaussians`` comment) loads with zero latents, and a version-1 file (no ``seg_*``) with codes -1.
Cannot: ASCII PLY, property types other than float and int.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lang3d_ros.device import resolve_device
from lang3d_ros.gaussians.model import NO_CODE, NUM_LEVELS, GaussianModel

FORMAT_VERSION = 2
MAGIC_COMMENT = "lang3d_ros_gaussians"
MAX_HEADER_BYTES = 1 << 20


@dataclass
class LoadedGaussians:
    model: GaussianModel
    metadata: dict = field(default_factory=dict)
    autoencoder_state: dict[str, torch.Tensor] | None = None
    version: int = 0  # 0: a plain 3DGS file without lang3d_ros data


def _vertex_names(sh_degree: int, latent_dim: int) -> list[str]:
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
        + [f"lang_{lvl}_{k}" for lvl in range(NUM_LEVELS) for k in range(latent_dim)]
    )


CODE_NAMES = [f"seg_{lvl}" for lvl in range(NUM_LEVELS)]
COVERAGE_NAMES = [f"cov_{lvl}" for lvl in range(NUM_LEVELS)]
PLY_TYPES = {"float": "<f4", "int": "<i4"}


def _vertex_array(model: GaussianModel) -> np.ndarray:
    """(N,) structured little-endian records: the float properties of ``_vertex_names``, then int32 ``seg_*``."""
    p = {k: v.detach().cpu().to(torch.float32).numpy() for k, v in model.params.items()}
    n = model.num_gaussians
    rest = p["sh_rest"].transpose(0, 2, 1).reshape(n, -1)  # (N, 3, K-1) channel-major, as 3DGS
    cols = [
        p["means"],
        np.zeros((n, 3), np.float32),
        p["sh_dc"],
        rest,
        p["opacity_logits"][:, None],
        p["log_scales"],
        p["quats"],
        p["latents"].reshape(n, -1),
    ]
    names = _vertex_names(model.sh_degree, model.latent_dim)
    if model.coverage is not None:
        cols.append(model.coverage.detach().cpu().to(torch.float32).numpy())
        names = names + COVERAGE_NAMES
    floats = np.concatenate(cols, axis=1).astype("<f4")
    rec = np.empty(n, dtype=[(k, "<f4") for k in names] + [(k, "<i4") for k in CODE_NAMES])
    for i, k in enumerate(names):
        rec[k] = floats[:, i]
    codes = model.codes.detach().cpu().numpy().astype("<i4")
    for lvl, k in enumerate(CODE_NAMES):
        rec[k] = codes[:, lvl]
    return rec


def _state_to_npz(state: dict) -> bytes:
    arrays = {}
    for k, v in state.items():
        arr = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        if arr.dtype == object:
            raise ValueError(f"autoencoder state entry {k!r} is not a numeric array")
        arrays[k] = arr
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def save_gaussians(
    path: str | os.PathLike,
    model: GaussianModel,
    metadata: dict | None = None,
    autoencoder_state: dict | None = None,
) -> Path:
    """Write ``model`` (+ JSON-able ``metadata``, + autoencoder ``state_dict``) atomically to ``path``."""
    path = Path(path)
    try:
        meta_json = json.loads(json.dumps(metadata or {}))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable: {exc}") from exc
    vertex = _vertex_array(model)
    blob = b"" if autoencoder_state is None else _state_to_npz(autoencoder_state)
    info = {
        "version": FORMAT_VERSION,
        "sh_degree": model.sh_degree,
        "latent_dim": model.latent_dim,
        "num_levels": NUM_LEVELS,
        "vertex_crc32": zlib.crc32(vertex.tobytes()),
        "blob_bytes": len(blob),
        "blob_crc32": zlib.crc32(blob),
        "metadata": meta_json,
    }
    lines = [
        "ply",
        "format binary_little_endian 1.0",
        f"comment {MAGIC_COMMENT} {json.dumps(info)}",
        f"element vertex {model.num_gaussians}",
    ]
    lines += [f"property {'int' if vertex.dtype[name].kind == 'i' else 'float'} {name}" for name in vertex.dtype.names]
    if blob:
        lines += [f"element lang3d_blob {len(blob)}", "property uchar b"]
    lines.append("end_header")
    header = ("\n".join(lines) + "\n").encode("ascii")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            f.write(vertex.tobytes())
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read_header(f, name: str) -> tuple[list[str], int]:
    first = f.readline(16)
    if first.rstrip(b"\r\n") != b"ply":
        raise ValueError(f"{name} is not a PLY file (no 'ply' magic)")
    lines: list[str] = []
    size = len(first)
    while True:
        raw = f.readline(MAX_HEADER_BYTES)
        size += len(raw)
        if not raw or size > MAX_HEADER_BYTES:
            raise ValueError(f"{name}: PLY header has no end_header (truncated or not a PLY)")
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise ValueError(f"{name}: PLY header is not ASCII") from exc
        if line == "end_header":
            return lines, size
        lines.append(line)


def load_gaussians(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedGaussians:
    """Read a file written by ``save_gaussians`` (or a plain 3DGS PLY); ValueError names what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    data = path.read_bytes()
    f = io.BytesIO(data)
    lines, header_size = _read_header(f, str(path))
    info: dict = {}
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for line in lines:
        parts = line.split()
        if parts[0] == "format":
            if parts[1:] != ["binary_little_endian", "1.0"]:
                raise ValueError(
                    f"{path}: unsupported PLY format {' '.join(parts[1:])!r} (need binary_little_endian 1.0)"
                )
        elif parts[0] == "comment" and len(parts) > 2 and parts[1] == MAGIC_COMMENT:
            try:
                info = json.loads(line.split(MAGIC_COMMENT, 1)[1])
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: corrupt {MAGIC_COMMENT} metadata: {exc}") from exc
        elif parts[0] == "element" and len(parts) == 3:
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property":
            if not elements or len(parts) != 3:
                raise ValueError(f"{path}: bad PLY property line {line!r}")
            elements[-1][2].append((parts[2], parts[1]))  # (name, type)
    if not elements or elements[0][0] != "vertex":
        raise ValueError(f"{path}: the first PLY element must be 'vertex'")
    version = int(info.get("version", 0))
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: format version {version} is newer than this reader ({FORMAT_VERSION})")
    _, n, props = elements[0]
    if any(t not in PLY_TYPES for _, t in props):
        raise ValueError(f"{path}: vertex properties must be float or int, got {sorted({t for _, t in props})}")
    names = [p for p, _ in props]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate vertex property names")
    dtype = np.dtype([(p, PLY_TYPES[t]) for p, t in props])
    required = [
        "x",
        "y",
        "z",
        "f_dc_0",
        "f_dc_1",
        "f_dc_2",
        "opacity",
        "scale_0",
        "scale_1",
        "scale_2",
        "rot_0",
        "rot_1",
        "rot_2",
        "rot_3",
    ]
    missing = [r for r in required if r not in names]
    if missing:
        raise ValueError(f"{path}: not a 3DGS PLY, vertex lacks {missing}")
    blob_bytes = 0
    for ename, count, eprops in elements[1:]:
        if ename != "lang3d_blob" or eprops != [("b", "uchar")]:
            raise ValueError(f"{path}: unexpected PLY element {ename!r}")
        blob_bytes = count
    expected = header_size + n * dtype.itemsize + blob_bytes
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(f"{path} is {kind}: {len(data)} bytes, header promises {expected}")
    body = data[header_size : header_size + n * dtype.itemsize]
    blob = data[header_size + len(body) :]
    if info:
        if zlib.crc32(body) != info.get("vertex_crc32") or zlib.crc32(blob) != info.get("blob_crc32"):
            raise ValueError(f"{path}: checksum mismatch (corrupt file)")
    table = np.frombuffer(body, dtype=dtype, count=n)
    col = set(names)

    def take(keys: list[str]) -> torch.Tensor:
        if not keys:
            return torch.zeros(n, 0)
        if any(dtype[k] != np.dtype("<f4") for k in keys):
            raise ValueError(f"{path}: properties {keys} must be float")
        return torch.from_numpy(np.stack([table[k] for k in keys], axis=1).astype(np.float32).reshape(n, len(keys)))

    rest_names = sorted((k for k in names if k.startswith("f_rest_")), key=lambda k: int(k.split("_")[2]))
    k_minus_1 = len(rest_names) // 3
    sh_degree = int(round((k_minus_1 + 1) ** 0.5)) - 1
    if 3 * ((sh_degree + 1) ** 2 - 1) != len(rest_names):
        raise ValueError(f"{path}: {len(rest_names)} f_rest properties do not form an SH degree")
    latent_dim = int(info.get("latent_dim", 3))
    lang_names = [f"lang_{lvl}_{k}" for lvl in range(NUM_LEVELS) for k in range(latent_dim)]
    if info and any(k not in col for k in lang_names):
        raise ValueError(f"{path}: lang3d_ros file lacks language latent properties")
    latents = take(lang_names).reshape(n, NUM_LEVELS, latent_dim) if info else torch.zeros(n, NUM_LEVELS, latent_dim)
    params = {
        "means": take(["x", "y", "z"]),
        "quats": take(["rot_0", "rot_1", "rot_2", "rot_3"]),
        "log_scales": take(["scale_0", "scale_1", "scale_2"]),
        "opacity_logits": take(["opacity"])[:, 0].contiguous(),
        "sh_dc": take(["f_dc_0", "f_dc_1", "f_dc_2"]),
        "sh_rest": take(rest_names).reshape(n, 3, k_minus_1).transpose(1, 2).contiguous(),
        "latents": latents,
    }
    codes = torch.full((n, NUM_LEVELS), NO_CODE, dtype=torch.int32)
    if all(k in col for k in CODE_NAMES):
        codes = np.stack([table[k] for k in CODE_NAMES], axis=1).astype(np.int32).reshape(n, NUM_LEVELS)
        codes = torch.from_numpy(codes)
    elif version >= 2:
        raise ValueError(f"{path}: version-{version} file lacks instance-code properties {CODE_NAMES}")
    dev = resolve_device(device)
    model = GaussianModel({k: v.to(dev) for k, v in params.items()}, sh_degree, codes.to(dev))
    if all(k in col for k in COVERAGE_NAMES):
        model.coverage = take(COVERAGE_NAMES).to(dev)
    state = None
    if blob:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            state = {k: torch.from_numpy(z[k].copy()) for k in z.files}
    return LoadedGaussians(model, dict(info.get("metadata", {})), state, version)
