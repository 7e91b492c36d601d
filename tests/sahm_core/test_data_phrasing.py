"""Command frames, spoken effects and held-out phrasing: tags stay on the right words, the node reads every
phrasing as the same removal, the held-out lists never reach training, `sahm make-data rephrase` / `tagger-check`.

References: the noun phrase's own (word, tag) pairs (every described word of an output must be one of them, with
its tag, and none may be lost), the node's parser (`ros_ror.commands.parse_command`), BIO well-formedness, and
the dataset reader.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ros_ror.commands import BREAK, Intent, normalise, parse_command
from sahm_core.corpus import (
    CORPUS_ASIDES,
    FRAME_TAILS,
    FRAMES_TEST,
    FRAMES_TRAIN,
    TRAIN_TEMPLATES,
    composed_openings,
    make_corpus,
    object_first_frames,
)
from sahm_core.data.dev_phrasing import DEV_ASIDES, DEV_EFFECTS, DEV_FRAMES, DEV_TAILS
from sahm_core.data.expressions import TEXTURES, SceneObject, describe, describe_absent
from sahm_core.data.heldout import (
    HELD_OUT_DISCOURSE,
    HELD_OUT_EFFECTS,
    HELD_OUT_FRAMES,
    HELD_OUT_POLITENESS,
    SPLIT_COMPOUNDS,
)
from sahm_core.data.layout import read_refs
from sahm_core.data.rephrase import STYLES, noun_phrase, rephrase, rephrase_dataset
from sahm_core.data.speech import SPEECH_EFFECTS, apply_effects, heard, wrap
from sahm_core.lexicon import COLOURS, COMMAND_FRAMES, SHAPE_WORDS, SPOKEN_DISCOURSE
from sahm_core.syntax import split_words

SEEDS = range(600)
# words a frame says as "other" ("right now"), which a phrase may use as an attribute ("on the right")
FRAME_WORDS = {w for f in COMMAND_FRAMES + FRAMES_TRAIN + HELD_OUT_FRAMES + DEV_FRAMES
               for w in f.replace("{}", " ").split()}


def _expression(seed: int):
    """A generator expression in the training phrasing for a random scene (metadata only: no pixels needed)."""
    rng = np.random.default_rng(seed)
    objects = [SceneObject(str(rng.choice(list(SHAPE_WORDS))), str(rng.choice(list(COLOURS))),
                           str(rng.choice(TEXTURES)), float(rng.uniform(0.16, 0.34)), float(rng.random()),
                           float(rng.random())) for _ in range(int(rng.integers(2, 6)))]
    return describe(objects, 0, rng, spoken=True) or describe_absent(objects, rng, spoken=True)


@pytest.fixture(scope="module")
def expressions():
    return [_expression(seed) for seed in SEEDS]


def _split_compounds(words):
    """"leftmost" as the held-out effect hears it, "left most", each half with the word's tag."""
    return [(half, t) for w, t in words for half in SPLIT_COMPOUNDS.get(w, (w,))]


def _assert_tags_kept(words, phrase, inserted_ok=lambda w, following: False):
    """Every described word of `words` is a word of the phrase with the phrase's tag; none of the phrase's is lost;
    the identity word is the phrase's."""
    described = {(w, t) for w, t in phrase if t != "O"}
    other = {w for w, t in phrase if t == "O"} | FRAME_WORDS
    for k, (w, t) in enumerate(words):
        if t != "O":
            assert (w, t) in described, (w, t, words)
        elif w not in other and ((w, "AW") in described or (w, "IW") in described):
            # a described word said as "other" must be an inserted word the effect defines (a fragment "r")
            assert inserted_ok(w, words[k + 1 :]), (w, words)
    assert described <= {(w, t) for w, t in words}, (phrase, words)
    assert {w for w, t in words if t == "IW"} == {w for w, t in phrase if t == "IW"}


