"""ComCOCO builder end to end on a small, format-faithful COCO 2014 + RefCOCO+ (written by coco_fixture.py).

Each fix of issue 18 is checked on the build against the annotations and the files on disk, with the rules
re-derived here: negatives show nothing their sentence names, backgrounds are spread, sizes follow the paper's mix,
spatial expressions are true, sentences naming what was not pasted are gone, placements hide little.
"""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import re
from collections import Counter

import numpy as np
import pytest
from coco_fixture import CATEGORIES, FIXTURE_WORDS, NOT_PASTED, SCENES, SENTENCES, H, W, raw_rle, write_tiny_coco
from pycocotools import mask as mask_utils

from sahm_core.data import RemovalDataset
from sahm_core.data.coco_names import named_categories
from sahm_core.data.comcoco import (
    CLUSTER_OF,
    CLUSTERS,
    STATS_FILE,
    ComcocoConfig,
    SizePlanner,
    _placement,
    annotation_mask,
    build,
    least_similar,
    load_refs,
    overlap_fractions,
)
from sahm_core.data.layout import read_mask, read_refs, read_rgb
from sahm_core.lexicon import COCO_CATEGORIES

# pycocotools (not this code) trips a numpy 2 deprecation inside its decode
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")



def _build(root, out="out", **fields):
    build(root / "coco", root / "refcoco+", root / out, seed=0, split_sizes=(60, 10, 10), negative_fraction=0.5,
          **fields)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("comcoco")
    instances = write_tiny_coco(root)
    _build(root)
    return root, instances


def _ids(ref):
    """(source annotation id, background image id) from a ref id "ccc<ann>_<image>_..."."""
    ann_id, image_id = (int(v) for v in ref["id"][3:].split("_")[:2])
    return ann_id, image_id


def _category_of(instances):
    names = {c["id"]: c["name"] for c in instances["categories"]}
    return {a["id"]: names[a["category_id"]] for a in instances["annotations"]}


def _background_masks(instances, image_id):
    """[(category, mask)] of the annotated objects of an image."""
    category = _category_of(instances)
    return [(category[a["id"]], annotation_mask(a, H, W)) for a in instances["annotations"]
            if a["image_id"] == image_id]


def _positive_pairs(root):
    """One ref per written composite."""
    pairs = {}
    for ref in read_refs(root / "out"):
        if not ref["negative"]:
            pairs.setdefault(ref["image"], ref)
    return list(pairs.values())


# ---------------------------------------------------------------- checks, each also run against the old builder


def negative_problems(root, instances) -> list[str]:
    """Negatives whose image holds an annotated instance of the object's category or of a category named."""
    category = _category_of(instances)
    problems, count = [], 0
    for ref in read_refs(root / "out"):
        if not ref["negative"]:
            continue
        count += 1
        ann_id, image_id = _ids(ref)
        text = set(re.findall(r"[a-z]+", ref["text"].lower()))
        for present, _ in _background_masks(instances, image_id):
            named = present in text or bool(FIXTURE_WORDS.get(present, set()) & text)
            if present == category[ann_id] or named:
                problems.append(f"{ref['id']} {ref['text']!r} on an image with a {present}")
    return problems if count else ["no negatives"]


def size_problems(root) -> list[str]:
    """The size mix on disk (recounted from the masks) must be near the paper's 11/53/36 %, and the stats say it."""
    counts = {"small": 0, "medium": 0, "large": 0}
    for ref in _positive_pairs(root):
        area = int(read_mask(root / "out" / ref["mask"]).sum())
        counts["small" if area < 32 * 32 else "medium" if area < 96 * 96 else "large"] += 1
    total = sum(counts.values())
    problems = [f"{name} {counts[name]}/{total}, paper {paper:.0%}" for name, paper in zip(counts, (0.11, 0.53, 0.36))
                if abs(counts[name] / total - paper) > 0.05]
    stats_path = root / "out" / STATS_FILE
    if not stats_path.is_file():
        return problems + [f"no {STATS_FILE}"]
    stats = json.loads(stats_path.read_text())
    return problems + ([] if stats["sizes"]["counts"] == counts else [f"stats {stats['sizes']['counts']} != {counts}"])


