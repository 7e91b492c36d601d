"""The pull-push background prior against a brute-force loop version and the invariants of interpolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sahm_core.model.pull_push import PRIOR_CLAMP, background_prior, pull_push


def pull_push_loops(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The same recursion pixel by pixel: image (C,H,W), known (H,W) -> (C,H,W)."""
    sums, weights = [image * known], [known]
    while all(side > 1 and side % 2 == 0 for side in weights[-1].shape):
        s, w = sums[-1], weights[-1]
        h, wd = w.shape[0] // 2, w.shape[1] // 2
        next_s, next_w = np.zeros((s.shape[0], h, wd)), np.zeros((h, wd))
        for y in range(h):
            for x in range(wd):
                next_s[:, y, x] = s[:, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2].mean(axis=(1, 2))
                next_w[y, x] = w[2 * y : 2 * y + 2, 2 * x : 2 * x + 2].mean()
        sums.append(next_s)
        weights.append(next_w)
    mean = sums[-1].mean(axis=(1, 2)) / max(weights[-1].mean(), 1e-6)
    fill = sums[-1] + (1 - weights[-1]) * mean[:, None, None]
    for s, w in zip(reversed(sums[:-1]), reversed(weights[:-1])):
        coarse = torch.nn.functional.interpolate(torch.from_numpy(fill)[None], size=w.shape, mode="bilinear", align_corners=False)[0].numpy()
        fill = s + (1 - w) * coarse
    return fill


@pytest.mark.parametrize("size", [(16, 16), (12, 20), (7, 9)])
def test_pull_push_equals_the_loop_version(size):
    rng = np.random.default_rng(0)
    image = rng.random((2, 3, *size))
    known = (rng.random((2, 1, *size)) > 0.4) * rng.random((2, 1, *size))  # soft weights with holes
    got = pull_push(torch.from_numpy(image), torch.from_numpy(known)).numpy()
    for b in range(2):
        np.testing.assert_allclose(got[b], pull_push_loops(image[b], known[b, 0]), rtol=1e-10, atol=1e-10)


def test_visible_pixels_are_kept_and_the_hole_is_filled_from_its_surroundings():
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.random((1, 3, 32, 32)))
    known = torch.ones(1, 1, 32, 32, dtype=torch.float64)
    known[..., 10:20, 8:24] = 0.0
    fill = pull_push(image, known)
    visible = known[0, 0] > 0
    torch.testing.assert_close(fill[..., visible], image[..., visible])
    # Each filled pixel is a convex combination of visible colours: inside their per-channel range.
    lo = image[..., visible].amin(dim=-1)[..., None]
    hi = image[..., visible].amax(dim=-1)[..., None]
    hole = fill[..., ~visible]
    assert bool(((hole >= lo - 1e-12) & (hole <= hi + 1e-12)).all())


def test_a_hole_in_a_flat_wall_is_filled_with_the_wall_colour():
    wall = torch.tensor([0.2, 0.5, 0.7]).view(1, 3, 1, 1).expand(1, 3, 64, 64)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 5:40, 30:60] = 1.0
    torch.testing.assert_close(background_prior(wall, mask), wall, rtol=1e-5, atol=1e-5)


def test_the_rim_of_the_mask_does_not_leak_into_the_fill():
    """A red object with an anti-aliased (half-covered) rim on a grey wall: the fill stays grey."""
    image = torch.full((1, 3, 32, 32), 0.5)
    image[:, 0, 10:20, 10:20] = 1.0
    image[:, 1:, 10:20, 10:20] = 0.0
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 11:19, 11:19] = 1.0  # the predicted mask misses the outermost object pixels
    prior = background_prior(image, mask)
    torch.testing.assert_close(prior[..., 10:20, 10:20], torch.full((1, 3, 10, 10), 0.5))


def test_no_visible_pixel_gives_the_clamped_floor():
    image = torch.rand(1, 3, 8, 8)
    assert torch.equal(background_prior(image, torch.ones(1, 1, 8, 8)), torch.full((1, 3, 8, 8), PRIOR_CLAMP))
