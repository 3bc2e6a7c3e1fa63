"""Camera trajectories through a synthetic room: ``T_world_cam`` (N,4,4) of the optical frame
(x right, y down, z forward), eye height 1.2-1.6 m, always looking at the objects.

"orbit": an ellipse around the room centre, eye height and look-at target varying smoothly (the look-at height
sweeps 0.35-1.05 m, so the images reach from the floor to what rests on tall shelves); when objects block every
ellipse tried, a closed curve round the centre that passes inside them.
"walk": a smooth spline through random free waypoints, looking at the objects nearest to the way ahead.
Both keep the eye >= 0.25 m from every object's box and >= 0.5 m from the walls, and the look-at point >= 0.6 m
ahead horizontally (a camera never points straight down). They cannot model
a robot's base (the camera rolls never; pitch follows the target) or motion blur.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.ndimage import gaussian_filter1d, minimum_filter1d

from lang3d_ros.datasets.synthetic.scene import SyntheticScene

EYE_CLEARANCE_M = 0.25
WALL_MARGIN_M = 0.5
ORBIT_LOOK_HEIGHTS_M = (0.35, 1.05)  # an orbit's look-at height sweeps this range (pitch ~10-30 degrees down)
MIN_LOOK_AHEAD_M = 0.6  # a walk's look-at point stays this far from the eye horizontally (no camera straight down)
_ORBIT_EYE_HEIGHTS_M = (1.4, 1.45, 1.35)  # an orbit's mean eye heights, tried in this order
_ORBIT_BOB_M = 0.12  # an orbit's eye bobs this much about its mean height, twice per orbit


def look_at(eye_xyz, target_xyz, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """4x4 T_world_cam of an optical-frame camera at ``eye`` looking at ``target`` with no roll."""
    eye, target = np.asarray(eye_xyz, float), np.asarray(target_xyz, float)
    z = target - eye
    n = np.linalg.norm(z)
    if n < 1e-9:
        raise ValueError("look_at: eye and target coincide")
    z /= n
    x = np.cross(z, np.asarray(up, float))
    if np.linalg.norm(x) < 1e-6:
        raise ValueError("look_at: viewing direction is parallel to up")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = eye
    return T


def _clear_each(scene: SyntheticScene, eyes: np.ndarray) -> np.ndarray:
    """(N,3) eye positions -> (N,) bool: inside the walls' margin and outside every object's box grown by the eye
    clearance."""
    lo, hi = scene.room_min_xyz + WALL_MARGIN_M - 1e-6, scene.room_max_xyz - WALL_MARGIN_M + 1e-6
    ok = np.all((eyes >= lo) & (eyes <= hi), axis=1)
    for o in scene.objects:
        ok &= ~np.all((eyes > o.aabb.min_xyz - EYE_CLEARANCE_M) & (eyes < o.aabb.max_xyz + EYE_CLEARANCE_M), axis=1)
    return ok


def _clear(scene: SyntheticScene, eyes: np.ndarray) -> bool:
    return bool(_clear_each(scene, eyes).all())


def _objects_centre(scene: SyntheticScene) -> np.ndarray:
    if not scene.objects:
        return np.array([0.0, 0.0, 0.5])
    c = np.mean([o.aabb.center for o in scene.objects], axis=0)
    return np.array([c[0], c[1], 0.5])


def _ellipse_axes(scene: SyntheticScene, shrink: float = 0.0) -> tuple[float, float]:
    """Half-axes (x, y) of an orbit's ellipse: the room's, less the wall margin, 0.2 m and ``shrink``."""
    lx, ly, _ = scene.room_size_m
    return lx / 2 - WALL_MARGIN_M - 0.2 - shrink, ly / 2 - WALL_MARGIN_M - 0.2 - shrink


def _orbit_eyes(a, b, scale, ang, off, h0, s, phase) -> np.ndarray:
    """(N,3) eyes at angles ``ang`` on the ellipse (a, b) times ``scale`` (a number or one per eye), shifted by
    ``off`` (2,), at mean height h0 bobbing _ORBIT_BOB_M twice per orbit (s: the orbit fraction per eye)."""
    eyes = np.stack(
        [scale * a * np.cos(ang), scale * b * np.sin(ang), h0 + _ORBIT_BOB_M * np.sin(2 * np.pi * 2 * s + phase)], 1
    )
    eyes[:, :2] += off
    return eyes


def _column_clear(scene: SyntheticScene, xy: np.ndarray, h0: float) -> np.ndarray:
    """(N,2) eye positions -> (N,) bool: clear at both ends of the bob about h0 (a grown box is >= 0.5 m tall, so
    nothing fits between them)."""
    ok = np.ones(len(xy), bool)
    for z in (h0 - _ORBIT_BOB_M, h0 + _ORBIT_BOB_M):
        ok &= _clear_each(scene, np.concatenate([xy, np.full((len(xy), 1), z)], axis=1))
    return ok


def _orbit(scene, n, rng):
    centre = _objects_centre(scene)
    centre[:2] *= 0.3  # stay near the room centre so the ellipse fits
    phase = rng.uniform(0, 2 * np.pi)
    direction = rng.choice([-1.0, 1.0])
    s = np.linspace(0.0, 1.0, n, endpoint=False)
    ang = phase + direction * 2 * np.pi * s
    for shrink in (0.0, 0.15, 0.3, 0.45, -0.1, 0.6):
        a, b = _ellipse_axes(scene, shrink)
        if a < 0.4 or b < 0.4:
            continue
        for h0 in _ORBIT_EYE_HEIGHTS_M:
            eyes = _orbit_eyes(a, b, 1.0, ang, centre[:2] * 0.5, h0, s, phase)
            if _clear(scene, eyes):
                return eyes, _orbit_targets(centre, s)
    eyes = _star_orbit(scene, centre, ang, s, phase)  # objects on every ellipse: go round them, inside
    if eyes is None:  # the star curve's dips cut a tall object at a neighbouring angle
        eyes = _sector_orbit(scene, centre, ang, s, phase)
    if eyes is None:
        raise ValueError(f"no collision-free orbit in this room (seed {scene.seed}); use a larger room")
    return eyes, _orbit_targets(centre, s)


def _orbit_targets(centre: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(N,3) look-at points circling the objects' centre (0.3 m, three times per orbit) while their height sweeps
    ORBIT_LOOK_HEIGHTS_M four times per orbit: low, the image holds the floor in front; high, its top edge reaches
    above shelves taller than the eye (a fixed look-at height at 0.5 m never showed what rests on them)."""
    lo, hi = ORBIT_LOOK_HEIGHTS_M
    targets = np.repeat(centre[None], len(s), axis=0)
    targets[:, :2] += 0.3 * np.stack([np.cos(2 * np.pi * 3 * s), np.sin(2 * np.pi * 3 * s)], axis=1)
    targets[:, 2] = (lo + hi) / 2 + (hi - lo) / 2 * np.sin(2 * np.pi * 4 * s)
    return targets


