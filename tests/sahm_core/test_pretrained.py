"""Pretrained initialisation: timm SwinV2 checkpoints into the backbone (reference: timm's own forward), the trainer's
backbone_weights, a trainable text encoder in its own parameter group, and the segmentation warm-up. A local encoder
through `sahm train --model-set`, and a trained encoder that travels with the run's weights to eval, export and the
Remover (reference: transformers' own forward of the saved encoder directory)."""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer_v2 import SwinTransformerV2

from sahm_core import cli
from sahm_core.checkpoint import (
    CONFIG_KEY,
    CheckpointError,
    config_from_json,
    config_json,
    read_config,
    read_metadata,
    save_weights,
)
from sahm_core.config import ModelConfig, model_config
from sahm_core.data.synthetic import make_dataset
from sahm_core.model import PatchDiscriminator, build_model
from sahm_core.model.point import no_point
from sahm_core.model.pretrained import load_backbone_weights
from sahm_core.text_features import TextFeatures
from sahm_core.train import TrainConfig, learning_rate, train

# timm's swinv2_tiny_window8_256 and the SAHM config with its shapes
SWINV2_T = ModelConfig(name="swinv2_t", image_size=256, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                       window_size=8)
# a small SwinV2 for the cases that only need a checkpoint of some shape
SMALL_SWIN = dict(img_size=64, patch_size=4, embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=4)
SMALL_CFG = ModelConfig(name="small", image_size=64, embed_dim=16, depths=(1, 1, 2, 1), window_size=4)
FAST = TrainConfig(batch_size=4, steps=2, log_interval=1, image_interval=1000, ckpt_interval=1000, num_workers=0)


def random_text(batch: int, cfg: ModelConfig) -> TextFeatures:
    valid = torch.ones(batch, cfg.text_len)
    return TextFeatures(torch.randn(batch, cfg.text_len, cfg.text_dim), valid, torch.zeros_like(valid),
                        torch.zeros_like(valid))


def stage_outputs(model, image: torch.Tensor) -> list[torch.Tensor]:
    """Each Swin stage's output (B,C,H,W) inside our backbone's forward: the visual stream before that stage's
    fusion, which is also the next stage's input while the gates are closed. (P_i, the fused map, is no timm output.)"""
    outputs = []
    hooks = [stage.register_forward_hook(lambda _m, _i, out: outputs.append(out.permute(0, 3, 1, 2)))
             for stage in model.backbone.stages]
    try:
        with torch.no_grad():
            model.backbone(image, random_text(image.shape[0], model.config), no_point(image.shape[0]))
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


@pytest.fixture(scope="module")
def swinv2_tiny(tmp_path_factory):
    """timm's own swinv2_tiny_window8_256 (random init, nothing downloaded) and its state dict as safetensors."""
    torch.manual_seed(1)
    reference = timm.create_model("swinv2_tiny_window8_256", pretrained=False).eval()
    path = tmp_path_factory.mktemp("swinv2") / "swinv2_tiny_window8_256.safetensors"
    save_file(reference.state_dict(), str(path))
    return reference, path


def test_timm_swinv2_tiny_checkpoint_gives_timms_stage_outputs(swinv2_tiny):
    reference, path = swinv2_tiny
    torch.manual_seed(2)
    model = build_model(SWINV2_T).eval()
    image = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        expected = reference.forward_intermediates(image, intermediates_only=True)  # (B,C,H,W) per stage
    before = stage_outputs(model, image)
    assert all((ours - theirs).abs().max() > 0.1 for ours, theirs in zip(before, expected))  # random init differs

    loaded = load_backbone_weights(model, path)

    for ours, theirs in zip(stage_outputs(model, image), expected, strict=True):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert not loaded.missing and not loaded.unexpected and not loaded.resampled
    assert sorted(loaded.dropped) == ["head.fc.bias", "head.fc.weight", "norm.bias", "norm.weight"]
    timm_names = {k.replace("layers.", "stages.", 1) for k in reference.state_dict() if not k.startswith(("head.",
                                                                                                       "norm."))}
    assert {k.removeprefix("backbone.") for k in loaded.loaded} == timm_names
    assert loaded.fusion and all(k.startswith(("backbone.fusions.", "backbone.point.")) for k in loaded.fusion)
    table = str(loaded)
    assert f"loaded      {len(timm_names):5d}" in table and "missing         0" in table and "head.fc.weight" in table


