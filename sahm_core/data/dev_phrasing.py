"""Development phrasing: frames and spoken effects for tuning the syntax tagger's (and the model's) reading of
commands, kept apart from both training and the held-out check.

Held-out phrasing (`sahm_core.data.heldout`) must stay a one-time measurement: nothing may be tuned on it. Tuning
still needs phrasing the learner never saw, so this is a second such list, written independently, used only to
compare corpus and model changes (`sahm make-data rephrase --style dev`, then `sahm make-data tagger-check
--errors N`). Nothing here is sampled by the synthetic generator or the tagger's corpus; tests check that no frame
equals a training or held-out frame and that no inserted phrase is said in training. Conventions are those of
`sahm_core.data.speech` (the node's form, "{}" for the noun phrase, inserted words tagged "O").
"""

from __future__ import annotations

import numpy as np

from sahm_core.data.speech import ARTICLES, Effect, Word, insert_between_units

DEV_FRAMES = (
    # verbs the training frames do not use
    "throw out {}", "toss {}", "ditch {}", "discard {}", "zap {}", "dispose of {}", "eliminate {}", "get {} gone",
    "paint over {}", "remove {} entirely", "erase {} completely", "delete {} altogether",
    # indirect requests
    "do you think you could remove {}", "is it possible to erase {}", "any chance you could delete {}",
    "would it be possible to get rid of {}", "i'd appreciate it if you removed {}", "you should probably erase {}",
    "you can delete {}", "show me the picture without {}", "i'd prefer the photo without {}",
    "i wish {} wasn't there", "i would love it if {} disappeared",
    # addressed to the robot
    "excuse me robot remove {}", "robot could you kindly delete {}", "hello robot erase {}",
    "hey buddy get rid of {}", "computer delete {}",
    # the object first
    "{} can go", "{} must go", "{} is not needed remove it", "{} bothers me erase it", "{} is distracting delete it",
    "{} doesn't belong here", "{} should be removed", "{} ought to be erased",
    # long preambles
    "so i was looking at this photo and i think you should remove {}",
    "after thinking about it for a while i decided that you should delete {}",
    "if you have a second could you do me a favour and erase {}",
    "okay robot your next task is to get rid of {}",
    "the thing i would like gone from this picture is {}",
    "there is one thing i'd like you to change please remove {}",
    # after the object
    "remove {} if you can", "erase {} when you have a moment", "delete {} as soon as possible",
    "get rid of {} thanks so much", "remove {} thanks a million", "erase {} that would be great",
    "delete {} right away",
    "remove {} at once", "get rid of {} for good",
)
DEV_ASIDES = ("i suppose", "let's see", "you see", "more or less", "i reckon", "apparently", "as it were")
DEV_TAILS = ("if possible", "if you would", "when you're ready", "whenever you like", "if that's okay")
DEICTIC = ("that", "this")


def aside(words: list[Word], rng: np.random.Generator) -> list[Word]:
    """A hedge or thinking-aloud phrase between two units: "remove the i suppose red star"."""
    return insert_between_units(words, rng, DEV_ASIDES)


def tail(words: list[Word], rng: np.random.Generator) -> list[Word]:
    """Something said after the request is over: "remove the red star if possible"."""
    return words + [(w, "O") for w in str(rng.choice(DEV_TAILS)).split()]


def deictic(words: list[Word], rng: np.random.Generator) -> list[Word]:
    """Pointing instead of an article, as people do at a shared screen: "remove that red star"."""
    return [(str(rng.choice(DEICTIC)), "O") if w in ARTICLES and t == "O" else (w, t) for w, t in words]


DEV_EFFECTS: dict[str, Effect] = {"aside": aside, "tail": tail, "deictic": deictic}
