"""GaussianModel initialisation (real garden points) and the 3DGS PLY store (bit-identical reload, validation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lang3d_ros.gaussians.config import GaussianConfig
from lang3d_ros.gaussians.model import GaussianModel, quats_from_normals
from lang3d_ros.gaussians.ply import load_gaussians, save_gaussians
from lang3d_ros.gaussians.rasterizer import quat_to_rotmat


@pytest.fixture(scope="module")
def garden(garden_npz):
    d = np.load(garden_npz)
    idx = np.random.default_rng(0).choice(d["means3d"].shape[0], 30000, replace=False)
    return d["means3d"][idx], d["colors"][idx], d


def test_init_from_real_points_scales_colours_and_render(garden):
    pts, cols, d = garden
    model = GaussianModel.from_points(pts, cols, device="cpu")
    assert model.num_gaussians == 30000
    assert torch.allclose(model.colors(), torch.from_numpy(cols / 255.0).float(), atol=1e-6)
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(pts).query(pts[:5], k=4)
    expect = np.sqrt((dist[:, 1:] ** 2).mean(1))
    assert np.allclose(model.scales()[:5, 0].numpy(), expect, rtol=1e-5)
    assert torch.allclose(model.opacities(), torch.tensor(0.1))
    assert model.latents.shape == (30000, 3, 3) and float(model.latents.abs().sum()) == 0.0
    Ks = torch.from_numpy(d["Ks"][:1]).float().clone()
    Ks[:, :2] /= 8
    out = model.render_rgb(
        torch.from_numpy(d["viewmats"][:1]),
        Ks,
        int(d["width"]) // 8,
        int(d["height"]) // 8,
        GaussianConfig(backend="torch"),
    )
    assert out.image.shape == (1, int(d["height"]) // 8, int(d["width"]) // 8, 3) and float(out.alpha.mean()) > 0.3


def test_init_with_normals_gives_flat_discs_along_the_normal():
    rng = np.random.default_rng(0)
    normals = rng.normal(size=(200, 3))
    normals[0] = [0, 0, -1]
    normals[1] = [0, 0, 1]
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    q = quats_from_normals(normals)
    R = quat_to_rotmat(torch.from_numpy(q)).numpy()
    assert np.allclose(R[:, :, 2], normals, atol=1e-9)  # local z -> normal
    pts = rng.uniform(-1, 1, size=(200, 3))
    m = GaussianModel.from_points(pts, rng.uniform(0, 1, (200, 3)), normals, GaussianConfig(normal_flatness=0.1), "cpu")
    s = m.scales()
    assert torch.allclose(s[:, 2], 0.1 * s[:, 0], rtol=1e-5)
    with pytest.raises(ValueError, match="colors"):
        GaussianModel.from_points(pts, rng.uniform(0, 2, (200, 3)), device="cpu")
    with pytest.raises(ValueError, match="points"):
        GaussianModel.from_points(pts[:, :2], pts[:, :2], device="cpu")


def _trained_like(garden, sh_degree=1) -> GaussianModel:
    pts, cols, _ = garden
    m = GaussianModel.from_points(pts[:5000], cols[:5000], config=GaussianConfig(sh_degree=sh_degree), device="cpu")
    g = torch.Generator().manual_seed(0)
    for k, v in m.params.items():  # arbitrary float32 values everywhere, as after training
        m.params[k] = v + torch.randn(v.shape, generator=g)
    m.codes = torch.randint(-1, 2**31 - 1, m.codes.shape, generator=g, dtype=torch.int32)
    m.coverage = torch.rand(m.num_gaussians, 3, generator=g)
    return m


def test_save_reload_is_bit_identical_with_metadata_and_autoencoder(tmp_path, garden):
    model = _trained_like(garden)
    decoder = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 512))
    path = save_gaussians(tmp_path / "map.ply", model, {"scene": "garden", "iterations": 7}, decoder.state_dict())
    loaded = load_gaussians(path)
    assert loaded.version == 2 and loaded.metadata == {"scene": "garden", "iterations": 7}
    assert loaded.model.sh_degree == 1
    for k, v in model.params.items():
        w = loaded.model.params[k]
        assert w.dtype == torch.float32 and torch.equal(v.view(torch.int32), w.view(torch.int32)), k
    assert loaded.model.codes.dtype == torch.int32 and torch.equal(loaded.model.codes, model.codes)
    assert torch.equal(loaded.model.coverage, model.coverage)
    for k, v in decoder.state_dict().items():
        assert torch.equal(v, loaded.autoencoder_state[k])
    assert [p.name for p in tmp_path.iterdir()] == ["map.ply"]  # no temp files left behind
    # a standard 3DGS reader sees the usual properties first
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    assert (
        "element vertex 5000" in header and "property float f_rest_8" in header and "property float lang_2_2" in header
    )
    cov = "".join(f"property float cov_{lvl}\n" for lvl in range(3))
    assert "property float lang_2_2\n" + cov + "property int seg_0\nproperty int seg_1\n" in header


def test_version_1_file_without_codes_loads_with_no_codes(tmp_path, garden):
    """A file written before instance codes (version 1: float properties only) still loads; its codes are -1."""
    from lang3d_ros.gaussians import ply

    model = _trained_like(garden, sh_degree=0)
    path = save_gaussians(tmp_path / "new.ply", model)
    header, body = path.read_bytes().split(b"end_header\n", 1)
    rec = np.frombuffer(body, dtype=ply._vertex_array(model).dtype)
    floats = [n for n in rec.dtype.names if not n.startswith(("seg_", "cov_"))]
    old_body = np.stack([rec[n] for n in floats], axis=1).astype("<f4").tobytes()
    import json
    import zlib

    lines = header.decode().split("\n")
    info = json.loads(lines[2].split(ply.MAGIC_COMMENT, 1)[1])
    info.update(version=1, vertex_crc32=zlib.crc32(old_body))
    lines[2] = f"comment {ply.MAGIC_COMMENT} {json.dumps(info)}"
    lines = [ln for ln in lines if not ln.startswith(("property int seg_", "property float cov_"))]
    (tmp_path / "old.ply").write_bytes(("\n".join(lines) + "end_header\n").encode() + old_body)
    loaded = load_gaussians(tmp_path / "old.ply")
    assert loaded.version == 1 and bool((loaded.model.codes == -1).all()) and loaded.model.coverage is None
    assert torch.equal(loaded.model.latents, model.latents)
    # a version-2 file that lost its codes is corrupt, not old
    info.update(version=2)
    lines[2] = f"comment {ply.MAGIC_COMMENT} {json.dumps(info)}"
    (tmp_path / "bad.ply").write_bytes(("\n".join(lines) + "end_header\n").encode() + old_body)
    with pytest.raises(ValueError, match="instance-code"):
        load_gaussians(tmp_path / "bad.ply")


def test_reading_truncated_foreign_or_corrupt_files_raises(tmp_path, garden):
    path = save_gaussians(tmp_path / "map.ply", _trained_like(garden, sh_degree=0))
    data = path.read_bytes()
    (tmp_path / "short.ply").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated"):
        load_gaussians(tmp_path / "short.ply")
    (tmp_path / "foreign.ply").write_bytes(b"PK\x03\x04 not a ply at all")
    with pytest.raises(ValueError, match="not a PLY"):
        load_gaussians(tmp_path / "foreign.ply")
    (tmp_path / "ascii.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
    with pytest.raises(ValueError, match="format"):
        load_gaussians(tmp_path / "ascii.ply")
    bad = bytearray(data)
    bad[-5] ^= 0xFF
    (tmp_path / "flip.ply").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="checksum"):
        load_gaussians(tmp_path / "flip.ply")
    (tmp_path / "future.ply").write_bytes(data.replace(b'{"version": 2', b'{"version": 9', 1))
    with pytest.raises(ValueError, match="newer"):
        load_gaussians(tmp_path / "future.ply")
    with pytest.raises(ValueError, match="does not exist"):
        load_gaussians(tmp_path / "missing.ply")


def test_plain_3dgs_file_without_language_data_loads(tmp_path):
    n = 4
    names = [
        "x",
        "y",
        "z",
        "nx",
        "ny",
        "nz",
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
    header = "ply\nformat binary_little_endian 1.0\nelement vertex 4\n" + "".join(
        f"property float {k}\n" for k in names
    )
    body = np.arange(n * len(names), dtype="<f4").reshape(n, len(names))
    (tmp_path / "g.ply").write_bytes((header + "end_header\n").encode() + body.tobytes())
    loaded = load_gaussians(tmp_path / "g.ply")
    assert loaded.version == 0 and loaded.model.num_gaussians == 4 and loaded.model.sh_degree == 0
    assert torch.equal(loaded.model.means, torch.from_numpy(body[:, :3].copy()))
    assert torch.equal(loaded.model.quats, torch.from_numpy(body[:, 13:17].copy()))
    assert float(loaded.model.latents.abs().sum()) == 0.0
