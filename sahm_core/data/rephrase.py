"""Re-phrase a dataset's expressions, for `sahm eval` rows beyond the generator's own phrasing, and check the tagger.

`sahm make-data rephrase DATA --style heldout|dev|speech --seed S --out DIR` writes DIR/refs.jsonl: one split's
refs with each noun phrase put in a new frame with spoken effects (`heldout`: sahm_core.data.heldout's lists, never
trained on; `dev`: sahm_core.data.dev_phrasing's lists, never trained on either, for tuning; `speech`: the training
frames and effects, every expression affected). The images, targets and masks
are not copied: DIR's image folders are links to DATA's, so `sahm eval --data DIR` reads it as any dataset.

Each rephrased ref keeps its fields and gets:
- "heard": the utterance as a recogniser may publish it (capitals, a comma-set "uh", an end mark);
- "text": what the node gives the model for it (`ros_ror.commands.parse_command`, a removal; checked);
- "tags": [[word, tag], ...] of that text, known from the generator's tags;
- "phrasing": the style.

`sahm make-data tagger-check DATA` reports a tagger's word accuracy on a dataset's tagged expressions (with
`--errors N`, its most frequent mistakes: word, gold and predicted class, where in the sentence), and how many
commands are longer than the model's T tokens and lose a described word from the token window
(sahm_core.text.CommandEncoder.windows).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from sahm_core.config import ModelConfig
from sahm_core.data.dev_phrasing import DEV_EFFECTS, DEV_FRAMES
from sahm_core.data.heldout import HELD_OUT_EFFECTS, HELD_OUT_FRAMES
from sahm_core.data.layout import read_refs, write_refs
from sahm_core.data.speech import ARTICLES, Word, apply_effects, heard, in_frame, wrap

STYLES = ("heldout", "dev", "speech")
# styles of unseen phrasing: (frames, effects); half the expressions get one effect
UNSEEN_PHRASING = {"heldout": (HELD_OUT_FRAMES, HELD_OUT_EFFECTS), "dev": (DEV_FRAMES, DEV_EFFECTS)}
IMAGE_FOLDERS = ("images", "targets", "masks")  # the folders layout.make_folders creates


def noun_phrase(ref: dict) -> list[Word]:
    """The ref's noun phrase: its "phrase" (synthetic datasets), else its tagged words without the command words
    around them (the "O" words before the first described word, less an article, and after the last)."""
    if ref.get("phrase"):
        return [(w, t) for w, t in ref["phrase"]]
    words = [(w, t) for w, t in ref.get("tags", [])]
    described = [i for i, (_, t) in enumerate(words) if t != "O"]
    if not described:
        raise ValueError(f"ref {ref['id']!r} has no 'phrase' and no tagged attribute or identity word to rephrase")
    first, last = described[0], described[-1]
    if first > 0 and words[first - 1][0] in ARTICLES:
        first -= 1
    return words[first : last + 1]


def rephrase_words(phrase: list[Word], style: str, rng: np.random.Generator) -> list[Word]:
    """The noun phrase in the node's form, re-phrased in `style`."""
    if style in UNSEEN_PHRASING:
        frames, effects = UNSEEN_PHRASING[style]
        words = wrap(str(rng.choice(frames)), phrase)
        return apply_effects(words, rng, effects, most=1) if rng.random() < 0.5 else words
    if style == "speech":
        return apply_effects(in_frame(phrase, rng), rng)
    raise ValueError(f"unknown phrasing style {style!r}; choose one of {', '.join(STYLES)}")


def rephrase(phrase: list[Word], style: str, rng: np.random.Generator) -> tuple[str, list[Word]]:
    """(utterance as heard, [(word, tag)] of the text the node gives the model for it).

    The node must read the utterance as exactly that removal; ValueError otherwise (a frame or effect that reads
    as "stop" is a bug in its list).
    """
    from ros_ror.commands import Intent, parse_command  # plain Python, as in sahm_core.runtime

    words = rephrase_words(phrase, style, rng)
    said = heard(words, rng)
    command = parse_command(said)
    text = " ".join(w for w, _ in words)
    if command.intent is not Intent.REMOVE or command.target != text:
        raise ValueError(f"{style} phrasing {said!r} reaches the model as {command.intent.value} "
                         f"{command.target!r}, not as the removal {text!r}")
    return said, words


def _link_images(data: Path, out: Path) -> None:
    for folder in IMAGE_FOLDERS:
        link, source = out / folder, (data / folder).resolve()
        if link.is_symlink() and link.resolve() == source:
            continue
        if link.exists() or link.is_symlink():
            raise ValueError(f"{link} exists and is not a link to {source}; give an empty --out folder")
        os.symlink(source, link, target_is_directory=True)


