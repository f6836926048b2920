"""Convert ROS Image/CompressedImage fields to numpy RGB and metric depth and back.

ROS-free and duck-typed (no rclpy/sensor_msgs/cv_bridge import): reads plain message fields.

Decisions worth knowing:

* Data size must be exactly ``step * height`` (as the Image message defines it); any mismatch
  is refused rather than guessed at.
* ``step`` must be a multiple of the element size for 16/32-bit encodings.
* 8-bit colour output is a zero-copy view of ``data`` where no channel reorder is needed
  (rgb8, rgba8 with alpha sliced off, padded rows sliced off).  Such a view is read-only when
  ``data`` is ``bytes`` and shares memory with the message when ``data`` is an
  ``array.array``/``bytearray``; call ``.copy()`` before writing into it.
* 16-bit colour/mono images (rgb16, bgr16, rgba16, bgra16, mono16) are accepted by
  ``image_to_rgb`` and scaled to 8 bits by dropping the low byte (the cv_bridge convention).
* ``mono16`` is also accepted by ``depth_to_metres`` as millimetres, like ``16UC1``: several
  depth drivers publish depth under that name, and a caller asking for depth means depth.
* Depth 0, NaN, +/-inf and negative values are all "no reading" and become NaN.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

__all__ = [
    "DEPTH_ENCODINGS",
    "RGB_ENCODINGS",
    "ImageDecodeError",
    "compressed_to_rgb",
    "depth_to_metres",
    "image_to_rgb",
    "metres_from_depth_msg",
    "metres_to_depth_fields",
    "resize_max_pixels",
    "rgb_from_compressed_msg",
    "rgb_from_image_msg",
    "rgb_to_image_fields",
]


class ImageDecodeError(ValueError):
    """Raised when image fields or bytes cannot be turned into an array; the message says why."""


# encoding -> (channels, bytes per channel, indices that pick R, G, B from the stored channels)
_COLOUR_LAYOUT: dict[str, tuple[int, int, tuple[int, int, int]]] = {
    "rgb8": (3, 1, (0, 1, 2)),
    "bgr8": (3, 1, (2, 1, 0)),
    "rgba8": (4, 1, (0, 1, 2)),
    "bgra8": (4, 1, (2, 1, 0)),
    "mono8": (1, 1, (0, 0, 0)),
    "rgb16": (3, 2, (0, 1, 2)),
    "bgr16": (3, 2, (2, 1, 0)),
    "rgba16": (4, 2, (0, 1, 2)),
    "bgra16": (4, 2, (2, 1, 0)),
    "mono16": (1, 2, (0, 0, 0)),
}
RGB_ENCODINGS: tuple[str, ...] = tuple(_COLOUR_LAYOUT)

# encoding -> (numpy kind+size without byte order, factor that turns the stored value into metres)
_DEPTH_LAYOUT: dict[str, tuple[str, float]] = {
    "16UC1": ("u2", 1000.0),  # millimetres
    "32FC1": ("f4", 1.0),  # metres
    "mono16": ("u2", 1000.0),  # millimetres, as published by some depth drivers
}
DEPTH_ENCODINGS: tuple[str, ...] = tuple(_DEPTH_LAYOUT)

# 16UC1 can hold at most 65535 mm.
_MAX_MM = 65535


def _as_uint8(data: Any) -> np.ndarray:
    """Return ``data`` as a flat uint8 array, without copying when it exposes a byte buffer."""
    if isinstance(data, np.ndarray):
        # frombuffer would read e.g. int64 items as 8 bytes each; refuse instead of guessing.
        if data.dtype != np.uint8:
            raise ImageDecodeError(
                f"data must hold uint8 bytes, got a numpy array of dtype {data.dtype}"
            )
        return data.reshape(-1)
    if isinstance(data, str):
        raise ImageDecodeError("data must be bytes-like or a sequence of ints 0..255, got str")
    try:
        # bytes, bytearray, memoryview and rclpy's array.array('B') expose a buffer: no copy.
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        pass
    try:
        # Plain lists/tuples of ints (what a test or a hand-built message may hold) need one copy.
        return np.asarray(data, dtype=np.uint8).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImageDecodeError(
            f"data of type {type(data).__name__} is not bytes-like or a sequence of ints "
            f"0..255: {exc}"
        ) from exc


def _check_size(height: int, width: int) -> None:
    if height == 0 or width == 0:
        raise ImageDecodeError(f"empty image {width}x{height}")
    if height < 0 or width < 0:
        raise ImageDecodeError(f"invalid image size {width}x{height}")


def _rows(
    encoding: str, height: int, width: int, step: int, data: Any, pixel_bytes: int, item_bytes: int
) -> np.ndarray:
    """Validate geometry; return a (height, width*pixel_bytes) uint8 view without row padding."""
    height, width, step = int(height), int(width), int(step)
    _check_size(height, width)
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} < width*{pixel_bytes}={row_bytes} "
            f"for encoding {encoding!r} (width {width})"
        )
    if step % item_bytes:
        raise ImageDecodeError(
            f"step {step} is not a multiple of {item_bytes}, "
            f"the element size of encoding {encoding!r}"
        )
    buf = _as_uint8(data)
    if buf.size != step * height:
        raise ImageDecodeError(
            f"data has {buf.size} bytes, expected step*height={step * height} "
            f"(step {step}, height {height})"
        )
    # Slicing off the padding keeps this a view; rows stay step bytes apart.
    return buf.reshape(height, step)[:, :row_bytes]


def image_to_rgb(
    encoding: str, height: int, width: int, step: int, data: Any, is_bigendian: int = 0
) -> np.ndarray:
    """Decode raw Image fields into an (H, W, 3) uint8 RGB array.

    Zero-copy for rgb8 and rgba8 (see the module docstring); other encodings make one copy.
    """
    layout = _COLOUR_LAYOUT.get(encoding)
    if layout is None:
        raise ImageDecodeError(
            f"unsupported encoding {encoding!r}; accepted: {', '.join(RGB_ENCODINGS)}"
        )
    channels, item_bytes, order = layout
    rows = _rows(encoding, height, width, step, data, channels * item_bytes, item_bytes)
    h, w = rows.shape[0], int(width)

    if item_bytes == 2:
        # Keep the high byte: the usual 16->8 bit scaling (cv_bridge divides by 256 too).
        dtype = np.dtype(">u2" if is_bigendian else "<u2")
        pixels = (rows.view(dtype) >> 8).astype(np.uint8).reshape(h, w, channels)
    else:
        pixels = rows.reshape(h, w, channels)

    if channels == 1:
        # cvtColor is ~40x faster than np.repeat here and returns a contiguous array.
        return cv2.cvtColor(pixels[:, :, 0], cv2.COLOR_GRAY2RGB)
    if order == (0, 1, 2):
        # rgb/rgba: slicing drops alpha without copying.
        return pixels if channels == 3 else pixels[:, :, :3]
    # bgr/bgra: a reorder needs a copy; cvtColor does it ~50x faster than fancy indexing and
    # avoids handing out a negative-stride view that cv2/torch reject.
    code = cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGB
    return cv2.cvtColor(pixels, code)


def depth_to_metres(
    encoding: str, height: int, width: int, step: int, data: Any, is_bigendian: int = 0
) -> np.ndarray:
    """Decode raw depth Image fields into a new (H, W) float32 array in metres; missing -> NaN."""
    layout = _DEPTH_LAYOUT.get(encoding)
    if layout is None:
        raise ImageDecodeError(
            f"unsupported depth encoding {encoding!r}; accepted: {', '.join(DEPTH_ENCODINGS)}"
        )
    kind, per_metre = layout
    dtype = np.dtype((">" if is_bigendian else "<") + kind)
    rows = _rows(encoding, height, width, step, data, dtype.itemsize, dtype.itemsize)
    raw = rows.view(dtype)
    # Always a fresh native float32 array: never write NaNs into the message's own buffer.
    metres = raw.astype(np.float32)
    if per_metre != 1.0:
        # Division (not * 0.001) gives the float32 nearest to mm/1000, e.g. exactly float32(1.234).
        np.divide(metres, np.float32(per_metre), out=metres)
    # 0 means "no return" for depth drivers; NaN/inf/negative can only be invalid readings.
    metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
    return metres


def compressed_to_rgb(format: str, data: Any) -> np.ndarray:
    """Decode CompressedImage bytes into (H, W, 3) uint8 RGB; codec detected from the bytes."""
    if "compresseddepth" in format.lower():
        # compressed_depth_image_transport prepends a config header and stores depth, not colour.
        raise ImageDecodeError(
            f"format {format!r} is compressedDepth (depth data), not a colour image"
        )
    buf = _as_uint8(data)
    if buf.size == 0:
        raise ImageDecodeError(f"empty compressed image data (format {format!r})")
    try:
        # IMREAD_COLOR always yields 8-bit BGR: grey is replicated, alpha dropped, 16-bit scaled.
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageDecodeError(
            f"could not decode {buf.size} bytes of compressed image (format {format!r}): {exc}"
        ) from exc
    if bgr is None or bgr.size == 0:
        raise ImageDecodeError(
            f"could not decode {buf.size} bytes of compressed image (format {format!r}): "
            "not a recognised/valid image"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rgb_from_image_msg(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB from anything with sensor_msgs/Image fields."""
    return image_to_rgb(
        msg.encoding, msg.height, msg.width, msg.step, msg.data, getattr(msg, "is_bigendian", 0)
    )


