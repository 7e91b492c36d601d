"""Synthetic video clips with per-frame ground truth: `sahm make-data video --out DIR --n CLIPS --seed S`.

A clip is one synthetic scene (`synthetic.scene`: background, shapes in layers, an expression naming one of them)
filmed by a moving camera:

- the scene is laid out at view scale and padded (background reflected) into a larger world canvas; the camera is a
  homography world -> view per frame: a pan, a zoom, a slow perspective tilt and hand shake;
- some objects drift (the referred one in `moving_fraction` of the clips), and in `occlusion_fraction` of them a
  fast object of another colour and category crosses in front of the referred one while the command is active;
- lighting drifts over the clip (global gain and colour), and every frame has fresh sensor noise;
- the command is spoken part-way (`command_at`), between two frames.

Per frame the ground truth is the image, the clean target (the same frame rendered without the referred layer) and
the mask (the referred layer's visible coverage >= 0.5, in view), plus the camera motion from the previous frame
(`homography`: view t-1 -> view t) and `world_to_view`. Camera effects are per-pixel functions applied identically to
image and target, and the referred object is drawn only within a pixel of its mask (as the stills cut its fringe), so
image and target differ only on the mask and that pixel.

Layout (`read_clips` reads it back):

    clips.jsonl                  one JSON object per clip: id, text, tags, phrase, seed, frames, size, fps,
                                 command_frame, command_at (seconds), target_moving, occluded_frames, bag, folder
    clipNNNN/frames.jsonl        one per frame: index, image, target, mask (paths in the clip folder), homography,
                                 world_to_view (3x3 lists)
    clipNNNN/images|targets|masks/NNNN.png   as in the still layout (`layout.write_example`)
    clipNNNN/bag/                rosbag2 (ros_ror.demo.write_camera_bag): rgb8 frames on /camera/image_raw at fps,
                                 the command on /speech/text; `ros-ror replay` runs on it
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sahm_core.data.layout import make_folders, read_jsonl, read_mask, read_rgb, write_example, write_jsonl
from sahm_core.data.synthetic import (
    _composite,
    _Layer,
    _paint,
    _shape_alpha,
    _visible,
    apply_camera,
    lighting_gain,
    scene,
    sensor_offset,
    split_plan,
)
from sahm_core.lexicon import COLOURS, SHAPE_WORDS

CLIPS_FILE = "clips.jsonl"
FRAMES_FILE = "frames.jsonl"
BAG_FOLDER = "bag"


@dataclass(frozen=True)
class ClipConfig:
    """How clips move; ranges are drawn per clip. Distances in view pixels unless said otherwise."""

    size: int = 256  # view side
    frames: tuple[int, int] = (24, 40)
    fps: float = 30.0
    margin: float = 0.3  # world canvas = view side * (1 + 2 margin): room for the camera to move
    pan: float = 0.12  # camera centre travel over the clip, at most this fraction of the view side per axis
    zoom: tuple[float, float] = (1.0, 1.25)  # start and end zoom are drawn from here (zoom in or out)
    rotation_deg: float = 3.0  # slow roll over the clip, at most
    tilt: float = 2e-4  # perspective terms (1/pixel) reached by the end of the clip, at most
    shake_px: float = 1.0  # per-frame hand shake, standard deviation (and 0.1 degree of roll per pixel)
    object_speed: tuple[float, float] = (0.2, 0.6)  # pixels per frame, for objects that drift
    moving_fraction: float = 0.6  # clips whose referred object drifts (distractors drift with half this chance)
    occlusion_fraction: float = 0.5  # clips where an object crosses in front of the referred one
    occlusion_frames: tuple[int, int] = (3, 7)  # how long the crossing takes
    light_drift: float = 0.15  # global gain change over the clip, at most (plus up to a third of it per channel)
    noise_sigma: tuple[float, float] = (1.0, 4.0)  # sensor noise standard deviation, grey levels
    command_at: tuple[float, float] = (0.15, 0.4)  # fraction of the clip before the command is spoken

    def __post_init__(self):
        if self.size < 32:
            raise ValueError(f"size must be at least 32 pixels, got {self.size}")
        if not 2 <= self.frames[0] <= self.frames[1]:
            raise ValueError(f"frames must be (low, high) with 2 <= low <= high, got {self.frames}")
        if not (0.0 <= self.moving_fraction <= 1.0 and 0.0 <= self.occlusion_fraction <= 1.0):
            raise ValueError("moving_fraction and occlusion_fraction must be in [0, 1]")
        if not 0.0 < self.command_at[0] <= self.command_at[1] < 1.0:
            raise ValueError(f"command_at must be (low, high) inside (0, 1), got {self.command_at}")


@dataclass
class ClipFrame:
    image: np.ndarray  # (S, S, 3) uint8 RGB
    target: np.ndarray  # (S, S, 3) uint8 RGB, without the referred object
    mask: np.ndarray  # (S, S) uint8 {0, 255}
    homography: np.ndarray  # (3, 3) float64, view t-1 -> view t (identity for the first frame)
    world_to_view: np.ndarray  # (3, 3) float64


@dataclass
class Clip:
    frames: list[ClipFrame]
    text: str
    tags: list[list[str]]
    phrase: list[list[str]]
    command_frame: int  # first frame the command applies to
    fps: float
    seed: int
    target_moving: bool
    occluded_frames: list[int]  # frames where the crossing object hides part of the referred one

    @property
    def command_at(self) -> float:
        """Seconds after the first frame at which the command is spoken: half a frame before command_frame."""
        return (self.command_frame - 0.5) / self.fps


def _shifted(layer: _Layer, dy: int, dx: int, side: int) -> _Layer:
    """The layer moved by (dy, dx) whole pixels on a side x side canvas; what leaves the canvas is cut off."""
    (y0, y1, _), (x0, x1, _) = (r.indices(side) for r in layer.box)
    top, bottom, left, right = max(y0 + dy, 0), min(y1 + dy, side), max(x0 + dx, 0), min(x1 + dx, side)
    alpha = np.zeros_like(layer.alpha)
    if top >= bottom or left >= right:
        return dataclasses.replace(layer, alpha=alpha, paint=layer.paint[:0, :0], box=(slice(0, 0), slice(0, 0)))
    alpha[top:bottom, left:right] = layer.alpha[top - dy:bottom - dy, left - dx:right - dx]
    paint = layer.paint[top - y0 - dy:bottom - y0 - dy, left - x0 - dx:right - x0 - dx]
    return dataclasses.replace(layer, alpha=alpha, paint=paint, box=(slice(top, bottom), slice(left, right)))


def _padded(layer: _Layer, pad: int) -> _Layer:
    """A view-canvas layer placed in the middle of the world canvas."""
    rows, cols = layer.box
    return dataclasses.replace(layer, alpha=np.pad(layer.alpha, pad),
                               box=(slice(rows.start + pad, rows.stop + pad), slice(cols.start + pad, cols.stop + pad)))


def _camera_path(rng, cfg: ClipConfig, count: int, world: int) -> list[np.ndarray]:
    """world -> view homographies, one per frame: pan, zoom, roll and tilt move smoothly; shake is per frame."""
    size, half = cfg.size, cfg.size / 2
    start_centre = world / 2 + rng.uniform(-0.5, 0.5, 2) * cfg.pan * size
    end_centre = start_centre + rng.uniform(-1, 1, 2) * cfg.pan * size
    zoom0, zoom1 = rng.uniform(*cfg.zoom, 2)
    roll = np.deg2rad(rng.uniform(-1, 1) * cfg.rotation_deg)
    tilt = rng.uniform(-1, 1, 2) * cfg.tilt
    path = []
    for t in range(count):
        s = t / max(1, count - 1)
        shake = rng.standard_normal(3) * cfg.shake_px
        centre = start_centre + s * (end_centre - start_centre) + shake[:2]
        zoom = zoom0 + s * (zoom1 - zoom0)
        angle = s * roll + np.deg2rad(0.1 * shake[2])
        c, n = np.cos(angle) * zoom, np.sin(angle) * zoom
        to_view = np.array([[c, -n, half], [n, c, half], [0, 0, 1.0]])  # rotate + zoom about the view centre
        perspective = np.array([[1, 0, 0], [0, 1, 0], [s * tilt[0], s * tilt[1], 1.0]])
        from_world = np.array([[1, 0, -centre[0]], [0, 1, -centre[1]], [0, 0, 1.0]])
        h = to_view @ perspective @ from_world
        corners = cv2.perspectiveTransform(np.array([[[0, 0], [size, 0], [0, size], [size, size]]], np.float64),
                                           np.linalg.inv(h))
        if corners.min() < 0 or corners.max() > world - 1:
            raise RuntimeError(f"the camera left the world canvas at frame {t}: ClipConfig margin {cfg.margin} is too "
                               "small for its pan / zoom / shake")
        path.append(h / h[2, 2])
    return path


def _occluder(rng, target: _Layer, target_velocity: np.ndarray, side: int, cfg: ClipConfig, t_cross: int):
    """A layer of another category and colour, and its velocity (dy, dx) per frame, that passes over the referred
    layer's centre (offset by up to half its radius) at frame t_cross, taking `occlusion_frames` to cross it."""
    ys, xs = np.nonzero(target.alpha > 0.5)
    centre = np.array([xs.mean(), ys.mean()]) + np.round(target_velocity * t_cross)[::-1]
    categories = [c for c in SHAPE_WORDS if c != target.category]
    colours = [c for c in COLOURS if c != target.colour]
    category, colour = str(rng.choice(categories)), str(rng.choice(colours))
    radius = rng.uniform(0.07, 0.11) * cfg.size
    heading = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(heading), np.sin(heading)])
    normal = np.array([-direction[1], direction[0]])
    target_radius = target.size * cfg.size / 2
    centre = centre + normal * rng.uniform(-0.5, 0.5) * target_radius
    speed = 2 * (target_radius + radius) / rng.integers(cfg.occlusion_frames[0], cfg.occlusion_frames[1] + 1)
    patch, (y0, x0) = _shape_alpha(category, centre, radius, rng.uniform(0, 2 * np.pi), 1.0, side)
    h, w = patch.shape
    alpha = np.zeros((side, side), np.float32)
    alpha[y0:y0 + h, x0:x0 + w] = patch
    rgb = np.array(COLOURS[colour], np.float32)
    layer = _Layer(category, colour, "plain", 2 * radius / cfg.size, alpha, _paint(rgb, "plain", (h, w), rng),
                   (slice(y0, y0 + h), slice(x0, x0 + w)))
    return layer, speed * direction[::-1]  # (dy, dx)


