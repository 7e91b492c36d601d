"""Evaluate removal on video clips: `sahm eval-video --checkpoint CKPT --data DIR --out OUT`.

DIR is a video dataset (`sahm make-data video`). Every clip runs twice through one `Remover` (the node's and replay's
code path): per-frame (stream mode off) and in stream mode, each from the frame the command applies to (the command
is read as the node reads it, `ros_ror.commands.parse_command`). Per mode, over the frames with the command active:

- IoU of the published mask with the ground truth, per frame (1 when both are empty); mean IoU;
- reappearance rate: among frames after the mode's first detection where the object is in view (ground-truth mask
  at least the found rule's min_mask_area), the share where it shows again in the output: found flag dropped, or
  mask IoU < 0.5 (the issue's definition). A mask that also covers a neighbour has IoU < 0.5 with the object still
  erased, so the share where the found flag dropped or the mask covers less than half of the object is reported too
  (`uncovered_rate`);
- mask stability: IoU of consecutive masks after motion compensation with the ground-truth homography (mask t-1
  warped into frame t, both restricted to what frame t-1 saw), mean over pairs where either mask is non-empty; the
  same on the ground-truth masks is the reference (objects move and get occluded, so it is below 1), over all pairs
  and over the pairs the mode's own figure has (a mode that never finds the object in a clip has none there);
- fill stability: the mean absolute change (grey levels, 0..255) of the output between consecutive frames after the
  same compensation, over the pixels filled in both frames, against the same change of the clean targets there
  (lighting drift, sensor noise and resampling alone); and, so a steady but wrong fill does not pass for a good
  one, the fill error: mean absolute difference from the clean target where the object was erased;
- latency per frame: the whole `remove()` (p50, mean) and the part spent in stream mode, from the same run.

With `--clicks`, each clip's object is named by a click instead of its expression: a pixel drawn uniformly inside
its ground-truth mask in the command's frame (seeded by --seed and the clip's index), as an operator clicks it in
rqt_image_view. Per-frame, the point stays where it was clicked; in stream mode it follows the object it removed
(`sahm_core.stream`, step 5).

The table goes to stdout and everything, per-frame IoU lists included, to OUT/metrics.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .backends import AUTO, add_backend_arguments
from .checkpoint import CheckpointError
from .click import pixel_click
from .data.video import Clip, read_clip, read_clip_rows
from .evaluate import iou
from .found import FoundRule, add_rule_arguments, rule_from_args
from .runtime import Remover
from .stream import StreamConfig, add_stream_arguments

MODES = ("per-frame", "stream")
REAPPEAR_IOU = 0.5


def warp_to_next(image: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """Frame t-1's image (HxW or HxWxC) in frame t's coordinates, given the homography view t-1 -> view t."""
    height, width = image.shape[:2]
    return cv2.warpPerspective(image, homography, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def seen_by_previous(homography: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the pixels of frame t that frame t-1 saw (inside its borders after the warp)."""
    return warp_to_next(np.ones(shape, np.float32), homography) > 0.999


def compensated_mask_iou(previous: np.ndarray, current: np.ndarray, homography: np.ndarray) -> float | None:
    """IoU of mask t-1 warped into frame t with mask t, over what frame t-1 saw; None when both are empty there."""
    seen = seen_by_previous(homography, current.shape)
    moved = warp_to_next(previous.astype(np.float32), homography) > 0.5
    inter, union = iou(moved & seen, current & seen)
    return None if union == 0 else inter / union


def compensated_change(previous: np.ndarray, current: np.ndarray, homography: np.ndarray,
                       region: np.ndarray) -> tuple[float, int]:
    """(sum of |frame t - warped frame t-1| over `region`, averaged over channels; pixel count) for uint8 RGB frames."""
    moved = warp_to_next(previous.astype(np.float32), homography)
    diff = np.abs(current.astype(np.float32) - moved).mean(axis=2)
    return float(diff[region].sum()), int(region.sum())


