"""Copy-paste multiplication of a robot's own recordings (issue 22): objects cut from their pairs, pasted into the
other static views of the same split, ComCOCO-style.

`sahm make-data multiply DIR --n N --seed S` reads what `sahm make-data from-bag` wrote (docs/architecture.md,
"Data on disk": DIR/views.jsonl, DIR/objects.jsonl) and appends N composites (and negatives) to DIR/refs.jsonl in
the trainer's layout (sahm_core/data/layout.py).

What is known about a view. Views carry no object masks; what they hold is known only through the pairs: an
object is in its `view` and not in its `empty_view`, and the two differ by that object alone, so every other object
known in (or known absent from) one of them is so in the other too, at the same pixels. `known_contents`
propagates this along chains of pairs; views linked by pairs form a "component" (one camera pose: the masks of its
objects hold in each of its views). Whatever a view holds beyond that is unknown.

One composite: a labelled object, and a static view of the object's split that is not its own view and is not
known to hold it, nor, where the pairs do not tell, looks as if it did (its cutout matches somewhere in it:
`PRESENCE_MATCH`) (its `empty_view` is allowed, but the object must land off its own footprint there: pasting it
back where it stood would only repeat the real pair). The cutout (its pixels and its objects.jsonl mask), scaled a
little, lands where it covers little of the objects known in that view (comcoco._placement and overlap_fractions,
with its bottom edge at a row where objects of the component stood), with comcoco.composite's Lab harmonisation and
feathered alpha: every changed pixel is inside the pasted mask. The view itself is the target. A fraction of the
composites go on synthetic backgrounds (synthetic._background) instead.

Expressions come from the object's label, a noun phrase ("the red mug": colour words come with it) with spatial
words computed from the placement (sahm_core/data/spatial.py: "the red mug on the left", "the red mug next to the
blue book", the anchor a labelled object known in the view). The bare label is kept only when no object known in
the view carries the same label; a composite with no expression true of it alone is not written. Train rows are
in the spoken phrasing, val and test in the plain one (expressions._as_command, as the synthetic generator does).

Negatives: an object's label on a view of its split known not to hold it (nor any same-label object of that bag;
nor any known same-label object at all), image = target = the view, empty mask, `negative: true`.

Splits: an example takes its object's split and only views of that split (objects whose own views carry another
split are skipped and counted), so no held-out view lends its pixels to training.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sahm_core.data.comcoco import ComcocoConfig, _placement, _scaled, composite, overlap_fractions
from sahm_core.data.expressions import Expression, _as_command
from sahm_core.data.layout import (
    OBJECTS_FILE,
    REFS_FILE,
    SPLITS,
    VIEWS_FILE,
    make_folders,
    read_jsonl,
    read_mask,
    read_refs,
    read_rgb,
    write_example,
    write_refs,
)
from sahm_core.data.spatial import Region, image_based, object_based
from sahm_core.data.speech import ARTICLES, Word
from sahm_core.lexicon import COLOURS, POSITION_WORDS, SIZE_WORDS, TEXTURE_WORDS

VIEW_KEYS = {"id": str, "image": str, "split": str}
OBJECT_KEYS = {"id": str, "view": str, "empty_view": str, "image": str, "mask": str}
ATTRIBUTE_WORDS = frozenset(COLOURS) | frozenset(SIZE_WORDS) | frozenset(TEXTURE_WORDS) | frozenset(POSITION_WORDS)
FUNCTION_WORDS = frozenset(ARTICLES) | {"of", "with", "on", "in", "and", "from", "for"}
# A view whose contents are not known from the pairs may hold the object already (a stretch that formed no pair):
# it is taken to when the object's cutout matches somewhere in it with at least this masked normalised correlation,
# computed with the cutout's short side at MATCH_SIDE px. A false alarm only costs a candidate view.
PRESENCE_MATCH = 0.8
MATCH_SIDE = 24
VIEW_TRIES = 4  # views tried per composite before the attempt counts as failed
ATTEMPTS_PER_EXAMPLE = 4  # attempts allowed per composite asked for, before giving up on the rest
_WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class CopyPasteConfig:
    """How a composite may be made; overlap limits as ComCOCO's (one source for them)."""

    scale: tuple[float, float] = (0.85, 1.2)  # the cutout's side times this; a little, the camera is the same
    min_area: int = 100  # px; a smaller paste is too few pixels to name
    max_overlap: float = ComcocoConfig.max_overlap  # share of the pasted pixels on objects known in the view
    max_hidden: float = ComcocoConfig.max_hidden  # share of any one known object the paste may hide

    def __post_init__(self):
        low, high = self.scale
        if not 0 < low <= high:
            raise ValueError(f"copy-paste scale must satisfy 0 < low <= high, got {self.scale}")
        if not (0 <= self.max_overlap <= 1 and 0 <= self.max_hidden <= 1):
            raise ValueError(f"copy-paste max_overlap and max_hidden must be in [0, 1], got {self.max_overlap}, "
                             f"{self.max_hidden}")
        if self.min_area < 1:
            raise ValueError(f"copy-paste min_area must be positive, got {self.min_area}")


