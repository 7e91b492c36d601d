"""RemovalDataset: items and collation, crop keeps the object, mirror_text, and clear errors for bad datasets."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sahm_core.data import RemovalDataset
from sahm_core.data.dataset import crop_box, mirror_text
from sahm_core.data.layout import make_folders, write_example, write_refs


def _dataset(root, n=4, size=(48, 64)):
    """n hand-made examples: a grey frame with a white rectangle (negative when k is odd)."""
    make_folders(root)
    refs = []
    for k in range(n):
        image = np.full((*size, 3), 90, np.uint8)
        mask = np.zeros(size, np.uint8)
        negative = k % 2 == 1
        if not negative:
            mask[10:20, 20 + k : 40 + k] = 255
        target = image.copy()
        image[mask > 0] = 250
        paths = write_example(root, f"x{k}", image, target, mask)
        refs.append({"id": f"x{k}", **paths, "text": f"remove the left box {k}", "split": "train",
                     "negative": negative})
    write_refs(root, refs)
    return refs


def test_items_have_the_contract_shapes_and_collate(tmp_path):
    _dataset(tmp_path)
    data = RemovalDataset(tmp_path, "train", size=32)
    item = data[0]
    assert item["image"].shape == item["target"].shape == (3, 32, 32) and item["mask"].shape == (1, 32, 32)
    assert item["image"].dtype == torch.float32 and 0 <= item["image"].min() and item["image"].max() <= 1
    assert set(torch.unique(item["mask"]).tolist()) == {0.0, 1.0}
    # 64x48 -> 32x32: the 20x10 box becomes 10x~6.7 pixels
    assert 50 <= item["mask"].sum() <= 80
    assert data[1]["negative"] and data[1]["mask"].sum() == 0
    batch = next(iter(DataLoader(data, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["text"][2] == "remove the left box 2"
    assert batch["negative"].tolist() == [False, True, False, True] and batch["id"] == ["x0", "x1", "x2", "x3"]


def test_augmented_items_keep_the_whole_object(tmp_path):
    _dataset(tmp_path, n=2)
    data = RemovalDataset(tmp_path, "train", size=32, augment=True, crop_scale=(0.5, 0.6))
    torch.manual_seed(1)
    for _ in range(20):
        item = data[0]
        assert item["mask"].sum() > 0
        texts = {"remove the left box 0", "remove the right box 0"}
        assert item["text"] in texts


def test_crop_box_contains_the_mask_and_keeps_aspect():
    rng = np.random.default_rng(0)
    mask = np.zeros((100, 200), bool)
    mask[30:60, 150:190] = True
    for _ in range(50):
        y0, y1, x0, x1 = crop_box(mask.shape, mask, 0.5, rng)
        assert (y1 - y0, x1 - x0) == (50, 100)
        assert 0 <= y0 <= 30 and y1 >= 60 and 0 <= x0 <= 150 and x1 >= 190 and x1 <= 200
    big = np.ones((100, 200), bool)  # the object fills the frame: the crop grows to the whole frame
    assert crop_box(big.shape, big, 0.5, rng) == (0, 100, 0, 200)


def test_mirror_text_swaps_whole_words_only():
    assert mirror_text("Remove the LEFTMOST star, left of the box") == "Remove the RIGHTMOST star, right of the box"
    assert mirror_text("the Right cup on the left") == "the Left cup on the right"
    assert mirror_text("leftover bright light") == "leftover bright light"


def test_missing_refs_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="refs.jsonl"):
        RemovalDataset(tmp_path, "train", size=32)


def test_missing_image_file_names_the_line(tmp_path):
    refs = _dataset(tmp_path, n=3)
    (tmp_path / refs[2]["target"]).unlink()
    with pytest.raises(FileNotFoundError, match=r"refs.jsonl:3: target file .*x2.png does not exist"):
        RemovalDataset(tmp_path, "train", size=32)


def test_wrong_size_mask(tmp_path):
    refs = _dataset(tmp_path, n=1)
    cv2.imwrite(str(tmp_path / refs[0]["mask"]), np.zeros((10, 10), np.uint8))
    data = RemovalDataset(tmp_path, "train", size=32)
    with pytest.raises(ValueError, match=r"mask is 10x10 but the image .* is 64x48"):
        data[0]


def test_colour_mask_is_refused(tmp_path):
    refs = _dataset(tmp_path, n=1)
    cv2.imwrite(str(tmp_path / refs[0]["mask"]), np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="8-bit single-channel"):
        RemovalDataset(tmp_path, "train", size=32)[0]


def test_bad_json_line_names_its_line_number(tmp_path):
    _dataset(tmp_path, n=3)
    lines = (tmp_path / "refs.jsonl").read_text().splitlines()
    lines[1] = lines[1][:-5]  # truncated JSON object on line 2
    (tmp_path / "refs.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"refs.jsonl:2: not valid JSON"):
        RemovalDataset(tmp_path, "train", size=32)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"split": "training"}, "split 'training' is not one of"),
        ({"negative": "no"}, "'negative' must be bool"),
        ({"text": "   "}, "empty text"),
        ({"tags": [["the", "X"]]}, "bad tag entry"),
    ],
)
def test_bad_fields_name_their_line(tmp_path, change, message):
    refs = _dataset(tmp_path, n=2)
    refs[1].update(change)
    (tmp_path / "refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
    with pytest.raises(ValueError, match=rf"refs.jsonl:2: .*{message}"):
        RemovalDataset(tmp_path, "train", size=32)


def test_missing_key_and_empty_split(tmp_path):
    refs = _dataset(tmp_path, n=2)
    del refs[0]["mask"]
    (tmp_path / "refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
    with pytest.raises(ValueError, match=r"refs.jsonl:1: missing key 'mask'"):
        RemovalDataset(tmp_path, "train", size=32)
    _dataset(tmp_path, n=2)
    with pytest.raises(ValueError, match="no expressions in split 'test'"):
        RemovalDataset(tmp_path, "test", size=32)
    with pytest.raises(ValueError, match="unknown split"):
        RemovalDataset(tmp_path, "dev", size=32)


def test_negative_with_a_mask_is_refused(tmp_path):
    refs = _dataset(tmp_path, n=2)
    cv2.imwrite(str(tmp_path / refs[1]["mask"]), np.full((48, 64), 255, np.uint8))
    with pytest.raises(ValueError, match="negative but its mask is not empty"):
        RemovalDataset(tmp_path, "train", size=32)[1]


def test_positive_with_an_empty_mask_is_refused(tmp_path):
    refs = _dataset(tmp_path, n=1)
    cv2.imwrite(str(tmp_path / refs[0]["mask"]), np.zeros((48, 64), np.uint8))
    with pytest.raises(ValueError, match="not negative but its mask is empty"):
        RemovalDataset(tmp_path, "train", size=32)[0]
