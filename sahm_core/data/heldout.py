"""Held-out phrasing: frames and spoken effects kept out of training entirely, to measure how far the model's and
the tagger's reading of commands carries beyond what they were taught.

Nothing here is sampled by the synthetic generator (`sahm_core.data.expressions`) or the tagger's corpus
(`sahm_core.corpus`): tests check that no held-out frame equals a training frame and that no held-out effect word
is a training word, after the node's normalisation. `sahm make-data rephrase --style heldout` applies them to a
dataset's noun phrases. Frames and words follow sahm_core.data.speech's conventions (the node's form, "{}" for the
noun phrase, inserted words tagged "O").
"""

from __future__ import annotations

import numpy as np

from sahm_core.data.speech import Effect, Word, insert_between_units

HELD_OUT_FRAMES = (
    # verbs and idioms the generator never uses
    "would you mind removing {}", "would you mind getting rid of {}", "please do away with {}", "scrub out {}",
    "edit out {}", "cut out {}", "can we lose {}", "robot lose {}", "let's get rid of {}", "yo robot erase {}",
    "get {} off the screen", "take {} out of the shot", "i'd rather not have {} in the shot",
    "hey there robot could you maybe erase {}", "if it's not too much trouble delete {}",
    # the object first, then the request
    "{} get rid of it", "{} needs to disappear", "{} shouldn't be in the picture", "{} out please",
    "i really can't stand {} get rid of it",
    # long preambles
    "my friend asked me to ask you if you could remove {}",
    "honestly the whole picture would be so much nicer without {}",
    "right so before we go any further i need you to wipe away {}",
    "listen robot this is important please erase {} for me",
)

# Words a speaker adds that no training effect inserts; the node keeps them.
HELD_OUT_DISCOURSE = ("basically", "kind of", "sort of", "literally", "i guess")
HELD_OUT_POLITENESS = ("cheers", "if you don't mind", "when you can", "ta", "much appreciated")
# One word heard as two ("left most"); both halves keep the word's tag.
SPLIT_COMPOUNDS = {"leftmost": ("left", "most"), "rightmost": ("right", "most"), "topmost": ("top", "most"),
                   "bottommost": ("bottom", "most")}


def fragment(words: list[Word], rng: np.random.Generator) -> list[Word]:
    """A false start on a word, cut after its first letters ("the r- red star" reaches the model as "the r red star");
    the fragment is no word of the description, so it is "O"."""
    candidates = [i for i, (w, t) in enumerate(words) if t != "O" and len(w) > 3 and not t.startswith("I-")]
    if not candidates:
        return words
    i = int(rng.choice(candidates))
    return words[:i] + [(words[i][0][: int(rng.integers(1, 3))], "O")] + words[i:]


def split_compound(words: list[Word], rng: np.random.Generator) -> list[Word]:
    """A compound heard as two words; a phrase without one gets a held-out discourse word instead."""
    out = []
    for w, t in words:
        if w in SPLIT_COMPOUNDS:
            first, second = SPLIT_COMPOUNDS[w]
            out += [(first, t), (second, "I-" + t[2:] if t.startswith("B-") else t)]
        else:
            out.append((w, t))
    return out if len(out) > len(words) else hedge(words, rng)


def hedge(words: list[Word], rng: np.random.Generator) -> list[Word]:
    """A held-out discourse word: "remove the kind of red star"."""
    return insert_between_units(words, rng, HELD_OUT_DISCOURSE)


def politeness(words: list[Word], rng: np.random.Generator) -> list[Word]:
    """A held-out courtesy at the end: "... if you don't mind"."""
    return words + [(w, "O") for w in str(rng.choice(HELD_OUT_POLITENESS)).split()]


HELD_OUT_EFFECTS: dict[str, Effect] = {"fragment": fragment, "split_compound": split_compound, "hedge": hedge,
                                       "politeness": politeness}