@dataclasses.dataclass
class FrameResult:
    mask: np.ndarray  # (H, W) bool, published
    image: np.ndarray  # (H, W, 3) uint8, published
    found: bool
    latency_s: float
    stream_s: float


def clip_click(clip: Clip, rng: np.random.Generator) -> str:
    """The command of a click on a pixel drawn uniformly inside the object's mask in the command's frame."""
    mask = clip.frames[clip.command_frame].mask
    rows, cols = np.nonzero(mask)
    if not rows.size:
        raise ValueError(f"clip seed {clip.seed}: its object is not in view when the command comes, nothing to click")
    pick = int(rng.integers(rows.size))
    return pixel_click(cols[pick], rows[pick], mask.shape[1], mask.shape[0])


def run_clip(remover: Remover, clip: Clip, stream: StreamConfig | None, command: str | None = None
             ) -> list[FrameResult]:
    """The frames from the command on, through `remover` with stream mode `stream` (None = per-frame); `command`:
    in place of the clip's expression (a click)."""
    from ros_ror.commands import parse_command  # plain Python: the node's reading of an utterance

    remover.stream = stream
    remover.set_command(command or parse_command(clip.text).target)
    results = []
    for frame in clip.frames[clip.command_frame:]:
        removal = remover.remove(frame.image)
        results.append(FrameResult(removal.mask > 0, removal.image, removal.found, removal.latency_s,
                                   removal.stream_s))
    remover.clear_command()
    return results


def clip_metrics(clip: Clip, results: list[FrameResult], rule: FoundRule) -> dict:
    """Per-clip sums and lists for one mode (see the module docstring); `summarise` turns them into rates."""
    frames = clip.frames[clip.command_frame:]
    gts = [f.mask > 0 for f in frames]
    ious, coverage = [], []
    for gt, r in zip(gts, results):
        inter, union = iou(r.mask, gt)
        ious.append(1.0 if union == 0 else inter / union)
        coverage.append(inter / max(1, int(gt.sum())))
    first = next((i for i, r in enumerate(results) if r.found), None)
    in_view = [gt.mean() >= rule.min_mask_area for gt in gts]
    checked = [i for i in range(len(results)) if first is not None and i > first and in_view[i]]
    reappeared = [i for i in checked if not results[i].found or ious[i] < REAPPEAR_IOU]
    uncovered = [i for i in checked if not results[i].found or coverage[i] < REAPPEAR_IOU]
    stability, gt_stability, gt_same_pairs = [], [], []
    fill = {"output_sum": 0.0, "target_sum": 0.0, "pixels": 0, "error_sum": 0.0, "error_pixels": 0}
    for frame, r, gt in zip(frames, results, gts):
        erased = r.mask & gt
        fill["error_sum"] += float(np.abs(r.image.astype(np.float32) - frame.target).mean(axis=2)[erased].sum())
        fill["error_pixels"] += int(erased.sum())
    for i in range(1, len(results)):
        h = frames[i].homography
        value, truth = (compensated_mask_iou(a, b, h) for a, b in ((results[i - 1].mask, results[i].mask),
                                                                   (gts[i - 1], gts[i])))
        if truth is not None:
            gt_stability.append(truth)
        if value is not None:
            stability.append(value)
            if truth is not None:
                gt_same_pairs.append(truth)
        if results[i - 1].found and results[i].found:
            region = (warp_to_next(results[i - 1].mask.astype(np.float32), h) > 0.999) & results[i].mask
            region &= seen_by_previous(h, region.shape)
            out_sum, pixels = compensated_change(results[i - 1].image, results[i].image, h, region)
            target_sum, _ = compensated_change(frames[i - 1].target, frames[i].target, h, region)
            fill["output_sum"] += out_sum
            fill["target_sum"] += target_sum
            fill["pixels"] += pixels
    return {"iou": ious, "found": [r.found for r in results], "reappearance_checked": len(checked),
            "reappeared": reappeared, "uncovered": uncovered, "mask_stability": stability,
            "gt_mask_stability": gt_stability, "gt_mask_stability_same_pairs": gt_same_pairs, "fill": fill,
            "latency_s": [r.latency_s for r in results], "stream_s": [r.stream_s for r in results]}


