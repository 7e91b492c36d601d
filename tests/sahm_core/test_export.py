"""ONNX export of the per-frame and fill graphs: checker, I/O contract, parity with PyTorch, TensorRT operator check."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

import sahm_core
from sahm_core.checkpoint import CONFIG_KEY, load_weights
from sahm_core.cli import main as sahm_main
from sahm_core.export.cache import file_sha256
from sahm_core.export.onnx_export import (
    FILL_INPUT_NAMES,
    FILL_OUTPUT_NAMES,
    GRAPH_KEY,
    INPUT_NAMES,
    MAX_BATCH,
    OUTPUT_NAMES,
    VERSION_KEY,
    WEIGHTS_SHA_KEY,
    FillGraph,
    PerFrameGraph,
    example_inputs,
    export_model,
)
from sahm_core.export.trt_ops import graph_ops, supported_ops, tensorrt_problems, unsupported_ops
from sahm_core.model import build_model
from sahm_core.runtime import exported_onnx


@pytest.fixture(scope="module")
def nano(nano_model_dir, shared_cache):
    weights = nano_model_dir / "model.safetensors"
    state, cfg = load_weights(weights)
    model = build_model(cfg)
    model.load_state_dict(state)
    return weights, cfg, model.eval(), exported_onnx(weights, cfg)


def test_export_passes_checker_with_the_contract_io(nano):
    weights, cfg, _, path = nano
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    s, t, c = cfg.image_size, cfg.text_len, cfg.text_dim
    expected = {"image": [3, s, s], "tokens": [t, c], "valid": [t], "attribute": [t], "identity": [t], "point": [3],
                "cleaned": [3, s, s], "mask": [1, s, s]}
    batch = set()
    for value in list(model.graph.input) + list(model.graph.output):
        first, *dims = value.type.tensor_type.shape.dim
        assert not first.HasField("dim_value"), f"{value.name}: the batch (one row per target) must be dynamic"
        batch.add(first.dim_param)
        assert all(d.HasField("dim_value") for d in dims), f"{value.name} has a dynamic dimension besides the batch"
        assert [d.dim_value for d in dims] == expected[value.name]
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT
    assert len(batch) == 1  # one symbol: every input and output shares the batch
    assert max(i.version for i in model.opset_import if i.domain in ("", "ai.onnx")) >= 19
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta[CONFIG_KEY] == cfg.to_json()
    assert meta[WEIGHTS_SHA_KEY] == file_sha256(weights)
    assert meta[VERSION_KEY] == sahm_core.__version__


def test_onnxruntime_matches_torch(nano):
    _, cfg, model, path = nano
    inputs = example_inputs(cfg, seed=1)  # not the export's example: parity must hold for other inputs too
    with torch.no_grad():
        cleaned_ref, mask_ref = PerFrameGraph(model)(*inputs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cleaned, mask = session.run(list(OUTPUT_NAMES), {n: t.numpy() for n, t in zip(INPUT_NAMES, inputs)})
    assert np.abs(cleaned - cleaned_ref.numpy()).max() <= 1e-3
    assert np.abs(mask - mask_ref.numpy()).max() <= 1e-3
    assert 0.0 <= mask.min() and mask.max() <= 1.0  # probabilities, not logits


@pytest.mark.parametrize("batch", [1, 3, MAX_BATCH])
def test_onnxruntime_matches_torch_at_every_batch_row_by_row(nano, batch):
    _, cfg, model, path = nano
    rows = [example_inputs(cfg, seed=10 + i) for i in range(batch)]
    inputs = [torch.cat(parts) for parts in zip(*rows)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cleaned, mask = session.run(list(OUTPUT_NAMES), {n: t.numpy() for n, t in zip(INPUT_NAMES, inputs)})
    assert cleaned.shape[0] == mask.shape[0] == batch
    with torch.no_grad():
        for i, row in enumerate(rows):  # each row is what torch gives that row alone
            cleaned_ref, mask_ref = PerFrameGraph(model)(*row)
            assert np.abs(cleaned[i] - cleaned_ref[0].numpy()).max() <= 1e-3
            assert np.abs(mask[i] - mask_ref[0].numpy()).max() <= 1e-3


def test_exported_graph_is_tensorrt_ready(nano):
    model = onnx.load(str(nano[3]), load_external_data=False)
    assert "GridSample" in graph_ops(model)  # the deformable alignment: plain ONNX ops, no custom domain
    assert tensorrt_problems(model) == []


def test_supported_ops_file_names_its_source():
    data = supported_ops()
    assert data["source_url"].startswith("https://github.com/onnx/onnx-tensorrt")
    assert data["tensorrt_version"].startswith("10.")
    assert "GridSample" in data["supported"] and "Conv" in data["supported"]
    assert not set(data["supported"]) & set(data["unsupported"])


def _model(nodes, functions=(), opset=19):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph(nodes, "g", [x], [y])
    imports = [helper.make_opsetid("", opset), helper.make_opsetid("local", 1), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=imports, functions=list(functions))


def test_op_check_names_unsupported_ops_everywhere():
    # Hidden in a model-local function body: Det (marked N in the TensorRT list).
    function = helper.make_function("local", "Hidden", ["a"], ["b"], [helper.make_node("Det", ["a"], ["b"])],
                                    [helper.make_opsetid("", 19)])
    # Hidden in an If branch: Unique (N).
    then_branch = helper.make_graph([helper.make_node("Unique", ["x"], ["t"])], "then", [],
                                    [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_branch = helper.make_graph([helper.make_node("Relu", ["x"], ["e"])], "else", [],
                                    [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Hidden", ["r"], ["h"], domain="local", name="call"),
        helper.make_node("DeformConv", ["h", "w", "off"], ["d"], name="deform"),
        helper.make_node("ReduceSum", ["d"], ["c"], name="cond"),
        helper.make_node("If", ["c"], ["i"], then_branch=then_branch, else_branch=else_branch, name="branch"),
        helper.make_node("FusedMatMul", ["i", "i"], ["y"], domain="com.microsoft", name="fused"),
    ]
    model = _model(nodes, [function])
    assert sorted(unsupported_ops(model)) == ["Det", "Unique", "com.microsoft::FusedMatMul"]
    assert unsupported_ops(model)["Unique"] == ["graph/branch.then_branch/Unique"]
    problems = tensorrt_problems(model)
    assert len(problems) == 3 and all("not supported by TensorRT 10." in p for p in problems)
    assert "DeformConv" in graph_ops(model) and "DeformConv" not in unsupported_ops(model)
    assert "Hidden" not in graph_ops(model)  # a local function is checked by its body, not by its name


def test_op_check_flags_opset_outside_range():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], opset=8)
    assert any("opset 8" in p for p in tensorrt_problems(model))


def test_export_refuses_opset_without_gridsample(nano):
    _, cfg, model, _ = nano
    with pytest.raises(ValueError, match="opset 15"):
        export_model(model, cfg, "unused.onnx", opset=15)


def test_export_cli_reports_missing_checkpoint(tmp_path, capsys):
    missing = tmp_path / "nope.safetensors"
    assert sahm_main(["export", "onnx", "--checkpoint", str(missing), "--out", str(tmp_path / "m.onnx")]) == 1
    assert str(missing) in capsys.readouterr().out


def test_fill_graph_exports_with_its_contract_and_matches_torch(nano):
    weights, cfg, model, _ = nano
    path = exported_onnx(weights, cfg, "fill")
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == list(FILL_INPUT_NAMES)
    assert [o.name for o in proto.graph.output] == list(FILL_OUTPUT_NAMES)
    assert {p.key: p.value for p in proto.metadata_props}[GRAPH_KEY] == "fill"
    assert tensorrt_problems(proto) == []
    s = cfg.image_size
    hole = torch.zeros(1, 1, s, s)
    hole[..., 20:70, 30:200] = 1.0  # not the export's example hole
    examples = dict(zip(INPUT_NAMES, example_inputs(cfg, seed=2)), hole=hole)
    inputs = tuple(examples[name] for name in FILL_INPUT_NAMES)
    with torch.no_grad():
        reference = FillGraph(model)(*inputs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (cleaned,) = session.run(list(FILL_OUTPUT_NAMES), {n: t.numpy() for n, t in zip(FILL_INPUT_NAMES, inputs)})
    assert cleaned.shape == (1, 3, s, s)
    assert np.abs(cleaned - reference.numpy()).max() <= 1e-3
    grown = torch.nn.functional.max_pool2d(hole, 2 * cfg.removal_margin + 1, 1, cfg.removal_margin)
    outside = np.broadcast_to(grown.numpy() == 0, cleaned.shape)
    assert np.abs(cleaned[outside] - inputs[0].numpy()[outside]).max() <= 1e-6  # outside the grown hole: the input
