"""sensor_msgs Image / CompressedImage <-> numpy RGB, with `step` padding honoured both ways.

Works on the fields of a message (height, width, encoding, step, data), so the
same code serves rclpy messages in the node and rosbags messages in replay.
Every malformed frame raises `ImageError` whose `reason` names the defect, so
callers can count drops by kind.

The Python cv_bridge port ignores `step` when it is larger than
width x channels (padded rows), which shears the image; we slice rows by `step`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# encoding -> (channels, permutation that turns the stored channels into R, G, B)
ENCODINGS: dict[str, tuple[int, tuple[int, ...]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
COMPRESSED_FORMATS = ("jpeg", "png")
MASK_ENCODINGS = ("mono8", "8UC1")  # what ~/erase_mask takes (and what ~/mask publishes)

# Integer BT.601 luma: for r == g == b it returns exactly that value, so a mono8
# frame that went through RGB comes back bit-exact wherever the model left it alone.
_LUMA_WEIGHTS = np.array([299, 587, 114], dtype=np.uint32)


class ImageError(ValueError):
    """A frame that cannot be used. `reason` is a short key for drop counters."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class DecodedFrame:
    """The frame as RGB plus what is needed to write the answer back in the input's encoding."""

    rgb: np.ndarray  # (H, W, 3) uint8
    encoding: str
    alpha: np.ndarray | None = None  # (H, W) uint8 for rgba8 / bgra8, carried through unchanged


def decode_image(height: int, width: int, encoding: str, step: int, data,
                 max_pixels: int | None = None) -> DecodedFrame:
    """Fields of a sensor_msgs/Image -> RGB. Checks run cheapest first, before touching `data`."""
    if encoding not in ENCODINGS:
        raise ImageError("encoding", f"unsupported encoding {encoding[:40]!r}; supported: {', '.join(ENCODINGS)}")
    channels, order = ENCODINGS[encoding]
    pixels = _pixels(height, width, encoding, channels, step, data, max_pixels)
    rgb = np.ascontiguousarray(pixels[:, :, list(order)])
    alpha = pixels[:, :, 3].copy() if channels == 4 else None
    return DecodedFrame(rgb=rgb, encoding=encoding, alpha=alpha)


def decode_mask(height: int, width: int, encoding: str, step: int, data, max_pixels: int | None = None) -> np.ndarray:
    """Fields of a mono8 / 8UC1 sensor_msgs/Image mask -> (H, W) uint8 (nonzero = erase)."""
    if encoding not in MASK_ENCODINGS:
        raise ImageError("encoding", f"a mask must be {' or '.join(MASK_ENCODINGS)}, got {encoding[:40]!r}")
    return _pixels(height, width, encoding, 1, step, data, max_pixels)[:, :, 0].copy()


def _pixels(height: int, width: int, encoding: str, channels: int, step: int, data,
            max_pixels: int | None) -> np.ndarray:
    """The (H, W, channels) uint8 view of an Image's data without its row padding, sizes checked first."""
    if height <= 0 or width <= 0:
        raise ImageError("zero_size", f"empty frame ({width}x{height})")
    if max_pixels is not None and height * width > max_pixels:
        raise ImageError("oversized", f"frame {width}x{height} has more than max_frame_pixels={max_pixels} pixels")
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageError("step", f"step {step} is smaller than width x channels = "
                                 f"{width} x {channels} = {row_bytes} for {encoding}")
    buffer = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    expected = step * height
    if buffer.size != expected:
        kind = "truncated" if buffer.size < expected else "data_size"
        raise ImageError(kind, f"data has {buffer.size} bytes, expected step x height = {step} x {height} = {expected}")
    return buffer.reshape(height, step)[:, :row_bytes].reshape(height, width, channels)  # drop row padding


def encode_image(rgb: np.ndarray, encoding: str, alpha: np.ndarray | None = None,
                 step: int | None = None) -> tuple[bytes, int]:
    """RGB -> (data, step) in `encoding`; `step` None packs rows tightly, a larger step pads them with zeros."""
    if encoding not in ENCODINGS:
        raise ImageError("encoding", f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    height, width, _ = rgb.shape
    channels, order = ENCODINGS[encoding]
    if channels == 1:
        pixels = ((rgb.astype(np.uint32) @ _LUMA_WEIGHTS + 500) // 1000).astype(np.uint8)[:, :, None]  # (H, W, 1)
    else:
        pixels = rgb[:, :, list(order)]
        if channels == 4:
            a = np.full((height, width), 255, np.uint8) if alpha is None else alpha
            pixels = np.concatenate([pixels, a[:, :, None]], axis=2)  # (H, W, 4)
    row_bytes = width * channels
    step = row_bytes if step is None else step
    if step < row_bytes:
        raise ValueError(f"step {step} is smaller than width x channels = {row_bytes}")
    rows = np.zeros((height, step), np.uint8)
    rows[:, :row_bytes] = pixels.reshape(height, row_bytes)
    return rows.tobytes(), step


def mask_fields(mask: np.ndarray) -> tuple[bytes, int]:
    """(H, W) uint8 mask -> mono8 (data, step)."""
    return np.ascontiguousarray(mask, dtype=np.uint8).tobytes(), int(mask.shape[1])


def decode_compressed(fmt: str, data, max_pixels: int | None = None) -> DecodedFrame:
    """sensor_msgs/CompressedImage (jpeg or png, colour or grey) -> RGB; answers go back as the same format."""
    kind = _compressed_kind(fmt)
    buffer = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    if buffer.size == 0:
        raise ImageError("zero_size", "empty compressed image")
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError("corrupt", f"cannot decode the {kind} data ({buffer.size} bytes)")
    height, width = bgr.shape[:2]
    if max_pixels is not None and height * width > max_pixels:
        raise ImageError("oversized", f"frame {width}x{height} has more than max_frame_pixels={max_pixels} pixels")
    return DecodedFrame(rgb=np.ascontiguousarray(bgr[:, :, ::-1]), encoding=kind)


def encode_compressed(rgb: np.ndarray, kind: str) -> bytes:
    ok, buffer = cv2.imencode(".jpg" if kind == "jpeg" else ".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ValueError(f"cannot encode a {rgb.shape} frame as {kind}")
    return buffer.tobytes()


def _compressed_kind(fmt: str) -> str:
    # format strings look like "jpeg", "png", "rgb8; jpeg compressed bgr8" (image_transport)
    words = fmt.lower().replace(";", " ").split()
    for kind in COMPRESSED_FORMATS:
        if kind in words or (kind == "jpeg" and "jpg" in words):
            return kind
    raise ImageError("encoding", f"unsupported compressed format {fmt!r}; supported: {', '.join(COMPRESSED_FORMATS)}")


CANDIDATE_RGB = (255, 0, 255)  # magenta: rare in scenes, plain on any background


def candidate_overlay(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The frame with a mask (HxW, nonzero = in) tinted half-way to CANDIDATE_RGB and outlined in it: what an operator
    checks before confirming a target."""
    out = rgb.copy()
    inside = mask > 0
    out[inside] = (out[inside].astype(np.uint16) + np.array(CANDIDATE_RGB, np.uint16)) // 2
    contours, _ = cv2.findContours(inside.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return cv2.drawContours(out, contours, -1, CANDIDATE_RGB, max(1, rgb.shape[1] // 320))
