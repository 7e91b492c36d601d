"""Synthetic generator: pixel invariants, expressions that name exactly one object, tags, determinism, splits, CLI.

Uniqueness is checked by an interpreter written here from the lexicon alone (not
from sahm_core.data.expressions): it reads the expression and picks the objects
it fits from the scene metadata.
"""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch

from sahm_core.data.layout import make_folders, read_mask, read_refs, read_rgb, write_example, write_refs
from sahm_core.data.synthetic import make_dataset, render_sample, split_plan
from sahm_core.lexicon import COLOURS, POSITION_WORDS, RELATION_PHRASES, SHAPE_WORDS, SIZE_WORDS, TEXTURE_WORDS

NOUNS = {word: category for category, words in SHAPE_WORDS.items() for word in words}
TEXTURE = {"plain": "plain", "solid": "plain", "striped": "striped", "dotted": "dotted", "checkered": "checkered"}
SIZE = {"big": "big", "large": "big", "huge": "big", "small": "small", "little": "small", "tiny": "small"}
LEXICON_WORDS = (set(NOUNS) | set(COLOURS) | set(SIZE_WORDS) | set(TEXTURE_WORDS) | set(POSITION_WORDS)
                 | {w for phrase in RELATION_PHRASES for w in phrase.split()})
PLACE = {"leftmost": "left", "left": "left", "rightmost": "right", "right": "right", "topmost": "top", "top": "top",
         "upper": "top", "bottommost": "bottom", "bottom": "bottom", "lower": "bottom"}


def _phrase(words: list[str]) -> dict:
    """Noun phrase -> constraints. The noun is the last category word; the rest are modifiers."""
    out = {"category": None, "colour": None, "texture": None, "size": None, "place": None}
    for w in words:
        if w in NOUNS:
            out["category"] = NOUNS[w]
        elif w in COLOURS:
            out["colour"] = w
        elif w in TEXTURE:
            out["texture"] = TEXTURE[w]
        elif w in SIZE:
            out["size"] = SIZE[w]
        elif w in PLACE:
            out["place"] = PLACE[w]
    assert out["category"], f"no category word in {words}"
    return out


def _fits(obj, p) -> bool:
    return (obj.category == p["category"] and p["colour"] in (None, obj.colour)
            and p["texture"] in (None, obj.texture))


def interpret(text: str, objects) -> list[int]:
    """Indices of the objects the expression picks out (a correct referring expression gives exactly one)."""
    words = text.lower().split()
    relation, split_at, anchor_from = None, len(words), None
    for i, w in enumerate(words):
        if w in ("left", "right") and i + 1 < len(words) and words[i + 1] == "of":
            relation, split_at, anchor_from = (w + "_of", i - (words[i - 1] == "the") - (words[i - 2:i - 1] == ["to"]),
                                               i + 2)
        elif w in ("above", "below", "under"):
            relation, split_at, anchor_from = ("above" if w == "above" else "below"), i, i + 1
    target = _phrase(words[:split_at])
    found = [i for i, o in enumerate(objects) if _fits(o, target)]
    if relation:
        anchors = [i for i, o in enumerate(objects) if _fits(o, _phrase(words[anchor_from:]))]
        assert len(anchors) == 1, f"anchor of {text!r} is not unique: {anchors}"
        a = objects[anchors[0]]

        def holds(o):
            dx, dy = o.cx - a.cx, o.cy - a.cy
            along, across = {"left_of": (-dx, dy), "right_of": (dx, dy), "above": (-dy, dx),
                             "below": (dy, dx)}[relation]
            return along > 0 and along > abs(across)

        return [i for i in found if i != anchors[0] and holds(objects[i])]
    if target["size"]:
        pick = max if target["size"] == "big" else min
        return [pick(found, key=lambda i: objects[i].size)] if found else []
    if target["place"]:
        axis, pick = {"left": ("cx", min), "right": ("cx", max), "top": ("cy", min),
                      "bottom": ("cy", max)}[target["place"]]
        return [pick(found, key=lambda i: getattr(objects[i], axis))] if found else []
    return found


def _assert_pixels(image, target, mask, negative):
    assert image.shape == target.shape and image.shape[:2] == mask.shape
    if negative:
        assert not mask.any()
        np.testing.assert_array_equal(image, target)
        return
    assert mask.any()
    outside = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) == 0
    np.testing.assert_array_equal(image[outside], target[outside])
    assert (image[mask > 0] != target[mask > 0]).any(), "removing the object changed nothing"


