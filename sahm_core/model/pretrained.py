"""Pretrained initialisation: a local timm SwinV2 checkpoint into SAHM's backbone (paper 5.1: Swin weights).

SwinBackbone keeps timm's `patch_embed` and `layers` as `patch_embed` and `stages`, so a checkpoint's
`layers.{i}.*` become `backbone.stages.{i}.*`; its classifier `head.*` and final `norm.*` have no counterpart and
are dropped. timm's own `checkpoint_filter_fn` first prepares the state dict as `timm.create_model(...,
pretrained=True)` does: it unwraps "model" / "state_dict", drops the buffers that depend on the window and the
resolution (relative_coords_table, relative_position_index, attn_mask; ours are built for our window and size),
moves the downsample layers of original Microsoft checkpoints, and resamples a patch embedding of another patch size.

The continuous position bias MLP (`cpb_mlp`) maps relative coordinates to biases, so it carries over to any window.
As in timm when a checkpoint is loaded at another window (create_model(..., window_size=W) or set_input_size), our
coordinates are normalised by our own window: SwinV2's fine-tuning recipe instead keeps pretraining-window units
(timm's `pretrained_window_sizes`), which ModelConfig does not have.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models.swin_transformer_v2 import checkpoint_filter_fn

from ..checkpoint import CheckpointError
from ..config import ModelConfig
from .backbone import stage_dims
from .sahm import SAHM

BLOCK_KEY = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.")
NOT_SWIN = ("fusions.", "point.")  # our backbone's modules that no Swin checkpoint holds
UNUSED_PREFIXES = ("head.", "norm.")  # timm's classifier and its final norm: SAHM reads the stages, not the pooled


@dataclass
class BackboneLoad:
    """What `load_backbone_weights` did, by our key names (`backbone.*`) except `unexpected` and `dropped`."""

    source: Path
    loaded: list[str]
    missing: list[str]  # Swin tensors of our backbone the checkpoint does not hold: left at their random init
    unexpected: list[str]  # checkpoint tensors with no place in our backbone (timm names)
    dropped: list[str]  # timm's head and final norm (timm names)
    fusion: list[str]  # the language fusions and the point prompt: not in a Swin checkpoint, left at init (closed)
    resampled: list[str]  # patch embedding resampled by timm to our patch size

    def __str__(self) -> str:
        def names(keys: list[str]) -> str:
            return f": {', '.join(keys)}" if keys else ""

        rows = [
            f"backbone weights from {self.source}",
            f"  loaded      {len(self.loaded):5d}",
            f"  missing     {len(self.missing):5d}{names(self.missing)}",
            f"  unexpected  {len(self.unexpected):5d}{names(self.unexpected)}",
            f"  dropped     {len(self.dropped):5d} (classifier head and final norm){names(self.dropped)}",
            f"  not in Swin {len(self.fusion):5d} (language fusion and point prompt, left at init)",
        ]
        if self.resampled:
            rows.append(f"  resampled to this patch size: {', '.join(self.resampled)}")
        return "\n".join(rows)


def read_state_dict(path: Path) -> dict:
    """A checkpoint file's contents: safetensors, or anything else through torch.load(weights_only=True)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: backbone weights file not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as e:
        raise CheckpointError(f"{path}: not a torch weights file that loads with weights_only=True ({e})") from e


def swin_structure(state: dict[str, torch.Tensor]) -> list[dict[str, int]]:
    """Per stage of a timm SwinV2 state dict: blocks, width, heads and MLP hidden width (from its first block)."""
    blocks: dict[int, int] = {}
    for key in state:
        if match := BLOCK_KEY.match(key):
            stage, block = map(int, match.groups())
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    stages = []
    for i in range(max(blocks, default=-1) + 1):
        first = f"layers.{i}.blocks.0."
        stages.append({"blocks": blocks.get(i, 0), "width": state[first + "norm1.weight"].shape[0],
                       "heads": state[first + "attn.logit_scale"].shape[0],
                       "mlp": state[first + "mlp.fc1.weight"].shape[0]})
    return stages