def test_a_window_change_loads_like_timms_own_window_change(swinv2_tiny):
    """Checkpoint at window 8 / 256 px into a config at window 4 / 128 px. Reference: the same timm model after its
    own set_input_size(img_size, window_size), which rebuilds its coordinate tables and keeps cpb_mlp."""
    reference, path = swinv2_tiny
    cfg = replace(SWINV2_T, image_size=128, window_size=4)
    model = build_model(cfg).eval()
    load_backbone_weights(model, path)
    resized = timm.create_model("swinv2_tiny_window8_256", pretrained=False).eval()
    resized.load_state_dict(reference.state_dict())
    resized.set_input_size(img_size=(128, 128), window_size=4)

    image = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        expected = resized.forward_intermediates(image, intermediates_only=True)
    for ours, theirs in zip(stage_outputs(model, image), expected, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    checkpoint = load_file(str(path))
    for i, stage in enumerate(model.backbone.stages):
        for j, block in enumerate(stage.blocks):
            attn = block.attn
            assert attn.relative_coords_table.shape == (1, 7, 7, 2) and attn.relative_position_index.shape == (16, 16)
            for k, value in attn.cpb_mlp.state_dict().items():
                assert torch.equal(value, checkpoint[f"layers.{i}.blocks.{j}.attn.cpb_mlp.{k}"])
    with torch.no_grad():
        out = model(torch.rand(1, 3, 128, 128), random_text(1, cfg))
    assert out.image.shape == (1, 3, 128, 128) and torch.isfinite(out.mask_logits).all()


def test_mismatched_depths_widths_and_heads_are_refused_naming_the_mismatch(tmp_path):
    path = tmp_path / "deeper.safetensors"
    save_file(SwinTransformerV2(**{**SMALL_SWIN, "depths": (1, 1, 3, 1)}).state_dict(), str(path))
    model = build_model(SMALL_CFG)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"stage 2 has 3 blocks in the checkpoint, config depths\[2\]=2"):
        load_backbone_weights(model, path)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # refused before any copy

    wider = tmp_path / "wider.safetensors"
    save_file(SwinTransformerV2(**{**SMALL_SWIN, "embed_dim": 32}).state_dict(), str(wider))
    with pytest.raises(CheckpointError) as error:
        load_backbone_weights(model, wider)
    message = str(error.value)
    assert "stage 0 is 32 channels wide in the checkpoint, config gives 16 (embed_dim=16 * 2**0)" in message
    assert "stage 3 is 256 channels wide in the checkpoint, config gives 128" in message

    more_heads = tmp_path / "heads.safetensors"
    save_file(SwinTransformerV2(**{**SMALL_SWIN, "num_heads": (2, 2, 4, 8)}).state_dict(), str(more_heads))
    with pytest.raises(CheckpointError, match=r"stage 0 has 2 attention heads in the checkpoint, config "
                                              r"num_heads\[0\]=1"):
        load_backbone_weights(model, more_heads)

    three_stages = tmp_path / "three.safetensors"
    swin3 = SwinTransformerV2(**{**SMALL_SWIN, "depths": (1, 1, 2), "num_heads": (1, 2, 4)})
    save_file(swin3.state_dict(), str(three_stages))
    with pytest.raises(CheckpointError, match="the checkpoint has 3 stages, config depths .* has 4"):
        load_backbone_weights(model, three_stages)