def test_generator_expressions_keep_their_phrase_tags_and_are_the_nodes_form(expressions):
    """The generator's text is what the node gives the model: a removal whose target is the text itself."""
    framed = affected = 0
    for e in expressions:
        words = list(e.words)
        _assert_tags_kept(words, e.phrase)
        assert [w for w, _, _ in split_words(e.text)] == [w for w, _ in words]  # the tagger sees these words
        command = parse_command(e.text)
        assert (command.intent, command.target) == (Intent.REMOVE, e.text)
        framed += len(words) > len(e.phrase) or words[: len(e.phrase)] != list(e.phrase)
        affected += not any(words[i : i + len(e.phrase)] == list(e.phrase) for i in range(len(words)))
    assert 0.4 * len(expressions) < framed and 0.1 * len(expressions) < affected < 0.5 * len(expressions)


@pytest.mark.parametrize("frame", COMMAND_FRAMES + HELD_OUT_FRAMES + DEV_FRAMES)
def test_every_frame_reads_to_the_node_as_the_removal_it_wraps(frame):
    phrase = [("the", "O"), ("big", "AW"), ("red", "AW"), ("star", "IW"), ("left", "AW"), ("of", "O"),
              ("the", "O"), ("blue", "AW"), ("ring", "AW")]
    text = " ".join(w for w, _ in wrap(frame, phrase))
    assert normalise(text) == text.split()  # written in the node's form
    command = parse_command(text)
    assert (command.intent, command.target) == (Intent.REMOVE, text)


@pytest.mark.parametrize("name", list(SPEECH_EFFECTS) + list(HELD_OUT_EFFECTS) + list(DEV_EFFECTS))
def test_each_effect_keeps_tags_and_bio_units_over_many_seeds(name):
    effect = {**SPEECH_EFFECTS, **HELD_OUT_EFFECTS, **DEV_EFFECTS}[name]
    corpus = make_corpus(TRAIN_TEMPLATES, 4, 0, speech_rate=0.0)
    for seed, sentence in enumerate(corpus):
        out = effect(list(sentence), np.random.default_rng(seed))
        classes = [(w, t.split("-", 1)[-1]) for w, t in out]
        phrase = [(w, t.split("-", 1)[-1]) for w, t in sentence]
        if name == "split_compound":
            classes, phrase = _split_compounds(classes), _split_compounds(phrase)
        _assert_tags_kept(classes, phrase, lambda w, following: name == "fragment" and following[0][0].startswith(w))
        for prev, cur in zip([("", "O")] + out, out):  # BIO: an I- continues a unit of its own class
            if cur[1].startswith("I-"):
                assert prev[1] in ("B-" + cur[1][2:], cur[1]), (prev, cur, out)


def test_heard_utterances_normalise_back_to_the_words(expressions):
    for seed, e in enumerate(expressions):
        rng = np.random.default_rng(seed)
        words = apply_effects(list(e.words), rng)
        said = heard(words, rng)
        assert [w for w in normalise(said) if w != BREAK] == [w for w, _ in words], said


@pytest.mark.parametrize("style", STYLES)
def test_rephrasing_keeps_tags_reaches_the_model_as_the_removal_and_is_seeded(expressions, style):
    def inserted_from(w, following):  # a held-out fragment: the first letters of the word after it
        return following[0][0].startswith(w)

    for seed, e in enumerate(expressions):
        said, words = rephrase(list(e.phrase), style, np.random.default_rng([5, seed]))
        if style == "heldout":
            _assert_tags_kept(_split_compounds(words), _split_compounds(e.phrase), inserted_from)
        else:
            _assert_tags_kept(words, e.phrase)
        text = " ".join(w for w, _ in words)
        assert (parse_command(said).intent, parse_command(said).target) == (Intent.REMOVE, text)
        assert rephrase(list(e.phrase), style, np.random.default_rng([5, seed])) == (said, words)
        if style == "heldout":  # a held-out frame's words are there, in order (an effect may sit between them)
            assert any(_in_order(f.replace("{}", " ").split(), text.split()) for f in HELD_OUT_FRAMES), text


def _in_order(needles: list[str], words: list[str]) -> bool:
    rest = iter(words)
    return all(any(w == n for w in rest) for n in needles)


def _normal(text: str) -> str:
    return " ".join(normalise(text))


