"""ComCOCO builder end to end on a tiny COCO-format dataset written here; restricted unpickler; clusters; Jaccard."""

from __future__ import annotations

import json
import os
import pickle

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sahm_core.data import RemovalDataset
from sahm_core.data.comcoco import CLUSTER_OF, CLUSTERS, annotation_mask, build, least_similar, load_refs
from sahm_core.data.layout import read_mask, read_refs, read_rgb
from sahm_core.lexicon import COCO_CATEGORIES

# pycocotools (not this code) trips a numpy 2 deprecation inside its decode
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

H, W = 120, 160
CATEGORIES = {"person": 1, "car": 3, "cat": 17, "dog": 18, "cup": 47, "bowl": 51}


def _ellipse(cx, cy, rx, ry):
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


# image id -> [(category, outline polygon, colour, encoding)]; encoding: polygon | rle | raw-rle
SCENES = {
    1: [("dog", _ellipse(50, 80, 28, 18), (150, 90, 40), "polygon")],
    2: [("cat", _ellipse(110, 70, 20, 25), (235, 235, 230), "rle")],
    3: [("dog", _ellipse(40, 90, 22, 15), (60, 40, 20), "polygon"),
        ("cat", _ellipse(120, 50, 15, 15), (250, 150, 40), "raw-rle")],
    4: [("cup", _ellipse(80, 60, 18, 22), (210, 30, 30), "polygon")],
    5: [("bowl", _ellipse(60, 70, 30, 14), (30, 60, 200), "rle"),
        ("cup", _ellipse(130, 40, 12, 16), (30, 160, 60), "polygon")],
    6: [("person", np.array([[20, 20], [50, 20], [50, 110], [20, 110]], float), (200, 170, 140), "polygon")],
    7: [("person", np.array([[100, 15], [130, 15], [130, 105], [100, 105]], float), (40, 40, 40), "rle")],
}
SENTENCES = {  # ann id -> (refcoco split, sentences)
    101: ("train", ["brown dog lying down", "dog with a long tail"]),
    201: ("train", ["white cat"]),
    301: ("train", ["dark puppy"]),
    302: ("train", ["orange cat sitting"]),
    401: ("train", ["red cup", "the red mug"]),
    501: ("train", ["blue bowl"]),
    502: ("train", ["green cup"]),
    601: ("testA", ["man in tan shirt"]),
    701: ("testB", ["guy wearing black"]),
}


def _raw_rle(mask):
    """COCO's uncompressed RLE: run lengths over the column-major flattened mask, starting with a run of zeros."""
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


