"""Simulated robot recordings of one room: `sahm make-data room-sim --out DIR --n N --seed S`.

What `sahm make-data from-bag` is built for, with ground truth to check it against. A room is a fixed camera on a
textured scene (`synthetic._background`) and a set of 3-4 objects (a colour and a shape from the lexicon, said as
"the red star"); the room seed fixes both, plus the lighting ramp and the sensor noise level. A recording of the room
(the placement seed) is a timeline:

- static stretches of a few seconds, separated by short placement motions: an arm reaches in from the bottom or a
  side, and under its hand an object appears (put down at a new free spot) or disappears (taken away); while putting
  one down the person says "this is the red star" ("here is ...", "that's ...") on /speech/text;
- now and then a person-sized occluder walks through a static stretch;
- auto-exposure: the global gain (per channel) steps between stretches and drifts slowly within them;
- fresh sensor noise every frame and a small camera vibration (a random sub-pixel shift per frame);
- `RoomConfig.pan_px_per_s` > 0 turns the camera into a steadily panning one (the bad input from-bag must refuse).

Ground truth per frame: which placements are present (a placement = one object put at one spot, with its mask), and
whether an occluder (arm or person) is in view ("motion"). Layout (`make_room_dataset`, `read_room_truth`):

    rooms.jsonl              one JSON object per recording: id, folder, room_seed, placement_seed, bag, truth, size,
                             fps, frames, pan_px_per_s
    roomNNNN/bag/            rosbag2 (ros_ror.demo.write_camera_bag): rgb8 frames on /camera/image_raw at fps,
                             the placement utterances on /speech/text
    roomNNNN/truth.json      objects (id, label, colour, category), placements (object, mask, first_frame,
                             last_frame, said, said_at_s), frames (t_ns, present placement indices, motion)
    roomNNNN/masks/pNN.png   each placement's mask in the view (0/255; with a pan, at the middle frame's position)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sahm_core.data.layout import PNG_FAST, read_jsonl, write_jsonl
from sahm_core.data.synthetic import (
    MAX_ROTATION,
    _background,
    _composite,
    _Layer,
    _paint,
    _shape_alpha,
    apply_camera,
    lighting_gain,
    sensor_offset,
    split_plan,
)
from sahm_core.lexicon import COLOURS, SHAPE_WORDS

ROOMS_FILE = "rooms.jsonl"
TRUTH_FILE = "truth.json"
BAG_FOLDER = "bag"
SPOKEN_FORMS = ("this is {}", "here is {}", "that's {}")  # what the person says while putting an object down
# Skin and sleeve tones for the arm, clothing for the person: muted, so they never read as a named object colour.
ARM_COLOURS = ((205, 160, 130), (170, 120, 90), (120, 85, 60), (90, 95, 110))
OCCLUDER_ALPHA = 0.02  # an occluder covering a view pixel at least this much makes the frame "motion"


@dataclass(frozen=True)
class RoomConfig:
    """How a room recording looks and moves; ranges are drawn per room or per event. Sizes in view pixels unless
    said otherwise."""

    size: int = 256  # view side (the model trains on square frames)
    fps: float = 10.0
    objects: tuple[int, int] = (3, 4)  # objects in the room
    object_size: tuple[float, float] = (0.14, 0.22)  # object diameter, fraction of the view side
    events: tuple[int, int] = (4, 6)  # placements + removals per recording
    static_s: tuple[float, float] = (3.0, 5.0)  # static stretch length
    placement_s: tuple[float, float] = (1.0, 1.6)  # the arm's reach in and out
    person_probability: float = 0.3  # static stretches a person walks through
    person_s: tuple[float, float] = (0.8, 1.4)  # how long the person takes to cross the view
    noise_sigma: tuple[float, float] = (1.0, 3.0)  # sensor noise standard deviation, grey levels (per room)
    exposure_step: float = 0.1  # auto-exposure gain change between stretches, at most (either way)
    exposure_drift: float = 0.02  # gain change over one static stretch, at most
    vibration_px: float = 0.5  # per-frame camera shake, standard deviation per axis
    pan_px_per_s: float = 0.0  # > 0: the camera pans steadily left to right (the moving-camera variant)

    def __post_init__(self):
        if self.size < 64:
            raise ValueError(f"size must be at least 64 pixels, got {self.size}")
        if not 1 <= self.objects[0] <= self.objects[1] <= len(COLOURS):
            raise ValueError(f"objects must be (low, high) with 1 <= low <= high, got {self.objects}")
        if not 1 <= self.events[0] <= self.events[1]:
            raise ValueError(f"events must be (low, high) with 1 <= low <= high, got {self.events}")
        if not 0.0 <= self.person_probability <= 1.0:
            raise ValueError(f"person_probability must be in [0, 1], got {self.person_probability}")
        if self.fps <= 0 or self.pan_px_per_s < 0 or self.vibration_px < 0:
            raise ValueError("fps must be positive; pan_px_per_s and vibration_px must not be negative")


@dataclass
class RoomObject:
    colour: str
    category: str

    @property
    def label(self) -> str:
        return f"the {self.colour} {SHAPE_WORDS[self.category][0]}"


@dataclass
class Placement:
    """One object put down at one spot: present from first_frame to last_frame (inclusive)."""

    object: int
    layer: _Layer  # on the world canvas
    mask: np.ndarray  # (S, S) uint8 {0, 255} in the view at pan offset 0
    first_frame: int
    last_frame: int
    said: str | None = None
    said_at_s: float | None = None


@dataclass
class RoomRecording:
    frames: list[np.ndarray]  # (S, S, 3) uint8 RGB
    objects: list[RoomObject]
    placements: list[Placement]
    present: list[list[int]]  # per frame, indices into placements
    motion: list[bool]  # per frame: an arm or a person is in view
    spoken: list[tuple[float, str]]  # (seconds after the first frame, text)
    room_seed: int
    placement_seed: int
    cfg: RoomConfig


def _room(room_seed: int, cfg: RoomConfig, world: int):
    """What the room seed fixes: background (world canvas), objects, lighting ramp, noise level, base exposure."""
    rng = np.random.default_rng(room_seed)
    background = _background(rng, world)
    count = int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))
    pairs = [(c, s) for c in COLOURS for s in SHAPE_WORDS]
    picks = rng.choice(len(pairs), size=count, replace=False)  # distinct colour + shape: distinct labels
    objects = [RoomObject(*pairs[i]) for i in picks]
    sizes = rng.uniform(*cfg.object_size, count)
    textures = [("plain", "striped", "dotted", "checkered")[i] if rng.random() < 0.4 else "plain"
                for i in rng.integers(1, 4, count)]
    colours = [np.clip(np.array(COLOURS[o.colour], np.float32) + rng.uniform(-12, 12, 3), 0, 255) for o in objects]
    gain = lighting_gain(rng, cfg.size)
    sigma = float(rng.uniform(*cfg.noise_sigma))
    return background, objects, sizes, textures, colours, gain, sigma


def _arm_layer(rng, anchor: np.ndarray, tip: np.ndarray, width: float, hand: float, paint_rgb, world: int) -> _Layer:
    """An arm (a thick line from `anchor` outside the view to `tip`) ending in a hand (a disc at the tip)."""
    canvas = np.zeros((world, world), np.uint8)
    scale = 16  # shift=4: sub-pixel coordinates
    cv2.line(canvas, tuple(np.round(anchor * scale).astype(int)), tuple(np.round(tip * scale).astype(int)), 255,
             thickness=max(1, round(width)), lineType=cv2.LINE_AA, shift=4)
    cv2.circle(canvas, tuple(np.round(tip * scale).astype(int)), round(hand * scale), 255, cv2.FILLED, cv2.LINE_AA, 4)
    return _occluder_layer(canvas, paint_rgb, "plain", rng)


def _person_layer(rng, centre_x: float, cfg: RoomConfig, pad: int, paint_rgb, texture: str, world: int) -> _Layer:
    """A person seen from close by: a body taller than the view and a head, centred at view column `centre_x`."""
    size = cfg.size
    canvas = np.zeros((world, world), np.uint8)
    x = round((pad + centre_x) * 16)
    body = (round(0.17 * size * 16), round(0.55 * size * 16))
    cv2.ellipse(canvas, (x, round((pad + 0.85 * size) * 16)), body, 0, 0, 360, 255, cv2.FILLED, cv2.LINE_AA, 4)
    cv2.circle(canvas, (x, round((pad + 0.18 * size) * 16)), round(0.1 * size * 16), 255, cv2.FILLED, cv2.LINE_AA, 4)
    return _occluder_layer(canvas, paint_rgb, texture, rng)


def _occluder_layer(canvas: np.ndarray, paint_rgb, texture: str, rng) -> _Layer:
    ys, xs = np.nonzero(canvas)
    if ys.size == 0:
        box = (slice(0, 0), slice(0, 0))
        return _Layer("occluder", "", texture, 0.0, canvas.astype(np.float32), np.zeros((0, 0, 3), np.float32), box)
    box = (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))
    h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
    paint = _paint(np.array(paint_rgb, np.float32), texture, (h, w), rng)
    return _Layer("occluder", "", texture, 0.0, canvas.astype(np.float32) / 255.0, paint, box)


def _free_spot(rng, radius: float, taken: list[tuple[np.ndarray, float]], size: int) -> np.ndarray | None:
    """A view position for an object of `radius` clear of the objects in `taken` (centre, radius), or None."""
    gap = 0.04 * size
    for _ in range(50):
        centre = rng.uniform(radius + 0.06 * size, size - radius - 0.06 * size, 2)
        if all(np.hypot(*(centre - c)) > radius + r + gap for c, r in taken):
            return centre
    return None


def render_room(room_seed: int, placement_seed: int, cfg: RoomConfig = RoomConfig()) -> RoomRecording:
    """One recording of room `room_seed` with the timeline of `placement_seed` (same seeds and config, same pixels).
    See the module docstring."""
    size, fps = cfg.size, cfg.fps
    rng = np.random.default_rng((room_seed, placement_seed))
    n_events = int(rng.integers(cfg.events[0], cfg.events[1] + 1))
    statics = [max(1, round(rng.uniform(*cfg.static_s) * fps)) for _ in range(n_events + 1)]
    motions = [max(3, round(rng.uniform(*cfg.placement_s) * fps)) for _ in range(n_events)]
    total = sum(statics) + sum(motions)
    pan_extent = cfg.pan_px_per_s * total / fps
    pad = int(np.ceil(4 * cfg.vibration_px + pan_extent / 2)) + 2
    world = size + 2 * pad
    background, objects, sizes, textures, colours, light, sigma = _room(room_seed, cfg, world)
    radii = sizes * size / 2

    # The timeline: which object changes in each placement motion, and where it goes.
    placements: list[Placement] = []
    centres: dict[int, np.ndarray] = {}  # placement -> its centre (x, y) in the view
    showing: dict[int, int] = {}  # object -> index of its current placement
    events = []  # (object, index of the new placement or None for a removal) per motion
    for _ in range(n_events):
        absent = [k for k in range(len(objects)) if k not in showing]
        centre = None
        if absent and (not showing or rng.random() < 0.6):
            k = int(rng.choice(absent))
            centre = _free_spot(rng, radii[k], [(centres[p], radii[o]) for o, p in showing.items()], size)
        if centre is None:  # a removal (or no free spot was left for the placement)
            k = int(rng.choice(list(showing)))
            events.append((k, None))
            showing.pop(k)
            continue
        category = objects[k].category
        angle = np.deg2rad(rng.uniform(-1, 1) * MAX_ROTATION.get(category, 180))
        patch, (y0, x0) = _shape_alpha(category, centre + pad, radii[k], angle, rng.uniform(0.9, 1.1), world)
        h, w = patch.shape
        alpha = np.zeros((world, world), np.float32)
        alpha[y0:y0 + h, x0:x0 + w] = patch
        layer = _Layer(category, objects[k].colour, textures[k], float(sizes[k]), alpha,
                       _paint(colours[k], textures[k], (h, w), rng), (slice(y0, y0 + h), slice(x0, x0 + w)))
        mask = ((alpha[pad:pad + size, pad:pad + size] >= 0.5) * 255).astype(np.uint8)
        centres[len(placements)] = centre
        showing[k] = len(placements)
        events.append((k, len(placements)))
        placements.append(Placement(k, layer, mask, -1, -1))

    # Frame by frame: present placements, occluder, exposure gain.
    present, occluders, gains = [], [], []
    gain = np.float32(1.0) * rng.uniform(0.97, 1.03, 3).astype(np.float32)
    showing = {}
    spoken = []
    for stretch, frames in enumerate(statics):
        drift = 1.0 + rng.uniform(-1, 1) * cfg.exposure_drift
        start = gain.copy()
        person = rng.random() < cfg.person_probability
        crossing = max(2, round(rng.uniform(*cfg.person_s) * fps))
        first_cross = int(rng.integers(0, max(1, frames - crossing) + 1)) if person else -1
        person_paint = (_muted(rng), str(rng.choice(("plain", "striped", "checkered"))))
        for i in range(frames):
            gain = start * np.float32(1.0 + (drift - 1.0) * i / max(1, frames - 1))
            occluder = None
            if person and first_cross <= i < first_cross + crossing:
                s = (i - first_cross + 0.5) / crossing
                x = -0.3 * size + s * 1.6 * size
                occluder = _person_layer(rng, x, cfg, pad, *person_paint, world)
            present.append(sorted(showing.values()))
            occluders.append(occluder)
            gains.append(gain)
        if stretch == n_events:
            break
        k, new = events[stretch]
        frames = motions[stretch]
        step = np.float32(1.0 + rng.uniform(-1, 1) * cfg.exposure_step) * rng.uniform(0.99, 1.01, 3).astype(np.float32)
        end_gain = np.clip(gain * step, 0.75, 1.25).astype(np.float32)
        target = centres[new if new is not None else showing[k]]
        anchor, width, hand, arm_rgb = _arm_start(rng, target, size)
        switch = frames // 2
        for i in range(frames):
            reach = min(1.0, i / (0.4 * frames), (frames - 1 - i) / (0.4 * frames))  # in, hold, out
            tip = anchor + reach * (target - anchor) + (rng.normal(0, 1.0, 2) if reach >= 1.0 else 0.0)
            if i == switch:
                if new is not None:
                    showing[k] = new
                    p = placements[new]
                    p.first_frame = len(present)
                    at = (len(present) + rng.uniform(-2, 2)) / fps
                    p.said = str(rng.choice(SPOKEN_FORMS)).format(objects[k].label)
                    p.said_at_s = round(float(at), 3)
                    spoken.append((p.said_at_s, p.said))
                else:
                    placements[showing.pop(k)].last_frame = len(present) - 1
            present.append(sorted(showing.values()))
            occluders.append(_arm_layer(rng, anchor + pad, tip + pad, width, hand, arm_rgb, world))
            gains.append(gain + (end_gain - gain) * np.float32((i + 1) / frames))
        gain = end_gain
    for p in placements:
        if p.last_frame < 0:
            p.last_frame = len(present) - 1

    frames_out, motion = [], []
    cache: dict[tuple[int, ...], np.ndarray] = {}
    for t in range(len(present)):
        key = tuple(present[t])
        if key not in cache:
            cache = {key: _composite(background, [placements[p].layer for p in key])}  # stretches never come back
        canvas = cache[key]
        occluder = occluders[t]
        in_view = False
        if occluder is not None:
            canvas = _composite(canvas, [occluder])
            in_view = bool((occluder.alpha[pad:pad + size, pad:pad + size] >= OCCLUDER_ALPHA).any())
        shake = rng.normal(0, cfg.vibration_px, 2) if cfg.vibration_px > 0 else np.zeros(2)
        pan = cfg.pan_px_per_s * (t / fps) - pan_extent / 2
        # view pixel (x, y) shows world pixel (x + pad + pan + shake_x, y + pad + shake_y)
        to_world = np.array([[1, 0, pad + pan + shake[0]], [0, 1, pad + shake[1]]], np.float64)
        view = cv2.warpAffine(canvas, to_world, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        frames_out.append(apply_camera(view, light * gains[t], sensor_offset(rng, size, sigma)))
        motion.append(in_view)
    return RoomRecording(frames_out, objects, placements, present, motion, spoken, room_seed, placement_seed, cfg)


def _muted(rng) -> tuple[float, float, float]:
    return tuple(float(v) for v in rng.uniform(40, 200, 3) * 0.6 + 128 * 0.4)


def _arm_start(rng, target: np.ndarray, size: int):
    """Where the arm comes from (a point beyond the bottom, left or right edge, toward `target`), its width, hand
    radius and colour."""
    width, hand = rng.uniform(0.09, 0.13) * size, rng.uniform(0.07, 0.09) * size
    beyond = width + hand
    edge = rng.choice(3)
    if edge == 0:  # bottom
        anchor = np.array([np.clip(target[0] + rng.uniform(-0.3, 0.3) * size, 0, size), size + beyond])
    else:
        side = -beyond if edge == 1 else size + beyond
        anchor = np.array([side, np.clip(target[1] + rng.uniform(-0.3, 0.3) * size, 0, size)])
    return anchor, width, hand, ARM_COLOURS[int(rng.integers(len(ARM_COLOURS)))]


def truth_dict(rec: RoomRecording) -> dict:
    """The truth.json content (masks referenced, written by `write_room`)."""
    from ros_ror.demo import START_NS

    return {
        "room_seed": rec.room_seed, "placement_seed": rec.placement_seed, "size": rec.cfg.size, "fps": rec.cfg.fps,
        "pan_px_per_s": rec.cfg.pan_px_per_s,
        "objects": [{"id": k, "label": o.label, "colour": o.colour, "category": o.category}
                    for k, o in enumerate(rec.objects)],
        "placements": [{"object": p.object, "mask": f"masks/p{i:02d}.png", "first_frame": p.first_frame,
                        "last_frame": p.last_frame, "said": p.said, "said_at_s": p.said_at_s}
                       for i, p in enumerate(rec.placements)],
        "frames": [{"t_ns": START_NS + round(t * 1e9 / rec.cfg.fps), "present": rec.present[t],
                    "motion": rec.motion[t]} for t in range(len(rec.frames))],
    }


def write_room(folder: Path, rec: RoomRecording, storage: str = "sqlite3") -> dict:
    """Write one recording's folder (bag, truth.json, masks/); returns what rooms.jsonl needs of it."""
    from ros_ror.demo import write_camera_bag  # rosbags only: no ROS install needed

    shutil.rmtree(folder, ignore_errors=True)
    (folder / "masks").mkdir(parents=True)
    truth = truth_dict(rec)
    for entry, p in zip(truth["placements"], rec.placements):
        if not cv2.imwrite(str(folder / entry["mask"]), p.mask, PNG_FAST):
            raise OSError(f"could not write {folder / entry['mask']}")
    (folder / TRUTH_FILE).write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    write_camera_bag(folder / BAG_FOLDER, rec.frames, rec.spoken, rec.cfg.fps, storage)
    return {"room_seed": rec.room_seed, "placement_seed": rec.placement_seed, "size": rec.cfg.size, "fps": rec.cfg.fps,
            "frames": len(rec.frames), "pan_px_per_s": rec.cfg.pan_px_per_s}