SEEDS = range(150)


@pytest.fixture(scope="module")
def samples():
    return [render_sample(seed) for seed in SEEDS]


def test_pixels_outside_mask_are_untouched(samples):
    assert any(s.negative for s in samples) and any(not s.negative for s in samples)
    for s in samples:
        assert s.image.dtype == s.target.dtype == s.mask.dtype == np.uint8
        assert set(np.unique(s.mask)) <= {0, 255}
        _assert_pixels(s.image, s.target, s.mask > 0, s.negative)


def test_every_expression_names_exactly_its_object(samples):
    kinds = set()
    for s in samples:
        picked = interpret(s.text, s.objects)
        if s.negative:
            assert picked == [], f"negative {s.text!r} matches objects {picked} (seed {s.seed})"
        else:
            assert picked == [s.target_index], f"{s.text!r} picks {picked}, not {s.target_index} (seed {s.seed})"
            words = set(s.text.split())
            kinds.add("relation" if words & {"of", "above", "below", "under"} else
                      "place" if words & set(PLACE) else "size" if words & set(SIZE) else "name")
    assert kinds == {"relation", "place", "size", "name"}  # every expression form shows up


def test_mask_is_the_named_objects_visible_pixels(samples):
    """The mask lies on the named object: its centroid is the scene metadata's visible centroid."""
    for s in samples:
        if s.negative:
            continue
        ys, xs = np.nonzero(s.mask)
        obj = s.objects[s.target_index]
        size = s.mask.shape[0]
        assert abs(xs.mean() / size - obj.cx) < 0.02 and abs(ys.mean() / size - obj.cy) < 0.02


def test_tags_cover_the_words_and_mark_one_identity_word(samples):
    for s in samples:
        assert " ".join(w for w, _ in s.tags) == s.text
        identity = [w for w, t in s.tags if t == "IW"]
        # one identity word, said twice at most when a spoken repeat hit it (sahm_core.data.speech)
        assert len(set(identity)) == 1 and len(identity) <= 2 and identity[0] in NOUNS
        for w, t in s.phrase:  # the noun phrase; a frame may say a lexicon word as "other" ("right now")
            if w in COLOURS or w in SIZE or w in TEXTURE or w in PLACE:
                assert t == "AW", (w, t, s.text)
        for w, t in s.tags:
            if w in ("the", "remove", "please", "of"):
                assert t == "O", (w, t, s.text)
        if not s.negative:
            assert NOUNS[identity[0]] == s.objects[s.target_index].category
        # the tagger trains on the shared lexicon: every non-"other" word must be in it
        assert {w for w, t in s.tags if t != "O"} <= LEXICON_WORDS, s.tags


