"""TensorRT engines: cache key and metadata checks everywhere; build and run only where tensorrt + a CUDA GPU exist.

Where TensorRT cannot run, the version-dependent builder flags are checked against fake `tensorrt` namespaces built
from the documented enum names, and the runner's / builder's CUDA context handling against a test double of
pycuda.driver (FakeCudaDriver below) that keeps a context stack per thread with pycuda's documented semantics.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import shutil
import sys
import threading
import types
from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest

from sahm_core.checkpoint import CheckpointError, read_config
from sahm_core.cli import main as sahm_main
from sahm_core.export.onnx_export import MAX_BATCH
from sahm_core.export.tensorrt_engine import (
    EngineKey,
    EngineMismatchError,
    TensorRTRunner,
    TensorRTUnavailable,
    batch_profile,
    build_engine,
    cached_engine_path,
    check_engine,
    default_precision,
    onnx_input_shape,
    precision_flags,
    read_sidecar,
    sidecar_path,
    tensorrt_available,
    write_sidecar,
)
from sahm_core.runtime import BackendUnavailable, Remover, exported_onnx

TRT_MISSING = tensorrt_available()  # None where TensorRT can run, else the reason
needs_trt = pytest.mark.skipif(TRT_MISSING is not None, reason=f"TensorRT cannot run here: {TRT_MISSING}")

KEY = EngineKey(onnx_sha256="ab" * 32, tensorrt_version="10.15.1", compute_capability="9.0", precision="fp16",
                input_shape=(1, 3, 256, 256))


def _engine(tmp_path, key=KEY, config_json="{}"):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan bytes")
    write_sidecar(engine, key, config_json)
    return engine


def test_key_digest_is_stable_and_covers_every_field():
    assert KEY.digest() == EngineKey(**dataclasses.asdict(KEY)).digest()
    changes = dict(onnx_sha256="cd" * 32, tensorrt_version="10.3.0", compute_capability="8.7", precision="fp32",
                   input_shape=(1, 3, 480, 480))
    digests = {dataclasses.replace(KEY, **{field: value}).digest() for field, value in changes.items()}
    assert len(digests) == len(changes) and KEY.digest() not in digests
    with pytest.raises(ValueError, match="precision"):
        dataclasses.replace(KEY, precision="int4")


def test_cached_engine_path_lives_in_the_cache_and_names_the_key(shared_cache):
    path = cached_engine_path(KEY)
    assert path.parent == shared_cache / "engines"
    assert KEY.digest() in path.name and "fp16" in path.name and path.suffix == ".engine"
    assert cached_engine_path(dataclasses.replace(KEY, compute_capability="8.6")) != path


def test_sidecar_round_trip_and_matching_key(tmp_path):
    engine = _engine(tmp_path, config_json='{"name": "nano"}')
    assert sidecar_path(engine).name == "model.engine.json"
    assert read_sidecar(engine) == (KEY, '{"name": "nano"}')
    assert check_engine(engine, KEY) == '{"name": "nano"}'


@pytest.mark.parametrize("field,value", [("tensorrt_version", "10.3.0"), ("compute_capability", "8.7"),
                                         ("onnx_sha256", "cd" * 32), ("precision", "fp32"),
                                         ("input_shape", (1, 3, 480, 480))])
def test_mismatched_plan_is_refused_naming_file_and_field(tmp_path, field, value):
    engine = _engine(tmp_path)
    wanted = dataclasses.replace(KEY, **{field: value})
    with pytest.raises(EngineMismatchError, match=f"{engine}.*{field}: plan has .*needed .*will not be loaded"):
        check_engine(engine, wanted)


def test_missing_or_corrupt_metadata_is_refused(tmp_path):
    engine = _engine(tmp_path)
    sidecar_path(engine).write_text("{ not json")
    with pytest.raises(CheckpointError, match="model.engine.json: corrupt engine metadata"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"format": "other", "key": {}, "model_config": ""}))
    with pytest.raises(CheckpointError, match="corrupt engine metadata.*format"):
        read_sidecar(engine)
    sidecar_path(engine).unlink()
    with pytest.raises(CheckpointError, match="no metadata file model.engine.json"):
        read_sidecar(engine)
    with pytest.raises(CheckpointError, match="engine file not found"):
        read_sidecar(tmp_path / "absent.engine")


def test_engine_for_another_config_is_refused_without_a_gpu(tmp_path, nano_model_dir):
    model_dir = tmp_path / "model"
    shutil.copytree(nano_model_dir, model_dir)
    other = replace(read_config(model_dir / "model.safetensors"), name="other", image_size=320)
    _engine(model_dir, config_json=other.to_json())
    with pytest.raises(CheckpointError, match="model.engine: engine was built for config 'other'"):
        Remover.load(model_dir, backend="tensorrt")


@pytest.mark.skipif(TRT_MISSING is None, reason="TensorRT is available here")
def test_tensorrt_backend_reports_why_it_cannot_run(nano_model_dir, shared_cache, tmp_path, capsys):
    with pytest.raises(BackendUnavailable, match="tensorrt|pycuda|CUDA"):
        Remover.load(nano_model_dir, backend="tensorrt")
    onnx_file = exported_onnx(nano_model_dir / "model.safetensors", read_config(nano_model_dir / "model.safetensors"))
    assert sahm_main(["build-engine", "--onnx", str(onnx_file), "--out", str(tmp_path / "m.engine"), "--fp16"]) == 1
    assert "cannot build here" in capsys.readouterr().out


# ---------------------------------------------------------------- builder flags per TensorRT version (no GPU)

# tensorrt.BuilderFlag members as documented for TensorRT 10.x, and the ones the 10.x -> 11.x Python migration guide
# lists as removed in 11 ("Removed Python APIs and Replacements").
BUILDER_FLAGS_10 = ("FP16", "BF16", "INT8", "FP8", "INT4", "FP4", "DEBUG", "GPU_FALLBACK", "REFIT",
                    "DISABLE_TIMING_CACHE", "TF32", "SPARSE_WEIGHTS", "SAFETY_SCOPE", "OBEY_PRECISION_CONSTRAINTS",
                    "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO", "REJECT_EMPTY_ALGORITHMS", "VERSION_COMPATIBLE",
                    "EXCLUDE_LEAN_RUNTIME", "ERROR_ON_TIMING_CACHE_MISS", "DISABLE_COMPILATION_CACHE", "STRIP_PLAN",
                    "REFIT_IDENTICAL", "WEIGHT_STREAMING", "REFIT_INDIVIDUAL", "STRICT_NANS", "MONITOR_MEMORY")
REMOVED_IN_11 = {"FP16", "BF16", "INT8", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                 "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO"}


def fake_tensorrt(version: str) -> types.SimpleNamespace:
    """A `tensorrt` namespace with the documented BuilderFlag members of that major version (no builder)."""
    names = [n for n in BUILDER_FLAGS_10 if not (int(version.split(".")[0]) >= 11 and n in REMOVED_IN_11)]
    return types.SimpleNamespace(__version__=version, BuilderFlag=enum.Enum("BuilderFlag", names))


def test_precision_flags_on_tensorrt_10_and_11():
    trt10, trt11 = fake_tensorrt("10.13.3.9"), fake_tensorrt("11.2.1.2")
    assert precision_flags(trt10, "fp16") == ([trt10.BuilderFlag.FP16], [])
    assert precision_flags(trt10, "fp32") == ([], [trt10.BuilderFlag.TF32])  # IEEE fp32, for parity with ONNX Runtime
    assert precision_flags(trt11, "fp32") == ([], [trt11.BuilderFlag.TF32])
    with pytest.raises(TensorRTUnavailable, match=r"TensorRT 11.2.1.2 has no BuilderFlag.FP16.*tensorrt<11"):
        precision_flags(trt11, "fp16")
    with pytest.raises(ValueError, match="precision"):
        precision_flags(trt10, "int8")
    assert default_precision(trt10) == "fp16" and default_precision(trt11) == "fp32"


# ---------------------------------------------------------------- CUDA context handling, against a pycuda test double

class FakeCudaDriver(types.ModuleType):
    """TEST DOUBLE of pycuda.driver (not pycuda): the documented calls the runner and builder use (init, Device,
    Device.make_context / retain_primary_context, Context.push / pop / detach, Stream, mem_alloc, pagelocked_empty,
    memcpy_*_async, Error), with a context stack per thread as the CUDA driver keeps one. detach() follows pycuda's
    cuda.hpp: a current context is detached in place, cuCtxDetach of an own context pops it while the release of a
    retained primary context (cuDevicePrimaryCtxRelease) never pops; a non-current one is pushed and detached in its
    creating thread and left alone in any other (a leak). Every event is recorded with the state it happened in."""

    class Error(Exception):
        pass

    def __init__(self):
        super().__init__("pycuda.driver")
        self.stacks = defaultdict(list)  # thread ident -> context stack, top last
        self.contexts, self.events, self.problems = [], [], []
        driver = self

        class Context:
            def __init__(self, primary):
                self.alive, self.primary, self.owner = True, primary, threading.get_ident()
                driver.contexts.append(self)

            def push(self):
                driver.stack.append(self)

            @staticmethod
            def pop():
                if not driver.stack:
                    raise driver.Error("cannot pop non-current context")
                driver.stack.pop()

            def detach(self):
                if not self.alive:
                    raise driver.Error("cannot detach from invalid context")
                if driver.current is self:
                    if not self.primary:
                        driver.stack.pop()
                elif self.owner == threading.get_ident():
                    if self.primary:
                        driver.stack.append(self)
                else:
                    driver.problems.append("context detached outside its thread and not current: leaked")
                self.alive = False
                driver.events.append("detach")

        class Device:
            def __init__(self, index):
                self.index = index

            @staticmethod
            def count():
                return 1

            def compute_capability(self):
                return (9, 0)

            def make_context(self):
                ctx = Context(primary=False)
                driver.stack.append(ctx)
                return ctx

            def retain_primary_context(self):
                return Context(primary=True)

        self.Context, self.Device = Context, Device

    @property
    def stack(self) -> list:
        return self.stacks[threading.get_ident()]

    @property
    def current(self):
        return self.stack[-1] if self.stack else None

    def needs_current(self, what):
        """Record `what` and a problem unless a live context is current in the calling thread."""
        ctx = self.current
        if ctx is None or not ctx.alive:
            self.problems.append(f"{what} without a live current context")
        self.events.append(what)
        return ctx

    def init(self):
        pass

    def Stream(self):
        return FakeCudaResource(self, "stream")

    def mem_alloc(self, nbytes):
        return FakeCudaResource(self, "device buffer")

    def pagelocked_empty(self, shape, dtype):
        allocation = FakeCudaResource(self, "pinned buffer", nbytes=int(np.prod(shape)) * np.dtype(dtype).itemsize)
        return np.ndarray(shape, dtype, buffer=allocation)  # like pycuda: the array's base is the allocation

    def memcpy_htod_async(self, device, host, stream):
        self.needs_current("memcpy_htod_async")

    def memcpy_dtoh_async(self, host, device, stream):
        self.needs_current("memcpy_dtoh_async")


class FakeCudaResource(bytearray):
    """A stream / device buffer / pinned allocation of FakeCudaDriver: free() (or, for a stream, the last reference
    going) must happen in its own context, current and alive, exactly once."""

    def __init__(self, driver, kind, nbytes=0):
        super().__init__(nbytes)
        self.driver, self.kind, self.freed = driver, kind, False
        self.ctx = driver.needs_current(f"create {kind}")
        self.handle = id(self)

    def __int__(self):
        return self.handle

    def synchronize(self):
        self.driver.needs_current("synchronize")

    def free(self):
        if self.freed:
            self.driver.problems.append(f"{self.kind} freed twice")
        if self.driver.current is not self.ctx or not self.ctx.alive:
            self.driver.problems.append(f"{self.kind} freed outside its live, current context")
        self.freed = True
        self.driver.events.append(f"free {self.kind}")

    def __del__(self):
        if self.kind == "stream":
            self.free()
        elif not self.freed:
            self.driver.problems.append(f"{self.kind} never freed")


class FakeTensorRTPlan:
    """TEST DOUBLE of a deserialized tensorrt.ICudaEngine with the per-frame graph's five inputs and two outputs; with
    `batch` = (min, opt, max) the batch is dynamic (-1) under one optimisation profile."""

    TENSORS = {"image": (1, 3, 8, 8), "tokens": (1, 4, 6), "valid": (1, 4), "attribute": (1, 4), "identity": (1, 4),
               "cleaned": (1, 3, 8, 8), "mask": (1, 1, 8, 8)}

    def __init__(self, driver, batch: tuple[int, int, int] | None = None):
        self.driver, self.num_io_tensors, self.batch = driver, len(self.TENSORS), batch
        driver.needs_current("deserialize plan")

    def get_tensor_name(self, i):
        return list(self.TENSORS)[i]

    def get_tensor_shape(self, name):
        return self.TENSORS[name] if self.batch is None else (-1, *self.TENSORS[name][1:])

    def get_tensor_profile_shape(self, name, profile):
        assert self.batch is not None and profile == 0 and self.get_tensor_mode(name) == "input"
        return [(n, *self.TENSORS[name][1:]) for n in self.batch]

    def get_tensor_dtype(self, name):
        return np.float32

    def get_tensor_mode(self, name):
        return "input" if name in ("image", "tokens", "valid", "attribute", "identity") else "output"

    def create_execution_context(self):
        return FakeExecutionContext(self)

    def __del__(self):
        self.driver.needs_current("destroy plan")


class FakeExecutionContext:
    """TEST DOUBLE of tensorrt.IExecutionContext; like the real binding it keeps its plan alive."""

    def __init__(self, plan):
        self.plan, self.shapes = plan, {}

    def set_tensor_address(self, name, address):
        pass

    def set_input_shape(self, name, shape):
        """False outside the profile, as TensorRT answers."""
        low, _, high = self.plan.get_tensor_profile_shape(name, 0)
        if not all(a <= d <= b for a, d, b in zip(low, shape, high)) or len(shape) != len(low):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        shape = self.shapes.get(name, self.plan.get_tensor_shape(name))
        if self.plan.batch is not None and name in ("cleaned", "mask"):
            shape = (self.shapes["image"][0], *shape[1:])  # outputs follow the batch the inputs set
        return shape

    def execute_async_v3(self, stream_handle):
        self.plan.driver.needs_current("execute_async_v3")
        return True

    def __del__(self):
        self.plan.driver.needs_current("destroy execution context")


@pytest.fixture()
def fake_gpu(monkeypatch):
    """The pycuda test double and a `tensorrt` namespace (10.13) that deserializes FakeTensorRTPlan, installed as the
    modules the runner imports."""
    driver = FakeCudaDriver()
    package = types.ModuleType("pycuda")
    package.driver = driver
    trt = fake_tensorrt("10.13.3.9")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")
    trt.nptype = np.dtype
    plans = {b"plan": None, b"dynamic plan": (1, 1, 8)}  # the bytes of a plan -> its batch profile
    trt.Runtime = lambda logger: types.SimpleNamespace(
        deserialize_cuda_engine=lambda data: FakeTensorRTPlan(driver, plans[data]) if data in plans else None)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return driver, trt


def _fake_plan(tmp_path, trt, data=b"plan"):
    engine = tmp_path / "model.engine"
    engine.write_bytes(data)
    write_sidecar(engine, dataclasses.replace(KEY, tensorrt_version=trt.__version__), "{}")
    return engine


def _feeds(batch: int = 1):
    return {name: np.ones((batch, *shape[1:]), np.float32) for name, shape in FakeTensorRTPlan.TENSORS.items()
            if name not in ("cleaned", "mask")}


def test_runner_of_a_dynamic_batch_plan_sets_each_calls_batch(tmp_path, fake_gpu):
    """A plan with a batch profile 1..8: buffers for 8 rows, each call sets its batch and gets that many rows back;
    a batch outside the profile is a ValueError naming it, and the runner goes on."""
    driver, trt = fake_gpu
    runner = TensorRTRunner(_fake_plan(tmp_path, trt, data=b"dynamic plan"))
    assert runner.dynamic and runner.max_batch == 8 and runner.host["image"].shape == (8, 3, 8, 8)
    for batch in (3, 1, 8):
        out = runner.run(_feeds(batch))
        assert out["cleaned"].shape == (batch, 3, 8, 8) and out["mask"].shape == (batch, 1, 8, 8)
        assert runner.context.shapes["image"] == (batch, 3, 8, 8)
    with pytest.raises(ValueError, match="batch 1 to 8"):
        runner.run(_feeds(9))
    assert runner.run(_feeds(2))["mask"].shape == (2, 1, 8, 8)
    runner.close()
    assert not driver.problems, driver.problems
    static = TensorRTRunner(_fake_plan(tmp_path, trt))
    assert not static.dynamic and static.max_batch == 1
    static.close()


def test_onnx_input_shape_and_batch_profile(nano_model_dir, shared_cache):
    onnx_file = exported_onnx(nano_model_dir / "model.safetensors", read_config(nano_model_dir / "model.safetensors"))
    shape = onnx_input_shape(onnx_file)
    assert shape == (-1, 3, 256, 256)  # the per-frame graph's batch: one row per target
    assert batch_profile(shape) == ((1, 3, 256, 256), (1, 3, 256, 256), (MAX_BATCH, 3, 256, 256))
    assert batch_profile((1, 3, 256, 256)) == ((1, 3, 256, 256),) * 3


def test_runner_loaded_in_one_thread_runs_and_closes_in_another(tmp_path, fake_gpu):
    """The node's case: load in one thread, infer and unload in its worker thread. Every GPU call happens with the
    runner's context current, everything is freed in it before it is destroyed, and no thread's stack keeps an entry."""
    driver, trt = fake_gpu
    runner = TensorRTRunner(_fake_plan(tmp_path, trt))
    assert not driver.stack and len(driver.contexts) == 1 and driver.contexts[0].alive
    results = {}

    def worker():
        results["first"] = runner.run(_feeds())
        runner.close()
        runner.close()  # idempotent
        with pytest.raises(RuntimeError, match="closed"):
            runner.run(_feeds())
        results["stack"] = list(driver.stack)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert set(results["first"]) == {"cleaned", "mask"} and results["first"]["mask"].shape == (1, 1, 8, 8)
    assert results["stack"] == [] and not any(driver.stacks.values())
    assert not driver.problems, driver.problems
    assert not driver.contexts[0].alive and runner.closed
    tail = driver.events[driver.events.index("destroy execution context"):]
    assert tail[:2] == ["destroy execution context", "destroy plan"]  # TensorRT's objects before their buffers
    assert tail[-1] == "detach" and tail.count("free device buffer") == tail.count("free pinned buffer") == 7
    assert "free stream" in tail


def test_runner_that_fails_to_load_frees_its_context(tmp_path, fake_gpu):
    driver, trt = fake_gpu
    with pytest.raises(CheckpointError, match="could not deserialize"):
        TensorRTRunner(_fake_plan(tmp_path, trt, data=b"corrupt"))
    assert [c.alive for c in driver.contexts] == [False] and not any(driver.stacks.values()) and not driver.problems


def test_fifty_runner_cycles_leave_no_context_behind(tmp_path, fake_gpu):
    driver, trt = fake_gpu
    engine = _fake_plan(tmp_path, trt)
    for _ in range(50):
        runner = TensorRTRunner(engine)
        runner.run(_feeds())
        runner.close()
    assert len(driver.contexts) == 50 and not any(c.alive for c in driver.contexts)
    assert not any(driver.stacks.values()) and not driver.problems


def _tiny_onnx(path, batch=1):
    """A one-node graph with an `image` input: all the engine key reads (the fake builder never parses it)."""
    from onnx import TensorProto, helper, save

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 8, 8])
    out = helper.make_tensor_value_info("cleaned", TensorProto.FLOAT, [batch, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["cleaned"])], "g", [image], [out])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))
    return path


class FakeBuilderConfig:
    """TEST DOUBLE of tensorrt.IBuilderConfig: records the flags set and cleared."""

    def __init__(self):
        self.set, self.cleared, self.progress_monitor, self.profiles = [], [], None, []

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)

    def set_memory_pool_limit(self, pool, size):
        pass

    def set_flag(self, flag):
        self.set.append(flag)

    def clear_flag(self, flag):
        self.cleared.append(flag)

    def create_timing_cache(self, data):
        return types.SimpleNamespace(serialize=lambda: b"timing")

    def set_timing_cache(self, cache, ignore_mismatch):
        return True

    def get_timing_cache(self):
        return self.create_timing_cache(b"")


def _fake_builder(trt, driver, configs, input_shape=(1, 3, 8, 8)):
    """A builder whose network has one `image` input of `input_shape` (-1: dynamic), as its parser would make it."""

    class Builder:
        def __init__(self, logger):
            driver.needs_current("create builder")

        def create_network(self, flags):
            image = types.SimpleNamespace(name="image", shape=input_shape)
            return types.SimpleNamespace(num_inputs=1, get_input=lambda i: image)

        def create_optimization_profile(self):
            profile = types.SimpleNamespace(shapes={})
            profile.set_shape = lambda name, low, opt, high: profile.shapes.__setitem__(name, (low, opt, high))
            return profile

        def create_builder_config(self):
            configs.append(FakeBuilderConfig())
            return configs[-1]

        def build_serialized_network(self, network, config):
            driver.needs_current("build")
            return b"built plan"

    trt.Builder = Builder
    trt.OnnxParser = lambda network, logger: types.SimpleNamespace(parse_from_file=lambda path: True, num_errors=0)
    trt.IProgressMonitor = type("IProgressMonitor", (), {"__init__": lambda self: None})
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")


def test_fp32_build_clears_tf32_in_its_own_context(tmp_path, fake_gpu):
    driver, trt = fake_gpu
    configs = []
    _fake_builder(trt, driver, configs)
    out = build_engine(_tiny_onnx(tmp_path / "g.onnx"), tmp_path / "g.engine", precision="fp32", model_config_json="{}",
                       timing_cache=tmp_path / "timing.cache")
    assert out.read_bytes() == b"built plan" and (tmp_path / "timing.cache").read_bytes() == b"timing"
    key, _ = read_sidecar(out)
    assert (key.precision, key.tensorrt_version, key.compute_capability) == ("fp32", "10.13.3.9", "9.0")
    assert configs[0].set == [] and configs[0].cleared == [trt.BuilderFlag.TF32]
    assert [c.alive for c in driver.contexts] == [False] and not any(driver.stacks.values()) and not driver.problems
    build_engine(tmp_path / "g.onnx", tmp_path / "h.engine", precision="fp16", model_config_json="{}")
    assert configs[1].set == [trt.BuilderFlag.FP16]
    assert configs[0].profiles == configs[1].profiles == []  # static shapes: TensorRT's implicit profile


def test_a_dynamic_batch_build_gets_one_profile_from_one_to_max_batch(tmp_path, fake_gpu):
    driver, trt = fake_gpu
    configs = []
    _fake_builder(trt, driver, configs, input_shape=(-1, 3, 8, 8))
    out = build_engine(_tiny_onnx(tmp_path / "g.onnx", batch="batch"), tmp_path / "g.engine", precision="fp32",
                       model_config_json="{}")
    (profile,) = configs[0].profiles
    assert profile.shapes == {"image": ((1, 3, 8, 8), (1, 3, 8, 8), (MAX_BATCH, 3, 8, 8))}
    assert read_sidecar(out)[0].input_shape == (-1, 3, 8, 8)  # the key tells a batch plan from a batch-1 one


def test_fp16_build_on_tensorrt_11_is_refused_cleanly(tmp_path, fake_gpu, capsys):
    driver, trt = fake_gpu
    trt.__version__, trt.BuilderFlag = "11.2.1.2", fake_tensorrt("11.2.1.2").BuilderFlag
    _fake_builder(trt, driver, [])
    onnx_file = _tiny_onnx(tmp_path / "g.onnx")
    with pytest.raises(TensorRTUnavailable, match="has no BuilderFlag.FP16"):
        build_engine(onnx_file, tmp_path / "g.engine", precision="fp16", model_config_json="{}")
    assert driver.contexts == [] and not (tmp_path / "g.engine").exists()  # refused before any GPU work
    assert sahm_main(["build-engine", "--onnx", str(onnx_file), "--out", str(tmp_path / "g.engine"), "--fp16"]) == 1
    assert "has no BuilderFlag.FP16" in capsys.readouterr().out  # one line, no traceback


# ---------------------------------------------------------------- real TensorRT (GPU machines only)

@pytest.fixture(scope="module")
def nano_onnx(nano_model_dir, shared_cache):
    return exported_onnx(nano_model_dir / "model.safetensors", read_config(nano_model_dir / "model.safetensors"))


@needs_trt
def test_engine_matches_onnxruntime(nano_model_dir, nano_onnx, tmp_path):
    import onnxruntime as ort

    from sahm_core.export.onnx_export import INPUT_NAMES, example_inputs

    engine = build_engine(nano_onnx, tmp_path / "fp32.engine", precision="fp32", workspace_gb=2)
    cfg = read_config(nano_model_dir / "model.safetensors")
    feeds = {n: t.numpy() for n, t in zip(INPUT_NAMES, example_inputs(cfg, seed=2))}
    reference = ort.InferenceSession(str(nano_onnx), providers=["CPUExecutionProvider"]).run(None, feeds)
    runner = TensorRTRunner(engine)
    out = runner.run(feeds)
    runner.close()
    # TF32 is cleared for fp32 plans, so probabilities agree closely; the cleaned image keeps a looser bound because a
    # logit within rounding of 0 may still flip the model's hard hole (mask_logits > 0) on a pixel.
    assert np.abs(out["mask"] - reference[1]).max() <= 1e-3
    assert np.abs(out["cleaned"] - reference[0]).max() <= 1e-2


@needs_trt
def test_remover_on_tensorrt_rebuilds_a_stale_plan(nano_model_dir, nano_onnx, tmp_path, caplog):
    from sahm_core.export.tensorrt_engine import ensure_engine

    first = ensure_engine(nano_onnx, "fp16")
    assert ensure_engine(nano_onnx, "fp16") == first  # cache hit, no rebuild
    model_dir = tmp_path / "model"
    shutil.copytree(nano_model_dir, model_dir)
    shutil.copy(nano_onnx, model_dir / "model.onnx")
    shutil.copy(first, model_dir / "model.engine")
    key, config_json = read_sidecar(first)
    write_sidecar(model_dir / "model.engine", dataclasses.replace(key, tensorrt_version="0.0.stale"), config_json)
    remover = Remover.load(model_dir, backend="tensorrt", min_score=0.0, min_mask_area=0.0)
    assert remover.backend == "tensorrt" and remover._backend.engine_file != model_dir / "model.engine"
    assert any("tensorrt_version" in r.message for r in caplog.records)
    remover.set_command("remove the red circle")
    frame = np.random.default_rng(0).integers(0, 256, (479, 641, 3), dtype=np.uint8)
    result = remover.remove(frame)
    outside = result.mask == 0
    assert result.image.shape == frame.shape and np.array_equal(result.image[outside], frame[outside])
