"""Spatial referring expressions for a pasted object, from where it landed (the paper's ComCOCO, appendix B).

Two kinds, as the paper divides them:
- image-based: where the object is in the frame ("the dog on the left", "the left dog");
- object-based: where it is relative to an annotated object of the new scene ("the dog next to the car").

Every expression must be true of the pasted object and of no other object of its category in the composite,
with margins, so that a slightly different reading of "left" or "next to" still picks the same object. Positions
are mask centroids and boxes in image fractions (0 = left/top, 1 = right/bottom). Words are tagged like the
synthetic expressions (sahm_core/data/expressions.py): the referent's category IW, place and relation words and
the anchor's category AW, function words O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sahm_core.data.expressions import (
    POSITION_FORMS,
    POSITION_MARGIN,
    RELATION_WORDS,
    RELATIONS,
    Expression,
    relation_holds,
)

# "On the left" needs the centroid in the outer 40 % of the frame; any other object of the category must sit in
# the other half, so the phrase cannot be read as either of them.
SIDE_MARGIN = 0.1
# "Next to": the boxes are side by side, at most this far apart (or overlapping by at most OVERLAP_SLACK),
# and share at least half of the lower box's height.
NEXT_TO_GAP = 0.06
OVERLAP_SLACK = 0.02
MIN_ANCHOR_AREA = 0.005  # an anchor must cover this much of the frame to be something a person would name
NEXT_TO_PHRASES = ("next to", "beside")


@dataclass(frozen=True)
class Region:
    """One object of the composite: its category, mask centroid, box and area, all in image fractions."""

    category: str
    cx: float
    cy: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    area: float

    @classmethod
    def from_mask(cls, category: str, mask: np.ndarray) -> Region | None:
        """From an (H, W) bool mask; None when the mask is empty."""
        ys, xs = np.nonzero(mask)
        if not ys.size:
            return None
        h, w = mask.shape
        box = (xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h)
        return cls(category, float(xs.mean() + 0.5) / w, float(ys.mean() + 0.5) / h, box, ys.size / (h * w))


def on_side(region: Region, side: str, margin: float = SIDE_MARGIN) -> bool:
    """The centroid is on that side of the frame's middle by more than `margin` (negative margin: a clear no)."""
    value = {"left": -region.cx, "right": region.cx, "top": -region.cy, "bottom": region.cy}[side]
    return value - (0.5 if side in ("right", "bottom") else -0.5) > margin


def next_to(a: Region, b: Region, gap: float = NEXT_TO_GAP, min_shared: float = 0.5) -> bool:
    """a and b are side by side: horizontal gap between boxes in [-OVERLAP_SLACK, gap], heights shared enough."""
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    horizontal_gap = max(bx0 - ax1, ax0 - bx1)
    shared = min(ay1, by1) - max(ay0, by0)
    return -OVERLAP_SLACK <= horizontal_gap <= gap and shared >= min_shared * min(ay1 - ay0, by1 - by0)


def _noun(category: str, tag: str) -> list[tuple[str, str]]:
    return [(word, tag) for word in category.split()]


def image_based(target: Region, others: list[Region]) -> list[Expression]:
    """Every image-based expression true of `target` and of no other object of its category."""
    rivals = [o for o in others if o.category == target.category]
    found = []
    for side, (_, adjectives, trailing) in POSITION_FORMS.items():
        if on_side(target, side) and not any(on_side(o, side, margin=0.0) for o in rivals):
            noun = _noun(target.category, "IW")
            found.append(Expression(tuple([("the", "O")] + noun + [(trailing[0], "O"), (trailing[1], "O"),
                                                                   (trailing[2], "AW")])))
            found.append(Expression(tuple([("the", "O"), (adjectives[0], "AW")] + noun)))
    return found


def object_based(target: Region, others: list[Region]) -> list[Expression]:
    """Every object-based expression true of `target` and of no other object of its category.

    The anchor is an object whose category appears once in the scene (so "the car" names it) and is not the
    target's; the relation holds with POSITION_MARGIN for the target and fails by that margin for its rivals.
    """
    rivals = [o for o in others if o.category == target.category]
    counts: dict[str, int] = {}
    for o in others:
        counts[o.category] = counts.get(o.category, 0) + 1
    found = []
    for anchor in others:
        if anchor.category == target.category or counts[anchor.category] != 1 or anchor.area < MIN_ANCHOR_AREA:
            continue
        anchor_words = [("the", "O")] + _noun(anchor.category, "AW")
        head = [("the", "O")] + _noun(target.category, "IW")
        for relation, phrasings in RELATIONS.items():
            if relation_holds(target, anchor, relation, POSITION_MARGIN) and not any(
                relation_holds(o, anchor, relation, -POSITION_MARGIN) for o in rivals
            ):
                for phrase in phrasings:
                    words = [(w, "AW" if w in RELATION_WORDS else "O") for w in phrase.split()]
                    found.append(Expression(tuple(head + words + anchor_words)))
        if next_to(target, anchor) and not any(next_to(o, anchor, 2 * NEXT_TO_GAP, 0.0) for o in rivals):
            for phrase in NEXT_TO_PHRASES:
                words = [(w, "O" if w == "to" else "AW") for w in phrase.split()]
                found.append(Expression(tuple(head + words + anchor_words)))
    return found


def spatial_expressions(target: Region, others: list[Region], rng: np.random.Generator) -> dict[str, Expression]:
    """At most one expression of each kind ("image", "object"), drawn at random among the true ones."""
    chosen = {}
    for kind, candidates in (("image", image_based(target, others)), ("object", object_based(target, others))):
        if candidates:
            chosen[kind] = candidates[int(rng.integers(len(candidates)))]
    return chosen