def test_pth_checkpoints_load_weights_only_and_bad_files_are_refused_by_name(tmp_path):
    torch.manual_seed(3)
    swin = SwinTransformerV2(**SMALL_SWIN)
    nested = tmp_path / "swin.pth"
    torch.save({"model": swin.state_dict(), "epoch": 300}, nested)  # as Microsoft's and timm's training scripts do
    model = build_model(SMALL_CFG)
    loaded = load_backbone_weights(model, nested)
    assert not loaded.missing and not loaded.unexpected
    ours = model.backbone.state_dict()
    for key, value in swin.state_dict().items():
        if key.startswith("layers."):
            assert torch.equal(ours[key.replace("layers.", "stages.", 1)], value)
    under_state_dict = tmp_path / "swin_sd.pth"
    torch.save({"state_dict": swin.state_dict()}, under_state_dict)
    assert len(load_backbone_weights(build_model(SMALL_CFG), under_state_dict).loaded) == len(loaded.loaded)

    pickled = tmp_path / "pickled.pth"
    torch.save({"model": swin.state_dict(), "args": argparse.Namespace(lr=0.1)}, pickled)
    with pytest.raises(CheckpointError, match="pickled.pth: not a torch weights file that loads with weights_only"):
        load_backbone_weights(model, pickled)
    with pytest.raises(CheckpointError, match="missing.safetensors: backbone weights file not found"):
        load_backbone_weights(model, tmp_path / "missing.safetensors")
    v1 = tmp_path / "swin_v1.safetensors"
    save_file(SwinTransformer(**SMALL_SWIN).state_dict(), str(v1))
    with pytest.raises(CheckpointError, match="a Swin V1 checkpoint"):
        load_backbone_weights(model, v1)
    sahm_file = tmp_path / "sahm.safetensors"
    save_weights(sahm_file, model.state_dict(), SMALL_CFG)
    with pytest.raises(CheckpointError, match="not a timm Swin checkpoint"):
        load_backbone_weights(model, sahm_file)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """8 train + 4 test synthetic samples at 64 px (as test_train.py)."""
    root = tmp_path_factory.mktemp("synthetic")
    make_dataset(root, n=12, seed=7, size=64, workers=1, negative_fraction=0.3, val_fraction=0.0, test_fraction=1 / 3)
    return root


def nano_swin() -> SwinTransformerV2:
    cfg = model_config("nano")
    return SwinTransformerV2(img_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                             depths=cfg.depths, num_heads=cfg.num_heads, window_size=cfg.window_size)


