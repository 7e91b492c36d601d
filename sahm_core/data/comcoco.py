"""ComCOCO builder (paper section 3.1): composite a RefCOCO+ object onto a similar-scene COCO image.

Steps, as far as they run offline and without people in the loop:

1. Scene matching. Images and objects fall into the 17 category clusters of the
   paper's Table 10 (an image takes the cluster most of its annotated objects
   belong to). Within the object's cluster, the Jaccard similarity between the
   object's expression words and all expression words of a candidate image is
   computed; the five least similar images are the background candidates, so
   the pasted object's expressions cannot fit anything already there.
2. Object placement. The object (COCO polygon or RLE mask, decoded with
   pycocotools) keeps its relative size (+-20%), lands where it overlaps no
   annotated background object, and, for categories that stand on the ground,
   with its bottom edge at the height where the background's standing objects
   touch the ground (or in the lower part of the frame when there are none).
   GracoNet and the manual checks of the paper are not reproduced.
3. Style consistency. Lab colour statistics of the object move toward those
   around the placement, and its alpha is feathered inside its outline (a
   statistics transfer standing in for the Harmonizer network). Every changed
   pixel lies inside the pasted region, which is the mask.

The background image is the target. Each pair keeps all of the object's
RefCOCO+ sentences; a fraction of pairs also yield a negative (the untouched
background with the object's sentence: the thing named is not there).
"""

from __future__ import annotations

import json
import pickle
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sahm_core.data.layout import make_folders, read_rgb, write_example, write_refs
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
MIN_OBJECT_AREA = 900  # px; smaller objects are too small to composite convincingly
# How far the object's Lab statistics move toward the background's, per channel (L, a, b): lighting mostly,
# colour only a little, so "the blue bowl" stays blue.
HARMONISE_STRENGTH = np.array([0.5, 0.15, 0.15], np.float32)
FEATHER_SIGMA = 1.2  # px, Gaussian softening of the alpha inside the outline
PERSON_WORDS = ("man", "woman", "guy", "girl", "boy", "lady", "kid", "child", "person", "player", "people", "baby")
_WORD = re.compile(r"[a-z]+")


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
    identity = set(category.split()) | {w + "s" for w in category.split()}
    if category == "person":
        identity |= set(PERSON_WORDS)
    attributes = set(COLOURS) | set(SIZE_WORDS) | set(TEXTURE_WORDS) | set(POSITION_WORDS)
    out = []
    for word in sentence.split():
        bare = word.lower().strip(".,!?;:'\"")
        out.append([word, "IW" if bare in identity else "AW" if bare in attributes else "O"])
    return out


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
        for ann in data["annotations"]:
            self.anns[ann["image_id"]].append(ann)
            self.ann_by_id[ann["id"]] = ann

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


def least_similar(object_words: set[str], candidates: dict[int, set[str]], count: int = CANDIDATES) -> list[int]:
    """The `count` candidate images whose expression words have the lowest Jaccard similarity with the object's."""

    def jaccard(other: set[str]) -> float:
        union = len(object_words | other)
        return len(object_words & other) / union if union else 0.0

    return sorted(candidates, key=lambda image_id: (jaccard(candidates[image_id]), image_id))[:count]


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


def _placement(rng, obj_mask: np.ndarray, background_shape, occupied: np.ndarray, floor_rows: list[float],
               grounded: bool):
    """Top-left (y, x) for the scaled object: off the annotated objects, on the floor if it stands; or None."""
    h, w = obj_mask.shape
    bh, bw = background_shape
    if h > bh or w > bw:
        return None
    area = obj_mask.sum()
    for _ in range(60):
        x = int(rng.integers(0, bw - w + 1))
        if grounded:
            bottom = rng.choice(floor_rows) + rng.normal(0, 0.03 * bh) if floor_rows else rng.uniform(0.65, 0.98) * bh
            y = int(np.clip(round(bottom) - h, 0, bh - h))
        else:
            y = int(rng.integers(0, bh - h + 1))
        if (occupied[y : y + h, x : x + w] & obj_mask).sum() <= 0.02 * area:
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


