"""A click as a command: the text form of a point prompt (model/point.py).

A click names its object as well as a spoken command does, so it is one more target, held, tracked, confirmed and
reported like one. Its text is `click@(x, y)`, x and y the clicked pixel's centre in fractions of the frame's width
and height: a form no speech recogniser produces (the command parser drops "@" and brackets), and one that survives
every resize the frame goes through (the runtime stretches frames to the model's square input).
"""

from __future__ import annotations

import re

CLICK_TEXT = "this"  # what the text encoder reads for a click: the point says which object "this" is
_CLICK = re.compile(r"click@\((?P<x>[0-9.]+), (?P<y>[0-9.]+)\)")


def click_command(x: float, y: float) -> str:
    """The command of a click at (x, y), fractions in [0, 1] of the frame's width and height; ValueError outside."""
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ValueError(f"a click must lie in the frame: ({x:g}, {y:g}) is outside [0, 1] x [0, 1]")
    return f"click@({x:.4f}, {y:.4f})"


def pixel_click(u: float, v: float, width: int, height: int) -> str:
    """The command of a click on pixel (u, v) (column, row: what rqt_image_view publishes) of a width x height frame;
    ValueError naming the frame when the pixel is outside it."""
    if not (0 <= u < width and 0 <= v < height):
        raise ValueError(f"click at pixel ({u:g}, {v:g}) is outside the {width}x{height} frame")
    return click_command((int(u) + 0.5) / width, (int(v) + 0.5) / height)


def parse_click(text: str) -> tuple[float, float] | None:
    """(x, y) of a click's command; None for any other command."""
    match = _CLICK.fullmatch(text)
    return None if match is None else (float(match["x"]), float(match["y"]))
