"""Hybrid-mapping decoder (SAHM paper 4.2): per scale, a segmentation map S_i and an inpainting map I_i.

Bottleneck (coarsest scale): S from Swin V2 blocks, I from residual blocks.
Every finer scale: S_i by aligned segmentation mapping, I_i by attention-based
filling inside the hole that S_i's own mask head predicts, or inside a hole given from outside (a mask another
node found, or the union of several targets' masks: `SAHM.fill`). Each scale emits mask
logits (1x1 conv on S_i) and RGB logits (1x1 conv on I_i, eq. 12's h2) for deep
supervision. The RGB logits are a residual over the pull-push background prior (see
`pull_push.py`); their heads start at zero, so an untrained decoder fills with the prior.
A last head lifts the finest map (S/patch) to full resolution with pixel_shuffle and
the input image as a skip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.swin_transformer_v2 import SwinTransformerV2Stage
from torch import nn

from ..config import ModelConfig
from .alignment import AlignedSegmentationMapping
from .backbone import stage_dims, stage_sizes
from .filling import FillingMapping, fill_patches
from .layers import ConvNormAct, ResidualBlock, zero_conv

ScaleOutput = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # S_i, I_i, mask logits, RGB logits


class Bottleneck(nn.Module):
    """Coarsest scale: Y = (S, I) from the last multimodal map P (paper: two Swin blocks, four residual blocks)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim, size = cfg.decoder_dim, stage_sizes(cfg)[-1]
        self.reduce = nn.Conv2d(stage_dims(cfg)[-1], dim, 1)
        self.seg_blocks = SwinTransformerV2Stage(
            dim=dim,
            out_dim=dim,
            input_resolution=(size, size),
            depth=cfg.bottleneck_swin_blocks,
            num_heads=cfg.decoder_heads,
            window_size=cfg.window_size,
            mlp_ratio=cfg.mlp_ratio,
        )
        self.inpaint_blocks = nn.Sequential(*(ResidualBlock(dim) for _ in range(cfg.bottleneck_res_blocks)))
        self.mask_head = nn.Conv2d(dim, 1, 1)
        self.rgb_head = zero_conv(dim, 3)

    def forward(self, top: torch.Tensor) -> ScaleOutput:
        """P_last (B,C_last,h,w) -> S, I (B,D,h,w), mask logits (B,1,h,w), RGB logits (B,3,h,w)"""
        reduced = self.reduce(top)  # (B,D,h,w)
        seg = self.seg_blocks(reduced.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # Swin runs channel-last (B,h,w,D)
        inpaint = self.inpaint_blocks(reduced)
        return seg, inpaint, self.mask_head(seg), self.rgb_head(inpaint)


class HybridMapping(nn.Module):
    """One decoder scale: S_i = align(V_i, S_{i+1}); I_i = fill(S_i, I_{i+1}, hole of S_i's mask or a given one)."""

    def __init__(self, skip_dim: int, fill_patch: int, cfg: ModelConfig):
        super().__init__()
        self.align = AlignedSegmentationMapping(skip_dim, cfg.decoder_dim)
        self.fill = FillingMapping(cfg, fill_patch)
        self.mask_head = nn.Conv2d(cfg.decoder_dim, 1, 1)
        self.rgb_head = zero_conv(cfg.decoder_dim, 3)

    def forward(self, skip: torch.Tensor, seg: torch.Tensor, inpaint: torch.Tensor,
                hole: torch.Tensor | None = None) -> ScaleOutput:
        """skip P_i (B,C_i,H,W), S_{i+1}, I_{i+1} (B,D,H/2,W/2), optional hole (B,1,H,W) 0/1
        -> S_i, I_i (B,D,H,W), mask (B,1,H,W), RGB (B,3,H,W)"""
        seg = self.align(skip, seg)
        mask_logits = self.mask_head(seg)
        if hole is None:  # an argument, not a tensor value: each call's graph is static
            hole = mask_logits > 0  # probability > 0.5; a hard hole keeps the object out
        inpaint = self.fill(seg, inpaint, hole)
        return seg, inpaint, mask_logits, self.rgb_head(inpaint)


class FullResolutionHead(nn.Module):
    """S/patch -> S: pixel_shuffle the finest maps, refine with the image, add to the upsampled finest logits."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.factor = cfg.patch_size
        self.expand = nn.Conv2d(2 * cfg.decoder_dim, cfg.head_dim * cfg.patch_size**2, 1)
        self.refine = ConvNormAct(cfg.head_dim + 3, cfg.head_dim)
        self.mask_head = nn.Conv2d(cfg.head_dim, 1, 1)
        self.rgb_head = zero_conv(cfg.head_dim, 3)

    def forward(
        self, seg: torch.Tensor, inpaint: torch.Tensor, image: torch.Tensor, mask_logits: torch.Tensor,
        rgb_logits: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """S_1, I_1 (B,D,h,w), normalised image (B,3,S,S), logits (B,1|3,h,w) -> mask (B,1,S,S), RGB (B,3,S,S) logits"""
        features = F.pixel_shuffle(self.expand(torch.cat([seg, inpaint], dim=1)), self.factor)  # (B,head_dim,S,S)
        hidden = self.refine(torch.cat([features, image], dim=1))  # (B,head_dim,S,S)
        mask_logits = F.interpolate(mask_logits, scale_factor=float(self.factor), mode="bilinear", align_corners=False)
        rgb_logits = F.interpolate(rgb_logits, scale_factor=float(self.factor), mode="bilinear", align_corners=False)
        return mask_logits + self.mask_head(hidden), rgb_logits + self.rgb_head(hidden)


class HybridMappingDecoder(nn.Module):
    """Multimodal maps P_i -> per-scale mask and RGB logits, coarse -> fine, the last at full resolution."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.bottleneck = Bottleneck(cfg)
        skips = zip(reversed(stage_dims(cfg)[:-1]), reversed(fill_patches(cfg)))  # coarse -> fine
        self.mappings = nn.ModuleList(HybridMapping(dim, patch, cfg) for dim, patch in skips)
        self.full_resolution = FullResolutionHead(cfg)

    def forward(self, maps: list[torch.Tensor], image: torch.Tensor,
                hole: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """maps fine -> coarse, normalised image (B,3,S,S), optional hole (B,1,S,S) 0/1 that every scale fills
        instead of its own mask's -> mask logits [(B,1,h,w)], RGB logits [(B,3,h,w)]"""
        seg, inpaint, mask_logits, rgb_logits = self.bottleneck(maps[-1])
        masks, rgbs = [mask_logits], [rgb_logits]
        for skip, mapping in zip(reversed(maps[:-1]), self.mappings):
            # a scale's patch touches the hole when any of its pixels does
            scale_hole = None if hole is None else F.max_pool2d(hole, hole.shape[-1] // skip.shape[-1])
            seg, inpaint, mask_logits, rgb_logits = mapping(skip, seg, inpaint, scale_hole)
            masks.append(mask_logits)
            rgbs.append(rgb_logits)
        mask_logits, rgb_logits = self.full_resolution(seg, inpaint, image, mask_logits, rgb_logits)
        return masks + [mask_logits], rgbs + [rgb_logits]
