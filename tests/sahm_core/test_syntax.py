"""Syntax tagger: CRF against brute force, the corpus convention, metrics by hand, the shipped tagger."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random

import pytest
import torch
from torchcrf import CRF

from sahm_core.corpus import (
    FRAME_TAILS,
    HELD_OUT_CATEGORIES,
    TEST_TEMPLATES,
    TRAIN_TEMPLATES,
    compose_frame,
    composed_openings,
    expand_template,
    make_corpus,
    object_first_frames,
)
from sahm_core.syntax import BiLSTMCRF, SyntaxTagger, TaggerConfig, evaluate, mistakes, split_words


def _path_score(crf: CRF, emissions: torch.Tensor, tags: tuple[int, ...]) -> torch.Tensor:
    """Score of one tag path from the CRF's own parameters: start + emissions + transitions + end."""
    score = crf.start_transitions[tags[0]] + emissions[0, tags[0]]
    for prev, cur, t in zip(tags, tags[1:], range(1, len(tags))):
        score = score + crf.transitions[prev, cur] + emissions[t, cur]
    return score + crf.end_transitions[tags[-1]]


@pytest.fixture
def crf():
    torch.manual_seed(0)
    crf = CRF(5, batch_first=True)
    for p in crf.parameters():  # pytorch-crf starts near zero; spread the scores so paths differ clearly
        torch.nn.init.normal_(p, std=1.0)
    return crf


@pytest.mark.parametrize("length", [1, 2, 3, 4])
def test_viterbi_matches_brute_force(crf, length):
    emissions = torch.randn(3, length, 5)
    decoded = crf.decode(emissions, mask=torch.ones(3, length, dtype=torch.bool))
    for b in range(3):
        best = max(itertools.product(range(5), repeat=length), key=lambda p: _path_score(crf, emissions[b], p).item())
        assert tuple(decoded[b]) == best


def test_viterbi_with_padding_matches_brute_force_on_the_unpadded_part(crf):
    emissions = torch.randn(2, 4, 5)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    decoded = crf.decode(emissions, mask=mask)
    best = max(itertools.product(range(5), repeat=2), key=lambda p: _path_score(crf, emissions[1], p).item())
    assert len(decoded[1]) == 2 and tuple(decoded[1]) == best


def test_log_likelihood_matches_brute_force_log_sum_exp(crf):
    emissions = torch.randn(1, 3, 5)
    gold = (2, 0, 4)
    all_scores = torch.stack([_path_score(crf, emissions[0], p) for p in itertools.product(range(5), repeat=3)])
    expected = _path_score(crf, emissions[0], gold) - torch.logsumexp(all_scores, 0)
    got = crf(emissions, torch.tensor([gold]), mask=torch.ones(1, 3, dtype=torch.bool), reduction="sum")
    assert torch.allclose(got, expected, atol=1e-5)


def test_tagger_loss_is_the_crf_nll_of_its_emissions():
    torch.manual_seed(1)
    model = BiLSTMCRF(TaggerConfig(static_dim=8, static_vocab=10, proj_dim=4, char_dim=3, char_channels=4,
                                   hidden=5)).eval()
    static, chars = torch.randn(1, 3, 8), torch.randint(0, 20, (1, 3, 16))
    tags, mask = torch.tensor([[1, 0, 3]]), torch.ones(1, 3, dtype=torch.bool)
    em = model.emissions(static, chars)[0]
    all_scores = torch.stack([_path_score(model.crf, em, p) for p in itertools.product(range(5), repeat=3)])
    expected = torch.logsumexp(all_scores, 0) - _path_score(model.crf, em, (1, 0, 3))
    assert torch.allclose(model.loss(static, chars, tags, mask), expected, atol=1e-5)


def test_split_words_keeps_character_spans():
    text = "Please, remove the man's cup!"
    words = split_words(text)
    assert [w for w, _, _ in words] == ["Please", ",", "remove", "the", "man's", "cup", "!"]
    assert all(text[s:e] == w for w, s, e in words)


def test_template_notation_gives_bio_units():
    rng = random.Random(0)
    sentence = expand_template("erase the traffic_light/IW next/AW to the {lcat}", rng)
    assert sentence[:6] == [("erase", "O"), ("the", "O"), ("traffic", "B-IW"), ("light", "I-IW"), ("next", "B-AW"),
                            ("to", "O")]
    assert sentence[6] == ("the", "O") and sentence[7][1] == "B-AW"  # the landmark object is an attribute


