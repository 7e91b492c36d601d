"""Remover: pre/post-processing, compositing, found/not-found, backends (torch, onnxruntime), errors and fallback,
auto's order on CUDA and CPU, the ONNX Runtime provider check, torch precision, close() and a load/close soak."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import replace

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import sahm_core
from sahm_core import runtime
from sahm_core.bench import _rss_mb
from sahm_core.checkpoint import CONFIG_KEY, CheckpointError, load_model, load_weights, save_weights
from sahm_core.cli import main as sahm_main
from sahm_core.click import CLICK_TEXT, parse_click, pixel_click
from sahm_core.export.onnx_export import VERSION_KEY, PerFrameGraph, example_inputs, onnx_metadata
from sahm_core.export.tensorrt_engine import tensorrt_available
from sahm_core.found import FoundRule, rule_from_args
from sahm_core.model.point import no_point
from sahm_core.runtime import (
    BackendUnavailable,
    Candidate,
    ModelFiles,
    Remover,
    auto_candidates,
    composite,
    exported_onnx,
    found_decision,
    to_model_input,
)
from sahm_core.stream import StreamConfig, grow_probabilities
from sahm_core.text import CommandEncoder

COMMAND = "remove the red circle on the left"
LOOSE = dict(min_score=0.0, min_mask_area=0.0)  # random weights: accept any non-empty mask


@pytest.fixture(scope="module")
def removers(nano_model_dir, shared_cache):
    out = {name: Remover.load(nano_model_dir, backend=name, device="cpu", threads=2, **LOOSE)
           for name in ("torch", "onnxruntime")}
    for remover in out.values():
        remover.set_command(COMMAND)
    return out


@pytest.fixture(scope="module")
def median_probability(nano_model_dir):
    """frame -> median mask probability of the random nano model (PyTorch, outside the Remover) for COMMAND.

    Random weights put the probabilities anywhere; a threshold at the median makes about half of the frame "the
    object", so compositing is exercised on a large mask with a long boundary.
    """
    model, cfg = load_model(nano_model_dir)
    graph = PerFrameGraph(model)
    text = CommandEncoder.for_config(cfg).encode(COMMAND)

    def median(frame):
        with torch.no_grad():
            _, mask = graph(torch.from_numpy(to_model_input(frame, cfg.image_size)), *text, no_point(1))
        return float(mask.median())

    return median


def _set_threshold(removers, threshold):
    for remover in removers.values():
        remover.mask_threshold = threshold


def _frame(h, w, seed=0):
    """A smooth synthetic scene (gradient + a disc) rather than noise, so resizing behaves as on a photo."""
    yy, xx = np.mgrid[:h, :w]
    frame = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), (xx + yy) * 127 // max(1, h + w - 2)], -1)
    frame[(yy - h // 2) ** 2 + (xx - w // 3) ** 2 < (min(h, w) // 5) ** 2] = (220, 30, 30)
    rng = np.random.default_rng(seed)
    return np.clip(frame + rng.integers(-8, 9, frame.shape), 0, 255).astype(np.uint8)


def test_found_decision_worked_by_hand():
    prob = np.array([[0.875, 0.75], [0.25, 0.375]], np.float32)  # exact in binary floating point
    # threshold 0.5 selects 0.875 and 0.75: area 2/4, score mean(0.875, 0.75) = 0.8125
    found, score, area = found_decision(prob, FoundRule(mask_threshold=0.5, min_score=0.8125, min_mask_area=0.5))
    assert found and score == 0.8125 and area == 0.5
    assert not found_decision(prob, FoundRule(0.5, min_score=0.82, min_mask_area=0.5))[0]  # score just under
    assert not found_decision(prob, FoundRule(0.5, min_score=0.8125, min_mask_area=0.51))[0]  # area just under
    empty = FoundRule(mask_threshold=0.95, min_score=0.0, min_mask_area=0.0)
    assert found_decision(prob, empty) == (False, 0.0, 0.0)  # empty mask
    # the default rule: 0.8125 >= 0.6 and 2/4 >= 0.002
    assert FoundRule() == FoundRule(0.5, 0.6, 0.002) and found_decision(prob) == (True, 0.8125, 0.5)


def test_found_rule_is_validated_and_shared_by_every_command_line():
    for bad in (dict(mask_threshold=1.0), dict(mask_threshold=-0.1), dict(min_score=1.5), dict(min_mask_area=-1e-3)):
        with pytest.raises(ValueError, match=f"found rule out of range.*{next(iter(bad))}"):
            FoundRule(**bad)
    from ros_ror.replay import add_arguments as replay_arguments
    from sahm_core.evaluate import add_arguments as eval_arguments

    for add_arguments, required in ((runtime.add_arguments, ["x.png", "--model", "m", "--command", "c", "--out", "o"]),
                                    (eval_arguments, ["--checkpoint", "c", "--data", "d", "--out", "o"]),
                                    (replay_arguments, ["in", "out", "--image-topic", "i", "--command-topic", "c"])):
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        assert rule_from_args(parser.parse_args(required)) == FoundRule()
        changed = parser.parse_args([*required, "--mask-threshold", "0.25", "--min-score", "0.5",
                                     "--min-mask-area", "0"])
        assert rule_from_args(changed) == FoundRule(0.25, 0.5, 0.0)


def test_cuda_index_agrees_with_torch_and_names_a_bad_device():
    for device in ("cuda", "cuda:0", "cuda:3", "cuda:12"):
        assert runtime.cuda_index(device) == (torch.device(device).index or 0)
    for bad in ("cpu", "cuda:", "cuda:x", "cuda:-1", "cudas:1", "gpu:0"):
        with pytest.raises(ValueError, match=f"got '{bad}'"):
            runtime.cuda_index(bad)


def test_to_model_input_shape_range_and_channel_order():
    frame = np.zeros((479, 641, 3), np.uint8)
    frame[..., 0] = 255  # pure red
    x = to_model_input(frame, 64)
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
    assert np.allclose(x[0, 0], 1.0) and np.allclose(x[0, 1:], 0.0)


def test_composite_matches_the_blend_formula():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (479, 641, 3), dtype=np.uint8)
    cleaned = rng.random((3, 32, 32), dtype=np.float32)
    prob = np.zeros((32, 32), np.float32)
    prob[8:20, 5:15] = 0.9
    image, mask = composite(frame, cleaned, prob, 0.5)
    # Reference: orig*(1-m) + up(pred)*m in float, m = binarised upsampled probabilities.
    m = (cv2.resize(prob, (641, 479), interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.float32)[..., None]
    pred = cv2.resize((cleaned.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8), (641, 479),
                      interpolation=cv2.INTER_LINEAR)
    expected = frame * (1 - m) + pred * m
    assert image.dtype == np.uint8 and image.shape == frame.shape
    assert np.array_equal(image, expected.astype(np.uint8))
    assert set(np.unique(mask)) == {0, 255} and np.array_equal(mask > 0, m[..., 0] > 0)


def test_composite_margin_writes_the_grown_mask_and_nothing_else():
    """margin 2 at model resolution: the written region is the brute-force 5x5 max filter of the probabilities,
    thresholded after the same upsampling; outside it the frame is bit-exact."""
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    cleaned = rng.random((3, 32, 32), dtype=np.float32)
    prob = np.zeros((32, 32), np.float32)
    prob[10:14, 0:6] = 0.9  # touches the left border
    prob[25, 25] = 0.7
    padded = np.pad(prob, 2, constant_values=-np.inf)
    grown = np.max([padded[dy:dy + 32, dx:dx + 32] for dy in range(5) for dx in range(5)], axis=0)
    assert grown[8:16, 0:8].min() == np.float32(0.9) and grown[23:28, 23:28].min() == np.float32(0.7)
    image, mask = composite(frame, cleaned, prob, 0.5, margin=2)
    expected_image, expected_mask = composite(frame, cleaned, grown, 0.5)
    assert np.array_equal(mask, expected_mask) and np.array_equal(image, expected_image)
    assert (mask > 0).sum() > (composite(frame, cleaned, prob, 0.5)[1] > 0).sum()
    assert np.array_equal(image[mask == 0], frame[mask == 0])


@pytest.mark.parametrize("shape", [(479, 641), (7, 5)])  # odd sizes, shrinking and enlarging
def test_remove_keeps_size_and_outside_pixels(removers, median_probability, shape):
    frame = _frame(*shape)
    _set_threshold(removers, median_probability(frame))
    for remover in removers.values():
        result = remover.remove(frame)
        assert result.image.shape == frame.shape and result.image.dtype == np.uint8
        assert result.mask.shape == shape and result.mask.dtype == np.uint8
        assert result.found, (f"{remover.backend}: random nano model found nothing (score {result.score}); "
                              "test precondition")
        outside = result.mask == 0
        assert 0 < outside.sum() < outside.size
        assert np.array_equal(result.image[outside], frame[outside])  # bit-exact outside the mask
        assert result.latency_s > 0


def test_strided_frame_views_are_accepted(removers, median_probability):
    frame = _frame(50, 70)
    view = frame[:, ::-1]  # e.g. a BGR->RGB or mirrored view with negative strides
    _set_threshold(removers, median_probability(view.copy()))
    result = removers["onnxruntime"].remove(view)
    assert np.array_equal(result.image[result.mask == 0], view[result.mask == 0])
    assert np.array_equal(result.image, removers["onnxruntime"].remove(view.copy()).image)


def test_torch_and_onnxruntime_agree(removers, median_probability):
    frame = _frame(479, 641, seed=3)
    _set_threshold(removers, median_probability(frame))
    torch_out, ort_out = removers["torch"].remove(frame), removers["onnxruntime"].remove(frame)
    assert removers["onnxruntime"].backend == "onnxruntime" and removers["torch"].backend == "torch"
    assert torch_out.found and ort_out.found
    assert abs(torch_out.score - ort_out.score) < 1e-4
    differing = np.count_nonzero(torch_out.mask != ort_out.mask)
    assert differing <= 1e-3 * frame.shape[0] * frame.shape[1]  # only pixels sitting on the threshold may flip
    both = (torch_out.mask > 0) & (ort_out.mask > 0)
    diff = np.abs(torch_out.image[both].astype(int) - ort_out.image[both].astype(int))
    assert diff.max() <= 1  # 1e-6 graph differences may round a uint8 either way


def test_no_command_passes_frames_through(nano_model_dir, shared_cache):
    remover = Remover.load(nano_model_dir, backend="torch", device="cpu", **LOOSE)
    frame = _frame(48, 64)
    result = remover.remove(frame)
    assert not result.found and result.score == 0.0 and remover.command is None
    assert np.array_equal(result.image, frame) and not result.mask.any()
    assert result.image is not frame  # a copy: the caller may reuse its buffer
    remover.set_command(COMMAND)
    assert remover.command == COMMAND
    remover.clear_command()
    assert remover.command is None and not remover.remove(frame).found


def test_not_found_returns_frame_unchanged(removers, median_probability):
    frame = _frame(120, 160)
    threshold = median_probability(frame)
    remover = removers["onnxruntime"]
    remover.mask_threshold, remover.min_score = threshold, 1.0
    assert remover.rule == FoundRule(threshold, 1.0, LOOSE["min_mask_area"])  # the attributes, as they stand now
    try:
        result = remover.remove(frame)
    finally:
        remover.min_score = LOOSE["min_score"]
    assert not result.found and threshold < result.score < 1.0  # something was segmented, but not confidently enough
    assert np.array_equal(result.image, frame) and not result.mask.any()
    remover.min_mask_area = 0.999  # the same frame, now failing on area instead of score
    try:
        result = remover.remove(frame)
    finally:
        remover.min_mask_area = LOOSE["min_mask_area"]
    assert not result.found and np.array_equal(result.image, frame)
    assert remover.remove(frame).found  # and with the loose thresholds back, it is found


def test_empty_command_and_bad_frames_are_value_errors(removers):
    remover = removers["onnxruntime"]
    for bad in ("", "   \n", None, 3):
        with pytest.raises(ValueError, match="command"):
            remover.set_command(bad)
    assert remover.command == COMMAND  # a rejected command leaves the active one in place
    for frame in (np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                  np.zeros((0, 4, 3), np.uint8), [[0, 0, 0]]):
        with pytest.raises(ValueError, match="frame"):
            remover.remove(frame)


def test_thresholds_are_validated(nano_model_dir):
    with pytest.raises(ValueError, match="mask_threshold"):
        Remover.load(nano_model_dir, backend="torch", mask_threshold=1.5)


def test_missing_and_corrupt_model_files_name_the_file(tmp_path, nano_model_dir):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError, match="nope.safetensors.*not found"):
        Remover.load(missing)
    with pytest.raises(CheckpointError, match="holds none of"):
        Remover.load(tmp_path)
    corrupt = tmp_path / "model.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match=f"{corrupt}.*not a readable safetensors"):
        Remover.load(corrupt, backend="torch")
    with pytest.raises(CheckpointError, match="unknown model file type"):
        Remover.load(shutil.copy(nano_model_dir / "model.safetensors", tmp_path / "model.bin"))


def test_load_model_rebuilds_the_saved_network_and_names_weights_that_do_not_fit(tmp_path, nano_model_dir):
    state, cfg = load_weights(nano_model_dir / "model.safetensors")
    model, loaded_cfg = load_model(nano_model_dir)  # a model dir or its weights file
    assert loaded_cfg == cfg and not model.training
    loaded = model.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], v) for k, v in state.items())
    with pytest.raises(CheckpointError, match="expected 'other'"):
        load_model(nano_model_dir, expect=replace(cfg, name="other"))
    del state[next(k for k in state if k.endswith(".weight"))]  # weights from other code: a missing tensor
    save_weights(tmp_path / "stale.safetensors", state, cfg)
    with pytest.raises(CheckpointError, match="stale.safetensors: weights do not fit the SAHM"):
        load_model(tmp_path / "stale.safetensors")


def test_onnx_is_exported_into_the_cache_not_the_model_dir(tmp_path, nano_model_dir, shared_cache):
    model_dir = tmp_path / "model"
    shutil.copytree(nano_model_dir, model_dir)
    remover = Remover.load(model_dir, backend="onnxruntime", device="cpu")
    cached = remover._backend.onnx_file
    assert cached.parent == shared_cache / "onnx"
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.safetensors"]
    stamp = cached.stat().st_mtime_ns
    assert Remover.load(model_dir, backend="onnxruntime", device="cpu")._backend.onnx_file == cached
    assert cached.stat().st_mtime_ns == stamp  # reused, not exported again


def test_corrupt_onnx_errors_and_auto_falls_back(tmp_path, nano_model_dir, shared_cache, caplog):
    model_dir = tmp_path / "model"
    shutil.copytree(nano_model_dir, model_dir)
    (model_dir / "model.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(CheckpointError, match="model.onnx.*not a readable ONNX file"):
        Remover.load(model_dir, backend="onnxruntime", device="cpu")
    with caplog.at_level(logging.WARNING, logger="sahm_core.runtime"):
        remover = Remover.load(model_dir, backend="auto", device="cpu")
    assert remover.backend == "torch"
    assert any("onnxruntime" in r.message and "model.onnx" in r.message and "falling back to torch" in r.message
               for r in caplog.records)


def test_stale_onnx_is_refused(tmp_path, nano_model_dir, shared_cache):
    """A model.onnx exported from other weights than the model.safetensors beside it is a mismatch, not a silent mix."""
    state, cfg = load_weights(nano_model_dir / "model.safetensors")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(exported_onnx(nano_model_dir / "model.safetensors", cfg), model_dir / "model.onnx")
    first = next(iter(state))
    save_weights(model_dir / "model.safetensors", {**state, first: state[first] + 1.0}, cfg)
    with pytest.raises(CheckpointError, match="model.onnx.*other weights"):
        Remover.load(model_dir, backend="onnxruntime", device="cpu")


def test_cached_export_from_another_package_version_is_exported_again(nano_model_dir, shared_cache):
    """The graph is the code's as much as the weights': an export made by other code must not be reused."""
    weights = nano_model_dir / "model.safetensors"
    cached = exported_onnx(weights, load_weights(weights)[1])
    graph = onnx.load(str(cached))
    onnx.helper.set_model_props(graph, {**onnx_metadata(cached), VERSION_KEY: "0.0.0"})
    onnx.save(graph, str(cached))
    assert exported_onnx(weights, load_weights(weights)[1]) == cached
    assert onnx_metadata(cached)[VERSION_KEY] == sahm_core.__version__


def test_onnx_for_another_config_is_refused(tmp_path, nano_model_dir, shared_cache):
    weights = nano_model_dir / "model.safetensors"
    cfg = load_weights(weights)[1]
    model_dir = tmp_path / "model"
    shutil.copytree(nano_model_dir, model_dir)
    graph = onnx.load(str(exported_onnx(weights, cfg)))
    onnx.helper.set_model_props(graph, {CONFIG_KEY: replace(cfg, name="other", image_size=320).to_json()})
    onnx.save(graph, str(model_dir / "model.onnx"))
    with pytest.raises(CheckpointError, match="model.onnx: graph was exported for config 'other' \\(320px\\)"):
        Remover.load(model_dir, backend="onnxruntime", device="cpu")


def test_corrupt_engine_auto_falls_back_to_onnxruntime(tmp_path, nano_model_dir, shared_cache, caplog):
    model_dir = tmp_path / "model"
    shutil.copytree(nano_model_dir, model_dir)
    (model_dir / "model.engine").write_bytes(b"\x00" * 64)  # no sidecar metadata, unreadable plan
    with caplog.at_level(logging.WARNING, logger="sahm_core.runtime"):
        remover = Remover.load(model_dir, backend="auto", device="cpu")
    assert remover.backend == "onnxruntime"
    assert any("tensorrt" in r.message and "model.engine" in r.message and "falling back to onnxruntime" in r.message
               for r in caplog.records)


def test_sahm_remove_cli(tmp_path, nano_model_dir, shared_cache, capsys):
    # Thresholds at 0: a random model's mask may be anywhere; this checks the file round trip, sizes and errors.
    images = []
    for i, shape in enumerate([(61, 83), (32, 32)]):
        path = tmp_path / f"frame{i}.png"
        cv2.imwrite(str(path), cv2.cvtColor(_frame(*shape, seed=i), cv2.COLOR_RGB2BGR))
        images.append(str(path))
    out = tmp_path / "out"
    args = ["remove", "--model", str(nano_model_dir), "--command", COMMAND, "--out", str(out),
            "--backend", "onnxruntime", "--mask-threshold", "0", "--min-score", "0", "--min-mask-area", "0", *images]
    assert sahm_main(args) == 0
    for i, shape in enumerate([(61, 83), (32, 32)]):
        cleaned = cv2.imread(str(out / f"frame{i}.png"))
        mask = cv2.imread(str(out / f"frame{i}_mask.png"), cv2.IMREAD_GRAYSCALE)
        assert cleaned.shape == (*shape, 3) and mask.shape == shape
    (tmp_path / "broken.png").write_bytes(b"png? no")
    assert sahm_main(args[:-2] + [str(tmp_path / "broken.png")]) == 1
    assert "broken.png: cannot read" in capsys.readouterr().out


def test_bench_reports_every_backend(tmp_path, nano_model_dir, shared_cache, capsys):
    """Figures are printed, not asserted: this checks the run completes and reports each backend
    (or why it is skipped). The session's nano weights, so their cached graphs serve the bench too."""
    out = tmp_path / "bench.json"
    assert sahm_main(["bench", "--checkpoint", str(nano_model_dir), "--backends", "onnxruntime,tensorrt",
                      "--size", "256", "--iters", "2", "--warmup", "1", "--threads", "1", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    rows = {r["backend"]: r for r in doc["backends"]}
    assert rows["onnxruntime"]["p50_ms"] > 0 and rows["onnxruntime"]["peak_rss_mb"] > 0
    assert ("skipped" in rows["tensorrt"]) == (tensorrt_available() is not None)
    assert doc["prepost"]["frame"] == "640x480"
    assert doc["stream"]["frame"] == "640x480" and doc["stream"]["p50_ms"] > 0 and doc["stream"]["scene_cuts"] == 0
    printed = capsys.readouterr().out
    assert "onnxruntime" in printed and "pre/post-processing at 640x480" in printed
    assert "stream mode between frames at 640x480" in printed
    assert sahm_main(["bench", "--backends", "onnxruntime,tpu"]) == 1


# ---------------------------------------------------------------- auto's order and its fallbacks

def _model_dir_with_engine(tmp_path, nano_model_dir):
    """A copy of the nano model with a model.engine beside it, so auto has a TensorRT candidate."""
    model_dir = tmp_path / "model"
    shutil.copytree(nano_model_dir, model_dir)
    (model_dir / "model.engine").write_bytes(b"plan bytes")
    return model_dir


def test_auto_order_on_cuda_and_on_cpu(nano_model_dir):
    cfg = load_weights(nano_model_dir / "model.safetensors")[1]
    plain = ModelFiles(nano_model_dir, cfg, weights=nano_model_dir / "model.safetensors")
    with_engine = ModelFiles(nano_model_dir, cfg, weights=plain.weights, engine=nano_model_dir / "model.engine")
    cpu_tail = [Candidate("onnxruntime", "cpu"), Candidate("torch", "cpu")]
    gpu = [Candidate("torch", "cuda:1", "fp16"), Candidate("onnxruntime", "cuda:1")]
    assert auto_candidates(with_engine, "cuda:1") == [Candidate("tensorrt", "cuda:1")] + gpu + cpu_tail
    assert auto_candidates(plain, "cuda:1") == gpu + cpu_tail
    assert auto_candidates(plain, "cuda", precision="bf16")[0] == Candidate("torch", "cuda", "bf16")
    assert str(Candidate("torch", "cuda", "fp16")) == "torch on cuda (fp16)"
    assert auto_candidates(plain, "cpu") == cpu_tail  # ORT before torch: faster on a CPU
    assert auto_candidates(with_engine, "cpu") == [Candidate("tensorrt", "cpu")] + cpu_tail  # it says why it cannot run


class _PycudaError(Exception):
    """Stands in for pycuda.driver.Error, which derives from Exception, not RuntimeError."""


@pytest.mark.parametrize("error", [
    RuntimeError("TensorRT failed to build an engine from model.onnx (see the TensorRT log above)"),
    _PycudaError("cuInit failed: no CUDA-capable device is detected"),
    AttributeError("type object 'tensorrt.BuilderFlag' has no attribute 'FP16'"),
], ids=["trt-build", "pycuda-init", "trt11-fp16"])
def test_auto_falls_back_past_any_tensorrt_error_and_says_why(tmp_path, nano_model_dir, shared_cache, caplog,
                                                             monkeypatch, error):
    def failing_tensorrt(files, device):
        raise error

    monkeypatch.setattr(runtime, "TensorRTBackend", failing_tensorrt)
    model_dir = _model_dir_with_engine(tmp_path, nano_model_dir)
    with pytest.raises(type(error)):  # a named backend still raises what it raised
        Remover.load(model_dir, backend="tensorrt", device="cpu")
    with caplog.at_level(logging.WARNING, logger="sahm_core.runtime"):
        remover = Remover.load(model_dir, backend="auto", device="cpu")
    assert (remover.backend, remover.device) == ("onnxruntime", "cpu")
    warning = next(r.message for r in caplog.records if r.levelno == logging.WARNING)
    assert f"backend tensorrt on cpu cannot load {model_dir}" in warning
    assert f"{type(error).__name__}: {error}" in warning and "falling back to onnxruntime on cpu" in warning
    remover.close()


def test_auto_raises_only_when_every_backend_failed_listing_each_reason(nano_model_dir, tmp_path, shared_cache,
                                                                       monkeypatch, caplog):
    def failing(kind):
        def backend(files, device, *args):
            raise RuntimeError(f"{kind} broke on {device}")
        return backend

    for name in ("TensorRTBackend", "OnnxRuntimeBackend", "TorchBackend"):
        monkeypatch.setattr(runtime, name, failing(name))
    model_dir = _model_dir_with_engine(tmp_path, nano_model_dir)
    with caplog.at_level(logging.WARNING, logger="sahm_core.runtime"), pytest.raises(CheckpointError) as raised:
        Remover.load(model_dir, backend="auto", device="cuda:0")
    message = str(raised.value)
    expected = [("tensorrt on cuda:0", "TensorRTBackend broke on cuda:0"),
                ("torch on cuda:0 (fp16)", "TorchBackend broke on cuda:0"),
                ("onnxruntime on cuda:0", "OnnxRuntimeBackend broke on cuda:0"),
                ("onnxruntime on cpu", "OnnxRuntimeBackend broke on cpu"),
                ("torch on cpu", "TorchBackend broke on cpu")]
    assert message.startswith(f"{model_dir}: no backend could load the model")
    for candidate, reason in expected:
        assert f"{candidate}: RuntimeError: {reason}" in message
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == len(expected) - 1  # one per fallback


def test_auto_on_a_cuda_device_tries_gpu_backends_first(nano_model_dir, shared_cache, caplog):
    """On this CPU-only box torch on CUDA and ONNX Runtime on CUDA must both fail, each with a logged reason, and auto
    ends on ONNX Runtime's CPU provider; on a CUDA machine torch fp16 on the GPU wins."""
    with caplog.at_level(logging.WARNING, logger="sahm_core.runtime"):
        remover = Remover.load(nano_model_dir, backend="auto", device="cuda")
    if torch.cuda.is_available():
        assert (remover.backend, remover.device, remover._backend.precision) == ("torch", "cuda", "fp16")
    else:
        assert (remover.backend, remover.device) == ("onnxruntime", "cpu")
        warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2
        assert "torch on cuda (fp16) cannot load" in warnings[0]
        assert "falling back to onnxruntime on cuda" in warnings[0]
        assert "onnxruntime on cuda cannot load" in warnings[1] and "BackendUnavailable" in warnings[1]
        assert "falling back to onnxruntime on cpu" in warnings[1]
    remover.close()


# ---------------------------------------------------------------- ONNX Runtime's CUDA provider is checked, not assumed

@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime has CUDA")
def test_onnxruntime_asked_for_cuda_never_gives_a_cpu_session(nano_model_dir, shared_cache, monkeypatch):
    import importlib.metadata

    installed = f"onnxruntime {importlib.metadata.version('onnxruntime')}"
    with pytest.raises(BackendUnavailable) as raised:
        Remover.load(nano_model_dir, backend="onnxruntime", device="cuda")
    message = str(raised.value)
    assert "has no CUDAExecutionProvider" in message and installed in message and "CPUExecutionProvider" in message
    assert "onnxruntime-gpu" in message and "CUDA 13 + cuDNN 9" in message
    # A CUDA provider that is listed but fails to start: ORT itself then drops it with only a warning (the real
    # fallback of onnxruntime-gpu with a CUDA / cuDNN it was not built for). The session's providers tell.
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(BackendUnavailable, match=r"made a session on \['CPUExecutionProvider'\] only"):
        Remover.load(nano_model_dir, backend="onnxruntime", device="cuda:0")


# ---------------------------------------------------------------- torch precision

def test_torch_low_precision_runs_under_autocast_and_stays_near_fp32(nano_model_dir):
    """bf16 autocast on the CPU (fp16 is the same code path on CUDA): the outputs differ from fp32, so autocast is
    really on, yet stay close; the reference is the fp32 run of the same weights."""
    cfg = load_weights(nano_model_dir / "model.safetensors")[1]
    image, *text = (t.numpy() for t in example_inputs(cfg))
    text = dict(zip(runtime.PROMPT_NAMES, text))
    files = runtime.resolve_model(nano_model_dir)
    full = runtime.load_backend(files, "torch", "cpu")
    half = runtime.load_backend(files, "torch", "cpu", precision="bf16")
    (cleaned32, mask32), (cleaned16, mask16) = full.run(image, text), half.run(image, text)
    assert full.precision == "fp32" and half.precision == "bf16"
    assert cleaned16.dtype == mask16.dtype == np.float32
    assert not np.array_equal(mask16, mask32)
    assert np.abs(mask16 - mask32).mean() < 0.02 and np.abs(cleaned16 - cleaned32).mean() < 0.02
    with pytest.raises(ValueError, match="precision"):
        runtime.load_backend(files, "torch", "cpu", precision="int8")
    with pytest.raises(ValueError, match="torch backend only"):
        runtime.load_backend(files, "onnxruntime", "cpu", precision="fp16")


# ---------------------------------------------------------------- close() and a load/close soak

def test_close_is_idempotent_and_remove_after_close_is_an_error(nano_model_dir, shared_cache):
    with Remover.load(nano_model_dir, backend="onnxruntime", device="cpu", **LOOSE) as remover:
        remover.set_command(COMMAND)
        assert remover.remove(_frame(32, 32)).image.shape == (32, 32, 3) and not remover.closed
    assert remover.closed
    remover.close()  # a second close does nothing
    with pytest.raises(RuntimeError, match="Remover \\(onnxruntime on cpu\\) is closed"):
        remover.remove(_frame(32, 32))
    torch_remover = Remover.load(nano_model_dir, backend="torch", device="cpu")
    torch_remover.close()
    assert torch_remover.closed


def test_fifty_load_close_cycles_do_not_grow_rss(nano_model_dir, shared_cache):
    """Invariant: what a loaded, used and closed Remover held is given back. RSS after 50 load / remove / close
    cycles of an ONNX Runtime Remover stays within 100 MB of RSS after the first 5 (allocator warm-up); figures are
    printed."""
    frame = _frame(120, 160)
    encoded = None
    rss = []
    for _ in range(50):
        remover = Remover.load(nano_model_dir, backend="onnxruntime", device="cpu", threads=1, **LOOSE)
        if encoded is None:
            remover.set_command(COMMAND)
            encoded = remover._commands
        remover._commands = encoded  # the text encoder is shared and not under test
        remover.remove(frame)
        remover.close()
        rss.append(_rss_mb("VmRSS"))
    growth = rss[-1] - rss[4]
    print(f"RSS after cycle 1: {rss[0]:.1f} MB, 5: {rss[4]:.1f} MB, 50: {rss[-1]:.1f} MB, growth {growth:+.1f} MB")
    assert growth < 100


def _given_mask(shape):
    """An ellipse and a one-pixel speck: a given mask's smallest part must be erased too."""
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (shape[1] // 2, shape[0] // 2), (shape[1] // 5, shape[0] // 6), 20, 0, 360, 255, -1)
    mask[3, 4] = 255
    return mask


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_a_given_mask_is_erased_with_the_fill_graph_and_nothing_else_changes(nano_model_dir, shared_cache, backend):
    frame = _frame(120, 160, seed=1)
    given = _given_mask(frame.shape[:2])
    with Remover.load(nano_model_dir, backend=backend, device="cpu", **LOOSE) as remover:
        remover.load_fill()
        result = remover.remove(frame, erase=given)
    assert not result.found  # no command: nothing of the model's own was erased
    erased = result.mask > 0
    assert erased[given > 0].all() and result.given_pixels == np.count_nonzero(given)
    assert np.array_equal(result.image[~erased], frame[~erased])  # bit-exact outside the mask
    # the fill graph's hole is the given mask at model resolution grown by the removal margin, and no more
    hole = runtime.to_model_hole(given, 256)[0, 0]
    expected = composite(frame, np.zeros((3, 256, 256), np.float32), hole, 0.5, remover.config.removal_margin)[1]
    assert np.array_equal(result.mask, expected)


def test_a_given_mask_and_the_commands_object_are_erased_by_one_fill_over_their_union(removers, median_probability):
    frame = _frame(120, 160, seed=2)
    given = _given_mask(frame.shape[:2])
    _set_threshold(removers, median_probability(frame))
    remover = removers["onnxruntime"]
    alone = remover.remove(frame)
    both = remover.remove(frame, erase=given)
    assert alone.found and both.found and both.score == alone.score
    assert ((both.mask > 0) >= (alone.mask > 0)).all() and (both.mask[given > 0] > 0).all()
    assert np.array_equal(both.image[both.mask == 0], frame[both.mask == 0])
    torch_both = removers["torch"].remove(frame, erase=given)
    assert np.count_nonzero(torch_both.mask != both.mask) <= 1e-3 * given.size  # threshold-edge pixels only
    same = (torch_both.mask > 0) & (both.mask > 0)
    assert np.abs(torch_both.image[same].astype(int) - both.image[same].astype(int)).max() <= 1


def test_a_given_mask_of_another_size_or_type_is_a_value_error(removers):
    frame = _frame(48, 64)
    for bad, why in [(np.zeros((48, 63), np.uint8), "64x48"), (np.zeros((48, 64), np.float32), "uint8 or bool"),
                     ([[0]], "uint8 or bool"), (np.zeros((48, 64, 1), np.uint8), "frame's size")]:
        with pytest.raises(ValueError, match=why):
            removers["onnxruntime"].remove(frame, erase=bad)


def test_sahm_remove_erases_a_given_mask_without_a_command(tmp_path, nano_model_dir, shared_cache, capsys):
    frame = _frame(61, 83, seed=4)
    cv2.imwrite(str(tmp_path / "frame.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    given = _given_mask(frame.shape[:2])
    cv2.imwrite(str(tmp_path / "given.png"), given)
    out = tmp_path / "out"
    args = ["remove", "--model", str(nano_model_dir), "--erase-mask", str(tmp_path / "given.png"), "--out", str(out),
            "--backend", "onnxruntime", str(tmp_path / "frame.png")]
    assert sahm_main(args) == 0, capsys.readouterr().out
    cleaned = cv2.cvtColor(cv2.imread(str(out / "frame.png")), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(out / "frame_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    assert mask[given > 0].all() and np.array_equal(cleaned[~mask], frame[~mask])
    with Remover.load(nano_model_dir, backend="onnxruntime") as remover:  # what the CLI wrote is the runtime's answer
        assert np.array_equal(cleaned, remover.remove(frame, erase=given).image)
    cv2.imwrite(str(tmp_path / "small.png"), given[:30])
    assert sahm_main(args[:4] + [str(tmp_path / "small.png")] + args[5:]) == 1
    assert "it is 83x30, the frame 83x61; skipped" in capsys.readouterr().out
    assert sahm_main(args[:2] + [str(nano_model_dir), "--out", str(out), str(tmp_path / "frame.png")]) == 1
    assert "say what to remove with --command or --click, or give --erase-mask" in capsys.readouterr().out


# ---------------------------------------------------------------- several targets

TARGETS = [COMMAND, "the blue square at the top", "the green star"]


def _singles(remover, frame, commands):
    """Each command alone: the reference for its row of a batch."""
    singles = []
    for command in commands:
        remover.set_command(command)
        singles.append(remover.remove(frame))
    return singles


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_several_commands_are_one_batch_each_decided_as_if_alone(removers, median_probability, backend):
    frame = _frame(120, 160, seed=5)
    _set_threshold(removers, median_probability(frame))
    remover = removers[backend]
    singles = _singles(remover, frame, TARGETS)
    remover.set_commands(TARGETS + [TARGETS[1]])  # a repeated text is one target
    both = remover.remove(frame)
    assert remover.commands == tuple(TARGETS) and [t.text for t in both.targets] == TARGETS
    for single, target in zip(singles, both.targets):
        (alone,) = single.targets
        assert (target.found, target.text) == (alone.found, alone.text)
        assert target.score == pytest.approx(alone.score, abs=1e-5)
        assert target.area == pytest.approx(alone.area, abs=1e-3)
    assert sum(t.found for t in both.targets) >= 2  # the union path below is exercised
    erased = both.mask > 0
    for single in singles:
        assert (erased >= (single.mask > 0)).all()  # the union holds every object as it is erased alone
    assert np.array_equal(both.image[~erased], frame[~erased])
    assert both.found and both.score == max(t.score for t in both.targets)


def test_one_found_target_among_several_is_erased_exactly_as_alone(removers, median_probability):
    frame = _frame(120, 160, seed=6)
    _set_threshold(removers, median_probability(frame))
    remover = removers["onnxruntime"]
    singles = _singles(remover, frame, TARGETS)
    scores = sorted(s.score for s in singles)
    remover.min_score = (scores[-1] + scores[-2]) / 2  # only the best command passes the found rule
    try:
        best = max(singles, key=lambda s: s.score)
        remover.set_command(best.targets[0].text)
        alone = remover.remove(frame)
        remover.set_commands(TARGETS)
        several = remover.remove(frame)
    finally:
        remover.min_score = 0.0
    assert [t.found for t in several.targets] == [s is best for s in singles]
    assert np.array_equal(several.image, alone.image) and np.array_equal(several.mask, alone.mask)


def test_targets_beyond_the_graphs_batch_run_in_chunks(removers, median_probability, monkeypatch):
    frame = _frame(120, 160, seed=7)
    _set_threshold(removers, median_probability(frame))
    remover = removers["onnxruntime"]
    remover.set_commands(TARGETS)
    whole = remover.remove(frame)
    calls = []
    run = remover._backend.run
    monkeypatch.setattr(remover._backend, "max_batch", 2)
    monkeypatch.setattr(remover._backend, "run", lambda image, text: calls.append(len(image)) or run(image, text))
    chunked = remover.remove(frame)
    assert calls == [2, 1]
    assert [(t.found, t.text) for t in chunked.targets] == [(t.found, t.text) for t in whole.targets]
    assert np.count_nonzero(chunked.mask != whole.mask) <= 1e-3 * whole.mask.size  # threshold-edge pixels only


def test_adding_a_target_keeps_the_others_encoding_and_stream(nano_model_dir):
    remover = Remover.load(nano_model_dir, backend="torch", device="cpu", **LOOSE, stream=StreamConfig())
    frame = _frame(120, 160, seed=9)
    remover.set_command(TARGETS[0])
    remover.remove(frame)
    first = remover.stream_state
    remover.set_commands(TARGETS[:2])
    assert remover.stream_state is first and first.frames == 1  # the first object goes on being carried
    remover.remove(frame)
    assert first.frames == 2
    remover.set_command(TARGETS[0])  # a plain command starts afresh, even with the same text
    assert remover.stream_state is not first and remover.stream_state.frames == 0
    for bad in ([TARGETS[0], ""], [TARGETS[0], None]):
        with pytest.raises(ValueError, match="non-empty string"):
            remover.set_commands(bad)
        assert remover.commands == (TARGETS[0],)  # nothing changed


def test_sahm_remove_takes_several_commands(tmp_path, nano_model_dir, shared_cache, capsys):
    frame = _frame(61, 83, seed=8)
    cv2.imwrite(str(tmp_path / "frame.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    args = ["remove", "--model", str(nano_model_dir), "--backend", "onnxruntime", "--min-score", "0",
            "--min-mask-area", "0", "--command", TARGETS[0], "--command", "also " + TARGETS[1], "--out", str(out),
            str(tmp_path / "frame.png")]
    assert sahm_main(args) == 0, capsys.readouterr().out
    assert f"commands {[TARGETS[0], TARGETS[1]]}" in capsys.readouterr().out
    cleaned = cv2.cvtColor(cv2.imread(str(out / "frame.png")), cv2.COLOR_BGR2RGB)
    with Remover.load(nano_model_dir, backend="onnxruntime", **LOOSE) as remover:
        remover.set_commands(TARGETS[:2])
        assert np.array_equal(cleaned, remover.remove(frame).image)


def test_a_candidate_is_found_and_shown_but_not_erased(removers, median_probability):
    frame = _frame(120, 160, seed=10)
    _set_threshold(removers, median_probability(frame))
    remover = removers["onnxruntime"]
    remover.set_commands([TARGETS[0]])
    erased = remover.remove(frame)
    assert erased.found and erased.candidates is None
    remover.set_commands([TARGETS[0]], candidates=[TARGETS[0]])
    assert remover.candidates == (TARGETS[0],)
    shown = remover.remove(frame)
    (target,) = shown.targets
    assert target.found and not target.confirmed and not shown.found
    assert np.array_equal(shown.image, frame) and not shown.mask.any()  # nothing erased
    assert np.array_equal(shown.candidates, erased.mask)  # what confirming it would erase
    remover.set_commands(TARGETS[:2], candidates=[TARGETS[1]])  # one kept, one waiting
    both = remover.remove(frame)
    assert np.array_equal(both.mask, erased.mask) and np.array_equal(both.image, erased.image)
    assert [t.confirmed for t in both.targets] == [True, False]


def test_suppress_keeps_a_command_out_of_the_region_it_found(nano_model_dir, shared_cache, median_probability):
    frame = _frame(120, 160, seed=11)
    with Remover.load(nano_model_dir, backend="onnxruntime", device="cpu", **LOOSE) as remover:
        remover.set_command(COMMAND)
        assert not remover.suppress(COMMAND)  # nothing found yet: nothing to keep out of
        remover.mask_threshold = median_probability(frame)
        first = remover.remove(frame)
        region = remover._last_found[COMMAND].copy()
        assert first.found and remover.suppress(COMMAND)
        remover.mask_threshold = 0.5 * median_probability(frame)  # lower: there is more to find outside the region
        second = remover.remove(frame)
        assert second.found
        again = remover._last_found[COMMAND]
        kept_out = grow_probabilities(region.astype(np.float32), remover.config.removal_margin) > 0
        assert again.any() and not (again & kept_out).any()  # the model-resolution region, exactly
        remover.set_command(COMMAND)  # a new start forgets the region
        remover.mask_threshold = median_probability(frame)
        assert np.array_equal(remover.remove(frame).mask, first.mask)
    with Remover.load(nano_model_dir, backend="torch", device="cpu", **LOOSE, stream=StreamConfig()) as remover:
        remover.mask_threshold = median_probability(frame)
        remover.set_command(COMMAND)
        remover.remove(frame)
        assert remover.stream_state.frames == 1 and remover.suppress(COMMAND)
        assert remover.stream_state.frames == 0  # what it carried was evidence of the suppressed object


def test_without_a_fill_graph_several_objects_are_filled_one_after_another(nano_model_dir, shared_cache,
                                                                           median_probability, caplog):
    """A bare TensorRT engine has no fill graph: each found object is composited with its own row's fill, in the
    order set, and the reason is logged once."""
    frame = _frame(120, 160, seed=12)
    with Remover.load(nano_model_dir, backend="onnxruntime", device="cpu", **LOOSE) as remover:
        remover.mask_threshold = median_probability(frame)
        singles = _singles(remover, frame, TARGETS[:2])
        assert all(s.found for s in singles)

        def no_fill():
            raise CheckpointError("model.engine: a bare engine has no graph to build the fill plan from")

        remover._backend.load_fill = no_fill
        remover.set_commands(TARGETS[:2])
        with caplog.at_level(logging.WARNING, logger="sahm_core.runtime"):
            first, second = remover.remove(frame), remover.remove(frame)
    said = [r.getMessage() for r in caplog.records if "no graph to build the fill plan" in r.getMessage()]
    assert len(said) == 1 and "one after another" in said[0]  # said once
    assert np.array_equal(first.image, second.image) and np.array_equal(first.mask, second.mask)
    assert np.array_equal(first.mask > 0, (singles[0].mask > 0) | (singles[1].mask > 0))
    # the second object's fill over the first one's result: composite applied in turn
    expected = singles[0].image.copy()
    later = singles[1].mask > 0
    expected[later] = singles[1].image[later]
    assert np.array_equal(first.image, expected)


# ---------------------------------------------------------------- clicks (the point prompt)

@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_a_click_runs_the_graph_on_this_with_its_point(removers, nano_model_dir, backend):
    """The graph called directly on CLICK_TEXT's encoding and the point (x, y, 1) is the reference; the random
    weights' point prompt is random too (conftest), so another click or no point gives another answer."""
    frame = _frame(97, 131, seed=11)
    remover = removers[backend]
    model, cfg = load_model(nano_model_dir)
    text = CommandEncoder.for_config(cfg).encode(CLICK_TEXT)
    image = torch.from_numpy(to_model_input(frame, cfg.image_size))
    answers = {}
    for click in (pixel_click(30, 40, 131, 97), pixel_click(100, 10, 131, 97)):
        remover.set_commands([click])
        (target,) = remover.remove(frame).targets
        with torch.no_grad():
            _, mask = PerFrameGraph(model)(image, *text, torch.tensor([[*parse_click(click), 1.0]]))
        assert target.text == click
        assert target.score == pytest.approx(found_decision(mask[0, 0].numpy(), remover.rule)[1], abs=1e-4)
        answers[click] = target.score
    remover.set_commands([CLICK_TEXT])  # the word alone, without the point
    spoken = remover.remove(frame).targets[0].score
    assert len({*answers.values(), spoken}) == 3
    remover.set_command(COMMAND)


def test_sahm_remove_takes_clicks(tmp_path, nano_model_dir, shared_cache, capsys):
    frame = _frame(61, 83, seed=9)
    cv2.imwrite(str(tmp_path / "frame.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    args = ["remove", "--model", str(nano_model_dir), "--backend", "onnxruntime", "--min-score", "0",
            "--min-mask-area", "0", "--click", "20,30", "--out", str(out), str(tmp_path / "frame.png")]
    assert sahm_main(args) == 0, capsys.readouterr().out
    cleaned = cv2.cvtColor(cv2.imread(str(out / "frame.png")), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(out / "frame_mask.png"), cv2.IMREAD_GRAYSCALE)
    with Remover.load(nano_model_dir, backend="onnxruntime", **LOOSE) as remover:
        remover.set_commands([pixel_click(20, 30, 83, 61)])
        expected = remover.remove(frame)
    assert np.array_equal(cleaned, expected.image) and np.array_equal(mask, expected.mask)
    outside = [*args[:-1], "--click", "83,0", args[-1]]  # one column past the frame
    assert sahm_main(outside) == 1
    assert "outside the 83x61 frame; skipped" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sahm_main([*args[:-1], "--click", "twenty,30", args[-1]])
    assert "expected X,Y in pixels" in capsys.readouterr().err
