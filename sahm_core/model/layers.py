"""Small convolution blocks shared by the decoder parts."""

from __future__ import annotations

import torch
from torch import nn


class ConvNormAct(nn.Sequential):
    """k x k convolution (optionally dilated, size-preserving) -> BatchNorm -> ReLU.

    BatchNorm folds into the convolution at export and ReLU is the cheapest activation,
    which matters for the CPU frame rate of the small configs.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel: int = 3, dilation: int = 1):
        super().__init__(
            nn.Conv2d(in_dim, out_dim, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_dim),
            nn.ReLU(inplace=True),
        )


def zero_conv(in_dim: int, out_dim: int) -> nn.Conv2d:
    """A 1x1 convolution whose output starts at zero: a residual head that begins as the identity of what it refines."""
    conv = nn.Conv2d(in_dim, out_dim, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ResidualBlock(nn.Module):
    """x + conv(act(norm(conv(x)))): the inpainting bottleneck's unit."""

    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Sequential(ConvNormAct(dim, dim), nn.Conv2d(dim, dim, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
