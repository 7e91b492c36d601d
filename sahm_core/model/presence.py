"""Presence logit: is the referred object in the frame at all? Not in the SAHM paper.

A command can name an object the frame does not hold ("the purple star" beside a red one). Saying so
pixel by pixel needs every pixel of every look-alike to say no; one logit z read from the whole
language-fused top map can say it once. Every scale's mask logits get log sigmoid(z) added, i.e. each
pixel's odds are multiplied by P(present): no effect while the head is sure the object is there; a faint
pixel fades as soon as the head doubts, a confident one (odds e^5) only when the head is as sure it is
not. The training loss can supervise z directly (`losses.presence_loss`, against "the ground-truth mask
is not empty"), and the per-frame graph keeps its outputs: the found rule simply sees an empty mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INITIAL_LOGIT = 4.0  # P(present) = 0.98 at the start: log sigmoid(4) = -0.018, almost no shift


class PresenceHead(nn.Module):
    """P_last (B,C,h,w) -> presence logit z (B,1,1,1); starts at INITIAL_LOGIT for every frame."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(2 * dim)
        self.proj = nn.Linear(2 * dim, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.constant_(self.proj.bias, INITIAL_LOGIT)

    def forward(self, top: torch.Tensor) -> torch.Tensor:
        # mean: how much of the map matches; max: whether any one place matches strongly
        pooled = torch.cat([top.mean(dim=(2, 3)), top.amax(dim=(2, 3))], dim=1)  # (B,2C)
        return self.proj(self.norm(pooled)).view(-1, 1, 1, 1)  # (B,1) -> (B,1,1,1)


def gate_mask(mask_logits: torch.Tensor, presence_logit: torch.Tensor) -> torch.Tensor:
    """mask logits (B,1,h,w) + log P(present) (B,1,1,1) -> (B,1,h,w)"""
    return mask_logits + F.logsigmoid(presence_logit)