def reuse_problems(root) -> list[str]:
    """Backgrounds per pair recounted from disk: within the default cap, and the stats say the same."""
    uses = Counter(_ids(ref)[1] for ref in _positive_pairs(root))
    cap = ComcocoConfig().max_background_uses
    problems = [f"background {i} used {n} times (cap {cap})" for i, n in uses.items() if n > cap]
    stats_path = root / "out" / STATS_FILE
    if not stats_path.is_file():
        return problems + [f"no {STATS_FILE}"]
    backgrounds = json.loads(stats_path.read_text())["backgrounds"]
    if backgrounds["per_1000_pairs"] != round(1000 * len(uses) / uses.total(), 1):
        problems.append(f"stats {backgrounds} but {len(uses)} distinct in {uses.total()} pairs")
    return problems


def _centroid(mask):
    ys, xs = np.nonzero(mask)
    return xs.mean() / W, ys.mean() / H


def spatial_problems(root, instances) -> list[str]:
    """Every spatial expression re-checked on the written mask against the background's annotations."""
    problems, kinds = [], set()
    for ref in read_refs(root / "out"):
        kind = ref.get("comcoco", {}).get("kind")
        if kind not in ("image", "object"):
            continue
        kinds.add(kind)
        ann_id, image_id = _ids(ref)
        category = _category_of(instances)[ann_id]
        pasted = read_mask(root / "out" / ref["mask"])
        cx, cy = _centroid(pasted)
        others = [(c, m & ~pasted) for c, m in _background_masks(instances, image_id) if (m & ~pasted).any()]
        rivals = [_centroid(m) for c, m in others if c == category]
        words = ref["text"].split()
        tags = dict(ref["tags"])
        if not all(tags[w] == "IW" for w in category.split()):
            problems.append(f"{ref['text']!r}: {category} not tagged IW ({ref['tags']})")
        if kind == "image":
            side = next(w for w in words if w in ("left", "right", "top", "bottom"))
            axis, sign = {"left": (0, -1), "right": (0, 1), "top": (1, -1), "bottom": (1, 1)}[side]
            if not sign * ((cx, cy)[axis] - 0.5) > 0.1 or any(sign * (r[axis] - 0.5) > 0 for r in rivals):
                problems.append(f"{ref['text']!r}: centroid {(cx, cy)}, others {rivals}")
            if tags[side] != "AW":
                problems.append(f"{ref['text']!r}: {side} not tagged AW")
            continue
        anchor_name = ref["text"].rsplit(" the ", 1)[1]
        anchors = [m for c, m in others if c == anchor_name]
        if len(anchors) != 1 or tags[anchor_name.split()[-1]] != "AW":
            problems.append(f"{ref['text']!r}: {len(anchors)} annotated {anchor_name}, tags {ref['tags']}")
            continue
        ax, ay = _centroid(anchors[0])
        relation = ref["text"][len("the " + category) + 1 : -len(" the " + anchor_name)]
        if relation in ("next to", "beside"):
            ys, xs = np.nonzero(pasted)
            ays, axs = np.nonzero(anchors[0])
            gap = max(axs.min() - xs.max() - 1, xs.min() - axs.max() - 1) / W
            shared = (min(ys.max(), ays.max()) - max(ys.min(), ays.min()) + 1) / H
            low = min(np.ptp(ys) + 1, np.ptp(ays) + 1) / H
            if not (-0.02 <= gap <= 0.06 and shared >= 0.5 * low - 1 / H):
                problems.append(f"{ref['text']!r}: gap {gap:.3f}, shared {shared:.3f} of {low:.3f}")
            continue
        dx, dy = cx - ax, cy - ay
        offsets = {"left of": (-dx, dy), "right of": (dx, dy), "above": (-dy, dx), "below": (dy, dx), "under": (dy, dx)}
        along, across = offsets[relation.removeprefix("to the ")]
        if not (along > 0.08 and along - abs(across) > 0.08):
            problems.append(f"{ref['text']!r}: offset along {along:.3f}, across {across:.3f}")
    return problems + [f"no {k}-based expression" for k in ("image", "object") if k not in kinds]


def context_problems(root) -> list[str]:
    texts = {ref["text"] for ref in read_refs(root / "out")}
    problems = [f"{t!r} written" for t in texts if t == NOT_PASTED or " by the " in t]
    return problems + ([] if "guy with a red tie" in texts else ["the tie, pasted with the guy, lost its sentence"])


