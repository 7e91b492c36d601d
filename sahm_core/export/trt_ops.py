"""TensorRT readiness without TensorRT: is every operator of an ONNX graph one that TensorRT's ONNX parser supports?

The supported-operator list is a data file (trt_supported_ops.json) transcribed
from onnx-tensorrt's docs/operators.md; it records its source URL and the
TensorRT version it describes. The check walks the main graph, every subgraph
held in a node attribute (If / Loop / Scan bodies) and the body of every
model-local function a node calls, so an op cannot hide inside a function.
"""

from __future__ import annotations

import json
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import onnx

SUPPORTED_OPS_FILE = Path(__file__).with_name("trt_supported_ops.json")
DEFAULT_DOMAINS = ("", "ai.onnx")


@lru_cache(maxsize=1)
def supported_ops() -> dict:
    """The parsed data file: source, source_url, tensorrt_version, opset_range, supported {op: restriction},
    unsupported."""
    return json.loads(SUPPORTED_OPS_FILE.read_text())


def _graph_ops(graph: onnx.GraphProto, functions: dict, where: str, found: dict[str, list[str]],
               seen_functions: set) -> None:
    for node in graph.node:
        place = f"{where}/{node.name or node.op_type}"
        function = functions.get((node.domain, node.op_type))
        if function is not None:
            # TensorRT's parser expands a local function into its body, so the body's ops are what must be supported.
            if (node.domain, node.op_type) not in seen_functions:
                seen_functions.add((node.domain, node.op_type))
                body = onnx.helper.make_graph(function.node, function.name, [], [])
                _graph_ops(body, functions, f"function {node.domain}::{node.op_type}", found, seen_functions)
            continue
        name = node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}"
        found[name].append(place)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _graph_ops(attr.g, functions, f"{place}.{attr.name}", found, seen_functions)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for i, sub in enumerate(attr.graphs):
                    _graph_ops(sub, functions, f"{place}.{attr.name}[{i}]", found, seen_functions)


def graph_ops(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Every operator used by the model (local functions expanded) -> where it occurs (node paths)."""
    functions = {(f.domain, f.name): f for f in model.functions}
    found: dict[str, list[str]] = defaultdict(list)
    _graph_ops(model.graph, functions, "graph", found, set())
    return dict(found)


def unsupported_ops(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Operators of the model that are not in TensorRT's supported list -> where they occur. Empty when all are
    supported.

    An op from a custom domain (e.g. com.microsoft) is never supported: TensorRT's parser knows only the ONNX domain
    (custom ops need a plugin, which this project does not ship).
    """
    supported = supported_ops()["supported"]
    return {op: places for op, places in sorted(graph_ops(model).items()) if op not in supported}


def tensorrt_problems(model: onnx.ModelProto | str | Path) -> list[str]:
    """Human-readable reasons TensorRT's ONNX parser would reject the model; empty when it is ready."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    data = supported_ops()
    low, high = data["opset_range"]
    problems = []
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS and not low <= imp.version <= high:
            problems.append(f"opset {imp.version} is outside TensorRT {data['tensorrt_version']}'s range {low}..{high}")
    for op, places in unsupported_ops(model).items():
        shown = ", ".join(places[:3]) + (f" (+{len(places) - 3} more)" if len(places) > 3 else "")
        problems.append(f"operator {op} is not supported by TensorRT {data['tensorrt_version']}'s ONNX parser "
                        f"(at {shown})")
    return problems
