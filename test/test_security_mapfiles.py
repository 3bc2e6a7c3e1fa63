"""The map folder policy under the attacks of issue 15: nothing written, created or revealed outside the folder."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

from lang3d_ros.errors import ErrorCode
from lang3d_ros.mapstore import MapBundle, MapFolder, MapPathError, read_map, temp_file_owner, write_map


def _bundle():
    return MapBundle(arrays={"xyz": np.arange(30, dtype=np.float32).reshape(10, 3)}, metadata={"frame_id": "map"})


def _tree(path):
    """Every entry under ``path`` with its type and content (files), to prove nothing changed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            content = open(p, "rb").read() if stat.S_ISREG(st.st_mode) else None
            out[os.path.relpath(p, path)] = (stat.S_IFMT(st.st_mode), content)
    return out


@pytest.fixture
def setup(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("export PATH=/usr/bin\n")
    (home / "notes.txt").write_text("private")
    root = home / "maps"
    folder = MapFolder(root)
    (root / "floor2").mkdir()
    write_map(root / "kitchen.l3dmap", _bundle())
    (root / "readme.l3dmap").write_text("not a map")
    os.mkfifo(root / "fifo.l3dmap")
    os.symlink(home / "notes.txt", root / "link.l3dmap")
    os.symlink(home, root / "linked_folder")
    os.symlink("/dev/null", root / "null.l3dmap")
    return home, root, folder


ATTACKS = [
    "readme.l3dmap",  # an existing file that is not a map
    "../pwned.l3dmap",  # parent folder
    "floor2/../../pwned.l3dmap",
    "../.bashrc",  # no suffix, outside, hidden
    ".bashrc",
    "{home}/.bashrc",  # absolute, outside
    "{home}/pwned.l3dmap",
    "fifo.l3dmap",  # FIFO
    "/dev/null",  # character device
    "null.l3dmap",  # link to a device
    "link.l3dmap",  # link to a file outside
    "linked_folder/pwned.l3dmap",  # through a linked folder
    "new/deeper/pwned.l3dmap",  # missing folders
    "kitchen",  # no suffix
    "kitchen.zip",
    ".l3dmap",
    ".hidden.l3dmap",
    "",
    "a\nb.l3dmap",
    "x" * 300 + ".l3dmap",  # component too long for the file system
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_attack_is_refused_and_changes_nothing(setup, attack):
    home, root, folder = setup
    name = attack.format(home=home)
    before = _tree(home)
    for fn in (folder.for_write, folder.for_read):
        with pytest.raises(MapPathError) as info:
            path = fn(name)
            write_map(path, _bundle())  # what a service would do next: must not be reached
        assert info.value.code == ErrorCode.IO_ERROR
        assert info.value.detail and "Error" not in str(info.value)
    assert _tree(home) == before
    assert not os.path.exists("/dev/null.l3dmap")


def test_one_client_message_for_not_allowed_not_found_not_a_map(setup):
    home, root, folder = setup
    messages = {}
    for name in ("missing.l3dmap", "readme.l3dmap", "../pwned.l3dmap", "link.l3dmap", "fifo.l3dmap"):
        with pytest.raises(MapPathError) as info:
            folder.for_read(name)
        messages[name] = str(info.value).replace(repr(name), "NAME")
    assert len(set(messages.values())) == 1, messages
    # the detail (for the log) says what it was, with the real path
    with pytest.raises(MapPathError) as info:
        folder.for_read("readme.l3dmap")
    assert str(root) in info.value.detail and "not a lang3d_ros map" in info.value.detail


def test_allowed_names_inside_the_folder(setup):
    home, root, folder = setup
    p = folder.for_write("kitchen.l3dmap")  # replacing a lang3d map is allowed
    assert p == root.resolve() / "kitchen.l3dmap"
    write_map(p, _bundle())
    assert folder.for_read(str(root / "kitchen.l3dmap")) == p  # absolute path inside the folder
    q = folder.for_write("floor2/new.l3dmap")  # existing sub-folder
    write_map(q, _bundle())
    assert read_map(folder.for_read("floor2/new.l3dmap")).arrays["xyz"].shape == (10, 3)
    assert folder.for_write(folder.default_name()).suffix == ".l3dmap"
    assert folder.list_maps() == ["kitchen.l3dmap"]  # no link, FIFO, folder or non-map file


def test_root_created_private_and_nothing_else(tmp_path):
    MapFolder(tmp_path / "a" / "maps")
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "maps").st_mode) == 0o700
    assert sorted(os.listdir(tmp_path / "a" / "maps")) == []


