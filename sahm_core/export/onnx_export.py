"""Export SAHM's per-frame graph, and its fill graph, to ONNX.

The per-frame graph is what runs every frame (docs/architecture.md, "Per-frame path"):
inputs  image (1,3,S,S) f32 RGB in [0,1], tokens (1,T,C), valid (1,T), attribute (1,T), identity (1,T) f32,
        point (1,3) f32: a click (x, y, on), zeros for a spoken command (model/point.py);
outputs cleaned (1,3,S,S) f32 RGB in [0,1], mask (1,1,S,S) f32 probabilities.
The fill graph (`SAHM.fill`) fills a hole given from outside (a mask another node found, `~/erase_mask`):
image and the text inputs, and hole (1,1,S,S) f32 0/1; output cleaned (1,3,S,S).
The text encoder is in neither: it runs once per command. The per-frame graph's batch is dynamic, 1 to MAX_BATCH:
one row per target, so several targets ("remove the cup", "and the bottle") run as one batch. Every other
dimension is static (TensorRT builds its fastest plan for one shape; the runtime resizes frames to S), and so is
the fill graph (one fill per frame, over the union of everything erased).
The model's config and the sha256 of the weights it came from go into the ONNX
metadata, so a loader can tell a stale or foreign graph from the right one.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import NamedTuple

import onnx
import onnx_ir.passes.common as ir_passes
import onnxscript.optimizer
import torch
from torch import nn

from .. import __version__
from ..checkpoint import CONFIG_KEY, CheckpointError, config_json, load_model
from ..config import ModelConfig
from ..text_features import TextFeatures
from .cache import file_sha256

log = logging.getLogger(__name__)

TEXT_NAMES = ("tokens", "valid", "attribute", "identity")  # a command's TextFeatures
INPUT_NAMES = ("image", *TEXT_NAMES, "point")
OUTPUT_NAMES = ("cleaned", "mask")
FILL_INPUT_NAMES = ("image", *TEXT_NAMES, "hole")
FILL_OUTPUT_NAMES = ("cleaned",)
GRAPH_KEY = "sahm_graph"  # which graph a file holds: a name of GRAPHS
WEIGHTS_SHA_KEY = "sahm_weights_sha256"
VERSION_KEY = "sahm_core_version"  # the graph's code; a cached export from other code is stale
DEFAULT_OPSET = 19
MIN_OPSET = 16  # the deformable alignment samples with GridSample, an ONNX op from opset 16
MAX_BATCH = 8  # the per-frame graph's largest batch (targets per frame); TensorRT's optimisation profile ends here


class PerFrameGraph(nn.Module):
    """SAHM with plain tensor inputs and probability outputs: the exact function the ONNX graph computes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image, tokens, valid, attribute, identity, point):
        """image (B,3,S,S), tokens (B,T,C), valid/attribute/identity (B,T), point (B,3)
        -> cleaned (B,3,S,S), mask (B,1,S,S) in [0,1]."""
        cleaned, mask_logits = self.model.per_frame(image, TextFeatures(tokens, valid, attribute, identity), point)
        return cleaned, torch.sigmoid(mask_logits)


class FillGraph(nn.Module):
    """SAHM.fill with plain tensor inputs: the exact function the fill graph computes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image, tokens, valid, attribute, identity, hole):
        """image (B,3,S,S), tokens (B,T,C), valid/attribute/identity (B,T), hole (B,1,S,S) 0/1 -> cleaned (B,3,S,S)."""
        return self.model.fill(image, TextFeatures(tokens, valid, attribute, identity), hole)


class Graph(NamedTuple):
    """An exportable graph: its module class, its ONNX input and output names, and whether its batch is dynamic."""

    module: type[nn.Module]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    batched: bool


GRAPHS = {"per_frame": Graph(PerFrameGraph, INPUT_NAMES, OUTPUT_NAMES, batched=True),
          "fill": Graph(FillGraph, FILL_INPUT_NAMES, FILL_OUTPUT_NAMES, batched=False)}


def example_hole(cfg: ModelConfig) -> torch.Tensor:
    """(1,1,S,S): a square hole in the middle of the frame."""
    size = cfg.image_size
    hole = torch.zeros(1, 1, size, size)
    hole[..., size // 3: 2 * size // 3, size // 3: 2 * size // 3] = 1.0
    return hole


def example_inputs(cfg: ModelConfig, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A deterministic input set of the per-frame graph (INPUT_NAMES): some valid tokens, one attribute and one identity
    token, and a click somewhere."""
    gen = torch.Generator().manual_seed(seed)
    size, length = cfg.image_size, cfg.text_len
    image = torch.rand(1, 3, size, size, generator=gen)
    tokens = torch.randn(1, length, cfg.text_dim, generator=gen)
    valid = torch.zeros(1, length)
    valid[:, : min(6, length)] = 1.0
    attribute = torch.zeros(1, length)
    attribute[:, min(2, length - 1)] = 1.0
    identity = torch.zeros(1, length)
    identity[:, min(3, length - 1)] = 1.0
    point = torch.cat([torch.rand(1, 2, generator=gen), torch.ones(1, 1)], dim=1)
    return image, tokens, valid, attribute, identity, point