def overlap_problems(root, instances, max_overlap=0.02, max_hidden=0.2) -> list[str]:
    """Pasted pixels on annotated objects, and the share of each annotated object hidden, from the files."""
    problems = []
    for ref in _positive_pairs(root):
        pasted = read_mask(root / "out" / ref["mask"])
        masks = [m for _, m in _background_masks(instances, _ids(ref)[1])]
        on_objects = (np.logical_or.reduce(masks) & pasted).sum() / pasted.sum() if masks else 0
        hidden = max(((m & pasted).sum() / m.sum() for m in masks), default=0)
        if on_objects > max_overlap or hidden > max_hidden:
            problems.append(f"{ref['id']}: {on_objects:.3f} of the paste on objects, {hidden:.3f} of one hidden")
    return problems


# ---------------------------------------------------------------- tests


def test_fixture_refs_are_python2_cpickle_and_load_safely(built):
    root, _ = built
    data = (root / "refcoco+" / "refs(unc).p").read_bytes()
    ops = {op.name for op, _, _ in pickletools.genops(data)}
    assert "SHORT_BINSTRING" in ops and not ops & {"BINUNICODE", "SHORT_BINUNICODE", "GLOBAL", "STACK_GLOBAL"}
    refs = load_refs(root / "refcoco+" / "refs(unc).p")
    assert refs[0]["sentences"][0]["sent"] == "brown dog lying down"  # byte strings come back as str


def test_layout_is_valid_and_readable(built):
    root, _ = built
    refs = read_refs(root / "out")
    positives = [r for r in refs if not r["negative"]]
    assert len({r["image"] for r in positives}) >= 25
    assert {r["split"] for r in refs} == {"train", "val", "test"}
    assert any(r["negative"] for r in refs)
    item = RemovalDataset(root / "out", "train", size=64)[0]
    assert item["image"].shape == (3, 64, 64)


def test_pairs_paste_the_referred_object_and_change_nothing_else(built):
    root, instances = built
    anns = {a["id"]: a for a in instances["annotations"]}
    files = {i["id"]: i["file_name"] for i in instances["images"]}
    cfg = ComcocoConfig()
    checked = set()
    for ref in read_refs(root / "out"):
        ann_id, background_id = _ids(ref)
        assert background_id != anns[ann_id]["image_id"]  # the object never came from its background
        if ref["comcoco"]["kind"] in ("appearance", "negative"):
            assert ref["text"] in SENTENCES[ann_id][1]
        if ref["image"] in checked:  # the pixels of a pair, once
            continue
        checked.add(ref["image"])
        image, target = read_rgb(root / "out" / ref["image"]), read_rgb(root / "out" / ref["target"])
        mask = read_mask(root / "out" / ref["mask"])
        assert image.shape == target.shape == (H, W, 3) and mask.shape == (H, W)
        # the target is the untouched background image
        np.testing.assert_array_equal(target, read_rgb(root / "coco" / "train2014" / files[background_id]))
        if ref["negative"]:
            assert not mask.any()
            np.testing.assert_array_equal(image, target)
            continue
        assert mask.any()
        np.testing.assert_array_equal(image[~mask], target[~mask])  # harmonised pixels only inside the pasted region
        source_area = annotation_mask(anns[ann_id], H, W).sum()
        assert cfg.min_area * 0.9 <= mask.sum() <= cfg.max_upscale**2 * source_area * 1.1
        assert mask.sum() <= cfg.max_cover * H * W * 1.05
        same_cluster = {CLUSTER_OF[c] for c, *_ in SCENES[background_id]}
        source_category = next(c for c, i in CATEGORIES.items() if i == anns[ann_id]["category_id"])
        assert CLUSTER_OF[source_category] in same_cluster


