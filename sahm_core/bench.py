"""`sahm bench`: per-frame latency, FPS and peak memory of each backend, plus pre/post-processing cost.

sahm bench --config nano --backends torch,onnxruntime[,tensorrt] --size 256 [--checkpoint CKPT] [--iters N] [--json OUT]

Each backend runs in its own fresh process, so its peak memory is its own
(reported as the process peak and as the rise over the process's baseline after
imports). The timed call is the backend's per-frame graph exactly as Remover
runs it (numpy in, numpy out); the command's text features are computed once
and are not timed, as at run time. Pre/post-processing (resize, normalise,
found decision, composite) is timed separately on a 640x480 frame with a mask
covering about a tenth of it, and so is stream mode's work between frames
(`sahm_core.stream`: motion estimate, evidence fusion, fill) on a moving-camera
clip shown at 640x480. `--targets 1,2,4` also times the whole `Remover.remove` of a
640x480 frame with that many commands active, under a found rule that finds every one (mask
threshold, score and area floors 0: the upper bound, every row of the batch, then one fill over
the union of masks as large as they come).
Wall-clock figures come with the process CPU time
per frame, which tells a busy machine from a slow backend. This prints figures;
nothing here asserts a speed. `--backends none` measures only the host-side parts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from .backends import BACKENDS

PREPOST_SHAPE = (480, 640)
TARGET_COMMANDS = ("the red cup on the left", "the blue bottle", "the green star at the top", "the small yellow ball",
                   "the white mug", "the black box on the right", "the orange bowl", "the purple car")


def _timed(fn, iters: int) -> dict[str, float]:
    """Wall-clock p50/p99 and FPS of `fn()`, plus the p50 of the process CPU time it used (all threads): on a shared
    machine the wall clock includes waiting for a core, the CPU time does not."""
    wall, cpu = [], []
    for _ in range(iters):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    p50 = float(np.percentile(wall, 50)) * 1e3
    return {"p50_ms": p50, "p99_ms": float(np.percentile(wall, 99)) * 1e3,
            "fps": 1e3 / p50 if p50 > 0 else float("inf"), "cpu_p50_ms": float(np.percentile(cpu, 50)) * 1e3}


def _rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process in MB. Not getrusage's ru_maxrss: that survives the exec of a
    spawned child, so a child would report its parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _measure_backend(name: str, model_dir: str, device: str, threads: int, iters: int, warmup: int,
                     targets: tuple[int, ...] = ()) -> dict:
    """Runs in a fresh process: load one backend, time `iters` frames after `warmup`, report latency and memory; then
    the whole remove() for each count of `targets`."""
    import torch

    from .checkpoint import CheckpointError
    from .export.onnx_export import example_inputs
    from .runtime import PROMPT_NAMES, BackendUnavailable, load_backend, resolve_model

    torch.set_num_threads(threads)
    files = resolve_model(model_dir)
    image, *text = (t.numpy() for t in example_inputs(files.config))
    text = dict(zip(PROMPT_NAMES, text))
    baseline = _rss_mb("VmRSS")
    try:
        backend = load_backend(files, name, device, threads)
    except (BackendUnavailable, CheckpointError) as e:
        return {"backend": name, "skipped": str(e)}
    for _ in range(warmup):
        backend.run(image, text)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    timing = _timed(lambda: backend.run(image, text), iters)
    peak = _rss_mb("VmHWM")
    result = {"backend": name, "device": device, **timing, "peak_rss_mb": peak,
              "rss_over_baseline_mb": peak - baseline}
    if name == "onnxruntime":
        result["providers"] = backend.providers
    if name == "torch" and device.startswith("cuda"):
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if targets:
        result["targets"] = _measure_targets(backend, files.config, targets, iters, warmup)
    return result


def _measure_targets(backend, cfg, counts: tuple[int, ...], iters: int, warmup: int) -> list[dict]:
    """Remover.remove of one 640x480 frame with 1..N commands, each found (every threshold of the rule 0)."""
    from .found import FoundRule
    from .runtime import Remover

    remover = Remover(backend, cfg, FoundRule(mask_threshold=0.0, min_score=0.0, min_mask_area=0.0))
    h, w = PREPOST_SHAPE
    frame = cv2.resize(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8), (w, h))
    out = []
    for count in counts:
        remover.set_commands(TARGET_COMMANDS[:count])
        for _ in range(warmup):  # the first frame with two targets loads the fill graph
            removal = remover.remove(frame)
        found = sum(t.found for t in removal.targets)
        out.append({"targets": count, "found": found, **_timed(lambda: remover.remove(frame), iters)})
    return out


def measure_prepost(size: int, margin: int, iters: int = 200) -> dict:
    """Pre-processing + found decision + compositing of one 640x480 frame, as Remover.remove does it."""
    from .found import DEFAULT_RULE, found_decision
    from .runtime import composite, to_model_input

    rng = np.random.default_rng(0)
    h, w = PREPOST_SHAPE
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    radius = size * 0.18  # a disc of ~10% of the frame
    mask_prob = (1 / (1 + np.exp(((yy - size / 2) ** 2 + (xx - size / 3) ** 2) / radius**2 * 4 - 4))).astype(np.float32)
    cleaned = rng.random((3, size, size), dtype=np.float32)

    def prepost():
        to_model_input(frame, size)
        found_decision(mask_prob, DEFAULT_RULE)
        composite(frame, cleaned, mask_prob, DEFAULT_RULE.mask_threshold, margin)

    return {"frame": f"{w}x{h}", **_timed(prepost, iters)}


def measure_stream(size: int, margin: int, iters: int = 200) -> dict:
    """Stream mode's step (StreamState.fuse + record) per frame of a synthetic moving-camera clip at 640x480, with the
    ground-truth mask, softened, standing in for the network's probabilities."""
    from .data.video import ClipConfig, render_clip
    from .found import DEFAULT_RULE
    from .runtime import to_model_input
    from .stream import StreamState

    h, w = PREPOST_SHAPE
    clip = render_clip(0, ClipConfig(size=256, frames=(40, 40)))
    inputs, probabilities = [], []
    for frame in clip.frames:
        inputs.append(to_model_input(cv2.resize(frame.image, (w, h), interpolation=cv2.INTER_LINEAR), size)[0])
        soft = cv2.GaussianBlur(cv2.resize(frame.mask, (size, size)).astype(np.float32) / 255.0, (0, 0), 1.5)
        probabilities.append(0.02 + 0.96 * soft)
    state = StreamState()
    index = iter(range(10**9))

    def step():
        i = next(index) % len(inputs)
        if i == 0:
            state.reset()  # the clip starts again: a new stream, not a jump back in time
        state.fuse(inputs[i], probabilities[i], inputs[i], DEFAULT_RULE.mask_threshold, margin, (h, w, 3))
        state.record(True)  # the found decision is the runtime's, timed with pre/post-processing

    for _ in range(len(inputs)):  # warm-up: OpenCV's first calls allocate
        step()
    return {"frame": f"{w}x{h}", "model_side": size, **_timed(step, iters), "scene_cuts": state.cuts}


