"""A small, format-faithful COCO 2014 + RefCOCO+ on disk, for the ComCOCO builder's tests and the end-to-end test.

The instances file is COCO's JSON (polygons, compressed and uncompressed RLE); refs(unc).p is pickled the way
Python 2's cPickle wrote it (protocol 2, strings as byte strings). Images are 640x480 JPEGs in train2014/.
"""

from __future__ import annotations

import json
import struct

import cv2
import numpy as np
from pycocotools import mask as mask_utils

H, W = 480, 640  # a typical COCO image; the size classes are absolute pixel areas, so the frame must be real-sized
S = 4  # the hand-drawn scenes below were laid out on a 160 x 120 grid
CATEGORIES = {"person": 1, "car": 3, "cat": 17, "dog": 18, "umbrella": 28, "tie": 32, "cup": 47, "bowl": 51}
# The words the fixture's sentences use for each category (the test's own list, not the builder's).
FIXTURE_WORDS = {"person": {"man", "guy", "woman", "person"}, "dog": {"dog", "puppy"}, "cup": {"cup", "mug"}}


def _ellipse(cx, cy, rx, ry):
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1) * S


def _rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float) * S


# image id -> [(category, outline polygon, colour, encoding)]; encoding: polygon | rle | raw-rle
SCENES = {
    1: [("dog", _ellipse(50, 80, 28, 18), (150, 90, 40), "polygon")],
    2: [("cat", _ellipse(110, 70, 20, 25), (235, 235, 230), "rle")],
    3: [("dog", _ellipse(40, 90, 22, 15), (60, 40, 20), "polygon"),
        ("cat", _ellipse(120, 50, 15, 15), (250, 150, 40), "raw-rle")],
    4: [("cup", _ellipse(80, 60, 18, 22), (210, 30, 30), "polygon")],
    5: [("bowl", _ellipse(60, 70, 30, 14), (30, 60, 200), "rle"),
        ("cup", _ellipse(130, 40, 12, 16), (30, 160, 60), "polygon")],
    # the umbrella is held above the man, outside his outline: pasting him leaves it behind
    6: [("person", _rect(20, 40, 50, 110), (200, 170, 140), "polygon"),
        ("umbrella", _ellipse(35, 22, 25, 10), (20, 20, 160), "polygon")],
    # the tie lies inside the guy's outline: pasting him pastes it
    7: [("person", _rect(100, 15, 130, 105), (40, 40, 40), "rle"),
        ("tie", _rect(112, 30, 118, 60), (180, 20, 20), "polygon")],
    8: [("car", _ellipse(80, 90, 40, 15), (200, 20, 20), "polygon")],
}
SENTENCES = {  # ann id -> (refcoco split, sentences); annotations without an entry have no ref
    101: ("train", ["brown dog lying down", "dog with a long tail"]),
    201: ("train", ["white cat"]),
    301: ("train", ["dark puppy"]),
    302: ("train", ["orange cat sitting"]),
    401: ("train", ["red cup", "the red mug"]),
    501: ("train", ["blue bowl"]),
    502: ("train", ["green cup"]),
    601: ("testA", ["man in tan shirt", "man holding umbrella"]),
    701: ("testB", ["guy wearing black", "guy with a red tie"]),
    801: ("testB", ["red car"]),
}
NOT_PASTED = "man holding umbrella"
PALETTE = {"red": (200, 30, 30), "green": (40, 160, 60), "blue": (30, 60, 200), "yellow": (230, 210, 40),
           "white": (240, 240, 235), "black": (25, 25, 25), "brown": (120, 70, 30)}
NOUNS = {"dog": "dog", "cat": "cat", "cup": "cup", "bowl": "bowl", "person": "woman", "car": "car"}