def _star_orbit(scene, centre, ang, s, phase, n_dense: int = 720) -> np.ndarray | None:
    """Eyes on a closed curve r(theta) round the room centre: at each angle the widest scale of the largest
    ellipse (down to 0.3 of it) whose eye column (both heights of the bob) is clear, then a circular minimum
    filter and smoothing, so the camera passes inside tall objects that sit on every ellipse. None when some
    angle has no clear radius."""
    a, b = _ellipse_axes(scene)
    off = centre[:2] * 0.5
    theta = np.linspace(0.0, 2 * np.pi, n_dense, endpoint=False)
    scales = np.arange(1.0, 0.29, -0.05)
    for h0 in _ORBIT_EYE_HEIGHTS_M:
        best = np.full(n_dense, np.nan)
        for sc in scales[::-1]:  # widest clear scale wins: go from narrow to wide, overwrite
            xy = np.stack([sc * a * np.cos(theta), sc * b * np.sin(theta)], axis=1) + off
            best[_column_clear(scene, xy, h0)] = sc
        if np.isnan(best).any():
            continue
        width = n_dense // 24  # 15 degrees on either side keep the narrow scale
        r = minimum_filter1d(best, size=2 * width + 1, mode="wrap")
        r = np.minimum(gaussian_filter1d(r, sigma=width / 3, mode="wrap"), best)
        eyes = _orbit_eyes(a, b, np.interp(np.mod(ang, 2 * np.pi), theta, r, period=2 * np.pi), ang, off, h0, s, phase)
        if _clear(scene, eyes):
            return eyes
    return None


