"""The whole path a user runs, through the installed `sahm` command (issue 18, "End to end"): a format-faithful
COCO 2014 + RefCOCO+ -> `sahm make-data comcoco` -> `sahm train` from a timm SwinV2 file -> `sahm eval` ->
`sahm export onnx` -> ONNX Runtime against torch on a test image of the built data.

Each stage's own behaviour is tested in its module (test_data_comcoco, test_pretrained, test_evaluate,
test_export); here the stages must hand each other real files, as they do for a user.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from coco_fixture import write_tiny_coco
from safetensors.torch import load_file, save_file
from test_pretrained import nano_swin

from sahm_core.checkpoint import load_model
from sahm_core.config import model_config
from sahm_core.data.layout import read_refs, read_rgb
from sahm_core.evaluate import METHODS
from sahm_core.export.cache import file_sha256
from sahm_core.export.onnx_export import INPUT_NAMES, OUTPUT_NAMES, WEIGHTS_SHA_KEY, PerFrameGraph
from sahm_core.model import build_model
from sahm_core.model.point import no_point
from sahm_core.runtime import to_model_input
from sahm_core.text import shared_encoder

# pycocotools (not this code) trips a numpy 2 deprecation inside its decode
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

SAHM = Path(sys.executable).parent / "sahm"  # the console script installed beside this interpreter
STEPS, LR = 2, 6e-4  # TrainConfig's default lr, named here for the bound on how far AdamW moves a weight


def sahm(*args) -> str:
    """Run `sahm ARGS...` as a user would; its stdout + stderr, or a failure that shows them."""
    if not SAHM.is_file():
        pytest.fail(f"{SAHM}: the `sahm` console script is not installed beside {sys.executable}")
    done = subprocess.run([str(SAHM), *map(str, args)], capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"sahm {' '.join(map(str, args))} exited {done.returncode}:\n{output}"
    return output


def ours(timm_key: str) -> str:
    """A timm SwinV2 key's name in SAHM's state dict (layers.i -> backbone.stages.i)."""
    return "backbone." + timm_key.replace("layers.", "stages.", 1)


def test_comcoco_to_onnx_runtime_through_the_cli(tmp_path):
    # 1. ComCOCO from the downloads' layout
    write_tiny_coco(tmp_path / "downloads")
    data = tmp_path / "comcoco"
    printed = sahm("make-data", "comcoco", "--coco", tmp_path / "downloads" / "coco", "--refcoco-plus",
                   tmp_path / "downloads" / "refcoco+", "--out", data, "--split-sizes", 12, 3, 3, "--seed", 0)
    assert "comcoco pairs" in printed
    refs = read_refs(data)  # validates every line and that its files exist
    test_refs = [r for r in refs if r["split"] == "test"]
    assert {r["split"] for r in refs} >= {"train", "test"} and any(not r["negative"] for r in test_refs)

    # 2. a few training steps of nano from a timm-format SwinV2 file of nano's shapes
    torch.manual_seed(18)
    backbone = tmp_path / "swinv2_nano.safetensors"
    save_file(nano_swin().state_dict(), str(backbone))
    run = tmp_path / "run"
    printed = sahm("train", "--config", "nano", "--data", data, "--out", run, "--steps", STEPS, "--batch-size", 2,
                   "--lr", LR, "--num-workers", 0, "--device", "cpu", "--set", f"backbone_weights={backbone}")
    checkpoint = load_file(str(backbone))
    swin_keys = [k for k in checkpoint if not k.startswith(("head.", "norm."))]
    assert f"backbone weights from {backbone}" in printed
    assert f"loaded      {len(swin_keys):5d}" in printed
    assert "missing         0" in printed and "unexpected      0" in printed
    # The run started from the file: AdamW moves a weight by at most ~lr a step (|m_hat| / sqrt(v_hat) <= 1.0005
    # for betas 0.85 / 0.91 at step 2, by Cauchy-Schwarz; weight decay adds lr * 0.005 * |w|), while a backbone
    # that had kept its own random init (the run's: seed 0, then the generator is built) would sit far away.
    trained = load_file(str(run / "model.safetensors"))
    moved = {k: (trained[ours(k)] - checkpoint[k]).abs().max().item() for k in swin_keys}
    assert 0 < max(moved.values()) <= 1.1 * STEPS * LR, max(moved.items(), key=lambda kv: kv[1])
    torch.manual_seed(0)
    own_init = build_model(model_config("nano")).state_dict()
    assert max((own_init[ours(k)] - checkpoint[k]).abs().max().item() for k in swin_keys) > 50 * STEPS * LR

    # 3. eval on the built test split
    sahm("eval", "--checkpoint", run, "--data", data, "--split", "test", "--out", run / "eval", "--batch-size", 2)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["samples"] == len(test_refs) == metrics["positives"] + metrics["negatives"]
    assert set(metrics["removal"]) == set(METHODS)
    assert set(metrics["segmentation"]) == {"mean_iou", "overall_iou", "pr@0.5", "pr@0.7", "pr@0.9",
                                            "not_found_accuracy", "false_negative_rate"}
    numbers = [v for row in metrics["removal"].values() for k, v in row.items() if k not in ("lpips", "fid")]
    numbers += [v for v in metrics["segmentation"].values() if v is not None]
    numbers += [metrics["cost"][k] for k in ("params_m", "gflops", "fps")]
    assert numbers and all(isinstance(v, float | int) and math.isfinite(v) for v in numbers), metrics
    assert all(0.0 <= v <= 1.0 for v in metrics["segmentation"].values() if v is not None)

    # 4. ONNX export of the trained run
    onnx_file = run / "model.onnx"
    sahm("export", "onnx", "--checkpoint", run, "--out", onnx_file)
    meta = {p.key: p.value for p in onnx.load(str(onnx_file), load_external_data=False).metadata_props}
    assert meta[WEIGHTS_SHA_KEY] == file_sha256(run / "model.safetensors")

    # 5. ONNX Runtime against torch on a built test image and its sentence, through the runtime's own input path
    model, cfg = load_model(run)
    ref = next(r for r in test_refs if not r["negative"])
    image = torch.from_numpy(to_model_input(read_rgb(data / ref["image"]), cfg.image_size))
    inputs = (image, *shared_encoder(cfg, "cpu").encode(ref["text"]), no_point(1))
    with torch.no_grad():
        cleaned_ref, mask_ref = PerFrameGraph(model)(*inputs)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    cleaned, mask = session.run(list(OUTPUT_NAMES), {n: t.numpy() for n, t in zip(INPUT_NAMES, inputs)})
    assert np.abs(cleaned - cleaned_ref.numpy()).max() <= 1e-3  # test_export's tolerance
    assert np.abs(mask - mask_ref.numpy()).max() <= 1e-3
