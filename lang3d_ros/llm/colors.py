"""Colour names for mean object colours: nearest entry of a small named palette (in CIE Lab).

Cannot tell shades apart that the palette does not name (navy vs blue), and a mean colour of a
multi-coloured object names none of its parts.
"""

from __future__ import annotations

import numpy as np

PALETTE_RGB: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.1, 0.1),
    "orange": (1.0, 0.55, 0.0),
    "yellow": (0.95, 0.9, 0.1),
    "green": (0.1, 0.65, 0.15),
    "blue": (0.1, 0.25, 0.85),
    "purple": (0.5, 0.15, 0.65),
    "pink": (1.0, 0.6, 0.75),
    "brown": (0.5, 0.3, 0.12),
    "black": (0.05, 0.05, 0.05),
    "white": (0.95, 0.95, 0.95),
    "gray": (0.5, 0.5, 0.5),
}
COLOR_SYNONYMS = {
    "grey": "gray",
    "violet": "purple",
    "silver": "gray",
    "crimson": "red",
    "golden": "yellow",
    "gold": "yellow",
    "beige": "brown",
    "tan": "brown",
    "navy": "blue",
    "cyan": "blue",
}


def _rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(N,3) sRGB in [0,1] -> (N,3) CIE Lab (D65)."""
    c = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    M = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ M.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[:, 1] - 16.0, 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], axis=1)


_NAMES = tuple(PALETTE_RGB)
ACHROMATIC = ("black", "white", "gray")
_PALETTE_LAB = _rgb_to_lab(np.array([PALETTE_RGB[n] for n in _NAMES]))


def canonical_color(word: str) -> str | None:
    """A palette name for a colour word ("grey" -> "gray"), or None when it names no colour."""
    w = word.strip().lower()
    w = COLOR_SYNONYMS.get(w, w)
    return w if w in PALETTE_RGB else None


LIT_SHADING = 0.8
"""How bright a lit surface of albedo 1 looks to the camera (indoor light from above, exposure that keeps highlights
unclipped): a white object is seen as a light gray, a gray one as a dark gray. The achromatic names are split at
the lightness midway between the palette's white, gray and black seen under this shading."""


def lightness(rgb) -> float:
    """CIE L* (0 black .. 100 white) of one sRGB colour in [0, 1]."""
    return float(_rgb_to_lab(np.asarray(rgb, np.float64).reshape(1, 3))[0, 0])


_L_WHITE_GRAY = 0.5 * (
    lightness(LIT_SHADING * np.array(PALETTE_RGB["white"])) + lightness(LIT_SHADING * np.array(PALETTE_RGB["gray"]))
)
_L_GRAY_BLACK = 0.5 * (
    lightness(LIT_SHADING * np.array(PALETTE_RGB["gray"])) + lightness(LIT_SHADING * np.array(PALETTE_RGB["black"]))
)


def color_name(color_rgb) -> str:
    """Palette name of an observed RGB colour in [0, 1] (values in 0..255 are rescaled): the nearest palette colour
    in CIE Lab; when that is achromatic, white / gray / black by lightness, split midway between the palette's
    achromatic colours as a lit surface shows them (``LIT_SHADING``: a white shelf seen at 0.65 is white, not
    gray). Cannot tell a white object in deep shade from a gray one in full light."""
    rgb = np.asarray(color_rgb, dtype=np.float64).reshape(-1)
    if rgb.shape != (3,) or not np.all(np.isfinite(rgb)):
        raise ValueError(f"color_rgb must be 3 finite numbers, got {color_rgb!r}")
    if rgb.max() > 1.0:
        rgb = rgb / 255.0
    lab = _rgb_to_lab(rgb[None])[0]
    name = _NAMES[int(np.argmin(np.linalg.norm(_PALETTE_LAB - lab, axis=1)))]
    if name in ACHROMATIC:
        name = "white" if lab[0] >= _L_WHITE_GRAY else "black" if lab[0] <= _L_GRAY_BLACK else "gray"
    return name


def shading_invariant_distance(color_rgb, name: str) -> float:
    """How far an observed mean colour is from a palette colour when lighting may have scaled it.

    Chromatic names compare chromaticity (rgb / (r + g + b)), which a uniform shading factor leaves unchanged;
    achromatic names compare saturation (0 for gray levels). Used to rank candidates, not to name colours:
    it cannot tell white from gray or black under unknown lighting."""
    rgb = np.clip(np.asarray(color_rgb, dtype=np.float64).reshape(3), 0.0, None)
    if rgb.max() > 1.0:
        rgb = rgb / 255.0
    if name not in PALETTE_RGB:
        raise ValueError(f"unknown colour name {name!r}")
    total = rgb.sum()
    chroma = rgb / total if total > 1e-6 else np.full(3, 1 / 3)
    saturation = (rgb.max() - rgb.min()) / max(rgb.max(), 1e-6)
    if name in ACHROMATIC:
        return float(saturation)
    ref = np.asarray(PALETTE_RGB[name])
    return float(np.linalg.norm(chroma - ref / ref.sum()))
