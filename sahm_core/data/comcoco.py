"""ComCOCO builder (paper section 3.1 and appendix B): composite a RefCOCO+ object onto a similar-scene COCO image.

Steps, as far as they run offline and without people in the loop:

1. Scene matching. Images and objects fall into the 17 category clusters of the
   paper's Table 10 (an image takes the cluster most of its annotated objects
   belong to). Within the object's cluster, the Jaccard similarity between the
   object's expression words and all expression words of a candidate image is
   computed; the five least similar images are the background candidates, so
   the pasted object's expressions cannot fit anything already there. Ties go to
   the less used background, then at random (seeded), and a background serves at
   most `max_background_uses` pairs, so a cluster's first image ids do not take all.
2. Object placement. Each pasted object gets a size class (COCO: small < 32^2 px,
   medium < 96^2, large) chosen to keep the build's mix at the paper's 11/53/36 %,
   within what the object allows (at most `max_upscale` times its side, at most
   `max_cover` of the frame). It lands where it hides little of the background's
   annotated objects (`max_overlap`, `max_hidden`: composites that cannot are
   rejected) and, for categories that stand on the ground, with its bottom edge
   at the height where the background's standing objects touch the ground (or in
   the lower part of the frame when there are none). GracoNet is not reproduced.
3. Style consistency. Lab colour statistics of the object move toward those
   around the placement, and its alpha is feathered inside its outline (a
   statistics transfer standing in for the Harmonizer network). Every changed
   pixel lies inside the pasted region, which is the mask.
4. Expressions (the paper's second manual check, made automatic). A RefCOCO+
   sentence naming a second object ("man holding umbrella") is kept only if that
   object was pasted along (it lies inside the referent's mask, as a worn tie does);
   otherwise it is dropped. ComCOCO adds spatial expressions computed from the
   placement (sahm_core/data/spatial.py); ComCOCO+ (`spatial=False`) has none.

The background image is the target. A fraction of pairs also yield a negative: an
image of the same split (of the same cluster when one fits) with no annotated
instance of the object's category nor of any category its sentence names, with
that sentence: the thing named is not there.

The build writes `comcoco_stats.json` beside refs.jsonl (pairs, distinct backgrounds
per 1,000 pairs, size mix against the paper's, negatives re-checked, rejections)
and prints it. `sahm make-data review DIR` pages through the result.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import pickle
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sahm_core.data.coco_names import category_words, named_categories
from sahm_core.data.layout import make_folders, read_rgb, write_example, write_refs
from sahm_core.data.spatial import Region, spatial_expressions
from sahm_core.lexicon import COCO_CATEGORIES, COLOURS, POSITION_WORDS, SIZE_WORDS, TEXTURE_WORDS

# Paper Table 10: 17 clusters over the 80 COCO categories.
CLUSTERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("person", ("person",)),
    ("traffic", ("bicycle", "car", "motorcycle", "bus", "truck")),
    ("airplane", ("airplane",)),
    ("train", ("train",)),
    ("boat", ("boat",)),
    ("municipal engineering", ("traffic light", "fire hydrant", "stop sign", "parking meter", "bench")),
    ("animal", ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe")),
    ("belongings", ("backpack", "umbrella", "handbag", "tie", "suitcase")),
    ("sport", ("frisbee", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "tennis racket")),
    ("snow sports", ("skis", "snowboard")),
    ("surfboard", ("surfboard",)),
    ("tableware", ("bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl")),
    ("natural foods", ("banana", "apple", "sandwich", "orange", "broccoli", "carrot")),
    ("processed foods", ("hot dog", "pizza", "donut", "cake")),
    ("large furniture", ("chair", "couch", "bed", "dining table", "toilet", "refrigerator")),
    ("middle furniture", ("tv", "microwave", "oven", "toaster", "sink")),
    ("miniature furniture", ("potted plant", "laptop", "mouse", "remote", "keyboard", "cell phone", "book", "clock",
                             "vase", "scissors", "teddy bear", "hair drier", "toothbrush")),
)
CLUSTER_OF = {category: index for index, (_, members) in enumerate(CLUSTERS) for category in members}
# Categories whose objects rest on the ground: their bottom edge must meet the floor of the new scene.
GROUND_CATEGORIES = frozenset(
    CLUSTERS[0][1] + CLUSTERS[1][1] + CLUSTERS[5][1] + CLUSTERS[6][1] + CLUSTERS[14][1]
    + ("train", "suitcase", "potted plant", "fire hydrant")
)
PAPER_SPLIT_SIZES = (20324, 1843, 1784)  # image pairs in train / val / test (paper section 3.2)
REFCOCO_SPLITS = {"train": "train", "val": "val", "testA": "test", "testB": "test", "test": "test"}
CANDIDATES = 5  # least similar backgrounds kept per object (paper: five)
SIZE_CLASSES = ("small", "medium", "large")
COCO_AREA_LIMITS = (32**2, 96**2)  # mask px: small below the first, large from the second (COCO's object sizes)
PAPER_SIZE_SHARES = (0.11, 0.53, 0.36)  # ComCOCO's small / medium / large objects (paper section 3.2)
PLACEMENT_TRIES = 60  # random positions tried per object size
SHRINKS = 3  # sizes tried per background: the planned area, then half of it, then a quarter
# A second object named in a sentence came along with the paste when this much of it lies inside the referent's mask.
CARRIED_ALONG = 0.5
# How far the object's Lab statistics move toward the background's, per channel (L, a, b): lighting mostly,
# colour only a little, so "the blue bowl" stays blue.
HARMONISE_STRENGTH = np.array([0.5, 0.15, 0.15], np.float32)
FEATHER_SIGMA = 1.2  # px, Gaussian softening of the alpha inside the outline
STATS_FILE = "comcoco_stats.json"
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class ComcocoConfig:
    """What a ComCOCO build may do; the defaults are the paper's where it gives a figure."""

    seed: int = 0
    max_pairs: int | None = None  # stop after this many image pairs
    split_sizes: tuple[int, int, int] | None = None  # pairs per train / val / test at most; None: the paper's
    negative_fraction: float = 0.15  # pairs that also give a negative sentence
    spatial: bool = True  # ComCOCO (appearance + spatial expressions); False: ComCOCO+ (appearance only)
    # The paper's 23,951 pairs over RefCOCO+'s 19,992 images use a background 1.2 times on average.
    max_background_uses: int = 3
    size_shares: tuple[float, float, float] = PAPER_SIZE_SHARES  # small / medium / large mix the build aims at
    min_area: int = 16**2  # px; a smaller paste is too few pixels to match its sentence
    max_upscale: float = 2.5  # a pasted object's side is at most this times its side in the source image
    max_cover: float = 0.35  # a pasted object covers at most this share of the frame
    max_overlap: float = 0.02  # share of the pasted pixels allowed on annotated background objects
    max_hidden: float = 0.2  # share of any one annotated background object the paste may hide

    def __post_init__(self):
        unit = {"negative_fraction": self.negative_fraction, "max_cover": self.max_cover,
                "max_overlap": self.max_overlap, "max_hidden": self.max_hidden}
        for name, value in unit.items():
            if not 0 <= value <= 1:
                raise ValueError(f"ComCOCO {name} must be in [0, 1], got {value}")
        if self.max_background_uses < 1:
            raise ValueError(f"ComCOCO max_background_uses must be at least 1, got {self.max_background_uses}")
        if len(self.size_shares) != 3 or min(self.size_shares) < 0 or abs(sum(self.size_shares) - 1) > 1e-6:
            raise ValueError(f"ComCOCO size_shares must be 3 non-negative shares summing to 1, got {self.size_shares}")
        if self.max_upscale < 1 or self.min_area < 16:
            raise ValueError(f"ComCOCO needs max_upscale >= 1 and min_area >= 16, got {self.max_upscale}, "
                             f"{self.min_area}")
        if self.split_sizes is not None:
            object.__setattr__(self, "split_sizes", tuple(self.split_sizes))
        object.__setattr__(self, "size_shares", tuple(self.size_shares))


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for refs(unc).p: plain lists, dicts, tuples, strings and numbers; any class is refused.

    A pickle can name any importable callable (os.system, ...) and have it called on load;
    refusing every global makes loading a downloaded file as safe as reading JSON.
    """

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(
            f"refused to load {module}.{name}: refs pickles may only hold plain lists/dicts/strings/numbers"
        )


PLAIN_TYPES = (dict, list, tuple, str, bytes, int, float, bool, type(None))


def load_refs(path: str | Path) -> list[dict]:
    """RefCOCO+ refs(unc).p through RestrictedUnpickler, checked to be a list of plain ref dicts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (RefCOCO+ folder should hold 'refs(unc).p')")
    with open(path, "rb") as f:
        refs = RestrictedUnpickler(f, encoding="utf-8", errors="replace").load()
    stack = [refs]
    while stack:
        value = stack.pop()
        if not isinstance(value, PLAIN_TYPES):
            raise pickle.UnpicklingError(f"{path}: unexpected {type(value).__name__} in refs")
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    if not isinstance(refs, list):
        raise ValueError(f"{path}: expected a list of refs, got {type(refs).__name__}")
    for k, ref in enumerate(refs):
        missing = {"ann_id", "image_id", "split", "sentences"} - set(ref) if isinstance(ref, dict) else {"a dict"}
        if missing:
            raise ValueError(f"{path}: ref #{k} lacks {', '.join(sorted(missing))}")
    return refs