def test_overwriting_a_zip_that_is_not_a_map_is_refused(setup):
    home, root, folder = setup
    with zipfile.ZipFile(root / "other.l3dmap", "w") as zf:
        zf.writestr("manifest.json", '{"format": "something.else"}')
    with pytest.raises(MapPathError):
        folder.for_write("other.l3dmap")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temp_files_are_removed_on_start(tmp_path):
    root = tmp_path / "maps"
    root.mkdir()
    dead = root / f"m.l3dmap.writing-{_dead_pid()}-abc123.tmp"
    mine = root / f"m.l3dmap.writing-{os.getpid()}-abc123.tmp"
    dead.write_bytes(b"partial")
    mine.write_bytes(b"in progress")
    assert temp_file_owner(dead.name) == ("m.l3dmap", int(dead.name.split("-")[1]))
    MapFolder(root)
    assert not dead.exists() and mine.exists()


def test_kill_9_during_a_write_leaves_nothing_after_the_next_start(tmp_path):
    """A writer killed while its temp file is open: the previous map is intact, and the next MapFolder removes the
    temp file (named recognisably, not hidden)."""
    root = tmp_path / "maps"
    folder = MapFolder(root)
    write_map(folder.for_write("m.l3dmap"), _bundle())
    before = (root / "m.l3dmap").read_bytes()
    script = textwrap.dedent(f"""
        import os, time
        import numpy as np
        from lang3d_ros.mapstore import MapBundle, MapFolder, write_map
        os.fsync = lambda fd: time.sleep(600)  # hold the write open until killed
        path = MapFolder({str(root)!r}).for_write("m.l3dmap")
        write_map(path, MapBundle(arrays={{"x": np.zeros((1000, 3), np.float32)}}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while not any(temp_file_owner(n) for n in os.listdir(root)):
            assert proc.poll() is None and time.monotonic() < deadline, "writer never started its temp file"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    temps = [n for n in os.listdir(root) if temp_file_owner(n)]
    assert len(temps) == 1 and not temps[0].startswith(".")
    assert (root / "m.l3dmap").read_bytes() == before
    MapFolder(root)
    assert sorted(os.listdir(root)) == ["m.l3dmap"]


def test_a_real_map_round_trips_through_the_folder(tmp_path):
    """A map built from a synthetic scene passes every read check (finite arrays, sizes, manifest) and reloads."""
    from conftest import synthetic_config

    from lang3d_ros.datasets.synthetic import generate_scene, make_trajectory, render_frames
    from lang3d_ros.geometry.camera import Intrinsics
    from lang3d_ros.mapping.build import build_stack, ground_truth_tables

    scene = generate_scene(seed=11, n_objects=5)
    K = Intrinsics(65.6, 65.6, 39.5, 29.5, 80, 60)
    frames = list(render_frames(scene, make_trajectory(scene, "orbit", n_frames=6, seed=2), K, noise=None, seed=2))
    stack = build_stack(synthetic_config(mapping={"train_gaussians": False}), **ground_truth_tables(scene))
    for f in frames:
        assert stack.pipeline.process_now(f) == ""
    folder = MapFolder(tmp_path / "maps")
    n = stack.language_map.num_points
    stack.language_map.save(folder.for_write("scene.l3dmap"))
    stack.language_map.load(folder.for_read("scene.l3dmap"))
    assert stack.language_map.num_points == n > 100
