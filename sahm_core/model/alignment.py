"""Aligned segmentation mapping (SAHM paper 4.2.1, eq. 6-7; FaPN feature alignment).

S~_{i+1} (the coarser segmentation map upsampled x2) is misaligned with the
skip map V~_i. A 3x3 deformable convolution whose offsets are predicted from
concat(V~_i, S~_{i+1}) resamples S~_{i+1} onto V~_i before the two are added.

The deformable convolution is written as one bilinear `grid_sample` of all K*K taps followed by a 1x1
convolution over (channel, tap). It equals torchvision's `deform_conv2d` (tested against it), trains
about ten times faster on CPU, runs in any autocast dtype, and exports as ONNX GridSample + Conv, which
ONNX Runtime and TensorRT both run natively.

The sampling positions and the bilinear sampling are float32 whatever the autocast dtype: bf16 has 8
significant bits, so `column + offset` would round to half a pixel past column 64 (the tiny config's
maps are 120 wide) and every tap would read the wrong place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvNormAct

KERNEL = 3  # the paper's deformable kernel


class DeformableConv2d(nn.Module):
    """Stride-1, size-preserving K x K deformable convolution (DCNv1; one offset group).

    Parameters are named and shaped as torchvision's DeformConv2d (weight (O,C,K,K), bias (O,)), and
    offsets use its layout: (B, 2*K*K, H, W) holding (dy, dx) per tap, taps in row-major order.
    Samples outside the map read zero, as in torchvision.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(out_dim))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Conv2d's default initialisation
        bound = 1 / (in_dim * kernel * kernel) ** 0.5
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """x (B,C,H,W), offsets (B,2*K*K,H,W) -> (B,O,H,W)"""
        b, c, h, w = x.shape
        taps = self.kernel * self.kernel
        precise = torch.promote_types(x.dtype, torch.float32)  # bf16 / fp16 -> fp32; fp32 and fp64 stay
        grid = self.sampling_grid(offsets.to(precise).view(b, taps, 2, h, w), h, w)  # (B,K*K,H,W,2)
        grid = grid.view(b, taps * h, w, 2)
        sampled = F.grid_sample(x.to(precise), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # (B,C,K*K*H,W) -> (B,C*K*K,H,W): channel index c*K*K + tap, as in weight.view(O, C*K*K)
        sampled = sampled.to(x.dtype).view(b, c * taps, h, w)
        return F.conv2d(sampled, self.weight.view(self.weight.shape[0], c * taps, 1, 1), self.bias)

    def sampling_grid(self, offsets: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """offsets (B,K*K,2,H,W) in pixels -> grid_sample coordinates (B,K*K,H,W,2) as (x, y) in [-1, 1],
        computed in the offsets' dtype (float32 or wider: see the module docstring)"""
        k, dtype, device = self.kernel, offsets.dtype, offsets.device
        tap = torch.arange(k, dtype=dtype, device=device) - (k - 1) / 2  # centred kernel positions
        tap_y = tap.repeat_interleave(k).view(1, k * k, 1, 1)  # row-major taps
        tap_x = tap.repeat(k).view(1, k * k, 1, 1)
        rows = torch.arange(h, dtype=dtype, device=device).view(1, 1, h, 1)
        cols = torch.arange(w, dtype=dtype, device=device).view(1, 1, 1, w)
        y = rows + tap_y + offsets[:, :, 0]  # (B,K*K,H,W) sample positions in pixels
        x = cols + tap_x + offsets[:, :, 1]
        # align_corners=False: pixel p's centre is at (2p + 1) / size - 1
        return torch.stack([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1)


class AlignedSegmentationMapping(nn.Module):
    """S_i = refine(DeformConv(S~_{i+1}, f1(concat(V~_i, S~_{i+1}))) + V~_i)."""

    def __init__(self, skip_dim: int, dim: int):
        super().__init__()
        self.reduce = nn.Conv2d(skip_dim, dim, 1)  # V_i -> V~_i
        self.offsets = nn.Conv2d(2 * dim, 2 * KERNEL * KERNEL, KERNEL, padding=KERNEL // 2)  # f1
        self.align = DeformableConv2d(dim, dim, KERNEL)  # f2
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