def metres_from_depth_msg(msg: Any) -> np.ndarray:
    """(H, W) float32 metres (NaN = missing) from anything with sensor_msgs/Image fields."""
    return depth_to_metres(
        msg.encoding, msg.height, msg.width, msg.step, msg.data, getattr(msg, "is_bigendian", 0)
    )


def rgb_from_compressed_msg(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB from anything with sensor_msgs/CompressedImage fields."""
    return compressed_to_rgb(msg.format, msg.data)


def _fields(encoding: str, array: np.ndarray, big_endian: bool) -> dict[str, Any]:
    height, width = array.shape[:2]
    data = np.ascontiguousarray(array).tobytes()
    return {
        "encoding": encoding,
        "height": int(height),
        "width": int(width),
        "step": len(data) // height if height else 0,
        "is_bigendian": int(big_endian),
        "data": data,
    }


def rgb_to_image_fields(
    rgb: np.ndarray, encoding: str = "rgb8", *, big_endian: bool = False
) -> dict[str, Any]:
    """Encode (H, W, 3) or grey (H, W) uint8 into unpadded Image fields for ``Image(**fields)``.

    mono encodings take the luma of an RGB input; 16-bit encodings scale 0..255 to 0..65535 (x257)
    so that ``image_to_rgb`` gives the input back exactly.
    """
    layout = _COLOUR_LAYOUT.get(encoding)
    if layout is None:
        raise ValueError(
            f"unsupported encoding {encoding!r}; accepted: {', '.join(RGB_ENCODINGS)}"
        )
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8, got dtype {rgb.dtype}")
    if not (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] == 3)):
        raise ValueError(f"rgb must have shape (H, W, 3) or (H, W), got {rgb.shape}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"empty image {rgb.shape[1]}x{rgb.shape[0]}")
    channels, item_bytes, order = layout

    if channels == 1:
        pixels = (
            rgb if rgb.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        )
        pixels = pixels[:, :, None]
    else:
        colour = (
            rgb if rgb.ndim == 3 else cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_GRAY2RGB)
        )
        colour = colour[:, :, list(order)]  # the R,G,B index map is its own inverse
        if channels == 4:
            alpha = np.full((*colour.shape[:2], 1), 255, dtype=np.uint8)
            colour = np.concatenate([colour, alpha], axis=2)
        pixels = colour

    if item_bytes == 2:
        # Multiply natively, then set byte order: ufuncs return native-endian results.
        pixels = (pixels.astype(np.uint16) * np.uint16(257)).astype(
            np.dtype(">u2" if big_endian else "<u2")
        )
    return _fields(encoding, pixels, big_endian and item_bytes > 1)


def metres_to_depth_fields(
    metres: np.ndarray, encoding: str = "16UC1", *, big_endian: bool = False
) -> dict[str, Any]:
    """Encode (H, W) metres into unpadded depth Image fields for ``Image(**fields)``.

    16UC1/mono16: rounded to whole millimetres; NaN, inf, <= 0 and anything beyond 65.535 m
    (unrepresentable) become 0, the "no reading" value.  32FC1: float32 metres as-is, NaN kept.
    """
    layout = _DEPTH_LAYOUT.get(encoding)
    if layout is None:
        raise ValueError(
            f"unsupported depth encoding {encoding!r}; accepted: {', '.join(DEPTH_ENCODINGS)}"
        )
    metres = np.asarray(metres)
    if metres.ndim != 2:
        raise ValueError(f"metres must have shape (H, W), got {metres.shape}")
    if metres.shape[0] == 0 or metres.shape[1] == 0:
        raise ValueError(f"empty image {metres.shape[1]}x{metres.shape[0]}")
    kind, per_metre = layout
    dtype = np.dtype((">" if big_endian else "<") + kind)
    if kind == "f4":
        stored = metres.astype(dtype)
    else:
        mm = np.rint(metres.astype(np.float64) * per_metre)
        # Saturating to 65535 would invent a reading; 0 honestly says "none".
        valid = np.isfinite(mm) & (mm > 0) & (mm <= _MAX_MM)
        stored = np.where(valid, mm, 0).astype(dtype)
    return _fields(encoding, stored, big_endian)


def resize_max_pixels(rgb: np.ndarray, max_pixels: int) -> np.ndarray:
    """Downscale with INTER_AREA, keeping aspect, so that H*W <= max_pixels.

    Returns ``rgb`` itself when it is already small enough or ``max_pixels <= 0`` (no limit).
    """
    height, width = rgb.shape[:2]
    if max_pixels <= 0 or height * width <= max_pixels:
        return rgb
    scale = math.sqrt(max_pixels / (height * width))
    new_w = max(1, min(width, int(width * scale)))
    new_h = max(1, min(height, int(height * scale)))
    if new_w * new_h > max_pixels:
        # Only reachable when one side was clamped to 1 px or through float rounding:
        # shrink the longer side so the budget holds.
        if new_w <= new_h:
            new_h = max(1, min(height, max_pixels // new_w))
        else:
            new_w = max(1, min(width, max_pixels // new_h))
    # cv2 wants contiguous-ish input; this is a no-op for arrays that already are.
    return cv2.resize(np.ascontiguousarray(rgb), (new_w, new_h), interpolation=cv2.INTER_AREA)
