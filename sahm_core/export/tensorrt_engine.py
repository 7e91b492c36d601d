"""TensorRT engines: build from the ONNX per-frame graph, cache by key, run with pycuda.

Written to NVIDIA's documented TensorRT 10 Python API (tensorrt.Builder, OnnxParser,
IBuilderConfig, IProgressMonitor, IExecutionContext.execute_async_v3) and pycuda.

Precision. An fp16 plan is a weakly typed build with BuilderFlag.FP16 (deprecated since
TensorRT 10.12, removed in 11, where every network is strongly typed and fp16 has to
come from an fp16 ONNX graph, which this project does not export). So the `[tensorrt]`
extra pins tensorrt<11, and on a TensorRT 11 found anyway an fp16 build is refused with
that reason (the runtime's cache build uses fp32 there). An fp32 plan clears
BuilderFlag.TF32 (on by default): TF32 matmuls and convolutions keep a 10-bit mantissa,
enough to flip the model's hard `mask_logits > 0` hole on pixels near the boundary, and
an fp32 plan is meant to match ONNX Runtime.

CUDA context. Each runner (and each build) makes a pycuda context of its own
(Device.make_context) instead of retaining the device's primary context: pycuda's
detach() of a retained primary context releases it but leaves it on the thread's
context stack (cuDevicePrimaryCtxRelease never pops), so every load/close cycle would
leave one more entry behind. An own context is destroyed and popped by detach() while
it is current. The context is pushed around every call that touches the GPU and popped
after, in the calling thread, so a runner may be loaded in one thread and run and closed
in another (the ROS node runs inference in a worker thread).

A serialized plan only runs on the TensorRT version and GPU architecture it was
built for, and it silently encodes one ONNX graph, precision and input shape. A graph
with a dynamic batch (the per-frame graph: one row per target) gets one optimisation
profile, tuned for batch 1 and valid up to MAX_BATCH; the runner's buffers hold
MAX_BATCH rows and a call sets the batch it feeds (IExecutionContext.set_input_shape). So
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

from ..checkpoint import CONFIG_KEY, CheckpointError, config_from_json, config_json
from .cache import cache_dir, file_sha256
from .onnx_export import MAX_BATCH

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
    input_shape: tuple[int, ...]  # shape of the `image` input: (-1, 3, S, S) for a dynamic batch, else (B, 3, S, S)

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
        raise CheckpointError(f"{engine}: no metadata file {path.name} beside the engine, so its TensorRT version, "
                              "GPU and source graph are unknown; refusing to load it "
                              "(rebuild with `sahm build-engine`)")
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"format is {doc.get('format')!r}, expected {SIDECAR_FORMAT!r}")
        return EngineKey(**doc["key"]), doc["model_config"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: corrupt engine metadata ({type(e).__name__}: {e})") from e


def check_engine(engine: str | Path, wanted: EngineKey) -> str:
    """Model config JSON of a plan whose key equals `wanted`; EngineMismatchError listing every differing field
    otherwise."""
    key, config_json = read_sidecar(engine)
    diffs = key.mismatches(wanted)
    if diffs:
        raise EngineMismatchError(f"{engine}: engine does not match this setup ({'; '.join(diffs)}); "
                                  "it will not be loaded")
    return config_json


# ---------------------------------------------------------------- TensorRT and the GPU (imported only when used)

def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(f"the tensorrt Python package is not importable ({e}); "
                                  "install NVIDIA TensorRT 10 (pip install '.[tensorrt]')") from e
    return trt


def has_weakly_typed_fp16(trt) -> bool:
    """Whether this TensorRT can build fp16 from an fp32 graph (BuilderFlag.FP16: TensorRT 10, gone in 11)."""
    return hasattr(trt.BuilderFlag, "FP16")


def default_precision(trt) -> str:
    """The precision a cache build uses: fp16 where this TensorRT can build it from our fp32 graph, else fp32."""
    if has_weakly_typed_fp16(trt):
        return "fp16"
    log.warning("TensorRT %s has no BuilderFlag.FP16 (strongly typed only); building the engine in fp32",
                trt.__version__)
    return "fp32"


def precision_flags(trt, precision: str) -> tuple[list, list]:
    """(BuilderFlags to set, BuilderFlags to clear) on an IBuilderConfig for `precision`, for the `trt` module given.

    fp16: set FP16 (fp16 kernels where faster; I/O tensors stay fp32 as in the graph); TF32 left at its default.
    fp32: clear TF32, so the plan computes in IEEE fp32 like ONNX Runtime (see the module docstring).
    TensorRTUnavailable for fp16 on a TensorRT without weakly typed fp16 (11 and later), naming the way out.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return [], [trt.BuilderFlag.TF32]
    if not has_weakly_typed_fp16(trt):
        raise TensorRTUnavailable(
            f"TensorRT {trt.__version__} has no BuilderFlag.FP16: from TensorRT 11 every network is strongly typed and "
            "fp16 must come from an fp16 ONNX graph, which sahm does not export. Build an fp32 engine (no --fp16) "
            "or install TensorRT 10 (pip install '.[tensorrt]' pins tensorrt<11)")
    return [trt.BuilderFlag.FP16], []


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
    major, minor = device.compute_capability()
    return EngineKey(file_sha256(onnx_path), trt.__version__, f"{major}.{minor}", precision,
                     onnx_input_shape(onnx_path))


