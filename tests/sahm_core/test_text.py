"""CommandEncoder on the real MiniLM encoder and tokenizer: shapes, masks, the token window, errors, determinism."""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import pytest
import torch

from sahm_core.config import model_config
from sahm_core.syntax import split_words
from sahm_core.text import CommandEncoder, resolve_encoder_dir, token_word_index, window_start

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


def test_commands_within_T_tokenise_as_plain_padding_did(encoder):
    """Bit for bit: the tokenizer's own padding/truncation call (what encode used before the window) on commands of
    3 to exactly T tokens."""
    texts = ["remove the dog", "Please remove the red cup on the left!", "uh can you you get rid of it's handle",
             "could you please remove the small striped green square next to the big red circle on top now"]
    assert len(encoder.tokenizer(texts[-1])["input_ids"]) == T
    batch, token_words, _ = encoder.windows(texts)
    direct = encoder.tokenizer(texts, padding="max_length", truncation=True, max_length=T, return_tensors="pt")
    assert set(batch) == set(direct.keys())
    for key in batch:
        assert torch.equal(batch[key], direct[key]), key
    feats = encoder.encode_batch(texts)
    assert torch.equal(feats.valid, direct["attention_mask"].float())
    with torch.no_grad():
        assert torch.equal(feats.tokens[-1], encoder.model(**direct).last_hidden_state[-1].float())


def _pieces(encoder, ids, mask):
    return encoder.tokenizer.convert_ids_to_tokens([i for i, m in zip(ids.tolist(), mask.tolist()) if m])


def test_a_long_preamble_keeps_the_object_in_a_contiguous_window_of_T(encoder, caplog):
    text = "so what i would really like you to do for me right now is remove remove the totally white triangle"
    full = encoder.tokenizer(text)["input_ids"]
    assert len(full) > T and encoder.tokenizer(text, truncation=True, max_length=T)["input_ids"][-2] != full[-2]
    encoder._warned_window = False
    with caplog.at_level(logging.WARNING, logger="sahm_core.text"):
        feats = encoder.encode(text)
        batch, _, _ = encoder.windows([text])
    assert sum("over text_len" in r.getMessage() for r in caplog.records) == 1  # logged once per encoder
    ids = batch["input_ids"][0].tolist()
    assert len(ids) == T and feats.valid[0].tolist() == [1.0] * T
    assert ids[0] == full[0] and ids[-1] == full[-1]  # [CLS] ... [SEP]
    inner = ids[1:-1]
    starts = [i for i in range(len(full) - 1) if full[i : i + len(inner)] == inner]
    assert starts == [len(full) - 1 - len(inner)]  # one contiguous run of the command's tokens: its last ones
    tags = dict(encoder.word_tags(text))
    assert tags["triangle"] == "IW" and tags["white"] == "AW"
    assert _pieces(encoder, batch["input_ids"][0], feats.identity[0]) == encoder.tokenizer.tokenize("triangle")
    assert _pieces(encoder, batch["input_ids"][0], feats.attribute[0]) == encoder.tokenizer.tokenize("white")
    # the tokens are the encoder run on exactly that window
    with torch.no_grad():
        direct = encoder.model(**{k: v for k, v in batch.items()}).last_hidden_state.float()
    assert torch.equal(feats.tokens, direct)


def test_a_long_tail_or_nothing_described_keeps_the_first_T_tokens(encoder):
    texts = ["remove the red cup" + " please" * 30, "uh " * 40 + "okay"]
    batch, _, _ = encoder.windows(texts)
    direct = encoder.tokenizer(texts, padding="max_length", truncation=True, max_length=T, return_tensors="pt")
    assert torch.equal(batch["input_ids"], direct["input_ids"])
    feats = encoder.encode_batch(texts)
    assert _pieces(encoder, batch["input_ids"][0], feats.identity[0]) == ["cup"]
    assert feats.identity[1].sum() == 0


def test_window_start_prefers_the_object_then_attributes_then_whole_words():
    """window_start on hand-worked token classes (IW before AW before whole words at the edges, then earliest)."""
    o = "O"
    word = [True] * 12
    assert window_start([o] * 10 + ["AW", "IW"], word, 5) == 7  # the preamble goes, the window ends at the object
    assert window_start(["IW"] + [o] * 10 + ["AW"], word, 5) == 0  # the object before the attribute
    assert window_start(["AW", "AW"] + [o] * 6 + ["IW", o, o, "AW"], word, 5) == 7  # most attributes with it
    assert window_start([o] * 12, word, 5) == 0 and window_start([o] * 4, word[:4], 5) == 0
    pieces = [True, False, False, True, True, True, True, True]  # word 0 in three pieces
    assert window_start([o] * 5 + ["IW", o, o], pieces, 4) == 3  # not 2: starts on a word
    assert window_start([o, "IW", o, o, o, o], [True, True, True, False, True, True], 3) == 1  # 0 cuts word 2-3
    with pytest.raises(ValueError, match="width"):
        window_start([o], [True], 0)


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