def structure_mismatches(stages: list[dict[str, int]], cfg: ModelConfig) -> list[str]:
    """Where a checkpoint's stages differ from the config's, in words naming both numbers."""
    if len(stages) != len(cfg.depths):
        return [f"the checkpoint has {len(stages)} stages, config depths {cfg.depths} has {len(cfg.depths)}"]
    problems = []
    for i, (stage, dim) in enumerate(zip(stages, stage_dims(cfg))):
        if stage["blocks"] != cfg.depths[i]:
            problems.append(f"stage {i} has {stage['blocks']} blocks in the checkpoint, config depths[{i}]="
                            f"{cfg.depths[i]}")
        if stage["width"] != dim:
            problems.append(f"stage {i} is {stage['width']} channels wide in the checkpoint, config gives {dim} "
                            f"(embed_dim={cfg.embed_dim} * 2**{i})")
        if stage["heads"] != cfg.num_heads[i]:
            problems.append(f"stage {i} has {stage['heads']} attention heads in the checkpoint, config "
                            f"num_heads[{i}]={cfg.num_heads[i]}")
        if stage["width"] == dim and stage["mlp"] != int(dim * cfg.mlp_ratio):
            problems.append(f"stage {i} has an MLP {stage['mlp']} wide in the checkpoint, config mlp_ratio="
                            f"{cfg.mlp_ratio} gives {int(dim * cfg.mlp_ratio)}")
    return problems


def load_backbone_weights(model: SAHM, path: str | Path) -> BackboneLoad:
    """Load a timm SwinV2 checkpoint (.safetensors, or .pth / .pt / .bin read with weights_only=True; a raw state
    dict or one under "model" / "state_dict") into `model.backbone`, in place. The language fusions keep their
    initialisation, so the backbone's visual stream is the checkpoint's Swin V2 until the gates open.

    Raises CheckpointError for a file that is not a SwinV2 state dict or whose stage depths, widths, heads or MLP
    widths differ from model.config, naming each difference."""
    path = Path(path)
    raw = read_state_dict(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: holds a {type(raw).__name__}, not a state dict")
    backbone = model.backbone
    patch_shape = backbone.patch_embed.proj.weight.shape
    state = checkpoint_filter_fn(raw, backbone)  # reads backbone.patch_embed only; logs any resampling
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: not a state dict of tensors ({', '.join(not_tensors[:5])} are not tensors)")
    if not any(BLOCK_KEY.match(k) for k in state):
        raise CheckpointError(f"{path}: not a timm Swin checkpoint (no layers.<i>.blocks.<j>.* tensors)")
    if not any(k.endswith("attn.logit_scale") for k in state):
        raise CheckpointError(f"{path}: a Swin V1 checkpoint (no cosine-attention logit_scale / cpb_mlp); "
                              "SAHM's backbone is Swin V2")
    problems = structure_mismatches(swin_structure(state), model.config)
    if problems:
        raise CheckpointError(f"{path}: the SwinV2 checkpoint does not fit model config {model.config.name!r}: "
                              + "; ".join(problems))

    ours = backbone.state_dict()
    mapped, unexpected, dropped = {}, [], []
    for key, value in state.items():
        if key.startswith(UNUSED_PREFIXES):
            dropped.append(key)
            continue
        name = re.sub(r"^layers\.", "stages.", key)
        if name not in ours:
            unexpected.append(key)
        elif value.shape != ours[name].shape:
            raise CheckpointError(f"{path}: {key} is {tuple(value.shape)} in the checkpoint, "
                                  f"backbone.{name} is {tuple(ours[name].shape)}")
        else:
            mapped[name] = value
    backbone.load_state_dict(mapped, strict=False)
    resampled = ["patch_embed.proj.weight"] if raw_shape(raw, "patch_embed.proj.weight") != patch_shape else []
    return BackboneLoad(
        source=path,
        loaded=[f"backbone.{k}" for k in mapped],
        missing=[f"backbone.{k}" for k in ours if k not in mapped and not k.startswith(NOT_SWIN)],
        unexpected=unexpected,
        dropped=dropped,
        fusion=[f"backbone.{k}" for k in ours if k.startswith(NOT_SWIN)],
        resampled=resampled,
    )


def raw_shape(raw: dict, key: str) -> torch.Size | None:
    """A tensor's shape in an unfiltered checkpoint, looking under "model", then "state_dict", as timm does."""
    state = raw.get("model", raw)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    value = state.get(key) if isinstance(state, dict) else None
    return value.shape if isinstance(value, torch.Tensor) else None
