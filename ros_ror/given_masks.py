"""Masks found by another node, waiting for their frame: matched by header stamp within a tolerance.

The node (`~/erase_mask`) and `ros-ror replay --erase-mask-topic` share this rule. A segmentation node runs behind the
camera, so a mask comes after the frame it was computed on was published, but before we process that frame; a few are
kept. A mask is used by the frame stamped nearest to it within the tolerance; one older than the frame being
processed by more than that can never match and is dropped as stale.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

DEFAULT_TOLERANCE = 0.02  # seconds: the node's erase_mask_tolerance and replay's --erase-mask-tolerance
MASKS_KEPT = 30


@dataclass
class GivenMask:
    stamp_ns: int  # header stamp
    mask: np.ndarray  # (H, W) uint8, nonzero = erase


class GivenMasks:
    """The masks waiting for their frame (the newest MASKS_KEPT). Not thread-safe: the node holds a lock around it."""

    def __init__(self, kept: int = MASKS_KEPT):
        self._masks: deque[GivenMask] = deque(maxlen=kept)

    def __len__(self) -> int:
        return len(self._masks)

    def add(self, stamp_ns: int, mask: np.ndarray) -> None:
        self._masks.append(GivenMask(stamp_ns, mask))

    def match(self, stamp_ns: int, tolerance_s: float) -> tuple[GivenMask | None, int]:
        """(the mask stamped nearest `stamp_ns` within `tolerance_s`, or None; how many masks were stale), both
        taken out of the wait list."""
        tolerance = int(tolerance_s * 1e9)
        stale = [m for m in self._masks if m.stamp_ns < stamp_ns - tolerance]
        near = [m for m in self._masks if abs(m.stamp_ns - stamp_ns) <= tolerance]
        best = min(near, key=lambda m: abs(m.stamp_ns - stamp_ns), default=None)
        for m in stale + ([best] if best is not None else []):
            self._masks.remove(m)
        return best, len(stale)
