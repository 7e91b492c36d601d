"""Copy-paste multiplication (sahm_core/data/copy_paste.py) on a folder in from-bag's format, built here from
synthetic scenes whose contents are known exactly.

Each room is one camera pose: a background with clutter (never extracted), and two objects put down one after the
other, giving three static views (empty, with A, with A and B) and two pairs, and a fourth view with both objects,
a little brighter, that formed no pair (what it holds is unknown to the folder, as a stretch at a bag's start).
The checks use that ground truth and the pixels on disk, not the module's own bookkeeping: pixels outside the mask
equal the target's, the mask is the cutout's footprint, spatial words hold by a brute-force centroid check, views
never cross splits nor get an object they already hold, negatives name nothing in their picture, the same seed
writes the same bytes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from sahm_core.data.cli import main as make_data_main
from sahm_core.data.copy_paste import CopyPasteConfig, known_contents, label_phrase, multiply_dataset, read_folder
from sahm_core.data.layout import read_mask, read_refs, read_rgb
from sahm_core.data.synthetic import _composite, _visible, scene

SIZE = 96
ROOMS = (("train", "kitchen.bag"), ("train", "desk.bag"), ("train", "shelf.bag"), ("val", "hall.bag"),
         ("test", "lab.bag"))
UNLABELLED_ROOM = 2  # its second object has no label yet (from-bag's YAML not filled in)


def _render(background, layers) -> np.ndarray:
    return np.clip(np.round(_composite(background, layers)), 0, 255).astype(np.uint8)


def _rooms(count: int) -> list[tuple]:
    """Scenes whose two extracted objects (layers 0 and 1) are the only ones of their colour and category in the
    whole fixture, so that a label names one thing wherever it is said."""
    chosen, seen, extracted = [], set(), set()
    seed = 0
    while len(chosen) < count:
        seed += 1
        background, layers, *_ = scene(np.random.default_rng(seed), SIZE)
        keys = [(layer.colour, layer.category) for layer in layers]
        if len(layers) < 3 or any(keys.count(k) > 1 or k in seen for k in keys[:2]) or extracted & set(keys):
            continue
        chosen.append((background, layers))
        seen |= set(keys)
        extracted |= set(keys[:2])
    return chosen


def write_folder(root: Path) -> dict:
    """views.jsonl, objects.jsonl, views/, objects/ as from-bag writes them; returns the ground truth:
    view id -> (split, pixels, [(colour, category)] of every object in it), object id -> label."""
    (root / "views").mkdir(parents=True)
    (root / "objects").mkdir()
    truth = {"views": {}, "objects": {}}
    views, objects = [], []
    for r, ((split, bag), (background, layers)) in enumerate(zip(ROOMS, _rooms(len(ROOMS)))):
        a, b, clutter = layers[0], layers[1], layers[2:]
        # back-to-front order kept: a under b under clutter; the last view is the unpaired one
        stages = ([*clutter], [a, *clutter], [a, b, *clutter], [a, b, *clutter])
        ids = [f"v{4 * r + k:03d}" for k in range(4)]
        for view_id, shown, start in zip(ids, stages, range(4)):
            pixels = _render(background, shown)
            if start == 3:
                pixels = np.clip(pixels * 1.04, 0, 255).astype(np.uint8)  # lighting drift
            cv2.imwrite(str(root / f"views/{view_id}.png"), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
            views.append({"id": view_id, "bag": bag, "start_ns": start * 10**9, "end_ns": start * 10**9 + 5 * 10**8,
                          "image": f"views/{view_id}.png", "split": split})
            truth["views"][view_id] = (split, pixels, [(layer.colour, layer.category) for layer in shown])
        for k, (layer, shown) in enumerate(((a, stages[1]), (b, stages[2]))):
            object_id = f"o{2 * r + k:03d}"
            mask = (_visible(shown)[shown.index(layer)] >= 0.5).astype(np.uint8) * 255
            cv2.imwrite(str(root / f"objects/{object_id}.png"), mask)
            label = None if (r == UNLABELLED_ROOM and k == 1) else f"the {layer.colour} {layer.category}"
            objects.append({"id": object_id, "view": ids[k + 1], "empty_view": ids[k],
                            "image": f"views/{ids[k + 1]}.png", "mask": f"objects/{object_id}.png", "label": label,
                            "split": split})
            truth["objects"][object_id] = label
    for name, rows in (("views.jsonl", views), ("objects.jsonl", objects)):
        (root / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return truth


N = 40


@pytest.fixture(scope="module")
def multiplied(tmp_path_factory):
    root = tmp_path_factory.mktemp("copy_paste") / "room"
    truth = write_folder(root)
    clean = root.parent / "clean"
    shutil.copytree(root, clean)
    summary = multiply_dataset(root, N, seed=3, synthetic_backgrounds=0.2, negative_fraction=0.25)
    print(summary)
    return root, clean, truth, summary, read_refs(root)


def _view_of(pixels: np.ndarray, truth: dict) -> str | None:
    """The view whose pixels these are, by comparison; None for a synthetic background."""
    found = [v for v, (_, view_pixels, _) in truth["views"].items() if np.array_equal(view_pixels, pixels)]
    assert len(found) <= 1
    return found[0] if found else None


def test_known_contents_follow_chains_of_pairs(tmp_path):
    """Hand-worked: v0 --o1--> v1 --o2--> v2 and a separate pair v3 --o3--> v4."""
    root = tmp_path / "chain"
    root.mkdir()
    views = [{"id": f"v{k}", "image": f"views/v{k}.png", "split": "train"} for k in range(5)]
    objects = [{"id": "o1", "view": "v1", "empty_view": "v0", "image": "views/v1.png", "mask": "m", "label": None},
               {"id": "o2", "view": "v2", "empty_view": "v1", "image": "views/v2.png", "mask": "m", "label": "a cup"},
               {"id": "o3", "view": "v4", "empty_view": "v3", "image": "views/v4.png", "mask": "m", "label": None}]
    for name, rows in (("views.jsonl", views), ("objects.jsonl", objects)):
        (root / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    present, absent = known_contents(*read_folder(root))
    assert present == {"v0": set(), "v1": {"o1"}, "v2": {"o1", "o2"}, "v3": set(), "v4": {"o3"}}
    assert absent == {"v0": {"o1", "o2"}, "v1": {"o2"}, "v2": set(), "v3": {"o3"}, "v4": set()}


def test_label_phrase_tags():
    assert label_phrase("The red mug.") == [("red", "AW"), ("mug", "IW")]
    assert label_phrase("a big coffee mug") == [("big", "AW"), ("coffee", "IW"), ("mug", "IW")]


def test_layout_and_invariants(multiplied):
    """Pixels outside the mask equal the target's; negatives have an empty mask and target == image; the rows
    appended are what the summary says, the trainer's reader accepts them, the real rows are kept."""
    root, _, truth, summary, refs = multiplied
    assert sum(summary.composites.values()) == N
    new = [r for r in refs if r["id"].startswith("cp3_")]
    assert len(new) == sum(summary.rows.values()) and summary.rows["negative"] > 0
    assert len({r["image"] for r in new if not r["negative"]}) == N
    for ref in new:
        image, target, mask = (read_rgb(root / ref["image"]), read_rgb(root / ref["target"]),
                               read_mask(root / ref["mask"]))
        assert np.array_equal(image[~mask], target[~mask]), ref["id"]
        if ref["negative"]:
            assert not mask.any() and np.array_equal(image, target)
        else:
            assert mask.sum() >= CopyPasteConfig().min_area
            # the pasted object changed the picture where it lies
            assert np.abs(image[mask].astype(int) - target[mask]).mean() > 1.0
        assert " ".join(w for w, _ in ref["tags"]) == ref["text"]


