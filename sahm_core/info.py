"""`sahm info`: parameters per part and GFLOPs of a model config, next to the paper's figures.

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode on the meta
device (shapes only: instant even for `tiny`, no memory). The deformable
alignment counts as its 1x1 convolution over the sampled taps, i.e. the
multiply-adds of the equivalent 3x3 convolution; the bilinear sampling is not
counted. One multiply-add = 2 FLOPs; GMACs are the multiply-adds.

The paper (Table 1) gives SAHM 42 M parameters and 10.42 G "FLOPs" without a resolution or a convention.
The 42 M include its text encoder, ALBERT base v2 (section 5.1), so the table reports parameters with a text
encoder and without. Swin-T alone is about 23 GMACs at 480x480, so 10.42 G cannot be 480x480 in either
convention; the config is also counted at 224x224 with window 7 (Swin-T's ImageNet geometry), where the
figure can be compared.
"""

from __future__ import annotations

import argparse
import dataclasses
import re

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import MODEL_CONFIGS, ModelConfig, model_config
from .model import PatchDiscriminator, build_model
from .model.filling import fill_patches
from .text_features import TextFeatures

# part -> names (relative to SAHM) of the modules that make it up; the first match wins
PARTS: dict[str, str] = {
    "backbone": r"^backbone\.(patch_embed|stages)\b",
    "language fusion": r"^backbone\.fusions\b",
    "point prompt": r"^backbone\.point\b",
    "heads": r"(^|\.)(mask_head|rgb_head)\b|^decoder\.full_resolution\b|^presence\b",
    "decoder/segmentation": r"^decoder\.(bottleneck\.(reduce|seg_blocks)|mappings\.\d+\.align)\b",
    "decoder/filling": r"^decoder\.(bottleneck\.inpaint_blocks|mappings\.\d+\.fill)\b",
}
GENERATOR = "generator total"
DISCRIMINATOR = "discriminator"
DECODER_PARTS = ("heads", "decoder/segmentation", "decoder/filling")  # the decoder with its heads (and presence)

PAPER_PARAMETERS_M, PAPER_GFLOPS = 42, 10.42  # Table 1, SAHM
PAPER_SIZE, PAPER_WINDOW = 224, 7  # Swin-T's ImageNet geometry
# The paper's text encoder, ALBERT base v2 (section 5.1), from its published shape; the other fields are
# transformers.AlbertConfig's defaults, which base v2 shares (vocabulary 30,000, embeddings 128, 12 shared layers).
ALBERT_BASE_V2 = {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072}


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


def decoder_share(gflops: dict[str, float]) -> float:
    """The decoder's GFLOPs with its heads, as a fraction of the generator's."""
    return sum(gflops[part] for part in DECODER_PARTS) / gflops[GENERATOR]


def at_paper_size(cfg: ModelConfig) -> ModelConfig:
    """cfg at 224x224 with window 7; a ValueError (from the model's own shape rules) where its geometry does not fit."""
    paper = dataclasses.replace(cfg, image_size=PAPER_SIZE, window_size=PAPER_WINDOW)
    with torch.device("meta"):
        build_model(paper)
    return paper


def encoder_parameters(hf_config) -> int:
    """Parameters of the Hugging Face model a transformers config describes (built on the meta device: no weights)."""
    from transformers import AutoModel

    with torch.device("meta"):
        return sum(p.numel() for p in AutoModel.from_config(hf_config).parameters())


def text_encoder_parameters(cfg: ModelConfig) -> dict[str, int | str]:
    """Parameters of the config's text encoder (or why they cannot be counted) and of the paper's ALBERT base v2."""
    from transformers import AlbertConfig, AutoConfig

    from .text import resolve_encoder_dir

    try:
        own: int | str = encoder_parameters(AutoConfig.from_pretrained(str(resolve_encoder_dir(cfg.text_encoder))))
    except (OSError, ValueError) as e:
        own = f"not counted ({e})"
    return {f"{cfg.text_encoder} (this config's)": own,
            "ALBERT base v2 (the paper's)": encoder_parameters(AlbertConfig(**ALBERT_BASE_V2))}


def format_table(cfg: ModelConfig) -> str:
    params, gflops = count_parameters(cfg), count_gflops(cfg)
    lines = [
        f"config {cfg.name}: {cfg.image_size}x{cfg.image_size}, patch {cfg.patch_size}, window {cfg.window_size}, "
        f"stages {list(cfg.depths)} x {cfg.embed_dim}*2^i, decoder {cfg.decoder_dim} "
        f"(fill patches {fill_patches(cfg)}, merge {cfg.merge_kernel}x{cfg.merge_kernel}), "
        f"text {cfg.text_len}x{cfg.text_dim} (text encoder not counted in the table)",
        f"{'part':<22}{'parameters':>14}{'GFLOPs':>10}{'GMACs':>10}",
    ]
    for part in (*PARTS, GENERATOR, DISCRIMINATOR):
        lines.append(f"{part:<22}{params[part]:>14,}{gflops[part]:>10.3f}{gflops[part] / 2:>10.3f}")
    lines.append("GFLOPs: one forward pass, batch 1, 2 FLOPs per multiply-add; "
                 "the deformable alignment counts as the equivalent 3x3 convolution.")
    lines.append(f"decoder with its heads: {sum(gflops[part] for part in DECODER_PARTS):.3f} GFLOPs, "
                 f"{100 * decoder_share(gflops):.1f} % of the generator")
    lines.append(f"per-frame path (SAHM.per_frame, what the runtime runs): {per_frame_gflops(cfg):.3f} GFLOPs")
    try:
        paper_gflops = count_gflops(at_paper_size(cfg))[GENERATOR]
        lines.append(f"at {PAPER_SIZE}x{PAPER_SIZE}, window {PAPER_WINDOW} (Swin-T's geometry): generator "
                     f"{paper_gflops:.3f} GFLOPs = {paper_gflops / 2:.3f} GMACs")
    except ValueError as e:
        lines.append(f"at {PAPER_SIZE}x{PAPER_SIZE}, window {PAPER_WINDOW}: not buildable ({e})")
    lines.append("parameters with a text encoder (it runs once per command, so no GFLOPs per frame):")
    for encoder, count in text_encoder_parameters(cfg).items():
        total = f"{count:>12,} -> {params[GENERATOR] + count:,}" if isinstance(count, int) else count
        lines.append(f"  {encoder:<32}{total}")
    lines.append(f"paper (Table 1): {PAPER_PARAMETERS_M} M parameters with ALBERT base v2, "
                 f"{PAPER_GFLOPS} G 'FLOPs' (resolution and convention not stated)")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", nargs="+", choices=sorted(MODEL_CONFIGS), default=list(MODEL_CONFIGS), metavar="NAME",
        help=f"model config(s) to describe (default: all of {', '.join(MODEL_CONFIGS)})",
    )


def main(args: argparse.Namespace) -> int:
    print("\n\n".join(format_table(model_config(name)) for name in args.config))
    return 0