def _sector_orbit(scene, centre, ang, s, phase, n_sectors: int = 72, step: float = 0.05) -> np.ndarray | None:
    """Eyes on a closed curve r(theta) through clear cells: the largest ellipse's scales 0.3-1.0 in ``step``
    steps times ``n_sectors`` sectors round the centre, a cell clear when the eye column (both heights of the bob)
    is clear over its whole angle range and a step either side of its scale, so that the straight pieces between
    neighbouring cells stay clear. Dynamic programming then picks round the circle the widest scales that change
    by at most one step between sectors (a small cost per change keeps the curve smooth). None when no closed
    clear curve exists at any height."""
    a, b = _ellipse_axes(scene)
    off = centre[:2] * 0.5
    scales = np.round(np.arange(0.3, 1.0 + 1e-9, step), 6)
    n_s, sub, fine = len(scales), 6, 2  # angle samples per sector, scale samples per step
    theta = np.arange(n_sectors * sub) * (2 * np.pi / (n_sectors * sub))  # sector i spans samples i*sub +- sub/2
    fine_scales = np.round(np.arange(0.3, 1.0 + 1e-9, step / fine), 6)
    for h0 in _ORBIT_EYE_HEIGHTS_M:
        grid = np.ones((len(theta), len(fine_scales)), bool)  # (angle sample, fine scale) clear
        for k, sc in enumerate(fine_scales):
            xy = np.stack([sc * a * np.cos(theta), sc * b * np.sin(theta)], axis=1) + off
            grid[:, k] = _column_clear(scene, xy, h0)
        cells = np.zeros((n_sectors, n_s), bool)
        for i in range(n_sectors):
            rows = grid[np.arange(i * sub - sub // 2, i * sub + sub // 2 + 1) % len(theta)]
            for j in range(n_s):
                cells[i, j] = rows[:, max(0, (j - 1) * fine) : (j + 1) * fine + 1].all()
        path = _widest_closed_path(cells, scales)
        if path is None:
            continue
        centres = np.arange(n_sectors) * (2 * np.pi / n_sectors)
        sc = np.interp(np.mod(ang, 2 * np.pi), centres, scales[path], period=2 * np.pi)
        eyes = _orbit_eyes(a, b, sc, ang, off, h0, s, phase)
        if _clear(scene, eyes):
            return eyes
    return None


def _widest_closed_path(cells: np.ndarray, scales: np.ndarray, change_cost: float = 0.02) -> np.ndarray | None:
    """(sectors, scales) bool clear cells -> (sectors,) scale index per sector, a closed path through clear cells
    moving at most one index between neighbouring sectors (the last back to the first too) that maximises the
    summed scale minus ``change_cost`` per move; None when there is none."""
    n, m = cells.shape
    best, best_path = -np.inf, None
    for j0 in np.flatnonzero(cells[0]):
        value = np.full(m, -np.inf)
        value[j0] = scales[j0]
        back = np.zeros((n, m), np.int64)
        for i in range(1, n):
            cand = np.full((3, m), -np.inf)
            cand[0, 1:] = value[:-1] - change_cost  # from one index lower
            cand[1] = value
            cand[2, :-1] = value[1:] - change_cost  # from one index higher
            pick = np.argmax(cand, axis=0)
            back[i] = np.arange(m) + pick - 1
            value = np.where(cells[i], cand[pick, np.arange(m)] + scales, -np.inf)
        ends = [j for j in range(max(0, j0 - 1), min(m, j0 + 2)) if np.isfinite(value[j])]
        if not ends:
            continue
        j = max(ends, key=lambda e: value[e] - change_cost * (e != j0))
        total = value[j] - change_cost * (j != j0)
        if total > best:
            path = np.empty(n, np.int64)
            path[-1] = j
            for i in range(n - 1, 0, -1):
                path[i - 1] = back[i, path[i]]
            best, best_path = total, path
    return best_path


def _walk(scene, n, rng):
    lo, hi = scene.room_min_xyz + WALL_MARGIN_M + 0.1, scene.room_max_xyz - WALL_MARGIN_M - 0.1
    centres = np.array([o.aabb.center for o in scene.objects]) if scene.objects else _objects_centre(scene)[None]
    near = None  # the first clear path whose look-at came too close overhead: the fallback
    for _ in range(100):
        k = 6
        way = np.stack([rng.uniform(lo[0], hi[0], k), rng.uniform(lo[1], hi[1], k), rng.uniform(1.25, 1.55, k)], axis=1)
        seg = np.linalg.norm(np.diff(way, axis=0), axis=1)
        if np.any(seg < 0.5):
            continue
        t = np.concatenate([[0.0], np.cumsum(seg)])
        spline = CubicSpline(t, way, bc_type="natural")
        dense = spline(np.linspace(0, t[-1], 20 * n))
        if np.any(dense[:, 2] < 1.2) or np.any(dense[:, 2] > 1.6) or not _clear(scene, dense):
            continue
        # resample at constant speed along the curve
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
        eyes = np.stack([np.interp(np.linspace(0, arc[-1], n), arc, dense[:, i]) for i in range(3)], axis=1)
        heading = _heading(eyes)
        ahead = eyes + 1.5 * heading
        nearest = centres[np.argmin(np.linalg.norm(ahead[:, None, :2] - centres[None, :, :2], axis=2), axis=1)]
        targets = gaussian_filter1d(nearest, sigma=max(1.0, n / 15), axis=0, mode="nearest") if n > 1 else nearest
        flat = np.linalg.norm(targets[:, :2] - eyes[:, :2], axis=1)
        if np.any(flat < MIN_LOOK_AHEAD_M):
            near = (eyes, targets) if near is None else near
            continue
        return eyes, targets
    if near is not None:  # every clear path passes over some object: make_trajectory looks past it
        return near
    raise ValueError(f"no collision-free walk found in this room (seed {scene.seed})")


def _heading(eyes: np.ndarray) -> np.ndarray:
    """(N,3) eyes -> (N,3) horizontal unit directions of travel (+x for a single eye)."""
    heading = np.gradient(eyes, axis=0) if len(eyes) > 1 else np.array([[1.0, 0.0, 0.0]])
    heading[:, 2] = 0
    heading /= np.maximum(np.linalg.norm(heading, axis=1, keepdims=True), 1e-9)
    return heading


def _look_ahead(eyes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(N,3) look-at points moved out, horizontally, to MIN_LOOK_AHEAD_M from the eye where they were nearer
    (along the eye->target direction, or the direction of travel when the target is straight below)."""
    heading = _heading(eyes)
    d = targets[:, :2] - eyes[:, :2]
    flat = np.linalg.norm(d, axis=1)
    short = flat < MIN_LOOK_AHEAD_M
    direction = np.where((flat > 1e-3)[:, None], d / np.maximum(flat, 1e-9)[:, None], heading[:, :2])
    out = targets.copy()
    out[short, :2] = eyes[short, :2] + MIN_LOOK_AHEAD_M * direction[short]
    return out


def make_trajectory(scene: SyntheticScene, kind: str = "orbit", n_frames: int = 100, seed: int = 0) -> np.ndarray:
    """(n_frames, 4, 4) float64 T_world_cam; deterministic for (scene, kind, n_frames, seed)."""
    if kind not in ("orbit", "walk"):
        raise ValueError(f"trajectory kind must be 'orbit' or 'walk', got {kind!r}")
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive integer, got {n_frames!r}")
    rng = np.random.default_rng([int(seed), 0 if kind == "orbit" else 1])
    eyes, targets = (_orbit if kind == "orbit" else _walk)(scene, int(n_frames), rng)
    targets = _look_ahead(eyes, targets)  # an orbit passing inside the objects, a walk over one: not straight down
    return np.stack([look_at(e, t) for e, t in zip(eyes, targets)])
