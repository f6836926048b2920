"""Tests for spatialvlm_ros.spatial.imaging (ROS Image <-> numpy conversions)."""

from __future__ import annotations

import array
import struct
from typing import Any

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from spatialvlm_ros.spatial.imaging import (
    DEPTH_ENCODINGS,
    RGB_ENCODINGS,
    ImageDecodeError,
    compressed_to_rgb,
    depth_to_metres,
    image_to_rgb,
    metres_from_depth_msg,
    metres_to_depth_fields,
    resize_max_pixels,
    rgb_from_compressed_msg,
    rgb_from_image_msg,
    rgb_to_image_fields,
)

SIXTEEN_BIT = {"rgb16", "bgr16", "rgba16", "bgra16", "mono16"}


def _rgb(h: int = 5, w: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _grey_rgb(h: int = 5, w: int = 7, seed: int = 0) -> np.ndarray:
    grey = np.random.default_rng(seed).integers(0, 256, size=(h, w), dtype=np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _pad(fields: dict[str, Any], extra: int) -> dict[str, Any]:
    """Append `extra` garbage bytes to every row, as drivers with aligned rows do."""
    rows = np.frombuffer(fields["data"], dtype=np.uint8).reshape(fields["height"], fields["step"])
    garbage = np.full((fields["height"], extra), 0xAB, dtype=np.uint8)
    return {**fields, "step": fields["step"] + extra, "data": np.hstack([rows, garbage]).tobytes()}


def _msg(fields: dict[str, Any]) -> Image:
    return Image(**fields)


def _args(fields: dict[str, Any], data: Any = None) -> tuple[Any, ...]:
    return (
        fields["encoding"],
        fields["height"],
        fields["width"],
        fields["step"],
        fields["data"] if data is None else data,
        fields["is_bigendian"],
    )


# ---------------------------------------------------------------- colour round trips


@pytest.mark.parametrize("padding", [0, 3, 64])
@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("encoding", RGB_ENCODINGS)
def test_rgb_round_trip_every_encoding(encoding: str, big_endian: bool, padding: int) -> None:
    item = 2 if encoding in SIXTEEN_BIT else 1
    if padding % item:
        padding += 1  # step must stay a multiple of the element size
    src = _grey_rgb() if encoding.startswith("mono") else _rgb()
    fields = _pad(rgb_to_image_fields(src, encoding, big_endian=big_endian), padding)
    assert fields["is_bigendian"] == int(big_endian and item == 2)

    out = rgb_from_image_msg(_msg(fields))
    assert out.shape == src.shape
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, src)
    np.testing.assert_array_equal(image_to_rgb(*_args(fields)), src)


@pytest.mark.parametrize(
    "wrap",
    [
        bytes,
        bytearray,
        memoryview,
        lambda b: array.array("B", b),
        list,
        lambda b: np.frombuffer(b, np.uint8),
    ],
    ids=["bytes", "bytearray", "memoryview", "array", "list", "ndarray"],
)
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "16UC1"])
def test_all_data_container_types(encoding: str, wrap: Any) -> None:
    if encoding == "16UC1":
        metres = np.array([[0.5, 1.0, 2.25], [0.001, 0.0, 65.535]], dtype=np.float32)
        fields = metres_to_depth_fields(metres)
        got = depth_to_metres(*_args(fields, wrap(fields["data"])))
        np.testing.assert_array_equal(got, np.where(metres == 0, np.nan, metres))
        return
    src = _grey_rgb(3, 4) if encoding == "mono8" else _rgb(3, 4)
    fields = rgb_to_image_fields(src, encoding)
    np.testing.assert_array_equal(image_to_rgb(*_args(fields, wrap(fields["data"]))), src)


