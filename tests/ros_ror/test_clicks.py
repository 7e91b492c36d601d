"""ros_ror.clicks: where a click lands, the rule the node and replay share, worked by hand."""

from __future__ import annotations

import math

import pytest

from ros_ror.clicks import ClickDropped, NewestFrame, place_click

FRAME = NewestFrame(stamp_ns=50 * 10**9, width=640, height=480)


def test_a_click_is_the_pixel_centre_of_the_newest_frame():
    assert place_click(0, 0, 0, FRAME) == "click@(0.0008, 0.0010)"  # (0.5 / 640, 0.5 / 480)
    assert place_click(639.9, 479.2, 0, FRAME) == "click@(0.9992, 0.9990)"  # pixel (639, 479)
    assert place_click(320, 240, FRAME.stamp_ns - 2 * 10**9, FRAME, max_age=2.0) == "click@(0.5008, 0.5010)"


@pytest.mark.parametrize("u, v, stamp_ns, newest, reason", [
    (5, 5, 0, None, "click_no_frame"),
    (5, 5, FRAME.stamp_ns - 2 * 10**9 - 1, FRAME, "click_stale"),  # 1 ns past max_age
    (640, 5, 0, FRAME, "click_outside"),
    (5, -1, 0, FRAME, "click_outside"),
    (math.nan, 5, 0, FRAME, "click_outside"),
])
def test_a_click_that_cannot_be_placed_says_why(u, v, stamp_ns, newest, reason):
    with pytest.raises(ClickDropped) as caught:
        place_click(u, v, stamp_ns, newest, max_age=2.0)
    assert caught.value.reason == reason and str(caught.value)
