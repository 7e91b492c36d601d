"""Synthetic referring-removal scenes: a background, 2-5 shapes in layers, one of them named.

`render_sample(seed)` draws one scene from a seed (same seed, same pixels):
a background (a crop of one of scikit-image's bundled photographs, or a
procedural texture), objects composited back to front, and an expression that
names exactly one of them. The target is the same scene rendered without that
object's layer, so whatever lay beneath reappears. Global effects (lighting
ramp, colour cast, sensor noise) are per-pixel functions applied identically to
both renders, so wherever the referred layer contributes nothing the two images
are equal to the last bit. The referred layer's antialiased fringe is cut to one
pixel around its mask, so "outside the mask dilated by 1 px, image == target".
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sahm_core.data.expressions import TEXTURES, SceneObject, describe, describe_absent
from sahm_core.data.layout import make_folders, write_example, write_refs
from sahm_core.lexicon import COLOURS, SHAPE_WORDS

SUPERSAMPLE = 4  # shapes are filled at 4x and area-averaged down: crisp, antialiased edges
OBJECT_SIZE = (0.16, 0.34)  # nominal object diameter, fraction of the image side
OBJECT_COUNT = (2, 5)
MAX_OVERLAP = 0.15  # a new object may cover at most this fraction of an earlier one's box (and vice versa)
COLOUR_JITTER = 12  # per-channel sRGB jitter around the lexicon anchor

# Photographs that ship inside scikit-image (no download): colour ones as they are, grey ones tinted.
PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "brick", "camera", "coins", "grass", "gravel", "moon", "clock", "page", "cell",
)


@dataclass
class Sample:
    image: np.ndarray  # (H, W, 3) uint8 RGB, with the referred object
    target: np.ndarray  # (H, W, 3) uint8 RGB, the same scene without it (== image for a negative)
    mask: np.ndarray  # (H, W) uint8 {0, 255}, 255 = referred object (empty for a negative)
    text: str
    tags: list[list[str]]  # [[word, "IW" | "AW" | "O"], ...]
    negative: bool
    objects: list[SceneObject] = field(default_factory=list)
    target_index: int | None = None  # index into objects; None for a negative
    seed: int = 0
    phrase: list[list[str]] = field(default_factory=list)  # the noun phrase alone, [[word, tag], ...] (rephrasing)


@functools.cache
def _photos() -> tuple[np.ndarray, ...]:
    import skimage.data

    photos = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        photos.append(img[..., :3] if img.ndim == 3 else img)
    return tuple(photos)


def _muted_colour(rng) -> np.ndarray:
    """A background colour halfway to grey, so it never reads as one of the named object colours."""
    return (rng.uniform(0, 255, 3) * 0.5 + 128 * 0.5).astype(np.float32)


def _photo_background(rng, size: int) -> np.ndarray:
    photo = _photos()[rng.integers(len(_photos()))]
    h, w = photo.shape[:2]
    side = int(rng.uniform(0.45, 1.0) * min(h, w))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = cv2.resize(photo[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
    crop = crop.astype(np.float32)
    if crop.ndim == 2:
        crop = crop[..., None] * (_muted_colour(rng) / 160.0)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return crop


@functools.cache
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates of an S x S frame, in pixels (slice it for smaller patches)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


@functools.cache
def _unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates of an S x S frame, in image fractions."""
    yy, xx = _pixel_grid(size)
    return yy / size, xx / size


def _procedural_background(rng, size: int) -> np.ndarray:
    yy, xx = _unit_grid(size)
    a, b = _muted_colour(rng), _muted_colour(rng)
    kind = rng.integers(4)
    if kind == 0:  # gradient
        angle = rng.uniform(0, 2 * np.pi)
        t = np.clip((xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle) + 0.5, 0, 1)
    elif kind == 1:  # smooth noise
        cells = int(rng.integers(3, 12))
        t = cv2.resize(rng.random((cells, cells), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
        t = np.clip(t + 0.05 * rng.standard_normal((size, size), dtype=np.float32), 0, 1)
    elif kind == 2:  # stripes
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.04, 0.2)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * ((xx * np.cos(angle) + yy * np.sin(angle)) / period))
    else:  # tiles
        tile = rng.uniform(0.06, 0.25)
        t = ((np.floor(xx / tile) + np.floor(yy / tile)) % 2).astype(np.float32)
    return a + (b - a) * t[..., None]


