"""TensorRT engines: cache key and metadata checks everywhere; build and run only where tensorrt + a CUDA GPU exist."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from sahm_core.checkpoint import CheckpointError, read_config
from sahm_core.cli import main as sahm_main
from sahm_core.config import replace
from sahm_core.export.tensorrt_engine import (EngineKey, EngineMismatchError, cached_engine_path, check_engine,
                                              read_sidecar, sidecar_path, tensorrt_available, write_sidecar)
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
                                         ("onnx_sha256", "cd" * 32), ("precision", "fp32"), ("input_shape", (1, 3, 480, 480))])
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


# ---------------------------------------------------------------- real TensorRT (GPU machines only)

@pytest.fixture(scope="module")
def nano_onnx(nano_model_dir, shared_cache):
    return exported_onnx(nano_model_dir / "model.safetensors", read_config(nano_model_dir / "model.safetensors"))


@needs_trt
def test_engine_matches_onnxruntime(nano_model_dir, nano_onnx, tmp_path):
    from sahm_core.export.onnx_export import INPUT_NAMES, example_inputs
    from sahm_core.export.tensorrt_engine import TensorRTRunner, build_engine
    import onnxruntime as ort

    engine = build_engine(nano_onnx, tmp_path / "fp32.engine", precision="fp32", workspace_gb=2)
    cfg = read_config(nano_model_dir / "model.safetensors")
    feeds = {n: t.numpy() for n, t in zip(INPUT_NAMES, example_inputs(cfg, seed=2))}
    reference = ort.InferenceSession(str(nano_onnx), providers=["CPUExecutionProvider"]).run(None, feeds)
    runner = TensorRTRunner(engine)
    out = runner.run(feeds)
    assert np.abs(out["cleaned"] - reference[0]).max() <= 1e-2  # TF32 kernels may be picked for fp32
    assert np.abs(out["mask"] - reference[1]).max() <= 1e-2
    runner.close()


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
