"""Attention-based filling mapping (SAHM paper 4.2.2, eq. 8-10; PEN-Net attention transfer).

Patches inside the predicted hole are matched against patches outside it by
cosine similarity on the coarser inpainting map I_{i+1}; the hole is filled
with the finer map's outside patches weighted by that attention. Patches do not
overlap, so extraction is pixel_unshuffle and pasting back is pixel_shuffle:
two reshapes and a matmul, which export to ONNX and TensorRT as-is.
Hybrid dilated convolutions then refine the filled map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .attention import masked_softmax
from .backbone import stage_sizes
from .layers import ConvNormAct
from .numerics import l2_normalize


def fill_patches(cfg: ModelConfig) -> list[int]:
    """Patch side of the attention filling at every decoder scale, fine -> coarse (the sides stage_sizes[:-1]).

    fill_patch everywhere, or with `fill_fixed_grid` fill_patch at the coarsest scale and doubled per finer scale,
    so that every scale has the coarsest one's (side / fill_patch)^2 patches.
    """
    scales = len(stage_sizes(cfg)) - 1
    if not cfg.fill_fixed_grid:
        return [cfg.fill_patch] * scales
    return [cfg.fill_patch * 2 ** (scales - 1 - i) for i in range(scales)]


def attention_transfer(coarse: torch.Tensor, fine: torch.Tensor, hole: torch.Tensor, patch: int,
                       scale: float) -> torch.Tensor:
    """Fill the hole of `fine` from its outside patches, matched on `coarse`.

    coarse (B,D,H/2,W/2) I_{i+1}; fine (B,D,H,W) the map being filled; hole (B,1,H,W) 0/1.
    Patches are patch x patch on `fine` and patch/2 x patch/2 on `coarse`. Only
    patches entirely outside the hole are copied from; the hole's pixels get their
    patch's attention-weighted mix of those, every other pixel is returned unchanged.
    A frame whose patches all touch the hole has nothing to copy from and gets zeros there.
    """
    batch, dim, height, width = fine.shape
    rows, cols = height // patch, width // patch
    keys = F.pixel_unshuffle(coarse, patch // 2).flatten(2).transpose(1, 2)  # (B,N,D*(p/2)^2), N=rows*cols
    keys = l2_normalize(keys)
    values = F.pixel_unshuffle(fine, patch).flatten(2).transpose(1, 2)  # (B,N,D*p^2)
    patch_hole = F.max_pool2d(hole, patch)  # (B,1,rows,cols) 1 where the patch touches the hole
    outside = 1.0 - patch_hole.flatten(2)  # (B,1,N) the only patches a hole may copy from
    attention = masked_softmax(scale * keys @ keys.transpose(1, 2), outside)  # (B,N,N) eq. 9
    filled = (attention @ values).transpose(1, 2).reshape(batch, dim * patch * patch, rows, cols)  # eq. 10
    filled = F.pixel_shuffle(filled, patch)  # (B,D,H,W)
    return fine * (1.0 - hole) + filled * hole


class HybridDilatedConv(nn.Module):
    """Residual 3x3 convolutions with growing dilation (HDC, rates e.g. 1, 2, 5) to mix scales after filling."""

    def __init__(self, dim: int, rates: tuple[int, ...]):
        super().__init__()
        self.convs = nn.ModuleList(ConvNormAct(dim, dim, dilation=rate) for rate in rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = x + conv(x)
        return x


class FillingMapping(nn.Module):
    """I_i = HDC(fill(merge(S_i, up(I_{i+1})), hole from this scale's mask logits)), with `patch` x `patch` patches
    (one of fill_patches(cfg))."""

    def __init__(self, cfg: ModelConfig, patch: int):
        super().__init__()
        dim = cfg.decoder_dim
        self.merge = ConvNormAct(2 * dim, dim, kernel=cfg.merge_kernel)
        self.hdc = HybridDilatedConv(dim, cfg.hdc_rates)
        self.patch = patch
        self.scale = cfg.fill_softmax_scale

    def forward(self, seg: torch.Tensor, coarse: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """seg S_i (B,D,H,W), coarse I_{i+1} (B,D,H/2,W/2), hole (B,1,H,W) 0/1 -> I_i (B,D,H,W)"""
        upsampled = F.interpolate(coarse, scale_factor=2.0, mode="bilinear", align_corners=False)  # (B,D,H,W)
        fine = self.merge(torch.cat([seg, upsampled], dim=1))
        return self.hdc(attention_transfer(coarse, fine, hole.to(fine.dtype), self.patch, self.scale))
