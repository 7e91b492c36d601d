"""Template-expanded tagged corpus for the syntax tagger (paper 5.1: "word replacement templates to expand").

Tagging convention (paper 4.1, Fig. 3), at word level:
- IW (identity word): the category of the object to remove: "cup", "zebra", "traffic light", "guy".
- AW (attribute word): anything that tells that object apart: colour, size, texture, state, place
  ("left", "top", "corner"), spatial relations ("next", "above", "behind"), actions and poses
  ("holding", "facing away"), clothing, and the other objects named in a relation
  ("left of the blue ring": left, blue, ring are AW; the referent's category stays the only IW).
- O: command words and function words ("please remove", "the", "of", "to", "with", "one").

Internally tags are BIO over {IW, AW}: every slot filler is one unit ("traffic light", "facing away"),
its first word B-, the rest I-.

Templates are written in a tiny notation: space-separated items; `{slot}` expands to a random filler
(`{slot?}` only half the time); `word/AW` is a literal with a tag; a bare word is O; `_` joins the words
of one unit ("traffic_light/IW"). TRAIN_TEMPLATES and TEST_TEMPLATES share no template, so the held-out
split measures sentence structures the tagger never saw. A second held-out split also draws every referent
from HELD_OUT_CATEGORIES, words never used in training.

`{open}` is a frame around the rest of the template: half the time from the generator's list
(lexicon.COMMAND_FRAMES: "make {} go away"), so the tagger learns the commands the model is trained on, half the
time composed from parts (addresses, requests, many verbs, tails; `compose_frame`). A share of the sentences get
spoken effects: the generator's (sahm_core.data.speech) and more discourse words (CORPUS_ASIDES). The held-out
and dev phrasing lists (sahm_core.data.heldout, sahm_core.data.dev_phrasing) are never used here.
"""

from __future__ import annotations

import random
import re

import numpy as np

from .data.speech import SPEECH_EFFECTS, SPEECH_RATE, Word, apply_effects, insert_between_units, wrap
from .lexicon import COCO_CATEGORIES, COLOURS, COMMAND_FRAMES, POSITION_WORDS, SHAPE_WORDS, SIZE_WORDS, TEXTURE_WORDS

TAGS = ("O", "B-IW", "I-IW", "B-AW", "I-AW")

# Referent categories beyond the lexicon: RefCOCO+-style people words and household objects.
PEOPLE = ("man", "woman", "guy", "girl", "boy", "kid", "lady", "child", "baby", "player", "person", "dude", "skier",
          "batter")
HOUSEHOLD = ("mug", "glass", "lamp", "plant", "pillow", "ball", "toy", "can", "jar", "bag", "box", "basket", "shoe",
             "hat", "towel", "plate", "pen", "phone", "sign", "pole", "tree", "flower", "chair", "table", "window",
             "door")
# Never used in training: the unseen-word held-out split asks for these as referents ("robot" is not one: the
# command frames address the robot).
HELD_OUT_CATEGORIES = ("kettle", "stapler", "bucket", "trophy", "lantern", "puppy", "goat", "scooter", "candle",
                       "teapot", "pumpkin", "guitar", "ladder", "parrot", "wallet", "mailbox", "bride", "cowboy",
                       "tractor")

COLOUR_WORDS = tuple(COLOURS) + ("grey", "silver", "gold", "beige", "dark", "light", "tan")
STATE_WORDS = ("wooden", "empty", "open", "closed", "tall", "short", "old", "young", "shiny", "plastic", "metal",
               "broken", "dirty", "furry", "spotted", "round", "full", "sliced", "half", "blurry", "whole", "bald",
               "smiling")
ORDINAL_WORDS = ("first", "second", "third", "last", "closest", "nearest", "farthest", "biggest", "smallest", "other",
                 "1st", "2nd", "3rd")  # recognisers write ordinals as digits too
CLOTHING = ("shirt", "jacket", "hat", "cap", "dress", "coat", "hoodie", "sweater", "shorts", "jeans", "helmet",
            "uniform", "scarf", "glasses")
# Actions that take an object; the object is an attribute of the referent.
TRANSITIVE = ("holding", "carrying", "wearing", "riding", "eating", "touching", "pushing", "pulling")
POSES = ("facing_away", "facing_left", "facing_right", "looking_down", "looking_up", "bending_over", "lying_down",
         "standing", "sitting", "walking", "running", "jumping", "sleeping", "turned_away", "leaning")