def _model_dir(config: str, size: int, checkpoint: str | None, workdir: Path) -> Path:
    """A model dir to benchmark: the checkpoint's, or a random-init model of the named config at `size`."""
    from dataclasses import replace

    import torch

    from .checkpoint import WEIGHTS_FILE, read_config, save_weights, weights_file
    from .config import model_config
    from .model import build_model

    if checkpoint:
        weights = weights_file(checkpoint)
        cfg = read_config(weights)
        if cfg.image_size != size:
            raise ValueError(f"{weights}: checkpoint is {cfg.image_size}px, --size asks for {size}")
        return weights.parent
    cfg = model_config(config)
    if cfg.image_size != size:
        cfg = replace(cfg, image_size=size)
    torch.manual_seed(0)
    save_weights(workdir / WEIGHTS_FILE, build_model(cfg).state_dict(), cfg)
    return workdir


def format_table(results: list[dict], prepost: dict, title: str, stream: dict | None = None) -> str:
    lines = [title, f"{'backend':<12} {'p50 ms':>8} {'p99 ms':>8} {'FPS':>7} {'CPU ms':>8} "
                    f"{'peak RSS MB':>12} {'over base MB':>13}"]
    for r in results:
        if "skipped" in r:
            lines.append(f"{r['backend']:<12} skipped: {r['skipped']}")
            continue
        lines.append(f"{r['backend']:<12} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['fps']:7.1f} {r['cpu_p50_ms']:8.1f} "
                     f"{r['peak_rss_mb']:12.0f} {r['rss_over_baseline_mb']:13.0f}")
    timed = {r["backend"]: r for r in results if "skipped" not in r}
    if "torch" in timed and "onnxruntime" in timed:
        lines.append("onnxruntime speed-up over torch eager: "
                     f"{timed['torch']['p50_ms'] / timed['onnxruntime']['p50_ms']:.2f}x")
    lines.append(f"pre/post-processing at {prepost['frame']}: p50 {prepost['p50_ms']:.2f} ms, "
                 f"p99 {prepost['p99_ms']:.2f} ms (CPU time p50 {prepost['cpu_p50_ms']:.2f} ms)")
    if stream is not None:
        lines.append(f"stream mode between frames at {stream['frame']} (model side {stream['model_side']}): "
                     f"p50 {stream['p50_ms']:.2f} ms, p99 {stream['p99_ms']:.2f} ms "
                     f"(CPU time p50 {stream['cpu_p50_ms']:.2f} ms)")
    for r in results:
        for t in r.get("targets", ()):
            lines.append(f"{r['backend']:<12} remove() at {PREPOST_SHAPE[1]}x{PREPOST_SHAPE[0]} with {t['targets']} "
                         f"target(s), {t['found']} found: p50 {t['p50_ms']:.1f} ms, p99 {t['p99_ms']:.1f} ms "
                         f"(CPU time p50 {t['cpu_p50_ms']:.1f} ms)")
    lines.append("CPU ms = process CPU time per frame over all threads; "
                 "wall >> CPU/threads means the cores were shared")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="nano", help="model config name (random weights unless --checkpoint)")
    parser.add_argument("--backends", default="torch,onnxruntime",
                        help=f"comma list from {','.join(BACKENDS)}, or none (host-side figures only)")
    parser.add_argument("--size", type=int, default=256, help="model input size S")
    parser.add_argument("--checkpoint", help="model.safetensors or model dir to benchmark instead of random weights")
    parser.add_argument("--iters", type=int, default=50, help="timed frames per backend")
    parser.add_argument("--warmup", type=int, default=5, help="untimed frames first")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="CPU threads for torch and ONNX Runtime")
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    parser.add_argument("--targets", default="",
                        help=f"comma list of target counts (1..{len(TARGET_COMMANDS)}), e.g. 1,2,4: also time the "
                             "whole remove() with that many commands active, each found")
    parser.add_argument("--json", help="also write the results as JSON here")


