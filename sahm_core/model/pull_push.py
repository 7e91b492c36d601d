"""Pull-push background prior: a smooth fill of the hole from the visible pixels around it.

Not in the SAHM paper. The paper's decoder predicts each scale's fill from scratch; a small model
trained briefly then learns to find the object long before it learns what lies behind it. Here each
scale's fill is a residual, in logit space, over the pull-push interpolation (Gortler et al., "The
Lumigraph", 1996) of the frame's pixels outside the predicted mask, so an untrained fill head already
fills a hole with the colours around it and training only has to add what interpolation cannot.

Pull: halve the resolution, keeping colour sums S_l = avgpool(S_{l-1}) and known weights
W_l = avgpool(W_{l-1}), with S_0 = image * known, W_0 = known. Push: from the per-image mean colour
back up, fill_l = S_l + (1 - W_l) * up(fill_{l+1}): a level keeps its own (weighted) colour where its
pixels were visible and takes the coarser estimate where they were not. Average pooling, bilinear
upsampling and arithmetic only, so the prior exports to ONNX / TensorRT with the rest of the graph.

Relaxation: plain pull-push is continuous with the visible pixels only as far as bilinear upsampling of
a block average is; across a hole it is flat where the background is a gradient. After each push step,
`sweeps` Jacobi iterations fill_l = S_l + (1 - W_l) * mean4(fill_l) (mean4: the mean of the in-image
4-neighbours, by shifted slices: a depthwise convolution is 5x slower on CPU) move it towards the
harmonic fill (Laplace's equation in the hole, the visible pixels as boundary values), which reproduces
any linear gradient exactly. Each level starts from the coarser level's solution, so a few sweeps per
level do what thousands would at full resolution alone (a multigrid cascade). On 253 synthetic
validation objects, under the ground-truth mask grown by the removal margin, PSNR in the object's
region: pull-push 28.75 dB, 8 sweeps per level 30.73, OpenCV Telea 29.63.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .numerics import EPS

PRIOR_CLAMP = 1e-3  # keeps logit(prior) finite


def neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    """x (B,C,h,w) -> (B,C,h,w): each pixel's sum over its 4-neighbours that lie inside the image."""
    padded = F.pad(x, (1, 1, 1, 1))  # (B,C,h+2,w+2), zeros outside
    return padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:]


def pull_push(image: torch.Tensor, known: torch.Tensor, sweeps: int = 0) -> torch.Tensor:
    """image (B,C,H,W), known (B,1,H,W) in [0,1] (1 = visible) -> fill (B,C,H,W).

    Equals `image` where known == 1. Sizes need not be powers of two: the pyramid stops at the first
    odd side. An image with no visible pixel at all fills with zeros, and one visible over less than EPS of
    its area fades towards zero (the floor is a normal fp16 number, see `numerics`). `sweeps` relaxation
    steps per level (module docstring); 0 is plain pull-push.
    """
    sums, weights = [image * known], [known]
    while all(side > 1 and side % 2 == 0 for side in sums[-1].shape[-2:]):  # static shapes: export-safe
        sums.append(F.avg_pool2d(sums[-1], 2))  # (B,C,H/2**l,W/2**l)
        weights.append(F.avg_pool2d(weights[-1], 2))  # (B,1,H/2**l,W/2**l)
    # Coarsest level: the image's mean visible colour where the last level saw nothing.
    mean = (sums[-1].mean(dim=(2, 3), keepdim=True)
            / weights[-1].mean(dim=(2, 3), keepdim=True).clamp_min(EPS))  # (B,C,1,1)
    fill = sums[-1] + (1 - weights[-1]) * mean
    for colour, weight in zip(reversed(sums[:-1]), reversed(weights[:-1])):
        coarse = F.interpolate(fill, size=colour.shape[-2:], mode="bilinear", align_corners=False)
        fill = colour + (1 - weight) * coarse
        if sweeps:  # a config int, not a tensor value: the graph stays static
            gain = (1 - weight) / neighbour_sum(torch.ones_like(weight))  # (B,1,h,w): (1 - W) / neighbour count
            for _ in range(sweeps):
                fill = colour + gain * neighbour_sum(fill)
    return fill


def grow_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """mask (B,1,h,w) probabilities -> (B,1,h,w): each pixel the max over the (2*pixels+1)^2 square around it."""
    return F.max_pool2d(mask, 2 * pixels + 1, stride=1, padding=pixels)


def background_prior(frame: torch.Tensor, mask: torch.Tensor, sweeps: int) -> torch.Tensor:
    """frame (B,3,h,w) in [0,1], mask (B,1,h,w) probabilities -> pull-push fill (B,3,h,w) in
    [PRIOR_CLAMP, 1 - PRIOR_CLAMP], relaxed by `sweeps` Jacobi steps per pyramid level.

    The mask is dilated by one pixel first: an object's anti-aliased rim carries its colour and must not
    leak into the fill.
    """
    rim = grow_mask(mask, 1)  # (B,1,h,w)
    return pull_push(frame, 1 - rim, sweeps).clamp(PRIOR_CLAMP, 1 - PRIOR_CLAMP)
