"""Training pairs from a robot's own recordings: `sahm make-data from-bag BAG... --image-topic T --out DIR`.

A person puts an object down in front of the robot's (fixed) camera, waits a few seconds, takes it away; the two
still views either side of the hand's motion differ by that object alone. Per bag (rosbags AnyReader: rosbag2
sqlite3 or mcap, rosbag1; sensor_msgs Image rgb8 / bgr8 / rgba8 / bgra8 / mono8, or CompressedImage jpeg / png):

1. Camera check: the translation between frames a second apart (cv2.phaseCorrelate on small, blurred frames); a
   steady drift (a pan) beyond vibration's scatter is refused, since nothing below compensates for it. (A single bump
   shows up later: the views either side of it differ everywhere, so they give no pair.)
2. Static stretches: a frame is "motion" when it differs from the frame before (both are marked) or, with no motion
   between them, from the frame `motion_lag_s` before (slow movers; only it is marked) by a blob. Differences
   (`_changed`): a per-channel gain fit first (auto-exposure), then a pixel changed when it is out of the range of
   the other image's neighbourhood (vibration) by k robust sigmas (MAD) and a grey-level floor; opened, so specks
   go. Frames within `motion_margin_s` of motion are dropped; runs of at least `min_static_s` are the static
   stretches ("views"), each summarised by the median of up to `median_frames` of its frames, each gain-matched to
   the stretch's middle one first.
3. Pairs: consecutive views of a bag whose difference is one connected blob of plausible size
   (`min_object_area`..`max_object_area`), with the rest of the frame agreeing (`max_stray_area`) and enough contrast
   to trust its outline (`min_contrast`). Small holes are filled (`max_hole_share`), large ones are background seen
   through the object, unless the view there differs from the empty one (`changed_hole_share`: a patch of the
   object's pattern near the background's colour, which step 5 does not grow into).
4. Which view holds the object: the one with the stronger edge along the blob's outline. The object's own border
   runs all along it in the view that holds it; in the empty view the background continues across it and only its
   texture edges cross. So the rule needs no timeline and serves placements (the later view holds it) and removals
   (the earlier one) alike; the utterance, when there is one, only names the object.
5. The mask is decided pixel by pixel against the known background (`_matte`): the holding view is H = alpha F +
   (1 - alpha) B with B the empty view (gain-matched) at the same pixel and F the object's colour, taken from the
   nearest pixel already decided to be object; a pixel is object when alpha >= 0.5 (H nearer F than B), grown out
   from the blob's core over pixels that differ from B at all (a weaker test than the blob's). So the outline sits
   at half the object's own contrast wherever it is: a bright object's rim does not widen it, and parts nearly the
   colour of what they cover, which the blob's threshold cuts off, come back. (cv2.grabCut in a band around the blob
   was used first: it models colours of the holding view alone, so it could not tell an object from a background of
   its colour, and it moved a high-contrast outline outward.) A pair whose object matches the background along over
   `max_hidden_outline` of its outline (under `outline_contrast` grey levels apart) is left out: its mask there
   would be a guess. Changed pixels next to the mask that it leaves out are recorded per object (`unexplained`, a
   share of its area: a faint part of another colour, a shadow, or a lighting change the gain does not model); not a
   reason to drop, since lighting drift alone reaches 100 % on good pairs.
6. Labels: with `--label-topic`, the String nearest the middle of the motion between the two views (within
   `label_slack_s` of it), openings like "this is" / "here is" / "that's" stripped. Objects are followed from view to
   view (`_share_labels`), so a removal takes its placement's label. DIR/labels.yaml lists every object (id, bag,
   time, thumbnail, label; null where nothing named it) for a person to fill in or correct; `--labels FILE` applies
   it on a rerun (it wins over speech).
7. Splits per group of views linked by pairs (a view is never the image in one split and a target in another):
   groups ranked by a hash of their first view's pixels, the first round(n x test) test, the next round(n x val)
   val, the rest train (so a single recording is all train).

Output (docs/architecture.md, "Data on disk"): the trainer's refs.jsonl + images/ targets/ masks/ (one row per
labelled object: image = the holding view, target = the empty view gain-matched to it within the mask grown by
`target_band_px`, the image's pixels elsewhere), views.jsonl + views/, objects.jsonl + objects/, thumbs/, labels.yaml.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sahm_core.data.layout import (
    OBJECTS_FILE,
    PNG_FAST,
    VIEWS_FILE,
    make_folders,
    read_jsonl,
    write_example,
    write_jsonl,
    write_refs,
)

LABEL_OPENINGS = ("this is", "this one is", "here is", "here's", "that's", "that is", "it's", "it is", "look",
                  "and", "ok", "okay", "so", "now")  # stripped from the front of an utterance, repeatedly
NO_CHANGE = "no change"
LABELS_FILE = "labels.yaml"
OUTPUT_FOLDERS = ("images", "targets", "masks", "views", "objects", "thumbs")


class FromBagError(ValueError):
    """Input that gives no dataset, or a wrong one: the message says what was found."""


@dataclass(frozen=True)
class ExtractConfig:
    """Thresholds of the extraction; areas are shares of the frame."""

    motion_side: int = 128  # frames are compared for motion at this longest side (INTER_AREA), then blurred
    motion_blur: float = 1.0  # Gaussian sigma at that scale
    threshold_k: float = 6.0  # a pixel changed: residual over k robust sigmas (MAD, per channel) ...
    motion_floor: float = 12.0  # ... and over this many grey levels (motion, small blurred frames)
    change_floor: float = 16.0  # ... or this many (pairs of view medians, full resolution)
    motion_reach: int = 2  # shifts up to this many pixels (small frames) are no motion: vibration
    change_reach: int = 1  # and between two views (full resolution)
    motion_min_area: float = 0.002  # changed share (after a 3x3 opening) that makes a frame motion
    motion_lag_s: float = 0.5  # each frame is also compared with the one this long before
    motion_margin_s: float = 0.3  # frames this close to motion are dropped
    min_static_s: float = 1.0  # shortest static stretch kept
    median_frames: int = 15  # frames per stretch (evenly spaced) in its median
    max_camera_shift_px: float = 3.0  # camera drift over the recording (full-resolution pixels) that counts as moving
    camera_drift_z: float = 5.0  # ... when the drift per frame is this many standard errors away from none
    camera_lag_s: float = 1.0  # the camera's drift is measured between frames this far apart
    min_object_area: float = 0.001
    max_object_area: float = 0.25
    max_stray_area: float = 0.005  # changed share outside the object's blob that still counts as "the rest agrees"
    min_contrast: float = 20.0  # grey levels
    max_hole_share: float = 0.05  # holes in an object's mask up to this share of its area are filled
    changed_hole_share: float = 0.5  # ... and larger ones where this share of the pixels differ from the empty view
    matte_k: float = 4.0  # a pixel can be object: residual over k robust sigmas ...
    matte_floor: float = 6.0  # ... and this many grey levels (views' medians, gain-matched)
    matte_core_px: int = 2  # the blob eroded by this much is object for sure
    matte_steps: int = 40  # growth steps from it (about 1.5 px each), at most
    outline_contrast: float = 12.0  # grey levels between the object and the background that make its outline visible
    max_hidden_outline: float = 0.25  # share of the outline that may be invisible (object matching the background)
    target_band_px: int = 4
    label_slack_s: float = 1.0
    val_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self):
        if not (0 <= self.val_fraction and 0 <= self.test_fraction and self.val_fraction + self.test_fraction < 1):
            raise ValueError(f"val/test fractions must be >= 0 and sum below 1, got {self.val_fraction}, "
                             f"{self.test_fraction}")
        if self.median_frames < 1 or self.min_static_s <= 0 or self.motion_side < 16:
            raise ValueError("median_frames must be >= 1, min_static_s > 0 and motion_side >= 16")


@dataclass
class View:
    id: str
    bag: str
    start_ns: int
    end_ns: int
    frames: int
    image: np.ndarray  # (H, W, 3) uint8 RGB median
    split: str = "train"


@dataclass
class Pair:
    """Two consecutive views of a bag that differ by one object."""

    holder: View
    empty: View
    mask: np.ndarray  # (H, W) bool, in the holder
    gain: np.ndarray  # (3,) holder ~ gain * empty, per channel
    motion_ns: int  # middle of the motion between the two views
    contrast: float  # median difference (grey levels, largest channel) between the object and what it covers
    blob_iou: float  # the mask's IoU with the difference's blob it grew from
    hidden_outline: float  # share of the outline where the object matches the background
    unexplained: float  # changed pixels next to the mask left out of it, share of its area
    id: str = ""
    label: str | None = None
    label_source: str | None = None  # "speech" | "same object" | "labels.yaml"
    split: str = "train"


@dataclass
class BagSummary:
    bag: str
    frames: int = 0
    motion_frames: int = 0  # dropped: in or near motion
    short_frames: int = 0  # dropped: still, but in runs shorter than min_static_s
    views: int = 0
    pairs: int = 0
    rejected: list[str] = field(default_factory=list)  # why consecutive views gave no pair


@dataclass
class Summary:
    bags: list[BagSummary]
    labelled: int
    unlabelled: int
    rows: int
    out: Path
    labels_file: Path

    def __str__(self) -> str:
        stretches = sum(b.views for b in self.bags)
        lines = [f"{len(self.bags)} bag(s), {sum(b.frames for b in self.bags)} frames: {stretches} static stretches, "
                 f"{sum(b.motion_frames for b in self.bags)} frames dropped for motion "
                 f"(+{sum(b.short_frames for b in self.bags)} in still runs too short), "
                 f"{sum(b.pairs for b in self.bags)} pairs, {self.labelled} labelled / {self.unlabelled} unlabelled "
                 f"objects -> {self.rows} training rows in {self.out}"]
        for b in self.bags:
            lines.append(f"  {b.bag}: {b.frames} frames, {b.views} stretches, {b.pairs} pairs"
                         + (f"; no pair: {'; '.join(b.rejected)}" if b.rejected else ""))
        if self.unlabelled:
            lines.append(f"  {self.unlabelled} object(s) have no label and give no training rows: fill in "
                         f"{self.labels_file} and rerun with --labels {self.labels_file}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- reading a bag


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def _open(bag: str):
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.rosbag2 import ReaderError

    try:
        reader = AnyReader([Path(bag)], default_typestore=_typestore())
        reader.open()
    except (AnyReaderError, ReaderError, OSError) as e:
        raise FromBagError(f"cannot read bag {bag}: {e}") from None
    return reader


def _connection(reader, bag: str, topic: str, types: tuple[str, ...], role: str):
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        found = ", ".join(sorted(f"{c.topic} [{c.msgtype}]" for c in reader.connections)) or "no topics"
        raise FromBagError(f"{bag}: {role} topic {topic!r} is not in the bag; it has {found}")
    wrong = sorted({c.msgtype for c in conns} - set(types))
    if wrong:
        raise FromBagError(f"{bag}: {role} topic {topic!r} carries {', '.join(wrong)}; expected {' or '.join(types)}")
    return conns


IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
STRING_TYPE = "std_msgs/msg/String"


def _frames(reader, conns, bag: str):
    """(receive time ns, (H, W, 3) uint8 RGB) in time order."""
    from ros_ror.image_conversions import ImageError, decode_compressed, decode_image

    shape = None
    for conn, t, raw in reader.messages(connections=conns):
        msg = reader.deserialize(raw, conn.msgtype)
        try:
            if conn.msgtype.endswith("CompressedImage"):
                rgb = decode_compressed(msg.format, msg.data).rgb
            else:
                rgb = decode_image(msg.height, msg.width, msg.encoding, msg.step, msg.data).rgb
        except ImageError as e:
            raise FromBagError(f"{bag}: {conn.topic} frame at {t} ns: {e}") from None
        if shape is None:
            shape = rgb.shape
        elif rgb.shape != shape:
            raise FromBagError(f"{bag}: {conn.topic} changes frame size from {shape[1]}x{shape[0]} to "
                               f"{rgb.shape[1]}x{rgb.shape[0]} at {t} ns; one camera setting per bag")
        yield t, rgb


def _utterances(reader, conns) -> list[tuple[int, str]]:
    return [(t, reader.deserialize(raw, conn.msgtype).data) for conn, t, raw in reader.messages(connections=conns)]


# ---------------------------------------------------------------------------------------------- pixels


SATURATED = 254.0  # a value this high may have been clipped
STATISTICS_PIXELS = 4096  # gains and noise levels are medians over at most about this many pixels (evenly strided)


def _sample(array: np.ndarray) -> np.ndarray:
    """(N, 3) pixels of an (H, W, 3) array, every k-th so that about STATISTICS_PIXELS remain."""
    flat = array.reshape(-1, 3)
    return flat[::max(1, flat.shape[0] // STATISTICS_PIXELS)]


def _gain(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """Per-channel gain g with a ~ g * b: the median ratio over pixels (within `where`) saturated in neither."""
    if where is not None:
        a, b = a[where], b[where]
    a, b = _sample(a), _sample(b)
    unclipped = (np.maximum(a, b) < SATURATED).all(axis=1)
    if unclipped.sum() >= 100:
        a, b = a[unclipped], b[unclipped]
    return np.median(a / np.maximum(b, 8.0), axis=0).astype(np.float32)  # dark pixels say little about a gain


def _changed(a: np.ndarray, b: np.ndarray, k: float, floor: float, reach: int,
             refits: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels where a and gain * b (float (H, W, 3) images) differ, and the gain a ~ gain * b.

    The gain is fitted on all pixels, then `refits` times again on those that agree. A pixel changed when it lies
    outside the range of the other image's neighbourhood (`reach` pixels each way), either way round, by more than k
    robust sigmas of the plain residual (MAD, per channel) and `floor`: a shift of up to `reach` (vibration, an edge
    between two medians) changes nothing, while an object changes its inside in whichever image holds it, so the
    outline is the same in both orders. A saturated value only says the light was at least that much, so it bounds
    from below only (a highlight that auto-exposure pushed over the top is no change). The frame's border
    (2 x reach) never counts: an edge that vibration moves across it has no neighbourhood there to hide in.
    """
    kernel = np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)

    def at_most(x: np.ndarray) -> np.ndarray:  # upper bounds: none where saturated
        return np.where(x >= SATURATED, np.inf, x)

    low_a, high_a = cv2.erode(a, kernel), at_most(cv2.dilate(a, kernel))
    low_b, high_b = cv2.erode(b, kernel), at_most(cv2.dilate(b, kernel))
    top_a, top_b = at_most(a), at_most(b)

    def changed_with(gain: np.ndarray) -> np.ndarray:
        residual = _sample(a - gain * b)
        sigma = 1.4826 * np.median(np.abs(residual - np.median(residual, axis=0)), axis=0)
        limit = np.maximum(k * sigma, floor)
        outside = np.maximum.reduce([a - gain * high_b, gain * low_b - top_a, gain * b - high_a, low_a - gain * top_b])
        changed = (outside > limit).any(axis=2)
        edge = 2 * reach
        changed[:edge], changed[-edge:], changed[:, :edge], changed[:, -edge:] = False, False, False, False
        return changed

    gain = _gain(a, b)
    changed = changed_with(gain)
    for _ in range(refits):
        gain = _gain(a, b, ~changed)
        changed = changed_with(gain)
    return changed, gain


