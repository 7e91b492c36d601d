"""TensorRT engines: build from the ONNX per-frame graph, cache by key, run with pycuda.

Written to NVIDIA's documented TensorRT 10 Python API (tensorrt.Builder, OnnxParser,
IBuilderConfig, IProgressMonitor, IExecutionContext.execute_async_v3) and pycuda.

A serialized plan only runs on the TensorRT version and GPU architecture it was
built for, and it silently encodes one ONNX graph, precision and input shape. So
every plan has a sidecar JSON with its EngineKey (ONNX sha256, TensorRT version,
GPU compute capability, precision, input shape). A plan whose key does not match
the current one is never deserialized: it is rebuilt (and the log says a build can
take minutes), or refused where there is no ONNX graph to rebuild from.

`sahm build-engine --onnx model.onnx --out model.engine [--fp16] [--workspace-gb N] [--timing-cache PATH]`
prebuilds one ahead of time (robot provisioning, CI with a GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checkpoint import CONFIG_KEY, CheckpointError
from .cache import cache_dir, file_sha256

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")
SIDECAR_FORMAT = "sahm-trt-engine-v1"


class EngineMismatchError(CheckpointError):
    """A TensorRT plan whose key (ONNX hash, TensorRT version, GPU, precision, shape) is not the one needed."""


class TensorRTUnavailable(RuntimeError):
    """tensorrt / pycuda cannot be imported, or there is no CUDA GPU."""


@dataclass(frozen=True)
class EngineKey:
    """Everything a plan depends on; two plans are interchangeable iff their keys are equal."""

    onnx_sha256: str
    tensorrt_version: str
    compute_capability: str  # "major.minor" of the GPU the plan was built on
    precision: str  # "fp16" | "fp32"
    input_shape: tuple[int, ...]  # shape of the `image` input, (1, 3, S, S)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))

    def digest(self) -> str:
        """Short stable hash of the whole key: part of the cached plan's file name."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def mismatches(self, wanted: "EngineKey") -> list[str]:
        """Fields where this (a plan's) key differs from the wanted one, as 'field: plan X, needed Y'."""
        return [f"{f.name}: plan has {getattr(self, f.name)!r}, needed {getattr(wanted, f.name)!r}"
                for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(wanted, f.name)]


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def cached_engine_path(key: EngineKey, folder: str | Path | None = None) -> Path:
    folder = Path(folder) if folder is not None else cache_dir("engines")
    return folder / f"sahm-{key.onnx_sha256[:12]}-{key.precision}-{key.digest()}.engine"


def write_sidecar(engine: str | Path, key: EngineKey, model_config_json: str) -> Path:
    path = sidecar_path(engine)
    doc = {"format": SIDECAR_FORMAT, "key": dataclasses.asdict(key), "model_config": model_config_json}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    return path


