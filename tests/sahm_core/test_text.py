"""CommandEncoder on the real MiniLM encoder and tokenizer: shapes, masks, truncation, errors, determinism."""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import pytest
import torch

from sahm_core.config import model_config
from sahm_core.syntax import split_words
from sahm_core.text import CommandEncoder, resolve_encoder_dir, token_word_index

T = 20


@pytest.fixture(scope="module")
def encoder():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # conftest: no hub, ever
    return CommandEncoder(text_len=T)


def _tokens(encoder, text):
    return encoder.tokenizer(text, padding="max_length", max_length=T, truncation=True, return_offsets_mapping=True)


def test_word_index_on_real_minilm_pieces(encoder):
    text = "remove the leftmost toothbrush"
    batch = _tokens(encoder, text)
    pieces = batch.tokens()[:7]
    assert pieces == ["[CLS]", "remove", "the", "left", "##most", "tooth", "##brush"]
    index = token_word_index(batch["offset_mapping"], [(s, e) for _, s, e in split_words(text)])
    assert index[:8] == [-1, 0, 1, 2, 2, 3, 3, -1]  # [SEP] and padding belong to no word
    assert set(index[8:]) == {-1}


def test_every_piece_of_a_split_word_gets_its_tag(encoder):
    text = "erase the leftmost toothbrush"
    feats = encoder.encode(text)
    # [CLS] erase the left ##most tooth ##brush [SEP]
    assert encoder.word_tags(text) == [("erase", "O"), ("the", "O"), ("leftmost", "AW"), ("toothbrush", "IW")]
    assert feats.attribute[0, :8].tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    assert feats.identity[0, :8].tolist() == [0, 0, 0, 0, 0, 1, 1, 0]


def test_masks_follow_word_tags_for_a_spoken_command(encoder):
    text = "Please remove the red cup on the left!"
    tags = dict(encoder.word_tags(text))
    assert tags["cup"] == "IW" and tags["red"] == "AW" and tags["left"] == "AW" and tags["remove"] == "O"
    batch = _tokens(encoder, text)
    feats = encoder.encode(text)
    pieces = batch.tokens()
    assert [p for p, m in zip(pieces, feats.identity[0]) if m] == ["cup"]
    assert [p for p, m in zip(pieces, feats.attribute[0]) if m] == ["red", "left"]


def test_encode_shapes_padding_and_dtypes(encoder):
    feats = encoder.encode("remove the dog")
    n = len(encoder.tokenizer("remove the dog")["input_ids"])  # [CLS] remove the dog [SEP]
    assert n == 5
    assert feats.tokens.shape == (1, T, encoder.text_dim) and encoder.text_dim == 384
    for mask in (feats.valid, feats.attribute, feats.identity):
        assert mask.shape == (1, T) and mask.dtype == torch.float32
    assert feats.valid[0].tolist() == [1.0] * n + [0.0] * (T - n)
    assert feats.attribute[0, n:].sum() == 0 and feats.identity[0, n:].sum() == 0
    assert torch.all(feats.tokens[0, n:] == 0) and torch.all(feats.tokens[0, :n].abs().sum(-1) > 0)


def test_tokens_equal_the_encoder_run_directly(encoder):
    text = "get rid of the striped green square at the top"
    batch = encoder.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        direct = encoder.model(**batch).last_hidden_state
    n = batch["input_ids"].shape[1]
    assert torch.allclose(encoder.encode(text).tokens[0, :n], direct[0], atol=1e-5)


def test_long_command_is_truncated_with_one_warning(encoder, caplog):
    long_text = "please remove the " + "very " * 40 + "big red cup"
    encoder._warned_truncation = False
    with caplog.at_level(logging.WARNING, logger="sahm_core.text"):
        feats = encoder.encode(long_text)
        encoder.encode(long_text)
    assert sum("truncated" in r.getMessage() for r in caplog.records) == 1
    assert feats.valid[0].tolist() == [1.0] * T
    ids = encoder.tokenizer(long_text, truncation=True, max_length=T)["input_ids"]
    assert ids[-1] == encoder.tokenizer.sep_token_id and len(ids) == T
    assert feats.identity[0].sum() == 0  # "cup" fell beyond T


def test_batch_equals_single_and_is_deterministic(encoder):
    texts = ["remove the cat", "erase the mug next to the laptop please", "guy in red shirt"]
    batch = encoder.encode_batch(texts)
    assert batch.tokens.shape == (3, T, 384)
    for i, text in enumerate(texts):
        single = encoder.encode(text)
        for a, b in zip(batch, single):
            assert torch.allclose(a[i], b[0], atol=1e-5)
    again = encoder.encode_batch(texts)
    assert all(torch.equal(a, b) for a, b in zip(batch, again))
    assert not batch.tokens.requires_grad


@pytest.mark.parametrize("bad", ["", "   \n\t", None, 3, b"remove the cup"])
def test_empty_or_non_string_command_is_rejected(encoder, bad):
    with pytest.raises(ValueError, match="command"):
        encoder.encode(bad)
    with pytest.raises(ValueError):
        encoder.word_tags(bad)


def test_encode_batch_rejects_a_bare_string_and_an_empty_list(encoder):
    with pytest.raises(ValueError):
        encoder.encode_batch("remove the cup")
    with pytest.raises(ValueError):
        encoder.encode_batch([])
    with pytest.raises(ValueError, match="empty"):
        encoder.encode_batch(["remove the cup", " "])


def test_missing_encoder_dir_and_tagger_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "no_encoder")):
        CommandEncoder(encoder=tmp_path / "no_encoder")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(FileNotFoundError, match=str(broken)):
        CommandEncoder(encoder=broken)
    with pytest.raises(FileNotFoundError, match="missing_tagger"):
        CommandEncoder(tagger=tmp_path / "missing_tagger" / "tagger.safetensors")


def test_for_config_matches_and_checks_width():
    cfg = model_config("nano")
    enc = CommandEncoder.for_config(replace(cfg, text_len=12))
    assert enc.text_len == 12 and enc.encode("remove the cup").tokens.shape == (1, 12, cfg.text_dim)
    assert resolve_encoder_dir("minilm") == enc.encoder_dir
    with pytest.raises(ValueError, match="expects 256"):
        CommandEncoder.for_config(replace(cfg, text_dim=256))
