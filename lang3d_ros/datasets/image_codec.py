"""sensor_msgs/Image bytes <-> numpy, without ROS (used by the bag reader/writer and the ROS nodes).

Supported encodings: rgb8, bgr8, rgba8, bgra8, mono8, mono16, 16UC1 (depth, millimetres), 32FC1
(depth, metres). Rows may be padded (``step`` > width x bytes per pixel) and data may be big-endian.
Anything else raises ValueError that names the problem; a returned array is always a copy that owns
its memory, in native byte order.
"""

from __future__ import annotations

import numpy as np

# encoding -> (channels, numpy dtype of one channel)
ENCODINGS: dict[str, tuple[int, np.dtype]] = {
    "rgb8": (3, np.dtype(np.uint8)),
    "bgr8": (3, np.dtype(np.uint8)),
    "rgba8": (4, np.dtype(np.uint8)),
    "bgra8": (4, np.dtype(np.uint8)),
    "mono8": (1, np.dtype(np.uint8)),
    "8UC1": (1, np.dtype(np.uint8)),
    "mono16": (1, np.dtype(np.uint16)),
    "16UC1": (1, np.dtype(np.uint16)),
    "32FC1": (1, np.dtype(np.float32)),
}
DEPTH_ENCODINGS = ("16UC1", "32FC1", "mono16")
MAX_PIXELS = 1 << 26  # 67 M pixels: larger headers are treated as corrupt


def bytes_per_pixel(encoding: str) -> int:
    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: {sorted(ENCODINGS)}")
    ch, dt = ENCODINGS[encoding]
    return ch * dt.itemsize


def decode_image(encoding: str, height: int, width: int, step: int, is_bigendian: bool, data) -> np.ndarray:
    """Image message fields -> (H, W) or (H, W, C) array of the encoding's dtype."""
    bpp = bytes_per_pixel(encoding)
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if height * width > MAX_PIXELS:
        raise ValueError(f"image {width}x{height} is larger than {MAX_PIXELS} pixels")
    if step < width * bpp:
        raise ValueError(f"step {step} is smaller than width x bytes per pixel = {width * bpp} for {encoding}")
    buf = np.frombuffer(
        bytes(data) if not isinstance(data, (bytes, bytearray, memoryview, np.ndarray)) else data, dtype=np.uint8
    )
    if buf.size < step * height:
        raise ValueError(f"image data has {buf.size} bytes, expected step x height = {step * height}")
    ch, dt = ENCODINGS[encoding]
    rows = buf[: step * height].reshape(height, step)[:, : width * bpp]
    dt = dt.newbyteorder(">" if is_bigendian else "<") if dt.itemsize > 1 else dt
    arr = (
        np.ascontiguousarray(rows).view(dt).reshape(height, width, ch)
        if ch > 1
        else np.ascontiguousarray(rows).view(dt).reshape(height, width)
    )
    return arr.astype(arr.dtype.newbyteorder("="), copy=True)


def encode_image(array: np.ndarray, encoding: str, is_bigendian: bool = False) -> tuple[int, int, int, bytes]:
    """Array -> (height, width, step, data) for ``encoding`` (no row padding)."""
    ch, dt = ENCODINGS.get(encoding, (None, None))
    if ch is None:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: {sorted(ENCODINGS)}")
    a = np.asarray(array)
    want_shape = 2 if ch == 1 else 3
    if a.ndim != want_shape or (ch > 1 and a.shape[2] != ch):
        raise ValueError(f"{encoding} needs an array of shape (H, W{'' if ch == 1 else f', {ch}'}), got {a.shape}")
    if a.dtype != dt:
        raise ValueError(f"{encoding} needs dtype {dt}, got {a.dtype}")
    out = a.astype(dt.newbyteorder(">" if is_bigendian else "<"), copy=False)
    return int(a.shape[0]), int(a.shape[1]), int(a.shape[1] * ch * dt.itemsize), np.ascontiguousarray(out).tobytes()


def to_rgb8(encoding: str, image: np.ndarray) -> np.ndarray:
    """A decoded colour image -> (H, W, 3) uint8 RGB."""
    if encoding == "rgb8":
        return image
    if encoding == "bgr8":
        return np.ascontiguousarray(image[..., ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(image[..., :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(image[..., 2::-1])
    if encoding in ("mono8", "8UC1"):
        return np.repeat(image[..., None], 3, axis=2)
    raise ValueError(f"{encoding!r} is not a colour encoding")


def to_depth_m(encoding: str, image: np.ndarray, depth_scale: float = 0.001) -> np.ndarray:
    """A decoded depth image -> (H, W) float32 metres, 0 where invalid (NaN/Inf/negative/0).

    16UC1 / mono16 are millimetres by REP 118 (``depth_scale`` metres per unit, default 0.001)."""
    if encoding in ("16UC1", "mono16"):
        return image.astype(np.float32) * np.float32(depth_scale)
    if encoding == "32FC1":
        d = image.astype(np.float32, copy=True)
        d[~np.isfinite(d) | (d < 0)] = 0.0
        return d
    raise ValueError(f"{encoding!r} is not a depth encoding; use one of {DEPTH_ENCODINGS}")
