"""A goal pose next to an object and the path to it, for a Nav2 NavigateToPose request.

Standoff: the distance from the robot centre to the object. With the object's own points
(``object_footprint_xy``: its segment's points in the obstacle band, inside its box), it is the distance to the
nearest of them, as a costmap measures it: goal candidates are the centres of the grid cells at the standoff
(+- half a cell), as clear as a path cell.
Without them it is the distance to the box's footprint (its gravity-aligned xy rectangle): candidates lie on the
curve at exactly that distance (the rectangle grown by the standoff, rounded corners), ``ring_samples`` of them
evenly spaced along it. If none is traversable and reachable, rings at standoff +- k cells (up to
``standoff_tolerance_m``) are tried. Of the reachable candidates on the first ring that has any, the one with the
shortest path wins; it faces the box centre. Paths are planned on the inflated grid (circular robot): steps
between adjacent cell centres at least ``transit_clearance_m`` from every obstacle point, straight shortcuts only
through cells clear everywhere; heading changes, dynamics and moving obstacles are Nav2's job.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from lang3d_ros.geometry.boxes import Box3D
from lang3d_ros.geometry.transforms import yaw_quaternion
from lang3d_ros.navigation.config import NavigationConfig
from lang3d_ros.navigation.grid import (
    FREE,
    OCCUPIED,
    UNKNOWN,
    OccupancyGrid,
    build_occupancy_grid,
    cell_clear_mask,
    clearance_m,
    traversable_mask,
    unexplored_floor_mask,
)
from lang3d_ros.navigation.planner import astar, cost_field, line_of_sight, smooth_path

log = logging.getLogger(__name__)


@dataclass
class NavigationResult:
    """goal_pose: (x, y, yaw) map frame, or None on failure; path: waypoints (x, y, yaw) from the start
    to the goal (yaw along the next segment, the goal's yaw last); path_cells: (M,2) (row, col) A* cells."""

    success: bool
    reason: str = ""
    goal_pose: tuple[float, float, float] | None = None
    path: list[tuple[float, float, float]] = field(default_factory=list)
    path_cells: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    path_length_m: float = 0.0
    standoff_m: float = float("nan")  # achieved distance from the goal to the footprint (points or box)
    start_xy: tuple[float, float] | None = None  # the robot position planned from (path[0])
    unexplored_m: float = 0.0  # length of the path's steps onto unexplored cells (``plan_through_unexplored``)

    @property
    def goal_orientation_xyzw(self) -> np.ndarray | None:
        """(4,) quaternion (x, y, z, w) of the goal's yaw, for a NavigateToPose PoseStamped; None on failure."""
        return None if self.goal_pose is None else yaw_quaternion(self.goal_pose[2])


def _footprint(box: Box3D) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (centre (2,), half extents (2,), R (2,2) box->map) of a gravity-aligned box's footprint."""
    if not box.is_gravity_aligned():
        raise ValueError("target box must be gravity-aligned (rotation about z only)")
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    return box.center[:2].copy(), box.size[:2] / 2.0, np.array([[c, -s], [s, c]])


def distance_to_footprint(xy: np.ndarray, box: Box3D) -> np.ndarray:
    """(N,2) map-frame xy -> (N,) distance (m) to the box's footprint rectangle (0 inside)."""
    centre, half, R = _footprint(box)
    local = (np.asarray(xy, dtype=np.float64).reshape(-1, 2) - centre) @ R
    return np.linalg.norm(np.clip(np.abs(local) - half, 0.0, None), axis=1)


def standoff_ring(box: Box3D, standoff_m: float, n: int) -> np.ndarray:
    """(n,2) map-frame xy evenly spaced along the curve at standoff_m from the box footprint."""
    if standoff_m <= 0 or n < 1:
        raise ValueError("standoff_m must be positive and n >= 1")
    centre, (hx, hy), R = _footprint(box)
    arcs = []
    for k, (sx, sy) in enumerate(((1, 1), (-1, 1), (-1, -1), (1, -1))):  # corners counter-clockwise
        a = np.linspace(k * np.pi / 2, (k + 1) * np.pi / 2, 17)
        arcs.append(np.column_stack([sx * hx + standoff_m * np.cos(a), sy * hy + standoff_m * np.sin(a)]))
    poly = np.concatenate(arcs)
    closed = np.vstack([poly, poly[:1]])
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    t = np.arange(n) * (s[-1] / n)
    local = np.column_stack([np.interp(t, s, closed[:, 0]), np.interp(t, s, closed[:, 1])])
    return centre + local @ R.T


def _snap_start(
    grid: OccupancyGrid,
    traversable: np.ndarray,
    start_xy: np.ndarray,
    snap_m: float,
    unknown_snap_m: float | None = None,
):
    """-> ((row, col), None) of a traversable start cell, or (None, reason). A start in UNKNOWN space may move up to
    ``unknown_snap_m`` (a forward-looking camera never sees the floor under the robot); one in occupied or inflated
    space only ``snap_m``."""
    ij = grid.xy_to_ij(start_xy)[0]
    if not grid.in_bounds(ij)[0]:
        return None, f"start ({start_xy[0]:.2f}, {start_xy[1]:.2f}) is outside the map"
    if traversable[ij[0], ij[1]]:
        return (int(ij[0]), int(ij[1])), None
    if not traversable.any():
        return None, "the map has no traversable cell"
    dist, (ri, rj) = ndimage.distance_transform_edt(~traversable, return_indices=True)
    if int(grid.data[ij[0], ij[1]]) == -1 and unknown_snap_m is not None:
        snap_m = max(snap_m, unknown_snap_m)
    if dist[ij[0], ij[1]] * grid.resolution_m > snap_m:
        state = {-1: "unknown", 0: "inside the inflated obstacles", 100: "occupied"}[int(grid.data[ij[0], ij[1]])]
        return None, (
            f"start ({start_xy[0]:.2f}, {start_xy[1]:.2f}) is {state} and no free cell is within {snap_m:.2f} m"
        )
    return (int(ri[ij[0], ij[1]]), int(rj[ij[0], ij[1]])), None


def start_escape_cells(
    grid: OccupancyGrid, clearance: np.ndarray, start_xy: np.ndarray, robot_radius_m: float
) -> np.ndarray:
    """(H,W) bool: the cells of the robot's footprint disc at ``start_xy`` (2,) that are not occupied and whose
    centre is no closer to an obstacle point than the start's, minus half a cell diagonal. The robot stands there,
    so moving within its own footprint away from obstacles is collision-free even inside the inflation band."""
    out = np.zeros(grid.data.shape, dtype=bool)
    ij = grid.xy_to_ij(start_xy)[0]
    if not grid.in_bounds(ij)[0]:
        return out
    n = int(np.ceil(robot_radius_m / grid.resolution_m)) + 1
    r0, r1 = max(ij[0] - n, 0), min(ij[0] + n + 1, grid.height)
    c0, c1 = max(ij[1] - n, 0), min(ij[1] + n + 1, grid.width)
    rr, cc = np.mgrid[r0:r1, c0:c1]
    xy = grid.ij_to_xy(np.column_stack([rr.ravel(), cc.ravel()]))
    start_clear = float(clearance[ij[0], ij[1]])
    ok = (
        (np.linalg.norm(xy - start_xy, axis=1) <= robot_radius_m)
        & (grid.data[rr, cc].ravel() != OCCUPIED)
        & (clearance[rr, cc].ravel() >= start_clear - np.sqrt(0.5) * grid.resolution_m)
    )
    out[rr.ravel()[ok], cc.ravel()[ok]] = True
    return out


def object_footprint_xy(
    points_xyz: np.ndarray, box: Box3D, floor_z_m: float, config: NavigationConfig | None = None
) -> np.ndarray | None:
    """The object's own footprint on the floor: (M,2) map-frame xy of its observed points (a segment's points,
    (K,3)) that lie in its box grown by one grid cell and in the obstacle band above the floor (at least
    ``footprint_min_points`` of them; else every point in the grown box). None when too few points remain: the
    standoff is then measured from the box. The box (from the segment's main clusters) drops spills far from the
    object; the points drop the box's excess (a yaw that is off, an unseen side)."""
    cfg = config or NavigationConfig()
    pts = np.asarray(points_xyz, dtype=np.float64).reshape(-1, 3)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) == 0:
        return None
    grown = Box3D(box.center, box.size + 2 * cfg.resolution_m, box.R_world_box)
    pts = pts[grown.contains(pts)]
    h = pts[:, 2] - floor_z_m
    band = pts[(h >= cfg.obstacle_min_height_m) & (h <= cfg.obstacle_max_height_m)]
    out = band if len(band) >= cfg.footprint_min_points else pts
    return out[:, :2].copy() if len(out) >= cfg.footprint_min_points else None


