"""PatchGAN discriminator (Isola et al.): one real/fake logit per overlapping image patch."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig


class PatchDiscriminator(nn.Module):
    """image (B,3,S,S) in [0,1] -> (B,1,S/2**layers - 1,S/2**layers - 1) logits: strided 4x4 convs, then a stride-1
    4x4 to one channel."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        widths = [3] + [cfg.disc_dim * 2**i for i in range(cfg.disc_layers)]
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Conv2d(in_dim, out_dim, 4, stride=2, padding=1, bias=i == 0))
            if i > 0:  # no normalisation on the first layer (pix2pix)
                layers.append(nn.GroupNorm(1, out_dim))
            layers.append(nn.LeakyReLU(0.2))
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image * 2.0 - 1.0)
