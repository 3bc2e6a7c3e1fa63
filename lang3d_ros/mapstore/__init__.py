"""Map files: atomic, versioned, validated when read."""
from lang3d_ros.mapstore.container import FORMAT_VERSION, MapBundle, read_map, write_map

__all__ = ["FORMAT_VERSION", "MapBundle", "read_map", "write_map"]
