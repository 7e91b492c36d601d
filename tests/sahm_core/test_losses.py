"""Losses against values worked by hand on tiny tensors."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from sahm_core.losses import (
    LossWeights,
    dice_loss,
    discriminator_loss,
    generator_loss,
    mask_expansion_loss,
    presence_loss,
    reconstruction_loss,
    segmentation_loss,
    signed_distance,
)


def bce(logit: float, label: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(label * math.log(p) + (1 - label) * math.log(1 - p))


def test_segmentation_loss_sums_bce_of_every_scale_upsampled_to_the_mask():
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    fine = torch.tensor([[2.0, -1.0], [0.5, 3.0]]).view(1, 1, 2, 2)
    coarse = torch.tensor([0.7]).view(1, 1, 1, 1)  # upsampled: 0.7 at every pixel
    expected_fine = (bce(2.0, 1) + bce(-1.0, 0) + bce(0.5, 0) + bce(3.0, 1)) / 4
    expected_coarse = (2 * bce(0.7, 1) + 2 * bce(0.7, 0)) / 4
    got = segmentation_loss([coarse, fine], mask)
    assert got.item() == pytest.approx(expected_fine + expected_coarse, rel=1e-6)


def test_dice_loss_per_sample_and_per_scale_by_hand():
    # sample 0 holds one object pixel, sample 1 is a negative (empty mask); every probability is
    # sigmoid(0) = 0.5. Dice (smooth 1): (2*0.5 + 1) / (4*0.5 + 1 + 1) = 1/2 and (0 + 1) / (2 + 0 + 1) = 1/3.
    mask = torch.zeros(2, 1, 2, 2)
    mask[0, 0, 0, 0] = 1.0
    fine, coarse = torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 1, 1)
    per_scale = ((1 - 1 / 2) + (1 - 1 / 3)) / 2
    assert dice_loss([fine], mask).item() == pytest.approx(per_scale, rel=1e-6)
    assert dice_loss([coarse, fine], mask).item() == pytest.approx(2 * per_scale, rel=1e-6)
    perfect = torch.full((1, 1, 2, 2), -30.0)
    perfect[0, 0, 0, 0] = 30.0
    assert dice_loss([perfect], mask[:1]).item() == pytest.approx(0.0, abs=1e-6)


def test_reconstruction_loss_compares_each_scale_with_the_area_downsampled_target():
    target = torch.arange(12, dtype=torch.float32).view(1, 3, 2, 2) / 12  # channel means 1.5/12, 5.5/12, 9.5/12
    fine = torch.zeros(1, 3, 2, 2)
    coarse = torch.full((1, 3, 1, 1), 0.5)
    expected_fine = target.sum().item() / 12
    expected_coarse = (abs(0.5 - 1.5 / 12) + abs(0.5 - 5.5 / 12) + abs(0.5 - 9.5 / 12)) / 3
    got = reconstruction_loss([coarse, fine], target)
    assert got.item() == pytest.approx(expected_fine + expected_coarse, rel=1e-6)


def test_signed_distance_on_a_row():
    # object at columns 2..4 of an 8-pixel row: outside = distance to the object, inside = -(depth - 1)
    mask = torch.tensor([0, 0, 1, 1, 1, 0, 0, 0], dtype=torch.float32).view(1, 1, 1, 8)
    phi = signed_distance(mask)
    assert phi.flatten().tolist() == pytest.approx([v / 3 for v in (2, 1, 0, -1, 0, 1, 2, 3)])


def test_signed_distance_of_empty_and_full_masks():
    assert torch.equal(signed_distance(torch.zeros(1, 1, 3, 3)), torch.ones(1, 1, 3, 3))
    assert torch.equal(signed_distance(torch.ones(1, 1, 3, 3)), -torch.ones(1, 1, 3, 3))


def test_mask_expansion_loss_on_a_row_and_its_push_outward():
    mask = torch.tensor([0, 0, 1, 1, 1, 0, 0, 0], dtype=torch.float32).view(1, 1, 1, 8)
    logits = torch.tensor([-1.0, 0.0, 1.0, 2.0, 1.0, 0.0, -1.0, -2.0]).view(1, 1, 1, 8).requires_grad_()
    alpha = 0.5
    phi = [2 / 3, 1 / 3, 0, -1 / 3, 0, 1 / 3, 2 / 3, 1]
    probs = [1 / (1 + math.exp(-x)) for x in logits.flatten().tolist()]
    expected = sum((f - alpha) * p for f, p in zip(phi, probs)) / 8
    loss = mask_expansion_loss(logits, mask, alpha)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    grad = logits.grad.flatten()
    # alpha = 0.5 moves the zero level past the first outside pixel on both sides: growing the mask there
    # lowers the loss (negative gradient), while two pixels out it still raises it.
    assert grad[1] < 0 and grad[5] < 0
    assert grad[0] > 0 and grad[6] > 0 and grad[7] > 0


def test_adversarial_losses_at_an_undecided_discriminator_are_log2():
    undecided = lambda image: torch.zeros(image.shape[0], 1, 2, 2)  # noqa: E731  D(x) = 0.5 everywhere
    real = torch.rand(2, 3, 8, 8)
    total, metrics = discriminator_loss(undecided, real, real.flip(-1))
    assert total.item() == pytest.approx(2 * math.log(2))
    assert float(metrics["disc/real_prob"]) == pytest.approx(0.5)
    out = fake_output(torch.zeros(2, 1, 8, 8), torch.zeros(2, 3, 8, 8))
    only_adversarial = LossWeights(seg_weight=0, rec_weight=0, adv_weight=20)
    total, metrics = generator_loss(out, real, torch.zeros(2, 1, 8, 8), undecided, only_adversarial)
    assert float(metrics["loss/adv"]) == pytest.approx(math.log(2))
    assert total.item() == pytest.approx(20 * math.log(2))


def test_discriminator_loss_matches_eq13_for_confident_outputs():
    def disc(image):  # per sample: bright images look real (logit 3), dark ones fake (logit -2)
        return torch.where(image.mean(dim=(1, 2, 3)) > 0.5, 3.0, -2.0).view(-1, 1, 1, 1)

    total, _ = discriminator_loss(disc, torch.ones(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    assert total.item() == pytest.approx(bce(3.0, 1) + bce(-2.0, 0), rel=1e-6)


def test_presence_loss_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.5]).view(3, 1, 1, 1)
    mask = torch.zeros(3, 1, 4, 4)
    mask[0, 0, 1, 2] = 1.0  # one positive pixel is a positive sample
    mask[2, 0] = 1.0
    expected = (bce(2.0, 1) + bce(-1.0, 0) + bce(0.5, 1)) / 3
    assert presence_loss(logits, mask).item() == pytest.approx(expected, rel=1e-6)


def fake_output(mask_logits, image):
    """A SAHMOutput-shaped record with one scale (the final one), for loss arithmetic only."""
    return SimpleNamespace(image=image, mask_logits=mask_logits, scale_masks=[mask_logits], scale_images=[image])


def test_total_is_the_weighted_sum_and_zero_weight_terms_are_not_computed():
    def must_not_run(image):
        raise AssertionError("discriminator ran although the adversarial weight is 0")

    torch.manual_seed(0)
    mask = (torch.rand(2, 1, 8, 8) > 0.5).float()
    target = torch.rand(2, 3, 8, 8)
    out = fake_output(torch.randn(2, 1, 8, 8), torch.rand(2, 3, 8, 8))
    weights = LossWeights(seg_weight=1, rec_weight=5, adv_weight=0)
    total, metrics = generator_loss(out, target, mask, must_not_run, weights)
    assert set(metrics) == {"loss/seg", "loss/rec", "loss/total"}
    seg = segmentation_loss(out.scale_masks, mask).item()
    rec = reconstruction_loss(out.scale_images, target).item()
    assert total.item() == pytest.approx(seg + 5 * rec, rel=1e-6)

    weights = LossWeights(seg_weight=0, rec_weight=0, adv_weight=0, expansion_weight=2.0, expansion_alpha=0.1)
    total, metrics = generator_loss(out, target, mask, must_not_run, weights)
    assert set(metrics) == {"loss/expansion", "loss/total"}
    assert total.item() == pytest.approx(2 * mask_expansion_loss(out.mask_logits, mask, 0.1).item(), rel=1e-6)