def summarise(per_clip: list[dict]) -> dict:
    """One mode's figures over all clips."""
    ious = [v for c in per_clip for v in c["iou"]]
    checked = sum(c["reappearance_checked"] for c in per_clip)
    reappeared = sum(len(c["reappeared"]) for c in per_clip)
    stability = [v for c in per_clip for v in c["mask_stability"]]
    gt_same_pairs = [v for c in per_clip for v in c["gt_mask_stability_same_pairs"]]
    pixels = sum(c["fill"]["pixels"] for c in per_clip)
    error_pixels = sum(c["fill"]["error_pixels"] for c in per_clip)
    latency = np.array([v for c in per_clip for v in c["latency_s"]]) * 1e3
    stream = np.array([v for c in per_clip for v in c["stream_s"]]) * 1e3
    return {
        "frames": len(ious),
        "mean_iou": float(np.mean(ious)) if ious else None,
        "found_rate": float(np.mean([f for c in per_clip for f in c["found"]])) if ious else None,
        "reappearance_rate": reappeared / checked if checked else None,
        "reappeared_frames": reappeared,
        "uncovered_rate": sum(len(c["uncovered"]) for c in per_clip) / checked if checked else None,
        "reappearance_checked": checked,
        "mask_stability": float(np.mean(stability)) if stability else None,
        "gt_mask_stability_same_pairs": float(np.mean(gt_same_pairs)) if gt_same_pairs else None,
        "fill_change": sum(c["fill"]["output_sum"] for c in per_clip) / pixels if pixels else None,
        "fill_change_clean_target": sum(c["fill"]["target_sum"] for c in per_clip) / pixels if pixels else None,
        "fill_pixels": pixels,
        "fill_error": (sum(c["fill"]["error_sum"] for c in per_clip) / error_pixels) if error_pixels else None,
        "latency_ms_p50": float(np.median(latency)) if latency.size else None,
        "latency_ms_mean": float(latency.mean()) if latency.size else None,
        "stream_ms_mean": float(stream.mean()) if stream.size else None,
        "stream_ms_max": float(stream.max()) if stream.size else None,
    }


