"""Checkpoint averaging: the element-wise mean, BatchNorm statistics measured again, bad input named."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from sahm_core import cli
from sahm_core.average import recalibrate_batchnorm, sample_batches
from sahm_core.checkpoint import save_weights
from sahm_core.config import model_config
from sahm_core.data.synthetic import make_dataset
from sahm_core.model import build_model
from sahm_core.text import shared_encoder

SIZE = 64
SMALL = replace(model_config("nano"), image_size=SIZE, embed_dim=16, decoder_dim=16, disc_dim=8)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_dataset(root, n=12, seed=3, size=SIZE, workers=1, negative_fraction=0.3, val_fraction=0.0, test_fraction=0.0)
    return root


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """Two SMALL models with different weights and different (made-up) BatchNorm statistics."""
    root = tmp_path_factory.mktemp("ckpts")
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = build_model(SMALL)
        for layer in model.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.uniform_(-1, 1)
                layer.running_var.uniform_(0.5, 2)
        save_weights(root / f"model_{seed}.safetensors", model.state_dict(), SMALL)
        paths.append(root / f"model_{seed}.safetensors")
    return paths


def batchnorm_inputs_reference(model: nn.Module, batches: list[dict],
                               encoder) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per BatchNorm layer: the mean over batches of its input's per-channel batch mean and unbiased variance,
    recorded by hooks in a train-mode forward (what each layer normalises with)."""
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    hooks = []
    for name, layer in model.named_modules():
        if isinstance(layer, nn.BatchNorm2d):
            def record(_module, inputs, name=name):
                x = inputs[0].double()
                seen.setdefault(name, []).append((x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=True)))
            hooks.append(layer.register_forward_pre_hook(record))
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch["image"], encoder.encode_batch(list(batch["text"])))
    for hook in hooks:
        hook.remove()
    return {name: (torch.stack([m for m, _ in stats]).mean(0), torch.stack([v for _, v in stats]).mean(0))
            for name, stats in seen.items()}


def test_batchnorm_statistics_are_the_average_over_the_batches(data_dir, two_checkpoints):
    encoder = shared_encoder(SMALL, "cpu")
    batches = list(sample_batches([data_dir], SIZE, batches=2, batch_size=3, seed=0))
    assert len(batches) == 2 and batches[0]["image"].shape == (3, 3, SIZE, SIZE)
    model = build_model(SMALL)
    model.load_state_dict(load_file(str(two_checkpoints[0])))
    reference_model = build_model(SMALL)
    reference_model.load_state_dict(load_file(str(two_checkpoints[0])))
    expected = batchnorm_inputs_reference(reference_model, batches, encoder)

    recalibrate_batchnorm(model, batches, encoder)
    assert not model.training
    layers = {name: layer for name, layer in model.named_modules() if isinstance(layer, nn.BatchNorm2d)}
    assert layers.keys() == expected.keys() and layers
    for name, layer in layers.items():
        mean, var = expected[name]
        torch.testing.assert_close(layer.running_mean.double(), mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.running_var.double(), var, rtol=1e-4, atol=1e-5)
        assert layer.momentum == 0.1  # restored for any later training


def test_average_cli_writes_the_mean_of_the_weights(data_dir, two_checkpoints, tmp_path, capsys):
    out = tmp_path / "averaged.safetensors"
    code = cli.main(["average", *map(str, two_checkpoints), "--data", str(data_dir), "--out", str(out),
                     "--batches", "2", "--batch-size", "4"])
    assert code == 0, capsys.readouterr().out
    a, b, averaged = (load_file(str(p)) for p in (*two_checkpoints, out))
    assert averaged.keys() == a.keys()
    for key, tensor in averaged.items():
        if key.endswith(("running_mean", "running_var")):
            # measured again, so neither checkpoint's nor their mean
            assert not torch.allclose(tensor, (a[key] + b[key]) / 2), key
        elif tensor.is_floating_point():
            torch.testing.assert_close(tensor, (a[key] + b[key]) / 2, rtol=0, atol=1e-6)
    with safe_open(str(out), framework="pt") as f:
        assert json.loads(f.metadata()["averaged_from"]) == [str(p) for p in two_checkpoints]
    # the averaged file is an ordinary model file: it loads into the config stored inside it
    build_model(SMALL).load_state_dict(averaged)


def test_checkpoints_of_another_config_or_missing_are_named_before_any_work(data_dir, two_checkpoints, tmp_path,
                                                                           capsys):
    other = tmp_path / "other.safetensors"
    save_weights(other, build_model(replace(SMALL, decoder_dim=8)).state_dict(), replace(SMALL, decoder_dim=8))
    out = tmp_path / "averaged.safetensors"
    missing = tmp_path / "missing.safetensors"
    for bad, says in ((other, "checkpoint was made for config"), (missing, "model file not found")):
        code = cli.main(["average", str(two_checkpoints[0]), str(bad), "--data", str(data_dir), "--out", str(out)])
        printed = capsys.readouterr().out
        assert code == 2 and says in printed and str(bad) in printed, printed
        assert not out.exists()
    code = cli.main(["average", *map(str, two_checkpoints), "--data", str(tmp_path / "nodata"), "--out", str(out)])
    assert code == 2 and "does not exist" in capsys.readouterr().out