def rephrase_dataset(data: str | Path, out: str | Path, style: str, seed: int, split: str = "test") -> Path:
    """Write out/refs.jsonl: `split`'s refs of `data`, rephrased (deterministic for a seed); returns its path."""
    data, out = Path(data), Path(out)
    if out.resolve() == data.resolve():
        raise ValueError(f"--out {out} is the source dataset; give a new folder")
    refs = read_refs(data, split)
    if not refs:
        raise ValueError(f"{data}: split {split!r} has no expressions")
    rephrased = []
    for index, ref in enumerate(refs):
        said, words = rephrase(noun_phrase(ref), style, np.random.default_rng([seed, index]))
        rephrased.append({**ref, "heard": said, "text": " ".join(w for w, _ in words),
                          "tags": [[w, t] for w, t in words], "phrasing": style})
    out.mkdir(parents=True, exist_ok=True)
    _link_images(data, out)
    return write_refs(out, rephrased)


def tagger_check(data: str | Path, split: str | None = "test", tagger: str | Path | None = None,
                 errors: int = 0) -> dict:
    """A tagger's figures (sahm_core.syntax.evaluate; word_accuracy is over word classes IW/AW/O) on the tagged
    expressions of `data`'s split; with `errors` > 0, "mistakes": the most frequent ones, [((word, gold class,
    predicted class, where), count)] (sahm_core.syntax.mistakes)."""
    from sahm_core.syntax import SyntaxTagger, evaluate, mistakes

    refs = [r for r in read_refs(data, split) if r.get("tags")]
    if not refs:
        raise ValueError(f"{data}: no tagged expressions in split {split!r}")
    for r in refs:
        if " ".join(w for w, _ in r["tags"]) != r["text"]:
            raise ValueError(f"{data}: ref {r['id']!r}: its tags' words are not its text {r['text']!r}")
    model = SyntaxTagger.load(tagger)
    sentences = [[w for w, _ in r["tags"]] for r in refs]
    gold, pred = [[t for _, t in r["tags"]] for r in refs], model.tag(sentences)
    report = evaluate(gold, pred)
    if errors > 0:
        report["mistakes"] = mistakes(sentences, gold, pred).most_common(errors)
    return report


def window_check(data: str | Path, split: str | None = "test", tagger: str | Path | None = None,
                 text_len: int = ModelConfig.text_len) -> dict:
    """What CommandEncoder's window of `text_len` tokens (chosen from `tagger`'s classes) keeps of the tagged
    expressions of `data`'s split: "commands", "over" (more than text_len tokens), "object_lost" (a token of a gold IW
    word left out), "described_lost" (a token of a gold IW or AW word left out)."""
    from sahm_core.syntax import split_words
    from sahm_core.text import CommandEncoder, token_word_index

    refs = [r for r in read_refs(data, split) if r.get("tags")]
    if not refs:
        raise ValueError(f"{data}: no tagged expressions in split {split!r}")
    encoder = CommandEncoder(tagger=tagger, text_len=text_len)
    report = {"commands": len(refs), "over": 0, "object_lost": 0, "described_lost": 0}
    for first in range(0, len(refs), 64):
        chunk = refs[first : first + 64]
        texts = [r["text"] for r in chunk]
        full = encoder.tokenizer(texts, return_offsets_mapping=True)
        _, kept_words, _ = encoder.windows(texts)
        for b, ref in enumerate(chunk):
            spans = [(s, e) for _, s, e in split_words(ref["text"])]
            all_tokens = Counter(token_word_index(full["offset_mapping"][b], spans))
            kept_tokens = Counter(kept_words[b].tolist())
            cut = {w for w, n in all_tokens.items() if w >= 0 and kept_tokens[w] < n}  # words with a token left out
            gold = _gold_classes(ref["tags"], spans)
            report["over"] += len(full["input_ids"][b]) > text_len
            report["object_lost"] += any(gold[w] == "IW" for w in cut)
            report["described_lost"] += any(gold[w] != "O" for w in cut)
    return report


def _gold_classes(tags: list[list[str]], spans: list[tuple[int, int]]) -> list[str]:
    """The gold class of each word span of the text " ".join(tags' words): the class of the tagged word it lies in."""
    from sahm_core.syntax import word_class

    owner, start = {}, 0
    for word, tag in tags:
        owner.update({c: word_class(tag) for c in range(start, start + len(word))})
        start += len(word) + 1
    return [owner[s] for s, _ in spans]
