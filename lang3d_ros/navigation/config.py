"""Navigation parameters: occupancy grid from the map points, goal at a standoff, A* path."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class NavigationConfig:
    """Heights are above the estimated floor. Standoff = distance from the robot centre to the nearest of the
    target's own points on the floor (its segment's points in the obstacle band), or to its box's footprint (the
    xy rectangle) when the target has too few points."""

    resolution_m: float = 0.05
    """Cell size."""
    robot_radius_m: float = 0.3
    """Circumscribed radius used for inflation."""
    obstacle_min_height_m: float = 0.05
    """Points at least this high above the floor are obstacles ..."""
    obstacle_max_height_m: float = 1.5
    """... up to this height (above it the robot passes under: tables' undersides count, ceilings do not)."""
    floor_tolerance_m: float = 0.04
    """|z - floor| below this is a floor observation."""
    floor_z_m: float | None = None
    """Known floor height; None: estimate from a height histogram."""
    floor_bin_m: float = 0.02
    """Height histogram bin used to estimate the floor."""
    floor_min_fraction: float = 0.3
    """Floor = lowest height bin with >= this fraction of the fullest bin."""
    min_points_per_cell: int = 2
    """Obstacle points needed to mark a cell occupied."""
    fill_holes_cells: int = 1
    """Closing of the free mask: unknown gaps this many cells wide become free."""
    margin_m: float = 0.5
    """Grid extends this far beyond the points."""
    max_cells: int = 4_000_000
    """Refuse grids larger than this many cells (a map spread over kilometres is an error, not a room)."""
    standoff_m: float = 0.6
    """Default distance from the robot centre to the target's footprint (a request's standoff_m overrides it)."""
    footprint_min_points: int = 5
    """Fewest of the target's own points (in its box and the obstacle band) that place the standoff from the
    points; with fewer, the standoff is measured from the box's footprint."""
    standoff_tolerance_m: float = 0.15
    """Rings tried at standoff_m +- k * resolution_m up to this."""
    goal_clearance_margin_m: float = 0.05
    """Goals at least this much more than robot_radius_m from every obstacle point are preferred, on any ring
    within the tolerance, over tighter goals (an inflation cost's effect: a goal a map's few cm of noise from the
    robot's radius is where it touches the chair it came for); only when no ring has one is a tighter goal taken.
    0: no preference."""
    ring_samples: int = 48
    """Candidate goal poses sampled per standoff ring around the target."""
    start_snap_m: float = 0.3
    """A start inside inflation snaps to the nearest free cell this close."""
    unknown_start_snap_m: float = 1.0
    """A start in unknown space (the floor under the robot, never in view) snaps this far."""
    plan_through_unseen_floor: bool = True
    """Unknown cells enclosed by observed cells (floor the camera never saw inside the explored area: under the
    robot, behind low objects) may be crossed by paths, with the same clearance; goals stay on observed floor.
    Unknown space connected to the grid's border (unexplored) is crossed only as ``plan_through_unexplored`` says."""
    plan_through_unexplored: bool = True
    """When no goal is reachable over observed (and enclosed unseen) floor, paths may also cross unexplored cells
    inside the convex hull of the observed floor (a corner the camera turned away from), as Nav2's planners do with
    ``allow_unknown``; goals stay on observed floor and the answer says how much of the path is unexplored. The
    hull keeps paths off the space beyond the walls around seen floor; nothing tells unexplored floor from an
    obstacle nobody saw there (the robot's local planner meets it). False: unreachable instead."""
    start_escape: bool = True
    """The robot stands at the start: the cells of its footprint disc (robot_radius_m) that are not occupied and
    no closer to an obstacle than the start itself are traversable, so a robot inside the inflation band (or on
    unseen floor) can leave it without snapping."""
    smooth_path: bool = True
    """Shorten the A* path by line-of-sight shortcuts on the inflated grid."""
    execute: bool = False
    """Nodes only: Navigate also sends its goal to Nav2's NavigateToPose action (``execute_action``) and reports
    whether Nav2 accepted it; without nav2_msgs installed the answer says so and still carries the goal."""
    execute_action: str = "navigate_to_pose"
    """Name of the Nav2 NavigateToPose action server (relative to the node namespace unless absolute)."""
    execute_timeout_s: float = 5.0
    """How long Navigate waits for the action server and for Nav2 to accept or reject the goal (s)."""

    def validate(self) -> None:
        if self.resolution_m <= 0 or self.robot_radius_m < 0:
            raise ValueError("resolution_m must be positive and robot_radius_m non-negative")
        if not 0 <= self.obstacle_min_height_m < self.obstacle_max_height_m:
            raise ValueError("need 0 <= obstacle_min_height_m < obstacle_max_height_m")
        if self.floor_tolerance_m <= 0 or self.floor_bin_m <= 0 or not 0 < self.floor_min_fraction <= 1:
            raise ValueError("floor_tolerance_m, floor_bin_m must be positive and floor_min_fraction in (0, 1]")
        if self.floor_tolerance_m > self.obstacle_min_height_m:
            raise ValueError("floor_tolerance_m must not exceed obstacle_min_height_m")
        if self.min_points_per_cell < 1 or self.ring_samples < 4 or self.max_cells < 1 or self.fill_holes_cells < 0:
            raise ValueError(
                "min_points_per_cell >= 1, ring_samples >= 4, max_cells >= 1, fill_holes_cells >= 0 required"
            )
        if self.footprint_min_points < 1:
            raise ValueError("footprint_min_points must be >= 1")
        if self.unknown_start_snap_m < 0:
            raise ValueError("unknown_start_snap_m must be non-negative")
        if not (math.isfinite(self.goal_clearance_margin_m) and self.goal_clearance_margin_m >= 0):
            raise ValueError(f"goal_clearance_margin_m must be finite and >= 0, got {self.goal_clearance_margin_m}")
        if self.standoff_m <= 0 or self.standoff_tolerance_m < 0 or self.margin_m < 0 or self.start_snap_m < 0:
            raise ValueError("standoff_m must be positive; standoff_tolerance_m, margin_m, start_snap_m non-negative")
