"""2D occupancy grid from the map's points, in nav_msgs/OccupancyGrid's layout (without importing ROS).

The floor height comes from a height histogram (the lowest well-filled bin; the map frame is z up, so a
tilted or multi-level floor is not handled). A cell is occupied when enough points lie in the obstacle
band above the floor, free when floor points were seen in it (or it is a gap of at most
``fill_holes_cells`` between such cells) and it is not occupied, unknown otherwise.
The grid keeps the obstacle points' xy, so inflation is measured from the points themselves, not from occupied
cell centres (which over-inflates by up to a cell diagonal and closes gaps a robot fits through).
Overhangs above the band are ignored; glass and other surfaces depth never saw stay unknown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError, cKDTree

from lang3d_ros.navigation.config import NavigationConfig

log = logging.getLogger(__name__)

UNKNOWN, FREE, OCCUPIED = -1, 0, 100


@dataclass(frozen=True)
class OccupancyGrid:
    """data (H,W) int8 indexed [row, col] = [iy, ix] from the origin corner; -1 unknown, 0 free, 100 occupied.
    origin_xy: map-frame xy of the outer corner of cell (0, 0); cells are axis-aligned with the map.
    obstacle_xy: (M,2) float32 map-frame xy of the obstacle-band points in occupied cells (None for a grid
    known only by its cells: clearance is then bounded from the occupied cells' extents)."""

    data: np.ndarray
    resolution_m: float
    origin_xy: np.ndarray
    floor_z_m: float
    frame_id: str = "map"
    obstacle_xy: np.ndarray | None = field(default=None, repr=False, compare=False)
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def height(self) -> int:
        return int(self.data.shape[0])

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    def xy_to_ij(self, xy: np.ndarray) -> np.ndarray:
        """(N,2) map-frame xy -> (N,2) int64 (row, col); may be out of bounds (see in_bounds)."""
        q = np.floor((np.asarray(xy, dtype=np.float64).reshape(-1, 2) - self.origin_xy) / self.resolution_m)
        return q[:, ::-1].astype(np.int64)

    def ij_to_xy(self, ij: np.ndarray) -> np.ndarray:
        """(N,2) (row, col) -> (N,2) map-frame xy of the cell centres."""
        ij = np.asarray(ij, dtype=np.float64).reshape(-1, 2)
        return self.origin_xy + (ij[:, ::-1] + 0.5) * self.resolution_m

    def in_bounds(self, ij: np.ndarray) -> np.ndarray:
        ij = np.asarray(ij).reshape(-1, 2)
        return (ij[:, 0] >= 0) & (ij[:, 0] < self.height) & (ij[:, 1] >= 0) & (ij[:, 1] < self.width)

    def to_msg_fields(self) -> dict:
        """Fields of nav_msgs/OccupancyGrid: info.resolution/width/height/origin and row-major int8 data."""
        return {
            "frame_id": self.frame_id,
            "resolution": float(self.resolution_m),
            "width": self.width,
            "height": self.height,
            "origin_position": (float(self.origin_xy[0]), float(self.origin_xy[1]), float(self.floor_z_m)),
            "origin_orientation_xyzw": (0.0, 0.0, 0.0, 1.0),
            "data": self.data.astype(np.int8).reshape(-1),
        }


def _check_points(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {p.shape}")
    p = p.astype(np.float64, copy=False)
    if not np.all(np.isfinite(p)):
        raise ValueError("points contain non-finite values")
    if len(p) == 0:
        raise ValueError("need at least one point to build an occupancy grid")
    return p


def estimate_floor_z(points: np.ndarray, config: NavigationConfig | None = None) -> float:
    """points (N,3) -> floor height (m): median z of the lowest histogram bin (floor_bin_m wide) that holds
    at least floor_min_fraction of the fullest bin's points, and of its two neighbours."""
    cfg = config or NavigationConfig()
    z = _check_points(points)[:, 2]
    n_bins = max(1, int(np.ceil((z.max() - z.min()) / cfg.floor_bin_m)))
    counts, edges = np.histogram(z, bins=n_bins)
    k = int(np.flatnonzero(counts >= cfg.floor_min_fraction * counts.max())[0])
    lo, hi = edges[max(k - 1, 0)], edges[min(k + 2, len(edges) - 1)]
    return float(np.median(z[(z >= lo) & (z <= hi)]))


def build_occupancy_grid(points: np.ndarray, config: NavigationConfig | None = None) -> OccupancyGrid:
    """points (N,3) map frame -> OccupancyGrid covering their xy extent (plus margin_m).
    Raises ValueError when the grid would exceed max_cells."""
    cfg = config or NavigationConfig()
    cfg.validate()
    p = _check_points(points)
    floor_z = cfg.floor_z_m if cfg.floor_z_m is not None else estimate_floor_z(p, cfg)
    h = p[:, 2] - floor_z
    used = p[(h >= -cfg.floor_tolerance_m) & (h <= cfg.obstacle_max_height_m)]
    if len(used) == 0:
        raise ValueError(f"no points between the floor ({floor_z:.2f} m) and the obstacle band's top")
    res = cfg.resolution_m
    origin = np.floor((used[:, :2].min(0) - cfg.margin_m) / res) * res
    top = used[:, :2].max(0) + cfg.margin_m
    W, H = (np.ceil((top - origin) / res).astype(np.int64) + 1).tolist()
    if W * H > cfg.max_cells:
        raise ValueError(f"grid of {W}x{H} cells exceeds max_cells={cfg.max_cells}; raise resolution_m or max_cells")
    hu = used[:, 2] - floor_z
    cols_rows = np.floor((used[:, :2] - origin) / res).astype(np.int64)
    flat = cols_rows[:, 1] * W + cols_rows[:, 0]
    floor_cells = np.bincount(flat[np.abs(hu) <= cfg.floor_tolerance_m], minlength=W * H)
    band = (hu >= cfg.obstacle_min_height_m) & (hu <= cfg.obstacle_max_height_m)
    obstacle_cells = np.bincount(flat[band], minlength=W * H)
    free = (floor_cells > 0).reshape(H, W)
    if cfg.fill_holes_cells > 0:  # sparse floors: close small unseen gaps; occupied stays occupied
        free |= ndimage.binary_closing(
            free, structure=np.ones((3, 3), bool), iterations=cfg.fill_holes_cells, border_value=0
        )
    occupied = (obstacle_cells >= cfg.min_points_per_cell).reshape(H, W)
    data = np.full((H, W), UNKNOWN, dtype=np.int8)
    data[free] = FREE
    data[occupied] = OCCUPIED
    in_occupied = band & occupied.reshape(-1)[flat]
    grid = OccupancyGrid(
        data, res, origin.astype(np.float64), floor_z, obstacle_xy=used[in_occupied, :2].astype(np.float32)
    )
    log.debug(
        "grid %dx%d at %.3f m, floor z %.3f m: %d free, %d occupied",
        W,
        H,
        res,
        floor_z,
        int((data == FREE).sum()),
        int((data == OCCUPIED).sum()),
    )
    return grid


_FINE_CELLS = 16_000_000  # most sub-cells of the fine distance transform behind clearance_m


def clearance_m(grid: OccupancyGrid) -> np.ndarray:
    """(H,W) float64: a lower bound (m) on the distance from each cell centre to the nearest obstacle point (inf
    without obstacles).

    With ``grid.obstacle_xy``: the points are rasterised on sub-cells (3 x 3 per cell, 1 x 1 on huge grids) and a
    Euclidean distance transform gives centre-to-sub-cell distances, minus half a sub-cell diagonal (1.2 cm at 5 cm
    cells). Without obstacle points: distance to the nearest occupied cell centre minus half a cell diagonal.
    Computed once per grid (cached on it)."""
    if "clearance_m" not in grid._cache:
        grid._cache["clearance_m"] = _clearance_m(grid)
    return grid._cache["clearance_m"]


def _clearance_m(grid: OccupancyGrid) -> np.ndarray:
    occupied = grid.data == OCCUPIED
    if not occupied.any():
        return np.full(grid.data.shape, np.inf)
    res = grid.resolution_m
    pts = None if grid.obstacle_xy is None else np.asarray(grid.obstacle_xy, dtype=np.float64).reshape(-1, 2)
    if pts is None or len(pts) == 0:
        return np.maximum(ndimage.distance_transform_edt(~occupied) * res - np.sqrt(0.5) * res, 0.0)
    k = 3 if grid.data.size * 9 <= _FINE_CELLS else 1
    fine = np.zeros((grid.height * k, grid.width * k), dtype=bool)
    ij = np.floor((pts - grid.origin_xy) / (res / k)).astype(np.int64)[:, ::-1]
    ok = (ij[:, 0] >= 0) & (ij[:, 0] < fine.shape[0]) & (ij[:, 1] >= 0) & (ij[:, 1] < fine.shape[1])
    fine[ij[ok, 0], ij[ok, 1]] = True
    dist = ndimage.distance_transform_edt(~fine) * (res / k)
    centre = k // 2  # the sub-cell holding the cell centre (k odd)
    return np.maximum(dist[centre::k, centre::k] - np.sqrt(0.5) * res / k, 0.0)


def unseen_floor_mask(grid: OccupancyGrid) -> np.ndarray:
    """(H,W) bool: UNKNOWN cells enclosed by observed cells, i.e. not 4-connected through unknown cells to the
    grid's border. They are floor the camera never saw inside the explored area (under the robot, behind low
    objects); the unknown that reaches the border is unexplored space. Cannot tell an enclosed hole that hides an
    obstacle depth never returned (glass, black fabric) from floor. Cached on the grid (read-only)."""
    if "unseen_floor" not in grid._cache:
        unknown = grid.data == UNKNOWN
        labels, n = ndimage.label(unknown)
        if n:
            border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
            unknown &= ~np.isin(labels, border[border > 0])
        unknown.flags.writeable = False
        grid._cache["unseen_floor"] = unknown
    return grid._cache["unseen_floor"]


def transit_clearance_m(robot_radius_m: float, resolution_m: float) -> float:
    """Clearance (m) a cell centre needs to be crossed: sqrt(r^2 + res^2 / 2). A path step joins two 8-adjacent
    cell centres (at most a cell diagonal apart); if both are this far from an obstacle point, every point of the
    step is at least ``robot_radius_m`` from it (the distance to a point is smallest at the step's middle)."""
    return float(np.sqrt(robot_radius_m**2 + 0.5 * resolution_m**2))


def exact_clearance_near(grid: OccupancyGrid, clearance: np.ndarray, threshold_m: float) -> np.ndarray:
    """(H,W) ``clearance`` with the cells whose lower bound lies within the bound's error below ``threshold_m``
    replaced by their exact distance to the nearest obstacle point (k-d tree on ``grid.obstacle_xy``), so a test
    ``>= threshold_m`` is decided on the points themselves, not on the sub-cell raster. Unchanged without
    obstacle points."""
    pts = grid.obstacle_xy
    if pts is None or len(pts) == 0 or not np.isfinite(threshold_m):
        return clearance
    slack = np.sqrt(2.0) * grid.resolution_m / 3.0 + 1e-9  # the sub-cell bound's largest error (k = 3)
    if grid.data.size * 9 > _FINE_CELLS:
        slack = np.sqrt(2.0) * grid.resolution_m + 1e-9
    near = (clearance < threshold_m) & (clearance >= threshold_m - slack)
    if not near.any():
        return clearance
    if "obstacle_tree" not in grid._cache:
        grid._cache["obstacle_tree"] = cKDTree(np.asarray(pts, dtype=np.float64).reshape(-1, 2))
    ij = np.argwhere(near)
    out = clearance.copy()
    out[near] = grid._cache["obstacle_tree"].query(grid.ij_to_xy(ij))[0]
    return out


def unexplored_floor_mask(grid: OccupancyGrid) -> np.ndarray:
    """(H,W) bool: UNKNOWN cells open to the grid's border (unexplored, unlike ``unseen_floor_mask``) whose centre
    lies inside the convex hull of the observed free cells: space between seen floor that the camera never
    looked at (a corner a walk turned away from). The hull keeps out space beyond the walls around seen floor;
    it cannot tell unexplored floor from an unseen obstacle or a non-convex room's outside. Cached on the grid
    (read-only)."""
    if "unexplored_floor" not in grid._cache:
        out = _unexplored_floor_mask(grid)
        out.flags.writeable = False
        grid._cache["unexplored_floor"] = out
    return grid._cache["unexplored_floor"]


def _unexplored_floor_mask(grid: OccupancyGrid) -> np.ndarray:
    unknown = grid.data == UNKNOWN
    free = np.argwhere(grid.data == FREE)
    out = np.zeros(grid.data.shape, dtype=bool)
    if len(free) < 3 or not unknown.any():
        return out
    try:
        hull = ConvexHull(free.astype(np.float64))
    except QhullError:  # free cells on one line: no area between them
        return out
    cand = np.argwhere(unknown & ~unseen_floor_mask(grid))
    if len(cand) == 0:
        return out
    eq = hull.equations  # rows (a, b, c): a * row + b * col + c <= 0 inside
    inside = np.all(cand @ eq[:, :2].T + eq[:, 2] <= 1e-9, axis=1)
    out[cand[inside, 0], cand[inside, 1]] = True
    return out


def _walkable_cells(grid: OccupancyGrid, robot_radius_m: float, unseen_floor: bool, unexplored: bool) -> np.ndarray:
    """(H,W) bool: free cells, plus enclosed unseen floor with ``unseen_floor`` and unexplored cells inside the
    observed floor's hull with ``unexplored``, before any clearance test."""
    if robot_radius_m < 0:
        raise ValueError("robot_radius_m must be non-negative")
    base = grid.data == FREE
    if unseen_floor:
        base = base | unseen_floor_mask(grid)
    return base | unexplored_floor_mask(grid) if unexplored else base


def traversable_mask(
    grid: OccupancyGrid,
    robot_radius_m: float,
    unseen_floor: bool = False,
    clearance: np.ndarray | None = None,
    unexplored: bool = False,
) -> np.ndarray:
    """(H,W) bool: free cells (and, with ``unseen_floor``, enclosed unknown cells) whose centre is at least
    ``transit_clearance_m`` (robot_radius_m plus 2 mm at 5 cm cells) from every obstacle point, decided on the
    points near the threshold (``exact_clearance_near``). Every point of a step between two 8-adjacent
    traversable cell centres is then at least robot_radius_m from every obstacle point; straight shortcuts across
    several cells need ``cell_clear_mask``. ``clearance``: ``clearance_m(grid)``, passed to reuse it. Unexplored
    unknown cells are traversable only with ``unexplored`` (``unexplored_floor_mask``)."""
    base = _walkable_cells(grid, robot_radius_m, unseen_floor, unexplored)
    if not (grid.data == OCCUPIED).any():
        return base
    clear = clearance_m(grid) if clearance is None else clearance
    need = transit_clearance_m(robot_radius_m, grid.resolution_m)
    return base & (exact_clearance_near(grid, clear, need) >= need)


def cell_clear_mask(
    grid: OccupancyGrid,
    robot_radius_m: float,
    unseen_floor: bool = False,
    clearance: np.ndarray | None = None,
    unexplored: bool = False,
) -> np.ndarray:
    """(H,W) bool: like ``traversable_mask`` but every point of the cell (not only its centre) is farther than
    robot_radius_m from every obstacle point (centre clearance > robot_radius_m + half a cell diagonal). A
    straight segment through such cells only (line-of-sight shortcuts, a goal anywhere in its cell) is clear."""
    base = _walkable_cells(grid, robot_radius_m, unseen_floor, unexplored)
    if not (grid.data == OCCUPIED).any():
        return base
    clear = clearance_m(grid) if clearance is None else clearance
    return base & (clear > robot_radius_m + np.sqrt(0.5) * grid.resolution_m)
