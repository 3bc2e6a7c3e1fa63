"""sensor_msgs/Image <-> numpy: every supported encoding, row padding, byte order; property tests with hypothesis."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lang3d_ros.datasets import image_codec
from lang3d_ros.datasets.image_codec import ENCODINGS, decode_image, encode_image, to_depth_m, to_rgb8


def _random_image(rng, encoding, h, w):
    ch, dt = ENCODINGS[encoding]
    shape = (h, w) if ch == 1 else (h, w, ch)
    if dt == np.float32:
        return rng.uniform(0.0, 10.0, size=shape).astype(np.float32)
    return rng.integers(0, np.iinfo(dt).max, size=shape, endpoint=True).astype(dt)


def _pad_rows(data: bytes, h: int, row_bytes: int, pad: int) -> bytes:
    rows = np.frombuffer(data, np.uint8).reshape(h, row_bytes)
    return np.hstack([rows, np.full((h, pad), 0xAB, np.uint8)]).tobytes()


@settings(max_examples=200, deadline=None)
@given(
    encoding=st.sampled_from(sorted(ENCODINGS)),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    pad=st.integers(0, 7),
    big=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_roundtrip_with_padding_and_byte_order(encoding, h, w, pad, big, seed):
    img = _random_image(np.random.default_rng(seed), encoding, h, w)
    hh, ww, step, data = encode_image(img, encoding, is_bigendian=big)
    padded = _pad_rows(data, hh, step, pad)
    out = decode_image(encoding, hh, ww, step + pad, big, padded)
    assert out.dtype == img.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, img)


@settings(max_examples=200, deadline=None)
@given(
    encoding=st.text(min_size=0, max_size=8) | st.sampled_from(sorted(ENCODINGS)),
    h=st.integers(-2, 6),
    w=st.integers(-2, 6),
    step=st.integers(-4, 64),
    nbytes=st.integers(0, 400),
    big=st.booleans(),
)
def test_malformed_headers_give_clear_errors_never_wrong_arrays(encoding, h, w, step, nbytes, big):
    data = bytes(nbytes)
    try:
        out = decode_image(encoding, h, w, step, big, data)
    except ValueError as exc:
        assert str(exc)  # a message that says what is wrong
        return
    # accepted: only when the header is consistent, and then the array has exactly the declared shape
    ch, dt = ENCODINGS[encoding]
    assert h > 0 and w > 0 and step >= w * ch * dt.itemsize and nbytes >= step * h
    assert out.shape[:2] == (h, w) and out.dtype == dt


def test_known_bytes_big_and_little_endian():
    # 2x2 16UC1: values 1, 256, 513, 65535
    vals = np.array([[1, 256], [513, 65535]], dtype=np.uint16)
    be = vals.astype(">u2").tobytes()
    le = vals.astype("<u2").tobytes()
    np.testing.assert_array_equal(decode_image("16UC1", 2, 2, 4, True, be), vals)
    np.testing.assert_array_equal(decode_image("16UC1", 2, 2, 4, False, le), vals)
    assert not np.array_equal(decode_image("16UC1", 2, 2, 4, False, be), vals)


def test_colour_and_depth_helpers():
    rgb = np.array([[[10, 20, 30]]], dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb8("bgr8", rgb[..., ::-1]), rgb)
    np.testing.assert_array_equal(to_rgb8("rgba8", np.dstack([rgb, [[[255]]]]).astype(np.uint8)), rgb)
    np.testing.assert_array_equal(to_rgb8("bgra8", np.dstack([rgb[..., ::-1], [[[255]]]]).astype(np.uint8)), rgb)
    assert to_rgb8("mono8", np.array([[7]], np.uint8)).tolist() == [[[7, 7, 7]]]
    np.testing.assert_allclose(to_depth_m("16UC1", np.array([[1500, 0]], np.uint16)), [[1.5, 0.0]])
    d = to_depth_m("32FC1", np.array([[np.nan, -1.0, np.inf, 2.5]], np.float32))
    np.testing.assert_array_equal(d, [[0.0, 0.0, 0.0, 2.5]])
    with pytest.raises(ValueError, match="not a depth encoding"):
        to_depth_m("rgb8", rgb)
    with pytest.raises(ValueError, match="not a colour encoding"):
        to_rgb8("32FC1", np.zeros((1, 1), np.float32))


def test_encode_rejects_wrong_dtype_or_shape():
    with pytest.raises(ValueError, match="dtype"):
        encode_image(np.zeros((2, 2), np.float64), "32FC1")
    with pytest.raises(ValueError, match="shape"):
        encode_image(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ValueError, match="unsupported"):
        encode_image(np.zeros((2, 2), np.uint8), "yuv422")


def test_oversized_header_is_refused_before_allocation():
    with pytest.raises(ValueError, match="larger than"):
        decode_image("rgb8", 100000, 100000, 300000, False, b"")
    assert image_codec.MAX_PIXELS > 4096 * 4096