def read_sidecar(engine: str | Path) -> tuple[EngineKey, str]:
    """(EngineKey, model config JSON) of a plan; CheckpointError naming the file when missing or unreadable."""
    engine = Path(engine)
    if not engine.is_file():
        raise CheckpointError(f"{engine}: TensorRT engine file not found")
    path = sidecar_path(engine)
    if not path.is_file():
        raise CheckpointError(f"{engine}: no metadata file {path.name} beside the engine, so its TensorRT version, GPU and "
                              "source graph are unknown; refusing to load it (rebuild with `sahm build-engine`)")
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"format is {doc.get('format')!r}, expected {SIDECAR_FORMAT!r}")
        return EngineKey(**doc["key"]), doc["model_config"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: corrupt engine metadata ({type(e).__name__}: {e})") from e


def check_engine(engine: str | Path, wanted: EngineKey) -> str:
    """Model config JSON of a plan whose key equals `wanted`; EngineMismatchError listing every differing field otherwise."""
    key, config_json = read_sidecar(engine)
    diffs = key.mismatches(wanted)
    if diffs:
        raise EngineMismatchError(f"{engine}: engine does not match this setup ({'; '.join(diffs)}); it will not be loaded")
    return config_json


# ---------------------------------------------------------------- TensorRT and the GPU (imported only when used)

def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(f"the tensorrt Python package is not importable ({e}); install NVIDIA TensorRT 10") from e
    return trt


def _cuda_device(index: int = 0):
    """pycuda's driver module and device `index`; TensorRTUnavailable without pycuda or a GPU."""
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise TensorRTUnavailable(f"pycuda is not importable ({e}); `pip install pycuda` on the GPU machine") from e
    try:
        cuda.init()
        if cuda.Device.count() <= index:
            raise TensorRTUnavailable(f"no CUDA GPU with index {index} (found {cuda.Device.count()})")
        return cuda, cuda.Device(index)
    except cuda.Error as e:
        raise TensorRTUnavailable(f"CUDA driver error: {e}") from e


def tensorrt_available() -> str | None:
    """None when TensorRT can run here, else the reason it cannot (used by auto backend selection and test skips)."""
    try:
        _import_tensorrt()
        _cuda_device()
    except TensorRTUnavailable as e:
        return str(e)
    return None


def current_key(onnx_path: str | Path, precision: str, device_index: int = 0) -> EngineKey:
    """The key a plan for this ONNX file must have on this machine."""
    trt = _import_tensorrt()
    _, device = _cuda_device(device_index)
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    image = next(i for i in model.graph.input if i.name == "image")
    shape = tuple(d.dim_value for d in image.type.tensor_type.shape.dim)
    major, minor = device.compute_capability()
    return EngineKey(file_sha256(onnx_path), trt.__version__, f"{major}.{minor}", precision, shape)


def _progress_monitor(trt):
    """An IProgressMonitor that logs each optimizer phase and its step counts (thread-safe, as the API requires)."""

    class LogProgress(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._steps: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            with self._lock:
                self._steps[phase_name] = num_steps
            indent = "  " if parent_phase else ""
            log.info("TensorRT build: %s%s (%d steps)", indent, phase_name, num_steps)

        def step_complete(self, phase_name, step):
            with self._lock:
                total = self._steps.get(phase_name, 0)
            if total >= 10 and (step + 1) % max(1, total // 10) == 0:
                log.info("TensorRT build:   %s %d/%d", phase_name, step + 1, total)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            with self._lock:
                self._steps.pop(phase_name, None)

    return LogProgress()


def build_engine(onnx_path: str | Path, out: str | Path, precision: str = "fp16", workspace_gb: float = 4.0,
                 timing_cache: str | Path | None = None, model_config_json: str | None = None, device_index: int = 0) -> Path:
    """Parse the ONNX graph, build a serialized plan and write it plus its sidecar key. Takes minutes on a large model."""
    from .onnx_export import onnx_metadata  # imports torch: only when building

    trt = _import_tensorrt()
    cuda, _ = _cuda_device(device_index)
    key = current_key(onnx_path, precision, device_index)
    if model_config_json is None:
        model_config_json = onnx_metadata(onnx_path).get(CONFIG_KEY, "")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log.warning("building TensorRT engine %s from %s (%s, input %s); this can take several minutes",
                out, onnx_path, precision, key.input_shape)

    ctx = _device_context(cuda, device_index)
    try:
        plan, config = _build_plan(trt, onnx_path, precision, workspace_gb, timing_cache)
    finally:
        ctx.pop()
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(memoryview(plan))
    tmp.replace(out)
    write_sidecar(out, key, model_config_json)
    if timing_cache:
        Path(timing_cache).write_bytes(memoryview(config.get_timing_cache().serialize()))
    log.info("wrote TensorRT engine %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return out


def _build_plan(trt, onnx_path, precision, workspace_gb, timing_cache):
    """(serialized plan or None, builder config): the documented Builder -> OnnxParser -> BuilderConfig sequence."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode, no flags needed
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CheckpointError(f"{onnx_path}: TensorRT's ONNX parser rejected the graph: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)  # fp16 kernels allowed; I/O tensors stay fp32 as in the ONNX graph
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
    loaded = config.create_timing_cache(cache_bytes)
    if loaded is None or not config.set_timing_cache(loaded, ignore_mismatch=False):
        # a timing cache from another TensorRT version / GPU (or a damaged file) is dropped, never half-used
        log.warning("timing cache %s does not fit this TensorRT/GPU; starting a fresh one", timing_cache)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    monitor = _progress_monitor(trt)  # must outlive the build
    config.progress_monitor = monitor
    return builder.build_serialized_network(network, config), config


def ensure_engine(onnx_path: str | Path, precision: str = "fp16", engine: str | Path | None = None,
                  folder: str | Path | None = None, workspace_gb: float = 4.0, device_index: int = 0) -> Path:
    """A plan for `onnx_path` whose key matches this machine: `engine` if given and matching, else the cached one,
    else a fresh build into the cache. A mismatched plan is never loaded."""
    wanted = current_key(onnx_path, precision, device_index)
    if engine is not None:
        try:
            check_engine(engine, wanted)
            return Path(engine)
        except CheckpointError as e:
            log.warning("%s; using the engine cache instead", e)
    cached = cached_engine_path(wanted, folder)
    if cached.is_file():
        try:
            check_engine(cached, wanted)
            return cached
        except CheckpointError as e:
            log.warning("%s; rebuilding", e)
    return build_engine(onnx_path, cached, precision=precision, workspace_gb=workspace_gb,
                        timing_cache=cached.parent / "timing.cache", device_index=device_index)


def _device_context(cuda, device_index: int = 0):
    """Make the device's primary context current: the context PyTorch's CUDA runtime uses, so both share memory and
    streams' context instead of fighting over two. Returned pushed; the caller pops it."""
    ctx = cuda.Device(device_index).retain_primary_context()
    ctx.push()
    return ctx


class TensorRTRunner:
    """One deserialized plan, its execution context, pinned host buffers, device buffers and one CUDA stream."""

    def __init__(self, engine_path: str | Path, wanted: EngineKey | None = None, device_index: int = 0):
        trt = _import_tensorrt()
        cuda, _ = _cuda_device(device_index)
        self._cuda = cuda
        self.engine_path = Path(engine_path)
        key, self.model_config_json = read_sidecar(engine_path)
        if wanted is not None:
            check_engine(engine_path, wanted)
        self._ctx = _device_context(cuda, device_index)
        try:
            here = EngineKey(key.onnx_sha256, trt.__version__,
                             "{}.{}".format(*cuda.Device(device_index).compute_capability()), key.precision, key.input_shape)
            if key.mismatches(here):
                raise EngineMismatchError(f"{engine_path}: engine does not match this machine "
                                          f"({'; '.join(key.mismatches(here))}); it will not be loaded")
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if self.engine is None:
                raise CheckpointError(f"{engine_path}: TensorRT could not deserialize the plan (corrupt file?)")
            self.context = self.engine.create_execution_context()
            self.stream = cuda.Stream()
            self.inputs, self.outputs = [], []
            self.host, self.device = {}, {}
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                shape = tuple(self.engine.get_tensor_shape(name))
                dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
                self.host[name] = cuda.pagelocked_empty(shape, dtype)
                self.device[name] = cuda.mem_alloc(self.host[name].nbytes)
                self.context.set_tensor_address(name, int(self.device[name]))
                is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                (self.inputs if is_input else self.outputs).append(name)
        finally:
            self._ctx.pop()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy inputs to pinned memory, then H2D, execute and D2H asynchronously on one stream; wait once at the end."""
        cuda = self._cuda
        self._ctx.push()  # the caller's thread may not be the one that loaded the engine
        try:
            for name in self.inputs:
                np.copyto(self.host[name], feeds[name], casting="same_kind")
                cuda.memcpy_htod_async(self.device[name], self.host[name], self.stream)
            if not self.context.execute_async_v3(stream_handle=self.stream.handle):
                raise RuntimeError(f"{self.engine_path}: TensorRT execution failed")
            for name in self.outputs:
                cuda.memcpy_dtoh_async(self.host[name], self.device[name], self.stream)
            self.stream.synchronize()
        finally:
            self._ctx.pop()
        return {name: self.host[name].copy() for name in self.outputs}

    def close(self) -> None:
        """Free device buffers and release the primary context reference."""
        self._ctx.push()
        try:
            for buf in self.device.values():
                buf.free()
            self.device.clear()
            del self.context, self.engine
        finally:
            self._ctx.pop()
            self._ctx.detach()


# ---------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True, help="per-frame graph from `sahm export onnx`")
    parser.add_argument("--out", required=True, help="engine file to write (its key goes to OUT.json beside it)")
    parser.add_argument("--fp16", action="store_true", help="allow fp16 kernels (recommended on any recent GPU)")
    parser.add_argument("--workspace-gb", type=float, default=4.0, help="builder workspace memory limit (default %(default)s GB)")
    parser.add_argument("--timing-cache", help="timing cache file: read if present, updated after the build (faster rebuilds)")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("sahm_core").setLevel(logging.INFO)  # our progress lines, not every library's INFO chatter
    from .trt_ops import tensorrt_problems

    if not Path(args.onnx).is_file():
        print(f"sahm build-engine: {args.onnx}: ONNX file not found")
        return 1
    problems = tensorrt_problems(args.onnx)
    if problems:
        print("sahm build-engine: the graph is not ready for TensorRT:\n  - " + "\n  - ".join(problems))
        return 1
    reason = tensorrt_available()
    if reason:
        print(f"sahm build-engine: cannot build here: {reason}")
        return 1
    try:
        out = build_engine(args.onnx, args.out, precision="fp16" if args.fp16 else "fp32",
                           workspace_gb=args.workspace_gb, timing_cache=args.timing_cache)
    except (CheckpointError, RuntimeError) as e:
        print(f"sahm build-engine: {e}")
        return 1
    print(f"wrote {out} and {sidecar_path(out)}")
    return 0