def _frac_ij(grid: OccupancyGrid, xy: np.ndarray) -> np.ndarray:
    """(2,) map-frame xy -> (2,) fractional (row, col) such that cell centres are integers."""
    q = (np.asarray(xy, dtype=np.float64) - grid.origin_xy) / grid.resolution_m - 0.5
    return q[::-1]


def _result_path(grid, cells, start_xy, goal_xy, goal_yaw, los, smooth):
    """Waypoints from the A* cells: line-of-sight shortcuts where ``los`` (cells clear everywhere) allows them,
    the start point for the first cell, and the goal point after the goal cell's centre (replacing the centre
    when the last leg sees the goal point on ``los``)."""
    keep = smooth_path(los, cells) if smooth else np.arange(len(cells))
    xy = grid.ij_to_xy(cells[keep])
    xy[0] = start_xy
    if len(xy) == 1:
        xy = np.vstack([xy, goal_xy])
    elif not np.allclose(xy[-1], goal_xy):
        if line_of_sight(los, cells[keep[-2]], _frac_ij(grid, goal_xy)):
            xy[-1] = goal_xy
        else:
            xy = np.vstack([xy, goal_xy])
    if len(xy) >= 2 and np.allclose(xy[0], xy[1]):
        xy = xy[1:]
    yaw = np.append(np.arctan2(np.diff(xy[:, 1]), np.diff(xy[:, 0])), goal_yaw)
    return [(float(x), float(y), float(a)) for (x, y), a in zip(xy, yaw)]