def test_held_out_split_shares_no_template_and_no_unseen_category_with_training():
    assert not set(TRAIN_TEMPLATES) & set(TEST_TEMPLATES)
    train_words = {w for s in make_corpus(TRAIN_TEMPLATES, 50, 0) for w, _ in s}
    assert not train_words & set(HELD_OUT_CATEGORIES)
    unseen = make_corpus(TEST_TEMPLATES, 5, 1, HELD_OUT_CATEGORIES)
    referents = {w for s in unseen for w, t in s if t == "B-IW"}
    assert referents <= set(HELD_OUT_CATEGORIES)


def test_every_sentence_has_exactly_one_identity_unit_or_none():
    """One referent per sentence; a spoken repeat may say its word twice ("the cup cup"), with the same tag."""
    for sentence in make_corpus(TRAIN_TEMPLATES + TEST_TEMPLATES, 20, 3):
        assert len({w for w, t in sentence if t == "B-IW"}) <= 1, sentence


def test_frames_wrap_the_rest_of_the_template():
    rng = random.Random(0)
    for _ in range(200):
        sentence = expand_template("{open} the red/AW cup/IW", rng)
        words = [w for w, _ in sentence]
        i = words.index("cup")
        assert words[i - 2 : i + 1] == ["the", "red", "cup"] and sentence[i] == ("cup", "B-IW")
        assert all(t == "O" for k, (_, t) in enumerate(sentence) if k not in (i - 1, i)), sentence
    suffixed = {" ".join(w for w, _ in expand_template("{open} the cup/IW", rng)) for _ in range(300)}
    assert any(not s.endswith("cup") for s in suffixed) and any(s.endswith("cup") for s in suffixed)


def test_composed_frames_wrap_the_phrase_once_and_are_the_listed_parts():
    rng = random.Random(0)
    openings, object_first = set(composed_openings()), set(object_first_frames())
    for _ in range(500):
        frame = compose_frame(rng)
        before, sep, after = frame.partition("{}")
        assert sep and "{}" not in after, frame
        assert frame in object_first or (before.strip() in openings and after.strip() in ("",) + FRAME_TAILS), frame
        sentence = expand_template("{open} the red/AW cup/IW", rng)
        assert [t for _, t in sentence if t != "O"] == ["B-AW", "B-IW"]  # every frame word is "other"


def test_mistakes_worked_by_hand():
    words = [["remove", "the", "red", "cup", "now"], ["zap", "star"]]
    gold = [["O", "O", "B-AW", "B-IW", "O"], ["O", "B-IW"]]
    pred = [["O", "O", "AW", "AW", "AW"], ["IW", "AW"]]
    assert mistakes(words, gold, pred) == {("cup", "IW", "AW", "inside"): 1, ("now", "O", "AW", "after"): 1,
                                           ("zap", "O", "IW", "before"): 1, ("star", "IW", "AW", "inside"): 1}
    assert mistakes([["a"]], [["O"]], [["IW"]]) == {("a", "O", "IW", "none"): 1}