def simplify(model) -> None:
    """Constant folding and clean-up of an exported graph (an onnx_ir.Model, in place).

    This is the exporter's own `optimize=True` without onnxscript's pattern rewriter. The rewriter took 6 of the
    8.5 minutes of a nano export on a 2-core CPU (cProfile; `sahm export onnx`: 203 s -> 89 s without it), and
    the rewritten graph runs no faster: ONNX Runtime p50 26.7 (rewritten) vs 25.6 ms for nano, as both runtimes fuse
    the same patterns themselves when they load a graph.
    """
    ir_passes.InlinePass()(model)
    onnxscript.optimizer.fold_constants(model)
    for clean_up in (ir_passes.RemoveUnusedNodesPass(), ir_passes.RemoveUnusedFunctionsPass(),
                     ir_passes.RemoveUnusedOpsetsPass(),
                     ir_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
                     ir_passes.DeduplicateInitializersPass(), ir_passes.CommonSubexpressionEliminationPass()):
        clean_up(model)


def export_model(model: nn.Module, cfg: ModelConfig, out: str | Path, opset: int = DEFAULT_OPSET,
                 weights_sha256: str = "", graph: str = "per_frame") -> Path:
    """Export one of GRAPHS of an eval-mode SAHM to `out` (written atomically) and run onnx.checker on the result."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old: GridSample needs opset >= {MIN_OPSET}")
    if graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r}; choose one of {', '.join(GRAPHS)}")
    spec = GRAPHS[graph]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    examples = dict(zip(INPUT_NAMES, example_inputs(cfg)), hole=example_hole(cfg))
    inputs = tuple(examples[name] for name in spec.inputs)
    dynamic_shapes = None
    if spec.batched:
        # torch.export specialises a size-1 dimension, so the example batch is 2
        inputs = tuple(torch.cat([a, b]) for a, b in zip(inputs, example_inputs(cfg, seed=1)))
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        dynamic_shapes = {name: {0: batch} for name in spec.inputs}
    tmp = out.with_name(out.name + ".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dynamo exporter is chatty about torch internals
        # dynamo=True: torch.export's graph capture, torch's supported exporter (the TorchScript one is deprecated)
        program = torch.onnx.export(spec.module(model.eval()).eval(), inputs, input_names=list(spec.inputs),
                                    output_names=list(spec.outputs), opset_version=opset, dynamo=True,
                                    optimize=False, verbose=False, dynamic_shapes=dynamic_shapes)
    simplify(program.model)
    program.save(str(tmp), external_data=False)
    proto = onnx.load(str(tmp))
    onnx.helper.set_model_props(proto, {CONFIG_KEY: config_json(cfg, out), WEIGHTS_SHA_KEY: weights_sha256,
                                        VERSION_KEY: __version__, GRAPH_KEY: graph})
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(tmp))
    tmp.replace(out)
    return out


def export_checkpoint(checkpoint: str | Path, out: str | Path, opset: int = DEFAULT_OPSET,
                      graph: str = "per_frame") -> Path:
    """Load a .safetensors checkpoint (config from its metadata) and export one of its GRAPHS."""
    model, cfg = load_model(checkpoint)
    log.info("exporting the %s graph of %s (%s, %dx%d) to %s, opset %d", graph, checkpoint, cfg.name, cfg.image_size,
             cfg.image_size, out, opset)
    return export_model(model, cfg, out, opset=opset, weights_sha256=file_sha256(checkpoint), graph=graph)


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file, read without loading its weights; CheckpointError when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: ONNX file not found")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError / OSError / ValueError depending on how the file is broken
        raise CheckpointError(f"{path}: not a readable ONNX file ({type(e).__name__}: {e})") from e
    return {p.key: p.value for p in proto.metadata_props}
