"""`sahm gpu-check`: the CPU run end to end (report files, skip reasons, exit status), its parity figures against an
independent ONNX Runtime / PyTorch computation, and the pieces the GPU sections are built from, run on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from sahm_core.checkpoint import load_weights
from sahm_core.config import model_config
from sahm_core.data.synthetic import render_sample
from sahm_core.export.onnx_export import INPUT_NAMES, PerFrameGraph
from sahm_core.gpu_check import (
    NO_CUDA,
    SCENE_SEED,
    SECTIONS,
    TOLERANCES,
    Outputs,
    compare,
    ddp_step,
    exit_status,
    nonfinite_watch,
    render_markdown,
)
from sahm_core.model import build_model
from sahm_core.model.point import no_point
from sahm_core.runtime import exported_onnx, to_model_input
from sahm_core.text import CommandEncoder

CPU_SECTIONS = [name for name, (needs_cuda, _) in SECTIONS.items() if not needs_cuda]
GPU_SECTIONS = [name for name, (needs_cuda, _) in SECTIONS.items() if needs_cuda]


@pytest.fixture(scope="module")
def cpu_run(nano_model_dir, shared_cache, tmp_path_factory):
    """`sahm gpu-check` as a subprocess on a machine without CUDA: (exit code, output, report.json, out dir)."""
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU path, even where a GPU exists
    done = subprocess.run([sys.executable, "-m", "sahm_core.cli", "gpu-check", "--model", str(nano_model_dir),
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=900)
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else None
    return done.returncode, done.stdout + done.stderr, report, out


def test_cpu_run_reports_every_section_and_skips_the_gpu_ones(cpu_run):
    code, output, report, out = cpu_run
    assert code == 0, output[-3000:]
    assert list(report) == list(SECTIONS)
    for name in CPU_SECTIONS:
        assert report[name]["status"] == "passed", (name, report[name])
    for name in GPU_SECTIONS:
        assert report[name]["status"] == NO_CUDA
    env = report["environment"]
    assert env["cuda_available"] is False and "CPUExecutionProvider" in env["ort_providers"]
    assert env["tensorrt"] and env["pycuda"]  # a version, or why it does not import
    assert report["auto_backend"]["picked"] in ("onnxruntime", "torch")
    markdown = (out / "report.md").read_text()
    assert markdown == render_markdown(report)
    assert f"| ddp_nccl | {NO_CUDA} |" in markdown and "## ort_cpu_parity" in markdown
    assert "exit status 0" in output


def test_cpu_parity_figures_match_an_independent_computation(cpu_run, nano_model_dir):
    _, _, report, _ = cpu_run
    rows = report["ort_cpu_parity"]["rows"]
    commands = [row["command"] for row in rows]
    scene = render_sample(SCENE_SEED, size=256, negative_fraction=0.0)
    # the command with its attribute words, then without them
    assert commands[0] == scene.text and len(commands[1].split()) < len(commands[0].split())
    weights = nano_model_dir / "model.safetensors"
    state, cfg = load_weights(weights)
    model = build_model(cfg)
    model.load_state_dict(state)
    session = ort.InferenceSession(str(exported_onnx(weights, cfg)), providers=["CPUExecutionProvider"])
    image = torch.from_numpy(to_model_input(scene.image, cfg.image_size))
    for row in rows:
        text = CommandEncoder.for_config(cfg).encode(row["command"])
        with torch.no_grad():
            cleaned_ref, mask_ref = PerFrameGraph(model.eval())(image, *text, no_point(1))
        cleaned, mask = session.run(None, {n: t.numpy() for n, t in zip(INPUT_NAMES, (image, *text, no_point(1)))})
        diff_cleaned = float(np.abs(cleaned - cleaned_ref.numpy()).max())
        diff_mask = float(np.abs(mask - mask_ref.numpy()).max())
        flips = float(np.mean((mask > 0.5) != (mask_ref.numpy() > 0.5)))
        # the same graph on the same inputs: equal up to thread-count summation order (~1e-7)
        assert row["max_diff_cleaned"] == pytest.approx(diff_cleaned, abs=2e-6)
        assert row["max_diff_mask"] == pytest.approx(diff_mask, abs=2e-6)
        assert row["mask_flips"] == pytest.approx(flips, abs=1e-4)
        assert row["max_diff_mask"] <= TOLERANCES["fp32"].max_diff and row["problems"] == []


def test_prepare_exports_into_the_cache(cpu_run, nano_model_dir, shared_cache, tmp_path):
    done = subprocess.run([sys.executable, "-m", "sahm_core.cli", "gpu-check", "--prepare", "--model",
                           str(nano_model_dir), "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    cached = exported_onnx(nano_model_dir / "model.safetensors", load_weights(nano_model_dir / "model.safetensors")[1])
    assert f"exported {cached}" in done.stdout
    assert not (tmp_path / "report.json").exists()
    done = subprocess.run([sys.executable, "-m", "sahm_core.cli", "gpu-check", "--prepare", "--model",
                           str(tmp_path / "missing"), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 1 and f"{tmp_path / 'missing'}: model file not found" in done.stdout


def test_compare_judges_against_the_tolerance():
    rng = np.random.default_rng(0)
    reference = Outputs(rng.random((3, 8, 8), dtype=np.float32), rng.random((8, 8), dtype=np.float32))
    same = compare(reference, reference, TOLERANCES["fp32"])
    assert same["problems"] == [] and same["max_diff_cleaned"] == 0 and same["mask_flips"] == 0
    # one mask pixel moved across 0.5, from 0.3 to 0.7: a sign flip in 1 of 64 pixels, a difference of 0.4
    reference.mask[0, 0] = 0.3
    mask = reference.mask.copy()
    mask[0, 0] = 0.7
    flipped = compare(reference, Outputs(reference.cleaned, mask), TOLERANCES["bf16"])
    assert flipped["mask_flips"] == 1 / 64 and flipped["max_diff_mask"] == pytest.approx(0.4)
    assert flipped["problems"] == ["max_diff_mask 0.4 > 0.1", "mask_flips 0.0156 > 0.01"]
    cleaned = reference.cleaned.copy()
    cleaned[1, 2, 3] = np.nan
    broken = compare(reference, Outputs(cleaned, reference.mask), TOLERANCES["fp16"])
    assert broken["finite"] is False and broken["problems"][0] == "non-finite output"
    assert "max_diff_cleaned nan > 0.05" in broken["problems"]


class _LogOfInput(nn.Module):
    def forward(self, x):
        return torch.log(x)


def test_nonfinite_watch_names_the_first_module_that_goes_non_finite():
    # relu -> zeros where the input is negative; log(0) = -inf in "2"; "3" and the parent only inherit it
    model = nn.Sequential(nn.Identity(), nn.ReLU(), _LogOfInput(), nn.Linear(4, 4))
    with torch.no_grad(), nonfinite_watch(model) as first:
        model(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
        assert first() is None
    with torch.no_grad(), nonfinite_watch(model) as first:
        model(torch.tensor([[1.0, -2.0, 3.0, 4.0]]))
        assert first() == "2"
    assert not model._forward_hooks and not model[2]._forward_hooks  # the hooks are gone after the watch


def test_exit_status_and_markdown_of_defects_and_failures():
    report = {"a": {"status": "passed", "seconds": 1.0, "rows": [{"x": 1.5, "y": float("nan")}]},
              "b": {"status": NO_CUDA, "seconds": 0.0}}
    assert exit_status(report) == 0
    assert exit_status({**report, "c": {"status": "defect: max_diff_mask 0.2 > 0.1", "seconds": 0.0}}) == 1
    failed = {**report, "c": {"status": "failed: RuntimeError: boom", "seconds": 0.0, "traceback": "Traceback ...\n"}}
    assert exit_status(failed) == 1
    markdown = render_markdown(failed)
    assert "| x | y |" in markdown and "| 1.5 | nan |" in markdown
    assert "**failed: RuntimeError: boom**" in markdown and "Traceback ..." in markdown


def test_ddp_step_on_gloo_matches_a_plain_step(tmp_path):
    # The NCCL section's code, here in a one-process gloo group on nano's structure at 64 px: world size 1 must give
    # the plain step's gradients (on the CPU BatchNorm stays plain; DDP's all-reduce over one process may round).
    cfg = replace(model_config("nano"), image_size=64, embed_dim=16, decoder_dim=16, disc_dim=8)
    result = ddp_step(cfg, torch.device("cpu"), tmp_path)
    assert result["status"] == "passed", result
    assert result["backend"] == "gloo" and np.isfinite(result["loss"])
    assert result["loss"] == pytest.approx(result["plain_loss"], rel=1e-5)
    assert result["relative_grad_diff"] < 1e-4