def test_sahm_train_starts_from_backbone_weights_and_resume_keeps_the_runs_own(data_dir, tmp_path, capsys):
    """At lr 0 AdamW leaves every weight as it started, so the saved backbone must be the checkpoint's."""
    torch.manual_seed(4)
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    save_file(nano_swin().state_dict(), str(first))
    save_file(nano_swin().state_dict(), str(second))
    out = tmp_path / "run"
    common = ["train", "--config", "nano", "--data", str(data_dir), "--out", str(out), "--batch-size", "2",
              "--num-workers", "0", "--device", "cpu", "--lr", "0"]
    assert cli.main([*common, "--steps", "1", "--set", f"backbone_weights={first}"]) == 0
    printed = capsys.readouterr().out
    assert f"backbone weights from {first}" in printed and "missing         0" in printed
    saved = load_file(str(out / "model.safetensors"))
    for key, value in load_file(str(first)).items():
        if key.startswith("layers."):
            assert torch.equal(saved["backbone." + key.replace("layers.", "stages.", 1)], value), key

    assert cli.main([*common, "--steps", "2", "--resume", "--set", f"backbone_weights={second}"]) == 0
    assert "backbone weights from" not in capsys.readouterr().out
    resumed = load_file(str(out / "model.safetensors"))
    backbone = [k for k in saved if k.startswith("backbone.")]  # the decoder's BatchNorm statistics move at lr 0
    assert all(torch.equal(resumed[k], saved[k]) for k in backbone)

    code = cli.main([*common[:6], str(tmp_path / "bad"), *common[7:], "--steps", "1",
                     "--set", f"backbone_weights={tmp_path / 'none.pth'}"])
    assert code == 2 and "none.pth: backbone weights file not found" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny_text_encoder(tmp_path_factory):
    """A tiny local Hugging Face encoder directory (random 1-layer BERT, 32 wide; the installed MiniLM tokenizer)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from sahm_core.text import resolve_encoder_dir

    out = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_encoder_dir("minilm")), local_files_only=True)
    tokenizer.save_pretrained(out)
    torch.manual_seed(5)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(out, safe_serialization=True)
    return out


def text_cfg(encoder_dir) -> ModelConfig:
    """test_train.py's SMALL (nano's structure at 64 px, half its widths) with the tiny text encoder."""
    return replace(model_config("nano"), image_size=64, embed_dim=16, decoder_dim=16, disc_dim=8, text_dim=32,
                   text_encoder=str(encoder_dir))


def test_a_trainable_text_encoder_trains_in_its_own_group_at_the_scaled_lr(data_dir, tiny_text_encoder, tmp_path):
    cfg = text_cfg(tiny_text_encoder)
    initial = load_file(str(tiny_text_encoder / "model.safetensors"))
    trainable = replace(FAST, text_encoder_trainable=True, text_lr_scale=0.25)
    run = train(cfg, trainable, data_dir, tmp_path / "trainable", device="cpu")

    groups = torch.load(run / "state.pt", weights_only=True)["optimizer_g"]["param_groups"]
    last_lr = learning_rate(FAST.steps - 1, trainable, steps_per_epoch=2, total_steps=FAST.steps)  # 8 samples / 4
    assert len(groups) == 2
    assert groups[0]["lr"] == pytest.approx(last_lr) and groups[1]["lr"] == pytest.approx(0.25 * last_lr)
    assert len(groups[1]["params"]) == len(initial)  # every encoder tensor, and only those
    trained = load_file(str(run / "text_encoder" / "model.safetensors"))
    changed = {k for k in initial if not torch.equal(trained[k], initial[k])}
    assert {k for k in initial if k.startswith(("embeddings.word", "encoder."))} <= changed
    assert not {k for k in changed if k.startswith("pooler.")}  # last_hidden_state only: the pooler gets no gradient

    frozen = train(cfg, FAST, data_dir, tmp_path / "frozen", device="cpu")
    assert len(torch.load(frozen / "state.pt", weights_only=True)["optimizer_g"]["param_groups"]) == 1
    assert not (frozen / "text_encoder").exists()
    from sahm_core.text import shared_encoder

    after = shared_encoder(cfg, "cpu").model.state_dict()
    assert all(torch.equal(after[k], initial[k]) for k in initial)


def test_a_trainable_text_encoder_resumes_exactly(data_dir, tiny_text_encoder, tmp_path):
    cfg = text_cfg(tiny_text_encoder)
    trainable = replace(FAST, text_encoder_trainable=True, adv_weight=0.0)
    whole = train(cfg, trainable, data_dir, tmp_path / "whole", device="cpu")
    half = train(cfg, replace(trainable, steps=1), data_dir, tmp_path / "halves", device="cpu")
    train(cfg, trainable, data_dir, half, resume=True, device="cpu")
    for name in ("model.safetensors", "text_encoder/model.safetensors"):
        a, b = load_file(str(whole / name)), load_file(str(half / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_segmentation_warm_up_zeroes_rec_and_adv_then_applies_them(data_dir, tmp_path):
    cfg = replace(text_cfg("minilm"), text_dim=384)  # the shipped, frozen MiniLM
    run = train(cfg, replace(FAST, steps=3, seg_warmup_steps=2), data_dir, tmp_path / "warm", device="cpu")
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [("loss/rec" in r, "loss/adv" in r, "loss/disc" in r) for r in rows] == [(False,) * 3] * 2 + [(True,) * 3]
    assert all("loss/seg" in r for r in rows)

    run = train(cfg, replace(FAST, seg_warmup_steps=2), data_dir, tmp_path / "warm_only", device="cpu")
    torch.manual_seed(FAST.seed)  # train() seeds, then builds the generator, then the discriminator
    build_model(cfg)
    untouched = PatchDiscriminator(cfg).state_dict()
    saved = load_file(str(run / "discriminator.safetensors"))
    assert all(torch.equal(saved[k], untouched[k]) for k in saved)  # no discriminator step during the warm-up


def test_model_set_values_are_typed_like_the_field_and_bad_ones_named(data_dir, tiny_text_encoder, tmp_path, capsys):
    from sahm_core.config import parse_overrides

    nano = model_config("nano")
    typed = parse_overrides(nano, ["text_dim=768", "hdc_rates=1,2,3", "fill_fixed_grid=true", "mlp_ratio=3.5",
                                   "text_encoder=albert-base-v2"], "--model-set")
    assert typed == {"text_dim": 768, "hdc_rates": (1, 2, 3), "fill_fixed_grid": True, "mlp_ratio": 3.5,
                     "text_encoder": "albert-base-v2"}
    out = tmp_path / "run"
    common = ["train", "--data", str(data_dir), "--out", str(out), "--batch-size", "4", "--num-workers", "0",
              "--device", "cpu"]
    for bad, reason in [("text_dimm=768", "unknown ModelConfig field(s): text_dimm; known: "),
                        ("hdc_rates=1,two", "--model-set hdc_rates=1,two: "),
                        ("fill_fixed_grid=maybe", "--model-set fill_fixed_grid=maybe: expected true or false"),
                        ("text_dim", "--model-set expects KEY=VALUE, got 'text_dim'")]:
        assert cli.main([*common, "--model-set", bad]) == 2
        assert reason in capsys.readouterr().out, bad

    # nano's text_dim (384) with a 32-wide encoder: refused when the encoder opens, naming both numbers
    assert cli.main([*common, "--model-set", f"text_encoder={tiny_text_encoder}"]) == 2
    printed = capsys.readouterr().out
    assert "has hidden size 32" in printed and "expects 384-d tokens (text_dim=384)" in printed
    assert "--model-set text_dim=32" in printed
    assert not (out / "model.safetensors").exists()


def test_sahm_train_model_set_makes_a_fresh_runs_config_and_a_resume_keeps_it(data_dir, tiny_text_encoder, tmp_path,
                                                                             monkeypatch, capsys):
    monkeypatch.chdir(tiny_text_encoder.parent)  # the encoder given relative to the working directory, as a CLI path
    out = tmp_path / "run"
    settings = ["image_size=64", "embed_dim=16", "decoder_dim=16", "disc_dim=8", "text_dim=32", "hdc_rates=1,2,3",
                f"text_encoder={tiny_text_encoder.name}"]
    bare = ["train", "--data", str(data_dir), "--out", str(out), "--batch-size", "4", "--num-workers", "0",
            "--device", "cpu"]
    fresh = [*bare, "--config", "nano", "--set", "text_encoder_trainable=true",
             *(arg for setting in settings for arg in ("--model-set", setting))]
    assert cli.main([*fresh, "--steps", "1"]) == 0
    expected = replace(text_cfg(tiny_text_encoder), hdc_rates=(1, 2, 3))
    assert ModelConfig.from_json(torch.load(out / "state.pt", weights_only=True)["model_config"]) == expected
    assert read_config(out / "model.safetensors") == replace(expected, text_encoder=str(out / "text_encoder"))

    # the first command line again resumes, and so does one without --config / --model-set: the run's config wins
    assert cli.main([*fresh, "--steps", "2", "--resume"]) == 0
    assert cli.main([*bare, "--steps", "3", "--resume"]) == 0
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 3
    capsys.readouterr()
    assert cli.main([*bare, "--steps", "4", "--resume", "--model-set", "text_dim=64"]) == 2
    assert "text_dim: saved 32, requested 64" in capsys.readouterr().out
    assert cli.main([*bare, "--steps", "4", "--resume", "--config", "tiny"]) == 2
    printed = capsys.readouterr().out
    assert "name: saved 'nano', requested 'tiny'" in printed and "image_size: saved 64, requested 480" in printed
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 3


def test_a_stored_text_encoder_path_is_relative_to_the_file_that_stores_it(tmp_path, monkeypatch):
    where = tmp_path / "model" / "model.safetensors"
    inside, outside = tmp_path / "model" / "text_encoder", tmp_path / "albert"
    nano = model_config("nano")

    def stored(encoder: str) -> str:
        return json.loads(config_json(replace(nano, text_encoder=encoder), where))["text_encoder"]

    assert config_json(nano, where) == nano.to_json()  # a name stays a name
    assert stored(str(inside)) == "text_encoder" and stored(str(outside)) == str(outside)
    monkeypatch.chdir(tmp_path)  # a relative path in memory is the working directory's
    assert stored("model/text_encoder") == "text_encoder" and stored("albert") == str(outside)

    monkeypatch.chdir(outside.parent.parent)  # reading resolves against the file's directory, not the working one
    text = config_json(replace(nano, text_encoder=str(inside)), where)
    assert config_from_json(text, where).text_encoder == str(inside)
    moved = tmp_path / "elsewhere" / "model.safetensors"
    assert config_from_json(text, moved).text_encoder == str(tmp_path / "elsewhere" / "text_encoder")
    assert config_from_json(nano.to_json(), moved) == nano
    with pytest.raises(CheckpointError, match="elsewhere/model.safetensors: stored model config is missing"):
        config_from_json("{", moved)


def encoder_tokens(encoder_dir, commands: list[str], text_len: int) -> torch.Tensor:
    """The encoder directory's own last_hidden_state (transformers directly) over text_len tokens, padding zeroed."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir), local_files_only=True)
    model = AutoModel.from_pretrained(str(encoder_dir), local_files_only=True).eval()
    batch = tokenizer(commands, padding="max_length", truncation=True, max_length=text_len, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).last_hidden_state * batch["attention_mask"][..., None]


