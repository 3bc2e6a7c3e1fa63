"""Limits applied when a map file is read (a map file may come from anyone: see mapstore.container)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MapReadLimits:
    """Caps checked against the zip directory and the manifest before any entry is inflated."""

    max_total_bytes: int = 4 << 30
    """Sum of the declared (uncompressed) sizes of all entries; a larger map is refused before reading it."""
    max_entries: int = 10000
    """Entries in the manifest or in the zip directory."""
    max_inflate_ratio: float = 50.0
    """A compressed entry may declare at most this many times its compressed size (maps are written uncompressed;
    a zip bomb declares thousands)."""
    max_manifest_bytes: int = 16 << 20
    """Size of manifest.json."""
    max_array_dims: int = 8
    """Dimensions of one stored array."""
