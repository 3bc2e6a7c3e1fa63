"""Map files: atomic, versioned, validated when read, and confined to the map folder when a client names them."""

from lang3d_ros.mapstore.config import MapReadLimits
from lang3d_ros.mapstore.container import (
    FORMAT_VERSION,
    MAP_SUFFIX,
    MapBundle,
    peek_map_format,
    read_map,
    temp_file_owner,
    write_map,
)
from lang3d_ros.mapstore.folder import MapFolder, MapPathError

__all__ = [
    "FORMAT_VERSION",
    "MAP_SUFFIX",
    "MapBundle",
    "MapFolder",
    "MapPathError",
    "MapReadLimits",
    "peek_map_format",
    "read_map",
    "temp_file_owner",
    "write_map",
]