PLACES = (
    "on the left/AW", "on the right/AW", "at the top/AW", "at the bottom/AW", "in the middle/AW", "in the center/AW",
    "in the back/AW", "in front/AW", "in the background/AW", "in the foreground/AW", "in the corner/AW",
    "at the top/AW left/AW", "at the bottom/AW right/AW", "in the top/AW right/AW corner/AW", "on the far/AW left/AW",
    "closest/AW to the camera/AW", "furthest/AW from us", "on the left/AW side/AW", "to the right/AW",
    "in the upper/AW half/AW", "at the lower/AW left/AW",
)
RELATIONS = (
    "left/AW of", "right/AW of", "above/AW", "below/AW", "next/AW to", "near/AW", "under/AW", "on top/AW of",
    "beside/AW", "behind/AW", "in front/AW of", "close/AW to", "between/AW", "on", "by", "against/AW", "underneath/AW",
)
# Frames around the rest of the sentence ("{}"); the training ones are the generator's (lexicon.COMMAND_FRAMES).
FRAMES_TRAIN = COMMAND_FRAMES + ("please delete {}", "i want you to erase {}", "go ahead and remove {}")
# Composed frames, drawn for half the training {open} slots: [address] [request] verb {} [tail], or the object
# first and a command about "it" after it. A tagger that saw only ~100 fixed frames tags an opening word it never
# saw as the referent (a bare noun phrase starts with one: "guy in red shirt"), and then the referent as an
# attribute; many verbs, requests and tails in many combinations teach that the words around the described ones are
# command words, whatever they are.
FRAME_ADDRESSES = ("hey robot", "robot", "ok robot", "okay", "ok", "hey", "hi robot", "right", "well", "listen",
                   "so", "oh and", "hey you", "hello", "robot listen", "alright then", "assistant", "hey assistant",
                   "machine", "mate", "pal", "system", "okay assistant", "robot arm", "yo", "oh")
FRAME_REQUESTS = ("please", "can you", "could you", "would you", "will you", "can you please", "could you please",
                  "i want you to", "i need you to", "i'd like you to", "you need to", "you have to", "try to",
                  "go and", "now", "just", "quickly", "i'm asking you to", "help me", "i'd love it if you could",
                  "can i ask you to", "you could", "it would be great if you could", "please just", "first")
FRAME_VERBS = ("remove", "erase", "delete", "get rid of", "take away", "take out", "wipe out", "clear away", "hide",
               "scrap", "drop", "purge", "strip out", "clean up", "chuck out", "trash", "junk", "yank out", "banish",
               "axe", "lift out", "pull out", "knock out", "rub out", "blot out", "mask out", "cover up",
               "block out", "filter out", "take down", "move", "shift", "hide away", "clear out",
               "empty out", "kill", "wipe", "clean out", "vanish", "conceal", "omit", "exclude", "obliterate",
               "expunge", "sweep away", "black out", "fade out")
FRAME_TAILS = ("please", "thanks", "thank you", "now", "right now", "for me", "quickly", "immediately", "asap",
               "real quick", "from the picture", "from the image", "from the photo", "from view", "out of the picture",
               "out of the image", "out of view", "thanks robot", "thank you very much",
               "right now please", "straight away", "this instant", "for me thank you", "once and for all", "too",
               "as well", "first", "next", "for a moment", "for now", "ok", "okay thanks", "would you", "will you",
               "please robot", "in this picture", "in the image", "now please", "and thanks", "thanks mate",
               "appreciate it", "thanks heaps", "nice one", "good job", "much obliged", "as fast as you can")
OBJECT_FIRST_COMMENTS = ("can be removed", "could be erased", "will have to go", "may as well go", "can vanish",
                         "is in the way", "looks bad", "is annoying", "has to go", "is not supposed to be there",
                         "is ugly", "is too much", "ruins it", "is a mess", "is blocking the view",
                         "looks out of place", "is wrong", "i don't like it", "is bugging me")
OBJECT_FIRST_COMMANDS = ("remove it", "get rid of it", "please delete it", "erase that", "take it out", "hide it",
                         "scrap it", "drop it please", "make it go away", "lose it", "remove that one",
                         "take that away", "could you remove it", "erase it now")
FRAMES_TEST = ("kindly remove {}", "would you remove {}", "can you get rid of {}", "i need you to delete {}",
               "just erase {}", "remove {} please")
SUFFIXES = ("please", "for me", "from the image", "from the picture", "from the scene", "from the view", "now",
            "thanks", "from this photo", "right now")


def _units(words, tag: str) -> tuple[str, ...]:
    """Fillers in template notation: each (possibly multi-word) word becomes one tagged unit."""
    return tuple(w.replace(" ", "_") + "/" + tag for w in words)


SHAPES = tuple(w for words in SHAPE_WORDS.values() for w in words)
TRAIN_CATEGORIES = tuple(dict.fromkeys(SHAPES + COCO_CATEGORIES + PEOPLE + HOUSEHOLD))