TRAINING_FRAMES = {_normal(f) for f in COMMAND_FRAMES + FRAMES_TRAIN + FRAMES_TEST + object_first_frames()}
# openings of the frames that end with the phrase, the corpus's composed ones included
TRAINING_OPENINGS = {_normal(f.split("{}")[0]) for f in COMMAND_FRAMES + FRAMES_TRAIN if f.endswith("{}")} | {
    _normal(f) for f in composed_openings()}
TAILS = {""} | {_normal(t) for t in FRAME_TAILS}


def _trained_on(frame: str) -> bool:
    """The frame is a training frame, or one the corpus composes (an opening and a tail), or has a training opening."""
    opening, _, tail = (_normal(part) for part in frame.partition("{}"))
    return _normal(frame) in TRAINING_FRAMES or (opening in TRAINING_OPENINGS and (tail in TAILS or not tail))


@pytest.fixture(scope="module")
def training_text():
    """Every training frame, composed part and corpus sentence, space-padded for whole-phrase search."""
    parts = (COMMAND_FRAMES + FRAMES_TRAIN + object_first_frames() + composed_openings() + FRAME_TAILS
             + CORPUS_ASIDES)
    return [f" {_normal(f)} " for f in parts] + [" " + " ".join(w for w, _ in s) + " "
                                                 for s in make_corpus(TRAIN_TEMPLATES, 40, 0)]


def test_held_out_lists_never_reach_training(training_text):
    # no held-out frame is a training frame, nor is its opening (a frame that ends with the phrase) a training one
    assert not [f for f in HELD_OUT_FRAMES if _trained_on(f)]
    # held-out inserted words are no training effect's words and are in no training frame or corpus sentence
    for phrase in HELD_OUT_DISCOURSE + HELD_OUT_POLITENESS:
        assert phrase not in SPOKEN_DISCOURSE
        assert not any(f" {phrase} " in text for text in training_text), phrase


def test_dev_lists_never_reach_training_and_are_not_the_held_out_ones(training_text):
    assert not [f for f in DEV_FRAMES if _trained_on(f)]
    assert not {_normal(f) for f in DEV_FRAMES} & {_normal(f) for f in HELD_OUT_FRAMES}
    for phrase in DEV_ASIDES + DEV_TAILS:
        assert phrase not in SPOKEN_DISCOURSE + HELD_OUT_DISCOURSE + HELD_OUT_POLITENESS
        assert not any(f" {phrase} " in text for text in training_text), phrase


def test_noun_phrase_of_a_ref_without_phrase_strips_the_command_words():
    tags = [["please", "O"], ["remove", "O"], ["the", "O"], ["red", "AW"], ["star", "IW"], ["on", "O"], ["the", "O"],
            ["left", "AW"], ["thanks", "O"]]
    assert noun_phrase({"id": "a", "tags": tags}) == [tuple(t) for t in tags[2:8]]
    with pytest.raises(ValueError, match="'b'.*no 'phrase'"):
        noun_phrase({"id": "b", "tags": [["remove", "O"]]})


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    from sahm_core.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("phrasing") / "syn"
    make_dataset(root, n=8, seed=11, workers=1, negative_fraction=0.3, val_fraction=0.0, test_fraction=0.5)
    return root


