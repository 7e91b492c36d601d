"""Evaluation metrics against independent references, baselines, and the `sahm eval` command end to end."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from sahm_core import cli
from sahm_core.checkpoint import save_weights
from sahm_core.config import model_config
from sahm_core.data import RemovalDataset
from sahm_core.data.synthetic import make_dataset
from sahm_core.evaluate import (
    GIVEN_MASK_METHOD,
    LPIPS,
    METHODS,
    PSNR_CAP_DB,
    frechet_distance,
    iou,
    psnr,
    segmentation_metrics,
    ssim_map,
    telea,
)
from sahm_core.model import build_model
from sahm_core.runtime import Remover

SIZE = 64
SMALL = replace(model_config("nano"), image_size=SIZE, embed_dim=16, decoder_dim=16, disc_dim=8)


def test_psnr_of_known_noise_matches_the_formula():
    target = np.full((8, 8, 3), 0.5)
    checker = (np.indices((8, 8)).sum(axis=0) % 2)[..., None] * 2 - 1  # +-1
    assert psnr(target + 0.1 * checker, target) == pytest.approx(20.0)  # MSE 0.01
    region = np.zeros((8, 8), bool)
    region[2:5, 3:7] = True
    noisy = target + 0.2 * checker * region[..., None]
    assert psnr(noisy, target, region) == pytest.approx(10 * math.log10(1 / 0.04))
    assert psnr(target, target) == PSNR_CAP_DB


def test_ssim_map_of_constant_images_matches_the_formula():
    c1, c2, k1 = 0.3, 0.6, 0.01
    a, b = np.full((16, 16, 3), c1), np.full((16, 16, 3), c2)
    # no variance anywhere: SSIM = luminance term (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1), C1 = (k1 * range)^2
    expected = (2 * c1 * c2 + k1**2) / (c1**2 + c2**2 + k1**2)
    assert ssim_map(a, b).mean() == pytest.approx(expected, rel=1e-6)
    region = np.zeros((16, 16), bool)
    region[4:9, 4:9] = True
    assert ssim_map(a, b)[region].mean() == pytest.approx(expected, rel=1e-6)
    noise = np.random.default_rng(0).random((16, 16, 3))
    assert ssim_map(noise, noise).mean() == pytest.approx(1.0)


def brute_force_iou(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    inter = union = 0
    for y, x in itertools.product(range(pred.shape[0]), range(pred.shape[1])):
        inter += bool(pred[y, x] and gt[y, x])
        union += bool(pred[y, x] or gt[y, x])
    return inter, union


def test_iou_and_segmentation_metrics_match_brute_force():
    rng = np.random.default_rng(1)
    pairs = [(rng.random((12, 12)) > p, rng.random((12, 12)) > 0.5) for p in (0.1, 0.5, 0.9, 0.97)]
    counts = [iou(p, g) for p, g in pairs]
    assert counts == [brute_force_iou(p, g) for p, g in pairs]
    found_pos, found_neg = [True, True, False, True], [False, True, False]
    got = segmentation_metrics(counts, found_pos, found_neg)
    ious = [i / u for i, u in counts]
    assert got["mean_iou"] == pytest.approx(sum(ious) / 4)
    assert got["overall_iou"] == pytest.approx(sum(i for i, _ in counts) / sum(u for _, u in counts))
    for t in (0.5, 0.7, 0.9):
        assert got[f"pr@{t}"] == pytest.approx(sum(v > t for v in ious) / 4)
    assert got["not_found_accuracy"] == pytest.approx(2 / 3)
    assert got["false_negative_rate"] == pytest.approx(1 / 4)


def test_telea_fills_a_hole_from_its_surroundings_and_keeps_the_rest():
    image = np.full((32, 32, 3), 120, np.uint8)
    image[10:20, 12:22] = (250, 10, 10)  # the object
    mask = np.zeros((32, 32), bool)
    mask[10:20, 12:22] = True
    out = telea(image, mask)
    assert np.abs(out[mask].astype(int) - 120).max() <= 3
    assert np.array_equal(out[~mask], image[~mask])
    assert np.array_equal(telea(image, np.zeros_like(mask)), image)


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    make_dataset(data, n=6, seed=11, size=SIZE, workers=1, negative_fraction=0.4, val_fraction=0.0, test_fraction=0.99)
    torch.manual_seed(0)
    save_weights(root / "model" / "model.safetensors", build_model(SMALL).state_dict(), SMALL)
    return root, data


def test_sahm_eval_writes_the_table_metrics_and_contact_sheet(eval_setup, capsys):
    root, data = eval_setup
    out = root / "out"
    code = cli.main(["eval", "--checkpoint", str(root / "model"), "--data", str(data), "--split", "test",
                     "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["removal"]) == set(METHODS)
    assert set(metrics["segmentation"]) == {"mean_iou", "overall_iou", "pr@0.5", "pr@0.7", "pr@0.9",
                                            "not_found_accuracy", "false_negative_rate"}
    assert {"params_m", "gflops", "fps", "device"} <= set(metrics["cost"])
    assert metrics["cost"]["params_m"] > 0 and metrics["cost"]["gflops"] > 0 and metrics["cost"]["fps"] > 0
    assert (out / "contact_sheet.png").stat().st_size > 0
    # LPIPS / FID: no weights here, so a reason and never a number
    assert all(row["lpips"] is None and row["fid"] is None for row in metrics["removal"].values())
    assert "lpips: unavailable:" in text and "fid: unavailable:" in text

    # "no removal" recomputed independently from the dataset: input vs target, by the PSNR formula
    dataset = RemovalDataset(data, "test", SIZE)
    assert metrics["samples"] == len(dataset) == metrics["positives"] + metrics["negatives"]
    expected, expected_mask = [], []
    for item in dataset:
        image = (item["image"].permute(1, 2, 0).numpy() * 255).round() / 255
        target = (item["target"].permute(1, 2, 0).numpy() * 255).round() / 255
        gt = item["mask"][0].numpy() > 0.5
        if gt.any():  # removal is scored on positives
            expected.append(10 * math.log10(1 / ((image - target) ** 2).mean()))
            expected_mask.append(10 * math.log10(1 / ((image - target) ** 2)[gt].mean()))
    assert metrics["removal"]["no removal"]["psnr"] == pytest.approx(np.mean(expected), rel=1e-6)
    assert metrics["removal"]["no removal"]["psnr_mask"] == pytest.approx(np.mean(expected_mask), rel=1e-6)
    # the oracle inpaints the true hole: better than leaving the object there
    oracle = metrics["removal"]["Telea + GT mask (oracle)"]
    assert oracle["psnr_mask"] > metrics["removal"]["no removal"]["psnr_mask"]


def test_sahm_eval_bad_input_is_a_clear_error(eval_setup, tmp_path, capsys):
    root, data = eval_setup
    code = cli.main(["eval", "--checkpoint", str(tmp_path / "nope.safetensors"), "--data", str(data),
                     "--out", str(tmp_path)])
    assert code == 2 and "model file not found" in capsys.readouterr().out
    code = cli.main(["eval", "--checkpoint", str(root / "model"), "--data", str(tmp_path),
                     "--out", str(tmp_path / "o")])
    assert code == 2 and "refs.jsonl" in capsys.readouterr().out
    code = cli.main(["eval", "--checkpoint", str(root / "model"), "--data", str(data), "--out", str(tmp_path / "o"),
                     "--mask-threshold", "1"])
    assert code == 2 and "found rule out of range: mask_threshold=1.0" in capsys.readouterr().out


def test_frechet_distance_matches_the_closed_form():
    a = np.array([[0.0], [2.0]])  # mean 1, variance 2
    b = np.array([[3.0], [5.0]])  # mean 4, variance 2: FID = (4 - 1)^2 + 2 + 2 - 2 * sqrt(2 * 2) = 9
    assert frechet_distance(a, b) == pytest.approx(9.0)
    c = np.array([[0.0], [4.0]])  # mean 2, variance 8: 1 + 2 + 8 - 2 * 4 = 3
    assert frechet_distance(a, c) == pytest.approx(3.0)
    assert frechet_distance(np.random.default_rng(0).random((50, 3)),
                            np.random.default_rng(0).random((50, 3))) == pytest.approx(0.0, abs=1e-6)


def test_lpips_from_local_weights_is_zero_on_identical_images_and_rejects_wrong_files(tmp_path):
    from torchvision.models import alexnet

    torch.manual_seed(0)
    backbone = {f"features.{k}": v for k, v in alexnet(weights=None).features.state_dict().items()}
    torch.save(backbone, tmp_path / "alexnet.pth")
    widths = (64, 192, 384, 256, 256)
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(widths)}, tmp_path / "alex.pth")
    lpips = LPIPS(tmp_path / "alex.pth", tmp_path / "alexnet.pth")
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    assert torch.allclose(lpips(a, a), torch.zeros(2))
    d = lpips(a, b)
    assert (d > 0).all() and torch.allclose(d, lpips(b, a))
    with pytest.raises(ValueError, match="LPIPS linear layers need keys"):
        LPIPS(tmp_path / "alexnet.pth", tmp_path / "alexnet.pth")
    with pytest.raises(FileNotFoundError, match="not found"):
        LPIPS(tmp_path / "missing.pth", tmp_path / "alexnet.pth")


def test_given_masks_score_the_fill_graph_as_the_runtime_erases_a_given_mask(eval_setup, capsys):
    root, data = eval_setup
    out = root / "out_given"
    code = cli.main(["eval", "--checkpoint", str(root / "model"), "--data", str(data), "--out", str(out),
                     "--given-masks"])
    assert code == 0, capsys.readouterr().out
    row = json.loads((out / "metrics.json").read_text())["removal"][GIVEN_MASK_METHOD]
    # the same frames through Remover.remove(frame, erase=ground truth): one definition of erasing a given mask
    expected = []
    with Remover.load(root / "model", backend="torch", device="cpu") as remover:
        for item in RemovalDataset(data, "test", SIZE):
            gt = item["mask"][0].numpy() > 0.5
            if gt.any():
                image = (item["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                target = (item["target"].permute(1, 2, 0).numpy() * 255).round() / 255
                erased = remover.remove(image, erase=gt).image / 255
                expected.append(10 * math.log10(1 / ((erased - target) ** 2)[gt].mean()))
    assert row["psnr_mask"] == pytest.approx(np.mean(expected), abs=1e-3)