def _open_mask(mask: np.ndarray, side: int = 3) -> np.ndarray:
    return cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((side, side), np.uint8)).astype(bool)


def _small(rgb: np.ndarray, cfg: ExtractConfig) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = cfg.motion_side / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small.astype(np.float32), (0, 0), cfg.motion_blur)


def _fill_holes(mask: np.ndarray, max_share: float, changed: np.ndarray | None = None,
                min_changed: float = 1.0) -> np.ndarray:
    """The mask with its holes filled: those up to `max_share` of the mask's area, and those where at least
    `min_changed` of the pixels are `changed` (differ from the empty view). A small hole is where the object happens
    to match what it covers; a large one is background seen through the object (a ring), unchanged, unless it did
    change: then it is a part of the object (a patch of its pattern) too near the background's colour to be grown
    into."""
    filled = np.zeros(mask.shape, np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(filled, contours, -1, 1, cv2.FILLED)
    holes = filled.astype(bool) & ~mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(holes.astype(np.uint8), connectivity=4)
    share = np.zeros(count) if changed is None else \
        np.bincount(labels[changed], minlength=count) / np.maximum(stats[:, cv2.CC_STAT_AREA], 1)
    kept = [k for k in range(1, count)
            if stats[k, cv2.CC_STAT_AREA] <= max_share * mask.sum() or share[k] >= min_changed]
    return mask | np.isin(labels, kept)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros(mask.shape, bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _grow(mask: np.ndarray, radius: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), _disc(radius)).astype(bool)


def _shrink(mask: np.ndarray, radius: int) -> np.ndarray:
    return cv2.erode(mask.astype(np.uint8), _disc(radius)).astype(bool)


# ---------------------------------------------------------------------------------------------- one bag


def _camera_check(bag: str, small: list[np.ndarray], moving: np.ndarray, times: np.ndarray, scale: float,
                  cfg: ExtractConfig) -> None:
    """Refuse a camera that moves steadily (module docstring, step 1).

    The camera's translation over `camera_lag_s` comes from cv2.phaseCorrelate (Hanning window) between frames that
    far apart, on the frames projected on the first one's main colour axis (not grey: a hue pattern can have flat
    luma). Frames with motion in the view (`_motion`) are left out, unless most are (a pan changes everything):
    a hand crossing biases the estimate. Vibration gives shifts that scatter around zero; a pan, shifts that all
    lean one way and grow with the lag. So the camera moves when the median shift stands out of its scatter (over
    `camera_drift_z` standard errors, MAD-based) and carries the view over `max_camera_shift_px` over the recording.
    (ECC was tried first: on smooth or periodic backgrounds it returned small biased steps for a still camera.)
    """
    n = len(small)
    period = float(np.median(np.diff(times))) if n > 1 else 1.0
    lag = min(max(1, round(cfg.camera_lag_s * 1e9 / period)), max(1, n // 3)) if period > 0 else 1
    pixels = small[0].reshape(-1, 3)
    _, _, axes = np.linalg.svd(pixels - pixels.mean(axis=0), full_matrices=False)
    grey = [np.ascontiguousarray(frame @ axes[0]) for frame in small]
    window = cv2.createHanningWindow(grey[0].shape[::-1], cv2.CV_32F)
    everything = moving.mean() > 0.5
    shifts = np.array([cv2.phaseCorrelate(grey[t - lag], grey[t], window)[0] for t in range(lag, n)
                       if everything or not (moving[t] or moving[t - lag])]) * scale
    if len(shifts) < 2:
        return
    median = np.median(shifts, axis=0)
    spread = 1.4826 * np.median(np.abs(shifts - median), axis=0) * 1.2533 / np.sqrt(len(shifts))  # median's std error
    z = np.abs(median) / np.maximum(spread, 1e-3)
    per_frame = median / lag
    travel = np.abs(per_frame) * (n - 1)
    if ((z > cfg.camera_drift_z) & (travel > cfg.max_camera_shift_px)).any():
        seconds = (times[-1] - times[0]) / 1e9
        raise FromBagError(f"{bag}: the camera moves: a steady drift of {np.hypot(*per_frame):.2f} px per frame "
                           f"({np.hypot(*travel) / max(seconds, 1e-9):.1f} px/s, about {np.hypot(*travel):.0f} px "
                           f"over {seconds:.1f} s); from-bag needs a fixed camera (record with the robot standing "
                           "still)")


def _motion(small: list[np.ndarray], times: np.ndarray, cfg: ExtractConfig) -> np.ndarray:
    """Per frame: in motion (module docstring, step 2), before the margin."""
    n = len(small)
    min_area = cfg.motion_min_area * small[0].shape[0] * small[0].shape[1]
    moving = np.zeros(n, bool)
    period = float(np.median(np.diff(times))) if n > 1 else 1.0
    lag = max(2, round(cfg.motion_lag_s * 1e9 / period)) if period > 0 else 2

    def differs(a: np.ndarray, b: np.ndarray) -> bool:
        changed, _ = _changed(a, b, cfg.threshold_k, cfg.motion_floor, cfg.motion_reach, 0)
        return _open_mask(changed).sum() > min_area

    for t in range(1, n):
        if differs(small[t], small[t - 1]):
            moving[t - 1] = moving[t] = True
        elif t >= lag and not moving[t - lag:t + 1].any():
            moving[t] = differs(small[t], small[t - lag])  # a slow mover: a lag apart, still frames in between
    return moving


def _stretches(times: np.ndarray, moving: np.ndarray, cfg: ExtractConfig) -> tuple[list[tuple[int, int]], int, int]:
    """Static runs [first, last] (frame indices) of at least min_static_s; frames dropped for motion, for shortness."""
    margin = round(cfg.motion_margin_s * 1e9)
    motion_times = times[moving]
    keep = np.ones(len(times), bool)
    if motion_times.size:
        at = np.searchsorted(motion_times, times)
        before = np.abs(times - motion_times[np.clip(at - 1, 0, motion_times.size - 1)])
        after = np.abs(motion_times[np.clip(at, 0, motion_times.size - 1)] - times)
        keep = np.minimum(before, after) > margin
    period = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    runs, start = [], None
    for i in range(len(times) + 1):
        broken = i == len(times) or not keep[i] or (start is not None and times[i] - times[i - 1] > 3 * period)
        if broken and start is not None:
            runs.append((start, i - 1))
            start = None
        if i < len(times) and keep[i] and start is None:
            start = i
    long = [(a, b) for a, b in runs if (times[b] - times[a]) + period >= cfg.min_static_s * 1e9]
    short = sum(b - a + 1 for a, b in runs) - sum(b - a + 1 for a, b in long)
    return long, int((~keep).sum()), short


def _medians(reader, conns, bag: str, runs: list[tuple[int, int]], cfg: ExtractConfig) -> list[np.ndarray]:
    """Second pass over the bag: each run's median frame, its frames gain-matched to its middle one."""
    wanted: dict[int, int] = {}  # frame index -> run
    for r, (a, b) in enumerate(runs):
        for i in np.unique(np.linspace(a, b, min(cfg.median_frames, b - a + 1)).round().astype(int)):
            wanted[int(i)] = r
    picked: list[list[np.ndarray]] = [[] for _ in runs]
    for i, (_, rgb) in enumerate(_frames(reader, conns, bag)):
        if i in wanted:
            picked[wanted[i]].append(rgb.astype(np.float32))
    out = []
    for frames in picked:
        middle = frames[len(frames) // 2]
        matched = [f * _gain(middle, f) for f in frames]
        out.append(np.clip(np.median(np.stack(matched), axis=0) + 0.5, 0, 255).astype(np.uint8))
    return out


def _outline_edge(view: np.ndarray, mask: np.ndarray) -> float:
    """Mean gradient magnitude (largest over the channels) on the mask's outline, one pixel either side."""
    gx = cv2.Sobel(view, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(view, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = np.sqrt(gx * gx + gy * gy).max(axis=2)
    outline = _grow(mask, 1) & ~_shrink(mask, 1)
    return float(magnitude[outline].mean())


def _matte(holder: np.ndarray, empty: np.ndarray, blob: np.ndarray,
           cfg: ExtractConfig) -> tuple[np.ndarray, float]:
    """The object's mask decided pixel by pixel against the known background (module docstring, step 5).

    `empty` is the empty view gain-matched to `holder` (float). A pixel that shows the object's colour F over its
    alpha and the background B (the empty view, the same pixel) over the rest is H = alpha F + (1 - alpha) B, and
    belongs to the mask when alpha >= 0.5, i.e. when H is nearer F than B. F comes from the nearest pixel already
    decided to be object (the blob eroded by `matte_core_px` to start with), so textured objects use their own
    colour near each spot; decided pixels feed the next step, `matte_steps` steps of up to 1.5 px each. A pixel is only
    a candidate when it differs from the empty view (a weaker test than the blob's: `matte_k` sigmas, `matte_floor`)
    and is connected to the blob through such pixels: where the object matches what it covers, the strict threshold
    cuts into it and this fills it back; where it is bright against the background, its antialiased rim (alpha under
    0.5) differs strongly and would otherwise widen the mask.

    Also returns the changed pixels connected to the blob that the mask leaves out (beyond its rim, 1 px), as a share
    of its area: a change the object does not explain (another colour of it that the nearest-colour test rejects, a
    shadow, lighting drift).
    """
    weak, _ = _changed(holder, empty, cfg.matte_k, cfg.matte_floor, cfg.change_reach, 1)
    _, labels = cv2.connectedComponents((weak | blob).astype(np.uint8), connectivity=8)
    candidates = np.isin(labels, np.unique(labels[blob])) & weak
    decided = _shrink(blob, cfg.matte_core_px)
    if not decided.any():
        decided = blob.copy()
    to_background = ((holder - empty) ** 2).sum(axis=2)
    for _ in range(cfg.matte_steps):
        colour, distance = _nearest_colour(holder, decided)
        nearer_object = ((holder - colour) ** 2).sum(axis=2) < to_background
        grown = candidates & nearer_object & (distance <= 1.5) & ~decided
        if not grown.any():
            break
        decided |= grown
    mask = _fill_holes(_largest_component(decided), cfg.max_hole_share, weak, cfg.changed_hole_share)
    return mask, float((candidates & ~_grow(mask, 1)).sum() / max(1, mask.sum()))


def _nearest_colour(image: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the colour of `image` at the nearest pixel of `source` (bool, not empty) and the distance to it."""
    distance, nearest = cv2.distanceTransformWithLabels((~source).astype(np.uint8), cv2.DIST_L2, 5,
                                                        labelType=cv2.DIST_LABEL_PIXEL)
    ys, xs = np.nonzero(source)  # DIST_LABEL_PIXEL numbers the zero pixels in row-major order from 1
    return image[ys[nearest - 1], xs[nearest - 1]], distance


def _outline_contrast(holder: np.ndarray, empty: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per outline pixel of `mask`, the largest-channel difference between the object's colour there (the nearest
    pixel 2 px inside) and the background it covers (`empty`, gain-matched)."""
    inside = _shrink(mask, 2)
    colour, _ = _nearest_colour(holder, inside if inside.any() else mask)
    outline = mask & ~_shrink(mask, 1)
    return np.abs(colour - empty).max(axis=2)[outline]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def _pair(a: View, b: View, cfg: ExtractConfig) -> Pair | str:
    """The pair of consecutive views a (earlier) and b, or why they are none."""
    fa, fb = a.image.astype(np.float32), b.image.astype(np.float32)
    changed, gain = _changed(fb, fa, cfg.threshold_k, cfg.change_floor, cfg.change_reach, 2)
    area = changed.size
    cleaned = cv2.morphologyEx(_open_mask(changed).astype(np.uint8), cv2.MORPH_CLOSE, _disc(2)).astype(bool)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(cleaned.astype(np.uint8), connectivity=8)
    blobs = [k for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] >= cfg.min_object_area * area]
    where = f"{a.id} -> {b.id}"
    if not blobs:
        return f"{where}: {NO_CHANGE}"
    if len(blobs) > 1:
        sizes = ", ".join(f"{100 * stats[k, cv2.CC_STAT_AREA] / area:.1f}%" for k in blobs)
        return f"{where}: {len(blobs)} changed regions ({sizes} of the frame), not one object"
    blob = _fill_holes(labels == blobs[0], cfg.max_hole_share)
    if blob.sum() > cfg.max_object_area * area:
        return f"{where}: the change covers {100 * blob.sum() / area:.0f}% of the frame, more than an object"
    stray = (changed & ~_grow(blob, 3)).sum() / area
    if stray > cfg.max_stray_area:
        return f"{where}: {100 * stray:.1f}% of the frame changed outside the object, the rest of the view disagrees"
    contrast = float(np.median(np.abs(fb - gain * fa).max(axis=2)[blob]))
    if contrast < cfg.min_contrast:
        return (f"{where}: the object differs from what it covers by {contrast:.0f} grey levels (median), under "
                f"{cfg.min_contrast}: too faint to trust its outline")
    # gain maps a onto b; the holder's view keeps its own exposure and the empty one is matched to it
    if _outline_edge(fb, blob) >= _outline_edge(fa * gain, blob):
        holder, empty, to_holder = b, a, gain
    else:
        holder, empty, to_holder = a, b, 1.0 / gain
    image, background = holder.image.astype(np.float32), empty.image.astype(np.float32) * to_holder
    mask, unexplained = _matte(image, background, blob, cfg)
    hidden = float((_outline_contrast(image, background, mask) < cfg.outline_contrast).mean())
    if hidden > cfg.max_hidden_outline:
        return (f"{where}: the object matches the background along {100 * hidden:.0f}% of its outline (under "
                f"{cfg.outline_contrast:.0f} grey levels apart), so its mask there is a guess: pair left out")
    return Pair(holder, empty, mask, to_holder, (a.end_ns + b.start_ns) // 2, contrast, _iou(mask, blob), hidden,
                unexplained)


@dataclass
class _BagResult:
    views: list[View]
    pairs: list[Pair]
    steps: list[Pair | str]  # between each two consecutive views: their pair, or why there is none
    utterances: list[tuple[int, str]]
    first_ns: int  # the bag's first frame
    summary: BagSummary


def _extract_bag(bag: str, image_topic: str, label_topic: str | None, cfg: ExtractConfig,
                 first_view: int) -> _BagResult:
    summary = BagSummary(bag)
    reader = _open(bag)
    try:
        conns = _connection(reader, bag, image_topic, IMAGE_TYPES, "image")
        utterances = []
        if label_topic is not None:
            utterances = _utterances(reader, _connection(reader, bag, label_topic, (STRING_TYPE,), "label"))
        times, small = [], []
        for t, rgb in _frames(reader, conns, bag):
            times.append(t)
            small.append(_small(rgb, cfg))
            full_side = max(rgb.shape[:2])
        summary.frames = len(times)
        if len(times) < 2:
            raise FromBagError(f"{bag}: {image_topic} has {len(times)} frame(s); no static stretches to find")
        times = np.array(times, np.int64)
        moving = _motion(small, times, cfg)
        _camera_check(bag, small, moving, times, full_side / cfg.motion_side, cfg)
        runs, summary.motion_frames, summary.short_frames = _stretches(times, moving, cfg)
        if not runs:
            seconds = (times[-1] - times[0]) / 1e9
            raise FromBagError(f"{bag}: no static stretches: {summary.frames} frames over {seconds:.1f} s, "
                               f"{moving.sum()} with motion and {summary.short_frames} still ones in runs under "
                               f"{cfg.min_static_s} s (ExtractConfig.min_static_s)")
        medians = _medians(reader, conns, bag, runs, cfg)
    finally:
        reader.close()
    views = [View(f"v{first_view + i:03d}", bag, int(times[a]), int(times[b]), b - a + 1, median)
             for i, ((a, b), median) in enumerate(zip(runs, medians))]
    summary.views = len(views)
    steps = [_pair(a, b, cfg) for a, b in zip(views, views[1:])]
    pairs = [step for step in steps if isinstance(step, Pair)]
    summary.rejected = [step for step in steps if isinstance(step, str)]
    summary.pairs = len(pairs)
    return _BagResult(views, pairs, steps, utterances, int(times[0]), summary)


# ---------------------------------------------------------------------------------------------- labels


def label_from_utterance(text: str) -> str | None:
    """"This is the red mug." -> "the red mug": lower case, punctuation dropped, LABEL_OPENINGS stripped from the
    front; None when nothing is left."""
    words = re.sub(r"[^\w' -]+", " ", text.lower().replace("’", "'")).split()
    stripped = True
    while stripped and words:
        stripped = False
        for opening in sorted(LABEL_OPENINGS, key=len, reverse=True):
            n = len(opening.split())
            if words[:n] == opening.split():
                words, stripped = words[n:], True
                break
    return " ".join(words) or None


def _speech_labels(result: _BagResult, cfg: ExtractConfig) -> None:
    slack = round(cfg.label_slack_s * 1e9)
    for pair in result.pairs:
        first, second = sorted((pair.holder, pair.empty), key=lambda v: v.start_ns)
        near = [(abs(t - pair.motion_ns), text) for t, text in result.utterances
                if first.end_ns - slack <= t <= second.start_ns + slack]
        for _, text in sorted(near):
            label = label_from_utterance(text)
            if label:
                pair.label, pair.label_source = label, "speech"
                break


def _share_labels(result: _BagResult) -> None:
    """Follow each object through the bag's views (module docstring, step 6): a placement starts a track, the removal
    of an object at the same spot (mask IoU >= 0.5) ends it, "no change" keeps every track, and any other change
    (views that gave no pair) ends them all, since what is where is no longer known. A track's speech label goes to
    every pair in it."""
    tracks: list[list[Pair]] = []
    open_tracks: list[list[Pair]] = []
    for step in result.steps:
        if isinstance(step, str):
            if not step.endswith(NO_CHANGE):
                open_tracks = []
            continue
        same_spot = [t for t in open_tracks if _iou(t[-1].mask, step.mask) >= 0.5]
        for track in same_spot:
            open_tracks.remove(track)
        if step.holder.start_ns > step.empty.start_ns:  # placed: a new object from here on
            tracks.append([step])
            open_tracks.append(tracks[-1])
        elif len(same_spot) == 1:  # removed: the object placed there before
            same_spot[0].append(step)
        else:
            tracks.append([step])
    for track in tracks:
        label = next((p.label for p in track if p.label_source == "speech"), None)
        for pair in track:
            if pair.label is None and label is not None:
                pair.label, pair.label_source = label, "same object"


def _read_labels(path: Path) -> dict[str, dict]:
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"labels file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise FromBagError(f"{path}: not valid YAML ({e})") from None
    entries = data.get("objects") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise FromBagError(f"{path}: expected a mapping with an 'objects' list (as from-bag writes it)")
    out = {}
    for n, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("id"), str)):
            raise FromBagError(f"{path}: objects[{n}] has no string 'id'")
        label = entry.get("label")
        if label is not None and not (isinstance(label, str) and label.strip()):
            raise FromBagError(f"{path}: {entry['id']}: label must be a phrase (\"the red mug\") or null, "
                               f"got {label!r}")
        out[entry["id"]] = entry
    return out


def _apply_labels(pairs: list[Pair], entries: dict[str, dict], path: Path) -> None:
    for pair in pairs:
        entry = entries.get(pair.id)
        if entry is None:
            raise FromBagError(f"{path} has no entry for {pair.id} ({pair.holder.bag} at {pair.motion_ns} ns): it was "
                               "written for another extraction (other bags or settings); extract again without "
                               "--labels and fill in the new file")
        same_bag = Path(str(entry.get("bag"))).resolve() == Path(pair.holder.bag).resolve()
        if not same_bag or entry.get("time_ns") != pair.motion_ns:
            raise FromBagError(f"{path}: {pair.id} is {entry.get('bag')} at {entry.get('time_ns')} ns there but "
                               f"{pair.holder.bag} at {pair.motion_ns} ns here: written for another extraction")
        if entry.get("label") is not None:
            pair.label, pair.label_source = entry["label"].strip(), LABELS_FILE


def _write_labels(path: Path, pairs: list[Pair], first_ns: dict[str, int]) -> None:
    import yaml

    entries = [{"id": p.id, "bag": p.holder.bag, "time_ns": p.motion_ns,
                "time_s": round((p.motion_ns - first_ns[p.holder.bag]) / 1e9, 2), "thumbnail": f"thumbs/{p.id}.png",
                "label": p.label} for p in pairs]
    header = ("# from-bag: one entry per extracted object. Write a noun phrase under label (\"the red mug\") where it\n"
              "# says null (look at the thumbnail), then rerun from-bag with --labels this file. Time is seconds from\n"
              "# the bag's first frame. Leave id, bag and time_ns as they are.\n")
    path.write_text(header + yaml.safe_dump({"objects": entries}, sort_keys=False, allow_unicode=True),
                    encoding="utf-8")


# ---------------------------------------------------------------------------------------------- output


def _assign_splits(views: list[View], pairs: list[Pair], cfg: ExtractConfig) -> None:
    parent = {v.id: v.id for v in views}

    def root(v: str) -> str:
        while parent[v] != v:
            v = parent[v]
        return v

    for pair in pairs:
        parent[root(pair.holder.id)] = root(pair.empty.id)
    groups: dict[str, list[View]] = {}
    for v in views:
        groups.setdefault(root(v.id), []).append(v)

    def rank(members: list[View]) -> str:  # the pixels, not the path: the same recording splits the same anywhere
        return hashlib.sha256(min(members, key=lambda v: v.start_ns).image.tobytes()).hexdigest()

    ordered = sorted(groups.values(), key=rank)
    n_test, n_val = round(len(ordered) * cfg.test_fraction), round(len(ordered) * cfg.val_fraction)
    for i, members in enumerate(ordered):
        split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
        for v in members:
            v.split = split
    for pair in pairs:
        pair.split = pair.holder.split


def _write_png(path: Path, array: np.ndarray) -> str:
    pixels = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    if not cv2.imwrite(str(path), pixels, PNG_FAST):
        raise OSError(f"could not write {path}")
    return path.as_posix()


def _thumbnail(view: np.ndarray, mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    reach = max(np.ptp(ys), np.ptp(xs)) // 2 + 8
    top, bottom = max(0, ys.min() - reach), min(h, ys.max() + reach + 1)
    left, right = max(0, xs.min() - reach), min(w, xs.max() + reach + 1)
    crop = np.ascontiguousarray(view[top:bottom, left:right])
    contours, _ = cv2.findContours(mask[top:bottom, left:right].astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    scale = max(1, round(160 / max(crop.shape[:2])))
    crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    cv2.drawContours(crop, [c * scale for c in contours], -1, (255, 0, 255), 1)
    return crop


def extract(bags: list[str], image_topic: str, out: str | Path, label_topic: str | None = None,
            labels: str | Path | None = None, cfg: ExtractConfig = ExtractConfig()) -> Summary:
    """Extract every bag and write the dataset (module docstring); FromBagError when the input gives none."""
    if not bags:
        raise FromBagError("no bags given")
    entries = _read_labels(Path(labels)) if labels is not None else None  # before anything under out is replaced
    results = []
    for bag in bags:
        results.append(_extract_bag(str(bag), image_topic, label_topic, cfg,
                                    1 + sum(len(r.views) for r in results)))
    views = [v for r in results for v in r.views]
    pairs = [p for r in results for p in r.pairs]
    if not pairs:
        found = "; ".join(f"{r.summary.bag}: {r.summary.views} static stretches"
                          + (f" ({'; '.join(r.summary.rejected)})" if r.summary.rejected else "") for r in results)
        raise FromBagError(f"no pairs: no two consecutive static stretches differ by exactly one object. Found {found}")
    for i, pair in enumerate(pairs, start=1):
        pair.id = f"o{i:03d}"
    for r in results:
        _speech_labels(r, cfg)
    for r in results:
        _share_labels(r)
    if entries is not None:
        _apply_labels(pairs, entries, Path(labels))
    _assign_splits(views, pairs, cfg)

    out = Path(out)
    for folder in OUTPUT_FOLDERS:
        shutil.rmtree(out / folder, ignore_errors=True)
    make_folders(out)
    for folder in ("views", "objects", "thumbs"):
        (out / folder).mkdir()
    view_rows = []
    for v in views:
        _write_png(out / "views" / f"{v.id}.png", v.image)
        view_rows.append({"id": v.id, "bag": v.bag, "start_ns": v.start_ns, "end_ns": v.end_ns, "frames": v.frames,
                          "image": f"views/{v.id}.png", "split": v.split})
    object_rows, refs = [], []
    for p in pairs:
        mask = p.mask.astype(np.uint8) * 255
        _write_png(out / "objects" / f"{p.id}.png", mask)
        _write_png(out / "thumbs" / f"{p.id}.png", _thumbnail(p.holder.image, p.mask))
        object_rows.append({"id": p.id, "view": p.holder.id, "empty_view": p.empty.id,
                            "image": f"views/{p.holder.id}.png", "mask": f"objects/{p.id}.png", "label": p.label,
                            "split": p.split, "bag": p.holder.bag,
                            "time_ns": p.motion_ns, "label_source": p.label_source,
                            "contrast": round(p.contrast, 1), "blob_iou": round(p.blob_iou, 3),
                            "hidden_outline": round(p.hidden_outline, 3), "unexplained": round(p.unexplained, 3)})
        if p.label is None:
            continue
        matched = np.clip(p.empty.image.astype(np.float32) * p.gain + 0.5, 0, 255).astype(np.uint8)
        target = np.where(_grow(p.mask, cfg.target_band_px)[..., None], matched, p.holder.image)
        paths = write_example(out, p.id, p.holder.image, target, mask)
        refs.append({"id": p.id, **paths, "text": p.label, "split": p.split, "negative": False, "object": p.id,
                     "bag": p.holder.bag})
    write_jsonl(out / VIEWS_FILE, view_rows)
    write_jsonl(out / OBJECTS_FILE, object_rows)
    write_refs(out, refs)
    first_ns = {r.summary.bag: r.first_ns for r in results}
    labels_file = out / LABELS_FILE
    _write_labels(labels_file, pairs, first_ns)
    labelled = sum(p.label is not None for p in pairs)
    return Summary([r.summary for r in results], labelled, len(pairs) - labelled, len(refs), out, labels_file)


def read_objects(root: str | Path) -> tuple[list[dict], list[dict]]:
    """(views.jsonl rows, objects.jsonl rows) of a from-bag folder."""
    folder = "a from-bag folder (sahm make-data from-bag)"
    return read_jsonl(Path(root) / VIEWS_FILE, folder), read_jsonl(Path(root) / OBJECTS_FILE, folder)
