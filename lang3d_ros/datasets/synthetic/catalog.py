"""The object vocabulary of synthetic scenes: colours, categories, and how each is built from primitives.

Every object lives in its own frame: origin at the centre of its footprint on its resting surface, x along
its width, y along its depth (the back is at +y, the front faces -y), z up. A builder returns parts
(box / cylinder / sphere / ellipsoid with a centre in that frame) and, for objects that can hold others,
a support rectangle (x0, y0, x1, y1, z_top) in the same frame. Shapes are plausible, not detailed:
no bevels, no cushions, no hollow vessels (a mug is a solid cylinder with a handle).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.12, 0.10),
    "green": (0.15, 0.60, 0.20),
    "blue": (0.12, 0.25, 0.80),
    "yellow": (0.92, 0.82, 0.12),
    "white": (0.92, 0.92, 0.90),
    "black": (0.08, 0.08, 0.08),
    "orange": (0.95, 0.50, 0.08),
    "purple": (0.50, 0.18, 0.65),
    "brown": (0.45, 0.28, 0.12),
    "gray": (0.50, 0.50, 0.50),
}
ALL_COLORS = tuple(COLORS)


@dataclass(frozen=True)
class Part:
    """One primitive. kind: "box" (size = full extents), "cylinder" (size = (2r, 2r, h), axis along
    ``axis``), "sphere"/"ellipsoid" (size = full extents); centre in the object frame, metres."""

    kind: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    axis: str = "z"


@dataclass(frozen=True)
class Built:
    parts: list[Part]
    support: tuple[float, float, float, float, float] | None = None  # x0, y0, x1, y1, z_top


@dataclass(frozen=True)
class Category:
    """placement: "wall" (back against a wall), "floor" (anywhere on the floor), "support" (on another
    object, or on the floor when ``floor_ok``). size_range: ((w_lo, w_hi), (d_lo, d_hi), (h_lo, h_hi)) m."""

    name: str
    placement: str
    size_range: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
    build: Callable[[float, float, float], Built]
    colors: tuple[str, ...] = ALL_COLORS
    floor_ok: bool = False
    round_footprint: bool = False  # depth = width (cylinders, spheres)
    extra: dict = field(default_factory=dict)


def _box(cx, cy, cz, w, d, h) -> Part:
    return Part("box", (cx, cy, cz), (w, d, h))


def _cyl(cx, cy, cz, r, h, axis="z") -> Part:
    size = {"z": (2 * r, 2 * r, h), "x": (h, 2 * r, 2 * r), "y": (2 * r, h, 2 * r)}[axis]
    return Part("cylinder", (cx, cy, cz), size, axis)


def _table(w, d, h):
    t, leg = 0.04, 0.05
    parts = [_box(0, 0, h - t / 2, w, d, t)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_box(sx * (w / 2 - leg), sy * (d / 2 - leg), (h - t) / 2, leg, leg, h - t))
    return Built(parts, (-w / 2, -d / 2, w / 2, d / 2, h))


def _chair(w, d, h):
    seat_h, t, leg = 0.45, 0.04, 0.04
    parts = [_box(0, 0, seat_h - t / 2, w, d, t), _box(0, d / 2 - t / 2, (seat_h + h) / 2, w, t, h - seat_h)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_box(sx * (w / 2 - leg / 2), sy * (d / 2 - leg / 2), (seat_h - t) / 2, leg, leg, seat_h - t))
    return Built(parts)


def _stool(w, d, h):
    r = w / 2
    return Built(
        [_cyl(0, 0, h - 0.025, r, 0.05), _cyl(0, 0, (h - 0.05) / 2, 0.03, h - 0.05), _cyl(0, 0, 0.015, r * 0.8, 0.03)]
    )


def _sofa(w, d, h):
    seat_h, back_t, arm_w = 0.42, 0.2, 0.15
    parts = [
        _box(0, -back_t / 2, seat_h / 2, w - 2 * arm_w, d - back_t, seat_h),
        _box(0, d / 2 - back_t / 2, h / 2, w, back_t, h),
        _box(-w / 2 + arm_w / 2, -back_t / 2, 0.3, arm_w, d - back_t, 0.6),
        _box(w / 2 - arm_w / 2, -back_t / 2, 0.3, arm_w, d - back_t, 0.6),
    ]
    return Built(parts, (-w / 2 + arm_w, -d / 2, w / 2 - arm_w, d / 2 - back_t, seat_h))


def _bed(w, d, h):
    head_t, head_h = 0.08, h + 0.45
    parts = [_box(0, -head_t / 2, h / 2, w, d - head_t, h), _box(0, d / 2 - head_t / 2, head_h / 2, w, head_t, head_h)]
    return Built(parts, (-w / 2, -d / 2, w / 2, d / 2 - head_t, h))


def _cabinet(w, d, h):
    parts = [_box(0, 0.01, h / 2, w, d - 0.02, h)]
    for sx in (-1, 1):
        parts.append(_box(sx * 0.06, -d / 2 + 0.01, h * 0.75, 0.02, 0.02, 0.12))
    return Built(parts, (-w / 2, -d / 2 + 0.02, w / 2, d / 2, h))


def _shelf(w, d, h):
    t = 0.03
    parts = [
        _box(-w / 2 + t / 2, 0, h / 2, t, d, h),
        _box(w / 2 - t / 2, 0, h / 2, t, d, h),
        _box(0, d / 2 - 0.005, h / 2, w - 2 * t, 0.01, h),
    ]
    n_boards = max(3, int(h / 0.4) + 1)
    for z in np.linspace(t / 2 + 0.05, h - t / 2, n_boards):
        parts.append(_box(0, 0, float(z), w - 2 * t, d, t))
    return Built(parts, (-w / 2, -d / 2, w / 2, d / 2, h))


def _trash_can(w, d, h):
    return Built([_cyl(0, 0, h / 2, w / 2, h)])


def _plant(w, d, h):
    pot_h = 0.35 * h
    return Built(
        [_cyl(0, 0, pot_h / 2, w * 0.35, pot_h), Part("ellipsoid", (0, 0, pot_h + (h - pot_h) / 2), (w, d, h - pot_h))]
    )


def _box_obj(w, d, h):
    return Built([_box(0, 0, h / 2, w, d, h)], (-w / 2, -d / 2, w / 2, d / 2, h))


def _backpack(w, d, h):
    return Built([_box(0, 0.03, h / 2, w, d - 0.06, h), _box(0, -d / 2 + 0.03, h * 0.35, w * 0.7, 0.06, h * 0.4)])


def _mug(w, d, h):
    r = d / 2
    return Built([_cyl(-(w - d) / 2, 0, h / 2, r, h), _box(w / 2 - (w - d) / 2, 0, h / 2, w - d, 0.012, h * 0.6)])


def _bottle(w, d, h):
    r = w / 2
    body = 0.7 * h
    return Built([_cyl(0, 0, body / 2, r, body), _cyl(0, 0, body + (h - body) / 2, r * 0.4, h - body)])


def _laptop(w, d, h):
    base_t, lid_t = 0.02, 0.012
    return Built([_box(0, 0, base_t / 2, w, d - lid_t, base_t), _box(0, d / 2 - lid_t / 2, h / 2, w, lid_t, h)])


def _book(w, d, h):
    return Built([_box(0, 0, h / 2, w, d, h)], (-w / 2, -d / 2, w / 2, d / 2, h))


def _lamp(w, d, h):
    r = w / 2
    shade_h = 0.35 * h
    return Built(
        [
            _cyl(0, 0, 0.01, r * 0.7, 0.02),
            _cyl(0, 0, (h - shade_h) / 2, 0.012, h - shade_h),
            _cyl(0, 0, h - shade_h / 2, r, shade_h),
        ]
    )


def _monitor(w, d, h):
    screen_h = 0.6 * h
    return Built(
        [
            _box(0, 0, 0.01, 0.22, d, 0.02),
            _box(0, 0.02, (h - screen_h) / 2, 0.05, 0.03, h - screen_h),
            _box(0, -0.01, h - screen_h / 2, w, 0.03, screen_h),
        ]
    )


def _bowl(w, d, h):
    r = w / 2
    return Built([_cyl(0, 0, h * 0.15, r * 0.55, h * 0.3), _cyl(0, 0, h * 0.65, r, h * 0.7)])


def _vase(w, d, h):
    r = w / 2
    return Built([Part("ellipsoid", (0, 0, h * 0.3), (w, d, h * 0.6)), _cyl(0, 0, h * 0.7, r * 0.45, h * 0.6)])


def _keyboard(w, d, h):
    return Built([_box(0, 0, h / 2, w, d, h)])


def _pillow(w, d, h):
    return Built([Part("ellipsoid", (0, 0, h / 2), (w, d, h))])


def _toy_car(w, d, h):
    wheel_r = 0.25 * h
    body_h = 0.5 * h
    parts = [
        _box(0, 0, wheel_r + body_h / 2, w, d, body_h),
        _box(-0.1 * w, 0, wheel_r + body_h + (h - wheel_r - body_h) / 2, 0.5 * w, 0.85 * d, h - wheel_r - body_h),
    ]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_cyl(sx * 0.32 * w, sy * (d / 2 - 0.01), wheel_r, wheel_r, 0.02, axis="y"))
    return Built(parts)


def _ball(w, d, h):
    return Built([Part("sphere", (0, 0, w / 2), (w, w, w))])


_N = ("black", "white", "gray", "brown", "blue", "red")
CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in [
        Category(
            "bed", "wall", ((1.3, 1.7), (1.9, 2.1), (0.45, 0.6)), _bed, ("white", "gray", "blue", "brown", "purple")
        ),
        Category(
            "sofa",
            "wall",
            ((1.6, 2.1), (0.8, 0.95), (0.8, 0.9)),
            _sofa,
            ("gray", "blue", "brown", "green", "red", "black"),
        ),
        Category(
            "cabinet", "wall", ((0.6, 1.1), (0.4, 0.5), (0.7, 1.0)), _cabinet, ("white", "brown", "gray", "black")
        ),
        Category("shelf", "wall", ((0.6, 1.0), (0.3, 0.38), (1.2, 1.8)), _shelf, ("white", "brown", "black", "gray")),
        Category("table", "floor", ((0.9, 1.5), (0.6, 0.9), (0.7, 0.76)), _table, ("brown", "white", "black", "gray")),
        Category("chair", "floor", ((0.42, 0.5), (0.42, 0.5), (0.8, 0.95)), _chair),
        Category("stool", "floor", ((0.3, 0.4), (0.3, 0.4), (0.45, 0.7)), _stool, round_footprint=True),
        Category("trash can", "floor", ((0.25, 0.35), (0.25, 0.35), (0.3, 0.45)), _trash_can, round_footprint=True),
        Category(
            "plant",
            "support",
            ((0.2, 0.4), (0.2, 0.4), (0.3, 0.55)),
            _plant,
            ("green",),
            floor_ok=True,
            round_footprint=True,
        ),
        Category(
            "box",
            "support",
            ((0.2, 0.45), (0.2, 0.4), (0.15, 0.35)),
            _box_obj,
            ("brown", "white", "red", "blue", "yellow"),
            floor_ok=True,
        ),
        Category("backpack", "support", ((0.28, 0.34), (0.15, 0.22), (0.4, 0.5)), _backpack, floor_ok=True),
        Category(
            "ball", "support", ((0.18, 0.24), (0.18, 0.24), (0.18, 0.24)), _ball, floor_ok=True, round_footprint=True
        ),
        Category("toy car", "support", ((0.16, 0.26), (0.08, 0.12), (0.07, 0.1)), _toy_car, floor_ok=True),
        Category("mug", "support", ((0.1, 0.12), (0.075, 0.085), (0.09, 0.11)), _mug),
        Category("bottle", "support", ((0.06, 0.08), (0.06, 0.08), (0.22, 0.3)), _bottle, round_footprint=True),
        Category("laptop", "support", ((0.3, 0.36), (0.22, 0.25), (0.2, 0.24)), _laptop, ("black", "gray", "white")),
        Category("book", "support", ((0.14, 0.18), (0.2, 0.25), (0.02, 0.05)), _book),
        Category("lamp", "support", ((0.18, 0.26), (0.18, 0.26), (0.3, 0.45)), _lamp, round_footprint=True),
        Category("monitor", "support", ((0.45, 0.6), (0.18, 0.22), (0.35, 0.45)), _monitor, ("black", "gray", "white")),
        Category("bowl", "support", ((0.14, 0.2), (0.14, 0.2), (0.06, 0.09)), _bowl, round_footprint=True),
        Category("vase", "support", ((0.1, 0.16), (0.1, 0.16), (0.2, 0.32)), _vase, round_footprint=True),
        Category(
            "keyboard", "support", ((0.36, 0.45), (0.12, 0.15), (0.025, 0.035)), _keyboard, ("black", "gray", "white")
        ),
        Category("pillow", "support", ((0.4, 0.55), (0.3, 0.4), (0.1, 0.15)), _pillow),
    ]
}
SUPPORTERS = tuple(n for n, c in CATEGORIES.items() if c.build(1.0, 1.0, 1.0).support is not None)
LABELS = tuple(CATEGORIES)