def _stays_in_view(path: list[np.ndarray], box: tuple[slice, slice], velocity: np.ndarray, size: int) -> bool:
    """Whether a layer's box (world), moving at `velocity` (dy, dx) per frame, is inside the view in every frame."""
    rows, cols = box
    corners = np.array([[cols.start, rows.start], [cols.stop, rows.start], [cols.start, rows.stop],
                        [cols.stop, rows.stop]], np.float64)
    for t, h in enumerate(path):
        seen = cv2.perspectiveTransform((corners + np.round(velocity * t)[::-1])[None], h)
        if seen.min() < 0 or seen.max() > size:
            return False
    return True


CAMERA_TRIES = 10  # camera paths drawn per scene before the scene is drawn again


def render_clip(seed: int, cfg: ClipConfig = ClipConfig()) -> Clip:
    """One clip from a seed (same seed and config, same pixels). See the module docstring."""
    rng = np.random.default_rng(seed)
    size = cfg.size
    pad = round(cfg.margin * size)
    world = size + 2 * pad
    count = int(rng.integers(cfg.frames[0], cfg.frames[1] + 1))
    command_frame = max(1, round(rng.uniform(*cfg.command_at) * count))
    while True:  # until the referred object stays whole in view all clip long
        background, layers, _, _, index, expression = scene(rng, size)
        target_moving = bool(rng.random() < cfg.moving_fraction)
        velocities = []
        for k in range(len(layers)):
            moving = target_moving if k == index else rng.random() < cfg.moving_fraction / 2
            heading = rng.uniform(0, 2 * np.pi)
            speed = rng.uniform(*cfg.object_speed) if moving else 0.0
            velocities.append(speed * np.array([np.sin(heading), np.cos(heading)]))  # (dy, dx) per frame
        layers = [_padded(layer, pad) for layer in layers]
        for _ in range(CAMERA_TRIES):
            path = _camera_path(rng, cfg, count, world)
            if _stays_in_view(path, layers[index].box, velocities[index], size):
                break
        else:
            continue
        break
    background = cv2.copyMakeBorder(background, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    t_cross = None
    if rng.random() < cfg.occlusion_fraction and count - 3 > command_frame + 2:
        t_cross = int(rng.integers(command_frame + 2, count - 3))
        occluder, velocity = _occluder(rng, layers[index], velocities[index], world, cfg, t_cross)
        layers.append(occluder)  # in front of everything
        velocities.append(velocity)

    gain = lighting_gain(rng, size)
    drift = rng.uniform(-1, 1) * cfg.light_drift + rng.uniform(-1, 1, 3) * cfg.light_drift / 3  # per channel
    sigma = rng.uniform(*cfg.noise_sigma)
    frames, occluded = [], []
    for t in range(count):
        moments = [(t - t_cross) if (t_cross is not None and k == len(layers) - 1) else t for k in range(len(layers))]
        now = [_shifted(layer, *np.round(v * m).astype(int), world)
               for layer, v, m in zip(layers, velocities, moments)]
        visible = _visible(now)[index]
        if t_cross is not None and np.any((now[-1].alpha > 0.5) & (now[index].alpha > 0.5)):
            occluded.append(t)
        h = path[t]
        warp = lambda img: cv2.warpPerspective(img, h, (size, size), flags=cv2.INTER_LINEAR)  # noqa: E731
        frame_gain = gain * (1.0 + drift * t / max(1, count - 1)).astype(np.float32)
        offset = sensor_offset(rng, size, sigma)
        clean = warp(_composite(background, now, skip=index))
        mask = (warp(visible) >= 0.5).astype(np.uint8)
        # The object only within a pixel of its mask (as the stills cut its fringe): no faint fringe, no sliver along
        # an occluder's edge that resampling left under half covered.
        near = cv2.dilate(mask, np.ones((3, 3), np.uint8)).astype(bool)[..., None]
        image = apply_camera(np.where(near, warp(_composite(background, now)), clean), frame_gain, offset)
        target = apply_camera(clean, frame_gain, offset)
        mask *= 255
        motion = h @ np.linalg.inv(path[t - 1]) if t else np.eye(3)
        frames.append(ClipFrame(image, target, mask, motion / motion[2, 2], h))
    return Clip(frames, expression.text, expression.tags, [list(wt) for wt in expression.phrase], command_frame,
                cfg.fps, seed, target_moving, occluded)


def write_clip(root: Path, clip_id: str, clip: Clip, storage: str = "sqlite3") -> dict:
    """Write one clip's folder (frames, frames.jsonl, bag) under root; returns its clips.jsonl row."""
    from ros_ror.demo import write_camera_bag  # rosbags only: no ROS install needed

    folder = root / clip_id
    shutil.rmtree(folder, ignore_errors=True)
    make_folders(folder)
    rows = []
    for i, frame in enumerate(clip.frames):
        paths = write_example(folder, f"{i:04d}", frame.image, frame.target, frame.mask)
        rows.append({"index": i, **paths, "homography": frame.homography.tolist(),
                     "world_to_view": frame.world_to_view.tolist()})
    write_jsonl(folder / FRAMES_FILE, rows)
    write_camera_bag(folder / BAG_FOLDER, [f.image for f in clip.frames], [(clip.command_at, clip.text)], clip.fps,
                     storage)
    return {"id": clip_id, "folder": clip_id, "text": clip.text, "tags": clip.tags, "phrase": clip.phrase,
            "seed": clip.seed, "frames": len(clip.frames), "size": clip.frames[0].image.shape[0], "fps": clip.fps,
            "command_frame": clip.command_frame, "command_at": clip.command_at, "target_moving": clip.target_moving,
            "occluded_frames": clip.occluded_frames, "bag": f"{clip_id}/{BAG_FOLDER}"}


def make_video_dataset(out: str | Path, n: int, seed: int, cfg: ClipConfig = ClipConfig(),
                       storage: str = "sqlite3") -> Path:
    """Write n clips (module docstring layout) to `out`; returns the clips.jsonl path."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [write_clip(out, f"clip{i:04d}", render_clip(clip_seed, cfg), storage)
            for i, _, clip_seed in tqdm(split_plan(n, seed, 0.0, 0.0), desc="video", unit="clip")]
    return write_jsonl(out / CLIPS_FILE, rows)


def read_clip_rows(root: str | Path) -> list[dict]:
    """The clips.jsonl rows of a video dataset; FileNotFoundError when `root` is not one."""
    return read_jsonl(Path(root) / CLIPS_FILE, "a video dataset folder (sahm make-data video)")


def read_clip(root: str | Path, row: dict) -> Clip:
    """One clip back from disk, frames included."""
    folder = Path(root) / row["folder"]
    with open(folder / FRAMES_FILE, encoding="utf-8") as f:
        entries = [json.loads(line) for line in f if line.strip()]
    if len(entries) != row["frames"]:
        raise ValueError(f"{folder / FRAMES_FILE}: {len(entries)} frames, clips.jsonl says {row['frames']}")
    frames = [ClipFrame(read_rgb(folder / e["image"]), read_rgb(folder / e["target"]),
                        read_mask(folder / e["mask"]).view(np.uint8) * np.uint8(255),
                        np.array(e["homography"], np.float64), np.array(e["world_to_view"], np.float64))
              for e in entries]
    return Clip(frames, row["text"], row["tags"], row["phrase"], row["command_frame"], row["fps"], row["seed"],
                row["target_moving"], row["occluded_frames"])