def test_same_seed_same_sample_and_negative_fraction_is_honoured():
    a, b = render_sample(1234), render_sample(1234)
    for field in ("image", "target", "mask"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert (a.text, a.tags, a.objects) == (b.text, b.tags, b.objects)
    assert not any(render_sample(s, negative_fraction=0.0).negative for s in range(20))
    assert all(render_sample(s, negative_fraction=1.0).negative for s in range(20))
    with pytest.raises(ValueError, match="negative_fraction"):
        render_sample(0, negative_fraction=1.5)


def test_splits_have_disjoint_seeds_and_the_right_sizes():
    plan = split_plan(1000, seed=7, val_fraction=0.1, test_fraction=0.05)
    by_split = {name: {seed for _, split, seed in plan if split == name} for name in ("train", "val", "test")}
    assert [len(v) for v in by_split.values()] == [850, 100, 50]
    assert not (by_split["train"] & by_split["val"] or by_split["train"] & by_split["test"]
                or by_split["val"] & by_split["test"])
    assert plan == split_plan(1000, seed=7, val_fraction=0.1, test_fraction=0.05)
    assert {s for *_, s in split_plan(100, seed=8, val_fraction=0.1, test_fraction=0.1)}.isdisjoint(
        {s for *_, s in split_plan(100, seed=7, val_fraction=0.1, test_fraction=0.1)})


def test_written_dataset_is_deterministic_and_keeps_the_invariants(tmp_path):
    first, _ = make_dataset(tmp_path / "a", n=24, seed=3, workers=2)
    second, _ = make_dataset(tmp_path / "b", n=24, seed=3, workers=1)
    assert first.read_text() == second.read_text()
    refs = read_refs(tmp_path / "a")
    assert {r["split"] for r in refs} == {"train", "val", "test"}
    for ref in refs:
        image, target = read_rgb(tmp_path / "a" / ref["image"]), read_rgb(tmp_path / "a" / ref["target"])
        mask = read_mask(tmp_path / "a" / ref["mask"])
        assert (tmp_path / "b" / ref["image"]).read_bytes() == (tmp_path / "a" / ref["image"]).read_bytes()
        _assert_pixels(image, target, mask, ref["negative"])
        # the stored seed regenerates the sample; spoken phrasing is training augmentation, evaluation stays plain
        sample = render_sample(ref["seed"], spoken=ref["split"] == "train")
        np.testing.assert_array_equal(image, sample.image)
        assert ref["text"] == sample.text and ref["tags"] == sample.tags and ref["phrase"] == sample.phrase


def test_cli_writes_the_layout(tmp_path, capsys):
    from sahm_core.cli import main

    out = tmp_path / "syn"
    assert main(["make-data", "synthetic", "--out", str(out), "--n", "10", "--seed", "5", "--workers", "2",
                 "--negative-fraction", "0.5"]) == 0
    assert "samples/s" in capsys.readouterr().out
    lines = [json.loads(line) for line in (out / "refs.jsonl").read_text().splitlines()]
    assert len(lines) == 10 and all((out / r["image"]).is_file() for r in lines)
    assert main(["make-data", "synthetic", "--out", str(out), "--n", "0"]) == 2
    assert "n must be positive" in capsys.readouterr().err
    assert main(["make-data", "preview", "--data", str(out), "--out", str(tmp_path / "sheet.png"), "--count", "4"]) == 0
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet is not None and sheet.shape[0] > 200 and sheet.shape[1] > 600


def test_flip_swaps_left_and_right_so_the_text_still_names_the_masked_object(tmp_path):
    """RemovalDataset's flip on real examples: the mirrored text, read against the mirrored scene, picks the mask."""
    from sahm_core.data import RemovalDataset

    chosen = [s for s in map(render_sample, range(400))
              if not s.negative and set(s.text.split()) & {"left", "right", "leftmost", "rightmost"}][:6]
    assert len(chosen) == 6
    make_folders(tmp_path)
    refs = []
    for k, s in enumerate(chosen):
        paths = write_example(tmp_path, f"s{k}", s.image, s.target, s.mask)
        refs.append({"id": f"s{k}", **paths, "text": s.text, "split": "train", "negative": False})
    write_refs(tmp_path, refs)
    data = RemovalDataset(tmp_path, "train", size=256, augment=True, crop_scale=(1.0, 1.0))
    torch.manual_seed(0)
    seen = set()
    for _ in range(6):
        for k, s in enumerate(chosen):
            item = data[k]
            image = (item["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            flipped = not np.array_equal(image, s.image)
            seen.add(flipped)
            if not flipped:
                assert item["text"] == s.text
                continue
            np.testing.assert_array_equal(image, s.image[:, ::-1])
            np.testing.assert_array_equal(item["mask"][0].numpy() > 0, s.mask[:, ::-1] > 0)
            assert item["text"] != s.text
            mirrored = [dataclasses.replace(o, cx=1.0 - o.cx) for o in s.objects]
            assert interpret(item["text"], mirrored) == [s.target_index], (s.text, item["text"])
            assert interpret(s.text, mirrored) != [s.target_index]  # the unswapped text would now be wrong
    assert seen == {True, False}


def test_plain_phrasing_is_an_opening_or_nothing_and_spoken_is_the_same_scene_in_a_frame():
    from sahm_core.lexicon import COMMAND_OPENINGS

    framed = 0
    for seed in range(60):
        plain, spoken = render_sample(seed), render_sample(seed, spoken=True)
        phrase = " ".join(w for w, _ in plain.phrase)
        assert plain.phrase == spoken.phrase and plain.negative == spoken.negative
        assert plain.text == phrase or any(plain.text == f"{o} {phrase}" for o in COMMAND_OPENINGS), plain.text
        np.testing.assert_array_equal(plain.mask, spoken.mask)
        framed += spoken.text != phrase
    assert framed > 20  # about 60 % are framed, 30 % carry speech effects
