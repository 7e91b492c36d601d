"""Shared fixtures. Each test module keeps its own small fixtures; only cross-cutting ones live here."""

from __future__ import annotations

import os
import signal

import pytest

# Nothing is fetched from a model hub, ever.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Every process of the tests (this one, launched nodes, the ros2 CLI) on Fast DDS's default transports, whatever
# the shell or `make` exports: shared memory + UDP on one host carry the tests' small frames. LARGE_DATA adds TCP,
# whose teardown can hang (eProsima/Fast-DDS#2010): a `ros2 launch` here waited > 30 s after SIGINT inside its
# own participant's deletion, and a launched node once stayed undiscovered for 120 s.
os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = "DEFAULT"

# A run started in the background by a non-interactive shell inherits SIGINT ignored, and so would every
# `ros2 launch` it starts; the launch tests stop a launch with SIGINT, as Ctrl-C in a terminal does.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def nano_model_dir(tmp_path_factory):
    """A model directory holding a randomly initialised `nano` SAHM (weights + config in metadata).

    Random weights are enough for everything that is an invariant of the pipeline
    (shapes, pixels outside the mask, backend parity, node behaviour); the point prompt's are random too.
    """
    import torch

    from sahm_core.checkpoint import save_weights
    from sahm_core.config import model_config
    from sahm_core.model import build_model

    torch.manual_seed(0)
    cfg = model_config("nano")
    model = build_model(cfg)
    for param in model.backbone.point.parameters():  # it starts at zero: a click must change what this model does
        torch.nn.init.normal_(param, std=0.5, generator=torch.Generator().manual_seed(1))
    out = tmp_path_factory.mktemp("nano_model")
    save_weights(out / "model.safetensors", model.state_dict(), cfg)
    return out


@pytest.fixture(scope="session", autouse=True)
def shared_cache(tmp_path_factory):
    """One cache root for derived model files (ONNX exports, TensorRT plans) for the whole session.

    The slow ONNX export of `nano_model_dir` then runs once for all test modules, and no test
    writes under the user's ~/.cache.
    """
    from sahm_core.export.cache import CACHE_ENV

    root = tmp_path_factory.getbasetemp() / "ros_ror_cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(root))
        yield root