def evaluate_video(checkpoint: str | Path, data: str | Path, out: str | Path, stream: StreamConfig = StreamConfig(),
                   rule: FoundRule = FoundRule(), backend: str = AUTO, device: str | None = None,
                   max_clips: int | None = None, threads: int | None = None, clicks: bool = False,
                   seed: int = 0) -> dict:
    """Run every clip per-frame and in stream mode, named by its expression or (`clicks`) by a click drawn with
    `seed`; write OUT/metrics.json and return its content."""
    rows = read_clip_rows(data)[:max_clips]
    if not rows:
        raise ValueError(f"{data}: no clips")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remover = Remover.load(checkpoint, backend=backend, device=device, threads=threads,
                           **dataclasses.asdict(rule))
    per_mode: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with remover:
        for index, row in enumerate(tqdm(rows, desc="eval-video", unit="clip")):
            clip = read_clip(data, row)
            command = clip_click(clip, np.random.default_rng([seed, index])) if clicks else None
            for mode, config in zip(MODES, (None, stream)):
                per_mode[mode].append({"id": row["id"], "command": command or clip.text,
                                       **clip_metrics(clip, run_clip(remover, clip, config, command), rule)})
        backend_name = f"{remover.backend} on {remover.device}"
    gt_stability = [v for c in per_mode[MODES[0]] for v in c["gt_mask_stability"]]
    metrics = {
        "checkpoint": str(checkpoint), "data": str(data), "clips": len(rows), "backend": backend_name,
        "prompt": f"click (seed {seed})" if clicks else "text",
        "stream_config": dataclasses.asdict(stream), "found_rule": dataclasses.asdict(rule),
        "ground_truth": {"mask_stability": float(np.mean(gt_stability)) if gt_stability else None},
        "modes": {mode: summarise(clips) for mode, clips in per_mode.items()},
        "per_clip": {mode: [{k: c[k] for k in ("id", "command", "iou", "found", "reappeared", "uncovered",
                                               "mask_stability")}
                            for c in clips] for mode, clips in per_mode.items()},
    }
    with open(out / "metrics.json", "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=1)
    return metrics


def _cell(value, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def format_table(metrics: dict) -> str:
    base, stream = (metrics["modes"][m] for m in MODES)
    gt = metrics["ground_truth"]
    rows = [
        ("frames with the command", "{:d}", "frames", None),
        ("mean IoU", "{:.4f}", "mean_iou", None),
        ("found rate", "{:.2%}", "found_rate", None),
        ("reappearance rate", "{:.2%}", "reappearance_rate", None),
        ("  object under half covered", "{:.2%}", "uncovered_rate", None),
        ("mask stability (GT motion)", "{:.4f}", "mask_stability", _cell(gt["mask_stability"], "{:.4f}")),
        ("  ground truth, same pairs", "{:.4f}", "gt_mask_stability_same_pairs", None),
        ("fill change, grey levels", "{:.2f}", "fill_change", None),
        ("  clean targets, same pixels", "{:.2f}", "fill_change_clean_target", None),
        ("fill error vs clean target", "{:.2f}", "fill_error", None),
        ("latency p50, ms", "{:.1f}", "latency_ms_p50", None),
        ("latency mean, ms", "{:.1f}", "latency_ms_mean", None),
        ("stream step mean / max, ms", None, None, None),
    ]
    lines = [f"{metrics['clips']} clips named by {metrics['prompt']}, {metrics['backend']}, stream strength "
             f"{metrics['stream_config']['strength']}",
             f"{'':30s}{'per-frame':>12s}{'stream':>12s}{'ground truth':>14s}"]
    for label, pattern, key, reference in rows:
        if key is None:
            cells = ["-", f"{stream['stream_ms_mean']:.2f}/{stream['stream_ms_max']:.1f}"]
        else:
            cells = [_cell(base[key], pattern), _cell(stream[key], pattern)]
        lines.append(f"{label:30s}{cells[0]:>12s}{cells[1]:>12s}{reference or '':>14s}")
    added = stream["latency_ms_mean"] - base["latency_ms_mean"]
    lines.append(f"latency added by stream mode: {added:+.2f} ms mean over the whole remove() "
                 f"(its own step: {stream['stream_ms_mean']:.2f} ms)")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="model dir / .safetensors / .onnx / .engine")
    parser.add_argument("--data", required=True, help="video dataset folder (sahm make-data video)")
    parser.add_argument("--out", required=True, help="folder for metrics.json")
    add_backend_arguments(parser)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: its own)")
    parser.add_argument("--max-clips", type=int, default=None, help="evaluate only the first N clips")
    add_rule_arguments(parser)
    add_stream_arguments(parser, switch=False)  # no --stream: both modes always run
    parser.add_argument("--clicks", action="store_true",
                        help="name each clip's object by a click inside it in the command's frame, not by its "
                             "expression")
    parser.add_argument("--seed", type=int, default=0, help="seed of the clicks' draw (default 0)")


def main(args: argparse.Namespace) -> int:
    try:
        metrics = evaluate_video(args.checkpoint, args.data, args.out, StreamConfig(strength=args.stream_strength),
                                 rule_from_args(args), args.backend, args.device, args.max_clips, args.threads,
                                 args.clicks, args.seed)
    except (CheckpointError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"sahm eval-video: error: {e}", file=sys.stderr)
        return 1
    print(format_table(metrics))
    print(f"wrote {Path(args.out) / 'metrics.json'}")
    return 0
