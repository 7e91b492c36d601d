"""Stream mode: what a `Remover` carries from frame to frame, so an erased object stays erased on a moving camera.

The per-frame graph is unchanged and knows nothing of this; everything here is numpy / OpenCV on its outputs at
model resolution S, between two frames:

1. Camera motion, previous frame -> this one: Shi-Tomasi corners of the previous frame (away from the object),
   tracked into this frame with pyramidal Lucas-Kanade, and a homography fitted to the tracks with RANSAC
   (cv2.goodFeaturesToTrack, cv2.calcOpticalFlowPyrLK, cv2.findHomography), on grey frames shrunk to
   `motion_side`. Too few corners, tracks or RANSAC inliers (a new view tracks to random places) is a scene cut.
2. Mask evidence: the carried mask log-odds, warped by that motion, decayed by `strength` and added to this frame's
   log-odds (`logit(p_t) + strength * warp(L_{t-1})`, clipped to +-max_evidence): a Bayes filter whose evidence
   fades geometrically. A frame where the network's mask dips (occlusion edge, lighting, a weak frame) keeps the
   object masked for a frame or two; a confident frame overrides the carried evidence at once, so a moving object's
   mask does not trail it.
3. Fill: where the network blended in its own fill (m, its soft hole), the new fill is mixed with the previous
   frame's fill warped by the motion, `strength` of it; where the fused mask removes pixels the network did not
   (m low), the warped previous fill is taken whole, since the graph's output there is the frame itself, object
   included. Only what the previous frame filled is carried, weighted by how much of it was a real fill (the
   network's hole, or fill carried into it): its other pixels are the camera's, and may show an occluder or the
   object (carrying those painted ghosts of an occluder, and of the object, into the hole).
4. Hold (hysteresis on the found flag): when the fused mask is not found but the previous frame removed the object,
   the carried evidence alone (warped, decayed, nothing claimed outside what the previous frame saw) stands in for
   this frame's, with the carried fill, for at most `hold_frames` frames in a row and only while it passes the found
   rule itself. The network's misses during an occlusion are confident (probabilities ~0 over the whole object),
   which no carried evidence within +-max_evidence outweighs in step 2; holding them out kept the object erased.

The mask is grown by the network's removal margin once per frame, here (`Fused.grown`, composited with margin 0).

5. A click follows its object (`follow_clicks`): after a frame that removed a click's target, its point prompt moves
   to the removed pixel deepest inside the removed region, less half its distance from where the point was
   (`follow_point`). The camera and the object move; a point left where the operator clicked slides off the object
   onto whatever comes under it, while the moved one stays inside, away from the edge, where a click is read best.

Reset (state dropped, the frame treated as the first): a new or cleared command (`Remover.set_command`), a scene cut,
a change of frame size, or a new StreamConfig.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from .found import FoundRule, found_decision


@dataclass(frozen=True)
class StreamConfig:
    """Stream mode settings; `strength` is the one a user tunes (node parameter `stream_strength`)."""

    strength: float = 0.9  # weight of the carried evidence and of the carried fill, 0..1 (0 = per-frame)
    max_evidence: float = 8.0  # |log-odds| carried at most, so carried evidence fades within a few frames
    motion_side: int = 96  # grey frames are shrunk to this side for motion estimation
    max_corners: int = 60
    min_inliers: int = 12  # fewer RANSAC inliers than this: scene cut
    min_inlier_ratio: float = 0.6  # inliers / tracked points below this: scene cut (or tracks on things that move)
    hold_frames: int = 6  # frames in a row a found object's carried mask may stand in for a network that lost it
    follow_clicks: bool = True  # a click's point moves with the object it removed (module docstring, step 5)

    def __post_init__(self):
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"stream strength must be in [0, 1], got {self.strength}")
        if self.max_evidence <= 0 or self.motion_side < 32 or self.max_corners < 4 or self.min_inliers < 4 \
                or self.hold_frames < 0:
            raise ValueError(f"stream config out of range: {self}")


DEFAULT_STREAM = StreamConfig()
PROBABILITY_FLOOR = 1e-4  # logit of 0 or 1 is infinite; the network's float32 sigmoid does reach both


def estimate_motion(previous: np.ndarray, current: np.ndarray, exclude: np.ndarray | None = None,
                    cfg: StreamConfig = DEFAULT_STREAM) -> tuple[np.ndarray | None, str]:
    """Homography mapping `previous` onto `current` (uint8 grey, same shape), or (None, why) for a scene cut.

    exclude: uint8 mask of `previous`, non-zero where no corner should be taken (the object, which moves on its own).
    """
    corners = cv2.goodFeaturesToTrack(previous, cfg.max_corners, qualityLevel=0.01, minDistance=5,
                                      mask=None if exclude is None else cv2.bitwise_not(exclude))
    if corners is None or len(corners) < cfg.min_inliers:
        return None, "too few corners"
    tracked, status, _ = cv2.calcOpticalFlowPyrLK(previous, current, corners, None, winSize=(11, 11), maxLevel=2)
    ok = status[:, 0] == 1
    if ok.sum() < cfg.min_inliers:
        return None, "tracks lost"
    homography, inliers = cv2.findHomography(corners[ok], tracked[ok], cv2.RANSAC, 1.5, maxIters=500,
                                             confidence=0.99)
    if homography is None:
        return None, "no homography"
    count = int(inliers.sum())
    if count < cfg.min_inliers or count < cfg.min_inlier_ratio * ok.sum():
        return None, f"{count} of {int(ok.sum())} tracks agree"
    return homography, ""


def _shift(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1.0]])


def _scaled(homography: np.ndarray, scale: float) -> np.ndarray:
    """A homography between images shrunk by `scale` -> the same motion between the full-size images."""
    shrink = np.diag([scale, scale, 1.0])
    return np.linalg.inv(shrink) @ homography @ shrink


def _box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """Rows and columns of the bounding box of a bool mask, None when it is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def grow_probabilities(mask_prob: np.ndarray, margin: int) -> np.ndarray:
    """Mask probabilities grown by the network's removal margin (ModelConfig.removal_margin): a (2 margin + 1)^2 max
    filter (grey dilation), as the graph grows its hole; `runtime.composite` and the stream both grow with this."""
    return cv2.dilate(mask_prob, np.ones((2 * margin + 1,) * 2, np.uint8)) if margin else mask_prob