def test_pasted_object_is_harmonised_toward_its_new_scene(built):
    root, instances = built
    anns = {a["id"]: a for a in instances["annotations"]}
    files = {i["id"]: i["file_name"] for i in instances["images"]}
    moved = 0
    for ref in _positive_pairs(root):
        image, mask = read_rgb(root / "out" / ref["image"]), read_mask(root / "out" / ref["mask"])
        target = read_rgb(root / "out" / ref["target"])
        ann = anns[_ids(ref)[0]]
        source = read_rgb(root / "coco" / "train2014" / files[ann["image_id"]])
        source_colour = source[annotation_mask(ann, H, W)].mean(0)
        pasted_colour, scene_colour = image[mask].mean(0), target.reshape(-1, 3).mean(0)
        moved += np.abs(pasted_colour - scene_colour).sum() < np.abs(source_colour - scene_colour).sum()
        assert not np.allclose(pasted_colour, source_colour, atol=2)  # the colours were changed
    assert moved >= 10


def test_negatives_show_nothing_their_sentence_names(built):
    root, instances = built
    assert negative_problems(root, instances) == []
    category = _category_of(instances)
    # the test split's people can only be negatives on the one image without a person: the car scene
    person_negatives = [r for r in read_refs(root / "out", "test") if r["negative"]]
    assert person_negatives and all(_ids(r)[1] == 8 for r in person_negatives if category[_ids(r)[0]] == "person")
    stats = json.loads((root / "out" / STATS_FILE).read_text())
    assert stats["negatives"]["naming_something_present"] == 0


def test_backgrounds_are_spread_and_capped(built):
    root, _ = built
    assert reuse_problems(root) == []


def test_least_similar_breaks_ties_at_random_and_caps_uses():
    # 1,000 objects whose words match none of 500 candidates (Jaccard 0 everywhere), as in the simulation
    candidates = {image_id: {f"w{image_id}"} for image_id in range(500)}
    picked = {}
    for seed in (0, 1):
        rng, uses, order = np.random.default_rng(seed), Counter(), []
        for _ in range(1000):
            order.append(least_similar({"red", "cup"}, candidates, rng, uses=uses, max_uses=3)[0])
            uses[order[-1]] += 1
        assert max(uses.values()) <= 3
        assert len(uses) == 500  # the least used first: every candidate serves before any serves twice
        picked[seed] = order
    assert picked[0] != picked[1] and sorted(picked[0][:500]) == list(range(500))  # the seed breaks the ties


def test_least_similar_uses_jaccard():
    obj = {"red", "cup", "left"}
    candidates = {1: {"red", "cup"}, 2: {"blue", "bowl"}, 3: {"red", "plate", "big"}, 4: {"cup"}}
    # Jaccard: 1 -> 2/3, 2 -> 0, 3 -> 1/5, 4 -> 1/3
    assert least_similar(obj, candidates, np.random.default_rng(0), count=3) == [2, 3, 4]


def test_size_planner_reaches_the_papers_mix_from_refcoco_sizes():
    # RefCOCO+ objects are 42 / 34 / 24 % small / medium / large (paper 3.2); draw areas like that
    rng = np.random.default_rng(0)
    planner, cfg = SizePlanner(ComcocoConfig()), ComcocoConfig()
    classes = rng.choice(3, size=3000, p=(0.42, 0.34, 0.24))
    lows, highs = np.array([100, 32**2, 96**2]), np.array([32**2, 96**2, 0.3 * H * W])
    for c in classes:
        source = float(np.exp(rng.uniform(np.log(lows[c]), np.log(highs[c]))))
        area = planner.plan(rng, source, fit_area=H * W, frame_area=H * W)
        assert cfg.min_area <= area <= min(source * cfg.max_upscale**2, cfg.max_cover * H * W)
        planner.record(area)
    shares = np.array([planner.counts[c] for c in ("small", "medium", "large")]) / len(classes)
    np.testing.assert_allclose(shares, (0.11, 0.53, 0.36), atol=0.02)


def test_build_size_mix_is_reported_and_near_the_papers(built):
    root, _ = built
    assert size_problems(root) == []


def test_spatial_expressions_are_true_unique_and_tagged(built):
    root, instances = built
    assert spatial_problems(root, instances) == []


def test_comcoco_plus_has_appearance_only(built, tmp_path):
    root, _ = built
    build(root / "coco", root / "refcoco+", tmp_path / "plus", seed=0, max_pairs=4, spatial=False)
    refs = read_refs(tmp_path / "plus")
    assert refs and all(r["comcoco"]["kind"] in ("appearance", "negative") for r in refs)
    assert "ComCOCO+" in json.loads((tmp_path / "plus" / STATS_FILE).read_text())["variant"]