def test_mask_is_the_cutout_footprint(tmp_path):
    """Without scaling, the pasted mask is the object's mask moved to the placement's top-left corner."""
    root = tmp_path / "room"
    write_folder(root)
    multiply_dataset(root, 12, seed=5, negative_fraction=0.0, config=CopyPasteConfig(scale=(1.0, 1.0)))
    for ref in read_refs(root):
        meta = ref["copy_paste"]
        source = read_mask(root / f"objects/{meta['object']}.png")
        rows, cols = np.nonzero(source)
        expected = np.zeros_like(source)
        y, x = meta["top_left"]
        expected[rows - rows.min() + y, cols - cols.min() + x] = True
        assert np.array_equal(read_mask(root / ref["mask"]), expected), ref["id"]


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return (xs.mean() + 0.5) / mask.shape[1], (ys.mean() + 0.5) / mask.shape[0]


def test_spatial_words_hold(multiplied):
    """Brute force on the written masks: "on the left" means the centroid is left of 0.4 W, "left of the X" that it
    is left of X's centroid by more than it is off vertically, "next to" that the boxes are side by side."""
    root, _, _, summary, refs = multiplied
    checked = {"image": 0, "object": 0}
    for ref in refs:
        kind = ref.get("copy_paste", {}).get("kind")
        if kind not in checked:
            continue
        words = set(ref["text"].split())
        pasted = read_mask(root / ref["mask"])
        cx, cy = _centroid(pasted)
        checked[kind] += 1
        if kind == "image":
            side = words & {"left", "right", "top", "upper", "bottom", "lower"}
            assert len(side) == 1, ref["text"]
            value = {"left": 0.5 - cx, "right": cx - 0.5, "top": 0.5 - cy, "upper": 0.5 - cy,
                     "bottom": cy - 0.5, "lower": cy - 0.5}[side.pop()]
            assert value > 0.1, (ref["text"], cx, cy)
            continue
        anchor = read_mask(root / f"objects/{ref['copy_paste']['anchor']}.png") & ~pasted
        ax, ay = _centroid(anchor)
        dx, dy = cx - ax, cy - ay
        if words & {"next", "beside"}:
            ys, xs = np.nonzero(pasted)
            bys, bxs = np.nonzero(anchor)
            gap = max(bxs.min() - xs.max() - 1, xs.min() - bxs.max() - 1) / pasted.shape[1]
            shared = min(ys.max(), bys.max()) - max(ys.min(), bys.min()) + 1
            assert -0.02 <= gap <= 0.06 and shared >= 0.5 * min(np.ptp(ys) + 1, np.ptp(bys) + 1), ref["text"]
        else:
            relation = words & {"left", "right", "above", "below", "under"}
            assert len(relation) == 1, ref["text"]
            along, across = {"left": (-dx, dy), "right": (dx, dy), "above": (-dy, dx), "below": (dy, dx),
                             "under": (dy, dx)}[relation.pop()]
            assert along > 0.08 and along - abs(across) > 0.08, (ref["text"], dx, dy)
    assert checked["image"] > 0 and checked["object"] > 0, summary


