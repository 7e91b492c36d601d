"""`sahm export onnx --checkpoint CKPT --out model.onnx [--graph fill] [--opset N]`: a graph, checked for TensorRT."""

from __future__ import annotations

import argparse
import logging

from ..checkpoint import CheckpointError, weights_file
from .onnx_export import DEFAULT_OPSET, GRAPHS, MIN_OPSET, export_checkpoint
from .trt_ops import supported_ops, tensorrt_problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=["onnx"], help="export format")
    parser.add_argument("--checkpoint", required=True, help="model.safetensors (or a model dir holding one)")
    parser.add_argument("--out", required=True, help="output .onnx path")
    parser.add_argument("--graph", default="per_frame", choices=list(GRAPHS),
                        help="per_frame: what runs every frame; fill: fills a given mask (~/erase_mask), kept as "
                             "fill.onnx beside model.onnx (default %(default)s)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset (>= {MIN_OPSET}, default %(default)s)")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("sahm_core").setLevel(logging.INFO)  # our progress lines, not every library's INFO chatter
    try:
        out = export_checkpoint(weights_file(args.checkpoint), args.out, opset=args.opset, graph=args.graph)
    except (CheckpointError, ValueError) as e:
        print(f"sahm export: {e}")
        return 1
    print(f"wrote {out} (onnx.checker passed)")
    problems = tensorrt_problems(out)
    version = supported_ops()["tensorrt_version"]
    if problems:
        print(f"NOT ready for TensorRT {version}:")
        for p in problems:
            print(f"  - {p}")
        return 2
    print(f"every operator is in TensorRT {version}'s ONNX-parser support list")
    return 0