def make_room_dataset(out: str | Path, n: int, seed: int, cfg: RoomConfig = RoomConfig(), storage: str = "sqlite3",
                      room_seed: int | None = None, placement_seeds: list[int] | None = None) -> Path:
    """Write recordings (module docstring layout) to `out`; returns the rooms.jsonl path.

    room_seed None: n rooms, each its own room and timeline, seeds drawn from `seed`. room_seed given: recordings of
    that one room ("same room, new placements"), with `placement_seeds` if given, else n placement seeds from `seed`.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    drawn = [s for _, _, s in split_plan(n, seed, 0.0, 0.0)]
    if room_seed is None:
        if placement_seeds is not None:
            raise ValueError("placement seeds need a room seed (--room-seed): they are new timelines of one room")
        plan = [(s, 0) for s in drawn]
    else:
        plan = [(room_seed, s) for s in (placement_seeds if placement_seeds is not None else drawn)]
    rows = []
    for i, (room, placement) in enumerate(plan):
        name = f"room{i:04d}"
        row = write_room(out / name, render_room(room, placement, cfg), storage)
        rows.append({"id": name, "folder": name, **row, "bag": f"{name}/{BAG_FOLDER}", "truth": f"{name}/{TRUTH_FILE}"})
    return write_jsonl(out / ROOMS_FILE, rows)


def read_room_truth(folder: str | Path) -> dict:
    """truth.json of a recording folder with each placement's mask loaded as (S, S) bool under "mask_array"."""
    folder = Path(folder)
    path = folder / TRUTH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a room recording folder (sahm make-data room-sim)")
    truth = json.loads(path.read_text(encoding="utf-8"))
    for p in truth["placements"]:
        mask = cv2.imread(str(folder / p["mask"]), cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise ValueError(f"{folder / p['mask']}: not a readable mask")
        p["mask_array"] = mask > 127
    return truth


def replace_config(cfg: RoomConfig, **options) -> RoomConfig:
    """cfg with the options that are not None (command-line options left out keep the defaults)."""
    return dataclasses.replace(cfg, **{k: v for k, v in options.items() if v is not None})


def score_extraction(room_folder: str | Path, extracted: str | Path) -> dict:
    """How `sahm make-data from-bag` did on one recording (its bag extracted alone into `extracted`), against the
    truth: per object the placement it should be (index: the one the holding view shows and the empty view does not),
    the mask IoU with it, that object's label and whether the extracted label is it; views that contain a motion
    frame; events (placements + removals) in the recording. An object whose views do not differ by exactly one
    placement gets iou 0."""
    from sahm_core.data.from_bag import read_objects
    from sahm_core.evaluate import iou

    truth = read_room_truth(room_folder)
    views, objects = read_objects(extracted)
    stamps = np.array([f["t_ns"] for f in truth["frames"]], np.int64)
    seen = {}
    for v in views:
        inside = [truth["frames"][i] for i in np.nonzero((stamps >= v["start_ns"]) & (stamps <= v["end_ns"]))[0]]
        seen[v["id"]] = {"motion": any(f["motion"] for f in inside),
                         "present": {p for f in inside for p in f["present"]}}
    rows = []
    for o in objects:
        extra = seen[o["view"]]["present"] - seen[o["empty_view"]]["present"]
        row = {"id": o["id"], "label": o["label"], "placement": None, "truth_label": None, "iou": 0.0,
               "label_ok": None}
        if len(extra) == 1 and seen[o["empty_view"]]["present"] <= seen[o["view"]]["present"]:
            index = extra.pop()
            placement = truth["placements"][index]
            mask = cv2.imread(str(Path(extracted) / o["mask"]), cv2.IMREAD_UNCHANGED) > 127
            inter, union = iou(mask, placement["mask_array"])
            expected = truth["objects"][placement["object"]]["label"]
            row.update(placement=index, truth_label=expected, iou=float(inter / union),
                       label_ok=None if o["label"] is None else o["label"] == expected)
        rows.append(row)
    events = sum(1 for p in truth["placements"]) + sum(p["last_frame"] < len(stamps) - 1 for p in truth["placements"])
    return {"objects": rows, "views": len(views), "views_with_motion": sum(s["motion"] for s in seen.values()),
            "events": events}


def read_room_rows(root: str | Path) -> list[dict]:
    """The rooms.jsonl rows of a room-sim folder; FileNotFoundError when `root` is not one."""
    return read_jsonl(Path(root) / ROOMS_FILE, "a room-sim folder (sahm make-data room-sim)")


def check_rooms(root: str | Path) -> list[dict]:
    """`sahm make-data room-check`: from-bag on each recording of a room-sim folder alone (into roomNNNN/extracted,
    labels from /speech/text), scored against the truth (`score_extraction`). Per recording: id, the score, or the
    error from-bag gave."""
    from ros_ror.demo import COMMAND_TOPIC, IMAGE_TOPIC
    from sahm_core.data.from_bag import FromBagError, extract

    root = Path(root)
    results = []
    for row in read_room_rows(root):
        folder = root / row["folder"]
        try:
            extract([str(root / row["bag"])], IMAGE_TOPIC, folder / "extracted", label_topic=COMMAND_TOPIC)
        except FromBagError as e:
            results.append({"id": row["id"], "error": str(e)})
            continue
        results.append({"id": row["id"], **score_extraction(folder, folder / "extracted")})
    return results


def format_check(results: list[dict]) -> str:
    """One line per recording and a total: pairs, mask IoU (mean, min), labels right / wrong / none, views holding a
    motion frame."""
    lines, ious, labels, motion = [], [], [0, 0, 0], 0
    for r in results:
        if "error" in r:
            lines.append(f"{r['id']}: from-bag refused: {r['error']}")
            continue
        room_ious = [o["iou"] for o in r["objects"]]
        ious += room_ious
        right = sum(o["label_ok"] is True for o in r["objects"])
        wrong = sum(o["label_ok"] is False for o in r["objects"])
        labels = [labels[0] + right, labels[1] + wrong, labels[2] + len(room_ious) - right - wrong]
        motion += r["views_with_motion"]
        lines.append(f"{r['id']}: {r['events']} events -> {len(room_ious)} pairs, IoU "
                     + " ".join(f"{i:.3f}" for i in room_ious) + f" | labels {right} right, {wrong} wrong | "
                     f"{r['views_with_motion']} of {r['views']} views hold a motion frame")
    if ious:
        lines.append(f"total: {len(ious)} pairs, mask IoU mean {np.mean(ious):.4f} min {np.min(ious):.4f}, "
                     f"{sum(i < 0.9 for i in ious)} under 0.9 | labels {labels[0]} right, {labels[1]} wrong, "
                     f"{labels[2]} none | {motion} views hold a motion frame")
    return "\n".join(lines)