def test_pastes_leave_known_objects_and_their_own_spot_uncovered(multiplied):
    """In a view of the object's own room (same camera pose), the paste covers at most max_overlap of its pixels
    with the extracted objects that view shows (ground truth) and with the object's own footprint: pasting it back
    where it stood would repeat the real pair."""
    root, _, truth, _, refs = multiplied
    limit = CopyPasteConfig().max_overlap
    masks = {o: read_mask(root / f"objects/{o}.png") for o in truth["objects"]}
    checked = 0
    for ref in refs:
        meta = ref.get("copy_paste", {})
        if ref["negative"] or meta.get("background") != "view" or not ref["id"].endswith("_label"):
            continue
        view = _view_of(read_rgb(root / ref["target"]), truth)
        room, stage = divmod(int(view[1:]), 4)
        if stage == 3:  # the unpaired view: what it holds is not known to the folder
            continue
        pasted = read_mask(root / ref["mask"])
        shown = [f"o{2 * room + k:03d}" for k in range(stage)]  # the extracted objects this view shows
        own_room = int(meta["object"][1:]) // 2 == room
        for other in shown + ([meta["object"]] if own_room else []):
            assert (pasted & masks[other]).sum() <= limit * pasted.sum() + 1, (ref["id"], other)
        checked += own_room
    assert checked > 0


