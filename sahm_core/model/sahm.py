"""SAHM: Syntax-Aware Hybrid Mapping network (Rethinking Referring Object Removal, arXiv 2403.09128).

One network segments the referred object and inpaints it in the same decoder.
The text encoder is not part of it: the command arrives as TextFeatures.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..text_features import TextFeatures
from .backbone import SwinBackbone, stage_dims, stage_sizes
from .decoder import HybridMappingDecoder
from .point import no_point
from .presence import PresenceHead, gate_mask
from .pull_push import background_prior, grow_mask

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SAHMOutput(NamedTuple):
    """image (B,3,S,S) background RGB in [0,1]; mask_logits (B,1,S,S);
    scale_masks / scale_images: per scale, coarse -> fine, the last == mask_logits / image;
    presence_logit (B,1,1,1): whether the referred object is in the frame at all (already applied to the masks)."""

    image: torch.Tensor
    mask_logits: torch.Tensor
    scale_masks: list[torch.Tensor]
    scale_images: list[torch.Tensor]
    presence_logit: torch.Tensor


def blend(image: torch.Tensor, mask: torch.Tensor, rgb_logits: torch.Tensor, margin: int = 0,
          sweeps: int = 0) -> torch.Tensor:
    """The frame at the scale's size with the predicted fill under the (soft) mask, grown by `margin` px.

    image (B,3,S,S) in [0,1], mask (B,1,h,w) probabilities, rgb_logits (B,3,h,w) -> (B,3,h,w) in [0,1].
    Pixels the model calls background stay the input's, so the network spends its
    capacity on the hole instead of on copying the frame. The fill is sigmoid(logit(prior) + rgb_logits):
    the RGB logits correct the (relaxed, `sweeps`) pull-push interpolation of the visible pixels. The prior
    sees the mask without gradient: the mask is taught by the segmentation terms and the blend, not by moving the prior.
    The margin (a max-pool of the probabilities) also fills the object's rim, which the segmentation leaves out.
    """
    frame = F.avg_pool2d(image, image.shape[-1] // mask.shape[-1])  # (B,3,h,w)
    if margin:
        mask = grow_mask(mask, margin)  # (B,1,h,w)
    prior = background_prior(frame, mask.detach(), sweeps)  # (B,3,h,w) in (0,1)
    fill = torch.sigmoid(torch.log(prior / (1 - prior)) + rgb_logits)
    return frame * (1.0 - mask) + fill * mask


class SAHM(nn.Module):
    """Swin V2 backbone with syntax-aware language fusion per stage -> hybrid-mapping decoder (mask + fill per scale),
    every mask gated by one presence probability read from the top multimodal map."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.backbone = SwinBackbone(cfg)
        self.decoder = HybridMappingDecoder(cfg)
        self.presence = PresenceHead(stage_dims(cfg)[-1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def margin_at(self, side: int) -> int:
        """The removal margin in pixels of a scale `side` px wide: the config's at full resolution, 0 on coarse maps."""
        return self.config.removal_margin * side // self.config.image_size

    def forward(self, image: torch.Tensor, text: TextFeatures, point: torch.Tensor | None = None) -> SAHMOutput:
        """image (B,3,S,S) RGB in [0,1]; text tokens (B,T,C_L), valid/attribute/identity (B,T); point (B,3) a click
        (x, y, on) or None for none (model/point.py).

        Returns SAHMOutput: image (B,3,S,S), mask_logits (B,1,S,S); scale_masks (B,1,h,w) and
        scale_images (B,3,h,w) for h = S/(patch*2**(stages-1)), ..., S/patch, S.
        """
        masks, rgbs, presence = self.predict(image, text, point)
        images = [self.blend_scale(image, mask, rgb) for mask, rgb in zip(masks, rgbs)]
        return SAHMOutput(image=images[-1], mask_logits=masks[-1], scale_masks=masks, scale_images=images,
                          presence_logit=presence)

    def per_frame(self, image: torch.Tensor, text: TextFeatures,
                  point: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-frame path: forward's image (B,3,S,S) and mask_logits (B,1,S,S), without blending the coarse
        scales, which exist for deep supervision (their background priors cost nano 9 of 60 ms on 2 CPU threads)."""
        masks, rgbs, _ = self.predict(image, text, point)
        return self.blend_scale(image, masks[-1], rgbs[-1]), masks[-1]

    def fill(self, image: torch.Tensor, text: TextFeatures, hole: torch.Tensor) -> torch.Tensor:
        """Fill a hole given from outside instead of the referred object's: image (B,3,S,S) in [0,1], hole
        (B,1,S,S) 0/1 -> cleaned (B,3,S,S), the input outside the hole grown by the removal margin.

        Every decoder scale fills the hole (max-pooled to its size) with attention over the patches outside it, as
        it fills its own mask's; the text still guides the backbone, and a command that names what the hole holds
        helps it. Serves a mask another node found and the union of several targets' masks.
        """
        normalised = (image - self.mean) / self.std
        maps = self.backbone(normalised, text, no_point(image.shape[0], image.device))
        _, rgbs = self.decoder(maps, normalised, hole)
        return blend(image, hole, rgbs[-1], self.margin_at(image.shape[-1]), self.config.prior_sweeps)

    def predict(self, image: torch.Tensor, text: TextFeatures,
                point: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Per scale, coarse -> fine: presence-gated mask logits (B,1,h,w) and RGB logits (B,3,h,w);
        presence (B,1,1,1)."""
        normalised = (image - self.mean) / self.std
        if point is None:  # structure: a caller without clicks, not a branch on tensor values
            point = no_point(image.shape[0], image.device)
        maps = self.backbone(normalised, text, point)  # P_i (B, C*2**i, S/(p*2**i), ...)
        masks, rgbs = self.decoder(maps, normalised)
        presence = self.presence(maps[-1])  # (B,1,1,1)
        return [gate_mask(mask, presence) for mask in masks], rgbs, presence

    def blend_scale(self, image: torch.Tensor, mask_logits: torch.Tensor, rgb_logits: torch.Tensor) -> torch.Tensor:
        """`blend` with this scale's removal margin and the config's prior sweeps."""
        return blend(image, torch.sigmoid(mask_logits), rgb_logits, self.margin_at(mask_logits.shape[-1]),
                     self.config.prior_sweeps)


def check_config(cfg: ModelConfig) -> None:
    """Shape rules the network needs, checked up front so a bad config fails with a readable message."""
    sizes = stage_sizes(cfg)
    problems = []
    if cfg.image_size % (cfg.patch_size * 2 ** (len(cfg.depths) - 1)):
        problems.append(f"image_size {cfg.image_size} must be a multiple of patch_size * 2**(stages-1)")
    if any(size == 0 or size % min(cfg.window_size, size) for size in sizes):
        problems.append(f"window_size {cfg.window_size} must divide every stage side {sizes}")
    if len(cfg.num_heads) != len(cfg.depths) or any(d % h for d, h in zip(stage_dims(cfg), cfg.num_heads)):
        problems.append(f"num_heads {cfg.num_heads} needs one entry per stage dividing its width {stage_dims(cfg)}")
    if cfg.decoder_dim % cfg.decoder_heads:
        problems.append(f"decoder_heads {cfg.decoder_heads} must divide decoder_dim {cfg.decoder_dim}")
    if cfg.fill_patch % 2 or any(size % cfg.fill_patch for size in sizes[:-1]):
        problems.append(f"fill_patch {cfg.fill_patch} must be even and divide every decoder side {sizes[:-1]}")
    if cfg.merge_kernel % 2 == 0:
        problems.append(f"merge_kernel {cfg.merge_kernel} must be odd (a size-preserving convolution)")
    if problems:
        raise ValueError(f"model config {cfg.name!r}: " + "; ".join(problems))


def build_model(cfg: ModelConfig) -> SAHM:
    """A randomly initialised SAHM for `cfg` (load weights with sahm_core.checkpoint)."""
    check_config(cfg)
    return SAHM(cfg)