def _cut_out(coco: _Coco, obj: _Object, background_shape, rng):
    """The object's pixels and mask cropped to its box and scaled to keep its relative size (+-20%)."""
    source = coco.image(obj.ann["image_id"])
    full = coco.mask(obj.ann)
    rows, cols = np.nonzero(full.any(1))[0], np.nonzero(full.any(0))[0]
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    relative = np.sqrt(background_shape[0] * background_shape[1] / (full.shape[0] * full.shape[1]))
    scale = relative * rng.uniform(0.8, 1.2)
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
    pixels = cv2.resize(source[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    mask = cv2.resize(full[y0:y1, x0:x1].astype(np.float32), size, interpolation=cv2.INTER_LINEAR) >= 0.5
    return pixels, mask


def _objects(coco: _Coco, refs: list[dict]) -> list[_Object]:
    objects = []
    for ref in refs:
        ann = coco.ann_by_id.get(ref["ann_id"])
        if ann is None or ann.get("iscrowd", 0) or ann.get("area", 0) < MIN_OBJECT_AREA:
            continue
        sentences = [s.get("sent") or s.get("raw", "") for s in ref["sentences"]]
        sentences = [s.strip() for s in sentences if s and s.strip()]
        split = REFCOCO_SPLITS.get(ref["split"])
        if sentences and split and ref["image_id"] in coco.images:
            objects.append(_Object(ann, coco.category[ann["category_id"]], split, sentences))
    return objects


def build(coco_dir: str | Path, refcoco_dir: str | Path, out: str | Path, seed: int = 0, max_pairs: int | None = None,
          split_sizes: tuple[int, int, int] | None = None, negative_fraction: float = 0.15) -> Path:
    """Write ComCOCO-style pairs in the dataset layout; returns the refs.jsonl path."""
    from tqdm import tqdm

    coco = _Coco(Path(coco_dir))
    refs = load_refs(Path(refcoco_dir) / "refs(unc).p")
    objects = _objects(coco, refs)
    if not objects:
        raise ValueError(f"no usable RefCOCO+ objects (non-crowd, area >= {MIN_OBJECT_AREA} px) in {refcoco_dir}")
    rng = np.random.default_rng(seed)
    image_words: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for obj in objects:  # every expression said about an image, per split
        for sentence in obj.sentences:
            image_words[obj.split][obj.ann["image_id"]] |= words(sentence)
    scenes: dict[tuple[str, int], dict[int, set[str]]] = defaultdict(dict)  # (split, cluster) -> image -> words
    for split, per_image in image_words.items():
        for image_id, image_vocabulary in per_image.items():
            scenes[split, coco.cluster(image_id)][image_id] = image_vocabulary
    caps = dict(zip(("train", "val", "test"), split_sizes or PAPER_SPLIT_SIZES))
    out = Path(out)
    make_folders(out)
    rows, made = [], Counter()
    order = rng.permutation(len(objects))
    for k in tqdm(order, desc="comcoco", unit="object"):
        obj = objects[k]
        if made[obj.split] >= caps[obj.split] or (max_pairs is not None and sum(made.values()) >= max_pairs):
            continue
        same_scene = {i: w for i, w in scenes[obj.split, CLUSTER_OF[obj.category]].items() if i != obj.ann["image_id"]}
        object_words = set().union(*(words(s) for s in obj.sentences))
        for background_id in least_similar(object_words, same_scene):
            pair = _make_pair(coco, obj, background_id, rng)
            if pair is None:
                continue
            stem = f"ccc{obj.ann['id']}_{background_id}"
            image, target, mask = pair
            paths = write_example(out, stem, image, target, mask)
            for j, sentence in enumerate(obj.sentences):
                rows.append({"id": f"{stem}_{j}", **paths, "text": sentence, "split": obj.split, "negative": False,
                             "tags": weak_tags(sentence, obj.category)})
            if rng.random() < negative_fraction:
                neg = write_example(out, f"{stem}_neg", target, target, np.zeros_like(mask))
                sentence = obj.sentences[int(rng.integers(len(obj.sentences)))]
                rows.append({"id": f"{stem}_neg", **neg, "text": sentence, "split": obj.split, "negative": True,
                             "tags": weak_tags(sentence, obj.category)})
            made[obj.split] += 1
            break
    if not rows:
        raise ValueError("no object could be placed on any matching background; nothing written")
    print("comcoco pairs: " + ", ".join(f"{s} {made[s]}" for s in ("train", "val", "test")))
    return write_refs(out, rows)


def _make_pair(coco: _Coco, obj: _Object, background_id: int, rng):
    """(image, target, mask) for the object pasted on the background, or None when it does not fit."""
    background = coco.image(background_id)
    bh, bw = background.shape[:2]
    pixels, mask = _cut_out(coco, obj, (bh, bw), rng)
    if mask.sum() < 16:
        return None
    occupied = np.zeros((bh, bw), bool)
    floor_rows = []
    for ann in coco.anns[background_id]:
        occupied |= coco.mask(ann)
        if coco.category[ann["category_id"]] in GROUND_CATEGORIES:
            x, y, w, h = ann["bbox"]
            floor_rows.append(y + h)
    top_left = _placement(rng, mask, (bh, bw), occupied, floor_rows, obj.category in GROUND_CATEGORIES)
    if top_left is None:
        return None
    image, out_mask = composite(background, pixels, mask, top_left)
    return image, background, out_mask
