"""Presence logit: is the referred object in the frame at all? Not in the SAHM paper.

A command can name an object the frame does not hold ("the purple star" beside a red one). Saying so
pixel by pixel needs every pixel of every look-alike to say no; one logit read from the whole
language-fused top map can say it once. It is added to every scale's mask logits, so the mask terms
train it (an empty ground-truth mask pushes it down, a present object up) and the per-frame graph keeps
its outputs: when the object is absent the mask fades as a whole and the found rule passes the frame.
"""

from __future__ import annotations

import torch
from torch import nn


class PresenceHead(nn.Module):
    """P_last (B,C,h,w) -> logit shift (B,1,1,1); starts at zero, so adding it changes nothing until trained."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(2 * dim)
        self.proj = nn.Linear(2 * dim, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, top: torch.Tensor) -> torch.Tensor:
        # mean: how much of the map matches; max: whether any one place matches strongly
        pooled = torch.cat([top.mean(dim=(2, 3)), top.amax(dim=(2, 3))], dim=1)  # (B,2C)
        return self.proj(self.norm(pooled)).view(-1, 1, 1, 1)  # (B,1) -> (B,1,1,1)