def _background(rng, size: int) -> np.ndarray:
    """(S, S, 3) float32 in 0..255, contrast lowered so the named objects stand out; sometimes defocused."""
    bg = _photo_background(rng, size) if rng.random() < 0.5 else _procedural_background(rng, size)
    contrast = np.float32(rng.uniform(0.45, 0.85))
    mean = bg.mean(axis=(0, 1), keepdims=True, dtype=np.float32)
    bg = bg * contrast  # a new array: the photo crop may be a view of the cached photograph
    bg += mean * (1 - contrast)
    if rng.random() < 0.3:
        bg = cv2.GaussianBlur(bg, (0, 0), rng.uniform(0.8, 2.0))
    return np.ascontiguousarray(bg, dtype=np.float32)


def _outline(category: str) -> list[tuple[np.ndarray, bool]]:
    """Contours of a shape in unit coordinates (radius ~1, y down); bool = filled (True) or cut out (False)."""
    circle = lambda r, cx=0.0, cy=0.0, n=64: np.stack(  # noqa: E731
        [cx + r * np.cos(np.linspace(0, 2 * np.pi, n, endpoint=False)),
         cy + r * np.sin(np.linspace(0, 2 * np.pi, n, endpoint=False))], 1
    )
    polygon = lambda k, r=1.0, phase=-np.pi / 2: circle(r, n=k) @ np.array(  # noqa: E731
        [[np.cos(phase), np.sin(phase)], [-np.sin(phase), np.cos(phase)]]
    )
    if category == "circle":
        return [(circle(1.0), True)]
    if category == "square":
        return [(np.array([[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]]), True)]
    if category == "triangle":
        return [(polygon(3), True)]
    if category == "star":
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)[:, None]
        return [(polygon(10) * radii, True)]
    if category == "ring":
        return [(circle(1.0), True), (circle(0.55), False)]
    if category == "cross":
        a = 0.33
        pts = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a),
               (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)]
        return [(np.array(pts, dtype=float), True)]
    if category == "heart":
        s = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        x = 16 * np.sin(s) ** 3
        y = -(13 * np.cos(s) - 5 * np.cos(2 * s) - 2 * np.cos(3 * s) - np.cos(4 * s))
        return [(np.stack([x, y + 2.5], 1) / 16.5, True)]
    if category == "diamond":
        return [(np.array([[0, -1], [0.62, 0], [0, 1], [-0.62, 0]], dtype=float), True)]
    if category == "hexagon":
        return [(polygon(6, phase=0.0), True)]
    if category == "moon":
        return [(circle(1.0), True), (circle(0.85, 0.5, -0.15), False)]
    raise ValueError(f"no outline for category {category!r}")


# Rotations that keep the category's name true (a square turned 45 degrees is a diamond).
MAX_ROTATION = {"square": 20, "cross": 20, "diamond": 15, "heart": 25, "triangle": 30}


def _shape_alpha(category: str, center, radius: float, angle: float, aspect: float, size: int):
    """Antialiased coverage of the shape on the image grid: (alpha (h, w) float32, (y0, x0) of the patch)."""
    x0, y0 = max(int(center[0] - radius * 1.3), 0), max(int(center[1] - radius * 1.3), 0)
    x1, y1 = min(int(center[0] + radius * 1.3) + 2, size), min(int(center[1] + radius * 1.3) + 2, size)
    canvas = np.zeros(((y1 - y0) * SUPERSAMPLE, (x1 - x0) * SUPERSAMPLE), np.uint8)
    c, s = np.cos(angle), np.sin(angle)
    transform = np.array([[c, -s], [s, c]]) @ np.diag([aspect, 1.0 / aspect]) * radius
    for contour, filled in _outline(category):
        pts = contour @ transform.T + np.array(center) - (x0, y0)
        pts = np.round(pts * SUPERSAMPLE * 4).astype(np.int32)  # shift=2: two fractional bits on the 4x grid
        cv2.fillPoly(canvas, [pts], 255 if filled else 0, lineType=cv2.LINE_8, shift=2)
    alpha = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return alpha, (y0, x0)