def test_a_trained_text_encoder_travels_with_the_runs_weights(data_dir, tiny_text_encoder, tmp_path, monkeypatch):
    from sahm_core.evaluate import EvalConfig, evaluate
    from sahm_core.runtime import Remover
    from sahm_core.text import CommandEncoder

    cfg = text_cfg(tiny_text_encoder)
    trainable = replace(FAST, text_encoder_trainable=True, text_lr_scale=1.0)
    run = train(cfg, trainable, data_dir, tmp_path / "run", device="cpu")
    trained_dir = run / "text_encoder"
    assert json.loads(read_metadata(run / "model.safetensors")[CONFIG_KEY])["text_encoder"] == "text_encoder"
    commands = ["remove the red cup", "take the dog on the left away"]
    trained = encoder_tokens(trained_dir, commands, cfg.text_len)
    assert (trained - encoder_tokens(tiny_text_encoder, commands, cfg.text_len)).abs().max() > 1e-3

    # sahm eval's encoder: every batch of commands it encodes gives the trained encoder's own tokens
    encoded, features = [], CommandEncoder.features

    def recorded(encoder, texts):
        out = features(encoder, texts)
        encoded.append((encoder.encoder_dir, list(texts), out.tokens.clone()))
        return out

    monkeypatch.setattr(CommandEncoder, "features", recorded)
    evaluate(run, data_dir, tmp_path / "eval", EvalConfig(limit=4, batch_size=4))
    assert encoded and {where for where, _, _ in encoded} == {trained_dir}
    for _, texts, tokens in encoded:
        torch.testing.assert_close(tokens, encoder_tokens(trained_dir, texts, cfg.text_len), atol=1e-5, rtol=0)

    # sahm remove and the node (Remover), also after the run directory moved as a whole. (An ONNX export stores the
    # path the same way, config_json; not exported here: the export alone takes over a minute on two cores.)
    moved = tmp_path / "deployed"
    with Remover.load(run, backend="torch", device="cpu") as remover:
        remover.set_command(commands[0])
        (command,) = remover._commands
        torch.testing.assert_close(torch.from_numpy(command.features["tokens"]), trained[:1], atol=1e-5, rtol=0)
    shutil.move(run, moved)
    with Remover.load(moved, backend="torch", device="cpu") as remover:
        assert remover.config.text_encoder == str(moved / "text_encoder")
        remover.set_command(commands[1])
        (command,) = remover._commands
        torch.testing.assert_close(torch.from_numpy(command.features["tokens"]), trained[1:], atol=1e-5, rtol=0)
