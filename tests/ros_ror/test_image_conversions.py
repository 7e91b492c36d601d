"""Image <-> RGB conversions against references built by hand, byte by byte; and what cv_bridge does with padding."""

from __future__ import annotations

import numpy as np
import pytest

from ros_ror.image_conversions import ImageError, decode_compressed, decode_image, encode_compressed, encode_image


def padded_rows(pixels: list[list[list[int]]], step: int) -> bytes:
    """A sensor_msgs data buffer written out by hand: each row's channel bytes, then zero bytes up to `step`."""
    out = bytearray()
    for row in pixels:
        row_bytes = [c for px in row for c in px]
        out += bytes(row_bytes) + bytes(step - len(row_bytes))
    return bytes(out)


# 3 wide x 2 high; values distinct so any shear or channel swap shows.
RGB = [[[10, 20, 30], [40, 50, 60], [70, 80, 90]], [[11, 21, 31], [41, 51, 61], [71, 81, 91]]]


@pytest.mark.parametrize("step", [9, 11, 16])
def test_padded_rgb8_and_bgr8_decode_to_the_hand_reference(step):
    expected = np.array(RGB, np.uint8)
    got = decode_image(2, 3, "rgb8", step, padded_rows(RGB, step)).rgb
    np.testing.assert_array_equal(got, expected)
    bgr = [[px[::-1] for px in row] for row in RGB]
    np.testing.assert_array_equal(decode_image(2, 3, "bgr8", step, padded_rows(bgr, step)).rgb, expected)


def test_rgba_bgra_keep_alpha_and_round_trip_with_padding():
    alpha = [[1, 2, 3], [4, 5, 6]]
    rgba = [[px + [a] for px, a in zip(row, arow)] for row, arow in zip(RGB, alpha)]
    bgra = [[px[2::-1] + [px[3]] for px in row] for row in rgba]
    for encoding, pixels in (("rgba8", rgba), ("bgra8", bgra)):
        data = padded_rows(pixels, 15)
        frame = decode_image(2, 3, encoding, 15, data)
        np.testing.assert_array_equal(frame.rgb, np.array(RGB, np.uint8))
        np.testing.assert_array_equal(frame.alpha, np.array(alpha, np.uint8))
        assert encode_image(frame.rgb, encoding, frame.alpha, step=15) == (data, 15)
        assert encode_image(frame.rgb, encoding, frame.alpha) == (padded_rows(pixels, 12), 12)


def test_mono8_padding_and_bit_exact_round_trip():
    grey = [[[5], [200], [7]], [[0], [255], [128]]]
    frame = decode_image(2, 3, "mono8", 4, padded_rows(grey, 4))
    np.testing.assert_array_equal(frame.rgb[:, :, 0], np.array(grey, np.uint8)[:, :, 0])
    assert (frame.rgb == frame.rgb[:, :, :1]).all()  # grey replicated to R = G = B
    assert encode_image(frame.rgb, "mono8", step=4) == (padded_rows(grey, 4), 4)


def test_mono8_output_is_bt601_luma_worked_by_hand():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [100, 150, 200]]], np.uint8)
    data, step = encode_image(rgb, "mono8")
    # 0.299*255 = 76.245 -> 76; 0.587*255 = 149.685 -> 150; 0.114*255 = 29.07 -> 29; 29.9 + 88.05 + 22.8 = 140.75 -> 141
    assert (list(data), step) == ([76, 150, 29, 141], 4)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_random_round_trip_every_encoding(encoding):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    if encoding == "mono8":
        rgb[:] = rgb[:, :, :1]  # a grey frame survives mono8
    data, step = encode_image(rgb, encoding, step=37 if encoding != "rgba8" else 23)
    np.testing.assert_array_equal(decode_image(7, 5, encoding, step, data).rgb, rgb)


@pytest.mark.parametrize(
    "fields, reason",
    [
        ((2, 3, "yuv422", 6, bytes(12)), "encoding"),
        ((2, 3, "16UC1", 6, bytes(12)), "encoding"),
        ((0, 3, "rgb8", 9, b""), "zero_size"),
        ((2, 0, "rgb8", 0, b""), "zero_size"),
        ((2, 3, "rgb8", 8, bytes(16)), "step"),
        ((2, 3, "rgba8", 11, bytes(22)), "step"),
        ((2, 3, "rgb8", 9, bytes(17)), "truncated"),
        ((2, 3, "rgb8", 9, b""), "truncated"),
        ((2, 3, "rgb8", 9, bytes(19)), "data_size"),
        ((5000, 5000, "rgb8", 15000, bytes(3)), "oversized"),
    ],
)
def test_malformed_frames_raise_with_a_reason(fields, reason):
    with pytest.raises(ImageError) as err:
        decode_image(*fields, max_pixels=1_000_000)
    assert err.value.reason == reason
    assert str(err.value)


def test_cv_bridge_gets_padded_rows_wrong():
    """The reason this package slices rows by `step` itself: cv_bridge refuses padded colour rows and shears mono8."""
    from cv_bridge import CvBridge
    from sensor_msgs.msg import Image

    bridge = CvBridge()
    colour = Image(height=2, width=3, encoding="rgb8", step=11, data=padded_rows(RGB, 11))
    with pytest.raises(TypeError):
        bridge.imgmsg_to_cv2(colour)
    grey = [[[1], [2], [3], [4], [5]], [[6], [7], [8], [9], [10]], [[11], [12], [13], [14], [15]]]
    mono = Image(height=3, width=5, encoding="mono8", step=8, data=padded_rows(grey, 8))
    reference = np.array(grey, np.uint8)[:, :, 0]
    assert not np.array_equal(bridge.imgmsg_to_cv2(mono), reference)
    np.testing.assert_array_equal(decode_image(3, 5, "mono8", 8, mono.data).rgb[:, :, 0], reference)


def test_compressed_png_is_lossless_jpeg_close_and_garbage_rejected():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_compressed("png", encode_compressed(rgb, "png")).rgb, rgb)
    smooth = np.repeat(np.linspace(0, 255, 24, dtype=np.uint8)[None, :, None], 16, 0).repeat(3, 2)
    back = decode_compressed("rgb8; jpeg compressed bgr8", encode_compressed(smooth, "jpeg")).rgb
    assert np.abs(back.astype(int) - smooth).max() <= 8
    for fmt, data, reason in (("png", b"not a png", "corrupt"), ("png", b"", "zero_size"), ("tiff", b"x", "encoding")):
        with pytest.raises(ImageError) as err:
            decode_compressed(fmt, data)
        assert err.value.reason == reason
