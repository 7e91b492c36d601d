"""Numerics that survive reduced precision: bf16 autocast in training, fp16 TensorRT engines at run time.

fp16's smallest normal number is 2**-14 = 6.1e-5, and GPUs and TensorRT may flush anything smaller to zero.
A floor below that on a denominator that can be exactly zero (a softmax over no token, the visible weight of
a frame with nothing visible) then becomes 0 and turns 0/0 into NaN, so every such floor is EPS, a normal
fp16 number. Where the exact denominator is 0 the quotient is 0, with no branch on tensor values, so the
graph exports to ONNX unchanged.
"""

from __future__ import annotations

import torch

# Floor of a denominator that can be zero: the smallest power of ten that fp16 holds as a normal number.
EPS = 1.0e-4


def l2_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """x / max(||x||, EPS) along `dim` (same shape): F.normalize(x, eps=EPS), bit for bit in fp32.

    The sum of squares is taken of x divided by a power of two near its largest |component|, so it lies in
    [1, 4n] for n components: it neither overflows fp16 (65504, an RMS of 9 over 768 channels) nor flushes
    to zero. Dividing by a power of two is exact, which keeps fp32 results identical to F.normalize.
    A zero vector stays zero.
    """
    largest = x.detach().abs().amax(dim=dim, keepdim=True).clamp_min(EPS)
    scale = torch.exp2(torch.floor(torch.log2(largest)))  # a power of two within a factor 2 of largest
    norm = torch.linalg.vector_norm(x / scale, dim=dim, keepdim=True) * scale
    return x / norm.clamp_min(EPS)
