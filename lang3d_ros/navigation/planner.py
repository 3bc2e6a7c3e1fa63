"""Grid search on a traversable mask: Dijkstra cost field (scipy.sparse.csgraph), A* (8-connected, octile
heuristic, no corner cutting) and line-of-sight path smoothing. Cells are (row, col) = (iy, ix).
Costs are in cells (orthogonal step 1, diagonal sqrt 2); the robot's heading is not planned."""

from __future__ import annotations

import heapq
import math

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

SQRT2 = math.sqrt(2.0)


def _check_mask(traversable: np.ndarray) -> np.ndarray:
    t = np.asarray(traversable)
    if t.ndim != 2 or t.dtype != bool:
        raise ValueError(f"traversable must be a 2D bool array, got {t.dtype} {t.shape}")
    return t


def cost_field(traversable: np.ndarray, start_ij) -> np.ndarray:
    """(H,W) bool, start (row, col) -> (H,W) float64 shortest 8-connected path cost in cells, inf where
    unreachable (and everywhere when the start is not traversable)."""
    t = _check_mask(traversable)
    H, W = t.shape
    si, sj = int(start_ij[0]), int(start_ij[1])
    if not (0 <= si < H and 0 <= sj < W) or not t[si, sj]:
        return np.full((H, W), np.inf)
    idx = np.arange(H * W).reshape(H, W)
    rows, cols, weights = [], [], []
    for di, dj, w in ((0, 1, 1.0), (1, 0, 1.0), (1, 1, SQRT2), (1, -1, SQRT2)):
        j0, j1 = max(0, -dj), W - max(0, dj)  # source columns whose neighbour column j + dj exists
        src = (slice(0, H - di), slice(j0, j1))
        dst = (slice(di, H), slice(j0 + dj, j1 + dj))
        ok = t[src] & t[dst]
        if di and dj:  # no corner cutting: both orthogonal neighbours must be traversable too
            ok &= t[slice(0, H - di), slice(j0 + dj, j1 + dj)] & t[slice(di, H), slice(j0, j1)]
        rows.append(idx[src][ok])
        cols.append(idx[dst][ok])
        weights.append(np.full(int(ok.sum()), w))
    graph = coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(H * W, H * W))
    dist = dijkstra(graph.tocsr(), directed=False, indices=si * W + sj)
    return dist.reshape(H, W)


def astar(traversable: np.ndarray, start_ij, goal_ij) -> np.ndarray | None:
    """(H,W) bool, start and goal (row, col) -> (M,2) int64 cells from start to goal, consecutive cells
    8-adjacent, all traversable; None when either end is blocked or no path exists."""
    t = _check_mask(traversable)
    H, W = t.shape
    si, sj, gi, gj = int(start_ij[0]), int(start_ij[1]), int(goal_ij[0]), int(goal_ij[1])
    if not (0 <= si < H and 0 <= sj < W and 0 <= gi < H and 0 <= gj < W) or not (t[si, sj] and t[gi, gj]):
        return None
    free = t.reshape(-1).tolist()
    start, goal = si * W + sj, gi * W + gj
    g = {start: 0.0}
    parent = {start: -1}
    closed = set()

    def h(i: int, j: int) -> float:
        di, dj = abs(i - gi), abs(j - gj)
        return (di + dj) + (SQRT2 - 2.0) * min(di, dj)

    heap = [(h(si, sj), 0.0, start)]
    moves = [
        (-1, 0, 1.0),
        (1, 0, 1.0),
        (0, -1, 1.0),
        (0, 1, 1.0),
        (-1, -1, SQRT2),
        (-1, 1, SQRT2),
        (1, -1, SQRT2),
        (1, 1, SQRT2),
    ]
    while heap:
        _, gu, u = heapq.heappop(heap)
        if u in closed:
            continue
        if u == goal:
            break
        closed.add(u)
        ui, uj = divmod(u, W)
        for di, dj, c in moves:
            vi, vj = ui + di, uj + dj
            if not (0 <= vi < H and 0 <= vj < W):
                continue
            v = vi * W + vj
            if not free[v] or v in closed:
                continue
            if di and dj and not (free[ui * W + vj] and free[vi * W + uj]):
                continue
            gv = gu + c
            if gv < g.get(v, math.inf):
                g[v] = gv
                parent[v] = u
                heapq.heappush(heap, (gv + h(vi, vj), gv, v))
    if goal not in parent:
        return None
    path = [goal]
    while parent[path[-1]] != -1:
        path.append(parent[path[-1]])
    path.reverse()
    return np.array([divmod(c, W) for c in path], dtype=np.int64)


def path_cost(cells: np.ndarray) -> float:
    """(M,2) cells -> summed step length in cells."""
    if len(cells) < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(np.asarray(cells, dtype=np.float64), axis=0), axis=1).sum())


def line_of_sight(traversable: np.ndarray, a_ij, b_ij, step_cells: float = 0.2) -> bool:
    """True when every cell the straight segment between two cell centres passes (sampled every
    step_cells) is traversable."""
    t = _check_mask(traversable)
    a, b = np.asarray(a_ij, dtype=np.float64), np.asarray(b_ij, dtype=np.float64)
    n = max(2, int(np.ceil(np.linalg.norm(b - a) / step_cells)) + 1)
    s = np.linspace(0.0, 1.0, n)[:, None]
    cells = np.floor(a + 0.5 + s * (b - a)).astype(np.int64)
    H, W = t.shape
    if np.any(cells < 0) or np.any(cells[:, 0] >= H) or np.any(cells[:, 1] >= W):
        return False
    return bool(t[cells[:, 0], cells[:, 1]].all())


def smooth_path(traversable: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(M,2) cells -> (K,) indices into cells of the kept waypoints (first and last always kept): from each
    kept waypoint, jump to the farthest later cell in line of sight."""
    m = len(cells)
    if m <= 2:
        return np.arange(m)
    keep = [0]
    i = 0
    while i < m - 1:
        j = m - 1
        while j > i + 1 and not line_of_sight(traversable, cells[i], cells[j]):
            j -= 1
        keep.append(j)
        i = j
    return np.array(keep, dtype=np.int64)
