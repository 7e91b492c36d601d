"""Aligned segmentation mapping (SAHM paper 4.2.1, eq. 6-7; FaPN feature alignment).

S~_{i+1} (the coarser segmentation map upsampled x2) is misaligned with the
skip map V~_i. A 3x3 deformable convolution whose offsets are predicted from
concat(V~_i, S~_{i+1}) resamples S~_{i+1} onto V~_i before the two are added.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import DeformConv2d

from .layers import ConvNormAct

KERNEL = 3  # the paper's deformable kernel


class AlignedSegmentationMapping(nn.Module):
    """S_i = refine(DeformConv(S~_{i+1}, f1(concat(V~_i, S~_{i+1}))) + V~_i)."""

    def __init__(self, skip_dim: int, dim: int):
        super().__init__()
        self.reduce = nn.Conv2d(skip_dim, dim, 1)  # V_i -> V~_i
        self.offsets = nn.Conv2d(2 * dim, 2 * KERNEL * KERNEL, KERNEL, padding=KERNEL // 2)  # f1
        self.align = DeformConv2d(dim, dim, KERNEL, padding=KERNEL // 2)  # f2
        self.refine = ConvNormAct(dim, dim)  # FPN's output convolution after the merge
        # zero offsets: the deformable conv starts as a plain 3x3 conv and learns where to look
        nn.init.zeros_(self.offsets.weight)
        nn.init.zeros_(self.offsets.bias)

    def forward(self, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """skip V_i (B,C_i,H,W), coarse S_{i+1} (B,D,H/2,W/2) -> S_i (B,D,H,W)"""
        reduced = self.reduce(skip)  # V~_i (B,D,H,W)
        upsampled = F.interpolate(coarse, scale_factor=2.0, mode="bilinear", align_corners=False)  # S~_{i+1}
        offsets = self.offsets(torch.cat([reduced, upsampled], dim=1))  # Delta_i (B,2*3*3,H,W)
        return self.refine(self.align(upsampled, offsets) + reduced)