def onnx_input_shape(onnx_path: str | Path, name: str = "image") -> tuple[int, ...]:
    """An ONNX graph input's shape as TensorRT's network sees it: -1 for a dynamic dimension."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    tensor = next(i for i in model.graph.input if i.name == name)
    return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.type.tensor_type.shape.dim)


def batch_profile(shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) of an input whose dynamic dimensions (-1) are the batch: tuned for one target, valid up to
    MAX_BATCH."""
    one, most = (tuple(n if d == -1 else d for d in shape) for n in (1, MAX_BATCH))
    return one, one, most


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
                 timing_cache: str | Path | None = None, model_config_json: str | None = None,
                 device_index: int = 0) -> Path:
    """Parse the ONNX graph, build a serialized plan and write it plus its sidecar key. Takes minutes on a large
    model."""
    from .onnx_export import onnx_metadata  # imports torch: only when building

    trt = _import_tensorrt()
    precision_flags(trt, precision)  # refuse an impossible precision before minutes of work
    _, device = _cuda_device(device_index)
    key = current_key(onnx_path, precision, device_index)
    out = Path(out)
    if model_config_json is None:  # the graph's config, its text encoder path re-rooted from the ONNX file to the plan
        model_config_json = config_json(config_from_json(onnx_metadata(onnx_path).get(CONFIG_KEY, ""), onnx_path), out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log.warning("building TensorRT engine %s from %s (%s, input %s); this can take several minutes",
                out, onnx_path, precision, key.input_shape)

    ctx = device.make_context()  # created current; the builder's GPU memory goes with it
    try:
        plan, timing = _build_plan(trt, onnx_path, precision, workspace_gb, timing_cache)
    finally:
        ctx.detach()  # current, so destroyed and popped
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(memoryview(plan))
    tmp.replace(out)
    write_sidecar(out, key, model_config_json)
    if timing_cache:
        Path(timing_cache).write_bytes(timing)
    log.info("wrote TensorRT engine %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return out


def _build_plan(trt, onnx_path, precision, workspace_gb, timing_cache) -> tuple[object, bytes]:
    """(serialized plan or None, serialized timing cache): the documented Builder -> OnnxParser -> BuilderConfig
    sequence. Every builder object is local, so it is released before the caller destroys the CUDA context."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode, no flags needed
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CheckpointError(f"{onnx_path}: TensorRT's ONNX parser rejected the graph: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    if any(-1 in tuple(t.shape) for t in inputs):  # the per-frame graph's batch: one row per target
        profile = builder.create_optimization_profile()
        for t in inputs:
            profile.set_shape(t.name, *batch_profile(tuple(t.shape)))
        config.add_optimization_profile(profile)
    to_set, to_clear = precision_flags(trt, precision)
    for flag in to_set:
        config.set_flag(flag)
    for flag in to_clear:
        config.clear_flag(flag)
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
    loaded = config.create_timing_cache(cache_bytes)
    if loaded is None or not config.set_timing_cache(loaded, ignore_mismatch=False):
        # a timing cache from another TensorRT version / GPU (or a damaged file) is dropped, never half-used
        log.warning("timing cache %s does not fit this TensorRT/GPU; starting a fresh one", timing_cache)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    monitor = _progress_monitor(trt)  # must outlive the build
    config.progress_monitor = monitor
    plan = builder.build_serialized_network(network, config)
    return plan, bytes(memoryview(config.get_timing_cache().serialize()))


def ensure_engine(onnx_path: str | Path, precision: str | None = None, engine: str | Path | None = None,
                  folder: str | Path | None = None, workspace_gb: float = 4.0, device_index: int = 0) -> Path:
    """A plan for `onnx_path` whose key matches this machine: `engine` if given and matching, else the cached one,
    else a fresh build into the cache. A mismatched plan is never loaded. precision None: `default_precision`."""
    precision = precision or default_precision(_import_tensorrt())
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


class TensorRTRunner:
    """One deserialized plan, its execution context, pinned host buffers, device buffers and one CUDA stream, all in
    a CUDA context of the runner's own (module docstring). run() and close() may be called from any thread: each
    pushes the context in the calling thread and pops it before returning. close() frees everything (idempotent)."""

    def __init__(self, engine_path: str | Path, wanted: EngineKey | None = None, device_index: int = 0):
        trt = _import_tensorrt()
        cuda, device = _cuda_device(device_index)
        self._cuda = cuda
        self.engine_path = Path(engine_path)
        key, self.model_config_json = read_sidecar(engine_path)
        if wanted is not None:
            check_engine(engine_path, wanted)
        here = EngineKey(key.onnx_sha256, trt.__version__, "{}.{}".format(*device.compute_capability()), key.precision,
                         key.input_shape)
        if key.mismatches(here):
            raise EngineMismatchError(f"{engine_path}: engine does not match this machine "
                                      f"({'; '.join(key.mismatches(here))}); it will not be loaded")
        self._lock = threading.Lock()  # run() and close() never overlap: close frees what run uses
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, object] = {}
        self.context = self.engine = self._runtime = self.stream = None
        self._ctx = device.make_context()  # created and current
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if self.engine is None:
                raise CheckpointError(f"{engine_path}: TensorRT could not deserialize the plan (corrupt file?)")
            self.context = self.engine.create_execution_context()
            self.stream = cuda.Stream()
            # Buffers for the largest batch the plan takes; a smaller batch uses their first rows.
            image_shape = tuple(self.engine.get_tensor_shape("image"))
            self.dynamic = image_shape[0] == -1
            self.max_batch = self.engine.get_tensor_profile_shape("image", 0)[2][0] if self.dynamic else image_shape[0]
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                shape = tuple(self.max_batch if d == -1 else d for d in self.engine.get_tensor_shape(name))
                dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
                self.host[name] = cuda.pagelocked_empty(shape, dtype)
                self.device[name] = cuda.mem_alloc(self.host[name].nbytes)
                self.context.set_tensor_address(name, int(self.device[name]))
                is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                (self.inputs if is_input else self.outputs).append(name)
        except BaseException:
            self._release()  # the context is still current here
            raise
        cuda.Context.pop()

    @property
    def closed(self) -> bool:
        return self._ctx is None

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy inputs to pinned memory, then H2D, execute and D2H asynchronously on one stream; wait once at the
        end."""
        cuda = self._cuda
        with self._lock:
            if self._ctx is None:
                raise RuntimeError(f"{self.engine_path}: TensorRT runner is closed")
            self._ctx.push()
            try:
                for name in self.inputs:
                    feed = feeds[name]
                    if self.dynamic and not self.context.set_input_shape(name, feed.shape):
                        raise ValueError(f"{self.engine_path}: input {name} of shape {feed.shape} is outside the "
                                         f"plan's profile (batch 1 to {self.max_batch})")
                    rows = self.host[name][: feed.shape[0]]  # leading rows of a C-contiguous buffer: contiguous
                    np.copyto(rows, feed, casting="same_kind")
                    cuda.memcpy_htod_async(self.device[name], rows, self.stream)
                if not self.context.execute_async_v3(stream_handle=self.stream.handle):
                    raise RuntimeError(f"{self.engine_path}: TensorRT execution failed")
                results = {}
                for name in self.outputs:
                    results[name] = self.host[name][: self.context.get_tensor_shape(name)[0]]
                    cuda.memcpy_dtoh_async(results[name], self.device[name], self.stream)
                self.stream.synchronize()
                return {name: rows.copy() for name, rows in results.items()}  # copies: the pinned buffers are reused
            finally:
                cuda.Context.pop()

    def close(self) -> None:
        """Free the plan, the buffers, the stream and the CUDA context, in that order; later calls do nothing."""
        with self._lock:
            if self._ctx is not None:
                self._ctx.push()
                self._release()

    def _release(self) -> None:
        """With this runner's context current: wait for the stream, drop TensorRT's objects (their GPU memory), free the
        device and pinned buffers, destroy the stream, then detach the context, which destroys and pops it."""
        try:
            if self.stream is not None:
                self.stream.synchronize()
            self.context = self.engine = self._runtime = None
            for buffer in self.device.values():
                buffer.free()
            for array in self.host.values():
                array.base.free()  # pycuda: a pagelocked array's base is its PagelockedHostAllocation
            self.device.clear()
            self.host.clear()
            self.stream = None  # pycuda destroys a stream when its last reference goes, in its (current) context
        finally:
            ctx, self._ctx = self._ctx, None
            ctx.detach()


# ---------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True, help="per-frame graph from `sahm export onnx`")
    parser.add_argument("--out", required=True, help="engine file to write (its key goes to OUT.json beside it)")
    parser.add_argument("--fp16", action="store_true", help="allow fp16 kernels (recommended on any recent GPU)")
    parser.add_argument("--workspace-gb", type=float, default=4.0,
                        help="builder workspace memory limit (default %(default)s GB)")
    parser.add_argument("--timing-cache",
                        help="timing cache file: read if present, updated after the build (faster rebuilds)")


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
    except (CheckpointError, RuntimeError) as e:  # TensorRTUnavailable (e.g. --fp16 on TensorRT 11) is a RuntimeError
        print(f"sahm build-engine: {e}")
        return 1
    print(f"wrote {out} and {sidecar_path(out)}")
    return 0
