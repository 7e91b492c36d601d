"""Where derived model files (exported ONNX graphs, TensorRT plans) are cached, and how files are fingerprinted.

Derived files never go next to the weights: a model directory may live in a
read-only install (a ROS package's share/ folder). They go under one cache root,
`$ROS_ROR_CACHE_DIR`, else `$XDG_CACHE_HOME/ros_ror`, else `~/.cache/ros_ror`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_ENV = "ROS_ROR_CACHE_DIR"


def cache_dir(kind: str) -> Path:
    """The cache folder for one kind of derived file ("onnx", "engines"); created on first use."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ros_ror"
    path = Path(root) / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
