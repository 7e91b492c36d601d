"""Training losses of SAHM (paper eq. 11-14) and the optional mask expansion loss (arXiv 2403.15849).

Generator:  total = w_seg * L_seg + w_rec * L_rec + w_adv * L_adv + w_dice * L_dice + w_exp * L_X
            (paper: 1, 5, 20; Dice and expansion off)
  L_seg  eq. 11: BCE of every scale's mask logits against the full-resolution mask. Coarse logits are
         upsampled to the mask (the paper's h1) rather than the mask downsampled, so thin objects and
         one-pixel boundaries stay binary targets at every scale.
  L_rec  eq. 12: L1 between every scale's RGB prediction and the target at that scale's size (the paper's
         I^l); the target is area-downsampled, i.e. each coarse pixel is the mean of the pixels it covers.
  L_adv  eq. 13 on the final image, in the non-saturating form for the generator: -log D(fake) instead of
         log(1 - D(fake)), which has the same fixed point but does not vanish while D wins early on.
  L_dice soft Dice of every scale's mask (upsampled as in L_seg), per sample; not in the paper, off by
         default. BCE alone on masks covering ~3% of the frame first settles on "no object anywhere";
         Dice is scale-free in the object's area, so short CPU runs (the bundled demo) leave that basin early.
  L_X    mask expansion loss on the final mask: mean over pixels of (phi(p) - alpha) * sigmoid(logit(p)),
         phi the signed distance to the object boundary (negative inside), scaled to [-1, 1] by the
         largest |distance| in the image. Lowering phi by alpha moves its zero level outward, so a mask
         that covers a thin band around the object is cheaper than one that stops short of it.
Discriminator: BCE(D(target), 1) + BCE(D(fake), 0) (eq. 13 as the discriminator maximises it).

Sums over scales follow the paper (eq. 11-12 sum over l); inside each scale a term is a per-pixel mean.
A term with zero weight is never computed (no discriminator forward, no distance transform).
Metrics are detached 0-d tensors (read with float() when logging, so a GPU step does not sync per term).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt


@dataclass(frozen=True)
class LossWeights:
    """The generator's loss weights, declared once: train.TrainConfig inherits these fields, so they are flat
    keys of train_config.json and of `sahm train --set`."""

    seg_weight: float = 1.0  # eq. 14 (paper: 1, 5, 20)
    rec_weight: float = 5.0
    adv_weight: float = 20.0
    expansion_weight: float = 0.0  # mask expansion loss (2403.15849), off by default
    dice_weight: float = 0.0  # soft Dice on every scale's mask (not in the paper), off by default
    presence_weight: float = 0.0  # BCE on the presence logit (not in the paper), off by default
    expansion_alpha: float = 0.03  # 2403.15849 Table IV: best alpha on [-1, 1]-scaled distances


def segmentation_loss(scale_masks: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Eq. 11. scale_masks: logits (B,1,h,w) coarse->fine; mask: (B,1,S,S) in {0,1}."""
    size = mask.shape[-2:]
    return sum(
        F.binary_cross_entropy_with_logits(F.interpolate(logits, size=size, mode="bilinear", align_corners=False), mask)
        for logits in scale_masks
    )