def _candidates_from_points(
    grid: OccupancyGrid, goal_ok: np.ndarray, footprint_xy: np.ndarray, reach_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """Goal cells near the object -> ((K,2) (row, col), (K,) distance (m) from each cell centre to the nearest
    footprint point), for the cells of ``goal_ok`` within ``reach_m`` of the points' extent."""
    lo = footprint_xy.min(0) - reach_m
    hi = footprint_xy.max(0) + reach_m
    (r0, c0), (r1, c1) = grid.xy_to_ij(np.vstack([lo, hi]))
    r0, c0 = max(int(r0), 0), max(int(c0), 0)
    r1, c1 = min(int(r1) + 1, grid.height), min(int(c1) + 1, grid.width)
    if r0 >= r1 or c0 >= c1:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    ij = np.argwhere(goal_ok[r0:r1, c0:c1]) + np.array([r0, c0])
    if len(ij) == 0:
        return ij, np.zeros(0)
    d = cKDTree(footprint_xy).query(grid.ij_to_xy(ij))[0]
    return ij, d


def plan_to_object(
    grid: OccupancyGrid,
    box: Box3D,
    start_xy,
    config: NavigationConfig | None = None,
    standoff_m: float | None = None,
    traversable: np.ndarray | None = None,
    footprint_xy: np.ndarray | None = None,
) -> NavigationResult:
    """A free, reachable goal at the standoff from the object facing its box centre, and the path from start_xy.

    The standoff is measured from ``footprint_xy`` (M,2), the object's own points on the floor
    (``object_footprint_xy``), when given: goals are the grid cells at standoff +- half a cell from the nearest
    point (the robot's distance to the object's surface, as a costmap measures it); without it, from the box's
    footprint rectangle (``standoff_ring``). Bad input (non-finite start or points, non-gravity-aligned box, bad
    standoff) raises ValueError; an unreachable target gives success False with the reason. ``traversable`` (H,W)
    may be passed to reuse inflation (it then replaces ``traversable_mask`` for transit; the start escape disc is
    still added when configured). Goals lie on observed free floor, at least robot_radius_m from every obstacle
    point: a goal from the points is its cell's centre, which needs the clearance a path cell needs
    (``traversable_mask``); a goal on the box's ring may lie anywhere in its cell, whose every point must be clear
    (``cell_clear_mask``). Paths may cross enclosed unseen floor (``plan_through_unseen_floor``) and, when no
    route over observed floor exists, unexplored space inside the observed floor's hull (``plan_through_unexplored``).
    """
    cfg = config or NavigationConfig()
    cfg.validate()
    start = np.asarray(start_xy, dtype=np.float64).reshape(-1)
    if start.shape != (2,) or not np.all(np.isfinite(start)):
        raise ValueError(f"start_xy must be 2 finite numbers, got {start_xy!r}")
    standoff = cfg.standoff_m if standoff_m is None else float(standoff_m)
    if not np.isfinite(standoff) or standoff <= 0:
        raise ValueError(f"standoff_m must be positive, got {standoff}")
    _footprint(box)
    if footprint_xy is not None:
        footprint_xy = np.asarray(footprint_xy, dtype=np.float64)
        if footprint_xy.ndim != 2 or footprint_xy.shape[1] != 2 or not np.all(np.isfinite(footprint_xy)):
            raise ValueError(f"footprint_xy must be (M, 2) finite xy, got shape {footprint_xy.shape}")
        if len(footprint_xy) == 0:
            footprint_xy = None
    clear = clearance_m(grid)
    if traversable is not None and traversable.shape != grid.data.shape:
        raise ValueError(f"traversable has shape {traversable.shape}, grid {grid.data.shape}")
    res = _plan(grid, box, start, cfg, standoff, traversable, footprint_xy, clear, None)
    if res.success or not cfg.plan_through_unexplored or res.reason.startswith("no free cell"):
        return res
    # no route over observed floor: cross unexplored space inside the observed floor's hull (Nav2's allow_unknown)
    unexplored = unexplored_floor_mask(grid)
    if not unexplored.any():
        return res
    wider = traversable_mask(grid, cfg.robot_radius_m, cfg.plan_through_unseen_floor, clear, unexplored=True)
    if traversable is not None:
        wider |= traversable
    res2 = _plan(grid, box, start, cfg, standoff, wider, footprint_xy, clear, unexplored)
    return res2 if res2.success else res


def _plan(grid, box, start, cfg, standoff, traversable, footprint_xy, clear, unexplored) -> NavigationResult:
    """One planning attempt of ``plan_to_object`` on ``traversable`` (computed when None). ``unexplored``: None,
    or the (H,W) ``unexplored_floor_mask`` that ``traversable`` admits (shortcuts may cross it too; goals stay on
    observed free floor; the result's ``unexplored_m`` measures the path's steps onto it)."""
    r = cfg.robot_radius_m
    if traversable is None:
        traversable = traversable_mask(grid, r, cfg.plan_through_unseen_floor, clear)
    escape = start_escape_cells(grid, clear, start, r) if cfg.start_escape else None
    trav = traversable | escape if escape is not None else traversable
    clear_cells = cell_clear_mask(grid, r, cfg.plan_through_unseen_floor, clear, unexplored is not None)
    los = (trav & clear_cells) | escape if escape is not None else trav & clear_cells
    goal_ok = trav & clear_cells & (grid.data == FREE)  # a goal anywhere in its cell (the box's ring)
    centre_ok = traversable & (grid.data == FREE)  # a goal at its cell's centre (from the points); no escape cells
    # a start on unknown floor (never in view: under and behind a forward-looking camera) snaps to traversable
    # floor; its escape disc there is an island of unknown cells that joins nothing
    s_ij = grid.xy_to_ij(start)[0]
    on_unknown = bool(grid.in_bounds(s_ij)[0]) and int(grid.data[s_ij[0], s_ij[1]]) == UNKNOWN
    snap_mask = traversable if on_unknown and not traversable[s_ij[0], s_ij[1]] else trav
    start_ij, reason = _snap_start(grid, snap_mask, start, cfg.start_snap_m, cfg.unknown_start_snap_m)
    if start_ij is None:
        return NavigationResult(False, reason)
    costs = cost_field(trav, start_ij)
    n_steps = int(np.floor(cfg.standoff_tolerance_m / cfg.resolution_m + 1e-9))
    offsets = [0.0] + [s * k * cfg.resolution_m for k in range(1, n_steps + 1) for s in (1, -1)]
    if footprint_xy is not None:
        near_ij, near_d = _candidates_from_points(
            grid, centre_ok, footprint_xy, standoff + cfg.standoff_tolerance_m + cfg.resolution_m
        )
    rings = []  # (radius, candidate xy, their cells, free) per ring, the asked standoff first
    for off in offsets:
        radius = standoff + off
        if radius <= 0:
            continue
        if footprint_xy is None:
            cand = standoff_ring(box, radius, cfg.ring_samples)
            ij = grid.xy_to_ij(cand)
            inside = grid.in_bounds(ij)
            free = np.zeros(len(cand), dtype=bool)
            free[inside] = goal_ok[ij[inside, 0], ij[inside, 1]]
        else:
            on_ring = np.abs(near_d - radius) <= 0.5 * cfg.resolution_m
            ij = near_ij[on_ring]
            cand = grid.ij_to_xy(ij)
            free = np.ones(len(ij), dtype=bool)
        rings.append((radius, cand, ij, free))
    n_free = sum(int(free.sum()) for *_, free in rings)
    # roomy goals first on every ring, then any (a box-ring goal may lie anywhere in its cell: half a diagonal less)
    slack = 0.0 if footprint_xy is not None else float(np.sqrt(0.5)) * cfg.resolution_m
    roomy = clear - slack >= r + cfg.goal_clearance_margin_m
    passes = (True, False) if cfg.goal_clearance_margin_m > 0 else (False,)
    for need_room, (radius, cand, ij, free) in itertools.product(passes, rings):
        ok = free.copy()
        if need_room:
            ok[ok] = roomy[ij[ok, 0], ij[ok, 1]]
        c = np.full(len(cand), np.inf)
        c[ok] = costs[ij[ok, 0], ij[ok, 1]]
        if not np.isfinite(c).any():
            continue
        best = int(np.argmin(c))
        goal_xy = cand[best]
        goal_yaw = float(np.arctan2(box.center[1] - goal_xy[1], box.center[0] - goal_xy[0]))
        cells = astar(trav, start_ij, ij[best])
        if cells is None:  # cannot happen when the cost field says reachable; kept as a guard
            return NavigationResult(False, "A* found no path to a goal the cost field reached")
        path = _result_path(grid, cells, start, goal_xy, goal_yaw, los, cfg.smooth_path)
        length = float(sum(np.hypot(b[0] - a[0], b[1] - a[1]) for a, b in zip(path, path[1:])))
        log.debug("goal at standoff %.2f m, path %d cells, %.2f m", radius, len(cells), length)
        achieved = (
            float(distance_to_footprint(goal_xy, box)[0])
            if footprint_xy is None
            else float(np.linalg.norm(footprint_xy - goal_xy, axis=1).min())
        )
        unexplored_m = 0.0
        if unexplored is not None and len(cells) > 1:
            step = np.hypot(*np.diff(cells, axis=0).T) * grid.resolution_m
            unexplored_m = float(step[unexplored[cells[1:, 0], cells[1:, 1]]].sum())
        return NavigationResult(
            True,
            "",
            (float(goal_xy[0]), float(goal_xy[1]), goal_yaw),
            path,
            cells,
            length,
            achieved,
            (float(start[0]), float(start[1])),
            unexplored_m,
        )
    what = "object" if footprint_xy is None else "object's points"
    if n_free == 0:
        reason = f"no free cell at {standoff:.2f} +- {cfg.standoff_tolerance_m:.2f} m around the {what}"
    else:
        reason = f"object unreachable: {n_free} free standoff candidates, none connected to the start"
    return NavigationResult(False, reason, start_xy=(float(start[0]), float(start[1])))


def navigate_to_object(
    points: np.ndarray, box: Box3D, start_xy, config: NavigationConfig | None = None, standoff_m: float | None = None
) -> tuple[NavigationResult, OccupancyGrid]:
    """Build the grid from the map's points (N,3), then plan_to_object. Returns (result, grid)."""
    grid = build_occupancy_grid(points, config)
    return plan_to_object(grid, box, start_xy, config, standoff_m), grid