def main(args: argparse.Namespace) -> int:
    from .runtime import _default_device, exported_onnx, resolve_model

    backends = [b.strip() for b in args.backends.split(",") if b.strip() and b.strip() != "none"]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not (backends or args.backends.strip() == "none"):
        print(f"sahm bench: unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
        return 1
    device = args.device or _default_device()
    try:
        targets = tuple(int(t) for t in args.targets.split(",") if t.strip())
    except ValueError:
        targets = (0,)
    if not all(1 <= t <= len(TARGET_COMMANDS) for t in targets):
        print(f"sahm bench: --targets {args.targets!r}: counts must be integers from 1 to {len(TARGET_COMMANDS)}")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        try:
            model_dir = _model_dir(args.config, args.size, args.checkpoint, Path(tmp))
        except (ValueError, RuntimeError) as e:
            print(f"sahm bench: {e}")
            return 1
        files = resolve_model(model_dir)
        if files.weights is not None and {"onnxruntime", "tensorrt"} & set(backends):
            exported_onnx(files.weights, files.config)  # export outside the timed child processes
            if max(targets, default=1) > 1:
                exported_onnx(files.weights, files.config, "fill")
        spawn = multiprocessing.get_context("spawn")
        results = []
        for name in backends:
            with spawn.Pool(1) as pool:
                results.append(pool.apply(_measure_backend,
                                          (name, str(model_dir), device, args.threads, args.iters, args.warmup,
                                           targets)))
    prepost = measure_prepost(args.size, files.config.removal_margin)
    stream = measure_stream(args.size, files.config.removal_margin)
    title = (f"sahm bench: {files.config.name} at {args.size}x{args.size}, device {device}, {args.threads} threads, "
             f"{args.iters} frames after {args.warmup} warm-up")
    print(format_table(results, prepost, title, stream))
    if args.json:
        doc = {"config": files.config.name, "size": args.size, "device": device, "threads": args.threads,
               "iters": args.iters, "backends": results, "prepost": prepost, "stream": stream}
        Path(args.json).write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.json}")
    return 0