def dice_loss(scale_masks: list[torch.Tensor], mask: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per sample, summed over scales like eq. 11. An empty mask (a negative) scores
    1 - smooth / (sum(p) + smooth): its optimum is a mask of zeros, as the not-found rule wants."""
    size = mask.shape[-2:]
    target = mask.flatten(1)  # (B,S*S)
    total = 0.0
    for logits in scale_masks:
        # prob: (B,S*S)
        prob = torch.sigmoid(F.interpolate(logits, size=size, mode="bilinear", align_corners=False)).flatten(1)
        dice = (2 * (prob * target).sum(1) + smooth) / (prob.sum(1) + target.sum(1) + smooth)
        total = total + (1 - dice).mean()
    return total


def reconstruction_loss(scale_images: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Eq. 12. scale_images: RGB (B,3,h,w) coarse->fine; target: (B,3,S,S)."""
    return sum(F.l1_loss(image, F.interpolate(target, size=image.shape[-2:], mode="area")) for image in scale_images)


def signed_distance(mask: torch.Tensor) -> torch.Tensor:
    """phi of 2403.15849 eq. 8 for a batch of binary masks (B,1,H,W) -> (B,1,H,W), scaled to [-1, 1].

    Outside: Euclidean distance to the nearest object pixel. Inside: -(distance to the nearest background
    pixel - 1), so the object's own boundary pixels sit at 0 (Kervadec et al.'s boundary-loss convention).
    An empty mask (a negative sample) has no boundary: every pixel counts as far outside (+1), so the loss
    pushes the whole mask towards zero; a full mask is -1 everywhere.
    """
    phis = []
    for m in mask.detach().cpu().numpy()[:, 0] > 0.5:
        if not m.any():
            phi = np.ones(m.shape)
        elif m.all():
            phi = -np.ones(m.shape)
        else:
            phi = distance_transform_edt(~m) * ~m - (distance_transform_edt(m) - 1) * m
            phi = phi / np.abs(phi).max()
        phis.append(phi)
    return torch.from_numpy(np.stack(phis)[:, None]).to(device=mask.device, dtype=torch.float32)


def mask_expansion_loss(mask_logits: torch.Tensor, mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """2403.15849 eq. 9 as a per-pixel mean. mask_logits, mask: (B,1,S,S)."""
    return ((signed_distance(mask) - alpha) * torch.sigmoid(mask_logits)).mean()


def presence_loss(presence_logit: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE of the presence logit (B,1,1,1) against "the ground-truth mask (B,1,S,S) is not empty" (a positive)."""
    present = (mask.flatten(1).amax(dim=1) > 0.5).to(presence_logit.dtype)  # (B,)
    return F.binary_cross_entropy_with_logits(presence_logit.flatten(), present)


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator side of eq. 13: -log D(fake), D's output as logits."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def generator_loss(
    out,
    target: torch.Tensor,
    mask: torch.Tensor,
    discriminator: Callable[[torch.Tensor], torch.Tensor],
    weights: LossWeights,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 14 (+ optional L_X). out: SAHMOutput; target (B,3,S,S); mask (B,1,S,S). -> (total, metrics)."""
    terms: dict[str, tuple[float, Callable[[], torch.Tensor]]] = {
        "seg": (weights.seg_weight, lambda: segmentation_loss(out.scale_masks, mask)),
        "rec": (weights.rec_weight, lambda: reconstruction_loss(out.scale_images, target)),
        "adv": (weights.adv_weight, lambda: generator_adversarial_loss(discriminator(out.image))),
        "dice": (weights.dice_weight, lambda: dice_loss(out.scale_masks, mask)),
        "presence": (weights.presence_weight, lambda: presence_loss(out.presence_logit, mask)),
        "expansion": (weights.expansion_weight,
                      lambda: mask_expansion_loss(out.mask_logits, mask, weights.expansion_alpha)),
    }
    total = torch.zeros((), device=target.device)
    metrics = {}
    for name, (weight, term) in terms.items():
        if weight == 0:
            continue
        value = term()
        total = total + weight * value
        metrics[f"loss/{name}"] = value.detach()
    metrics["loss/total"] = total.detach()
    return total, metrics


def discriminator_loss(
    discriminator: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 13 for the discriminator. real: targets, fake: generator images (detached by the caller).

    One forward over real and fake together: DistributedDataParallel expects one forward per backward.
    """
    real_logits, fake_logits = discriminator(torch.cat([real, fake])).chunk(2)  # (2B,1,h,w) -> 2 x (B,1,h,w)
    real_loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    total = real_loss + fake_loss
    return total, {
        "loss/disc": total.detach(),
        "disc/real_prob": torch.sigmoid(real_logits).detach().mean(),
        "disc/fake_prob": torch.sigmoid(fake_logits).detach().mean(),
    }


__all__ = [
    "LossWeights",
    "segmentation_loss",
    "reconstruction_loss",
    "dice_loss",
    "signed_distance",
    "mask_expansion_loss",
    "generator_adversarial_loss",
    "generator_loss",
    "discriminator_loss",
]
