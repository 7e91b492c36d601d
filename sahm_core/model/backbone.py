"""Swin V2 backbone run stage by stage, with language fused after every stage (LAVT style).

After stage i the syntax-aware attention turns the visual map V_i into the
multimodal map P_i. P_i is what the decoder reads; it also flows back into the
visual stream through a gate that starts at zero, so at initialisation the
backbone is exactly a plain Swin V2 and language is let in as training learns to.
"""

from __future__ import annotations

import torch
from timm.models.swin_transformer_v2 import SwinTransformerV2
from torch import nn

from ..config import ModelConfig
from ..text_features import TextFeatures
from .attention import SyntaxAwareAttention
from .point import PointPrompt


def stage_dims(cfg: ModelConfig) -> list[int]:
    """Channels of every backbone stage: embed_dim * 2**i."""
    return [cfg.embed_dim * 2**i for i in range(len(cfg.depths))]


def stage_sizes(cfg: ModelConfig) -> list[int]:
    """Side of every backbone stage's map: S / patch / 2**i."""
    return [cfg.image_size // cfg.patch_size // 2**i for i in range(len(cfg.depths))]


class LanguageGate(nn.Module):
    """Per-pixel, per-channel gate in (-1, 1); the last layer starts at zero so the gate starts closed."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.Tanh())
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        return self.net(fused)


class LanguageFusion(nn.Module):
    """One stage's fusion: P = syntax-aware attention(V, L); V' = V + gate(P) * P feeds the next stage.

    The last stage feeds no further stage, so it has no gate (it would never get a gradient).
    """

    def __init__(self, dim: int, cfg: ModelConfig, feeds_next_stage: bool):
        super().__init__()
        self.attention = SyntaxAwareAttention(dim, cfg.text_dim, cfg.attention_temperature)
        self.gate = LanguageGate(dim) if feeds_next_stage else None

    def forward(self, visual: torch.Tensor, text: TextFeatures,
                prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """visual (B,H,W,C), the point prompt's share of P (B,H,W,C) -> (next stage input (B,H,W,C), multimodal
        map P (B,C,H,W))"""
        batch, height, width, dim = visual.shape
        tokens = visual.reshape(batch, height * width, dim)  # (B,N,C)
        fused = self.attention(tokens, text).reshape(batch, height, width, dim) + prompt  # (B,H,W,C)
        if self.gate is not None:  # structure, fixed at build time; not a branch on tensor values
            visual = visual + self.gate(fused) * fused
        return visual, fused.permute(0, 3, 1, 2)


class SwinBackbone(nn.Module):
    """timm SwinTransformerV2's patch embedding and stages, with a LanguageFusion after each stage."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        swin = SwinTransformerV2(
            img_size=cfg.image_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.embed_dim,
            depths=cfg.depths,
            num_heads=cfg.num_heads,
            window_size=cfg.window_size,
            mlp_ratio=cfg.mlp_ratio,
            num_classes=0,
            drop_path_rate=0.0,
        )
        # only the embedding and the stages are used; the classifier norm/head would never get a gradient
        # fp16: timm's cosine attention calls F.normalize(q) with eps 1e-12, which is 0 in fp16. CUDA autocast
        # runs norm and normalize in fp32, so training is safe; an fp16 engine gets NaN only if a head's q or k
        # has every component flush to zero (norm < 0.044 over 32 channels). The bundled nano's smallest such
        # norm is 0.85 and its largest sum of squares 1,024 (fp16 overflows at 65,504), on random, black, white
        # and grey frames with and without attribute words.
        self.patch_embed = swin.patch_embed
        self.stages = swin.layers
        dims = stage_dims(cfg)
        self.fusions = nn.ModuleList(LanguageFusion(dim, cfg, i < len(dims) - 1) for i, dim in enumerate(dims))
        self.point = PointPrompt(cfg, dims, stage_sizes(cfg))

    def forward(self, image: torch.Tensor, text: TextFeatures, point: torch.Tensor) -> list[torch.Tensor]:
        """normalised image (B,3,S,S), point (B,3) -> multimodal maps P_i (B, C*2**i, S/(p*2**i), S/(p*2**i)),
        fine -> coarse"""
        visual = self.patch_embed(image) + self.point.at_patches(point)  # (B,S/p,S/p,C) channel-last
        maps = []
        for index, (stage, fusion) in enumerate(zip(self.stages, self.fusions)):
            visual, fused = fusion(stage(visual), text, self.point.at_stage(point, index))
            maps.append(fused)
        return maps