def grown_in_box(mask_prob: np.ndarray, box: tuple[slice, slice], margin: int) -> np.ndarray:
    """`grow_probabilities(mask_prob, margin)[box]`, dilating only the box and the margin around it."""
    rows, cols = box
    top, left = max(0, rows.start - margin), max(0, cols.start - margin)
    bottom, right = min(mask_prob.shape[0], rows.stop + margin), min(mask_prob.shape[1], cols.stop + margin)
    grown = grow_probabilities(np.ascontiguousarray(mask_prob[top:bottom, left:right]), margin)
    return grown[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left]


FOLLOW_PULL = 0.5  # pixels of depth a followed point gives up per pixel it moves: < 1, so it does move inwards


def follow_point(point: np.ndarray, removed: np.ndarray, box: tuple[slice, slice] | None = None) -> np.ndarray:
    """A click's point prompt (1,3) = (x, y, 1), fractions of the frame, and the (S,S) bool region its target removed
    in this frame -> the point for the next frame: the removed pixel's centre maximising depth - FOLLOW_PULL * distance
    (depth: Euclidean distance to the nearest pixel outside the region, the frame's border counting as outside;
    distance: from the current point, in model pixels). The point climbs to the deepest part of the region it is in,
    and a neighbour the mask spilled onto draws it only where that is deeper by half the way there. The point
    unchanged when nothing was removed. `box`: `removed`'s bounding box (`_box`), when the caller has it."""
    box = _box(removed) if box is None else box
    if box is None:
        return point
    rows, cols = removed.shape
    inside = np.ascontiguousarray(removed[box]).view(np.uint8)
    # Within the region's box, framed by one pixel of outside: a pixel beyond that frame is never nearer than the
    # frame's pixel in the same row or column, so this is the whole image's distance transform, cropped.
    framed = cv2.copyMakeBorder(inside, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    depth = cv2.distanceTransform(framed, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    top, left = box[0].start, box[1].start
    x, y = point[0, 0] * cols - 0.5 - left, point[0, 1] * rows - 0.5 - top
    distance = np.hypot(np.arange(inside.shape[0], dtype=np.float32)[:, None] - np.float32(y),
                        np.arange(inside.shape[1], dtype=np.float32)[None] - np.float32(x))
    gain = np.where(inside > 0, depth - np.float32(FOLLOW_PULL) * distance, -np.inf)
    row, col = np.unravel_index(int(np.argmax(gain)), gain.shape)
    return np.array([[(left + col + 0.5) / cols, (top + row + 0.5) / rows, 1.0]], np.float32)


def logit(mask_prob: np.ndarray) -> np.ndarray:
    """Log-odds of (S,S) float32 probabilities, floored at PROBABILITY_FLOOR from 0 and 1."""
    floored = np.clip(mask_prob, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return cv2.log(floored / (1 - floored))  # OpenCV's SIMD log: a fifth of numpy's time at 480 px


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + cv2.exp(-logits))


class Camera(NamedTuple):
    """One frame's camera: its grey frame for motion estimation and the motion from the previous frame (None: none
    known). Several streams of the same frames (several targets) estimate it once and share it."""

    grey: np.ndarray  # (side, side) uint8
    motion: np.ndarray | None  # 3x3 homography at model resolution, previous frame -> this one


class Fused(NamedTuple):
    """One frame after stream mode: what the found decision and the composite use instead of the graph's outputs."""

    mask: np.ndarray  # (S,S) float32 mask probabilities, for the found decision
    grown: np.ndarray  # (S,S) float32: `mask` grown by the removal margin, for `composite` (margin 0: grown once)
    cleaned: np.ndarray  # (3,S,S) float32 cleaned image


class StreamState:
    """The carried state of one stream (module docstring). Not thread-safe: one caller at a time, like Remover.remove.

    Per frame: `fuse` (before the found decision), `hold` when the fused mask is not found, then `record` (after the
    decision). Only the box around the pixels that will be removed gets fill work; the rest is the camera's.
    """

    def __init__(self, config: StreamConfig = DEFAULT_STREAM):
        self.config = config
        self.cuts = 0  # scene cuts declared since the last reset
        self.last_cut = ""  # why the last scene cut was declared ("" = none since the last reset)
        self.last_step_s = 0.0  # seconds `fuse` + `hold` + `record` took on the last frame
        self.last_camera: Camera | None = None  # the camera `fuse` used on the last frame
        self.reset()

    @property
    def point(self) -> np.ndarray | None:
        """(1,3) the point prompt a click's target takes in the next frame, moved along with its object (step 5);
        None: the click's own (first frame, nothing removed yet since the reset, or not a click)."""
        return self._point

    def follow(self, point: np.ndarray) -> None:
        """After `record` on a frame that removed a click's target (`point`, the prompt it was found with): move
        the point the next frame takes (step 5; with follow_clicks)."""
        start = time.perf_counter()
        if self.config.follow_clicks and self._removed is not None:
            self._point = follow_point(point, *self._removed)
        self.last_step_s += time.perf_counter() - start

    def reset(self) -> None:
        """Forget everything: the next frame is treated as the first (a new command, another camera)."""
        self.cuts, self.last_cut = 0, ""
        self.frames = 0  # frames fused since the reset
        self.held = 0  # frames in a row published from the carried mask (`hold`) up to the last one
        self._grey: np.ndarray | None = None  # (side, side) uint8, previous frame
        self._evidence: np.ndarray | None = None  # (S, S) float32 log-odds of the previous frame, as published
        # what the previous frame filled, at model resolution, inside its removed box: (h, w, 4) float32 (RGB in
        # [0,1], then how much of each pixel is a real fill, 0 where not removed), and the box's top-left corner
        # (x, y); None when it removed nothing
        self._filled: tuple[np.ndarray, tuple[int, int]] | None = None
        self._exclude: np.ndarray | None = None  # (side, side) uint8: the previous removed region, grown
        self._shape: tuple[int, ...] | None = None
        # what the previous frame removed, (S, S) bool, and its bounding box; None when nothing
        self._removed: tuple[np.ndarray, tuple[slice, slice]] | None = None
        self._point: np.ndarray | None = None  # see `point`
        # this frame: graph mask, graph cleaned, mask_threshold, margin, camera motion (None: none carried)
        self._frame: tuple | None = None
        self._pending: tuple | None = None  # this frame's result: fill, removed region, fill weight, log-odds, held

    def _motion(self, grey: np.ndarray, frame_shape: tuple[int, ...], size: int) -> np.ndarray | None:
        """The previous -> this frame homography at model resolution, or None (first frame, or a scene cut)."""
        if self._grey is None or self._shape != frame_shape:
            return None
        motion, why = estimate_motion(self._grey, grey, self._exclude, self.config)
        if motion is None:
            self.cuts += 1
            self.last_cut = why
            return None
        return _scaled(motion, self.config.motion_side / size)

    def _small_grey(self, image: np.ndarray) -> np.ndarray:
        """(3,S,S) float RGB -> (side, side) uint8 grey: OpenCV's RGB->grey weights on the planes (cvtColor wants
        the frame transposed to (S,S,3), a copy that cost more than the rest), then shrunk."""
        side = self.config.motion_side
        grey = cv2.scaleAdd(image[2], 0.114, cv2.addWeighted(image[0], 0.299, image[1], 0.587, 0.0))
        grey = cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA)
        return (grey * 255.0 + 0.5).astype(np.uint8)

    def fuse(self, image: np.ndarray, mask_prob: np.ndarray, cleaned: np.ndarray, mask_threshold: float, margin: int,
             frame_shape: tuple[int, ...], camera: Camera | None = None) -> Fused:
        """This frame's model input (3,S,S) float [0,1], the graph's mask probabilities (S,S) and cleaned image (3,S,S),
        the found rule's mask_threshold, the network's removal margin and the camera frame's shape -> the fused
        frame, to decide and composite with instead of the graph's outputs. `camera`: this frame's, when another
        stream of the same frames has estimated it (its corners avoid that stream's object, not this one's)."""
        start = time.perf_counter()
        cfg, size = self.config, mask_prob.shape[0]
        logits = logit(mask_prob)
        if camera is None:
            grey = self._small_grey(image)
            homography = self._motion(grey, frame_shape, size)
        else:  # a stream that has not seen the previous frame carries nothing, as on its own
            grey, homography = camera.grey, camera.motion if self._grey is not None and self._shape == frame_shape \
                else None
        self.last_camera = Camera(grey, homography)
        fused_mask = mask_prob
        if homography is not None and cfg.strength > 0:
            carried = self._carried(homography, size, outside=0.0)  # outside what the last frame saw: no evidence
            logits = np.clip(logits + carried, -cfg.max_evidence, cfg.max_evidence)
            fused_mask = sigmoid(logits)
        self._grey, self._shape = grey, frame_shape
        self._frame = mask_prob, cleaned, mask_threshold, margin, homography
        fused = self._with_fill(fused_mask, logits, held=False)
        self.frames += 1
        self.last_step_s = time.perf_counter() - start
        return fused

    def hold(self, rule: FoundRule) -> tuple[Fused, float] | None:
        """After `fuse`, when its mask is not found: the mask carried from the previous frame alone (the previous
        published log-odds, moved by the camera and decayed by `strength`) with the previous fill moved along, and
        its score, while the previous frame published a removal, the camera motion is known, `hold_frames` are not
        used up and the carried mask passes `rule` itself; else None. Why: a network that loses the object for a
        frame or two (occlusion, a weak frame) would otherwise put it back in view."""
        start = time.perf_counter()
        cfg = self.config
        mask_prob, homography = self._frame[0], self._frame[4]
        if homography is None or cfg.strength == 0 or self._filled is None or self.held >= cfg.hold_frames:
            return None
        # outside what the last frame saw: not the object (a held mask claims nothing it has not seen)
        logits = np.clip(self._carried(homography, mask_prob.shape[0], outside=-cfg.max_evidence),
                         -cfg.max_evidence, cfg.max_evidence)
        held_mask = sigmoid(logits)
        found, score, _ = found_decision(held_mask, rule)
        if not found:
            return None
        fused = self._with_fill(held_mask, logits, held=True)
        self.last_step_s += time.perf_counter() - start
        return fused, score

    def _carried(self, motion: np.ndarray, size: int, outside: float) -> np.ndarray:
        """The previous frame's log-odds moved by `motion` into this frame and decayed by `strength`; `outside` where
        the previous frame saw nothing."""
        strength = np.float32(self.config.strength)
        return strength * cv2.warpPerspective(self._evidence, motion, (size, size), flags=cv2.INTER_LINEAR,
                                              borderMode=cv2.BORDER_CONSTANT, borderValue=float(outside / strength))

    def _with_fill(self, fused_mask: np.ndarray, logits: np.ndarray, held: bool) -> Fused:
        """The fill for a fused (or held) mask: the graph's, with the previous frame's fill carried in (module
        docstring, step 3); keeps what `record` needs."""
        cfg = self.config
        mask_prob, cleaned, mask_threshold, margin, homography = self._frame
        grown = grow_probabilities(fused_mask, margin)
        removed = grown > mask_threshold
        box = _box(removed)
        # how much of each pixel in the box is a real fill, to carry on (until carried fill adds to it below): where
        # the network's hole m (the soft mask it blended its fill in with) is sure, not where its output is still
        # partly the camera's pixel (m = 0.75 is a quarter object)
        hole = None if box is None else grown_in_box(mask_prob, box, margin)
        filled = None if box is None else np.clip(2.0 * hole - 1.0, 0.0, 1.0)
        fused_clean = cleaned
        if homography is not None and cfg.strength > 0 and box is not None and self._filled is not None:
            rows, cols = box
            planes, (x0, y0) = self._filled
            # the previous fill warped from its box straight into this one: shift, motion, shift
            into_box = _shift(-cols.start, -rows.start) @ homography @ _shift(x0, y0)
            box_size = (cols.stop - cols.start, rows.stop - rows.start)
            previous = cv2.warpPerspective(planes, into_box, box_size, flags=cv2.INTER_LINEAR,
                                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0).transpose(2, 0, 1)
            # How much of the previous fill to take: all of it where the network left the frame (its hole ~ 0),
            # `strength` of it inside the network's hole, scaled by how much of it was a real fill (previous[3]):
            # the camera's pixels that a mask covered without a fill may show an occluder or the object itself.
            take = previous[3] * (1.0 - hole * np.float32(1.0 - cfg.strength))
            fused_clean = cleaned.copy()
            inside = fused_clean[:, rows, cols]
            inside += take[None] * (previous[:3] - inside)
            filled = (1.0 - take) * filled + take * previous[3]
        self._pending = fused_clean, removed, filled, logits, held
        return Fused(fused_mask.astype(np.float32, copy=False), grown, fused_clean)

    def record(self, found: bool) -> None:
        """After the found decision: keep this frame's published log-odds, what it filled (at model resolution, where
        the mask removes when found) and the region where next frame's corners must not be taken."""
        start = time.perf_counter()
        fused_clean, removed, filled, logits, held = self._pending
        self.held = self.held + 1 if held else 0
        side = self.config.motion_side
        self._evidence = logits.astype(np.float32, copy=False)
        box = _box(removed) if found else None
        self._removed = None if box is None else (removed, box)
        if box is not None:
            rows, cols = box
            weight = (filled * removed[box])[None]  # what a next frame may carry: only what was published as fill
            planes = np.concatenate([fused_clean[:, rows, cols], weight]).transpose(1, 2, 0)
            self._filled = np.ascontiguousarray(planes, dtype=np.float32), (cols.start, rows.start)
            small = cv2.resize(removed.view(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
            self._exclude = cv2.dilate(small * np.uint8(255), np.ones((5, 5), np.uint8))
        else:
            self._filled, self._exclude = None, None
        self._pending = self._frame = None
        self.last_step_s += time.perf_counter() - start


STRENGTH_HELP = "stream mode's weight of the evidence and fill carried from the previous frame, 0..1"


def add_stream_arguments(parser, switch: bool = True) -> None:
    """--stream (when `switch`) and --stream-strength (StreamConfig's default), for the tools that run a Remover."""
    if switch:
        parser.add_argument("--stream", action="store_true",
                            help="stream mode: the inputs are consecutive frames of one camera; carry mask evidence "
                                 "and fill from frame to frame (default: every frame alone)")
    parser.add_argument("--stream-strength", type=float, default=DEFAULT_STREAM.strength,
                        help=f"{STRENGTH_HELP} (default {DEFAULT_STREAM.strength})")


def stream_from_args(args) -> StreamConfig | None:
    """The StreamConfig of parsed `add_stream_arguments` options (None = per-frame); ValueError when out of range."""
    return StreamConfig(strength=args.stream_strength) if args.stream else None