def annotation_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """(H, W) bool from a COCO polygon list, uncompressed RLE or compressed RLE."""
    from pycocotools import mask as mask_utils

    seg = ann["segmentation"]
    if isinstance(seg, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(seg, height, width)
    else:  # compressed RLE
        counts = seg["counts"]
        rle = {"size": seg["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    decoded = mask_utils.decode(rle)
    return (decoded[..., 0] if decoded.ndim == 3 else decoded).astype(bool)


def words(sentence: str) -> set[str]:
    return set(_WORD.findall(sentence.lower()))


def weak_tags(sentence: str, category: str) -> list[list[str]]:
    """Word tags for a RefCOCO+ sentence: the category's words are IW, lexicon attribute words AW, the rest O.

    A lexicon heuristic (RefCOCO+ has no tags); the synthetic data carries exact ones.
    """
    identity = category_words(category)
    attributes = set(COLOURS) | set(SIZE_WORDS) | set(TEXTURE_WORDS) | set(POSITION_WORDS)
    out = []
    for word in sentence.split():
        bare = word.lower().strip(".,!?;:'\"")
        out.append([word, "IW" if bare in identity else "AW" if bare in attributes else "O"])
    return out


def size_class(area: float) -> str:
    """COCO's object size of a mask of `area` px: "small" (< 32^2), "medium" (< 96^2) or "large"."""
    return SIZE_CLASSES[int(np.searchsorted(COCO_AREA_LIMITS, area, side="right"))]


class SizePlanner:
    """Pasted areas that keep the build's small / medium / large mix at `cfg.size_shares`.

    Each object gets the class furthest behind its share among the classes it can reach (at least
    `min_area`, at most `max_upscale`^2 times its own area, `max_cover` of the frame and what fits),
    and an area log-uniform within that class. Counting what was actually pasted corrects for
    placements that had to shrink.
    """

    def __init__(self, cfg: ComcocoConfig):
        self.cfg = cfg
        self.counts: Counter[str] = Counter()

    def reachable(self, source_area: float) -> bool:
        return source_area * self.cfg.max_upscale**2 >= self.cfg.min_area

    def plan(self, rng: np.random.Generator, source_area: float, fit_area: float,
             frame_area: float) -> float | None:
        """An area in px for an object of `source_area` px on a frame of `frame_area`; None if none is allowed."""
        low = self.cfg.min_area
        high = min(source_area * self.cfg.max_upscale**2, self.cfg.max_cover * frame_area, fit_area)
        total = sum(self.counts.values())
        bounds = zip((0.0, *COCO_AREA_LIMITS), (*COCO_AREA_LIMITS, np.inf))
        options = []
        for name, (start, stop), share in zip(SIZE_CLASSES, bounds, self.cfg.size_shares):
            start, stop = max(start, low), min(stop, high)
            if start < stop:
                options.append((share * (total + 1) - self.counts[name], rng.random(), start, stop))
        if not options:
            return None
        _, _, start, stop = max(options)
        return float(np.exp(rng.uniform(np.log(start), np.log(stop))))

    def record(self, area: float) -> None:
        self.counts[size_class(area)] += 1


@dataclass
class _Object:
    ann: dict
    category: str
    split: str  # train / val / test
    sentences: list[str]


class _Coco:
    """The instances file: images, annotations per image, category names."""

    def __init__(self, coco_dir: Path):
        ann_path = coco_dir / "annotations" / "instances_train2014.json"
        self.image_dir = coco_dir / "train2014"
        if not ann_path.is_file():
            raise FileNotFoundError(f"{ann_path} not found: --coco must hold annotations/instances_train2014.json")
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"{self.image_dir} not found: --coco must hold the train2014/ images")
        with open(ann_path, encoding="utf-8") as f:
            data = json.load(f)
        self.images = {img["id"]: img for img in data["images"]}
        self.category = {c["id"]: c["name"] for c in data["categories"]}
        unknown = sorted(set(self.category.values()) - set(COCO_CATEGORIES))
        if unknown:
            raise ValueError(f"{ann_path}: categories not in COCO's 80: {', '.join(unknown)}")
        self.anns = defaultdict(list)
        self.ann_by_id = {}
        self.present: dict[int, set[str]] = defaultdict(set)  # image id -> categories annotated in it
        for ann in data["annotations"]:
            self.anns[ann["image_id"]].append(ann)
            self.ann_by_id[ann["id"]] = ann
            self.present[ann["image_id"]].add(self.category[ann["category_id"]])

    def image(self, image_id: int) -> np.ndarray:
        path = self.image_dir / self.images[image_id]["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"{path} (image {image_id}) not found")
        return read_rgb(path)

    def mask(self, ann: dict) -> np.ndarray:
        img = self.images[ann["image_id"]]
        return annotation_mask(ann, img["height"], img["width"])

    def cluster(self, image_id: int) -> int:
        """The cluster most of the image's annotated objects belong to (ties: the larger total area)."""
        votes = Counter()
        for ann in self.anns[image_id]:
            votes[CLUSTER_OF[self.category[ann["category_id"]]]] += 1 + ann.get("area", 0) * 1e-9
        return votes.most_common(1)[0][0]

    def carried_along(self, ann: dict, category: str) -> bool:
        """An annotated `category` object of ann's image lies mostly inside ann's mask, so pasting ann pastes it."""
        referent = None
        for other in self.anns[ann["image_id"]]:
            if other is ann or self.category[other["category_id"]] != category:
                continue
            referent = self.mask(ann) if referent is None else referent
            named = self.mask(other)
            if named.any() and (named & referent).sum() >= CARRIED_ALONG * named.sum():
                return True
        return False


def least_similar(object_words: set[str], candidates: dict[int, set[str]], rng: np.random.Generator,
                  count: int = CANDIDATES, uses: Counter | None = None, max_uses: int | None = None) -> list[int]:
    """The `count` candidate images whose expression words have the lowest Jaccard similarity with the object's.

    Ties go to the image used least so far, then at random; images already used `max_uses` times are out.
    """
    uses = uses if uses is not None else Counter()

    def jaccard(other: set[str]) -> float:
        union = len(object_words | other)
        return len(object_words & other) / union if union else 0.0

    open_ids = [i for i in candidates if max_uses is None or uses[i] < max_uses]
    keys = zip((jaccard(candidates[i]) for i in open_ids), (uses[i] for i in open_ids), rng.random(len(open_ids)),
               open_ids)
    return [key[-1] for key in heapq.nsmallest(count, keys)]


def overlap_fractions(obj_mask: np.ndarray, top_left: tuple[int, int], occupied: np.ndarray,
                      annotated: list[tuple[np.ndarray, int]]) -> tuple[float, float]:
    """(share of the pasted pixels on annotated objects, largest share of one annotated object hidden).

    obj_mask (h, w) bool pasted at top_left on a frame whose annotated objects are `annotated`
    [(mask (H, W) bool, its pixel count)] and whose union is `occupied` (H, W).
    """
    y, x = top_left
    h, w = obj_mask.shape
    coverage = float((occupied[y : y + h, x : x + w] & obj_mask).sum() / max(obj_mask.sum(), 1))
    hidden = max(((m[y : y + h, x : x + w] & obj_mask).sum() / max(area, 1) for m, area in annotated), default=0.0)
    return coverage, float(hidden)


def harmonise(obj: np.ndarray, obj_mask: np.ndarray, context: np.ndarray) -> np.ndarray:
    """Move the object's Lab mean/std (over its mask) toward the context's; returns uint8 RGB like obj."""
    lab = cv2.cvtColor(obj.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    ctx = cv2.cvtColor(context.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab).reshape(-1, 3)
    inside = lab[obj_mask]
    mean_o, std_o = inside.mean(0), inside.std(0) + 1e-3
    mean_c, std_c = ctx.mean(0), ctx.std(0) + 1e-3
    mean_t = mean_o + HARMONISE_STRENGTH * (mean_c - mean_o)
    std_t = std_o + HARMONISE_STRENGTH * (std_c - std_o)
    moved = (lab - mean_o) / std_o * std_t + mean_t
    rgb = cv2.cvtColor(moved.astype(np.float32), cv2.COLOR_Lab2RGB)
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def _placement(rng, obj_mask: np.ndarray, occupied: np.ndarray, annotated: list[tuple[np.ndarray, int]],
               floor_rows: list[float], grounded: bool, cfg: ComcocoConfig):
    """Top-left (y, x) for the scaled object: hiding little of the annotated objects, on the floor if it stands."""
    h, w = obj_mask.shape
    bh, bw = occupied.shape
    if h > bh or w > bw:
        return None
    for _ in range(PLACEMENT_TRIES):
        x = int(rng.integers(0, bw - w + 1))
        if grounded:
            bottom = rng.choice(floor_rows) + rng.normal(0, 0.03 * bh) if floor_rows else rng.uniform(0.65, 0.98) * bh
            y = int(np.clip(round(bottom) - h, 0, bh - h))
        else:
            y = int(rng.integers(0, bh - h + 1))
        coverage, hidden = overlap_fractions(obj_mask, (y, x), occupied, annotated)
        if coverage <= cfg.max_overlap and hidden <= cfg.max_hidden:
            return y, x
    return None


def composite(background: np.ndarray, obj: np.ndarray, obj_mask: np.ndarray, top_left) -> tuple[np.ndarray, np.ndarray]:
    """Paste the harmonised, feathered object; returns (image, mask) with every changed pixel inside the mask."""
    y, x = top_left
    h, w = obj_mask.shape
    pad_y, pad_x = h // 2, w // 2  # context for harmonisation: the box around the placement, half again as large
    context = background[max(0, y - pad_y) : y + h + pad_y, max(0, x - pad_x) : x + w + pad_x]
    harmonised = harmonise(obj, obj_mask, context)
    inside = obj_mask.astype(np.float32)
    alpha = (cv2.GaussianBlur(inside, (0, 0), FEATHER_SIGMA) * inside)[..., None]  # soft edge, zero outside
    image = background.copy()
    region = image[y : y + h, x : x + w].astype(np.float32)
    blended = np.round(region * (1.0 - alpha) + harmonised.astype(np.float32) * alpha).astype(np.uint8)
    image[y : y + h, x : x + w] = np.where(obj_mask[..., None], blended, image[y : y + h, x : x + w])
    mask = np.zeros(background.shape[:2], np.uint8)
    mask[y : y + h, x : x + w] = obj_mask * 255
    return image, mask


def _scaled(source: np.ndarray, full: np.ndarray, box: tuple[int, int, int, int], scale: float):
    """The object's pixels and mask cropped to its box (y0, y1, x0, x1) and resized by `scale`."""
    y0, y1, x0, x1 = box
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
    pixels = cv2.resize(source[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    mask = cv2.resize(full[y0:y1, x0:x1].astype(np.float32), size, interpolation=cv2.INTER_LINEAR) >= 0.5
    return pixels, mask


def _objects(coco: _Coco, refs: list[dict], sizes: SizePlanner) -> tuple[list[_Object], list[str]]:
    """Usable objects, and the sentences dropped because they name an object that would not be pasted."""
    objects, dropped = [], []
    for ref in refs:
        ann = coco.ann_by_id.get(ref["ann_id"])
        split = REFCOCO_SPLITS.get(ref["split"])
        if ann is None or ann.get("iscrowd", 0) or not split or ref["image_id"] not in coco.images:
            continue
        if not sizes.reachable(ann.get("area", 0)):
            continue
        category = coco.category[ann["category_id"]]
        sentences = [s.get("sent") or s.get("raw", "") for s in ref["sentences"]]
        kept = []
        for sentence in (s.strip() for s in sentences if s and s.strip()):
            # "man holding umbrella": the umbrella is another annotation and stays behind, unless it lies inside
            # the man's mask (a worn tie). Naming something the composite lacks makes the sentence false.
            if all(coco.carried_along(ann, other) for other in named_categories(sentence) - {category}):
                kept.append(sentence)
            else:
                dropped.append(sentence)
        if kept:
            objects.append(_Object(ann, category, split, kept))
    return objects, dropped


@dataclass
class _Pair:
    image: np.ndarray  # (H, W, 3) composite
    mask: np.ndarray  # (H, W) uint8, 255 = pasted object
    area: int  # pasted pixels
    overlap: float  # share of them on annotated background objects
    hidden: float  # largest share of one annotated background object hidden
    others: list[Region]  # the background's annotated objects as left visible


def _make_pair(coco: _Coco, obj: _Object, source: np.ndarray, full: np.ndarray, background_id: int,
               rng: np.random.Generator, sizes: SizePlanner, cfg: ComcocoConfig):
    """The object pasted on the background as a _Pair, or None when no allowed size and place exists."""
    background = coco.image(background_id)
    bh, bw = background.shape[:2]
    rows, cols = np.nonzero(full.any(1))[0], np.nonzero(full.any(0))[0]
    box = (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1)
    source_area = int(full.sum())
    fit_area = source_area * min(bh / (box[1] - box[0]), bw / (box[3] - box[2])) ** 2
    area = sizes.plan(rng, source_area, fit_area, bh * bw)
    if area is None:
        return None
    annotated, occupied, floor_rows = [], np.zeros((bh, bw), bool), []
    for ann in coco.anns[background_id]:
        m = coco.mask(ann)
        annotated.append((m, int(m.sum())))
        occupied |= m
        if coco.category[ann["category_id"]] in GROUND_CATEGORIES:
            x, y, w, h = ann["bbox"]
            floor_rows.append(y + h)
    grounded = obj.category in GROUND_CATEGORIES
    for _ in range(SHRINKS):
        pixels, mask = _scaled(source, full, box, np.sqrt(area / source_area))
        if mask.sum() < cfg.min_area:
            return None
        top_left = _placement(rng, mask, occupied, annotated, floor_rows, grounded, cfg)
        if top_left is not None:
            overlap, hidden = overlap_fractions(mask, top_left, occupied, annotated)
            image, out_mask = composite(background, pixels, mask, top_left)
            pasted = out_mask > 0
            others = [Region.from_mask(coco.category[ann["category_id"]], m & ~pasted)
                      for ann, (m, _) in zip(coco.anns[background_id], annotated)]
            return _Pair(image, out_mask, int(pasted.sum()), overlap, hidden, [r for r in others if r])
        area /= 2
    return None


def _negative_background(coco: _Coco, obj: _Object, sentence: str, same_scene: list[int], same_split: list[int],
                         rng: np.random.Generator) -> int | None:
    """An image with no annotated instance of the object's category nor of any category the sentence names.

    A similar scene first (the harder negative), any image of the split after; a few random probes each,
    then a full scan, so a build over all of COCO does not scan every image for every negative.
    """
    forbidden = {obj.category} | named_categories(sentence)

    def clear(image_id: int) -> bool:
        return image_id != obj.ann["image_id"] and not forbidden & coco.present[image_id]

    for pool in (same_scene, same_split):
        if not pool:
            continue
        for image_id in rng.choice(pool, size=min(len(pool), 64), replace=False):
            if clear(int(image_id)):
                return int(image_id)
        found = [i for i in pool if clear(i)]
        if found:
            return int(found[int(rng.integers(len(found)))])
    return None


def build(coco_dir: str | Path, refcoco_dir: str | Path, out: str | Path, config: ComcocoConfig | None = None,
          **fields) -> Path:
    """Write ComCOCO-style pairs in the dataset layout and comcoco_stats.json; returns the refs.jsonl path.

    `fields` override the ComcocoConfig fields (seed=1, spatial=False, ...).
    """
    from tqdm import tqdm

    cfg = dataclasses.replace(config or ComcocoConfig(), **fields)
    coco = _Coco(Path(coco_dir))
    refs = load_refs(Path(refcoco_dir) / "refs(unc).p")
    sizes = SizePlanner(cfg)
    objects, dropped = _objects(coco, refs, sizes)
    if not objects:
        raise ValueError(f"no usable RefCOCO+ objects (non-crowd, at least {cfg.min_area} px once scaled by "
                         f"{cfg.max_upscale}, a sentence naming nothing left behind) in {refcoco_dir}")
    rng = np.random.default_rng(cfg.seed)
    image_words: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for obj in objects:  # every expression said about an image, per split
        for sentence in obj.sentences:
            image_words[obj.split][obj.ann["image_id"]] |= words(sentence)
    scenes: dict[tuple[str, int], dict[int, set[str]]] = defaultdict(dict)  # (split, cluster) -> image -> words
    for split, per_image in image_words.items():
        for image_id, image_vocabulary in per_image.items():
            scenes[split, coco.cluster(image_id)][image_id] = image_vocabulary
    caps = dict(zip(("train", "val", "test"), cfg.split_sizes or PAPER_SPLIT_SIZES))
    out = Path(out)
    make_folders(out)
    rows, made, uses, failures = [], Counter(), Counter(), Counter()
    for k in tqdm(rng.permutation(len(objects)), desc="comcoco", unit="object"):
        obj = objects[k]
        if made[obj.split] >= caps[obj.split] or (cfg.max_pairs is not None and sum(made.values()) >= cfg.max_pairs):
            continue
        cluster = CLUSTER_OF[obj.category]
        same_scene = {i: w for i, w in scenes[obj.split, cluster].items() if i != obj.ann["image_id"]}
        object_words = set().union(*(words(s) for s in obj.sentences))
        candidates = least_similar(object_words, same_scene, rng, uses=uses, max_uses=cfg.max_background_uses)
        source, full = coco.image(obj.ann["image_id"]), coco.mask(obj.ann)
        for background_id in candidates:
            pair = _make_pair(coco, obj, source, full, background_id, rng, sizes, cfg)
            if pair is None:
                failures["rejected_composites"] += 1
                continue
            stem = f"ccc{obj.ann['id']}_{background_id}"
            meta = {"ann_id": obj.ann["id"], "background_id": background_id, "category": obj.category,
                    "area": pair.area, "size": size_class(pair.area), "overlap": round(pair.overlap, 4),
                    "hidden": round(pair.hidden, 4)}
            paths = write_example(out, stem, pair.image, coco.image(background_id), pair.mask)
            expressions = [(f"{stem}_{j}", "appearance", s, weak_tags(s, obj.category))
                           for j, s in enumerate(obj.sentences)]
            if cfg.spatial:
                target = Region.from_mask(obj.category, pair.mask > 0)
                for kind, expression in spatial_expressions(target, pair.others, rng).items():
                    expressions.append((f"{stem}_{kind}", kind, expression.text, expression.tags))
            for ref_id, kind, text, tags in expressions:
                rows.append({"id": ref_id, **paths, "text": text, "split": obj.split, "negative": False,
                             "tags": tags, "comcoco": {**meta, "kind": kind}})
            uses[background_id] += 1
            sizes.record(pair.area)
            made[obj.split] += 1
            if rng.random() < cfg.negative_fraction:
                rows.extend(_negative(coco, obj, out, scenes, rng, failures))
            break
        else:
            failures["objects_unplaced"] += 1
    if not rows:
        raise ValueError("no object could be placed on any matching background; nothing written")
    refs_path = write_refs(out, rows)
    stats = build_stats(coco, rows, made, uses, sizes, dropped, failures, cfg)
    (out / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    print("comcoco pairs: " + ", ".join(f"{s} {made[s]}" for s in ("train", "val", "test")))
    print(format_stats(stats))
    return refs_path


def _negative(coco: _Coco, obj: _Object, out: Path, scenes, rng, failures: Counter) -> list[dict]:
    """The negative row for one of the object's sentences, on an image that holds nothing it names (or none)."""
    sentence = obj.sentences[int(rng.integers(len(obj.sentences)))]
    same_scene = list(scenes[obj.split, CLUSTER_OF[obj.category]])
    same_split = [i for (split, _), per_image in scenes.items() if split == obj.split for i in per_image]
    image_id = _negative_background(coco, obj, sentence, same_scene, same_split, rng)
    if image_id is None:
        failures["negatives_without_background"] += 1
        return []
    image = coco.image(image_id)
    stem = f"ccc{obj.ann['id']}_{image_id}_neg"
    paths = write_example(out, stem, image, image, np.zeros(image.shape[:2], np.uint8))
    meta = {"ann_id": obj.ann["id"], "background_id": image_id, "category": obj.category, "kind": "negative"}
    return [{"id": stem, **paths, "text": sentence, "split": obj.split, "negative": True,
             "tags": weak_tags(sentence, obj.category), "comcoco": meta}]


def build_stats(coco: _Coco, rows: list[dict], made: Counter, uses: Counter, sizes: SizePlanner,
                dropped: list[str], failures: Counter, cfg: ComcocoConfig) -> dict:
    """What a build made, for comcoco_stats.json; negatives are re-checked against the annotations here."""
    pairs = sum(uses.values())
    kinds = Counter(row["comcoco"]["kind"] for row in rows)
    bad_negatives = [row["id"] for row in rows if row["negative"] and (
        ({row["comcoco"]["category"]} | named_categories(row["text"])) & coco.present[row["comcoco"]["background_id"]])]
    total = max(sum(sizes.counts.values()), 1)
    return {
        "variant": "ComCOCO (appearance + spatial)" if cfg.spatial else "ComCOCO+ (appearance only)",
        "pairs": {"total": pairs, **{s: made[s] for s in ("train", "val", "test")}},
        "expressions": {kind: kinds[kind] for kind in ("appearance", "image", "object", "negative")},
        "backgrounds": {"distinct": len(uses), "per_1000_pairs": round(1000 * len(uses) / max(pairs, 1), 1),
                        "most_uses": max(uses.values(), default=0), "cap": cfg.max_background_uses},
        "sizes": {"counts": {c: sizes.counts[c] for c in SIZE_CLASSES},
                  "shares": {c: round(sizes.counts[c] / total, 3) for c in SIZE_CLASSES},
                  "paper_shares": dict(zip(SIZE_CLASSES, cfg.size_shares)),
                  "area_limits_px": list(COCO_AREA_LIMITS)},
        "negatives": {"count": kinds["negative"], "naming_something_present": len(bad_negatives),
                      "without_background": failures["negatives_without_background"]},
        "sentences_dropped_for_unpasted_context": {"count": len(dropped), "examples": dropped[:5]},
        "rejected_composites": failures["rejected_composites"],
        "objects_unplaced": failures["objects_unplaced"],
        "config": dataclasses.asdict(cfg),
    }


def format_stats(stats: dict) -> str:
    """The build's stats as a few lines for the terminal."""
    sizes, backgrounds, negatives = stats["sizes"], stats["backgrounds"], stats["negatives"]
    mix = " / ".join(f"{sizes['shares'][c]:.0%}" for c in SIZE_CLASSES)
    paper = " / ".join(f"{sizes['paper_shares'][c]:.0%}" for c in SIZE_CLASSES)
    expressions = ", ".join(f"{kind} {n}" for kind, n in stats["expressions"].items())
    return "\n".join((
        f"{stats['variant']}: {stats['pairs']['total']} pairs; expressions: {expressions}",
        f"backgrounds: {backgrounds['distinct']} distinct, {backgrounds['per_1000_pairs']} per 1,000 pairs, "
        f"at most {backgrounds['most_uses']} uses each (cap {backgrounds['cap']})",
        f"object sizes small / medium / large: {mix} (paper {paper}; counts {sizes['counts']})",
        f"negatives: {negatives['count']}, naming something present: {negatives['naming_something_present']}, "
        f"no clear background: {negatives['without_background']}",
        f"sentences dropped for naming what was not pasted: {stats['sentences_dropped_for_unpasted_context']['count']}"
        f"; composites rejected (size/overlap): {stats['rejected_composites']}; "
        f"objects placed nowhere: {stats['objects_unplaced']}",
    ))
