"""Where an operator's click lands: the rule the node (`~/click`) and `ros-ror replay --click-topic` share.

rqt_image_view publishes a click on a picture as geometry_msgs/PointStamped in the picture's pixels. It is placed
on the newest frame seen (the one the operator was looking at) and becomes that frame's `click@(x, y)` command
(sahm_core.click), unless:

- no frame has come yet (nothing to place it in);
- it is stamped more than `max_age` seconds before that frame (the scene it pointed at may have changed); an
  unstamped click (stamp 0, which rqt_image_view sends) counts as the newest frame's;
- it lies outside that frame, or is not a number.
"""

from __future__ import annotations

from typing import NamedTuple

from sahm_core.click import pixel_click

DEFAULT_CLICK_MAX_AGE = 2.0  # seconds: the node's click_max_age parameter and replay's --click-max-age


class NewestFrame(NamedTuple):
    stamp_ns: int
    width: int
    height: int


class ClickDropped(ValueError):
    """A click that cannot be placed; `reason` names the drop in /diagnostics and replay's summary."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def place_click(u: float, v: float, stamp_ns: int, newest: NewestFrame | None,
                max_age: float = DEFAULT_CLICK_MAX_AGE) -> str:
    """The command of a click on pixel (u, v), stamped `stamp_ns` (0: unstamped), placed on `newest`; ClickDropped
    (reason click_no_frame, click_stale or click_outside) when it cannot be."""
    if newest is None:
        raise ClickDropped("click_no_frame", "a click before any frame: there is nothing to place it in")
    age = (newest.stamp_ns - stamp_ns) * 1e-9
    if stamp_ns and age > max_age:
        raise ClickDropped("click_stale", f"the click is {age:.2f} s older than the newest frame, more than "
                                          f"click_max_age={max_age:g} s")
    try:
        return pixel_click(u, v, newest.width, newest.height)
    except ValueError as e:
        raise ClickDropped("click_outside", str(e)) from None