def _paint(colour: np.ndarray, texture: str, shape: tuple[int, int], rng) -> np.ndarray:
    """Object colour over its patch: flat, striped, dotted or checkered, with a soft shading ramp."""
    h, w = shape
    yy, xx = (g[:h, :w] for g in _pixel_grid(max(h, w)))
    shade = colour * 0.55 if colour.mean() > 70 else colour + 80
    period = rng.uniform(6, 12)
    if texture == "striped":
        angle = rng.uniform(0, np.pi)
        pattern = ((xx * np.cos(angle) + yy * np.sin(angle)) / period) % 1 < 0.5
    elif texture == "dotted":
        pattern = ((xx / period) % 1 - 0.5) ** 2 + ((yy / period) % 1 - 0.5) ** 2 < 0.06
    elif texture == "checkered":
        pattern = (np.floor(xx / period) + np.floor(yy / period)) % 2 == 1
    else:
        pattern = np.zeros((h, w), bool)
    paint = np.where(pattern[..., None], shade, colour)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((xx * np.cos(angle) + yy * np.sin(angle)) / max(h, w))[..., None]
    return np.clip(paint * (1.0 + 0.12 * (ramp - 0.5)), 0, 255).astype(np.float32)


@dataclass
class _Layer:
    category: str
    colour: str
    texture: str
    size: float  # nominal diameter, image fractions
    alpha: np.ndarray  # (S, S) float32 coverage
    paint: np.ndarray  # (h, w, 3) float32 colour over the layer's box
    box: tuple[slice, slice]  # rows, columns of the box the layer can cover


def _choose_objects(rng) -> list[tuple[str, str, str, float]]:
    """(category, colour, texture, diameter) per object; same-category and same-colour distractors are common."""
    categories, colours = list(SHAPE_WORDS), list(COLOURS)
    count = int(rng.integers(OBJECT_COUNT[0], OBJECT_COUNT[1] + 1))
    first = (str(rng.choice(categories)), str(rng.choice(colours)))
    chosen = [first]
    for _ in range(count - 1):
        roll = rng.random()
        if roll < 0.45:  # same category: the expression must say which
            chosen.append((first[0], str(rng.choice(colours))))
        elif roll < 0.6:  # same colour, another category
            chosen.append((str(rng.choice(categories)), first[1]))
        else:
            chosen.append((str(rng.choice(categories)), str(rng.choice(colours))))
    low, high = OBJECT_SIZE
    first_size = float(rng.uniform(low, high))
    out = []
    for k, (category, colour) in enumerate(chosen):
        texture = "plain" if rng.random() < 0.6 else str(rng.choice(TEXTURES[1:]))
        size = first_size if k == 0 else float(rng.uniform(low, high))
        if k > 0 and category == first[0] and rng.random() < 0.35:  # a clearly bigger or smaller twin: "the big star"
            size = first_size / 1.7 if first_size / 1.7 >= low else min(first_size * 1.7, high)
        out.append((category, colour, texture, size))
    return out


def _place(rng, specs, size: int) -> list[_Layer]:
    """Layers back to front at random places; overlaps small enough that every object stays mostly visible."""
    layers, boxes = [], []
    for category, colour, texture, diameter in specs:
        radius = diameter * size / 2
        for _ in range(30):
            center = rng.uniform(radius * 0.9, size - radius * 0.9, 2)
            box = (center[0] - radius, center[1] - radius, center[0] + radius, center[1] + radius)
            if all(_box_overlap(box, other) <= MAX_OVERLAP for other in boxes):
                break
        else:
            continue  # no room left: the scene has fewer objects
        angle = np.deg2rad(rng.uniform(-1, 1) * MAX_ROTATION.get(category, 180))
        patch_alpha, (y0, x0) = _shape_alpha(category, center, radius, angle, rng.uniform(0.88, 1.12), size)
        anchor = np.array(COLOURS[colour], np.float32)
        rgb = np.clip(anchor + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, 3), 0, 255).astype(np.float32)
        h, w = patch_alpha.shape
        alpha = np.zeros((size, size), np.float32)
        alpha[y0 : y0 + h, x0 : x0 + w] = patch_alpha
        region = (slice(y0, y0 + h), slice(x0, x0 + w))
        layers.append(_Layer(category, colour, texture, diameter, alpha, _paint(rgb, texture, (h, w), rng), region))
        boxes.append(box)
    return layers


