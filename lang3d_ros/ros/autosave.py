"""Autosave of the live map: ``<ros.map_dir>/autosave_<UTC time>_<n>.l3dmap``, written atomically (write_map writes a
temp file in the same folder and renames it), the newest ``keep`` kept.

The files sit in the map folder itself, so LoadMap and ``ros.load_map`` accept them by name. What it cannot do:
save a map whose process is killed with SIGKILL (only the last completed autosave survives), or save while
another process deletes files from the folder.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lang3d_ros.ros.config import AutosaveConfig

PREFIX = "autosave_"
SUFFIX = ".l3dmap"


def autosaves(map_dir: str | os.PathLike) -> list[Path]:
    """The autosave files of a map folder, oldest first (names sort by time)."""
    folder = Path(os.path.expanduser(map_dir))
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"{PREFIX}*{SUFFIX}") if p.is_file() and not p.is_symlink())


class Autosaver:
    """Saves ``language_map`` when asked and it changed since the last save (map.version); thread-safe."""

    def __init__(self, config: AutosaveConfig, map_dir: str, language_map, log: Callable[[str], None] | None = None):
        self.config = config
        self.folder = Path(os.path.expanduser(map_dir))
        self.map = language_map
        self._log = log or logging.getLogger(__name__).info
        self._lock = threading.Lock()
        self._saved_version: int | None = None
        self._count = 0

    def save(self, reason: str, force: bool = False) -> Path | None:
        """Write an autosave now; None when the map is empty or unchanged since the last one (unless force)."""
        with self._lock:
            if self.map.num_points == 0:
                self._log(f"autosave ({reason}): the map is empty, nothing saved")
                return None
            version = self.map.version
            if not force and version == self._saved_version:
                return None
            self.folder.mkdir(parents=True, exist_ok=True)
            self._count += 1
            stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime())
            path = self.folder / f"{PREFIX}{stamp}_{os.getpid()}_{self._count:04d}{SUFFIX}"
            t0 = time.monotonic()
            size = self.map.save(path)
            self._saved_version = version
            self._log(
                f"autosave ({reason}): {self.map.num_points} points -> {path} ({size / 2**20:.1f} MiB, "
                f"{time.monotonic() - t0:.1f} s)"
            )
            self._prune()
            return path

    def _prune(self) -> None:
        files = autosaves(self.folder)
        for old in files[: max(len(files) - self.config.keep, 0)]:
            try:
                old.unlink()
            except OSError as exc:
                self._log(f"autosave: could not delete {old}: {exc}")

    def latest(self) -> Path | None:
        files = autosaves(self.folder)
        return files[-1] if files else None

    def resume(self) -> Path | None:
        """Load the newest autosave into the map (ValueError if it is unreadable); None when there is none."""
        path = self.latest()
        if path is None:
            self._log(f"autosave: nothing to resume from in {self.folder}")
            return None
        self.map.load(path)
        self._saved_version = self.map.version
        self._log(f"resumed from {path}: {self.map.num_points} points")
        return path
