"""Occupancy grid from the map's points, a goal at a standoff from an object, and the A* path to it."""

from lang3d_ros.navigation.config import NavigationConfig
from lang3d_ros.navigation.goal import NavigationResult, navigate_to_object, object_footprint_xy, plan_to_object
from lang3d_ros.navigation.grid import OccupancyGrid, build_occupancy_grid, estimate_floor_z, traversable_mask

__all__ = [
    "NavigationConfig",
    "NavigationResult",
    "OccupancyGrid",
    "build_occupancy_grid",
    "estimate_floor_z",
    "navigate_to_object",
    "object_footprint_xy",
    "plan_to_object",
    "traversable_mask",
]
