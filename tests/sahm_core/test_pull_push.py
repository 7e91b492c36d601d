"""The pull-push background prior against a brute-force loop version, its relaxation against a direct solve of
Laplace's equation, and the invariants of interpolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sahm_core.model.pull_push import PRIOR_CLAMP, background_prior, pull_push


def in_image_neighbours(y: int, x: int, h: int, w: int) -> list[tuple[int, int]]:
    """The 4-neighbours of pixel (y, x) that lie inside an h x w image."""
    return [(v, u) for v, u in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)) if 0 <= v < h and 0 <= u < w]


def relax_loops(fill: np.ndarray, colour: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """One Jacobi sweep pixel by pixel: fill (C,h,w) <- colour + (1 - weight) * mean of the in-image 4-neighbours."""
    h, w = weight.shape
    out = np.empty_like(fill)
    for y in range(h):
        for x in range(w):
            neighbours = [fill[:, v, u] for v, u in in_image_neighbours(y, x, h, w)]
            out[:, y, x] = colour[:, y, x] + (1 - weight[y, x]) * np.mean(neighbours, axis=0)
    return out


def pull_push_loops(image: np.ndarray, known: np.ndarray, sweeps: int = 0) -> np.ndarray:
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
        coarse = torch.nn.functional.interpolate(torch.from_numpy(fill)[None], size=w.shape, mode="bilinear",
                                                 align_corners=False)[0].numpy()
        fill = s + (1 - w) * coarse
        for _ in range(sweeps):
            fill = relax_loops(fill, s, w)
    return fill


@pytest.mark.parametrize("sweeps", [0, 3])
@pytest.mark.parametrize("size", [(16, 16), (12, 20), (7, 9)])
def test_pull_push_equals_the_loop_version(size, sweeps):
    rng = np.random.default_rng(0)
    image = rng.random((2, 3, *size))
    known = (rng.random((2, 1, *size)) > 0.4) * rng.random((2, 1, *size))  # soft weights with holes
    got = pull_push(torch.from_numpy(image), torch.from_numpy(known), sweeps).numpy()
    for b in range(2):
        np.testing.assert_allclose(got[b], pull_push_loops(image[b], known[b, 0], sweeps), rtol=1e-10, atol=1e-10)


def harmonic_fill(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Laplace's equation solved directly: each hole pixel the mean of its in-image 4-neighbours, visible pixels fixed.
    image (H,W), known (H,W) bool -> (H,W)."""
    h, w = known.shape
    hole = [(y, x) for y in range(h) for x in range(w) if not known[y, x]]
    index = {p: i for i, p in enumerate(hole)}
    a, b = np.zeros((len(hole), len(hole))), np.zeros(len(hole))
    for i, (y, x) in enumerate(hole):
        neighbours = in_image_neighbours(y, x, h, w)
        a[i, i] = len(neighbours)
        for p in neighbours:
            if p in index:
                a[i, index[p]] -= 1
            else:
                b[i] += image[p]
    out = image.copy()
    out[~known] = np.linalg.solve(a, b)
    return out


def test_relaxation_converges_to_the_harmonic_fill():
    rng = np.random.default_rng(2)
    image = rng.random((1, 3, 16, 16))
    known = np.ones((16, 16), bool)
    known[3:11, 5:15] = False
    known[13:, :4] = False  # a second hole touching the border
    fill = pull_push(torch.from_numpy(image), torch.from_numpy(known[None, None].astype(np.float64)),
                     sweeps=400).numpy()
    for c in range(3):
        np.testing.assert_allclose(fill[0, c], harmonic_fill(image[0, c], known), atol=1e-8)


def test_a_hole_in_a_gradient_is_filled_with_the_gradient():
    """A linear ramp is harmonic: the relaxed fill converges to it (max error 0.016 plain, 0.0034 at 8 sweeps per
    level)."""
    ramp = torch.linspace(0.1, 0.9, 64, dtype=torch.float64).view(1, 1, 1, 64).expand(1, 3, 64, 64)
    known = torch.ones(1, 1, 64, 64, dtype=torch.float64)
    known[..., 16:48, 12:52] = 0.0
    errors = [float((pull_push(ramp, known, sweeps) - ramp).abs().max()) for sweeps in (0, 8, 64)]
    assert errors[0] > 0.01 > 0.005 > errors[1] > errors[2]
    assert errors[2] < 1e-5


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


@pytest.mark.parametrize("sweeps", [0, 8])
def test_a_hole_in_a_flat_wall_is_filled_with_the_wall_colour(sweeps):
    wall = torch.tensor([0.2, 0.5, 0.7]).view(1, 3, 1, 1).expand(1, 3, 64, 64)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 5:40, 30:60] = 1.0
    torch.testing.assert_close(background_prior(wall, mask, sweeps), wall, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sweeps", [0, 8])
def test_the_rim_of_the_mask_does_not_leak_into_the_fill(sweeps):
    """A red object with an anti-aliased (half-covered) rim on a grey wall: the fill stays grey."""
    image = torch.full((1, 3, 32, 32), 0.5)
    image[:, 0, 10:20, 10:20] = 1.0
    image[:, 1:, 10:20, 10:20] = 0.0
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 11:19, 11:19] = 1.0  # the predicted mask misses the outermost object pixels
    prior = background_prior(image, mask, sweeps)
    torch.testing.assert_close(prior[..., 10:20, 10:20], torch.full((1, 3, 10, 10), 0.5))


def test_no_visible_pixel_gives_the_clamped_floor():
    image = torch.rand(1, 3, 8, 8)
    assert torch.equal(background_prior(image, torch.ones(1, 1, 8, 8), 8), torch.full((1, 3, 8, 8), PRIOR_CLAMP))
