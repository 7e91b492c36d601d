"""Which COCO categories a sentence names: the 80 category names, their plurals, and a short list of synonyms.

The ComCOCO builder asks this twice: a negative must not show anything the sentence names, and a sentence
that names a second object ("man holding umbrella") is only true of the composite if that object came along
with the pasted pixels. The synonym list is deliberately small and explicit: the words RefCOCO+ uses most for
a category when they are not its COCO name. A word missing here makes the check miss that mention, never
invent one.
"""

from __future__ import annotations

import re

from sahm_core.lexicon import COCO_CATEGORIES

PERSON_WORDS = ("man", "men", "woman", "women", "guy", "girl", "boy", "lady", "ladies", "kid", "child", "children",
                "person", "people", "player", "baby", "skier", "surfer", "skateboarder", "snowboarder", "batter",
                "catcher", "umpire", "dude")
SYNONYMS: dict[str, str] = {
    **{word: "person" for word in PERSON_WORDS},
    "bike": "bicycle", "motorbike": "motorcycle", "plane": "airplane", "jet": "airplane", "taxi": "car",
    "hydrant": "fire hydrant", "stoplight": "traffic light", "puppy": "dog", "kitten": "cat", "purse": "handbag",
    "luggage": "suitcase", "ball": "sports ball", "bat": "baseball bat", "glove": "baseball glove", "mitt":
    "baseball glove", "racket": "tennis racket", "racquet": "tennis racket", "ski": "skis", "mug": "cup",
    "doughnut": "donut", "hotdog": "hot dog", "sofa": "couch", "table": "dining table", "plant": "potted plant",
    "television": "tv", "phone": "cell phone", "cellphone": "cell phone", "teddy": "teddy bear",
    "fridge": "refrigerator", "dryer": "hair drier",
}
# COCO names that RefCOCO+ mostly uses as another word: "orange" is nearly always the colour ("orange shirt").
NOT_A_MENTION = frozenset({"orange"})
_WORD = re.compile(r"[a-z]+")
# Longest names first, so "hot dog" is one mention of "hot dog" and not also one of "dog".
_PHRASES = sorted(
    {**{name: name for name in COCO_CATEGORIES if name not in NOT_A_MENTION}, **SYNONYMS}.items(),
    key=lambda item: -len(item[0].split()),
)


def _plural_forms(word: str) -> tuple[str, ...]:
    return (word, word + "s", word + "es")


def named_categories(sentence: str) -> set[str]:
    """COCO categories the sentence names, e.g. "man holding an umbrella" -> {"person", "umbrella"}."""
    tokens = _WORD.findall(sentence.lower())
    used = [False] * len(tokens)
    found = set()
    for phrase, category in _PHRASES:
        *head, last = phrase.split()
        n = len(head) + 1
        for i in range(len(tokens) - n + 1):
            window = tokens[i : i + n]
            if any(used[i : i + n]) or window[:-1] != head or window[-1] not in _plural_forms(last):
                continue
            found.add(category)
            used[i : i + n] = [True] * n
    return found


def category_words(category: str) -> set[str]:
    """Words that name the category (its name's words, their plurals, its synonyms): identity words for tagging."""
    names = {w for word in category.split() for w in _plural_forms(word)}
    return names | {word for word, target in SYNONYMS.items() if target == category}
