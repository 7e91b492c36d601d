"""Average checkpoints: `sahm average CKPT CKPT [...] --data DIR [DIR ...] --out FILE`.

Weights from the ends of one run's lr cycles lie in one basin, and their mean usually lies nearer its
centre than any of them: stochastic weight averaging (Izmailov et al. 2018, "Averaging Weights Leads to
Wider Optima and Better Generalization"). Every checkpoint must have the same ModelConfig.

BatchNorm's running statistics of the mean weights are not the mean of the checkpoints' statistics: the
layers see different inputs once the weights before them change. So they are measured again, as SWA
does: running statistics reset, then forward passes in train mode over training samples, each layer's
statistics the plain average over those batches (momentum None): torch's `swa_utils.update_bn`, fed
(image, encoded command) pairs. Nothing else is trained.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import ConcatDataset, DataLoader

from .checkpoint import CheckpointError, load_state, load_weights, save_weights, weights_file
from .config import ModelConfig
from .text_features import TextFeatures


def average_weights(paths: list[Path]) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """Element-wise mean of every floating-point tensor; integer buffers (BatchNorm's batch counters) from the first."""
    if not paths:
        raise ValueError("give at least one checkpoint to average")
    first, cfg = load_weights(paths[0])
    states = [first]
    for path in paths[1:]:
        state, _ = load_weights(path, expect=cfg)  # a checkpoint of another config is a CheckpointError
        if state.keys() != first.keys():
            raise CheckpointError(f"{path}: its tensors are not those of {paths[0]} "
                                  "(weights from another code version?)")
        states.append(state)
    mean = {}
    for key, tensor in first.items():
        if tensor.is_floating_point():
            mean[key] = torch.stack([s[key].double() for s in states]).mean(dim=0).to(tensor.dtype)
        else:
            mean[key] = tensor
    return mean, cfg


class PairInput(nn.Module):
    """SAHM called with one argument, as update_bn calls a model: (image (B,3,S,S), TextFeatures) -> output."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pair: tuple[torch.Tensor, TextFeatures]):
        return self.model(*pair)


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[dict], encoder) -> None:
    """Re-measure every BatchNorm layer's running mean / variance as the average over `batches` (update_bn).

    batches: dicts with "image" (B,3,S,S) and "text" (B commands), as RemovalDataset batches.
    The model is left in eval mode.
    """
    # update_bn passes a list's first element to the model, so each pair is wrapped in a one-element list.
    pairs = ([(batch["image"], encoder.encode_batch(list(batch["text"])))] for batch in batches)
    with torch.no_grad():  # update_bn does not turn off autograd itself
        update_bn(pairs, PairInput(model))
    model.eval()


def sample_batches(data_dirs: list[Path], size: int, batches: int, batch_size: int, seed: int) -> DataLoader:
    """`batches` batches of distinct training samples (no augmentation), drawn at random from the folders' train
    splits."""
    from .train import open_train_splits

    dataset = ConcatDataset(open_train_splits(data_dirs, size, augment=False))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    chosen = order[: batches * batch_size].tolist()
    if len(chosen) < batch_size:
        raise ValueError(f"{len(dataset)} training samples, fewer than one batch of {batch_size}")
    return DataLoader(dataset, batch_size=batch_size, sampler=chosen, drop_last=True)


def average(paths: list[str | Path], data_dirs: list[str | Path], out: str | Path, batches: int = 60,
            batch_size: int = 16, seed: int = 0) -> Path:
    """Write the averaged, BatchNorm-recalibrated model to `out`; returns `out`."""
    from .model import build_model
    from .text import shared_encoder

    if batches < 1 or batch_size < 1:
        raise ValueError(f"batches ({batches}) and batch_size ({batch_size}) must be at least 1")
    files = [weights_file(p) for p in paths]
    state, cfg = average_weights(files)
    loader = sample_batches([Path(d) for d in data_dirs], cfg.image_size, batches, batch_size, seed)
    model = build_model(cfg)
    load_state(model, state, files[0])
    recalibrate_batchnorm(model, loader, shared_encoder(cfg, "cpu"))
    out = Path(out)
    save_weights(out, model.state_dict(), cfg, extra={"averaged_from": json.dumps([str(f) for f in files])})
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", metavar="CKPT", help="weights files or run directories, same config")
    parser.add_argument("--data", required=True, nargs="+", metavar="DIR",
                        help="dataset folder(s) whose train split re-measures the BatchNorm statistics")
    parser.add_argument("--out", required=True, help="the averaged weights file (.safetensors)")
    parser.add_argument("--batches", type=int, default=60, help="batches for the BatchNorm statistics (default 60)")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per batch (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="which training samples are drawn")


def main(args: argparse.Namespace) -> int:
    try:
        out = average(args.checkpoints, args.data, args.out, args.batches, args.batch_size, args.seed)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"sahm average: error: {e}")
        return 2
    print(f"averaged {len(args.checkpoints)} checkpoints: {out}")
    return 0