def _more_scenes(count=27, first_id=20):
    """Procedural scenes (1-3 non-overlapping objects of one scene type, sizes from tiny to large) for the stats."""
    rng = np.random.default_rng(1)
    groups = (("dog", "cat"), ("cup", "bowl"), ("person", "car"))
    for n in range(count):
        image_id, group, objects, boxes = first_id + n, groups[n % 3], [], []
        split = "val" if n % 9 == 4 else "train"
        for k in range(int(rng.integers(1, 4))):
            for _ in range(30):
                rx, ry = rng.uniform(2, 28, 2) if rng.random() < 0.5 else rng.uniform(2, 10, 2)
                cx, cy = rng.uniform(rx + 2, 158 - rx), rng.uniform(ry + 2, 118 - ry)
                box = (cx - rx, cy - ry, cx + rx, cy + ry)
                if all(box[2] < b[0] - 2 or b[2] < box[0] - 2 or box[3] < b[1] - 2 or b[3] < box[1] - 2 for b in boxes):
                    break
            else:
                continue
            boxes.append(box)
            category = group[int(rng.integers(2))]
            colour = list(PALETTE)[int(rng.integers(len(PALETTE)))]
            encoding = ("polygon", "rle", "raw-rle")[(n + k) % 3]
            objects.append((category, _ellipse(cx, cy, rx, ry), PALETTE[colour], encoding))
            sentences = [f"{colour} {NOUNS[category]}", f"the {NOUNS[category]} that is {colour}"]
            if k and objects[0][0] != category:  # names a second object of the source image: not pasted with it
                sentences.append(f"{colour} {NOUNS[category]} by the {NOUNS[objects[0][0]]}")
            SENTENCES[image_id * 100 + len(objects)] = (split, sentences)
        SCENES[image_id] = objects


_more_scenes()


def raw_rle(mask):
    """COCO's uncompressed RLE: run lengths over the column-major flattened mask, starting with a run of zeros."""
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


def _py2_cpickle(value) -> bytes:
    """`cPickle.dump(value, f, 2)` of Python 2 (which wrote refs(unc).p): str as SHORT_BINSTRING/BINSTRING bytes,
    a memo PUT after each string and container, APPEND/SETITEM for one item, APPENDS/SETITEMS for more."""
    out, memo = bytearray(b"\x80\x02"), [0]

    def put():
        out.extend(b"q" + bytes([memo[0]]) if memo[0] < 256 else b"r" + struct.pack("<I", memo[0]))
        memo[0] += 1

    def dump(v):
        if v is None:
            out.extend(b"N")
        elif isinstance(v, bool):
            out.extend(b"\x88" if v else b"\x89")
        elif isinstance(v, int):
            out.extend(b"K" + bytes([v]) if 0 <= v < 256 else b"M" + struct.pack("<H", v) if 0 <= v < 65536
                       else b"J" + struct.pack("<i", v))
        elif isinstance(v, float):
            out.extend(b"G" + struct.pack(">d", v))
        elif isinstance(v, str):
            data = v.encode("utf-8")
            out.extend((b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<I", len(data))) + data)
            put()
        elif isinstance(v, (list, dict)):
            items = list(v.items()) if isinstance(v, dict) else v
            out.extend(b"}" if isinstance(v, dict) else b"]")
            put()
            if len(items) > 1:
                out.extend(b"(")
            for item in items:
                for part in item if isinstance(v, dict) else (item,):
                    dump(part)
            if items:
                one, many = (b"s", b"u") if isinstance(v, dict) else (b"a", b"e")
                out.extend(one if len(items) == 1 else many)
        else:
            raise TypeError(type(v))

    dump(value)
    return bytes(out + b".")


def write_tiny_coco(root):
    """Writes root/coco/{annotations/instances_train2014.json, train2014/*.jpg} and root/refcoco+/refs(unc).p;
    returns the instances dict."""
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
                segmentation = {"size": [H, W], "counts": raw_rle(mask)}
            ann_id = image_id * 100 + k + 1
            ys, xs = np.nonzero(mask)
            anns.append({"id": ann_id, "image_id": image_id, "category_id": CATEGORIES[category], "iscrowd": 0,
                         "segmentation": segmentation, "area": float(mask.sum()),
                         "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]})
            if ann_id not in SENTENCES:
                continue
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
    (root / "refcoco+" / "refs(unc).p").write_bytes(_py2_cpickle(refs))
    return instances
