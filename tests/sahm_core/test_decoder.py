"""Hybrid-mapping decoder parts against independent references (plain convolution, brute-force loops, invariants)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from torchvision.ops import deform_conv2d

from sahm_core.config import model_config
from sahm_core.model import PatchDiscriminator
from sahm_core.model.alignment import AlignedSegmentationMapping, DeformableConv2d
from sahm_core.model.backbone import stage_dims, stage_sizes
from sahm_core.model.decoder import HybridMappingDecoder
from sahm_core.model.filling import FillingMapping, HybridDilatedConv, attention_transfer, fill_patches

torch.set_num_threads(2)


@pytest.mark.parametrize("size", [(7, 9), (1, 5)])
def test_deformable_conv_equals_torchvision_deform_conv2d(size):
    """Random fractional offsets up to +-4 px (many samples fall off the map and read zero), forward and gradients."""
    torch.manual_seed(3)
    module = DeformableConv2d(4, 5, 3).double()
    x = torch.randn(2, 4, *size, dtype=torch.float64, requires_grad=True)
    offsets = (4 * (2 * torch.rand(2, 18, *size, dtype=torch.float64) - 1)).requires_grad_()
    got = module(x, offsets)
    expected = deform_conv2d(x, offsets, module.weight, module.bias, padding=1)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    grads = torch.autograd.grad(got.square().sum(), (x, offsets, module.weight))
    expected_grads = torch.autograd.grad(expected.square().sum(), (x, offsets, module.weight))
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-7, atol=1e-7)


def test_deformable_conv_counts_the_flops_of_the_plain_3x3_convolution():
    module = DeformableConv2d(8, 16, 3)
    x, offsets = torch.zeros(2, 8, 10, 12), torch.zeros(2, 18, 10, 12)
    with FlopCounterMode(display=False) as deformable:
        module(x, offsets)
    with FlopCounterMode(display=False) as plain:
        F.conv2d(x, module.weight, padding=1)
    assert deformable.get_total_flops() == plain.get_total_flops()


def test_deformable_alignment_with_zero_offsets_is_the_plain_convolution():
    torch.manual_seed(0)
    module = AlignedSegmentationMapping(skip_dim=5, dim=4)
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        got = module.align(x, torch.zeros(2, 18, 6, 6))
        expected = F.conv2d(x, module.align.weight, module.align.bias, padding=1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_deformable_alignment_with_unit_x_offsets_reads_one_pixel_to_the_right():
    """Offsets are (dy, dx) per tap: with dx = 1 everywhere, tap kx of output column j reads column j + kx.

    That is a valid (unpadded) convolution in x over the map with two zero columns on the right.
    """
    torch.manual_seed(1)
    module = AlignedSegmentationMapping(skip_dim=5, dim=4)
    x = torch.randn(1, 4, 6, 6)
    offsets = torch.zeros(1, 18, 6, 6)
    offsets[:, 1::2] = 1.0
    padded = F.pad(x, (0, 2, 1, 1))  # rows: the usual zero padding; columns: out[j] = sum_kx w[kx] x[j + kx]
    with torch.no_grad():
        got = module.align(x, offsets)
        expected = F.conv2d(padded, module.align.weight, module.align.bias)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_aligned_mapping_starts_as_upsample_conv_plus_reduced_skip():
    """Zero-initialised offsets: S_i = refine(conv3x3(up2(S_{i+1})) + conv1x1(V_i)) at initialisation."""
    torch.manual_seed(2)
    module = AlignedSegmentationMapping(skip_dim=5, dim=4).eval()
    skip, coarse = torch.randn(2, 5, 8, 8), torch.randn(2, 4, 4, 4)
    with torch.no_grad():
        up = F.interpolate(coarse, scale_factor=2.0, mode="bilinear", align_corners=False)
        merged = F.conv2d(up, module.align.weight, module.align.bias, padding=1) + module.reduce(skip)
        torch.testing.assert_close(module(skip, coarse), module.refine(merged), rtol=1e-5, atol=1e-5)


def brute_force_transfer(coarse, fine, hole, patch, scale):
    """Eq. 8-10 with loops: the hole pixels of every patch get a softmax mix of the patches outside the hole."""
    _, dim, height, width = fine.shape
    half = patch // 2
    rows, cols = height // patch, width // patch
    out = fine[0].double().numpy().copy()
    c, f, h = coarse[0].double().numpy(), fine[0].double().numpy(), hole[0, 0].numpy()
    cells = [(r, q) for r in range(rows) for q in range(cols)]
    key = {cell: c[:, cell[0] * half:(cell[0] + 1) * half, cell[1] * half:(cell[1] + 1) * half].ravel()
           for cell in cells}
    value = {cell: f[:, cell[0] * patch:(cell[0] + 1) * patch, cell[1] * patch:(cell[1] + 1) * patch] for cell in cells}
    in_hole = {cell: h[cell[0] * patch:(cell[0] + 1) * patch, cell[1] * patch:(cell[1] + 1) * patch].max() > 0
               for cell in cells}
    outside = [cell for cell in cells if not in_hole[cell]]
    for cell in cells:
        if not in_hole[cell]:
            continue
        sims = np.array([key[cell] @ key[m] / (np.linalg.norm(key[cell]) * np.linalg.norm(key[m])) for m in outside])
        weights = np.exp(scale * sims - (scale * sims).max())
        weights /= weights.sum()
        filled = sum(w * value[m] for w, m in zip(weights, outside))
        for y in range(patch):
            for x in range(patch):
                if h[cell[0] * patch + y, cell[1] * patch + x]:
                    out[:, cell[0] * patch + y, cell[1] * patch + x] = filled[:, y, x]
    return out


@pytest.fixture
def maps():
    g = torch.Generator().manual_seed(3)
    coarse = torch.randn(1, 3, 4, 4, generator=g)  # I_{i+1}
    fine = torch.randn(1, 3, 8, 8, generator=g)  # the finer map being filled
    hole = torch.zeros(1, 1, 8, 8)
    hole[..., :, :3] = 1.0  # left columns: patches in columns 0-1 touch the hole, 2-3 are outside
    return coarse, fine, hole


def test_attention_transfer_matches_brute_force(maps):
    coarse, fine, hole = maps
    got = attention_transfer(coarse, fine, hole, patch=2, scale=10.0)
    np.testing.assert_allclose(got[0].double().numpy(), brute_force_transfer(coarse, fine, hole, 2, 10.0),
                               rtol=1e-5, atol=1e-5)


def test_attention_transfer_matches_brute_force_with_larger_patches():
    g = torch.Generator().manual_seed(4)
    coarse, fine = torch.randn(1, 2, 6, 6, generator=g), torch.randn(1, 2, 12, 12, generator=g)
    hole = torch.zeros(1, 1, 12, 12)
    hole[..., 5:7, 3:9] = 1.0  # a blob in the middle
    got = attention_transfer(coarse, fine, hole, patch=4, scale=5.0)
    np.testing.assert_allclose(got[0].double().numpy(), brute_force_transfer(coarse, fine, hole, 4, 5.0),
                               rtol=1e-5, atol=1e-5)


def test_filling_leaves_outside_untouched_and_copies_only_from_outside(maps):
    coarse, fine, hole = maps  # hole: columns 0-2; patches (2 wide) in columns 0-3 touch it
    filled = attention_transfer(coarse, fine, hole, patch=2, scale=10.0)
    outside = hole == 0
    assert torch.equal(filled.masked_select(outside), fine.masked_select(outside))
    assert not torch.allclose(filled[..., :3], fine[..., :3])  # the hole was filled with something else
    # the hole and the patches touching it are never copied: perturbing them changes no filled value
    perturbed = fine.clone()
    perturbed[..., :4] += 100.0 * torch.randn(1, 3, 8, 4)
    refilled = attention_transfer(coarse, perturbed, hole, patch=2, scale=10.0)
    torch.testing.assert_close(refilled[..., :3], filled[..., :3])
    torch.testing.assert_close(refilled[..., 3:], perturbed[..., 3:])  # outside the hole: the input, as it is
    # while the patches outside the hole are what the hole is made of
    perturbed = fine.clone()
    perturbed[..., 4:] += 1.0
    assert not torch.allclose(attention_transfer(coarse, perturbed, hole, patch=2, scale=10.0)[..., :3],
                              filled[..., :3])


def test_filling_with_everything_in_the_hole_is_finite_zeros(maps):
    coarse, fine, _ = maps
    fine = fine.clone().requires_grad_(True)
    filled = attention_transfer(coarse, fine, torch.ones(1, 1, 8, 8), patch=2, scale=10.0)  # no patch to copy from
    assert torch.equal(filled, torch.zeros_like(filled))
    filled.sum().backward()
    assert torch.isfinite(fine.grad).all()


def test_hybrid_dilated_convs_reach_exactly_the_sum_of_their_rates():
    """Rates (1, 2, 5) stack to a receptive field of radius 1 + 2 + 5 = 8 around each pixel."""
    torch.manual_seed(5)
    hdc = HybridDilatedConv(4, (1, 2, 5)).eval()
    x = torch.randn(1, 4, 21, 21, requires_grad=True)
    hdc(x)[0, :, 10, 10].sum().backward()
    reached = x.grad.abs().sum(dim=(0, 1)) > 0
    rows, cols = torch.nonzero(reached, as_tuple=True)
    radius = torch.maximum((rows - 10).abs(), (cols - 10).abs())
    assert radius.max().item() == 8


def test_fill_patches_keep_one_grid_with_a_fixed_grid_and_one_patch_without():
    tiny, nano = model_config("tiny"), model_config("nano")
    # tiny's decoder sides are 120, 60, 30 (480 px, patch 4): 15 x 15 patches of 8, 4 and 2 pixels
    assert fill_patches(tiny) == [8, 4, 2]
    assert fill_patches(replace(tiny, fill_fixed_grid=False)) == [2, 2, 2]  # 60, 30 and 15 patches a side
    assert fill_patches(nano) == [2, 2, 2]  # nano as it shipped
    decoder = HybridMappingDecoder(tiny)
    sides = reversed(stage_sizes(tiny)[:-1])  # the mappings run coarse -> fine
    assert [side // mapping.fill.patch for side, mapping in zip(sides, decoder.mappings)] == [15, 15, 15]


def test_a_1x1_merge_mixes_channels_only():
    """merge_kernel=1: the map the fill copies from holds, at each pixel, only that pixel's S_i and I_{i+1}."""
    cfg = replace(model_config("nano"), merge_kernel=1)
    torch.manual_seed(8)
    merge = FillingMapping(cfg, patch=2).merge.eval()
    x = torch.randn(1, 2 * cfg.decoder_dim, 8, 8)
    nudged = x.clone()
    nudged[..., 3, 5] += 1.0
    changed = (merge(nudged) - merge(x)).abs().sum(dim=(0, 1)) > 0
    assert changed.nonzero().tolist() == [[3, 5]]
    assert merge[0].weight.shape == (cfg.decoder_dim, 2 * cfg.decoder_dim, 1, 1)


@pytest.mark.parametrize("options", [{}, {"fill_fixed_grid": True, "merge_kernel": 1}], ids=["nano", "fixed-grid"])
def test_decoder_emits_mask_and_rgb_logits_per_scale(options):
    cfg = replace(model_config("nano"), **options)
    torch.manual_seed(6)
    decoder = HybridMappingDecoder(cfg)
    maps = [torch.randn(2, dim, size, size) for dim, size in zip(stage_dims(cfg), stage_sizes(cfg))]
    masks, rgbs = decoder(maps, torch.randn(2, 3, cfg.image_size, cfg.image_size))
    sides = [*reversed(stage_sizes(cfg)), cfg.image_size]
    assert [m.shape for m in masks] == [(2, 1, s, s) for s in sides]
    assert [r.shape for r in rgbs] == [(2, 3, s, s) for s in sides]


def test_patch_discriminator_scores_patches():
    cfg = model_config("nano")
    torch.manual_seed(7)
    disc = PatchDiscriminator(cfg)
    image = torch.rand(2, 3, cfg.image_size, cfg.image_size)
    side = cfg.image_size // 2**cfg.disc_layers - 1
    logits = disc(image)
    assert logits.shape == (2, 1, side, side)
    logits.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in disc.parameters())
