"""The removal-dataset folder layout (docs/architecture.md, "Data on disk"): writing it and reading refs.jsonl back.

    refs.jsonl                 one JSON object per expression
    images/ targets/ masks/    PNG; masks 8-bit, 255 = object to remove

Both writers (synthetic generator, ComCOCO builder) and the reader go through here,
so the layout is defined once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

REFS_FILE = "refs.jsonl"
VIEWS_FILE, OBJECTS_FILE = "views.jsonl", "objects.jsonl"  # from-bag's static views and objects
SPLITS = ("train", "val", "test")
REQUIRED_KEYS = {"id": str, "image": str, "target": str, "mask": str, "text": str, "split": str, "negative": bool}
TAGS = ("IW", "AW", "O")
# Lossless either way; Huffman-only coding after a "sub" filter writes ~3x faster than the default, files ~same size.
PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
            cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]


def write_example(root: Path, stem: str, image: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, str]:
    """Write images/<stem>.png, targets/<stem>.png, masks/<stem>.png; returns their relative paths."""
    paths = {"image": f"images/{stem}.png", "target": f"targets/{stem}.png", "mask": f"masks/{stem}.png"}
    for key, array in (("image", image), ("target", target), ("mask", mask)):
        pixels = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
        if not cv2.imwrite(str(root / paths[key]), pixels, PNG_FAST):
            raise OSError(f"could not write {root / paths[key]}")
    return paths


def make_folders(root: Path) -> None:
    for sub in ("images", "targets", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)


def read_jsonl(path: Path, folder: str) -> list[dict]:
    """The JSON objects of a JSON-lines file; FileNotFoundError saying which `folder` it was expected in ("a video
    dataset folder (sahm make-data video)"), ValueError naming a line that is not a JSON object."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not {folder}")
    return [row for _, row in _numbered_rows(path)]


def _numbered_rows(path: Path):
    """("path:line", JSON object) per non-blank line; ValueError naming the line when it is not a JSON object."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield where, row


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write one JSON object per line, atomically (a half-written file never replaces a good one)."""
    partial = path.with_suffix(".jsonl.partial")
    with open(partial, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(partial, path)
    return path


def write_refs(root: Path, refs: list[dict]) -> Path:
    """Write refs.jsonl atomically."""
    return write_jsonl(root / REFS_FILE, refs)


def _check_ref(ref, where: str) -> None:
    if not isinstance(ref, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(ref).__name__}")
    for key, kind in REQUIRED_KEYS.items():
        if key not in ref:
            raise ValueError(f"{where}: missing key {key!r} (required: {', '.join(REQUIRED_KEYS)})")
        if not isinstance(ref[key], kind):
            raise ValueError(f"{where}: {key!r} must be {kind.__name__}, got {type(ref[key]).__name__}")
    if ref["split"] not in SPLITS:
        raise ValueError(f"{where}: split {ref['split']!r} is not one of {', '.join(SPLITS)}")
    if not ref["text"].strip():
        raise ValueError(f"{where}: empty text")
    for item in ref.get("tags", []):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and item[1] in TAGS):
            raise ValueError(f"{where}: bad tag entry {item!r}; expected [word, one of {', '.join(TAGS)}]")


def read_refs(root: str | Path, split: str | None = None) -> list[dict]:
    """Every ref (or one split's), validated; a bad line raises ValueError naming file and line number.

    Referenced files must exist (FileNotFoundError names the line); nothing is skipped silently.
    """
    root = Path(root)
    path = root / REFS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a removal dataset folder (docs/architecture.md, Data on disk)")
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    refs = []
    for where, ref in _numbered_rows(path):
        _check_ref(ref, where)
        if split is None or ref["split"] == split:
            for key in ("image", "target", "mask"):
                if not (root / ref[key]).is_file():
                    raise FileNotFoundError(f"{where}: {key} file {root / ref[key]} does not exist")
            refs.append(ref)
    return refs


def read_rgb(path: Path) -> np.ndarray:
    pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if pixels is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


def read_mask(path: Path) -> np.ndarray:
    """(H, W) bool; 8-bit single-channel PNG required."""
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError(f"{path}: not a readable image")
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"{path}: mask must be an 8-bit single-channel PNG, got shape {pixels.shape} {pixels.dtype}")
    return pixels > 127
