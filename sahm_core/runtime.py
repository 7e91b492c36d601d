"""Remover: per-frame referring object removal over TensorRT, ONNX Runtime or PyTorch.

A command is encoded once (`set_command`; several, one target each: `set_commands`); every frame then goes
through pre-processing, the per-frame graph (one batch row per target) and compositing (`remove`):

- Pre: the frame is resized to the model's square input S (INTER_AREA when
  shrinking, INTER_LINEAR when enlarging) and scaled to float [0,1]. A plain
  stretch, not a letterbox: the dataset reader trains on frames resized to SxS,
  so a stretched frame is what the network knows, and no model pixels are spent
  on padding (a 4:3 letterbox would waste a quarter of them).
- Graph: image + the four text tensors + the point -> cleaned image, mask probabilities. A click is a command too
  (sahm_core.click: `click@(x, y)`): CLICK_TEXT's tensors and the point (x, y, 1); a spoken command's point is zeros.
- Post: `found_decision` with the Remover's `FoundRule` (sahm_core.found: the one definition of found /
  not-found, shared with the evaluator, replay and the node) looks at the mask at model resolution. When found, the mask
  probabilities are grown by the model's removal margin (the same max filter the
  network blends with), upsampled to the frame and binarised (m), and the frame is
  composited as orig*(1-m) + up(pred)*m, done as a copy of the frame with only
  the masked pixels replaced, so every pixel outside the published mask is bit-exact.

Backends: "tensorrt" (an engine + a CUDA GPU), "onnxruntime" (CUDA provider for
device cuda, verified active, else an error; CPU provider for device cpu; a model
dir without model.onnx gets one exported into the cache, keyed by the weights'
sha256) and "torch" (the reference; fp32, or fp16 / bf16 under autocast).
"auto" tries, on a CUDA device: the TensorRT engine (when the model has one),
torch in fp16, ONNX Runtime on CUDA, ONNX Runtime on the CPU, torch on the CPU;
on the CPU: the engine (it says why it cannot run), ONNX Runtime (about 1.5x
faster than torch there for nano), torch. Any error of one candidate is logged
with its type and message and the next one is tried; only when all fail does
load raise, listing every reason.

Lifecycle: `Remover.close()` frees the backend (TensorRT buffers, stream and CUDA
context; the ONNX Runtime session; the torch module and PyTorch's cached CUDA
blocks) and is idempotent; remove() after close raises. A Remover is also a
context manager.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from . import __version__
from .backends import AUTO, BACKENDS, add_backend_arguments
from .checkpoint import CONFIG_KEY, WEIGHTS_FILE, CheckpointError, config_from_json, read_config
from .click import CLICK_TEXT, parse_click, pixel_click
from .config import ModelConfig
from .export.cache import cache_dir, file_sha256
from .export.onnx_export import (
    FILL_OUTPUT_NAMES,
    GRAPH_KEY,
    GRAPHS,
    INPUT_NAMES,
    MAX_BATCH,
    OUTPUT_NAMES,
    TEXT_NAMES,
    VERSION_KEY,
    WEIGHTS_SHA_KEY,
    onnx_metadata,
)
from .found import DEFAULT_RULE, FoundRule, add_rule_arguments, found_decision, rule_from_args
from .stream import Camera, StreamConfig, StreamState, add_stream_arguments, grow_probabilities, stream_from_args

log = logging.getLogger(__name__)

TORCH_PRECISIONS = ("fp32", "fp16", "bf16")  # fp16 / bf16: autocast, which keeps norms, softmax and sums in fp32
# Which onnxruntime-gpu fits which CUDA (PyPI wheels; their [cuda,cudnn] extras pull the matching nvidia-* wheels).
ORT_CUDA_PAIRING = ("onnxruntime-gpu >= 1.27 needs CUDA 13 + cuDNN 9 (torch +cu13x wheels); "
                    "1.19-1.26 need CUDA 12 + cuDNN 9 (torch +cu12x wheels)")
PROMPT_NAMES = INPUT_NAMES[1:]  # a command's inputs of the per-frame graph: TEXT_NAMES and point
ONNX_FILE, FILL_ONNX_FILE, ENGINE_FILE = "model.onnx", "fill.onnx", "model.engine"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")  # `sahm remove` reads them with cv2.VideoCapture
# The fill graph's text when a given mask is erased with no command: the backbone is text-guided at every stage, and
# on 60 dev objects under their ground-truth masks this and each object's own command filled within 0.13 dB.
FILL_CONTEXT = "remove it"


class Target(NamedTuple):
    """One command's object in one frame: its text, whether it was found (and so erased, when confirmed), its score
    and area as `found_decision` measures them (at model resolution; stream mode's are the carried mask's), and
    whether it is confirmed (False: a candidate, shown in Removal.candidates and not erased)."""

    text: str
    found: bool
    score: float
    area: float
    confirmed: bool = True


class Removal(NamedTuple):
    """One processed frame: image HxWx3 uint8, mask HxW uint8 {0,255} (everything erased), score and found (over the
    targets: the highest score, and whether any was found), latency_s (seconds, the whole remove()), stream_s
    (seconds of it spent in stream mode; 0 when off), given_pixels (pixels of a given mask, `remove(frame,
    erase=...)`, in the erased mask; 0 when none), targets (each command's own answer, in the order set),
    candidates (HxW uint8 {0,255}: what the candidate commands found, not erased; None when no command is one)."""

    image: np.ndarray
    mask: np.ndarray
    score: float
    found: bool
    latency_s: float
    stream_s: float = 0.0
    given_pixels: int = 0
    targets: tuple[Target, ...] = ()
    candidates: np.ndarray | None = None


class BackendUnavailable(RuntimeError):
    """A backend that cannot run in this environment (package missing, no GPU)."""


# ---------------------------------------------------------------- pre / post-processing

def check_frame(frame) -> None:
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 RGB, got dtype {frame.dtype}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be HxWx3 RGB, got shape {frame.shape}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frame is empty (shape {frame.shape})")


def check_command(text) -> None:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"command must be a non-empty string, got {text!r}")


def check_given_mask(mask, shape: tuple[int, ...]) -> None:
    """A mask to erase must be an HxW uint8 or bool array of the frame's size."""
    if not isinstance(mask, np.ndarray) or mask.dtype not in (np.uint8, np.bool_):
        raise ValueError(f"mask to erase must be a uint8 or bool numpy array, got {getattr(mask, 'dtype', type(mask))}")
    if mask.shape != tuple(shape[:2]):
        size = f"{mask.shape[1]}x{mask.shape[0]}" if mask.ndim == 2 else f"of shape {mask.shape}"
        raise ValueError(f"mask to erase is {size}, the frame is {shape[1]}x{shape[0]} (width x height): a mask must "
                         "be its frame's size")


def to_model_hole(mask: np.ndarray, size: int) -> np.ndarray:
    """HxW mask (nonzero = erase) -> (1,1,S,S) float32 0/1: every model pixel that any masked pixel falls in."""
    covered = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return (covered > 0)[None, None].astype(np.float32)


def to_model_input(frame: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 uint8 RGB -> (1,3,S,S) float32 in [0,1] (stretch resize, see the module docstring)."""
    h, w = frame.shape[:2]
    shrinking = h * w > size * size
    # OpenCV rejects negative strides (e.g. a BGR->RGB view frame[..., ::-1]); a contiguous frame is not copied.
    small = cv2.resize(np.ascontiguousarray(frame), (size, size),
                       interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return (small.transpose(2, 0, 1)[None].astype(np.float32)) * np.float32(1 / 255)  # (1,3,S,S)


def frame_mask(mask_prob: np.ndarray, shape: tuple[int, ...], mask_threshold: float, margin: int = 0) -> np.ndarray:
    """(S,S) mask probabilities -> the (H,W) bool mask composite erases: up(grow(mask_prob, margin)) > threshold."""
    grown = grow_probabilities(mask_prob, margin)
    return cv2.resize(grown, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) > mask_threshold


def composite(frame: np.ndarray, cleaned: np.ndarray, mask_prob: np.ndarray, mask_threshold: float,
              margin: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """orig*(1-m) + up(cleaned)*m at the frame's resolution, m = up(grow(mask_prob)) > threshold.

    frame HxWx3 uint8, cleaned (3,S,S) float [0,1], mask_prob (S,S) float
    -> (image HxWx3 uint8, mask HxW uint8 {0,255}).
    grow is a (2*margin+1)^2 max filter at model resolution, the network's own removal margin
    (ModelConfig.removal_margin), so the frame takes the fill exactly where the network blended it in.
    Only pixels inside the mask's bounding box are touched and only masked ones are written: outside the returned
    mask the output is the input, bit for bit.
    """
    h, w = frame.shape[:2]
    frame = np.ascontiguousarray(frame)
    mask = frame_mask(mask_prob, (h, w), mask_threshold, margin)
    out = frame.copy()
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size:
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        cleaned_u8 = (np.clip(cleaned.transpose(1, 2, 0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # (S,S,3)
        # Resize the whole prediction (cheap at S) and crop, so the box sees exactly the full-frame upsampling.
        up = cv2.resize(cleaned_u8, (w, h), interpolation=cv2.INTER_LINEAR)[top:bottom, left:right]
        # masked copy, in place
        cv2.copyTo(up, mask[top:bottom, left:right].view(np.uint8), out[top:bottom, left:right])
    return out, mask.view(np.uint8) * np.uint8(255)


# ---------------------------------------------------------------- model files

@dataclass(frozen=True)
class ModelFiles:
    """What a model path provides: weights / ONNX graph / TensorRT engine (any may be None) and the config;
    fill_onnx: the fill graph (`sahm export onnx --graph fill`) when a model dir holds one."""

    source: Path
    config: ModelConfig
    weights: Path | None = None
    onnx: Path | None = None
    engine: Path | None = None
    fill_onnx: Path | None = None

    def graph_onnx(self, graph: str) -> Path:
        """The ONNX file of one of GRAPHS: the model's own (checked against the model), else exported from its
        weights into the cache; CheckpointError when it has neither."""
        own = self.onnx if graph == "per_frame" else self.fill_onnx
        if own is not None:
            _check_onnx_matches(own, self, graph)
            return own
        if self.weights is not None:
            return exported_onnx(self.weights, self.config, graph)
        wanted = ONNX_FILE if graph == "per_frame" else FILL_ONNX_FILE
        raise CheckpointError(f"{self.source}: the {graph} graph needs {wanted} or {WEIGHTS_FILE} beside the model, "
                              "and there is neither")


def resolve_model(path: str | Path) -> ModelFiles:
    """A model dir (model.safetensors [+ model.onnx] [+ model.engine]) or one .safetensors / .onnx / .engine file."""
    from .export.tensorrt_engine import read_sidecar

    path = Path(path)
    if path.is_dir():
        files = {name: path / name for name in (WEIGHTS_FILE, ONNX_FILE, ENGINE_FILE) if (path / name).is_file()}
        if not files:
            raise CheckpointError(f"{path}: model directory holds none of {WEIGHTS_FILE}, {ONNX_FILE}, {ENGINE_FILE}")
        weights, onnx_file, engine = files.get(WEIGHTS_FILE), files.get(ONNX_FILE), files.get(ENGINE_FILE)
        fill_onnx = path / FILL_ONNX_FILE if (path / FILL_ONNX_FILE).is_file() else None
    elif not path.exists():
        raise CheckpointError(f"{path}: model file not found")
    else:
        kinds = {".safetensors": "weights", ".onnx": "onnx", ".engine": "engine", ".plan": "engine"}
        if path.suffix not in kinds:
            raise CheckpointError(f"{path}: unknown model file type {path.suffix!r}; "
                                  "expected a model dir, .safetensors, .onnx or .engine")
        weights, onnx_file, engine = (path if kinds[path.suffix] == k else None for k in ("weights", "onnx", "engine"))
        fill_onnx = None
    if weights is not None:
        cfg = read_config(weights)
    elif onnx_file is not None:
        cfg = config_from_json(onnx_metadata(onnx_file).get(CONFIG_KEY, ""), onnx_file)
    else:
        cfg = config_from_json(read_sidecar(engine)[1], engine)
    return ModelFiles(path, cfg, weights, onnx_file, engine, fill_onnx)


def _check_onnx_matches(onnx_file: Path, files: ModelFiles, graph: str = "per_frame") -> None:
    """An ONNX file must hold `graph`, for this config and, when weights sit beside it, exported from exactly those
    weights."""
    meta = onnx_metadata(onnx_file)
    if meta.get(GRAPH_KEY, "per_frame") != graph:  # files exported before GRAPH_KEY existed hold the per-frame graph
        raise CheckpointError(f"{onnx_file}: holds the {meta[GRAPH_KEY]} graph, not the {graph} graph")
    cfg = config_from_json(meta.get(CONFIG_KEY, ""), onnx_file)
    if cfg != files.config:
        raise CheckpointError(f"{onnx_file}: graph was exported for config {cfg.name!r} ({cfg.image_size}px) "
                              "but the model is "
                              f"{files.config.name!r} ({files.config.image_size}px)")
    if files.weights is not None and meta.get(WEIGHTS_SHA_KEY) != file_sha256(files.weights):
        raise CheckpointError(f"{onnx_file}: graph was exported from other weights than {files.weights} "
                              "(stale export); re-run `sahm export onnx`")


# ---------------------------------------------------------------- backends

def cuda_index(device: str) -> int:
    """The GPU of a CUDA device string: "cuda" -> 0, "cuda:N" -> N; ValueError naming anything else."""
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match is None:
        raise ValueError(f"device must be 'cuda' or 'cuda:N' here, got {device!r}")
    return int(match[1] or 0)


def check_torch_precision(precision: str) -> None:
    if precision not in TORCH_PRECISIONS:
        raise ValueError(f"torch precision must be one of {TORCH_PRECISIONS}, got {precision!r}")


class TorchBackend:
    """The PyTorch reference: SAHM in eval mode under inference_mode; fp16 / bf16 run under autocast."""

    name = "torch"

    def __init__(self, files: ModelFiles, device: str, precision: str = "fp32"):
        import torch

        from .checkpoint import load_model
        from .export.onnx_export import FillGraph, PerFrameGraph

        check_torch_precision(precision)
        if files.weights is None:
            raise CheckpointError(f"{files.source}: the torch backend needs {WEIGHTS_FILE}, and there is none")
        model, _ = load_model(files.weights, expect=files.config)  # on the CPU: moved below, freed if that fails
        self._torch = torch
        self.device = torch.device(device)
        self.precision = precision
        self._autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        try:
            self.graph = PerFrameGraph(model).to(self.device).eval()
        except BaseException:
            self.graph = None
            self.close()  # a half-moved model (CUDA out of memory) must not keep its blocks cached
            raise
        self.fill_graph = FillGraph(model).eval()  # the same module: nothing to load
        self.max_batch = MAX_BATCH

    def load_fill(self) -> None:
        """Nothing to do: the fill graph is the loaded model's."""

    def _call(self, graph, *inputs: np.ndarray):
        torch = self._torch
        autocast = torch.autocast(self.device.type, dtype=self._autocast, enabled=self._autocast is not None)
        with torch.inference_mode(), autocast:
            outputs = graph(*(torch.from_numpy(a).to(self.device) for a in inputs))
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            return tuple(o.float().cpu().numpy() for o in outputs)

    def run(self, image: np.ndarray, prompt: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        cleaned, mask = self._call(self.graph, image, *(prompt[n] for n in PROMPT_NAMES))
        return cleaned, mask

    def fill(self, image: np.ndarray, text: dict[str, np.ndarray], hole: np.ndarray) -> np.ndarray:
        (cleaned,) = self._call(self.fill_graph, image, *(text[n] for n in TEXT_NAMES), hole)
        return cleaned

    def close(self) -> None:
        self.graph = self.fill_graph = None
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()  # hand PyTorch's cached blocks back to the driver


def onnxruntime_install() -> str:
    """Which distribution(s) provide the importable `onnxruntime` module, with versions, e.g. 'onnxruntime 1.32.0'."""
    names = importlib.metadata.packages_distributions().get("onnxruntime", [])
    found = ", ".join(f"{n} {importlib.metadata.version(n)}" for n in sorted(set(names)))
    found = found or "no onnxruntime distribution"
    if len(set(names)) > 1:  # both write the same onnxruntime/ folder: whichever was installed last half-wins
        found += " (more than one: they share one module and break each other; uninstall all, install one)"
    return found


class OnnxRuntimeBackend:
    """An ONNX Runtime session on the per-frame graph: the CPU provider for device cpu; for device cuda the CUDA
    provider, checked active after the session is made (ONNX Runtime falls back to the CPU with only a warning)."""

    name = "onnxruntime"

    def __init__(self, files: ModelFiles, device: str, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable(f"onnxruntime is not importable ({e}); pip install '.[cpu]' or '.[gpu]'") from e
        if files.onnx is None and files.weights is None:
            raise CheckpointError(f"{files.source}: the onnxruntime backend needs {ONNX_FILE} or {WEIGHTS_FILE}")
        providers = ["CPUExecutionProvider"]
        wants_cuda = device.startswith("cuda")
        if wants_cuda:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable(self._no_cuda_reason(ort, "has no CUDAExecutionProvider"))
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": cuda_index(device)}))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        # Idle ORT workers spin by default; on a robot the cores are shared with drivers and other nodes, and measured
        # here (2 shared cores) spinning doubled CPU time per frame and more than doubled latency.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._ort, self._options, self._providers, self.files = ort, options, providers, files
        self.fill_session = None
        self.onnx_file = files.graph_onnx("per_frame")
        self.session = self._session(self.onnx_file, "per_frame")
        batch = self.session.get_inputs()[0].shape[0]  # a name when dynamic; 1 in graphs exported before 0.5
        self.max_batch = batch if isinstance(batch, int) else MAX_BATCH
        self.providers = self.session.get_providers()
        if wants_cuda and "CUDAExecutionProvider" not in self.providers:
            self.close()
            failed = "the CUDA provider failed to start; see ONNX Runtime's log"
            raise BackendUnavailable(self._no_cuda_reason(ort, f"made a session on {self.providers} only ({failed})"))
        self.device = device if wants_cuda else "cpu"

    def _session(self, onnx_file: Path, graph: str):
        """A session on `onnx_file` with this backend's options and providers, its inputs and outputs checked."""
        try:
            session = self._ort.InferenceSession(str(onnx_file), self._options, providers=self._providers)
        except Exception as e:  # ORT raises its own Fail / InvalidGraph / RuntimeException types
            raise CheckpointError(f"{onnx_file}: ONNX Runtime cannot load the graph ({type(e).__name__}: {e})") from e
        inputs, outputs = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
        spec = GRAPHS[graph]
        if inputs != list(spec.inputs) or outputs != list(spec.outputs):
            raise CheckpointError(f"{onnx_file}: graph inputs/outputs are {inputs} -> {outputs}, "
                                  f"expected {list(spec.inputs)} -> {list(spec.outputs)}")
        return session

    def load_fill(self) -> None:
        """A second session, on the fill graph (exported into the cache on first use, like the per-frame one)."""
        if self.fill_session is None:
            self.fill_session = self._session(self.files.graph_onnx("fill"), "fill")

    @staticmethod
    def _no_cuda_reason(ort, what: str) -> str:
        return (f"ONNX Runtime asked for CUDA {what}; installed: {onnxruntime_install()}, providers "
                f"{ort.get_available_providers()}. The CPU wheel `onnxruntime` has no CUDA provider: replace it with "
                f"onnxruntime-gpu (pip uninstall onnxruntime; pip install '.[gpu]'); {ORT_CUDA_PAIRING}")

    def run(self, image: np.ndarray, prompt: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        cleaned, mask = self.session.run(list(OUTPUT_NAMES), {"image": image, **prompt})
        return cleaned, mask

    def fill(self, image: np.ndarray, text: dict[str, np.ndarray], hole: np.ndarray) -> np.ndarray:
        self.load_fill()
        feeds = {"image": image, **{n: text[n] for n in TEXT_NAMES}, "hole": hole}
        (cleaned,) = self.fill_session.run(list(FILL_OUTPUT_NAMES), feeds)
        return cleaned

    def close(self) -> None:
        self.session = self.fill_session = None  # ORT frees a session (and its CUDA arena) with the last reference


class TensorRTBackend:
    """A TensorRT plan run with pycuda. The plan's key must match this machine, else it is rebuilt from the ONNX graph
    into the engine cache (minutes), or refused when there is no graph to rebuild from."""

    name = "tensorrt"

    def __init__(self, files: ModelFiles, device: str):
        from .export.tensorrt_engine import TensorRTRunner, ensure_engine, read_sidecar, tensorrt_available

        precision = None  # a cache build takes default_precision; a given engine keeps the precision it was built with
        if files.engine is not None:
            key, config_json = read_sidecar(files.engine)  # metadata first: no GPU needed to refuse a wrong file
            cfg, precision = config_from_json(config_json, files.engine), key.precision
            if cfg != files.config:
                raise CheckpointError(f"{files.engine}: engine was built for config {cfg.name!r}, "
                                      f"the model is {files.config.name!r}")
        reason = tensorrt_available()
        if reason:
            raise BackendUnavailable(reason)
        if not device.startswith("cuda"):
            raise BackendUnavailable(f"TensorRT needs a CUDA device, got device={device!r}")
        index = cuda_index(device)
        onnx_file = files.onnx
        if onnx_file is None and files.weights is not None:
            onnx_file = exported_onnx(files.weights, files.config)
        if onnx_file is not None:
            _check_onnx_matches(onnx_file, files)
            engine = ensure_engine(onnx_file, precision, engine=files.engine, device_index=index)
            self.runner = TensorRTRunner(engine, device_index=index)
        else:  # a bare .engine: usable only if it was built for this TensorRT version and GPU (checked by the runner)
            self.runner = TensorRTRunner(files.engine, device_index=index)
        self.engine_file = self.runner.engine_path
        self.max_batch = self.runner.max_batch
        self.device = f"cuda:{index}"
        self.files, self._precision, self.fill_runner = files, precision, None

    def load_fill(self) -> None:
        """The fill graph's plan, built like the per-frame one (into the engine cache, at the per-frame plan's
        precision when that was given); a bare .engine has no graph to build it from (CheckpointError)."""
        if self.fill_runner is None:
            from .export.tensorrt_engine import TensorRTRunner, ensure_engine

            index = cuda_index(self.device)
            engine = ensure_engine(self.files.graph_onnx("fill"), self._precision, device_index=index)
            self.fill_runner = TensorRTRunner(engine, device_index=index)

    def run(self, image: np.ndarray, prompt: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        out = self.runner.run({"image": image, **prompt})
        return out["cleaned"], out["mask"]

    def fill(self, image: np.ndarray, text: dict[str, np.ndarray], hole: np.ndarray) -> np.ndarray:
        self.load_fill()
        return self.fill_runner.run({"image": image, **text, "hole": hole})["cleaned"]

    def close(self) -> None:
        self.runner.close()
        if self.fill_runner is not None:
            self.fill_runner.close()


def exported_onnx(weights: Path, cfg: ModelConfig, graph: str = "per_frame") -> Path:
    """One of GRAPHS of `weights` (default the per-frame graph), exported once into the cache (keyed by the weights'
    sha256 and this package's version, since the graph is the code's as much as the weights') and reused."""
    from .export.onnx_export import export_checkpoint

    sha = file_sha256(weights)
    kind = "" if graph == "per_frame" else f"-{graph}"
    target = cache_dir("onnx") / f"sahm-{cfg.name}-{cfg.image_size}-{sha[:16]}{kind}-v{__version__}.onnx"
    if target.is_file():
        try:
            meta = onnx_metadata(target)
            if (meta.get(WEIGHTS_SHA_KEY) == sha and meta.get(VERSION_KEY) == __version__
                    and meta.get(GRAPH_KEY, "per_frame") == graph):
                return target
        except CheckpointError as e:
            log.warning("%s; exporting again", e)
    log.info("exporting %s to ONNX (%s): once per weights file", weights, target)
    try:
        return export_checkpoint(weights, target, graph=graph)
    except CheckpointError:
        raise
    except Exception as e:  # exporter failures come as many types; to the caller they mean "no ONNX graph here"
        raise BackendUnavailable(f"{weights}: could not export to ONNX ({type(e).__name__}: {e})") from e


def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def load_backend(files: ModelFiles, backend: str, device: str, threads: int | None = None,
                 precision: str | None = None):
    """One backend on one device. precision is the torch backend's (TORCH_PRECISIONS, default fp32); TensorRT takes its
    plan's and ONNX Runtime its graph's, so a precision given to either is a ValueError rather than silently ignored."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose auto or one of {', '.join(BACKENDS)}")
    if precision is not None and backend != "torch":
        raise ValueError(f"precision={precision!r} applies to the torch backend only, not {backend}")
    if backend == "torch":
        return TorchBackend(files, device, precision or "fp32")
    if backend == "onnxruntime":
        return OnnxRuntimeBackend(files, device, threads)
    return TensorRTBackend(files, device)


class Candidate(NamedTuple):
    """One thing `auto` tries: a backend on a device (precision: the torch backend's, None for the others)."""

    backend: str
    device: str
    precision: str | None = None

    def __str__(self) -> str:
        return f"{self.backend} on {self.device}" + (f" ({self.precision})" if self.precision else "")


def auto_candidates(files: ModelFiles, device: str, precision: str | None = None) -> list[Candidate]:
    """What auto tries, best first (module docstring). TensorRT only where the model has an engine file: building one
    takes minutes and is an explicit act. precision: the torch candidate's on CUDA (default fp16; fp32 on the CPU,
    where autocast is slower than fp32)."""
    engine = [Candidate("tensorrt", device)] if files.engine is not None else []
    cpu = [Candidate("onnxruntime", "cpu"), Candidate("torch", "cpu")]  # ORT first: ~1.5x faster for nano on a CPU
    if not device.startswith("cuda"):
        return engine + cpu
    return engine + [Candidate("torch", device, precision or "fp16"), Candidate("onnxruntime", device)] + cpu


# ---------------------------------------------------------------- Remover

@dataclass(frozen=True)
class _Command:
    """One active command: its text, its inputs (PROMPT_NAMES -> (1, ...) arrays), in stream mode its stream, and
    whether it is a candidate (found and shown, not erased, until confirmed)."""

    text: str
    features: dict[str, np.ndarray]
    stream: StreamState | None
    candidate: bool = False

    @property
    def point(self) -> np.ndarray:
        """(1,3) this frame's point prompt: a click's moves with its object in stream mode (StreamState.point)."""
        moved = None if self.stream is None else self.stream.point
        return self.features["point"] if moved is None else moved

    @property
    def is_click(self) -> bool:
        return bool(self.features["point"][0, 2])


class _Answer(NamedTuple):
    """What one command found in one frame: its Target, and for composite the cleaned image (3,S,S), the mask
    probabilities (S,S) and the margin composite must still grow them by (0 for stream mode's, grown already)."""

    target: Target
    cleaned: np.ndarray
    mask: np.ndarray
    margin: int


class Remover:
    """Encode commands once, then remove the referred objects from every frame. See the module docstring.

    Several commands ("remove the cup", "and the bottle") are several targets: one batch through the per-frame graph
    (one row each, in chunks of the backend's `max_batch`), each found or not on its own, and everything found
    erased with one fill over the union (the fill graph's; a single found object takes its own row's fill, as with
    one command).

    The found rule's mask_threshold, min_score and min_mask_area are plain attributes: a caller (e.g. a ROS parameter
    callback) may change them between frames without reloading the model; `rule` is the FoundRule they make now.
    `backend` and `device` say what runs the graph. `stream` (a StreamConfig, or None for per-frame) turns stream mode
    on (sahm_core.stream): state carried from frame to frame, reset by a new command, a scene cut or a new config.
    """

    def __init__(self, backend, config: ModelConfig, rule: FoundRule = DEFAULT_RULE,
                 stream: StreamConfig | None = None):
        self._backend = backend
        self.backend: str = backend.name
        self.device: str = str(backend.device)
        self.config = config
        self.mask_threshold, self.min_score, self.min_mask_area = dataclasses.astuple(rule)
        self._commands: tuple[_Command, ...] = ()  # swapped in whole: remove() sees the old set or the new one
        self._fill_context: dict[str, np.ndarray] | None = None
        self._no_fill: str | None = None  # why the fill graph cannot load (a bare TensorRT engine), once it failed
        self._last_found: dict[str, np.ndarray] = {}  # text -> (S,S) bool, its last found region (for `suppress`)
        self._suppressed: dict[str, np.ndarray] = {}  # text -> (S,S) float 0/1, regions its mask must stay out of
        self.stream = stream

    @classmethod
    def load(cls, path: str | Path, backend: str = AUTO, device: str | None = None,
             mask_threshold: float = DEFAULT_RULE.mask_threshold, min_mask_area: float = DEFAULT_RULE.min_mask_area,
             min_score: float = DEFAULT_RULE.min_score, threads: int | None = None,
             precision: str | None = None, stream: StreamConfig | None = None) -> "Remover":
        """Load a model dir / .safetensors / .onnx / .engine on one backend.

        A named backend that cannot load raises (CheckpointError naming the file and reason, BackendUnavailable, or
        what the backend raised). "auto" tries `auto_candidates` in order, logs a warning with the reason for each one
        it skips, and raises CheckpointError listing every reason only when none loads. device None: cuda when PyTorch
        sees a GPU, else cpu. precision: the torch backend's (fp32 / fp16 / bf16); None = fp32 for backend="torch",
        fp16 for auto's torch-on-CUDA candidate. stream: stream mode's config, None = per-frame.
        """
        rule = FoundRule(mask_threshold=mask_threshold, min_score=min_score, min_mask_area=min_mask_area)
        if precision is not None:
            check_torch_precision(precision)  # here, not only in the torch candidate: auto would just skip it
        files = resolve_model(path)
        device = device or _default_device()
        if backend != AUTO:
            return cls(load_backend(files, backend, device, threads, precision), files.config, rule, stream)
        failures = []
        candidates = auto_candidates(files, device, precision)
        for i, candidate in enumerate(candidates):
            try:
                loaded = load_backend(files, candidate.backend, candidate.device, threads, candidate.precision)
            except Exception as e:  # noqa: BLE001 - any backend's failure (TensorRT, CUDA, pycuda, a bug) means: next
                reason = f"{type(e).__name__}: {e}"  # the type keeps programming errors recognisable in the log
                failures.append(f"{candidate}: {reason}")
                if i + 1 < len(candidates):
                    log.warning("backend %s cannot load %s (%s); falling back to %s", candidate, path, reason,
                                candidates[i + 1])
                continue
            if failures:
                log.info("loaded %s on backend %s after %d fallback(s)", path, candidate, len(failures))
            return cls(loaded, files.config, rule, stream)
        raise CheckpointError(f"{path}: no backend could load the model: " + " | ".join(failures))

    @property
    def stream(self) -> StreamConfig | None:
        """Stream mode's config, None when off. Setting it (even to an equal config) starts every command's stream
        afresh."""
        return self._stream_config

    @stream.setter
    def stream(self, config: StreamConfig | None) -> None:
        if config is not None and not isinstance(config, StreamConfig):
            raise ValueError(f"stream must be a StreamConfig or None, got {type(config).__name__}")
        self._stream_config = config
        self._commands = tuple(dataclasses.replace(c, stream=self._new_stream()) for c in self._commands)

    def _new_stream(self) -> StreamState | None:
        config = self._stream_config
        return None if config is None else StreamState(config)

    @property
    def stream_state(self) -> StreamState | None:
        """The first command's carried state (scene cuts, the last one's reason, last step's time); None when stream
        mode is off or no command is set. Each command carries its own."""
        commands = self._commands
        return commands[0].stream if commands else None

    @property
    def commands(self) -> tuple[str, ...]:
        """The active commands' texts, one per target, in the order set."""
        return tuple(c.text for c in self._commands)

    @property
    def candidates(self) -> tuple[str, ...]:
        """The active commands that are candidates: found and shown, not erased."""
        return tuple(c.text for c in self._commands if c.candidate)

    @property
    def command(self) -> str | None:
        """The first active command (None when none)."""
        commands = self._commands
        return commands[0].text if commands else None

    @property
    def rule(self) -> FoundRule:
        """The found rule as the attributes stand now; ValueError if one was set out of range."""
        return FoundRule(mask_threshold=self.mask_threshold, min_score=self.min_score, min_mask_area=self.min_mask_area)

    def close(self) -> None:
        """Free the backend and every GPU resource it holds; idempotent. remove() afterwards raises RuntimeError."""
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    @property
    def closed(self) -> bool:
        return self._backend is None

    def __enter__(self) -> "Remover":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _encode(self, text: str) -> dict[str, np.ndarray]:
        from .text import shared_encoder  # transformers loads on the first command, not at import

        features = shared_encoder(self.config, "cpu").encode(text)
        return {name: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)
                for name, t in zip(TEXT_NAMES, features)}

    def _new_command(self, text: str) -> _Command:
        """Encode a command once (tokenizer + text encoder + tagger); a click's (sahm_core.click) is CLICK_TEXT with
        its point."""
        click = parse_click(text)
        features = self._encode(text if click is None else CLICK_TEXT)
        point = (0.0, 0.0, 0.0) if click is None else (*click, 1.0)
        features["point"] = np.array([point], np.float32)
        return _Command(text, features, self._new_stream())

    def set_command(self, text: str) -> None:
        """One command in place of every active one, its stream (stream mode) started afresh: evidence about the last
        command's object says nothing about this one's."""
        check_command(text)
        self._commands = (self._new_command(text),)
        self._last_found, self._suppressed = {}, {}

    def set_commands(self, texts, candidates=()) -> None:
        """Several commands, one target each (a repeated text counts once); those also in `candidates` are found and
        shown (Removal.candidates) but not erased. A command active already keeps its encoding and its stream, so
        adding a target never restarts the objects being erased; ValueError (and nothing changed) when any text is
        empty or not a str."""
        texts = list(texts)
        for text in texts:
            check_command(text)
        kept = {c.text: c for c in self._commands}
        new = {}
        for text in texts:
            if text not in new:
                command = kept.get(text) or self._new_command(text)
                new[text] = dataclasses.replace(command, candidate=text in candidates)
        self._commands = tuple(new.values())

    def suppress(self, text: str) -> bool:
        """Keep `text`'s mask out of the region it last found (grown by the removal margin), from the next frame on:
        "not that one" then finds the next most likely object. False when it has found nothing yet. Kept for that
        text until `set_command` or `clear_command`."""
        region = self._last_found.get(text)
        if region is None:
            return False
        grown = grow_probabilities(region.astype(np.float32), self.config.removal_margin)
        self._suppressed[text] = np.maximum(self._suppressed.get(text, 0.0), grown)
        for command in self._commands:
            if command.text == text and command.stream is not None:
                command.stream.reset()  # its carried evidence is of the object now suppressed
        return True

    def unsuppress(self) -> None:
        """Forget every region `suppress` kept commands out of."""
        self._suppressed = {}

    def clear_command(self) -> None:
        self._commands = ()
        self._last_found, self._suppressed = {}, {}

    def load_fill(self) -> None:
        """Load the fill graph (an export and a session, or a TensorRT build) and encode FILL_CONTEXT now, so the
        first given mask (`remove(frame, erase=...)`) or second target costs what every later one does."""
        if self._no_fill is not None:
            raise CheckpointError(self._no_fill)
        try:
            self._backend.load_fill()
        except (CheckpointError, BackendUnavailable) as e:
            self._no_fill = f"the fill graph cannot load: {e}"
            raise
        if self._fill_context is None:
            self._fill_context = self._encode(FILL_CONTEXT)

    def remove(self, frame: np.ndarray, erase: np.ndarray | None = None) -> Removal:
        """frame HxWx3 uint8 RGB (any size) -> Removal; with no command, or nothing found, the frame comes back
        unchanged. `erase`: an HxW mask of the frame's size (uint8 or bool, nonzero = erase) found elsewhere, e.g. by
        a segmentation node; it is erased too. Two or more regions to erase (found objects, a given mask) get one fill
        over their union, the fill graph's, whose context is the first command (FILL_CONTEXT when there is none).
        Candidates (`set_commands(..., candidates)`) are found and returned in Removal.candidates, never erased."""
        start = time.perf_counter()
        check_frame(frame)
        if erase is not None:
            check_given_mask(erase, frame.shape)
        backend, commands = self._backend, self._commands  # one read each: other threads may set commands or close
        if backend is None:
            raise RuntimeError(f"this Remover ({self.backend} on {self.device}) is closed; load a new one")
        if not commands and erase is None:
            return self._unchanged(frame, (), start)
        image = to_model_input(frame, self.config.image_size)
        rule = self.rule  # one read: a parameter callback may change the attributes mid-frame
        answers = self._find(backend, image, commands, frame.shape, rule)
        targets = tuple(a.target for a in answers)
        stream_s = sum(c.stream.last_step_s for c in commands if c.stream is not None)
        found = [a for a in answers if a.target.found and a.target.confirmed]
        candidates = None
        if any(c.candidate for c in commands):
            candidates = np.zeros(frame.shape[:2], np.uint8)
            for a in answers:
                if a.target.found and not a.target.confirmed:
                    candidates[frame_mask(a.mask, frame.shape, rule.mask_threshold, a.margin)] = 255
        if erase is None and (len(found) <= 1 or not self._fill_available()):
            if not found:
                return self._unchanged(frame, targets, start, stream_s)._replace(candidates=candidates)
            # one object, or a model without a fill graph: each found object with its own row's fill, in turn
            out, binary = frame, np.zeros(frame.shape[:2], np.uint8)
            for one in found:
                out, erased = composite(out, one.cleaned, one.mask, rule.mask_threshold, one.margin)
                binary |= erased
            score = max(t.score for t in targets)
            return Removal(out, binary, score, True, time.perf_counter() - start, stream_s, 0, targets, candidates)
        self.load_fill()  # once: later calls find the graph and FILL_CONTEXT's encoding ready
        # One fill over the union, then one composite over it, each part grown by the margin once: every found
        # object exactly as it would be alone (the answers share one margin: stream mode's all come grown), the given
        # hole through any threshold below 1 (every model pixel it covers is grown around).
        margin = found[0].margin if found else self.config.removal_margin
        holes = [(a.mask > rule.mask_threshold).astype(np.float32) for a in found]
        parts = [a.mask for a in found]
        if erase is not None:
            given = to_model_hole(erase, self.config.image_size)[0, 0]  # (S,S) 0/1
            holes.append(given)
            parts.append(grow_probabilities(given, self.config.removal_margin - margin))
        context = commands[0].features if commands else self._fill_context
        hole = np.maximum.reduce(holes)[None, None]
        filled = backend.fill(image, context, hole)[0]  # the graph grows the hole by the margin
        image, binary = composite(frame, filled, np.maximum.reduce(parts), rule.mask_threshold, margin)
        given_pixels = 0 if erase is None else int(np.count_nonzero(binary & (erase > 0)))
        score = max((t.score for t in targets), default=0.0)
        return Removal(image, binary, score, bool(found), time.perf_counter() - start, stream_s, given_pixels, targets,
                       candidates)

    def _fill_available(self) -> bool:
        """Whether the fill graph is loaded, or loads now; why not is logged once."""
        first_try = self._no_fill is None
        try:
            self.load_fill()
        except (CheckpointError, BackendUnavailable) as e:
            if first_try:
                log.warning("%s; several found objects are filled one after another, each by its own row", e)
            return False
        return True

    def _find(self, backend, image: np.ndarray, commands: tuple[_Command, ...], shape: tuple[int, ...],
              rule: FoundRule) -> list[_Answer]:
        """The per-frame graph on every command at once (one row each, in chunks of the backend's max_batch), then
        each command's found decision, through its stream first in stream mode."""
        cleaned, masks = [], []
        for first in range(0, len(commands), backend.max_batch):
            chunk = commands[first: first + backend.max_batch]
            prompt = {name: np.concatenate([c.point if name == "point" else c.features[name] for c in chunk])
                      for name in PROMPT_NAMES}
            rows = np.repeat(image, len(chunk), axis=0)  # (k,3,S,S): the backbone is text-guided from the start
            chunk_cleaned, chunk_masks = backend.run(rows, prompt)
            cleaned.extend(chunk_cleaned)
            masks.extend(chunk_masks[:, 0])
        answers, camera = [], None
        for command, row_cleaned, mask in zip(commands, cleaned, masks):
            answers.append(self._decide(command, image, row_cleaned, mask, shape, rule, camera))
            if camera is None and command.stream is not None:
                camera = command.stream.last_camera  # the camera's motion is estimated once a frame, not per target
        return answers

    def _decide(self, command: _Command, image: np.ndarray, cleaned: np.ndarray, mask: np.ndarray,
                shape: tuple[int, ...], rule: FoundRule, camera: Camera | None = None) -> _Answer:
        """One command's graph outputs (cleaned (3,S,S), mask probabilities (S,S)) -> its _Answer."""
        suppressed = self._suppressed.get(command.text)
        if suppressed is not None:
            mask = mask * (1.0 - suppressed)  # "not that one": the region discarded is no longer this command's
        answer = self._decide_mask(command, image, cleaned, mask, shape, rule, camera)
        if answer.target.found:
            self._last_found[command.text] = answer.mask > rule.mask_threshold
        return answer

    def _decide_mask(self, command: _Command, image: np.ndarray, cleaned: np.ndarray, mask: np.ndarray,
                     shape: tuple[int, ...], rule: FoundRule, camera: Camera | None) -> _Answer:
        confirmed = not command.candidate
        stream = command.stream
        if stream is None:
            found, score, area = found_decision(mask, rule)
            return _Answer(Target(command.text, found, score, area, confirmed), cleaned, mask,
                           self.config.removal_margin)
        fused = stream.fuse(image[0], mask, cleaned, rule.mask_threshold, self.config.removal_margin, shape, camera)
        found, score, area = found_decision(fused.mask, rule)
        held = None if found else stream.hold(rule)
        if held is not None:
            (fused, score), found = held, True
            area = found_decision(fused.mask, rule)[2]
        point = command.point  # the prompt this frame was found with
        stream.record(found)
        if found and command.is_click:
            stream.follow(point)
        # fused.grown is grown already: composite must not grow it again (margin 0)
        return _Answer(Target(command.text, found, score, area, confirmed), fused.cleaned, fused.grown, 0)

    @staticmethod
    def _unchanged(frame: np.ndarray, targets: tuple[Target, ...], start: float, stream_s: float = 0.0) -> Removal:
        empty = np.zeros(frame.shape[:2], np.uint8)
        score = max((t.score for t in targets), default=0.0)
        return Removal(frame.copy(), empty, score, False, time.perf_counter() - start, stream_s, 0, targets)


# ---------------------------------------------------------------- `sahm remove`

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+",
                        help="image files (any format OpenCV reads), folders of them (in name order) or video files "
                             f"({' '.join(VIDEO_SUFFIXES)}); with --stream, consecutive frames in this order")
    parser.add_argument("--model", required=True, help="model dir, .safetensors, .onnx or .engine")
    # dest must not be "command": the `sahm` parser keeps the subcommand name there
    parser.add_argument("--command", dest="command_texts", action="append",
                        help='what to remove, e.g. "the red cup on the left" (unless --click or --erase-mask is '
                             "given); repeat it for several objects, erased together")
    parser.add_argument("--click", dest="clicks", action="append", type=pixel_argument, metavar="X,Y",
                        help="remove the object under pixel X,Y (column, row) of each image, instead of or beside a "
                             "--command; repeat it for several objects")
    parser.add_argument("--erase-mask",
                        help="also erase a mask found elsewhere (nonzero = erase, each frame's size): one mask image "
                             "for every input, or a folder holding one per input under the input's name (NAME.png)")
    parser.add_argument("--out", required=True, help="folder for NAME.png (cleaned) and NAME_mask.png")
    add_backend_arguments(parser)
    parser.add_argument("--precision", default=None, choices=TORCH_PRECISIONS,
                        help="torch backend's precision (default: fp32; auto's torch on CUDA: fp16)")
    add_rule_arguments(parser)
    add_stream_arguments(parser)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("sahm_core").setLevel(logging.INFO)  # our progress lines, not every library's INFO chatter
    # plain Python, as in gpu_check: the node's own reading of a command (ros_ror.commands), so the CLI, the node and
    # `ros-ror replay` give the model the same text for the same words
    from ros_ror.commands import Intent, parse_command

    try:
        if not args.command_texts and not args.clicks and args.erase_mask is None:
            raise ValueError("say what to remove with --command or --click, or give --erase-mask")
        commands = [parse_command(text) for text in args.command_texts or ()]
        for text, command in zip(args.command_texts or (), commands):
            if command.intent is Intent.END:
                raise ValueError(f"--command {text!r} ends a command; say what to remove")
        if args.erase_mask is not None and not Path(args.erase_mask).exists():
            raise ValueError(f"--erase-mask {args.erase_mask}: no such file or folder")
        remover = Remover.load(args.model, backend=args.backend, device=args.device, precision=args.precision,
                               stream=stream_from_args(args), **dataclasses.asdict(rule_from_args(args)))
        remover.set_commands([command.target for command in commands])
        if args.erase_mask is not None:
            remover.load_fill()
    except (CheckpointError, RuntimeError, ValueError) as e:  # RuntimeError: BackendUnavailable, TensorRT build errors
        print(f"sahm remove: {e}")
        return 1
    with remover:
        return _remove_files(remover, args)


def _input_frames(paths: list[str]):
    """(name, frame BGR or None when unreadable) in order: image files, every image of a folder (sorted by name),
    every frame of a video file (named STEM_NNNNN)."""
    for path in map(Path, paths):
        if path.is_dir():
            for child in sorted(p for p in path.iterdir() if p.is_file()):
                yield str(child), cv2.imread(str(child), cv2.IMREAD_COLOR)
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            capture = cv2.VideoCapture(str(path))
            index = 0
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                yield f"{path.parent / path.stem}_{index:05d}", bgr
                index += 1
            capture.release()
            if index == 0:
                yield str(path), None
        else:
            yield str(path), cv2.imread(str(path), cv2.IMREAD_COLOR)


def pixel_argument(text: str) -> tuple[float, float]:
    """--click's X,Y -> (X, Y)."""
    try:
        u, v = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y in pixels (e.g. 320,240), got {text!r}") from None
    return u, v


def _remove_files(remover: Remover, args: argparse.Namespace) -> int:
    commands = remover.commands  # the spoken ones; the clicks are placed on each frame
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"backend {remover.backend} on {remover.device}, model {remover.config.name} "
          f"({remover.config.image_size}px), commands {list(remover.commands)}"
          + (f", clicks {args.clicks}" if args.clicks else "")
          + (f", stream mode (strength {remover.stream.strength:g})" if remover.stream else ""))
    failed = 0
    for name, bgr in _input_frames(args.images):
        if bgr is None:
            print(f"{name}: cannot read as an image or video, skipped")
            failed += 1
            continue
        erase = None
        if args.erase_mask is not None:
            mask_path = Path(args.erase_mask)
            mask_path = mask_path / f"{Path(name).stem}.png" if mask_path.is_dir() else mask_path
            erase = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
            if erase is None or erase.shape != bgr.shape[:2]:
                why = ("cannot read it as an image" if erase is None else
                       f"it is {erase.shape[1]}x{erase.shape[0]}, the frame {bgr.shape[1]}x{bgr.shape[0]}")
                print(f"{name}: mask {mask_path}: {why}; skipped")
                failed += 1
                continue
        if args.clicks:
            try:  # a click is a fraction of the frame: a frame of another size is another command
                clicks = [pixel_click(u, v, bgr.shape[1], bgr.shape[0]) for u, v in args.clicks]
            except ValueError as e:
                print(f"{name}: {e}; skipped")
                failed += 1
                continue
            remover.set_commands([*commands, *clicks])
        result = remover.remove(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), erase=erase)
        stem = Path(name).stem
        cv2.imwrite(str(out / f"{stem}.png"), cv2.cvtColor(result.image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out / f"{stem}_mask.png"), result.mask)
        print(f"{name}: found={result.found} score={result.score:.3f} "
              f"mask={np.count_nonzero(result.mask) / result.mask.size:.2%} {result.latency_s * 1e3:.1f} ms")
    return 1 if failed else 0