@dataclass(frozen=True)
class View:
    id: str
    image: str
    split: str
    bag: str


@dataclass(frozen=True)
class Object:
    id: str
    view: str
    empty_view: str
    mask: str
    label: str | None
    split: str


def _read_jsonl(path: Path, keys: dict[str, type], what: str) -> list[dict]:
    rows = read_jsonl(path, "a from-bag folder (sahm make-data from-bag)")
    for number, row in enumerate(rows, start=1):
        where = f"{path}, row {number}"
        for key, kind in keys.items():
            if not isinstance(row.get(key), kind):
                raise ValueError(f"{where}: {key!r} must be a {kind.__name__} (required: {', '.join(keys)})")
        if "split" in row and row["split"] not in SPLITS:
            raise ValueError(f"{where}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
    if not rows:
        raise ValueError(f"{path} lists no {what}")
    return rows


def read_folder(root: Path) -> tuple[dict[str, View], list[Object]]:
    """views.jsonl and objects.jsonl, checked: ids unique, every object's views listed."""
    views: dict[str, View] = {}
    for row in _read_jsonl(root / VIEWS_FILE, VIEW_KEYS, "static views"):
        if row["id"] in views:
            raise ValueError(f"{root / VIEWS_FILE}: view id {row['id']!r} appears twice")
        views[row["id"]] = View(row["id"], row["image"], row["split"], str(row.get("bag", "")))
    objects, seen = [], set()
    for row in _read_jsonl(root / OBJECTS_FILE, OBJECT_KEYS, "extracted objects"):
        where = f"{root / OBJECTS_FILE}: object {row['id']!r}"
        if row["id"] in seen:
            raise ValueError(f"{where} appears twice")
        seen.add(row["id"])
        for key in ("view", "empty_view"):
            if row[key] not in views:
                raise ValueError(f"{where}: its {key} {row[key]!r} is not in {VIEWS_FILE}")
        if row["view"] == row["empty_view"]:
            raise ValueError(f"{where}: view and empty_view are the same view {row['view']!r}")
        if row["image"] != views[row["view"]].image:
            raise ValueError(f"{where}: image {row['image']!r} is not its view's image {views[row['view']].image!r}")
        label = row.get("label")
        if label is not None and (not isinstance(label, str) or not _words(label)):
            raise ValueError(f"{where}: label must be a noun phrase or null, got {label!r}")
        objects.append(Object(row["id"], row["view"], row["empty_view"], row["mask"], label,
                              row.get("split", views[row["view"]].split)))
    return views, objects


def known_contents(views: dict[str, View], objects: list[Object]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(present, absent): per view, the object ids known to be in it / known not to be, from the pairs.

    A pair's views differ by its object alone, so anything known of one holds for the other (except that object);
    this is propagated to a fixed point. A view that is both is an inconsistent folder (ValueError).
    """
    present = {v: set() for v in views}
    absent = {v: set() for v in views}
    for o in objects:
        present[o.view].add(o.id)
        absent[o.empty_view].add(o.id)
    changed = True
    while changed:
        changed = False
        for o in objects:
            w, e = o.view, o.empty_view
            for source, dest in ((present[e], present[w]), (present[w] - {o.id}, present[e]),
                                 (absent[w], absent[e]), (absent[e] - {o.id}, absent[w])):
                if not source <= dest:
                    dest |= source
                    changed = True
    for v in views:
        if present[v] & absent[v]:
            raise ValueError(f"pairs disagree on view {v!r}: objects {sorted(present[v] & absent[v])} are both in it "
                             f"and not in it; check objects.jsonl's view / empty_view")
    return present, absent


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def label_phrase(label: str) -> list[Word]:
    """The label's noun phrase without its article, tagged: lexicon attribute words AW, function words O, the rest
    (the noun and the nouns before it: "coffee mug") IW. "the red mug" -> [("red", "AW"), ("mug", "IW")]."""
    words = _words(label)
    if len(words) > 1 and words[0] in ARTICLES:
        words = words[1:]
    return [(w, "AW" if w in ATTRIBUTE_WORDS else "O" if w in FUNCTION_WORDS else "IW") for w in words]


def label_key(label: str) -> str:
    """What two labels must share to name the same kind of object ("The red mug." and "red mug" do)."""
    return " ".join(w for w, _ in label_phrase(label))


def _retag(expression: Expression, phrase: list[Word]) -> list[Word]:
    """spatial.py tags every word of the referent's category IW; give the label's words their own tags back."""
    tags = iter([t for _, t in phrase])
    words = [(w, next(tags) if t == "IW" else t) for w, t in expression.words]
    if next(tags, None) is not None:
        raise RuntimeError(f"{expression.text!r} lost words of its label {phrase}")
    return words


@dataclass
class _Scene:
    """A background to paste on: its pixels and what is known to be in it."""

    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    view: View | None  # None: synthetic background
    known: list[tuple[Object, np.ndarray]]  # objects known in it, with their masks (H, W) bool
    avoid: list[np.ndarray]  # masks that must stay uncovered: known objects, the pasted object's own footprint
    floor_rows: list[float]  # rows where objects of this camera pose stood


@dataclass
class MultiplySummary:
    """What one `multiply_dataset` run wrote."""

    root: Path
    asked: int
    composites: Counter  # split -> composites written
    rows: Counter  # expression kind (label, image, object, negative) -> rows
    synthetic_backgrounds: int
    per_object: Counter  # object id -> composites
    views_used: int
    skipped: Counter  # why objects or attempts gave nothing
    seconds: float

    def __str__(self) -> str:
        made = sum(self.composites.values())
        per_split = ", ".join(f"{s} {self.composites[s]}" for s in SPLITS)
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.rows.items()))
        objects = " ".join(f"{o}x{n}" for o, n in sorted(self.per_object.items()))
        lines = [
            f"copy-paste into {self.root}: {made}/{self.asked} composites ({per_split}); "
            f"{self.synthetic_backgrounds} on synthetic backgrounds, {self.views_used} real views used",
            f"rows appended to {REFS_FILE}: {sum(self.rows.values())} ({kinds})",
            f"composites per object: {objects}",
            f"{made / max(self.seconds, 1e-9):.1f} composites/s, "
            f"{sum(self.rows.values()) / max(self.seconds, 1e-9):.1f} rows/s ({self.seconds:.2f} s)",
        ]
        if self.skipped:
            lines.append("skipped: " + ", ".join(f"{k} {n}" for k, n in sorted(self.skipped.items())))
        if made < self.asked:
            lines.append(f"warning: only {made} of {self.asked} composites could be placed (see skipped)")
        lines.append(f"review with: sahm make-data review {self.root}")
        return "\n".join(lines)


class _Folder:
    """The extracted folder with its images cached and its knowledge about views."""

    def __init__(self, root: Path):
        self.root = root
        self.views, self.objects = read_folder(root)
        self.by_id = {o.id: o for o in self.objects}
        self.present, self.absent = known_contents(self.views, self.objects)
        self._pixels: dict[str, np.ndarray] = {}
        self._masks: dict[str, np.ndarray] = {}
        self._paste_views: dict[str, list[str]] = {}

    def view_pixels(self, view_id: str) -> np.ndarray:
        if view_id not in self._pixels:
            self._pixels[view_id] = read_rgb(self.root / self.views[view_id].image)
        return self._pixels[view_id]

    def mask(self, obj: Object) -> np.ndarray:
        if obj.id not in self._masks:
            mask = read_mask(self.root / obj.mask)
            shape = self.view_pixels(obj.view).shape[:2]
            if mask.shape != shape:
                raise ValueError(f"{self.root / obj.mask}: mask is {mask.shape}, its view {obj.view!r} is {shape}")
            if not mask.any():
                raise ValueError(f"{self.root / obj.mask}: empty mask for object {obj.id!r}")
            self._masks[obj.id] = mask
        return self._masks[obj.id]

    def scene(self, view_id: str, pasted: Object) -> _Scene:
        view = self.views[view_id]
        known = [(self.by_id[i], self.mask(self.by_id[i])) for i in sorted(self.present[view_id])]
        avoid = [m for _, m in known]
        if pasted.id in self.absent[view_id]:  # same camera pose as the object's pair: not back on its own spot
            avoid.append(self.mask(pasted))
        in_pose = sorted(self.present[view_id] | self.absent[view_id])
        floor_rows = [float(np.nonzero(self.mask(self.by_id[i]).any(1))[0][-1] + 1) for i in in_pose]
        return _Scene(self.view_pixels(view_id), view, known, avoid, floor_rows)

    def paste_views(self, obj: Object) -> list[str]:
        """Views `obj` may be pasted into: its split, not its own view's pixels, not known to hold it and, where
        the pairs do not tell, not looking as if it did (`looks_present`)."""
        own = self.views[obj.view]
        if obj.id not in self._paste_views:
            self._paste_views[obj.id] = [
                v.id for v in self.views.values()
                if v.split == obj.split and v.image != own.image and obj.id not in self.present[v.id]
                and (obj.id in self.absent[v.id] or not self.looks_present(obj, v.id))]
        return self._paste_views[obj.id]

    def looks_present(self, obj: Object, view_id: str) -> bool:
        """The object's cutout matches somewhere in the view (masked TM_CCOEFF_NORMED >= PRESENCE_MATCH)."""
        full = self.mask(obj)
        rows, cols = np.nonzero(full.any(1))[0], np.nonzero(full.any(0))[0]
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        scale = min(1.0, MATCH_SIDE / min(y1 - y0, x1 - x0))

        def small(pixels: np.ndarray) -> np.ndarray:
            return cv2.resize(pixels, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)

        cutout = small(self.view_pixels(obj.view)[y0:y1, x0:x1])
        mask = small(full[y0:y1, x0:x1].astype(np.uint8) * 255)
        view = small(self.view_pixels(view_id))
        if cutout.shape[0] > view.shape[0] or cutout.shape[1] > view.shape[1]:
            return False
        score = cv2.matchTemplate(view, cutout, cv2.TM_CCOEFF_NORMED, mask=mask)
        return bool(np.where(np.isfinite(score), score, 0.0).max() >= PRESENCE_MATCH)

    def negative_views(self, obj: Object) -> list[str]:
        """Views where `obj`'s label names nothing: known not to hold it nor any same-label object of the view's
        bag, and holding no known same-label object at all."""
        key = label_key(obj.label)
        same = [o for o in self.objects if o.label is not None and label_key(o.label) == key]
        found = []
        for v in self.views.values():
            if v.split != obj.split or obj.id not in self.absent[v.id]:
                continue
            if any(o.id in self.present[v.id] for o in same):
                continue
            if all(o.id in self.absent[v.id] for o in same if self.views[o.view].bag == v.bag):
                found.append(v.id)
        return found


def _synthetic_scene(rng: np.random.Generator, shape: tuple[int, int]) -> _Scene:
    from sahm_core.data.synthetic import _background

    h, w = shape
    pixels = np.clip(np.round(_background(rng, max(h, w))[:h, :w]), 0, 255).astype(np.uint8)
    return _Scene(np.ascontiguousarray(pixels), None, [], [], [])


def _expressions(obj: Object, pasted: np.ndarray, scene: _Scene,
                 rng: np.random.Generator) -> list[tuple[str, list[Word], str | None]]:
    """(kind, words, anchor object id) for every expression kind true of the pasted object alone; one each."""
    phrase = label_phrase(obj.label)
    key = label_key(obj.label)
    target = Region.from_mask(key, pasted)
    others, anchors = [], {}
    for known, mask in scene.known:
        region = Region.from_mask(label_key(known.label), mask & ~pasted) if known.label else None
        if region is not None:
            others.append(region)
            anchors[region.category] = known.id
    found = []
    if not any(o.category == key for o in others):
        found.append(("label", [("the", "O")] + phrase, None))
    for kind, candidates in (("image", image_based(target, others)), ("object", object_based(target, others))):
        if candidates:
            chosen = candidates[int(rng.integers(len(candidates)))]
            anchor = None
            if kind == "object":  # the anchor is named by the words after the last "the"
                tail = [w for w, _ in chosen.words]
                anchor = anchors[" ".join(tail[len(tail) - tail[::-1].index("the"):])]
            found.append((kind, _retag(chosen, phrase), anchor))
    return found


def _paste(obj: Object, source: np.ndarray, full: np.ndarray, scene: _Scene, rng: np.random.Generator,
           cfg: CopyPasteConfig):
    """(image, mask uint8, meta) of the object pasted in the scene, or None when it does not fit allowed."""
    bh, bw = scene.pixels.shape[:2]
    rows, cols = np.nonzero(full.any(1))[0], np.nonzero(full.any(0))[0]
    box = (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1)
    scale = min(float(rng.uniform(*cfg.scale)), bh / (box[1] - box[0]), bw / (box[3] - box[2]))
    pixels, mask = _scaled(source, full, box, scale)
    if mask.sum() < cfg.min_area:
        return None
    occupied = np.zeros((bh, bw), bool)
    for m in scene.avoid:
        occupied |= m
    annotated = [(m, int(m.sum())) for m in scene.avoid]
    top_left = _placement(rng, mask, occupied, annotated, scene.floor_rows, scene.view is not None, cfg)
    if top_left is None:
        return None
    overlap, hidden = overlap_fractions(mask, top_left, occupied, annotated)
    image, out_mask = composite(scene.pixels, pixels, mask, top_left)
    meta = {"object": obj.id, "view": scene.view.id if scene.view else None,
            "background": "view" if scene.view else "synthetic", "top_left": [int(v) for v in top_left],
            "scale": round(scale, 4), "area": int((out_mask > 0).sum()), "overlap": round(overlap, 4),
            "hidden": round(hidden, 4)}
    return image, out_mask, meta


def _row(stem: str, paths: dict, kind: str, words: list[Word], split: str, rng: np.random.Generator, meta: dict,
         negative: bool) -> dict:
    expression = _as_command(words, rng, spoken=split == "train")
    return {"id": stem, **paths, "text": expression.text, "split": split, "negative": negative,
            "tags": expression.tags, "phrase": [list(wt) for wt in expression.phrase],
            "copy_paste": {**meta, "kind": kind}}


def multiply_dataset(root: str | Path, n: int, seed: int, synthetic_backgrounds: float = 0.0,
                     negative_fraction: float = ComcocoConfig.negative_fraction,
                     config: CopyPasteConfig | None = None) -> MultiplySummary:
    """Append `n` copy-paste composites (their expression rows) and round(n * negative_fraction) negatives to
    root/refs.jsonl; `synthetic_backgrounds` of the composites go on synthetic backgrounds. Deterministic for a seed.

    Raises FileNotFoundError / ValueError on a folder without views or objects, with no labelled object, or when
    nothing could be placed; rows already written under this seed make it refuse (choose another seed).
    """
    cfg = config or CopyPasteConfig()
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    for name, value in (("synthetic_backgrounds", synthetic_backgrounds), ("negative_fraction", negative_fraction)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be a fraction in [0, 1], got {value}")
    start = time.perf_counter()
    root = Path(root)
    folder = _Folder(root)
    skipped: Counter = Counter()
    labelled = []
    for obj in folder.objects:
        if obj.label is None:
            skipped["objects without a label"] += 1
        elif not folder.views[obj.view].split == folder.views[obj.empty_view].split == obj.split:
            skipped["objects whose views are in another split"] += 1
        else:
            labelled.append(obj)
    if not labelled:
        raise ValueError(f"{root / OBJECTS_FILE}: none of its {len(folder.objects)} objects has a label (or a split "
                         f"its views share); fill in the labels from-bag asked for, then run multiply again")
    existing = read_refs(root) if (root / REFS_FILE).is_file() else []
    prefix = f"cp{seed}_"
    if any(ref["id"].startswith(prefix) for ref in existing):
        raise ValueError(f"{root / REFS_FILE} already holds copy-paste rows of seed {seed}; choose another --seed")
    make_folders(root)
    rng = np.random.default_rng(seed)
    synthetic = set(rng.permutation(n)[: round(n * synthetic_backgrounds)].tolist())
    rows, composites, kinds, per_object, views_used = [], Counter(), Counter(), Counter(), set()
    order: list[int] = []
    made = attempts = 0
    while made < n and attempts < ATTEMPTS_PER_EXAMPLE * n:
        attempts += 1
        if not order:  # every labelled object in turn, in a fresh order each round
            order = rng.permutation(len(labelled)).tolist()
        obj = labelled[order.pop()]
        source, full = folder.view_pixels(obj.view), folder.mask(obj)
        if made in synthetic:
            scenes = [_synthetic_scene(rng, source.shape[:2])]
        else:
            candidates = folder.paste_views(obj)
            if not candidates:
                skipped["attempts: no other view in the object's split"] += 1
                continue
            scenes = [folder.scene(candidates[int(i)], obj) for i in rng.permutation(len(candidates))[:VIEW_TRIES]]
        for scene in scenes:
            pasted = _paste(obj, source, full, scene, rng, cfg)
            if pasted is None:
                continue
            image, mask, meta = pasted
            expressions = _expressions(obj, mask > 0, scene, rng)
            if not expressions:
                continue
            stem = f"{prefix}{made:05d}"
            paths = write_example(root, stem, image, scene.pixels, mask)
            for kind, words, anchor in expressions:
                rows.append(_row(f"{stem}_{kind}", paths, kind, words, obj.split, rng,
                                 {**meta, "anchor": anchor} if anchor else meta, False))
                kinds[kind] += 1
            composites[obj.split] += 1
            per_object[obj.id] += 1
            if scene.view:
                views_used.add(scene.view.id)
            made += 1
            break
        else:
            skipped["attempts: no allowed placement or expression"] += 1
    if not made:
        raise ValueError(f"no object of {root / OBJECTS_FILE} could be placed in another view of its split "
                         f"({dict(skipped)}); nothing written")
    for j in range(round(n * negative_fraction)):
        obj = labelled[int(rng.integers(len(labelled)))]
        candidates = folder.negative_views(obj)
        if not candidates:
            skipped["negatives: no view known to lack the object"] += 1
            continue
        view_id = candidates[int(rng.integers(len(candidates)))]
        pixels = folder.view_pixels(view_id)
        stem = f"{prefix}{j:05d}_neg"
        paths = write_example(root, stem, pixels, pixels, np.zeros(pixels.shape[:2], np.uint8))
        meta = {"object": obj.id, "view": view_id, "background": "view"}
        rows.append(_row(stem, paths, "negative", [("the", "O")] + label_phrase(obj.label), obj.split, rng, meta,
                         True))
        kinds["negative"] += 1
    write_refs(root, existing + rows)
    return MultiplySummary(root, n, composites, kinds, len(synthetic & set(range(made))), per_object,
                           len(views_used), skipped, time.perf_counter() - start)

