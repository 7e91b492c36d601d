"""`sahm info`: parameters per part and GFLOPs of a model config.

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode on the meta
device (shapes only: instant even for `tiny`, no memory). The deformable
alignment counts as its 1x1 convolution over the sampled taps, i.e. the
multiply-adds of the equivalent 3x3 convolution; the bilinear sampling is not
counted. One multiply-add = 2 FLOPs.
"""

from __future__ import annotations

import argparse
import re

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import MODEL_CONFIGS, ModelConfig, model_config
from .model import PatchDiscriminator, build_model
from .text_features import TextFeatures

# part -> names (relative to SAHM) of the modules that make it up; the first match wins
PARTS: dict[str, str] = {
    "backbone": r"^backbone\.(patch_embed|stages)\b",
    "language fusion": r"^backbone\.fusions\b",
    "heads": r"(^|\.)(mask_head|rgb_head)\b|^decoder\.full_resolution\b|^presence\b",
    "decoder/segmentation": r"^decoder\.(bottleneck\.(reduce|seg_blocks)|mappings\.\d+\.align)\b",
    "decoder/filling": r"^decoder\.(bottleneck\.inpaint_blocks|mappings\.\d+\.fill)\b",
}
GENERATOR = "generator total"
DISCRIMINATOR = "discriminator"


def part_of(name: str) -> str:
    """The part a parameter or module name belongs to; a name no pattern knows is a bug in PARTS."""
    for part, pattern in PARTS.items():
        if re.search(pattern, name):
            return part
    raise KeyError(f"{name!r} belongs to no part of the SAHM parameter table; extend info.PARTS")


def count_parameters(cfg: ModelConfig) -> dict[str, int]:
    """Trainable parameters per part, the generator total (no text encoder) and the discriminator."""
    with torch.device("meta"):
        model, discriminator = build_model(cfg), PatchDiscriminator(cfg)
    counts = dict.fromkeys(PARTS, 0)
    for name, param in model.named_parameters():
        if param.requires_grad:
            counts[part_of(name)] += param.numel()
    counts[GENERATOR] = sum(counts[part] for part in PARTS)
    counts[DISCRIMINATOR] = sum(p.numel() for p in discriminator.parameters() if p.requires_grad)
    return counts


def flops_per_part(per_module: dict[str, int], root: str) -> dict[str, int]:
    """Sum the FLOPs of the outermost called module of each part (its count already includes its children's).

    per_module: FlopCounterMode's module path ("SAHM.decoder.mappings.0.fill") -> FLOPs.
    """
    parts: dict[str, str] = {}
    for path in per_module:
        name = path.removeprefix(root + ".")
        try:
            parts[name] = part_of(name)
        except KeyError:
            continue  # the root or a container spanning several parts (backbone, decoder, mappings.0, ...)
    flops = dict.fromkeys(PARTS, 0)
    for name, part in parts.items():
        ancestors = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        if not any(ancestor in parts for ancestor in ancestors):
            flops[part] += per_module[f"{root}.{name}"]
    return flops


def meta_inputs(cfg: ModelConfig) -> tuple[torch.Tensor, TextFeatures]:
    """Shape-only inputs of batch 1: image (1,3,S,S), text (1,T,C) + three (1,T) masks, on the meta device."""
    with torch.device("meta"):
        image = torch.zeros(1, 3, cfg.image_size, cfg.image_size)
        masks = tuple(torch.zeros(1, cfg.text_len) for _ in range(3))
        return image, TextFeatures(torch.zeros(1, cfg.text_len, cfg.text_dim), *masks)


def call_gflops(fn, *inputs) -> float:
    """GFLOPs of one call fn(*inputs) without gradients; FlopCounterMode counts from shapes, so meta tensors do."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*inputs)
    return counter.get_total_flops() / 1e9


def per_frame_gflops(cfg: ModelConfig) -> float:
    """GFLOPs of SAHM.per_frame (the runtime's per-frame graph; batch 1): forward without the coarse scales' blends."""
    with torch.device("meta"):
        model = build_model(cfg).eval()
    return call_gflops(model.per_frame, *meta_inputs(cfg))


def count_gflops(cfg: ModelConfig) -> dict[str, float]:
    """GFLOPs of one forward pass at the config's resolution (batch 1), per part, total, and discriminator."""
    with torch.device("meta"):
        model, discriminator = build_model(cfg).eval(), PatchDiscriminator(cfg)
    image, text = meta_inputs(cfg)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(image, text)
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    flops = flops_per_part(per_module, type(model).__name__)
    flops[GENERATOR] = counter.get_total_flops()  # also counts the normalisation and blending outside every part
    flops = {part: value / 1e9 for part, value in flops.items()}
    flops[DISCRIMINATOR] = call_gflops(discriminator, image)
    return flops


def format_table(cfg: ModelConfig) -> str:
    params, gflops = count_parameters(cfg), count_gflops(cfg)
    lines = [
        f"config {cfg.name}: {cfg.image_size}x{cfg.image_size}, patch {cfg.patch_size}, window {cfg.window_size}, "
        f"stages {list(cfg.depths)} x {cfg.embed_dim}*2^i, decoder {cfg.decoder_dim}, "
        f"text {cfg.text_len}x{cfg.text_dim} "
        "(text encoder not counted)",
        f"{'part':<22}{'parameters':>14}{'GFLOPs':>10}",
    ]
    for part in (*PARTS, GENERATOR, DISCRIMINATOR):
        lines.append(f"{part:<22}{params[part]:>14,}{gflops[part]:>10.3f}")
    lines.append("GFLOPs: one forward pass, batch 1; "
                 "the deformable alignment counts as the equivalent 3x3 convolution.")
    lines.append(f"per-frame path (SAHM.per_frame, what the runtime runs): {per_frame_gflops(cfg):.3f} GFLOPs")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", nargs="+", choices=sorted(MODEL_CONFIGS), default=list(MODEL_CONFIGS), metavar="NAME",
        help=f"model config(s) to describe (default: all of {', '.join(MODEL_CONFIGS)})",
    )


def main(args: argparse.Namespace) -> int:
    print("\n\n".join(format_table(model_config(name)) for name in args.config))
    return 0
