"""Point prompt: a click inside the object, the other way to name it (issue 20). Not in the SAHM paper.

A click (x, y) is drawn as Gaussian bumps of a few widths and added, through projections that start at zero, in two
places: to the patch embedding, so every Swin stage groups the pixels that belong with the clicked one (the
interactive-segmentation way of feeding clicks to a backbone), and to every stage's multimodal map P_i, so the
decoder and the presence head see the place directly. The text of a click is a fixed word (sahm_core.click.CLICK_TEXT);
the point says which object it means.

The point is an input of the per-frame graph, (B,3) = (x, y, on): x and y in [0,1] across the model image, `on` 1 for
a click and 0 for a spoken command. `on` = 0 draws no bump, so a spoken command runs exactly the network trained
before the prompt existed; and projections without bias keep it so at any weights.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig


def no_point(batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The point input of a spoken command: (B,3) zeros, `on` = 0."""
    return torch.zeros(batch, 3, device=device)


def point_maps(point: torch.Tensor, side: int, sigmas: tuple[float, ...]) -> torch.Tensor:
    """point (B,3) -> bumps (B,side,side,len(sigmas)) channel-last: exp(-d^2 / 2 sigma^2) * on, where d is the
    distance from each cell's centre to (x, y) in fractions of the image side."""
    centres = (torch.arange(side, device=point.device, dtype=point.dtype) + 0.5) / side  # (side,)
    dx = centres.view(1, 1, side) - point[:, 0].view(-1, 1, 1)  # (B,1,side)
    dy = centres.view(1, side, 1) - point[:, 1].view(-1, 1, 1)  # (B,side,1)
    squared = (dx * dx + dy * dy).unsqueeze(-1)  # (B,side,side,1)
    widths = torch.tensor(sigmas, device=point.device, dtype=point.dtype)  # (K,)
    return torch.exp(-squared / (2 * widths * widths)) * point[:, 2].view(-1, 1, 1, 1)


class PointPrompt(nn.Module):
    """Embeds a click for the patch embedding (C_0 channels) and for every stage's P_i (C_i channels)."""

    def __init__(self, cfg: ModelConfig, dims: list[int], sizes: list[int]):
        super().__init__()
        self.sigmas = tuple(cfg.point_sigmas)
        self.sizes = sizes
        widths = len(self.sigmas)
        self.patch = nn.Linear(widths, dims[0], bias=False)
        self.stages = nn.ModuleList(nn.Linear(widths, dim, bias=False) for dim in dims)
        for layer in (self.patch, *self.stages):
            nn.init.zeros_(layer.weight)

    def at_patches(self, point: torch.Tensor) -> torch.Tensor:
        """(B,3) -> (B,S/p,S/p,C_0), added to the channel-last patch embedding."""
        return self.patch(point_maps(point, self.sizes[0], self.sigmas))

    def at_stage(self, point: torch.Tensor, index: int) -> torch.Tensor:
        """(B,3) -> (B,h_i,w_i,C_i) channel-last, added to stage `index`'s multimodal map P_i."""
        return self.stages[index](point_maps(point, self.sizes[index], self.sigmas))
