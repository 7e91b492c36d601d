"""Referring expressions for synthetic scenes: pick words that name exactly one object.

A scene is a list of `SceneObject`s. `describe` lists every expression form that
singles out the referred object (category alone, colour, texture, relative size,
extreme position, relation to a uniquely named anchor), keeps only the ones that
hold with a safety margin, and picks one. `describe_absent` names a
category/colour combination that is not in the scene (a negative sentence).

Every word carries its syntax tag: "IW" for the referred object's category word,
"AW" for words that describe it (colour, size, texture, place, and the anchor of
a relation), "O" for the rest ("remove", "the", "of").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sahm_core.data.speech import SPEECH_RATE, apply_effects, in_frame, wrap
from sahm_core.lexicon import COLOURS, COMMAND_OPENINGS, SHAPE_WORDS

# Position of a centroid is in image fractions (0 = left/top, 1 = right/bottom).
POSITION_MARGIN = 0.08  # an extreme object must beat the runner-up by this much of the image side
SIZE_RATIO = 1.5  # "big"/"small" only when the sizes differ by at least this factor
TEXTURES = ("plain", "striped", "dotted", "checkered")
TEXTURE_NAMES = {"plain": ("plain", "solid"), "striped": ("striped",), "dotted": ("dotted",),
                 "checkered": ("checkered",)}
BIG_WORDS = ("big", "large", "huge")
SMALL_WORDS = ("small", "little", "tiny")
RELATIONS = {  # relation -> phrasings; the last word before the anchor is tagged O when it is "of"/"to"
    "left_of": ("left of", "to the left of"),
    "right_of": ("right of", "to the right of"),
    "above": ("above",),
    "below": ("below", "under"),
}
RELATION_WORDS = {"left", "right", "above", "below", "under"}  # attribute words inside a relation phrase


@dataclass(frozen=True)
class SceneObject:
    """What an expression may say about one object; centroid of its visible pixels, in image fractions."""

    category: str  # key of lexicon.SHAPE_WORDS
    colour: str  # key of lexicon.COLOURS
    texture: str  # one of TEXTURES
    size: float  # nominal diameter, image fractions
    cx: float
    cy: float


@dataclass(frozen=True)
class Expression:
    words: tuple[tuple[str, str], ...]  # (word, tag)
    phrase: tuple[tuple[str, str], ...] = ()  # the noun phrase inside the frame, before spoken effects

    @property
    def text(self) -> str:
        return " ".join(w for w, _ in self.words)

    @property
    def tags(self) -> list[list[str]]:
        return [[w, t] for w, t in self.words]


def _attrs_match(obj: SceneObject, colour: str | None, texture: str | None, category: str) -> bool:
    return (
        obj.category == category
        and (colour is None or obj.colour == colour)
        and (texture is None or obj.texture == texture)
    )


def relation_holds(obj: SceneObject, anchor: SceneObject, relation: str, slack: float = 0.0) -> bool:
    """obj is `relation` of anchor: the offset along the relation's axis dominates and has the right sign.

    slack > 0 asks for a clear yes; slack < 0 turns "no" into a clear no.
    """
    dx, dy = obj.cx - anchor.cx, obj.cy - anchor.cy
    along, across = {"left_of": (-dx, dy), "right_of": (dx, dy), "above": (-dy, dx), "below": (dy, dx)}[relation]
    return along > slack and along - abs(across) > slack


def _noun_phrase(rng, colour, texture, category, size_word=None, position_word=None, tag_noun="IW"):
    """[size] [position] [texture] [colour] noun, e.g. "big leftmost striped red star"."""
    words = []
    if size_word:
        words.append((size_word, "AW"))
    if position_word:
        words.append((position_word, "AW"))
    if texture:
        words.append((str(rng.choice(TEXTURE_NAMES[texture])), "AW"))
    if colour:
        words.append((colour, "AW"))
    words.append((str(rng.choice(SHAPE_WORDS[category])), tag_noun))
    return words


def _candidates(objects: list[SceneObject], index: int):
    """Every (kind, builder) whose expression is true of objects[index] and of no other object, with margins."""
    t = objects[index]
    found = []
    descriptors = [(None, None), (t.colour, None)]
    if t.texture != "plain":
        descriptors.append((None, t.texture))
    for colour, texture in descriptors:
        group = [o for o in objects if _attrs_match(o, colour, texture, t.category)]
        others = [o for o in group if o is not t]
        if not others:
            found.append(("name", dict(colour=colour, texture=texture)))
            continue
        if all(t.size >= SIZE_RATIO * o.size for o in others):
            found.append(("size", dict(colour=colour, texture=texture, size="big")))
        if all(o.size >= SIZE_RATIO * t.size for o in others):
            found.append(("size", dict(colour=colour, texture=texture, size="small")))
        for axis, low, high in (("cx", "left", "right"), ("cy", "top", "bottom")):
            v = getattr(t, axis)
            if all(getattr(o, axis) - v >= POSITION_MARGIN for o in others):
                found.append(("position", dict(colour=colour, texture=texture, side=low, pair=len(group) == 2)))
            if all(v - getattr(o, axis) >= POSITION_MARGIN for o in others):
                found.append(("position", dict(colour=colour, texture=texture, side=high, pair=len(group) == 2)))
        for a_i, anchor in enumerate(objects):
            if anchor is t:
                continue
            a_colour = None if sum(o.category == anchor.category for o in objects) == 1 else anchor.colour
            if sum(_attrs_match(o, a_colour, None, anchor.category) for o in objects) != 1:
                continue
            for relation in RELATIONS:
                if relation_holds(t, anchor, relation, POSITION_MARGIN) and not any(
                    relation_holds(o, anchor, relation, -POSITION_MARGIN) for o in others if o is not anchor
                ):
                    found.append(
                        ("relation", dict(colour=colour, texture=texture, anchor=a_i, a_colour=a_colour,
                                          relation=relation))
                    )
    return found


POSITION_FORMS = {  # side -> (superlative, adjective used for a pair, trailing phrase)
    "left": ("leftmost", ("left",), ("on", "the", "left")),
    "right": ("rightmost", ("right",), ("on", "the", "right")),
    "top": ("topmost", ("top", "upper"), ("at", "the", "top")),
    "bottom": ("bottommost", ("bottom", "lower"), ("at", "the", "bottom")),
}
KIND_WEIGHTS = {"name": 1.0, "size": 1.0, "position": 1.2, "relation": 0.6}


def _build(objects, index, kind, p, rng) -> list[tuple[str, str]]:
    t = objects[index]
    colour, texture = p["colour"], p["texture"]
    if kind == "name":
        return [("the", "O")] + _noun_phrase(rng, colour, texture, t.category)
    if kind == "size":
        word = str(rng.choice(BIG_WORDS if p["size"] == "big" else SMALL_WORDS))
        return [("the", "O")] + _noun_phrase(rng, colour, texture, t.category, size_word=word)
    if kind == "position":
        superlative, pair_adjectives, trailing = POSITION_FORMS[p["side"]]
        form = rng.integers(3) if p["pair"] else rng.integers(2)
        if form == 0:
            return [("the", "O")] + _noun_phrase(rng, colour, texture, t.category, position_word=superlative)
        if form == 1:
            phrase = [("the", "O")] + _noun_phrase(rng, colour, texture, t.category)
            return phrase + [(trailing[0], "O"), (trailing[1], "O"), (trailing[2], "AW")]
        word = str(rng.choice(pair_adjectives))
        return [("the", "O")] + _noun_phrase(rng, colour, texture, t.category, position_word=word)
    anchor = objects[p["anchor"]]
    relation_words = [(w, "AW" if w in RELATION_WORDS else "O")
                      for w in str(rng.choice(RELATIONS[p["relation"]])).split()]
    anchor_words = _noun_phrase(rng, p["a_colour"], None, anchor.category, tag_noun="AW")
    return ([("the", "O")] + _noun_phrase(rng, colour, texture, t.category) + relation_words + [("the", "O")]
            + anchor_words)


def _as_command(words: list[tuple[str, str]], rng, spoken: bool) -> Expression:
    """A bare phrase ("the red star") or a command around it.

    Plain (evaluation splits: the phrasing every earlier model was measured on): half the time one of the
    COMMAND_OPENINGS before it ("please erase the red star"). Spoken (training: augmentation): mostly inside one
    of the COMMAND_FRAMES ("make the red star go away"; speech.in_frame), sometimes with speech effects ("make the
    the red star go away"; sahm_core.data.speech). The held-out phrasings of sahm_core.data.heldout are neither.
    """
    if rng.random() < 0.15 and words[0][0] == "the":
        words = words[1:]
    phrase = tuple(words)
    if not spoken:
        if rng.random() < 0.5:
            words = wrap(f"{rng.choice(COMMAND_OPENINGS)} {{}}", words)
        return Expression(tuple(words), phrase)
    words = in_frame(words, rng)
    if rng.random() < SPEECH_RATE:
        words = apply_effects(words, rng)
    return Expression(tuple(words), phrase)


def describe(objects: list[SceneObject], index: int, rng: np.random.Generator,
             spoken: bool = False) -> Expression | None:
    """An expression naming objects[index] and nothing else in the scene, or None when none is clear enough."""
    candidates = _candidates(objects, index)
    if not candidates:
        return None
    weights = np.array([KIND_WEIGHTS[kind] for kind, _ in candidates])
    kind, params = candidates[rng.choice(len(candidates), p=weights / weights.sum())]
    return _as_command(_build(objects, index, kind, params, rng), rng, spoken)


def describe_absent(objects: list[SceneObject], rng: np.random.Generator, spoken: bool = False) -> Expression:
    """Name a category (or colour + category) that no object in the scene has.

    Mostly a near miss: a colour that is in the scene on another category, or a
    category that is in the scene in another colour, so the words must be read.
    """
    present = {(o.category, o.colour) for o in objects}
    categories = sorted({o.category for o in objects})
    colours = sorted({o.colour for o in objects})
    while True:
        roll = rng.random()
        category = str(rng.choice(categories)) if roll < 0.4 else str(rng.choice(list(SHAPE_WORDS)))
        colour = str(rng.choice(colours)) if 0.4 <= roll < 0.7 else str(rng.choice(list(COLOURS)))
        if category not in categories and rng.random() < 0.4:
            colour = None  # the whole category is absent: "the star"
        if colour is None or (category, colour) not in present:
            break
    return _as_command([("the", "O")] + _noun_phrase(rng, colour, None, category), rng, spoken)
