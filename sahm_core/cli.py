"""`sahm` command: train, average, eval, eval-video, export, build-engine, remove, make-data, bench, gpu-check, info,
train-tagger.

Each subcommand lives in the module that does the work; that module exposes
`add_arguments(parser)` and `main(args) -> int`. Modules are imported only when
their subcommand runs, so `sahm info` does not pay for ONNX or TensorRT imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("sahm_core.info", "parameters per part and GFLOPs of a model config"),
    "train": ("sahm_core.train", "train SAHM on a removal dataset (torchrun for several GPUs)"),
    "average": ("sahm_core.average", "average checkpoints of one config (SWA) and re-measure BatchNorm statistics"),
    "eval": ("sahm_core.evaluate", "evaluate a checkpoint: removal, segmentation, not-found, cost, baselines"),
    "export": ("sahm_core.export.cli", "export the per-frame graph (onnx)"),
    "build-engine": ("sahm_core.export.tensorrt_engine", "build a TensorRT engine from an ONNX file"),
    "eval-video": ("sahm_core.eval_video", "evaluate on video clips: per-frame vs stream mode (reappearance, "
                                           "mask and fill stability, latency)"),
    "remove": ("sahm_core.runtime", "remove the named object from image files"),
    "make-data": ("sahm_core.data.cli", "write a removal dataset (synthetic scenes or ComCOCO)"),
    "bench": ("sahm_core.bench", "per-frame latency / FPS / memory of each backend"),
    "gpu-check": ("sahm_core.gpu_check", "one-shot GPU check: parity, precision, training, DDP, timings -> report"),
    "train-tagger": ("sahm_core.syntax", "train the BiLSTM-CRF syntax tagger on the template corpus"),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sahm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:  # only the chosen subcommand's module is imported
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