def _box_overlap(a, b) -> float:
    """Intersection over the smaller box's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller


def _visible(layers: list[_Layer]) -> list[np.ndarray]:
    """Per layer, the coverage left after the layers above it: alpha_k * prod_{j>k} (1 - alpha_j)."""
    out, above = [], np.ones_like(layers[0].alpha)
    for layer in reversed(layers):
        out.append(layer.alpha * above)
        above = above * (1.0 - layer.alpha)
    return out[::-1]


FULL_FRAME = (slice(None), slice(None))


def _composite(background: np.ndarray, layers: list[_Layer], skip: int | None = None,
               region: tuple[slice, slice] = FULL_FRAME) -> np.ndarray:
    """Layers over the background, back to front, within `region` (rows, columns) of the frame."""
    size = background.shape[0]
    (top, bottom, _), (left, right, _) = (r.indices(size) for r in region)
    out = background[region].copy()
    for k, layer in enumerate(layers):
        (y0, y1, _), (x0, x1, _) = (r.indices(size) for r in layer.box)
        ys, ye, xs, xe = max(y0, top), min(y1, bottom), max(x0, left), min(x1, right)
        if k == skip or ys >= ye or xs >= xe:
            continue
        a = layer.alpha[ys:ye, xs:xe][..., None]
        paint = layer.paint[ys - y0 : ye - y0, xs - x0 : xe - x0]
        dst = out[ys - top : ye - top, xs - left : xe - left]
        out[ys - top : ye - top, xs - left : xe - left] = dst * (1.0 - a) + paint * a
    return out


def lighting_gain(rng, size: int) -> np.ndarray:
    """(S, S, 3) float32 per-pixel gain: a linear lighting ramp times a colour cast."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    angle, strength = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.15)
    # a linear ramp is a row term plus a column term
    ramp = (1.0 + strength * np.sin(angle) * coords)[:, None] + (strength * np.cos(angle) * coords)[None, :]
    return (ramp[..., None] * rng.uniform(0.94, 1.06, 3)).astype(np.float32)


def sensor_offset(rng, size: int, sigma: float | None = None) -> np.ndarray:
    """(S, S, 1) float32 sensor noise (standard deviation `sigma`, None = drawn in 0..3) plus the 0.5 that makes
    `apply_camera`'s truncating cast round to nearest."""
    noise = rng.standard_normal((size, size, 1), dtype=np.float32)
    return noise * np.float32(rng.uniform(0, 3.0) if sigma is None else sigma) + np.float32(0.5)


def apply_camera(img: np.ndarray, gain: np.ndarray, offset: np.ndarray,
                 region: tuple[slice, slice] = FULL_FRAME) -> np.ndarray:
    """img * gain + offset within `region`, as uint8: a per-pixel function, so equal inputs give equal outputs."""
    out = img * gain[region]
    out += offset[region]
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


def _camera(rng, size: int):
    """Per-pixel effects shared by image and target: lighting ramp x colour cast, plus sensor noise."""
    gain = lighting_gain(rng, size)
    offset = sensor_offset(rng, size)
    return lambda img, region=FULL_FRAME: apply_camera(img, gain, offset, region)


def _scene_objects(layers: list[_Layer], visible: list[np.ndarray], size: int) -> list[SceneObject]:
    objects = []
    for layer, vis in zip(layers, visible):
        moments = cv2.moments(vis)
        cx, cy = moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]
        objects.append(
            SceneObject(layer.category, layer.colour, layer.texture, round(layer.size, 4),
                        round(float(cx) / size, 4), round(float(cy) / size, 4))
        )
    return objects


def scene(rng, size: int, negative: bool = False, spoken: bool = False):
    """Draw a scene and its expression: (background, layers, visible, objects, index, expression).

    background (S, S, 3) float32, layers back to front (`_Layer`), visible coverage per layer, the objects as the
    expression generator sees them, the referred layer's index (None for a negative) and the Expression. The
    stills (`render_sample`) and the video clips (`sahm_core.data.video`) both start from here.
    """
    while True:
        background = _background(rng, size)
        layers = _place(rng, _choose_objects(rng), size)
        if len(layers) < 2:
            continue
        visible = _visible(layers)
        objects = _scene_objects(layers, visible, size)
        if negative:
            return background, layers, visible, objects, None, describe_absent(objects, rng, spoken)
        index = int(rng.integers(len(layers)))
        if visible[index].sum() < 0.7 * layers[index].alpha.sum():
            continue  # too hidden to be worth naming
        expression = describe(objects, index, rng, spoken)
        if expression is not None:
            return background, layers, visible, objects, index, expression


