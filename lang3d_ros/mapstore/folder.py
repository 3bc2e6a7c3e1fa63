"""The map folder policy: the only place services read and write map files (``ros.map_dir``).

A client names a map (``"kitchen.l3dmap"``, ``"floor2/kitchen.l3dmap"`` or an absolute path inside the folder);
``MapFolder.for_write`` / ``for_read`` return the checked path or raise ``MapPathError``. Usage in a service::

    folder = MapFolder(config.ros.map_dir)          # once at start-up: creates the folder (0700), removes stale temps
    try:
        path = folder.for_write(request.path or folder.default_name())
        size = language_map.save(path)
    except MapPathError as exc:
        logger.warning(exc.detail)                  # the reason, with real paths: for the operator only
        return fail(exc.code, str(exc))             # one message for "not allowed / not found / not a map"

Refused: empty or over-long names, control characters, ``..`` and hidden (``.``) components, absolute paths
outside the folder, names without the ``.l3dmap`` suffix, symbolic links (the file and every folder between the
map folder and it), missing sub-folders (none is ever created), FIFOs, devices, sockets and other non-regular files,
and, for writing, an existing file that is not a lang3d_ros map (checked from its zip manifest; a map of another
format version may be replaced). ``for_read`` also requires the file to be a lang3d_ros map; the full validation
(version, sizes, checksums, finite arrays) is ``read_map``'s, whose messages are specific.

What it cannot do: the checks run before the file is opened, so a local user who can write into the map folder can
still race them (swap a checked file for a link): the folder is created 0700 and must be writable only by the
node's user. Hard links inside the folder are regular files: a write replaces the folder's entry (rename), never the
linked file's content.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

from lang3d_ros.errors import ErrorCode, Lang3DError
from lang3d_ros.mapstore.container import FORMAT_NAME, MAP_SUFFIX, peek_map_format, temp_file_owner

log = logging.getLogger(__name__)

CLIENT_MESSAGE = (
    "map file {name!r} is not allowed, not found or not a lang3d_ros map (maps are .l3dmap files inside the map folder)"
)
STALE_TEMP_AGE_S = 24 * 3600.0
MAX_NAME_CHARS = 1024


class MapPathError(Lang3DError):
    """A map path refused by the folder policy. ``str(exc)`` is the one client-facing message (it repeats only the
    name the client sent); ``detail`` says why, with real paths, for the log. ``code`` is ErrorCode.IO_ERROR."""

    def __init__(self, name: str, detail: str):
        super().__init__(ErrorCode.IO_ERROR, CLIENT_MESSAGE.format(name=str(name)[:200]))
        self.detail = detail


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MapFolder:
    """Confines map files to one folder. Thread-safe (it keeps no state beyond the root path).

    ``root``: the configured folder (``~`` is expanded: operator input, never client input). It is created with
    mode 0700 when missing (with its missing parents); an existing root may itself be a symbolic link (the operator
    chose it), everything below it may not.
    """

    def __init__(self, root: str | os.PathLike, clean_temp_files: bool = True):
        given = Path(os.path.expanduser(str(root))).absolute()
        if not given.exists():
            given.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root = given.resolve(strict=True)
        if not self.root.is_dir():
            raise Lang3DError(ErrorCode.IO_ERROR, f"map folder {given} is not a folder")
        self._given_root = given
        if clean_temp_files:
            self.clean_temp_files()

    # ------------------------------------------------------------------------------------------ public API
    def for_write(self, name: str) -> Path:
        """The path to write map ``name`` to: inside the folder, in an existing sub-folder, and either free or an
        existing lang3d_ros map (replaced atomically by ``write_map``). Raises MapPathError; creates nothing."""
        path, st = self._check(name)
        if st is None:
            return path
        if not stat.S_ISREG(st.st_mode):
            raise MapPathError(
                name, f"refused to write {path}: it exists and is not a regular file (mode {stat.filemode(st.st_mode)})"
            )
        found = peek_map_format(path)
        if found is None or found[0] != FORMAT_NAME:
            raise MapPathError(name, f"refused to overwrite {path}: it exists and is not a lang3d_ros map ({found})")
        return path

    def for_read(self, name: str) -> Path:
        """The path of existing map ``name``: a regular file inside the folder with a lang3d_ros manifest.
        Raises MapPathError (one message for not allowed / not found / not a map)."""
        path, st = self._check(name)
        if st is None:
            raise MapPathError(name, f"map {path} does not exist")
        if not stat.S_ISREG(st.st_mode):
            raise MapPathError(name, f"refused to read {path}: not a regular file (mode {stat.filemode(st.st_mode)})")
        found = peek_map_format(path)
        if found is None or found[0] != FORMAT_NAME:
            raise MapPathError(name, f"refused to read {path}: not a lang3d_ros map ({found})")
        return path

    def default_name(self, prefix: str = "map") -> str:
        """A fresh name for a save request that names no file: ``<prefix>-YYYYmmdd-HHMMSS.l3dmap`` (UTC)."""
        return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}{MAP_SUFFIX}"

    def list_maps(self) -> list[str]:
        """Names of the lang3d_ros maps directly in the folder (regular files, manifest checked), sorted."""
        out = []
        with os.scandir(self.root) as it:
            for d in it:
                if d.name.endswith(MAP_SUFFIX) and not d.name.startswith(".") and d.is_file(follow_symlinks=False):
                    found = peek_map_format(d.path)
                    if found is not None and found[0] == FORMAT_NAME:
                        out.append(d.name)
        return sorted(out)

    def clean_temp_files(self) -> list[Path]:
        """Remove temp files that ``write_map`` left in the folder tree when its process was killed (writer pid
        gone, or older than a day). Returns the removed paths. Never follows symbolic links."""
        removed = []
        now = time.time()
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for fn in filenames:
                owner = temp_file_owner(fn)
                if owner is None:
                    continue
                p = Path(dirpath) / fn
                try:
                    st = os.lstat(p)
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    mine = owner[1] == os.getpid()
                    if (not mine and not _pid_alive(owner[1])) or now - st.st_mtime > STALE_TEMP_AGE_S:
                        os.unlink(p)
                        removed.append(p)
                except FileNotFoundError:
                    continue
        if removed:
            log.warning(
                "removed %d temp file(s) of interrupted map writes: %s",
                len(removed),
                ", ".join(str(p) for p in removed[:5]),
            )
        return removed

    # ------------------------------------------------------------------------------------------ checks
    def _relative_parts(self, name: str) -> tuple[str, ...]:
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
            raise MapPathError(str(name)[:80], f"map name {str(name)[:80]!r} is empty, not text or too long")
        if any(ord(c) < 32 or c == "\x7f" for c in name) or "\\" in name:
            raise MapPathError(name, f"map name {name!r} holds control characters or backslashes")
        p = Path(name)
        if p.is_absolute():
            norm = Path(os.path.normpath(name))
            for base in (self.root, self._given_root):
                try:
                    return norm.relative_to(base).parts
                except ValueError:
                    continue
            raise MapPathError(name, f"{name} is outside the map folder {self.root}")
        return p.parts

    def _check(self, name: str) -> tuple[Path, os.stat_result | None]:
        parts = self._relative_parts(name)
        if not parts:
            raise MapPathError(name, f"{name!r} names the map folder itself")
        for part in parts:
            if part in ("..", ".") or part.startswith("."):
                raise MapPathError(name, f"{name!r}: component {part!r} is not allowed ('..' or hidden)")
        final = parts[-1]
        if not final.endswith(MAP_SUFFIX) or len(final) == len(MAP_SUFFIX) or temp_file_owner(final):
            raise MapPathError(name, f"{name!r} does not end in {MAP_SUFFIX}")
        folder = self.root
        for part in parts[:-1]:
            folder = folder / part
            try:
                st = os.lstat(folder)
            except FileNotFoundError:
                raise MapPathError(name, f"folder {folder} does not exist (folders are never created)") from None
            except OSError as exc:
                raise MapPathError(name, f"folder {folder}: {exc}") from None
            if stat.S_ISLNK(st.st_mode):
                raise MapPathError(name, f"{folder} is a symbolic link")
            if not stat.S_ISDIR(st.st_mode):
                raise MapPathError(name, f"{folder} is not a folder")
        path = folder / final
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise MapPathError(name, f"{path}: {exc}") from None
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise MapPathError(name, f"{path} is a symbolic link")
        real = Path(os.path.realpath(path))
        if real != path or not real.is_relative_to(self.root):
            raise MapPathError(name, f"{path} resolves to {real}, outside the map folder or through a link")
        return path, st
