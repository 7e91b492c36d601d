"""Model weights on disk: safetensors with the ModelConfig stored in its metadata.

One file carries everything needed to rebuild the network, so nothing is
inferred from file names. Optimiser / scheduler state lives in a separate
`.pt` file loaded with `torch.load(weights_only=True)` (see train.py).
`load_model` is the one way from a weights file to a SAHM (runtime, export, eval, gpu-check);
`load_into` fills a module that already exists (a resumed training run).

ModelConfig.text_encoder in a file (weights, ONNX metadata, TensorRT sidecar) is a name ("minilm"), an absolute
path, or a path relative to that file's directory: a run that trains its encoder stores "text_encoder" beside its
model.safetensors, so the encoder travels with the weights. `config_from_json` (every reader) resolves it to an
absolute path and `config_json` (every writer) stores a path inside the file's directory relative to it; in memory
a path is absolute, or relative to the working directory (a config from code or the command line).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from .config import ModelConfig
from .text import ENCODERS

if TYPE_CHECKING:
    from .model import SAHM

CONFIG_KEY = "sahm_model_config"
FORMAT_KEY = "sahm_format"
FORMAT = "sahm-weights-v1"
WEIGHTS_FILE = "model.safetensors"  # the weights inside a model directory or a training run directory
POINT_PROMPT_KEYS = "backbone.point."  # SAHM's point prompt (model/point.py), added after the first weights shipped


class CheckpointError(RuntimeError):
    """A model file that is missing, corrupt, or does not match the expected config."""


def resolve_text_encoder(cfg: ModelConfig, base: str | Path) -> ModelConfig:
    """cfg with its text_encoder, when a path, made absolute: a relative path is relative to `base` (the directory of
    the file the config came from; the working directory for one from code or the command line). A name stays."""
    if cfg.text_encoder in ENCODERS:
        return cfg
    return dataclasses.replace(cfg, text_encoder=os.path.abspath(os.path.join(base, cfg.text_encoder)))


def config_json(cfg: ModelConfig, where: str | Path) -> str:
    """cfg as the JSON stored in the file `where`: a text encoder inside where's directory (a run's or a model
    directory's own) is stored relative to it, so the directory can move as a whole; one elsewhere stays absolute."""
    cfg = resolve_text_encoder(cfg, os.getcwd())
    if cfg.text_encoder not in ENCODERS:
        folder = Path(os.path.abspath(Path(where).parent))
        encoder = Path(cfg.text_encoder)
        if encoder.is_relative_to(folder):
            cfg = dataclasses.replace(cfg, text_encoder=encoder.relative_to(folder).as_posix())
    return cfg.to_json()


def config_from_json(text: str, where: str | Path) -> ModelConfig:
    """The ModelConfig stored as JSON in the file `where`, its text encoder resolved against where's directory."""
    try:
        cfg = ModelConfig.from_json(text)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{where}: stored model config is missing or invalid ({e})") from e
    return resolve_text_encoder(cfg, Path(where).parent)


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], cfg: ModelConfig,
                 extra: dict[str, str] | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {FORMAT_KEY: FORMAT, CONFIG_KEY: config_json(cfg, path), **(extra or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)  # never leave a half-written weights file under the real name


def weights_file(path: str | Path) -> Path:
    """A weights file as given, or the WEIGHTS_FILE inside a model / run directory."""
    path = Path(path)
    return path / WEIGHTS_FILE if path.is_dir() else path


def read_metadata(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if meta.get(FORMAT_KEY) != FORMAT or CONFIG_KEY not in meta:
        raise CheckpointError(f"{path}: safetensors file has no SAHM config in its metadata (not a SAHM checkpoint)")
    return meta


def read_config(path: str | Path) -> ModelConfig:
    return config_from_json(read_metadata(path)[CONFIG_KEY], path)


def load_weights(path: str | Path, expect: ModelConfig | None = None) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """State dict and config; `expect` guards against a checkpoint from another config."""
    cfg = read_config(path)
    if expect is not None and cfg != expect:
        raise CheckpointError(f"{path}: checkpoint was made for config {cfg.name!r} ({cfg}), "
                              f"expected {expect.name!r} ({expect})")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors data ({e})") from e
    return state, cfg


def load_state(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """module.load_state_dict(state); weights that do not fit (stale code, wrong file) are a CheckpointError.

    Weights saved before the point prompt existed have none of its projections: they load as zeros, the prompt's
    own start, so the network computes what it did and a click has no effect until a fine-tune teaches it."""
    state = {**{k: torch.zeros_like(v) for k, v in module.state_dict().items() if k.startswith(POINT_PROMPT_KEYS)},
             **state}
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(
            f"{source}: weights do not fit the {type(module).__name__} built from its config ({e})") from None


def has_point_prompt(path: str | Path) -> bool | None:
    """Whether the weights at `path` (a model or run directory, or a .safetensors) were trained with clicks: any
    point-prompt projection not zero. None when there are no such weights to read (an .onnx or .engine file)."""
    path = weights_file(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            return any(f.get_tensor(k).any().item() for k in f.keys() if k.startswith(POINT_PROMPT_KEYS))
    except (SafetensorError, OSError, ValueError):
        return None  # the loader says what is wrong with the file


def load_into(module: nn.Module, path: str | Path, expect: ModelConfig | None = None) -> ModelConfig:
    """Load the weights file `path` into an existing module (e.g. a resumed run's SAHM or discriminator)."""
    state, cfg = load_weights(path, expect=expect)
    load_state(module, state, path)
    return cfg


def load_model(path: str | Path, expect: ModelConfig | None = None, device: str | torch.device = "cpu"
               ) -> tuple["SAHM", ModelConfig]:
    """The SAHM a weights file (or a model / run directory holding WEIGHTS_FILE) describes, with its weights,
    in eval mode on `device`, and its config. `expect` guards against a checkpoint of another config."""
    from .model import build_model  # the network's imports (timm) only where a network is built

    path = weights_file(path)
    state, cfg = load_weights(path, expect=expect)
    model = build_model(cfg)
    load_state(model, state, path)
    return model.to(device).eval(), cfg
