"""`RemovalDataset`: one split of a removal dataset folder, as model-size tensors.

Training augmentation follows the paper (random crop + horizontal flip). The crop
keeps the referred object whole and the image's aspect ratio; a flip mirrors the
expression too ("left" <-> "right", "leftmost" <-> "rightmost"), so spatial words
stay true of the flipped picture.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from sahm_core.click import CLICK_TEXT
from sahm_core.data.layout import read_mask, read_refs, read_rgb
from sahm_core.lexicon import LEFT_RIGHT_SWAPS

_WORD = re.compile(r"[A-Za-z]+")


def mirror_text(text: str) -> str:
    """The expression for the mirrored image: left/right words swapped, case and punctuation kept."""

    def swap(match: re.Match) -> str:
        word = match.group(0)
        mirrored = LEFT_RIGHT_SWAPS.get(word.lower())
        if mirrored is None:
            return word
        if word.isupper():
            return mirrored.upper()
        return mirrored.capitalize() if word[0].isupper() else mirrored

    return _WORD.sub(swap, text)


def crop_box(shape: tuple[int, int], mask: np.ndarray, scale: float,
             rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): a crop `scale` times the image in each side (at least the mask's box), containing the mask."""
    h, w = shape
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size:  # the object stays whole: the crop grows to its box and is placed around it
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        ch, cw = max(ch, bottom - top), max(cw, right - left)
        y0 = int(rng.integers(max(0, bottom - ch), min(top, h - ch) + 1))
        x0 = int(rng.integers(max(0, right - cw), min(left, w - cw) + 1))
    else:
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return y0, y0 + ch, x0, x0 + cw


def click_inside(mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A click drawn uniformly from the pixels of mask (1,S,S) {0,1} (its rim included): (3,) = (x, y, 1), the pixel's
    centre in fractions of the side (model/point.py)."""
    size = mask.shape[-1]
    inside = torch.nonzero(mask[0] > 0)  # (N,2) rows, cols
    row, col = inside[int(torch.randint(len(inside), (), generator=generator))].tolist()
    return torch.tensor([(col + 0.5) / size, (row + 0.5) / size, 1.0])


class RemovalDataset(Dataset):
    """Items: dict(image (3,S,S) f32 [0,1], target (3,S,S), mask (1,S,S) f32 {0,1}, text str, point (3,) f32,
    negative bool, id str).

    With `click_fraction` > 0 that share of the expressions naming an object become clicks: the text is CLICK_TEXT and
    the point a pixel drawn uniformly inside the (augmented, model-size) mask. Otherwise point is (0, 0, 0), no click.

    A default collate of a list of items works (text -> list[str]). Every referenced
    file is checked when the dataset opens; a bad refs.jsonl line names its line number.
    """

    def __init__(self, root: str | Path, split: str, size: int, augment: bool = False,
                 crop_scale: tuple[float, float] = (0.8, 1.0), click_fraction: float = 0.0):
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if not 0 <= click_fraction <= 1:
            raise ValueError(f"click_fraction must be in [0, 1], got {click_fraction}")
        self.click_fraction = click_fraction
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        self.root, self.split, self.size, self.augment, self.crop_scale = Path(root), split, size, augment, crop_scale
        self.refs = read_refs(self.root, split)
        if not self.refs:
            raise ValueError(f"{self.root / 'refs.jsonl'} has no expressions in split {split!r}")

    def __len__(self) -> int:
        return len(self.refs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """Raw (image, target RGB uint8, mask bool) at file resolution, and the ref; sizes checked."""
        ref = self.refs[index]
        image, target = read_rgb(self.root / ref["image"]), read_rgb(self.root / ref["target"])
        mask = read_mask(self.root / ref["mask"])
        for name, array in (("target", target), ("mask", mask)):
            if array.shape[:2] != image.shape[:2]:
                raise ValueError(
                    f"{self.root / ref[name]}: {name} is {array.shape[1]}x{array.shape[0]} but the image "
                    f"{ref['image']} is {image.shape[1]}x{image.shape[0]} (ref {ref['id']!r})"
                )
        if ref["negative"] == bool(mask.any()):
            state = "negative but its mask is not empty" if ref["negative"] else "not negative but its mask is empty"
            raise ValueError(f"{self.root / ref['mask']}: ref {ref['id']!r} is {state}")
        return image, target, mask, ref

    def __getitem__(self, index: int) -> dict:
        image, target, mask, ref = self.load(index)
        text = ref["text"]
        if self.augment:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))  # follows torch's (per-worker) seed
            y0, y1, x0, x1 = crop_box(mask.shape, mask, rng.uniform(*self.crop_scale), rng)
            image, target, mask = image[y0:y1, x0:x1], target[y0:y1, x0:x1], mask[y0:y1, x0:x1]
            if rng.random() < 0.5:
                image, target, mask = image[:, ::-1], target[:, ::-1], mask[:, ::-1]
                text = mirror_text(text)
        mask_tensor = self._mask_tensor(mask)
        point = torch.zeros(3)
        if self.click_fraction and mask_tensor.any():
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))  # torch's own seed
            if torch.rand((), generator=generator) < self.click_fraction:
                text, point = CLICK_TEXT, click_inside(mask_tensor, generator)
        return {
            "image": self._to_tensor(image),
            "target": self._to_tensor(target),
            "mask": mask_tensor,
            "text": text,
            "point": point,
            "negative": bool(ref["negative"]),
            "id": ref["id"],
        }

    def _to_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        resized = cv2.resize(np.ascontiguousarray(rgb), (self.size, self.size), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(resized).permute(2, 0, 1).float().div_(255.0)  # (H,W,3) -> (3,S,S)

    def _mask_tensor(self, mask: np.ndarray) -> torch.Tensor:
        coverage = cv2.resize(np.ascontiguousarray(mask, dtype=np.float32), (self.size, self.size),
                              interpolation=cv2.INTER_AREA)
        return torch.from_numpy((coverage >= 0.5).astype(np.float32))[None]  # (S,S) -> (1,S,S)