def _write_tiny_coco(root):
    rng = np.random.default_rng(0)
    (root / "coco" / "annotations").mkdir(parents=True)
    (root / "coco" / "train2014").mkdir()
    (root / "refcoco+").mkdir()
    images, anns, refs = [], [], []
    yy, xx = np.mgrid[0:H, 0:W]
    for image_id, objects in SCENES.items():
        base = rng.uniform(60, 190, 3)
        pixels = (base + 40 * (yy / H)[..., None] + rng.normal(0, 6, (H, W, 3))).clip(0, 255).astype(np.uint8)
        name = f"COCO_train2014_{image_id:012d}.jpg"
        for k, (category, outline, colour, encoding) in enumerate(objects):
            mask = np.zeros((H, W), np.uint8)
            cv2.fillPoly(mask, [np.round(outline).astype(np.int32)], 1)
            pixels[mask > 0] = colour
            if encoding == "polygon":
                segmentation = [outline.ravel().tolist()]
            elif encoding == "rle":
                rle = mask_utils.encode(np.asfortranarray(mask))
                segmentation = {"size": [H, W], "counts": rle["counts"].decode()}
            else:
                segmentation = {"size": [H, W], "counts": _raw_rle(mask)}
            ann_id = image_id * 100 + k + 1
            ys, xs = np.nonzero(mask)
            anns.append({"id": ann_id, "image_id": image_id, "category_id": CATEGORIES[category], "iscrowd": 0,
                         "segmentation": segmentation, "area": float(mask.sum()),
                         "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]})
            split, sentences = SENTENCES[ann_id]
            refs.append({"ann_id": ann_id, "image_id": image_id, "ref_id": ann_id, "split": split, "file_name": name,
                         "category_id": CATEGORIES[category], "sent_ids": list(range(len(sentences))),
                         "sentences": [{"sent": s, "raw": s, "tokens": s.split(), "sent_id": j}
                                       for j, s in enumerate(sentences)]})
        cv2.imwrite(str(root / "coco" / "train2014" / name), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
        images.append({"id": image_id, "file_name": name, "height": H, "width": W})
    instances = {"images": images, "annotations": anns,
                 "categories": [{"id": i, "name": n, "supercategory": ""} for n, i in CATEGORIES.items()]}
    (root / "coco" / "annotations" / "instances_train2014.json").write_text(json.dumps(instances))
    with open(root / "refcoco+" / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    return instances


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("comcoco")
    instances = _write_tiny_coco(root)
    build(root / "coco", root / "refcoco+", root / "out", seed=0, split_sizes=(10, 10, 10), negative_fraction=0.5)
    return root, instances


def test_layout_is_valid_and_readable(built):
    root, _ = built
    refs = read_refs(root / "out")
    positives = [r for r in refs if not r["negative"]]
    assert len({r["image"] for r in positives}) >= 5  # most objects found a background
    assert {r["split"] for r in refs} == {"train", "test"}
    assert any(r["negative"] for r in refs)
    item = RemovalDataset(root / "out", "train", size=64)[0]
    assert item["image"].shape == (3, 64, 64)


def test_pairs_paste_the_referred_object_and_change_nothing_else(built):
    root, instances = built
    anns = {a["id"]: a for a in instances["annotations"]}
    files = {i["id"]: i["file_name"] for i in instances["images"]}
    for ref in read_refs(root / "out"):
        image, target = read_rgb(root / "out" / ref["image"]), read_rgb(root / "out" / ref["target"])
        mask = read_mask(root / "out" / ref["mask"])
        assert image.shape == target.shape == (H, W, 3) and mask.shape == (H, W)
        ann_id, background_id = (int(v) for v in ref["id"][3:].split("_")[:2])
        # the target is the untouched background image, and the object never came from it
        np.testing.assert_array_equal(target, read_rgb(root / "coco" / "train2014" / files[background_id]))
        assert background_id != anns[ann_id]["image_id"]
        assert ref["text"] in SENTENCES[ann_id][1]
        if ref["negative"]:
            assert not mask.any()
            np.testing.assert_array_equal(image, target)
            continue
        assert mask.any()
        np.testing.assert_array_equal(image[~mask], target[~mask])  # harmonised pixels only inside the pasted region
        source_area = annotation_mask(anns[ann_id], H, W).sum()
        assert 0.55 * source_area <= mask.sum() <= 1.6 * source_area  # same relative size, +-20% per side
        occupied = np.zeros((H, W), bool)
        for other in instances["annotations"]:
            if other["image_id"] == background_id:
                occupied |= annotation_mask(other, H, W)
        assert (occupied & mask).sum() <= 0.03 * mask.sum()  # no object pasted over an annotated one
        same_cluster = {CLUSTER_OF[c] for c, *_ in SCENES[background_id]}
        source_category = next(c for c, i in CATEGORIES.items() if i == anns[ann_id]["category_id"])
        assert CLUSTER_OF[source_category] in same_cluster


def test_pasted_object_is_harmonised_toward_its_new_scene(built):
    root, instances = built
    anns = {a["id"]: a for a in instances["annotations"]}
    files = {i["id"]: i["file_name"] for i in instances["images"]}
    moved = 0
    for ref in read_refs(root / "out"):
        if ref["negative"] or not ref["id"].endswith("_0"):
            continue
        image, mask = read_rgb(root / "out" / ref["image"]), read_mask(root / "out" / ref["mask"])
        target = read_rgb(root / "out" / ref["target"])
        ann = anns[int(ref["id"][3:].split("_")[0])]
        source = read_rgb(root / "coco" / "train2014" / files[ann["image_id"]])
        source_colour = source[annotation_mask(ann, H, W)].mean(0)
        pasted_colour, scene_colour = image[mask].mean(0), target.reshape(-1, 3).mean(0)
        moved += np.abs(pasted_colour - scene_colour).sum() < np.abs(source_colour - scene_colour).sum()
        assert not np.allclose(pasted_colour, source_colour, atol=2)  # the colours were changed
    assert moved >= 3


def test_clusters_cover_the_80_categories_once():
    assert len(CLUSTERS) == 17
    members = [c for _, cats in CLUSTERS for c in cats]
    assert sorted(members) == sorted(COCO_CATEGORIES) and len(members) == 80


def test_least_similar_uses_jaccard():
    obj = {"red", "cup", "left"}
    candidates = {1: {"red", "cup"}, 2: {"blue", "bowl"}, 3: {"red", "plate", "big"}, 4: {"cup"}}
    # Jaccard: 1 -> 2/3, 2 -> 0, 3 -> 1/5, 4 -> 1/3
    assert least_similar(obj, candidates, count=3) == [2, 3, 4]


def test_annotation_mask_decodes_polygon_and_both_rles():
    mask = np.zeros((H, W), np.uint8)
    mask[10:30, 40:90] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    compressed = {"segmentation": {"size": [H, W], "counts": rle["counts"].decode()}}
    raw = {"segmentation": {"size": [H, W], "counts": _raw_rle(mask)}}
    assert _raw_rle(np.array([[0, 1], [1, 1]], np.uint8)) == [1, 3]  # by hand: column-major 0,1,1,1
    polygon = {"segmentation": [[40, 10, 90, 10, 90, 30, 40, 30]]}
    np.testing.assert_array_equal(annotation_mask(compressed, H, W), mask > 0)
    np.testing.assert_array_equal(annotation_mask(raw, H, W), mask > 0)
    assert abs(int(annotation_mask(polygon, H, W).sum()) - 50 * 20) <= 80  # polygon rasterised on its outline


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_restricted_unpickler_refuses_classes(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ann_id": 1, "image_id": 1, "split": "train", "sentences": [],
                                    "x": _Evil(marker)}]))
    with pytest.raises(pickle.UnpicklingError, match="refused to load"):
        load_refs(path)
    assert not marker.exists()
    from collections import OrderedDict

    path.write_bytes(pickle.dumps(OrderedDict(a=1), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="collections.OrderedDict"):
        load_refs(path)


def test_restricted_unpickler_accepts_a_plain_refs_list(tmp_path):
    refs = [{"ann_id": 5, "image_id": 2, "split": "val", "ref_id": 9, "file_name": "x.jpg",
             "sentences": [{"sent": "the blue bowl", "tokens": ["the", "blue", "bowl"], "sent_id": 0}],
             "weights": (1.5, -2), "flag": None}]
    path = tmp_path / "refs(unc).p"
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        path.write_bytes(pickle.dumps(refs, protocol=protocol))
        assert load_refs(path) == refs
    path.write_bytes(pickle.dumps({"not": "a list"}))
    with pytest.raises(ValueError, match="expected a list"):
        load_refs(path)


def test_cli_builds_comcoco(tmp_path, capsys):
    from sahm_core.cli import main

    _write_tiny_coco(tmp_path)
    assert main(["make-data", "comcoco", "--coco", str(tmp_path / "coco"), "--refcoco-plus",
                 str(tmp_path / "refcoco+"), "--out", str(tmp_path / "out"), "--max-pairs", "2"]) == 0
    assert "comcoco pairs" in capsys.readouterr().out
    assert len({r["image"] for r in read_refs(tmp_path / "out") if not r["negative"]}) == 2
    with pytest.raises(FileNotFoundError, match="instances_train2014.json"):
        build(tmp_path / "nowhere", tmp_path / "refcoco+", tmp_path / "out2")
