"""What a speech recogniser makes of a command: frames around the noun phrase and spoken effects, tags kept right.

Everything here works on tagged words, [(word, tag)], with word-level tags ("IW", "AW", "O") or the tagger corpus's
BIO tags ("B-IW", "I-AW", ...). Words are in the form the node hands the model (`ros_ror.commands.normalise`):
lower case, no punctuation, no "uh"/"um". An effect never splits a unit (a B- word and the I- words after it) and
every word an effect inserts is "O". `heard` renders such words as a recogniser may publish them (capitals,
commas, "uh") for the node to normalise back.

Tagging decisions:
- A repeated or restarted word keeps its tag: the copy says the same thing about the same object, and which copy
  the speaker abandoned is not visible in the words ("the red the red star"); one rule the tagger can learn.
- Restarts stop before the referent's identity word: people restart while searching for the name, and a restart
  that repeats the name and what follows would be a second description, not a restart.
- Fillers the node drops ("uh", "um") are not trained on: every path to the model (node, `ros-ror replay`,
  `sahm remove`) normalises first, so they would only spend tokens of the fixed T on words the model never gets.
  Discourse words the node keeps (`lexicon.SPOKEN_DISCOURSE`) are trained on.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from sahm_core.lexicon import COMMAND_FRAMES, SPOKEN_DISCOURSE

Word = tuple[str, str]
ARTICLES = ("the", "a", "an")
NODE_FILLERS = ("uh", "um")  # a subset of ros_ror.commands.FILLERS: only `heard` uses them, the node drops them
SPEECH_RATE = 0.3  # share of the generator's expressions that get spoken effects
FRAME_RATE = 0.6  # share of spoken expressions said inside a command frame (the rest: the bare noun phrase)
MAX_RESTART = 3  # words a restart repeats


def _starts_unit(tag: str) -> bool:
    return not tag.startswith("I-")


def unit_boundaries(words: list[Word]) -> list[int]:
    """Positions 0..len(words) where a word may be inserted without splitting a unit."""
    return [i for i in range(len(words) + 1) if i == len(words) or _starts_unit(words[i][1])]


def _is_identity(tag: str) -> bool:
    return tag.split("-", 1)[-1] == "IW"


def wrap(frame: str, phrase: list[Word]) -> list[Word]:
    """The noun phrase in a frame from `lexicon.COMMAND_FRAMES` (or the held-out list): "make {} go away"."""
    before, sep, after = frame.partition("{}")
    if not sep or "{}" in after:
        raise ValueError(f"frame {frame!r} must hold exactly one {{}} for the noun phrase")
    return [(w, "O") for w in before.split()] + list(phrase) + [(w, "O") for w in after.split()]


def in_frame(phrase: list[Word], rng: np.random.Generator) -> list[Word]:
    """The noun phrase in one of `lexicon.COMMAND_FRAMES` FRAME_RATE of the time, else as it is."""
    return wrap(str(rng.choice(COMMAND_FRAMES)), phrase) if rng.random() < FRAME_RATE else list(phrase)


def restart(words: list[Word], rng: np.random.Generator) -> list[Word]:
    """Say up to MAX_RESTART words again, before the identity word: "remove the red remove the red star"."""
    limit = next((i for i, (_, t) in enumerate(words) if _is_identity(t)), len(words))
    ends = [i for i in unit_boundaries(words) if 0 < i <= limit]
    if not ends:
        return words
    end = int(rng.choice(ends))
    # one word repeated at the very start can read as an end clause to the node: "clear clear away the box"
    starts = [i for i in unit_boundaries(words) if max(0, end - MAX_RESTART) <= i < end and (i > 0 or end > 1)]
    if not starts:
        return words
    start = int(rng.choice(starts))
    return words[:end] + words[start:end] + words[end:]


def repeat(words: list[Word], rng: np.random.Generator) -> list[Word]:
    """One word after the first said twice: "the the red star", "star star" (not the first: see `restart`)."""
    i = int(rng.integers(1, len(words))) if len(words) > 1 else 0
    return words[: i + 1] + [words[i]] + words[i + 1 :]


def drop_articles(words: list[Word], rng: np.random.Generator) -> list[Word]:
    """Articles lost by the recogniser or the speaker: each one dropped with probability 0.7."""
    return [(w, t) for w, t in words if not (w in ARTICLES and t == "O" and rng.random() < 0.7)]


def insert_between_units(words: list[Word], rng: np.random.Generator, phrases: tuple[str, ...]) -> list[Word]:
    """One of `phrases`, tagged "O", between two units (at the end of a one-unit phrase)."""
    i = int(rng.choice(unit_boundaries(words)[1:-1] or [len(words)]))
    return words[:i] + [(w, "O") for w in str(rng.choice(phrases)).split()] + words[i:]


def discourse(words: list[Word], rng: np.random.Generator) -> list[Word]:
    """A discourse word the node keeps: "remove like the red star"."""
    return insert_between_units(words, rng, SPOKEN_DISCOURSE)


def number_word(words: list[Word], rng: np.random.Generator) -> list[Word]:
    """A number word where one fits a single object: "the red star" -> "that one red star"."""
    for i, (w, t) in enumerate(words):
        if w == "the" and t == "O" and i + 1 < len(words) and words[i + 1][1] != "O":
            return words[:i] + [("that", "O"), ("one", "O")] + words[i + 1 :]
    return words


Effect = Callable[[list[Word], np.random.Generator], list[Word]]
SPEECH_EFFECTS: dict[str, Effect] = {"restart": restart, "repeat": repeat, "drop_articles": drop_articles,
                                     "discourse": discourse, "number_word": number_word}


def apply_effects(words: list[Word], rng: np.random.Generator, effects: dict[str, Effect] = SPEECH_EFFECTS,
                  most: int = 2) -> list[Word]:
    """One to `most` distinct effects from `effects`, in a random order."""
    names = list(effects)
    count = int(rng.integers(1, min(most, len(names)) + 1))
    for k in rng.permutation(len(names))[:count]:
        words = effects[names[int(k)]](list(words), rng)
    return words


def heard(words: list[Word], rng: np.random.Generator) -> str:
    """The words as a recogniser may publish them: a capital first letter, a comma-set "uh", an end mark.

    `ros_ror.commands.normalise` turns this back into the words (tests check it over many seeds).
    """
    out = [w for w, _ in words]
    # hesitation comes before a described word ("remove the, uh, red star"); inside a frame a comma could split
    # what the node reads as one request ("clear, uh, away the box" is "clear", an end, then "away the box")
    described = [i for i in unit_boundaries(words)[1:-1] if words[i][1] != "O"]
    if described and rng.random() < 0.5:
        out.insert(int(rng.choice(described)), f", {rng.choice(NODE_FILLERS)},")
    if rng.random() < 0.5:
        out[0] = out[0][:1].upper() + out[0][1:]
    text = " ".join(out).replace(" ,", ",")
    return text + str(rng.choice(["", ".", "?", "!"]))