def test_rephrase_cli_writes_a_dataset_the_reader_and_eval_dataset_load(small_dataset, tmp_path, capsys):
    from sahm_core.cli import main
    from sahm_core.data.dataset import RemovalDataset

    source = read_refs(small_dataset, "test")
    outs = {}
    for name, style, seed in (("a", "heldout", 3), ("b", "heldout", 3), ("c", "heldout", 4), ("d", "speech", 3)):
        out = tmp_path / name
        assert main(["make-data", "rephrase", str(small_dataset), "--style", style, "--seed", str(seed),
                     "--out", str(out)]) == 0
        assert str(out / "refs.jsonl") in capsys.readouterr().out
        outs[name] = out
    refs = read_refs(outs["a"])  # every image, target and mask it names exists (through the links)
    assert [r["id"] for r in refs] == [r["id"] for r in source] and {r["split"] for r in refs} == {"test"}
    for ref, src in zip(refs, source):
        assert ref["phrasing"] == "heldout" and ref["image"] == src["image"] and ref["text"] != src["text"]
        assert " ".join(w for w, _ in ref["tags"]) == ref["text"]
        assert parse_command(ref["heard"]).target == ref["text"]
    for folder in ("images", "targets", "masks"):  # shared, not copied
        link = outs["a"] / folder
        assert link.is_symlink() and link.resolve() == (small_dataset / folder).resolve()
    item = RemovalDataset(outs["a"], "test", 64)[0]
    assert item["text"] == refs[0]["text"] and item["image"].shape == (3, 64, 64)
    text = {name: (out / "refs.jsonl").read_text() for name, out in outs.items()}
    assert text["a"] == text["b"] and text["a"] != text["c"] and text["a"] != text["d"]
    assert {json.loads(line)["phrasing"] for line in text["d"].splitlines()} == {"speech"}
    # again into the same folder: the links are reused; a folder holding real image folders is refused
    assert main(["make-data", "rephrase", str(small_dataset), "--style", "speech", "--out", str(outs["a"])]) == 0
    assert main(["make-data", "rephrase", str(small_dataset), "--style", "speech", "--out", str(small_dataset)]) == 2
    assert "source dataset" in capsys.readouterr().err
    (tmp_path / "e" / "images").mkdir(parents=True)
    assert main(["make-data", "rephrase", str(small_dataset), "--style", "speech", "--out", str(tmp_path / "e")]) == 2
    assert "is not a link" in capsys.readouterr().err


def test_tagger_check_counts_the_taggers_agreement_with_the_known_tags(small_dataset, tmp_path, capsys):
    from sahm_core.cli import main
    from sahm_core.data.rephrase import tagger_check
    from sahm_core.syntax import SyntaxTagger, word_class

    rephrase_dataset(small_dataset, tmp_path / "h", "heldout", 0)
    refs = read_refs(tmp_path / "h")
    predicted = SyntaxTagger.load().tag([[w for w, _ in r["tags"]] for r in refs])
    pairs = [(t, p) for r, ps in zip(refs, predicted) for (_, t), p in zip(r["tags"], ps)]
    report = tagger_check(tmp_path / "h")
    assert report["words"] == len(pairs)
    assert report["word_accuracy"] == pytest.approx(sum(t == p for t, p in pairs) / len(pairs))
    assert main(["make-data", "tagger-check", str(tmp_path / "h")]) == 0
    assert f"word accuracy {report['word_accuracy']:.4f}" in capsys.readouterr().out
    # --errors N: the N most frequent mistakes, counted from the same pairs
    wrong = sum(word_class(t) != p for t, p in pairs)
    listed = tagger_check(tmp_path / "h", errors=1000)["mistakes"]
    assert sum(count for _, count in listed) == wrong
    assert all(gold != predicted for (_, gold, predicted, _), _ in listed)
    assert main(["make-data", "tagger-check", str(tmp_path / "h"), "--errors", "3"]) == 0
    out = capsys.readouterr().out
    assert len([line for line in out.splitlines() if "->" in line]) == min(3, len(listed))
    assert f"token window T=20: 0 of {len(refs)} commands over T" in out  # short synthetic commands


def test_window_check_counts_commands_over_T_and_what_their_window_cuts(small_dataset, tmp_path):
    from sahm_core.data.rephrase import window_check
    from sahm_core.text import CommandEncoder

    rephrase_dataset(small_dataset, tmp_path / "h", "heldout", 0)
    refs = read_refs(tmp_path / "h")
    tokenizer = CommandEncoder(text_len=8).tokenizer
    report = window_check(tmp_path / "h", text_len=8)
    assert report["commands"] == len(refs)
    assert report["over"] == sum(len(tokenizer(r["text"])["input_ids"]) > 8 for r in refs) > 0
    assert report["object_lost"] <= report["described_lost"] <= report["over"]
    assert window_check(tmp_path / "h", text_len=64) == {"commands": len(refs), "over": 0, "object_lost": 0,
                                                          "described_lost": 0}