def test_sentences_naming_what_was_not_pasted_are_dropped(built):
    root, _ = built
    assert context_problems(root) == []
    dropped = json.loads((root / "out" / STATS_FILE).read_text())["sentences_dropped_for_unpasted_context"]
    assert NOT_PASTED in dropped["examples"]
    assert dropped["count"] == 1 + sum(" by the " in t for _, texts in SENTENCES.values() for t in texts)


def test_named_categories():
    assert named_categories("man holding an umbrella") == {"person", "umbrella"}
    assert named_categories("hot dog on the left") == {"hot dog"}  # not also "dog"
    assert named_categories("two puppies near the dogs") == {"dog"}
    assert named_categories("guy in orange shirt by the traffic lights") == {"person", "traffic light"}
    assert named_categories("the red mug") == {"cup"}


def test_placements_hide_little_of_the_background(built):
    root, instances = built
    assert overlap_problems(root, instances) == []


def test_placement_never_hides_a_small_annotated_object():
    # A big object on a frame whose only annotation is small: 2 % of the paste could cover all of it.
    occupied = np.zeros((100, 100), bool)
    occupied[45:51, 45:51] = True
    obj = np.ones((60, 60), bool)
    cfg = ComcocoConfig()
    for seed in range(40):
        top_left = _placement(np.random.default_rng(seed), obj, occupied, [(occupied, 36)], [], False, cfg)
        if top_left is None:
            continue
        y, x = top_left
        hidden = obj[max(0, 45 - y) : 51 - y, max(0, 45 - x) : 51 - x].sum() / 36 if y < 51 and x < 51 else 0.0
        assert hidden <= cfg.max_hidden
        assert overlap_fractions(obj, top_left, occupied, [(occupied, 36)])[1] == pytest.approx(hidden)


def test_review_pages_page_through_every_pair(built, tmp_path):
    from sahm_core.cli import main

    root, _ = built
    pairs = len({r["image"] for r in read_refs(root / "out", "test")})
    assert main(["make-data", "review", str(root / "out"), "--out", str(tmp_path / "pages"), "--per-page", "2",
                 "--split", "test"]) == 0
    pages = sorted((tmp_path / "pages").glob("review_*.png"))
    assert len(pages) == (pairs + 1) // 2
    assert all(read_rgb(p).shape[1] > 600 for p in pages)
    assert main(["make-data", "review", str(root / "nowhere")]) == 2


def test_clusters_cover_the_80_categories_once():
    assert len(CLUSTERS) == 17
    members = [c for _, cats in CLUSTERS for c in cats]
    assert sorted(members) == sorted(COCO_CATEGORIES) and len(members) == 80


def test_annotation_mask_decodes_polygon_and_both_rles():
    mask = np.zeros((H, W), np.uint8)
    mask[10:30, 40:90] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    compressed = {"segmentation": {"size": [H, W], "counts": rle["counts"].decode()}}
    raw = {"segmentation": {"size": [H, W], "counts": raw_rle(mask)}}
    assert raw_rle(np.array([[0, 1], [1, 1]], np.uint8)) == [1, 3]  # by hand: column-major 0,1,1,1
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


def test_cli_builds_comcoco(built, tmp_path, capsys):
    from sahm_core.cli import main

    root, _ = built
    inputs = ["--coco", str(root / "coco"), "--refcoco-plus", str(root / "refcoco+")]
    assert main(["make-data", "comcoco", *inputs, "--out", str(tmp_path / "out"), "--max-pairs", "2",
                 "--variant", "comcoco+", "--max-background-uses", "1"]) == 0
    out = capsys.readouterr().out
    assert "comcoco pairs" in out and "per 1,000 pairs" in out and "small / medium / large" in out
    assert len({r["image"] for r in read_refs(tmp_path / "out") if not r["negative"]}) == 2
    assert main(["make-data", "comcoco", *inputs, "--out", str(tmp_path / "out2"), "--max-hidden", "1.5"]) == 2
    assert "max_hidden" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="instances_train2014.json"):
        build(tmp_path / "nowhere", root / "refcoco+", tmp_path / "out2")