def test_rgb8_is_zero_copy_view_of_rclpy_array() -> None:
    msg = _msg(rgb_to_image_fields(_rgb(480, 640)))
    assert isinstance(msg.data, array.array)  # what rclpy hands a subscriber
    out = rgb_from_image_msg(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


def test_padded_rgb8_is_still_a_view() -> None:
    fields = _pad(rgb_to_image_fields(_rgb(4, 5)), 17)
    buf = bytearray(fields["data"])
    out = image_to_rgb(*_args(fields, buf))
    assert np.shares_memory(out, np.frombuffer(buf, np.uint8))
    np.testing.assert_array_equal(out, _rgb(4, 5))


def test_known_pixel_values() -> None:
    one = {"height": 1, "width": 1, "is_bigendian": 0}
    assert image_to_rgb("bgr8", step=3, data=bytes([10, 20, 30]), **one).tolist() == [
        [[30, 20, 10]]
    ]
    assert image_to_rgb("rgba8", step=4, data=bytes([1, 2, 3, 4]), **one).tolist() == [[[1, 2, 3]]]
    assert image_to_rgb("bgra8", step=4, data=bytes([1, 2, 3, 4]), **one).tolist() == [[[3, 2, 1]]]
    assert image_to_rgb("mono8", step=1, data=bytes([77]), **one).tolist() == [[[77, 77, 77]]]
    # 16-bit keeps the high byte; byte order matters.
    be = struct.pack(">3H", 0x1234, 0xFF00, 0x00FF)
    le = struct.pack("<3H", 0x1234, 0xFF00, 0x00FF)
    expected = [[[0x12, 0xFF, 0x00]]]
    assert image_to_rgb("rgb16", 1, 1, 6, be, is_bigendian=1).tolist() == expected
    assert image_to_rgb("rgb16", 1, 1, 6, le, is_bigendian=0).tolist() == expected
    assert image_to_rgb("bgr16", 1, 1, 6, le).tolist() == [[[0x00, 0xFF, 0x12]]]
    assert image_to_rgb("mono16", 1, 1, 2, struct.pack(">H", 0xAB00), 1).tolist() == [[[0xAB] * 3]]


def test_8bit_ignores_is_bigendian() -> None:
    fields = rgb_to_image_fields(_rgb())
    np.testing.assert_array_equal(image_to_rgb(*_args(fields)[:5], is_bigendian=1), _rgb())


def test_duck_typed_message() -> None:
    class Fake:
        encoding = "bgr8"
        height = 1
        width = 2
        step = 6
        data = bytes([1, 2, 3, 4, 5, 6])  # no is_bigendian attribute at all

    assert rgb_from_image_msg(Fake()).tolist() == [[[3, 2, 1], [6, 5, 4]]]


def test_rgb_to_image_fields_builds_a_valid_message() -> None:
    fields = rgb_to_image_fields(_rgb(2, 3), "bgra8")
    assert fields == {
        **fields,
        "encoding": "bgra8",
        "height": 2,
        "width": 3,
        "step": 12,
        "is_bigendian": 0,
    }
    assert isinstance(fields["data"], bytes)
    assert len(fields["data"]) == 24
    assert fields["data"][3] == 255  # opaque alpha
    # Grey (H, W) input is accepted for colour encodings too.
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(
        rgb_from_image_msg(_msg(rgb_to_image_fields(grey))), np.dstack([grey] * 3)
    )


# ---------------------------------------------------------------- depth


def test_16uc1_millimetres_to_exact_metres() -> None:
    mm = np.array([[1000, 1234, 65535], [1, 500, 0]], dtype="<u2")
    got = depth_to_metres("16UC1", 2, 3, 6, mm.tobytes())
    assert got.dtype == np.float32
    assert got.shape == (2, 3)
    expected = np.array([[1.0, 1.234, 65.535], [0.001, 0.5, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)  # bit-exact float32 of the decimal values
    assert got[0, 1] == np.float32(1.234)


@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
def test_16bit_depth_big_endian_and_padding(encoding: str) -> None:
    mm = np.array([[1500, 0], [2, 40000]], dtype=">u2")
    fields = _pad(
        {
            "encoding": encoding,
            "height": 2,
            "width": 2,
            "step": 4,
            "is_bigendian": 1,
            "data": mm.tobytes(),
        },
        6,
    )
    got = metres_from_depth_msg(_msg(fields))
    np.testing.assert_array_equal(got, np.array([[1.5, np.nan], [0.002, 40.0]], np.float32))
    # Reading the same bytes as little-endian gives different (wrong) values: the flag is honoured.
    assert depth_to_metres(*_args({**fields, "is_bigendian": 0}))[0, 0] != np.float32(1.5)


def test_32fc1_invalid_values_become_nan() -> None:
    vals = np.array(
        [[1.25, 0.0, np.nan], [np.inf, -np.inf, -0.5], [-0.0, 1e-6, 80.0]], dtype="<f4"
    )
    got = depth_to_metres("32FC1", 3, 3, 12, vals.tobytes())
    expected = np.array(
        [[1.25, np.nan, np.nan], [np.nan, np.nan, np.nan], [np.nan, 1e-6, 80.0]], np.float32
    )
    np.testing.assert_array_equal(got, expected)


def test_32fc1_big_endian_padded_message() -> None:
    vals = np.array([[0.75, np.nan, 3.5]], dtype=">f4")
    fields = _pad(
        {
            "encoding": "32FC1",
            "height": 1,
            "width": 3,
            "step": 12,
            "is_bigendian": 1,
            "data": vals.tobytes(),
        },
        8,
    )
    got = metres_from_depth_msg(_msg(fields))
    np.testing.assert_array_equal(got, np.array([[0.75, np.nan, 3.5]], np.float32))
    assert got.dtype == np.float32
    assert got.dtype.isnative


def test_depth_does_not_touch_message_buffer_and_is_writable() -> None:
    vals = np.array([[0.0, -1.0, 2.0]], dtype="<f4")
    msg = Image(encoding="32FC1", height=1, width=3, step=12, data=vals.tobytes())
    before = bytes(msg.data)
    got = metres_from_depth_msg(msg)
    assert bytes(msg.data) == before
    assert got.flags.writeable
    assert not np.shares_memory(got, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("encoding", DEPTH_ENCODINGS)
def test_depth_round_trip(encoding: str, big_endian: bool) -> None:
    metres = np.random.default_rng(1).uniform(0.2, 10.0, size=(6, 9)).astype(np.float32)
    metres[0, 0] = np.nan
    fields = metres_to_depth_fields(metres, encoding, big_endian=big_endian)
    assert fields["is_bigendian"] == int(big_endian)
    got = metres_from_depth_msg(_msg(_pad(fields, 4)))
    if encoding == "32FC1":
        np.testing.assert_array_equal(got, metres)
    else:
        np.testing.assert_allclose(got, metres, atol=0.0005 + 1e-6)  # rounded to whole mm
        assert np.isnan(got[0, 0])


def test_metres_to_16uc1_rounding_and_missing() -> None:
    metres = np.array([[1.2344, 1.2346, np.nan, np.inf, -2.0, 0.0, 65.535, 70.0, 0.0004]])
    fields = metres_to_depth_fields(metres, "16UC1")
    mm = np.frombuffer(fields["data"], "<u2").tolist()
    assert mm == [1234, 1235, 0, 0, 0, 0, 65535, 0, 0]
    fields32 = metres_to_depth_fields(metres, "32FC1")
    stored = np.frombuffer(fields32["data"], "<f4")
    assert np.isnan(stored[2])
    assert stored[4] == -2.0


# ---------------------------------------------------------------- compressed


def _encoded(ext: str, img_bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img_bgr)
    assert ok
    return buf.tobytes()


def test_compressed_png_exact() -> None:
    rgb = _rgb(12, 17)
    data = _encoded(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(
        rgb_from_compressed_msg(CompressedImage(format="png", data=data)), rgb
    )
    np.testing.assert_array_equal(
        compressed_to_rgb("rgb8; png compressed bgr8", array.array("B", data)), rgb
    )


def test_compressed_jpeg_colour_order() -> None:
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16] = (255, 0, 0)
    rgb[:, 16:32] = (0, 255, 0)
    rgb[:, 32:] = (0, 0, 255)
    data = _encoded(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    got = rgb_from_compressed_msg(CompressedImage(format="rgb8; jpeg compressed bgr8", data=data))
    assert got.shape == (32, 48, 3)
    assert got.dtype == np.uint8
    assert (
        np.abs(got.astype(int) - rgb).mean() < 12
    )  # chroma bleeds at the stripe edges; a swap gives ~110
    assert tuple(got[16, 8]) == pytest.approx((255, 0, 0), abs=12)
    assert tuple(got[16, 40]) == pytest.approx((0, 0, 255), abs=12)


def test_compressed_grey_png_gives_three_channels() -> None:
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5)
    got = compressed_to_rgb("mono8; png compressed", _encoded(".png", grey))
    np.testing.assert_array_equal(got, np.dstack([grey] * 3))


@pytest.mark.parametrize(
    ("fmt", "data", "needle"),
    [
        ("jpeg", b"", "empty compressed image data"),
        ("jpeg", array.array("B"), "empty compressed image data"),
        ("jpeg", b"definitely not a jpeg", "could not decode 21 bytes"),
        ("png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "could not decode 48 bytes"),
        ("16UC1; compressedDepth png", b"\0" * 12 + b"\x89PNG", "compressedDepth"),
    ],
)
def test_compressed_errors(fmt: str, data: Any, needle: str) -> None:
    with pytest.raises(ImageDecodeError, match=needle):
        compressed_to_rgb(fmt, data)


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("func", "args", "needle"),
    [
        (
            image_to_rgb,
            ("yuv422", 2, 2, 4, bytes(8)),
            "unsupported encoding 'yuv422'; accepted: rgb8, bgr8, rgba8",
        ),
        (
            depth_to_metres,
            ("rgb8", 2, 2, 6, bytes(12)),
            "unsupported depth encoding 'rgb8'; accepted: 16UC1, 32FC1",
        ),
        (image_to_rgb, ("rgb8", 480, 640, 1900, bytes(1900 * 480)), r"step 1900 < width\*3=1920"),
        (image_to_rgb, ("rgba8", 1, 2, 7, bytes(7)), r"step 7 < width\*4=8"),
        (depth_to_metres, ("32FC1", 1, 4, 12, bytes(12)), r"step 12 < width\*4=16"),
        (
            image_to_rgb,
            ("rgb8", 480, 640, 1920, bytes(1000)),
            r"data has 1000 bytes, expected step\*height=921600",
        ),
        (
            image_to_rgb,
            ("rgb8", 2, 2, 6, bytes(13)),
            r"data has 13 bytes, expected step\*height=12",
        ),
        (
            depth_to_metres,
            ("16UC1", 2, 2, 4, bytes(7)),
            r"data has 7 bytes, expected step\*height=8",
        ),
        (image_to_rgb, ("rgb8", 480, 0, 0, b""), "empty image 0x480"),
        (image_to_rgb, ("rgb8", 0, 640, 1920, b""), "empty image 640x0"),
        (depth_to_metres, ("16UC1", 0, 0, 0, b""), "empty image 0x0"),
        (depth_to_metres, ("16UC1", 2, 3, 7, bytes(14)), "step 7 is not a multiple of 2"),
        (image_to_rgb, ("mono16", 2, 3, 7, bytes(14)), "step 7 is not a multiple of 2"),
        (depth_to_metres, ("32FC1", 1, 1, 6, bytes(6)), "step 6 is not a multiple of 4"),
        (
            image_to_rgb,
            ("mono8", 1, 2, 2, [1, 256]),
            "not bytes-like or a sequence of ints 0..255",
        ),
        (image_to_rgb, ("mono8", 1, 2, 2, "ab"), "got str"),
        (image_to_rgb, ("mono8", 1, 2, 2, np.array([1, 2])), "dtype int64"),
    ],
)
def test_bad_inputs_name_the_problem(func: Any, args: tuple[Any, ...], needle: str) -> None:
    with pytest.raises(ImageDecodeError, match=needle):
        func(*args)


def test_decode_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="empty image"):
        rgb_from_image_msg(Image(encoding="rgb8"))


@pytest.mark.parametrize(
    ("func", "args", "needle"),
    [
        (
            rgb_to_image_fields,
            (np.zeros((2, 2, 3), np.uint8), "yuv422"),
            "unsupported encoding 'yuv422'",
        ),
        (rgb_to_image_fields, (np.zeros((2, 2, 3), np.float32),), "must be uint8"),
        (rgb_to_image_fields, (np.zeros((2, 2, 4), np.uint8),), r"shape \(H, W, 3\)"),
        (rgb_to_image_fields, (np.zeros((0, 2, 3), np.uint8),), "empty image 2x0"),
        (metres_to_depth_fields, (np.zeros((2, 2)), "8UC1"), "unsupported depth encoding '8UC1'"),
        (metres_to_depth_fields, (np.zeros((2, 2, 1)),), r"shape \(H, W\)"),
    ],
)
def test_encoder_bad_inputs(func: Any, args: tuple[Any, ...], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        func(*args)


# ---------------------------------------------------------------- resizing


def test_resize_noop_returns_same_object() -> None:
    img = _rgb(48, 64)
    assert resize_max_pixels(img, 48 * 64) is img
    assert resize_max_pixels(img, 0) is img
    assert resize_max_pixels(img, -5) is img


@pytest.mark.parametrize(
    ("shape", "max_pixels"),
    [
        ((480, 640), 76800),
        ((480, 640), 100_000),
        ((1080, 1920), 50_000),
        ((1, 10_000), 100),
        ((10_000, 2), 100),
        ((7, 5), 1),
        ((333, 777), 12_345),
    ],
)
def test_resize_respects_budget_and_aspect(shape: tuple[int, int], max_pixels: int) -> None:
    img = np.zeros((*shape, 3), np.uint8)
    out = resize_max_pixels(img, max_pixels)
    h, w = out.shape[:2]
    assert out.dtype == np.uint8
    assert out.shape[2] == 3
    assert h * w <= max_pixels
    assert h <= shape[0]
    assert w <= shape[1]
    if min(h, w) > 1:
        assert abs(w / h - shape[1] / shape[0]) / (shape[1] / shape[0]) < 0.05
        assert h * w > 0.9 * max_pixels  # not needlessly small


def test_resize_exact_half_and_padded_view_input() -> None:
    fields = _pad(rgb_to_image_fields(np.full((480, 640, 3), 200, np.uint8)), 64)
    out = resize_max_pixels(rgb_from_image_msg(_msg(fields)), 320 * 240)
    assert out.shape == (240, 320, 3)
    assert (out == 200).all()