def render_sample(seed: int, size: int = 256, negative_fraction: float = 0.15, spoken: bool = False) -> Sample:
    """One scene from a seed: image, target (scene without the named object), mask, expression and its tags.

    spoken: the expression in the training phrasing (command frames and speech effects) instead of the plain one
    (see expressions._as_command).
    """
    if not 0.0 <= negative_fraction <= 1.0:
        raise ValueError(f"negative_fraction must be in [0, 1], got {negative_fraction}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    rng = np.random.default_rng(seed)
    negative = bool(rng.random() < negative_fraction)
    background, layers, visible, objects, index, expression = scene(rng, size, negative, spoken)
    camera = _camera(rng, size)
    if negative:
        image = camera(_composite(background, layers))
        return Sample(image, image.copy(), np.zeros((size, size), np.uint8), expression.text, expression.tags,
                      True, objects, None, seed, [list(wt) for wt in expression.phrase])
    mask = (visible[index] >= 0.5).astype(np.uint8)
    # Cut the referred layer's faint antialiasing fringe to one pixel around its mask (see module docstring).
    layers[index].alpha *= cv2.dilate(mask, np.ones((3, 3), np.uint8)).astype(np.float32)
    image = camera(_composite(background, layers))
    # Only the referred layer's box can differ: re-render just that box without the layer.
    target = image.copy()
    box = layers[index].box
    target[box] = camera(_composite(background, layers, skip=index, region=box), box)
    return Sample(image, target, mask * 255, expression.text, expression.tags, False, objects, index, seed,
                  [list(wt) for wt in expression.phrase])


def split_plan(n: int, seed: int, val_fraction: float, test_fraction: float) -> list[tuple[int, str, int]]:
    """(index, split, sample seed) for each of n samples; sample seeds are distinct, so splits never share a scene."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"val/test fractions must be >= 0 and sum below 1, got {val_fraction}, {test_fraction}")
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    n_train = n - n_val - n_test
    states = np.random.SeedSequence(seed).generate_state(n, np.uint64)
    seeds = [int(s >> np.uint64(1)) for s in states]  # 63-bit, fits every signed int64 consumer
    if len(set(seeds)) != n:
        raise RuntimeError(f"seed collision for --seed {seed}; choose another")
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    return list(zip(range(n), splits, seeds))


def _write_sample(job: tuple[Path, int, str, int, int, float]) -> tuple[dict, float]:
    """Render and write one sample; returns its ref and the CPU seconds it took."""
    start = time.process_time()
    root, index, split, seed, size, negative_fraction = job
    # Spoken phrasing is training augmentation; val and test keep the plain phrasing, the reference that
    # `sahm make-data rephrase` turns into held-out and speech-style versions.
    sample = render_sample(seed, size, negative_fraction, spoken=split == "train")
    stem = f"syn{index:07d}"
    paths = write_example(root, stem, sample.image, sample.target, sample.mask)
    ref = {"id": stem, **paths, "text": sample.text, "split": split, "negative": sample.negative,
           "tags": sample.tags, "phrase": sample.phrase, "seed": seed}
    return ref, time.process_time() - start


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would fight the other workers
    _photos()


@dataclass
class Throughput:
    samples_per_s: float  # wall clock, as the machine's load allowed
    cpu_ms_per_sample: float  # CPU time one worker spends per sample (independent of other load)
    workers: int

    @property
    def unloaded_samples_per_s(self) -> float:
        """What the workers would reach with a core each to themselves."""
        return self.workers * 1000.0 / self.cpu_ms_per_sample

    def __str__(self) -> str:
        return (f"{self.samples_per_s:.1f} samples/s wall with {self.workers} workers; "
                f"{self.cpu_ms_per_sample:.1f} CPU ms/sample = {self.unloaded_samples_per_s:.0f} samples/s "
                f"on {self.workers} free cores")


def make_dataset(out: Path, n: int, seed: int, size: int = 256, workers: int = 2, negative_fraction: float = 0.15,
                 val_fraction: float = 0.1, test_fraction: float = 0.1) -> tuple[Path, Throughput]:
    """Write n synthetic samples in the dataset layout; returns (refs.jsonl path, throughput)."""
    import multiprocessing

    from tqdm import tqdm

    out = Path(out)
    make_folders(out)
    jobs = [(out, i, split, s, size, negative_fraction)
            for i, split, s in split_plan(n, seed, val_fraction, test_fraction)]
    start = time.perf_counter()
    if workers <= 1:
        _worker_init()
        results = [_write_sample(job) for job in tqdm(jobs, desc="synthetic", unit="sample")]
    else:
        # spawn, not fork: the caller may run threads (DDS, ONNX Runtime, torch's pools) that a forked child
        # inherits mid-lock (a test process does)
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
            results = list(tqdm(pool.imap(_write_sample, jobs, chunksize=16), total=n, desc="synthetic", unit="sample"))
    wall = time.perf_counter() - start
    cpu = sum(seconds for _, seconds in results)
    throughput = Throughput(n / wall, 1000.0 * cpu / n, max(1, workers))
    return write_refs(out, [ref for ref, _ in results]), throughput