def test_metrics_worked_by_hand():
    gold = [["O", "B-AW", "B-IW", "O", "B-AW"], ["B-IW", "I-IW"]]
    pred = [["O", "B-AW", "B-AW", "O", "O"], ["B-IW", "I-IW"]]
    r = evaluate(gold, pred)
    assert r["word_accuracy"] == pytest.approx(5 / 7)
    # IW: tp 2, predicted 2, actual 3 -> P 1, R 2/3; AW: tp 1, predicted 2, actual 2; O: tp 2, predicted 3, actual 2
    assert r["IW_f1"] == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert r["AW_f1"] == pytest.approx(0.5)
    assert r["O_f1"] == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    # entities: gold {AW@1, IW@2, AW@4, IW@0-2}, pred {AW@1, AW@2, IW@0-2}: tp 2 -> P 2/3, R 1/2
    assert r["entity_f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert r["sentence_accuracy"] == 0.5


@pytest.fixture(scope="module")
def shipped():
    return SyntaxTagger.load()


@pytest.mark.parametrize(
    "command, expected",
    [
        ("please remove the red cup on the left", "O O O AW IW O O AW"),
        ("remove the small red star left of the blue ring", "O O AW AW IW AW O O AW AW"),
        ("get rid of the striped green square at the top", "O O O O AW AW IW O O AW"),
        ("please erase the leftmost circle", "O O O AW IW"),
        ("guy in red shirt", "IW O AW AW"),
        ("woman holding umbrella on the left", "IW AW AW O O AW"),
        ("erase the traffic light next to the bus", "O O IW IW AW O O AW"),
        ("kindly remove the orange next to the cup", "O O O IW AW O O AW"),  # a colour word as the referent
        ("would you remove the shiny kettle in the corner", "O O O O AW IW O O AW"),  # unseen opening and category
    ],
)
def test_shipped_tagger_on_held_out_sentences(shipped, command, expected):
    words = command.split()
    assert shipped.tag([words])[0] == expected.split()


def test_shipped_tagger_reports_its_held_out_figures(shipped):
    report = shipped.info["evaluation"]
    assert report["test"]["word_accuracy"] >= 0.97
    assert report["test"]["sentences"] > 0 and report["train_sentences"] > 0


def test_tagger_batch_equals_one_by_one_and_handles_empty(shipped):
    sentences = [["remove", "the", "dog"], [], ["the", "big", "blue", "bus", "on", "the", "right"]]
    batched = shipped.tag(sentences)
    assert batched[1] == []
    assert batched[0] == shipped.tag([sentences[0]])[0] and batched[2] == shipped.tag([sentences[2]])[0]


def test_missing_and_broken_tagger_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.safetensors")):
        SyntaxTagger.load(tmp_path / "nope.safetensors")
    (tmp_path / "tagger.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "tagger.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(ValueError, match="tagger.safetensors"):
        SyntaxTagger.load(tmp_path)


def test_contextual_word_vectors_are_minilm_layer_means_and_ignore_padding(shipped):
    """The mean of each word's sub-word hidden states at the configured layer, from MiniLM run by hand on one
    sentence; the same in a padded batch."""
    layer = shipped.cfg.context_layer
    assert layer > 0
    words = ["erase", "the", "leftmost", "toothbrush"]
    tokenizer, encoder = shipped.minilm.tokenizer, shipped.minilm.encoder()
    pieces = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    ids = torch.tensor([[tokenizer.cls_token_id] + [i for p in pieces for i in p] + [tokenizer.sep_token_id]])
    with torch.no_grad():
        hidden = encoder(input_ids=ids, output_hidden_states=True).hidden_states[layer][0]
    starts = list(itertools.accumulate([1] + [len(p) for p in pieces]))
    expected = torch.stack([hidden[a:b].mean(0) for a, b in zip(starts, starts[1:])])
    batch = shipped.word_vectors([words, ["remove", "the", "big", "red", "cup", "on", "the", "left", "please"]])
    assert batch.shape == (2, 9, shipped.cfg.static_dim)
    assert torch.allclose(batch[0, :4], expected, atol=1e-4) and torch.all(batch[0, 4:] == 0)


def test_a_tagger_file_from_before_context_layer_reads_static_vectors(shipped, tmp_path):
    cfg = dataclasses.replace(shipped.cfg, context_layer=0)
    old = SyntaxTagger(BiLSTMCRF(cfg), shipped.minilm)
    old.save(tmp_path)
    info = json.loads((tmp_path / "tagger.json").read_text())
    del info["config"]["context_layer"]
    (tmp_path / "tagger.json").write_text(json.dumps(info))
    again = SyntaxTagger.load(tmp_path, minilm=shipped.minilm)
    assert again.cfg.context_layer == 0
    words = ["remove", "the", "cup"]
    expected = torch.stack([shipped.minilm.table[shipped.minilm.tokenizer(w, add_special_tokens=False)["input_ids"]]
                            .mean(0) for w in words])
    assert torch.allclose(again.word_vectors([words])[0], expected)


def test_save_load_round_trip(shipped, tmp_path):
    shipped.save(tmp_path)
    again = SyntaxTagger.load(tmp_path, minilm=shipped.minilm)
    words = "remove the cat sitting on the striped couch".split()
    assert again.tag_bio([words]) == shipped.tag_bio([words])