FILLERS: dict[str, tuple[str, ...]] = {
    "open": FRAMES_TRAIN,
    "suffix": tuple(SUFFIXES),
    "det": ("the", "the", "the", "that", "this", "a"),
    "size": _units(SIZE_WORDS, "AW"),
    "colour": _units(COLOUR_WORDS, "AW"),
    "texture": _units(TEXTURE_WORDS, "AW"),
    "state": _units(STATE_WORDS, "AW"),
    "ordinal": _units(ORDINAL_WORDS, "AW"),
    "pos": _units(POSITION_WORDS, "AW"),
    "cat": _units(TRAIN_CATEGORIES, "IW"),
    "shape": _units(SHAPES, "IW"),
    "person": _units(PEOPLE, "IW"),
    "lcat": _units(TRAIN_CATEGORIES, "AW"),
    "lshape": _units(SHAPES, "AW"),
    "cloth": _units(CLOTHING, "AW"),
    "verb": _units(TRANSITIVE, "AW"),
    "pose": _units(POSES, "AW"),
    "place": tuple(PLACES),
    "rel": tuple(RELATIONS),
}

# Sentence structures seen in training.
TRAIN_TEMPLATES = (
    "{open} the {size?} {colour?} {shape} {rel} the {colour?} {lshape}",
    "{open} the {pos} {shape}",
    "{open} the {texture} {colour} {shape} {place}",
    "{open} the {colour} {cat}",
    "{open} the {colour} {cat} {place}",
    "{open} {det} {size} {cat} {place} {suffix?}",
    "{open} the {cat} {rel} the {lcat}",
    "{open} the {colour?} {cat} {rel} the {colour} {lcat} {suffix?}",
    "erase the {cat} next/AW to the {lcat}",
    "{open} the {person} in {colour} {cloth}",
    "{open} the {person} in the {colour} {cloth} {place}",
    "{person} in {colour} {cloth}",
    "{colour?} {cat} {place}",
    "{person} {verb} {lcat} {place?}",
    "{open} the {person} {verb} the {colour?} {lcat}",
    "the {cat} {pose}",
    "{open} the {cat} that is {pose}",
    "{open} the {ordinal} {cat} from the left/AW",
    "{open} the {state} {cat} {suffix?}",
    "{open} the {colour} one {place}",
    "{open} the {size} one",
    "{size} {colour} {cat} with {colour} {lcat}",
    "{open} the {cat} with the {colour} {lcat}",
    "{cat} {rel} {lcat}",
    "{open} that {cat} {suffix?}",
    "{open} {det} {cat}",
    "please , {open} the {colour} {cat} {place}",
    "{open} the {state} {colour} {cat} which is {rel} the {lcat}",
    "get rid of the {texture} {colour} {shape} {place}",
    "please erase the {pos} {shape}",
    "{open} the {colour} {shape} at the {pos}",
    "the {ordinal} {person} {pose} {place?}",
    "{open} the {cat} that is {colour}",
    "can you remove the {size} {cat} {rel} the {size?} {colour} {lcat} ?",
    "make the {colour} {cat} disappear",
    "take the {cat} {place} out of the picture",
)

# Held out: structures (and two opening lists) never seen in training.
TEST_TEMPLATES = (
    "{open_test} the {colour} {cat} {place}",
    "{open_test} the {size} {colour} {shape} that is {rel} the {colour} {lshape}",
    "{det} {person} wearing/AW a {colour} {cloth} and {verb} a {lcat}",
    "i want the {cat} {place} gone",
    "{open} the {pos} {colour} {cat} {suffix}",
    "{cat} with {colour} {cloth} {pose}",
    "{open_test} whichever {cat} is {place}",
    "{open} the {state} {cat} {verb} the {lcat} {place}",
    "the {colour} {cat} , the one {rel} the {lcat}",
    "could you erase the {ordinal} {colour} {cat} {rel} the {lcat} please",
    "{open_test} the {cat} sitting/AW {rel} the {colour} {lcat}",
    "{open} every {colour} {shape}",
    "{size} {state} {cat} {place} {rel} the {lcat}",
)
FILLERS["open_test"] = FRAMES_TEST
FRAME_SLOTS = ("open", "open_test")  # their fillers are frames: they wrap the rest of the template
COMPOSED_RATE = 0.5  # share of training {open} slots that get a composed frame, not one of FRAMES_TRAIN
OBJECT_FIRST_RATE = 0.15  # share of composed frames that say the object first


def composed_openings() -> tuple[str, ...]:
    """Every opening a composed frame may have (before "{}"): [address] [request] verb."""
    return tuple(" ".join(p for p in (address, request, verb) if p)
                 for address in ("",) + FRAME_ADDRESSES for request in ("",) + FRAME_REQUESTS for verb in FRAME_VERBS)


