"""The inference backends a model runs on, by name, and the `--backend` / `--device` arguments of every command that
runs one (`sahm remove`, `sahm eval-video`, `ros-ror replay`, `ros-ror demo`, `ros-ror bench`).

Only argparse is imported: the node declares its `backend` parameter from here before torch loads. What each backend
needs, and the order "auto" tries them in, is `runtime.Remover.load`'s."""

from __future__ import annotations

import argparse

BACKENDS = ("tensorrt", "onnxruntime", "torch")
AUTO = "auto"  # the first backend that loads on this machine, every failure logged (runtime's module docstring)
BACKEND_CHOICES = (AUTO,) + BACKENDS


def add_backend_arguments(parser: argparse.ArgumentParser, default: str = AUTO, device: bool = True) -> None:
    """`--backend` (one of BACKEND_CHOICES) and, unless device=False, `--device` (None: the backend's default)."""
    parser.add_argument("--backend", default=default, choices=BACKEND_CHOICES,
                        help=f"inference backend (default: {default}; auto tries TensorRT, ONNX Runtime, torch)")
    if device:
        parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
