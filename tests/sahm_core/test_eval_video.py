"""`sahm eval-video`: the compensated measures against hand-worked values, and the command end to end on two tiny
clips with a random-weight nano (per-frame and stream mode side by side, metrics.json)."""

from __future__ import annotations

import json

import numpy as np

from sahm_core.cli import main as sahm_main
from sahm_core.click import parse_click
from sahm_core.data.video import ClipConfig, make_video_dataset, read_clip, read_clip_rows
from sahm_core.eval_video import MODES, clip_click, compensated_change, compensated_mask_iou


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1.0]])


def test_compensated_mask_iou_worked_by_hand():
    previous = np.zeros((40, 40), bool)
    previous[10:20, 10:20] = True  # a 10 x 10 square
    current = np.zeros((40, 40), bool)
    current[12:22, 13:23] = True  # the camera moved it by (+3, +2)
    assert compensated_mask_iou(previous, current, _translation(3, 2)) == 1.0
    # uncompensated: overlap 7 x 8 = 56, union 200 - 56 = 144
    assert np.isclose(compensated_mask_iou(previous, current, np.eye(3)), 56 / 144)
    assert compensated_mask_iou(np.zeros_like(previous), np.zeros_like(current), np.eye(3)) is None


def test_compensated_change_is_zero_for_a_pure_camera_move():
    rng = np.random.default_rng(0)
    previous = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    current = np.roll(previous, (2, 3), axis=(0, 1))  # content moved by dx=3, dy=2
    region = np.zeros((40, 40), bool)
    region[10:30, 10:30] = True
    total, pixels = compensated_change(previous, current, _translation(3, 2), region)
    assert total == 0.0 and pixels == 400
    total, _ = compensated_change(previous, current, np.eye(3), region)
    assert total / pixels > 20  # uncompensated, random texture changes a lot


def test_eval_video_end_to_end(tmp_path, nano_model_dir, capsys):
    data, out = tmp_path / "clips", tmp_path / "eval"
    make_video_dataset(data, 2, seed=3, cfg=ClipConfig(size=64, frames=(5, 6), command_at=(0.2, 0.3)))
    # a random model's mask may be anywhere: no score or area floor, so frames are "found" and every measure runs
    assert sahm_main(["eval-video", "--checkpoint", str(nano_model_dir), "--data", str(data), "--out", str(out),
                      "--backend", "torch", "--min-score", "0", "--min-mask-area", "0"]) == 0
    printed = capsys.readouterr().out
    assert "per-frame" in printed and "stream" in printed and "reappearance rate" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    rows = read_clip_rows(data)
    active = sum(r["frames"] - r["command_frame"] for r in rows)
    assert metrics["clips"] == 2 and set(metrics["modes"]) == set(MODES)
    for mode in MODES:
        figures = metrics["modes"][mode]
        assert figures["frames"] == active
        assert 0.0 <= figures["mean_iou"] <= 1.0 and figures["latency_ms_mean"] > 0
        per_clip = metrics["per_clip"][mode]
        assert [len(c["iou"]) for c in per_clip] == [r["frames"] - r["command_frame"] for r in rows]
        assert np.isclose(np.mean([v for c in per_clip for v in c["iou"]]), figures["mean_iou"])
    assert metrics["modes"]["per-frame"]["stream_ms_mean"] == 0.0 and metrics["modes"]["stream"]["stream_ms_mean"] > 0
    assert 0.0 < metrics["ground_truth"]["mask_stability"] <= 1.0
    assert sahm_main(["eval-video", "--checkpoint", str(nano_model_dir), "--data", str(tmp_path), "--out",
                      str(out)]) == 1
    assert "not a video dataset" in capsys.readouterr().err


def test_eval_video_names_each_object_by_a_click_inside_it(tmp_path, nano_model_dir, capsys):
    data, out = tmp_path / "clips", tmp_path / "eval"
    make_video_dataset(data, 2, seed=4, cfg=ClipConfig(size=64, frames=(5, 6), command_at=(0.2, 0.3)))
    assert sahm_main(["eval-video", "--checkpoint", str(nano_model_dir), "--data", str(data), "--out", str(out),
                      "--backend", "torch", "--min-score", "0", "--min-mask-area", "0", "--clicks",
                      "--seed", "5"]) == 0
    assert "named by click (seed 5)" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["prompt"] == "click (seed 5)"
    for index, (row, per_frame, stream) in enumerate(zip(read_clip_rows(data), *metrics["per_clip"].values())):
        clip = read_clip(data, row)
        assert per_frame["command"] == stream["command"] == clip_click(clip, np.random.default_rng([5, index]))
        x, y = parse_click(per_frame["command"])
        mask = clip.frames[clip.command_frame].mask
        assert mask[int(y * mask.shape[0]), int(x * mask.shape[1])] > 0  # the clicked pixel is the object's