def object_first_frames() -> tuple[str, ...]:
    """Every object-first frame: "{} is in the way remove it"."""
    return tuple(f"{{}} {comment} {command}" for comment in OBJECT_FIRST_COMMENTS for command in OBJECT_FIRST_COMMANDS)


def compose_frame(rng: random.Random) -> str:
    """A composed frame: object first OBJECT_FIRST_RATE of the time, else [address] [request] verb {} [tail]."""
    if rng.random() < OBJECT_FIRST_RATE:
        return f"{{}} {rng.choice(OBJECT_FIRST_COMMENTS)} {rng.choice(OBJECT_FIRST_COMMANDS)}"
    parts = [rng.choice(FRAME_ADDRESSES) if rng.random() < 0.3 else "",
             rng.choice(FRAME_REQUESTS) if rng.random() < 0.5 else "", rng.choice(FRAME_VERBS), "{}",
             rng.choice(FRAME_TAILS) if rng.random() < 0.4 else ""]
    return " ".join(p for p in parts if p)


def _frame(slot: str, rng: random.Random) -> str:
    if slot == "open" and rng.random() < COMPOSED_RATE:
        return compose_frame(rng)
    return rng.choice(FILLERS[slot])

# Discourse words beyond the generator's (lexicon.SPOKEN_DISCOURSE), for the tagger only: every one is "other".
CORPUS_ASIDES = ("honestly", "definitely", "perhaps", "i believe", "obviously", "certainly",
                 "you know what", "ah", "oh", "well then", "let me think", "what else", "or so", "anyway")


def aside(words: list[Word], rng: np.random.Generator) -> list[Word]:
    """A discourse word of CORPUS_ASIDES between two units: "remove the honestly red star"."""
    return insert_between_units(words, rng, CORPUS_ASIDES)


CORPUS_EFFECTS = {**SPEECH_EFFECTS, "aside": aside}

REFERENT_SLOTS = ("cat", "shape", "person")  # slots that name the object to remove
_ITEM = re.compile(r"^\{(\w+)(\?)?\}$")


def _expand(item: str, rng: random.Random, categories: tuple[str, ...] | None) -> list[tuple[str, str]]:
    """One template item -> [(word, BIO tag)]."""
    m = _ITEM.match(item)
    if m:
        slot, optional = m.group(1), m.group(2)
        if optional and rng.random() < 0.5:
            return []
        if categories is not None and slot in REFERENT_SLOTS:
            filler = rng.choice(_units(categories, "IW"))
        else:
            filler = rng.choice(FILLERS[slot])
        return [wt for sub in filler.split() for wt in _expand(sub, rng, categories)]
    unit, _, tag = item.partition("/")
    words = unit.split("_")
    if not tag:
        return [(w, "O") for w in words]
    return [(w, ("B-" if i == 0 else "I-") + tag) for i, w in enumerate(words)]


def expand_template(template: str, rng: random.Random,
                    categories: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """One random sentence from a template: [(word, BIO tag)]; `categories` replaces every referent slot's words.

    A frame slot ({open}) wraps what follows it: "{open} the {cat}" -> "can you get the cup out of here".
    """
    items = template.split()
    for i, item in enumerate(items):
        m = _ITEM.match(item)
        if m and m.group(1) in FRAME_SLOTS:
            rest = expand_template(" ".join(items[i + 1 :]), rng, categories)
            before = [wt for it in items[:i] for wt in _expand(it, rng, categories)]
            return before + wrap(_frame(m.group(1), rng), rest)
    return [wt for item in items for wt in _expand(item, rng, categories)]


def make_corpus(templates, per_template: int, seed: int, categories: tuple[str, ...] | None = None,
                speech_rate: float = SPEECH_RATE) -> list[list[tuple[str, str]]]:
    """Up to `per_template` distinct sentences from each template, deterministic for a seed; `speech_rate` of them
    get spoken effects (the generator's, sahm_core.data.speech, and CORPUS_ASIDES)."""
    rng = random.Random(seed)
    speech_rng = np.random.default_rng(seed)
    seen: set[tuple[str, ...]] = set()
    corpus = []
    for template in templates:
        kept = 0
        for _ in range(per_template * 3):  # small templates run out of distinct sentences: stop trying then
            sentence = expand_template(template, rng, categories)
            if speech_rng.random() < speech_rate:
                sentence = apply_effects(sentence, speech_rng, CORPUS_EFFECTS)
            key = tuple(w for w, _ in sentence)
            if key not in seen:
                seen.add(key)
                corpus.append(sentence)
                kept += 1
            if kept == per_template:
                break
    return corpus