def test_splits_stay_apart(multiplied):
    """Every new row's target is a view of the row's split (found by its pixels) or a synthetic background, never
    the object's own view nor a view known to hold it; the object is of the row's split."""
    root, _, truth, _, refs = multiplied
    objects = {row["id"]: row for row in map(json.loads, (root / "objects.jsonl").read_text().splitlines())}
    synthetic = set()
    for ref in (r for r in refs if r["id"].startswith("cp3_")):
        view = _view_of(read_rgb(root / ref["target"]), truth)
        obj = objects[ref["copy_paste"]["object"]]
        assert obj["split"] == ref["split"] and obj["label"] is not None
        if view is None:
            synthetic.add(ref["target"])
            assert ref["copy_paste"]["background"] == "synthetic"
            continue
        assert truth["views"][view][0] == ref["split"], (ref["id"], view)
        assert view != obj["view"]
        colour, category = obj["label"].split()[1:]
        if not ref["negative"]:  # the pasted object is not also in the picture already
            assert (colour, category) not in truth["views"][view][2], (ref["id"], view)
    assert len(synthetic) == round(0.2 * N)


def test_negatives_name_nothing_in_the_view(multiplied):
    root, _, truth, _, refs = multiplied
    negatives = [r for r in refs if r["negative"] and r["id"].startswith("cp3_")]
    assert negatives
    for ref in negatives:
        view = _view_of(read_rgb(root / ref["image"]), truth)
        colour, category = truth["objects"][ref["copy_paste"]["object"]].split()[1:]
        assert colour in ref["text"].split() and category in ref["text"].split()
        assert (colour, category) not in truth["views"][view][2], (ref["text"], view)


def test_same_seed_same_bytes(multiplied):
    root, clean, *_ = multiplied
    again = clean.parent / "again"
    shutil.copytree(clean, again)
    multiply_dataset(again, N, seed=3, synthetic_backgrounds=0.2, negative_fraction=0.25)
    assert (again / "refs.jsonl").read_bytes() == (root / "refs.jsonl").read_bytes()
    for ref in read_refs(again):
        for key in ("image", "target", "mask"):
            assert (again / ref[key]).read_bytes() == (root / ref[key]).read_bytes()
    with pytest.raises(ValueError, match="already holds copy-paste rows of seed 3"):
        multiply_dataset(again, 2, seed=3)


def test_review_and_trainer_read_it(multiplied):
    from sahm_core.data import RemovalDataset
    from sahm_core.data.review import review_pages

    root, *_ = multiplied
    pages = review_pages(root, root / "review", per_page=12, split="test")
    assert pages and all(p.stat().st_size > 0 for p in pages)
    item = RemovalDataset(root, "val", 64)[0]
    assert item["image"].shape == (3, 64, 64)


def test_bad_input(tmp_path, capsys):
    root = tmp_path / "room"
    write_folder(root)
    (root / "objects.jsonl").rename(root / "objects.moved")
    with pytest.raises(FileNotFoundError, match="objects.jsonl not found"):
        multiply_dataset(root, 4, seed=0)
    rows = [json.loads(line) for line in (root / "objects.moved").read_text().splitlines()]
    (root / "objects.jsonl").write_text("".join(json.dumps({**row, "label": None}) + "\n" for row in rows))
    with pytest.raises(ValueError, match="none of its 10 objects has a label"):
        multiply_dataset(root, 4, seed=0)
    assert not (root / "refs.jsonl").exists()

    import argparse

    from sahm_core.data.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert make_data_main(parser.parse_args(["multiply", str(root), "--n", "4"])) == 2
    assert "has a label" in capsys.readouterr().err
