"""`sahm gpu-check --out DIR`: one-shot check of the GPU paths; writes DIR/report.json and DIR/report.md.

    sahm gpu-check --prepare --out out/gpu-check   # on a CPU: export the model's ONNX graph into out/gpu-check/cache
    sahm gpu-check --out out/gpu-check             # on the GPU machine, with out/gpu-check/cache carried along

Sections, each a function returning a dict with a "status"; report.json is {section: {...}}:

    environment         torch / CUDA / compute capability, ONNX Runtime providers, whether tensorrt and pycuda import
    auto_backend        the backend Remover.load(backend="auto") picks here, and the fallbacks it logged
    ort_cpu_parity      ONNX Runtime CPU vs torch CPU fp32, the command with and without its attribute words
    alignment_bf16_cpu  the deformable alignment's output under CPU bf16 autocast vs fp32
    ort_cuda_parity     ONNX Runtime CUDA vs torch CPU fp32, the same two commands                              (GPU)
    torch_precision     torch CUDA fp32 / TF32 / fp16 / bf16 vs torch CPU fp32: max differences, mask sign flips,
                        found agreement, the first module whose output is non-finite (model, random-init tiny)   (GPU)
    training_bf16       bf16 training steps through train() (finite losses); the alignment under CUDA bf16       (GPU)
    ddp_nccl            one DistributedDataParallel step in a one-process NCCL group; gradients == a plain step's (GPU)
    timings             per-frame p50/p99 and FPS of the model and of tiny at 480: torch fp16 eager, torch fp16 +
                        CUDA graphs, ONNX Runtime CUDA                                                          (GPU)
    tensorrt            fp16 engine (cached or built), parity and timing, where tensorrt and pycuda import       (GPU)

Status: "passed"; "defect: ..." (the check ran and found a real problem: a non-finite value, a difference beyond
TOLERANCES, a non-finite loss); "skipped: <reason>" ("no CUDA device", no CUDA provider, no TensorRT); "failed:
<error>" (the section itself raised; the other sections still run and the report is still written). Exit status:
0 when every section passed or was skipped, 1 when any found a defect or failed, 2 for bad arguments.

The input is one synthetic scene (render_sample(SCENE_SEED)) and its referring expression, as generated and
without its attribute words. The reference for every comparison is torch on the CPU in fp32.

ONNX graphs come from the runtime's export cache (`exported_onnx`): `$ROS_ROR_CACHE_DIR` when set, else DIR/cache.
`--prepare` fills it with the model's export on a CPU (a minute or two there), so a GPU run that carries DIR/cache
spends its time on the checks. tiny's graph (~180 MB, too big to carry; its random weights are made under
DIR/models/tiny where the check runs) is exported only where ONNX Runtime's CUDA provider or TensorRT will use it.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import platform
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnxruntime as ort
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import default_collate

from . import __version__
from .bench import _timed
from .checkpoint import WEIGHTS_FILE, CheckpointError, load_model, read_config, save_weights
from .config import ModelConfig, model_config
from .data import RemovalDataset
from .data.synthetic import make_dataset, render_sample
from .export.cache import CACHE_ENV
from .export.onnx_export import PerFrameGraph
from .losses import LossWeights, generator_loss
from .model import PatchDiscriminator, build_model
from .model.alignment import DeformableConv2d
from .runtime import (
    PROMPT_NAMES,
    TEXT_NAMES,
    BackendUnavailable,
    ModelFiles,
    Remover,
    exported_onnx,
    found_decision,
    load_backend,
    resolve_model,
    to_model_input,
)
from .text import shared_encoder
from .text_features import TextFeatures
from .train import HISTORY_FILE, TrainConfig, encode_texts, synchronise_batchnorm, train

log = logging.getLogger(__name__)

REPORT_JSON, REPORT_MD = "report.json", "report.md"
NO_CUDA = "skipped: no CUDA device"
SCENE_SEED = 0  # render_sample(0) says "remove for me the orange heart": an attribute word to drop
TINY_SEED = 0  # tiny runs with random weights, made from this seed where the check runs
FPS_GOAL = ("tiny", 300.0)  # batch 1, torch fp16, one H100


@dataclass(frozen=True)
class Tolerance:
    """What a backend or precision may change against torch CPU fp32."""

    max_diff: float  # max |a - b| of the cleaned RGB and of the mask probabilities, both in [0, 1]
    mask_flips: float  # fraction of pixels whose mask logit changes sign (probability crosses 0.5)


# The one place the parity tolerances live. Measured on the CPU against fp32 (bundled nano, both commands, and random
# tiny): bf16 autocast max diff <= 0.036, fp16 <= 0.0045, sign flips <= 2e-5; CUDA autocast casts more ops.
TOLERANCES = {
    "fp32": Tolerance(1e-3, 1e-3),  # ONNX Runtime, torch CUDA fp32: the same maths in another summation order
    "tf32": Tolerance(1e-2, 1e-3),  # 10-bit mantissa in matmul and convolution inputs
    "fp16": Tolerance(5e-2, 5e-3),  # autocast fp16, TensorRT fp16
    "bf16": Tolerance(1e-1, 1e-2),  # autocast bf16: 8-bit mantissa
}
# max |bf16 - fp32| / max |fp32| of each deformable alignment's output (CPU bf16: <= 0.018 measured).
ALIGNMENT_TOLERANCE = 0.05
DDP_GRAD_TOLERANCE = 1e-3  # max |DDP grad - plain grad| / max |plain grad|, fp32, one process


class Outputs(NamedTuple):
    """One frame's result at model resolution: cleaned (3,S,S) RGB in [0,1], mask (S,S) probabilities."""

    cleaned: np.ndarray
    mask: np.ndarray


class Subject(NamedTuple):
    """A model under check: its name in the report and its files."""

    name: str
    files: ModelFiles


# ---------------------------------------------------------------- comparisons

def compare(reference: Outputs, other: Outputs, tolerance: Tolerance) -> dict:
    """Max differences, mask sign flips and found agreement of `other` against `reference`; 'problems' lists what
    exceeds `tolerance`. Found agreement is reported, not judged: with the mask within tolerance it can only differ
    where the reference's score or area sits within that tolerance of a threshold."""
    finite = bool(np.isfinite(other.cleaned).all() and np.isfinite(other.mask).all())
    found_ref, score_ref, _ = found_decision(reference.mask)
    found, score, _ = found_decision(np.nan_to_num(other.mask, nan=0.0))
    row = {
        "max_diff_cleaned": float(np.abs(other.cleaned - reference.cleaned).max()),
        "max_diff_mask": float(np.abs(other.mask - reference.mask).max()),
        "mask_flips": float(np.mean((other.mask > 0.5) != (reference.mask > 0.5))),
        "found_ref": found_ref, "found": found, "score_ref": score_ref, "score": score, "finite": finite,
    }
    problems = [] if finite else ["non-finite output"]
    for key, limit in (("max_diff_cleaned", tolerance.max_diff), ("max_diff_mask", tolerance.max_diff),
                       ("mask_flips", tolerance.mask_flips)):
        if not row[key] <= limit:  # a NaN fails too
            problems.append(f"{key} {row[key]:.3g} > {limit:g}")
    return {**row, "problems": problems}


def section_status(problems: list[str]) -> str:
    return "defect: " + "; ".join(problems) if problems else "passed"


def _tensors(value) -> Iterator[torch.Tensor]:
    """Every tensor in a module's output: a tensor, or tuples / lists / NamedTuples / dicts of them."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


@contextmanager
def nonfinite_watch(model: torch.nn.Module) -> Iterator[Callable[[], str | None]]:
    """Forward hooks on every module of `model`; the yielded function returns, after a forward, the name of the
    first module (in the order forwards return: a child before its parent) whose output held a NaN or inf, or None.

    The flags stay on the device and are read once, so a GPU forward is not synchronised module by module."""
    flags: list[tuple[str, torch.Tensor]] = []

    def watch(name: str):
        def hook(module, inputs, output):
            floats = [t for t in _tensors(output) if t.is_floating_point()]
            if floats:
                flags.append((name, torch.stack([~torch.isfinite(t).all() for t in floats]).any()))
        return hook

    handles = [m.register_forward_hook(watch(name or type(model).__name__)) for name, m in model.named_modules()]

    def first() -> str | None:
        bad = torch.stack([flag for _, flag in flags]).tolist() if flags else []
        return next((name for (name, _), b in zip(flags, bad) if b), None)

    try:
        yield first
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def precision(device_type: str, mode: str):
    """Run under "fp32" (TF32 off), "tf32" (TF32 matmul and cuDNN convolution), "fp16" or "bf16" (autocast)."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mode)
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
    # cache_enabled=False: autocast's cache of cast weights must not outlive a CUDA graph capture
    autocast = torch.autocast(device_type, dtype=dtype, cache_enabled=False) if dtype else nullcontext()
    try:
        with autocast:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def run_torch(model: torch.nn.Module, image: np.ndarray, text: dict[str, np.ndarray], device: torch.device,
              mode: str) -> tuple[Outputs, str | None]:
    """One `model.per_frame` of image (1,3,S,S) on `device` in precision `mode`
    -> (outputs, first non-finite module)."""
    features = TextFeatures(*(torch.from_numpy(text[n]).to(device) for n in TEXT_NAMES))
    with torch.inference_mode(), precision(device.type, mode), nonfinite_watch(model) as first_nonfinite:
        cleaned, logits = model.per_frame(torch.from_numpy(image).to(device), features)
        outputs = Outputs(cleaned[0].float().cpu().numpy(), torch.sigmoid(logits[0, 0].float()).cpu().numpy())
        return outputs, first_nonfinite()


def alignment_parity(model: torch.nn.Module, image: np.ndarray, text: dict[str, np.ndarray], device: torch.device,
                     mode: str) -> dict[str, float]:
    """Per deformable alignment (DeformableConv2d: bilinear sampling at learnt offsets, where low-precision sampling
    coordinates do the most harm): max |out_mode - out_fp32| / max |out_fp32|."""
    captured: dict[str, dict[str, np.ndarray]] = {"fp32": {}, mode: {}}
    for run_mode, store in captured.items():
        def keep(name: str, store: dict = store):
            return lambda module, inputs, output: store.__setitem__(name, output.float().cpu().numpy())
        hooks = [m.register_forward_hook(keep(name))
                 for name, m in model.named_modules() if isinstance(m, DeformableConv2d)]
        try:
            run_torch(model, image, text, device, run_mode)
        finally:
            for hook in hooks:
                hook.remove()
    if not captured["fp32"]:
        raise RuntimeError(f"{type(model).__name__} has no DeformableConv2d to compare")
    return {name: float(np.abs(captured[mode][name] - ref).max() / max(float(np.abs(ref).max()), 1e-12))
            for name, ref in captured["fp32"].items()}


def timed(fn: Callable[[], object], iters: int, warmup: int) -> dict[str, float]:
    """Wall-clock p50/p99 (ms), FPS = 1000 / p50 and process CPU time p50 of `fn` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    return {k: round(v, 3) for k, v in _timed(fn, iters).items()}


# ---------------------------------------------------------------- what the sections share

class GpuCheck:
    """The device, the scene and its two commands, the models and the torch CPU fp32 references."""

    def __init__(self, out: Path, model: str | Path | None, iters: int, warmup: int):
        self.out, self.iters, self.warmup = out, iters, warmup
        self.model_path = Path(model) if model else None
        self.cuda = torch.device("cuda") if torch.cuda.is_available() else None
        self.cpu = torch.device("cpu")
        self._models: dict[str, torch.nn.Module] = {}
        self._references: dict[tuple[str, str], Outputs] = {}

    @cached_property
    def scene(self):
        return render_sample(SCENE_SEED, size=256, negative_fraction=0.0)

    @cached_property
    def commands(self) -> list[str]:
        """The scene's expression, then the same without its attribute words (tagged AW)."""
        plain = " ".join(word for word, tag in self.scene.tags if tag != "AW")
        if plain == self.scene.text:
            raise ValueError(f"scene {SCENE_SEED}'s expression {self.scene.text!r} has no attribute word")
        return [self.scene.text, plain]

    @cached_property
    def model(self) -> Subject:
        """The model under check: --model, else the bundled nano."""
        from ros_ror.resources import bundled_model_dir  # plain Python: where the shipped models/ folder is

        files = resolve_model(self.model_path or bundled_model_dir())
        if files.weights is None:
            raise ValueError(f"{files.source}: the check needs the model's weights ({WEIGHTS_FILE})")
        return Subject(files.config.name if self.model_path is None else str(files.source), files)

    @cached_property
    def tiny(self) -> Subject:
        """tiny at 480 with random weights (seed TINY_SEED), saved once under OUT/models/tiny."""
        cfg = model_config("tiny")
        weights = self.out / "models" / "tiny" / WEIGHTS_FILE
        if not weights.is_file() or read_config(weights) != cfg:
            torch.manual_seed(TINY_SEED)
            weights.parent.mkdir(parents=True, exist_ok=True)
            save_weights(weights, build_model(cfg).state_dict(), cfg)
        return Subject("tiny (random weights)", resolve_model(weights.parent))

    def torch_model(self, subject: Subject) -> torch.nn.Module:
        """The subject's SAHM on the CPU in eval mode, loaded once."""
        if subject.name not in self._models:
            self._models[subject.name], _ = load_model(subject.files.weights, expect=subject.files.config)
        return self._models[subject.name]

    def image(self, subject: Subject) -> np.ndarray:
        """The scene as the runtime feeds it: (1,3,S,S) float32 in [0,1]."""
        return to_model_input(self.scene.image, subject.files.config.image_size)

    def text(self, subject: Subject, command: str) -> dict[str, np.ndarray]:
        """The command's inputs as Remover.set_command makes them: tokens (1,T,C), three masks (1,T), point (1,3)."""
        features = shared_encoder(subject.files.config, "cpu").encode(command)
        text = {name: np.ascontiguousarray(t.cpu().numpy(), dtype=np.float32) for name, t in zip(TEXT_NAMES, features)}
        return {**text, "point": np.zeros((1, 3), np.float32)}  # a spoken command's: no click

    def reference(self, subject: Subject, command: str) -> Outputs:
        """torch CPU fp32, what every backend and precision is compared with (computed once). A non-finite
        reference is a defect of the model itself and raises."""
        key = (subject.name, command)
        if key not in self._references:
            outputs, first_nonfinite = run_torch(self.torch_model(subject), self.image(subject),
                                                 self.text(subject, command), self.cpu, "fp32")
            if first_nonfinite:
                raise FloatingPointError(f"{subject.name}: torch CPU fp32 output is non-finite from {first_nonfinite}")
            self._references[key] = outputs
        return self._references[key]

    def ort_cuda(self, subject: Subject):
        """(backend, None) when ONNX Runtime's CUDA provider is really active for `subject`, else (None, why not)."""
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:  # checked first: no tiny export where it could not run
            return None, f"skipped: CUDAExecutionProvider not available (providers: {', '.join(available)})"
        try:
            backend = load_backend(subject.files, "onnxruntime", "cuda")
        except BackendUnavailable as e:
            return None, f"skipped: {e}"
        if backend.providers[0] != "CUDAExecutionProvider":
            return None, f"skipped: CUDAExecutionProvider did not start (session providers: {backend.providers})"
        return backend, None


def backend_outputs(result: tuple[np.ndarray, np.ndarray]) -> Outputs:
    """A runtime backend's (cleaned (1,3,S,S), mask (1,1,S,S)) -> Outputs."""
    cleaned, mask = result
    return Outputs(cleaned[0], mask[0, 0])


# ---------------------------------------------------------------- sections

def environment(check: GpuCheck) -> dict:
    def importable(module: str) -> str:
        try:
            return getattr(__import__(module), "__version__", "imported")
        except Exception as e:  # noqa: BLE001 - ImportError, or a CUDA library that fails to load
            return f"not importable ({type(e).__name__}: {e})"

    info = {
        "sahm_core": __version__, "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "cuda_available": check.cuda is not None, "cpu_threads": torch.get_num_threads(),
        "onnxruntime": ort.__version__, "ort_providers": ort.get_available_providers(),
        "tensorrt": importable("tensorrt"), "pycuda": importable("pycuda"),
    }
    if check.cuda:
        info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        info["devices"] = [{"index": i, "name": torch.cuda.get_device_name(i),
                            "compute_capability": "{}.{}".format(*torch.cuda.get_device_capability(i)),
                            "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
                           for i in range(torch.cuda.device_count())]
    return {"status": "passed", **info}


class _Warnings(logging.Handler):
    """Collects the messages of WARNING and above (auto's "backend X cannot load ..." lines)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def auto_backend(check: GpuCheck) -> dict:
    warnings, runtime_log = _Warnings(), logging.getLogger("sahm_core.runtime")
    runtime_log.addHandler(warnings)
    try:
        remover = Remover.load(check.model.files.source, backend="auto")
    finally:
        runtime_log.removeHandler(warnings)
    try:
        remover.set_command(check.commands[0])
        result = remover.remove(check.scene.image)
    finally:
        close = getattr(remover, "close", None)  # frees the backend's GPU buffers where the runtime has close()
        if close:
            close()
    problems = [] if result.image.shape == check.scene.image.shape else [f"output shape {result.image.shape}"]
    return {"status": section_status(problems), "picked": remover.backend, "fallbacks": warnings.messages,
            "command": check.commands[0], "found": result.found, "score": result.score,
            "latency_ms": result.latency_s * 1e3}


def _backend_parity(check: GpuCheck, backend, name: str) -> dict:
    subject, rows = check.model, []
    for command in check.commands:
        outputs = backend_outputs(backend.run(check.image(subject), check.text(subject, command)))
        rows.append({"model": subject.name, "backend": name, "command": command,
                     **compare(check.reference(subject, command), outputs, TOLERANCES["fp32"])})
    return {"status": section_status([f"{r['command']!r}: {p}" for r in rows for p in r["problems"]]),
            "scene_seed": SCENE_SEED, "tolerance": asdict(TOLERANCES["fp32"]), "rows": rows}


def ort_cpu_parity(check: GpuCheck) -> dict:
    return _backend_parity(check, load_backend(check.model.files, "onnxruntime", "cpu"), "onnxruntime cpu")


def ort_cuda_parity(check: GpuCheck) -> dict:
    backend, skipped = check.ort_cuda(check.model)
    return {"status": skipped} if skipped else _backend_parity(check, backend, "onnxruntime cuda")


def _alignment_result(parity: dict[str, float], subject: Subject, device: str) -> dict:
    problems = [f"{name} {value:.3g} > {ALIGNMENT_TOLERANCE:g}" for name, value in parity.items()
                if not value <= ALIGNMENT_TOLERANCE]
    rows = [{"model": subject.name, "device": device, "module": name, "relative_max_diff": value}
            for name, value in parity.items()]
    return {"status": section_status(problems), "tolerance": ALIGNMENT_TOLERANCE, "rows": rows}


def alignment_bf16_cpu(check: GpuCheck) -> dict:
    subject = check.model
    parity = alignment_parity(check.torch_model(subject), check.image(subject), check.text(subject, check.commands[0]),
                              check.cpu, "bf16")
    return _alignment_result(parity, subject, "cpu")


def torch_precision(check: GpuCheck) -> dict:
    rows = []
    cases = [(check.model, command) for command in check.commands] + [(check.tiny, check.commands[0])]
    for subject, command in cases:
        reference = check.reference(subject, command)
        model = copy.deepcopy(check.torch_model(subject)).to(check.cuda)
        image, text = check.image(subject), check.text(subject, command)
        for mode, tolerance in TOLERANCES.items():
            outputs, first_nonfinite = run_torch(model, image, text, check.cuda, mode)
            rows.append({"model": subject.name, "command": command, "precision": mode,
                         **compare(reference, outputs, tolerance), "first_nonfinite_module": first_nonfinite})
        del model
        torch.cuda.empty_cache()
    problems = [f"{r['model']} {r['precision']} {r['command']!r}: {p}" for r in rows for p in r["problems"]]
    return {"status": section_status(problems), "scene_seed": SCENE_SEED,
            "tolerances": {k: asdict(v) for k, v in TOLERANCES.items()}, "rows": rows}


def synthetic_batch(folder: Path, size: int, batch: int) -> dict:
    """`batch` synthetic training samples at `size` px (written to `folder` once), collated as the loader does."""
    if not (folder / "refs.jsonl").is_file():
        make_dataset(folder, n=batch, seed=7, size=size, workers=1, negative_fraction=0.25, val_fraction=0.0,
                     test_fraction=0.0)
    data = RemovalDataset(folder, "train", size)
    return default_collate([data[i] for i in range(batch)])


def bf16_training_steps(model_cfg: ModelConfig, work: Path, steps: int = 3, batch: int = 2) -> dict:
    """`steps` training steps (generator and discriminator) through train() with bf16 autocast, on CUDA where there
    is one (else the CPU), on synthetic data; every loss train() logs must be finite."""
    data = work / "data"
    synthetic_batch(data, model_cfg.image_size, batch)
    cfg = TrainConfig(batch_size=batch, steps=steps, bf16=True, cpu_bf16=True, num_workers=0, log_interval=1,
                      image_interval=10**9, ckpt_interval=10**9)
    run = train(model_cfg, cfg, data, work / "run")
    history = [json.loads(line) for line in (run / HISTORY_FILE).read_text().splitlines() if line.strip()]
    losses = [{k: v for k, v in row.items() if k == "step" or k.startswith("loss/")} for row in history]
    problems = [f"step {row['step']}: {k} = {v}" for row in losses for k, v in row.items() if not math.isfinite(v)]
    if len(losses) != steps:
        problems.append(f"{len(losses)} logged steps, expected {steps}")
    return {"status": section_status(problems), "config": model_cfg.name, "batch": batch, "losses": losses}


def training_bf16(check: GpuCheck) -> dict:
    with tempfile.TemporaryDirectory(dir=check.out) as work:
        result = bf16_training_steps(model_config("nano"), Path(work))
    subject = check.model
    model = copy.deepcopy(check.torch_model(subject)).to(check.cuda)
    parity = alignment_parity(model, check.image(subject), check.text(subject, check.commands[0]), check.cuda, "bf16")
    alignment = _alignment_result(parity, subject, "cuda")
    problems = [s for s in (result["status"], alignment["status"]) if s != "passed"]
    return {**result, "status": "; ".join(problems) if problems else "passed",
            "alignment_tolerance": ALIGNMENT_TOLERANCE, "alignment": alignment["rows"]}


def ddp_step(model_cfg: ModelConfig, device: torch.device, work: Path, batch: int = 2) -> dict:
    """One generator step of SAHM under DistributedDataParallel in a one-process group (NCCL on CUDA, gloo on the
    CPU), BatchNorm synchronised as train() does; its loss and gradients must equal a plain step's (fp32)."""
    # No removal margin: its max-pool sends each gradient to one pixel of a tie, and an untrained model's flat mask
    # is all ties, so summation-order noise would move gradients between pixels (as in tests/sahm_core/test_train.py).
    cfg = replace(model_cfg, removal_margin=0)
    data = synthetic_batch(work / "data", cfg.image_size, batch)
    image, target, mask = (data[k].to(device) for k in ("image", "target", "mask"))
    encoder = shared_encoder(cfg, str(device))
    text = encode_texts(encoder, encoder.prepare(data["text"])).to(device)
    torch.manual_seed(0)
    plain = build_model(cfg).to(device).train()
    disc = PatchDiscriminator(cfg).to(device).requires_grad_(False)  # a fixed critic, as in the generator step
    weights = LossWeights()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=(work / "ddp_store").resolve().as_uri(), rank=0, world_size=1)
    try:
        synced = synchronise_batchnorm(copy.deepcopy(plain), device)
        ddp = DistributedDataParallel(synced, device_ids=[device.index or 0] if device.type == "cuda" else None)
        losses, grads = {}, {}
        with precision(device.type, "fp32"):
            for name, module, params in (("plain", plain, plain), ("ddp", ddp, synced)):
                loss, _ = generator_loss(module(image, text), target, mask, disc, weights)
                loss.backward()
                losses[name], grads[name] = float(loss.detach()), [p.grad.detach().clone() for p in params.parameters()]
        torch.optim.AdamW(synced.parameters(), lr=TrainConfig().lr).step()
        finite_after_step = all(bool(torch.isfinite(p).all()) for p in synced.parameters())
        probe = torch.full((1,), 3.0, device=device)
        dist.all_reduce(probe)  # an explicit collective on the backend: the sum over one process is the value itself
    finally:
        dist.destroy_process_group()
    scale = max(float(g.abs().max()) for g in grads["plain"])
    grad_diff = max(float((a - b).abs().max()) for a, b in zip(grads["ddp"], grads["plain"])) / max(scale, 1e-30)
    problems = []
    if not (math.isfinite(losses["ddp"]) and finite_after_step):
        problems.append(f"loss {losses['ddp']} or parameters after the step non-finite")
    if float(probe) != 3.0:
        problems.append(f"all_reduce over one process gave {float(probe)}, expected 3")
    if not grad_diff <= DDP_GRAD_TOLERANCE:
        problems.append(f"gradients differ from a plain step's by {grad_diff:.3g} (relative) > {DDP_GRAD_TOLERANCE:g}")
    return {"status": section_status(problems), "backend": backend, "world_size": 1, "config": cfg.name,
            "batch": batch, "loss": losses["ddp"], "plain_loss": losses["plain"], "relative_grad_diff": grad_diff,
            "grad_tolerance": DDP_GRAD_TOLERANCE}


def ddp_nccl(check: GpuCheck) -> dict:
    with tempfile.TemporaryDirectory(dir=check.out) as work:
        return ddp_step(model_config("nano"), check.cuda, Path(work))


def torch_frame(model: torch.nn.Module, image: np.ndarray, text: dict[str, np.ndarray], device: torch.device,
                graphs: bool) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """A per-frame call of the per-frame graph in fp16 autocast: image H2D, the graph (eager, or a replay of a CUDA
    graph captured on static inputs), both outputs D2H; the text tensors stay on the GPU, as one command's do."""
    graph = PerFrameGraph(model).eval()
    features = [torch.from_numpy(text[n]).to(device) for n in PROMPT_NAMES]
    host = torch.from_numpy(image)
    if not graphs:
        def eager():
            with torch.inference_mode(), precision(device.type, "fp16"):
                cleaned, mask = graph(host.to(device), *features)
            return cleaned.cpu(), mask.cpu()
        return eager
    static_image = host.to(device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode(), precision(device.type, "fp16"):
        for _ in range(3):  # warm-up on a side stream before the capture, as torch.cuda.graphs documents
            graph(static_image, *features)
    torch.cuda.current_stream().wait_stream(side)
    cuda_graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(cuda_graph), torch.inference_mode(), precision(device.type, "fp16"):
        static_cleaned, static_mask = graph(static_image, *features)

    def replay():
        static_image.copy_(host)
        cuda_graph.replay()
        return static_cleaned.cpu(), static_mask.cpu()
    return replay


def timings(check: GpuCheck) -> dict:
    rows = []
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # one input shape: cuDNN may pick its fastest convolutions
    try:
        for subject in (check.model, check.tiny):
            image, text = check.image(subject), check.text(subject, check.commands[0])
            base = {"model": subject.name, "size": subject.files.config.image_size, "batch": 1}
            model = copy.deepcopy(check.torch_model(subject)).to(check.cuda)
            for variant, graphs in (("torch fp16", False), ("torch fp16 + CUDA graphs", True)):
                frame = torch_frame(model, image, text, check.cuda, graphs)
                rows.append({**base, "variant": variant, **timed(frame, check.iters, check.warmup)})
            del model, frame
            torch.cuda.empty_cache()
            backend, skipped = check.ort_cuda(subject)
            if skipped:
                rows.append({**base, "variant": "onnxruntime cuda", "skipped": skipped})
            else:
                rows.append({**base, "variant": "onnxruntime cuda",
                             **timed(lambda: backend.run(image, text), check.iters, check.warmup)})
    finally:
        torch.backends.cudnn.benchmark = benchmark
    name, goal = FPS_GOAL
    best = max((r["fps"] for r in rows if r["model"] == check.tiny.name and r["variant"].startswith("torch")),
               default=0.0)
    # Speed is a goal, not a defect: this status says the timings ran; "goal" says whether they met it.
    return {"status": "passed", "iters": check.iters, "warmup": check.warmup, "cudnn_benchmark": True,
            "per_frame": "image H2D + per-frame graph + outputs D2H, synchronised; text tensors resident",
            "goal": {"model": name, "fps": goal, "best_torch_fp16_fps": best, "met": best >= goal}, "rows": rows}


def tensorrt(check: GpuCheck) -> dict:
    from .export.tensorrt_engine import TensorRTRunner, TensorRTUnavailable, ensure_engine, tensorrt_available

    reason = tensorrt_available()
    if reason:
        return {"status": f"skipped: {reason}"}
    rows = []
    for subject in (check.model, check.tiny):
        command = check.commands[0]
        try:
            engine = ensure_engine(exported_onnx(subject.files.weights, subject.files.config), "fp16")
        except TensorRTUnavailable as e:  # e.g. a TensorRT without weakly typed fp16 builds
            rows.append({"model": subject.name, "skipped": str(e)})
            continue
        runner = TensorRTRunner(engine)
        try:
            feeds = {"image": check.image(subject), **check.text(subject, command)}
            out = runner.run(feeds)
            compared = compare(check.reference(subject, command), Outputs(out["cleaned"][0], out["mask"][0, 0]),
                               TOLERANCES["fp16"])
            rows.append({"model": subject.name, "command": command, "engine": str(engine), **compared,
                         **timed(lambda: runner.run(feeds), check.iters, check.warmup)})
        finally:
            runner.close()
    problems = [f"{r['model']}: {p}" for r in rows for p in r.get("problems", [])]
    return {"status": section_status(problems), "precision": "fp16", "tolerance": asdict(TOLERANCES["fp16"]),
            "rows": rows}


# name -> (needs a CUDA device, section)
SECTIONS: dict[str, tuple[bool, Callable[[GpuCheck], dict]]] = {
    "environment": (False, environment),
    "auto_backend": (False, auto_backend),
    "ort_cpu_parity": (False, ort_cpu_parity),
    "alignment_bf16_cpu": (False, alignment_bf16_cpu),
    "ort_cuda_parity": (True, ort_cuda_parity),
    "torch_precision": (True, torch_precision),
    "training_bf16": (True, training_bf16),
    "ddp_nccl": (True, ddp_nccl),
    "timings": (True, timings),
    "tensorrt": (True, tensorrt),
}


def run_check(check: GpuCheck) -> dict[str, dict]:
    """Every section in order, each in its own try: one that raises is recorded as "failed: ..." and the rest run."""
    report = {}
    for i, (name, (needs_cuda, section)) in enumerate(SECTIONS.items(), 1):
        log.info("[%d/%d] %s ...", i, len(SECTIONS), name)
        start = time.perf_counter()
        if needs_cuda and check.cuda is None:
            result = {"status": NO_CUDA}
        else:
            try:
                result = section(check)
            except Exception as e:  # noqa: BLE001 - a GPU check must report, not crash: the error is the status
                result = {"status": f"failed: {type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        result["seconds"] = round(time.perf_counter() - start, 2)
        log.info("[%d/%d] %s: %s (%.1f s)", i, len(SECTIONS), name, result["status"], result["seconds"])
        report[name] = result
    return report


def exit_status(report: dict[str, dict]) -> int:
    """0 when every section passed or was skipped, 1 when one found a defect or failed."""
    return 0 if all(r["status"] == "passed" or r["status"].startswith("skipped") for r in report.values()) else 1


# ---------------------------------------------------------------- report files

def _json_safe(value):
    """NaN and inf become strings (JSON has no literal for them), in containers too."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "; ".join(map(_cell, value)) if value else "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict]) -> list[str]:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows] + [""]


def render_markdown(report: dict[str, dict]) -> str:
    """A summary table, then per section its status, its fields as a two-column table and each list of rows as a
    table of its own (and the traceback of a section that failed)."""
    lines = ["# sahm gpu-check", "", f"Exit status {exit_status(report)}.", ""]
    lines += _table([{"section": name, "status": r["status"], "seconds": r["seconds"]} for name, r in report.items()])
    for name, result in report.items():
        lines += [f"## {name}", "", f"**{_cell(result['status'])}**", ""]
        fields = {k: v for k, v in result.items() if k not in ("status", "seconds", "traceback")}
        tables = {k: v for k, v in fields.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        scalars = [{"field": k, "value": v} for k, v in fields.items() if k not in tables]
        lines += _table(scalars) if scalars else []
        for key, rows in tables.items():
            lines += [f"{key}:", ""] + _table(rows)
        if "traceback" in result:
            lines += ["```", result["traceback"].rstrip(), "```", ""]
    return "\n".join(lines)


def write_report(report: dict[str, dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_JSON).write_text(json.dumps(_json_safe(report), indent=1) + "\n")
    (out / REPORT_MD).write_text(render_markdown(report))


# ---------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for report.json and report.md (and cache/ by default)")
    parser.add_argument("--model", help="model dir or .safetensors to check (default: the bundled nano)")
    parser.add_argument("--prepare", action="store_true",
                        help="only export the model's ONNX graph into the cache (on a CPU, before the GPU run)")
    parser.add_argument("--iters", type=int, default=200, help="timed frames per timing row")
    parser.add_argument("--warmup", type=int, default=20, help="untimed frames before them")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("sahm_core").setLevel(logging.INFO)  # our progress lines, not every library's INFO chatter
    if args.iters < 1 or args.warmup < 0:
        print(f"sahm gpu-check: --iters must be >= 1 and --warmup >= 0, got {args.iters} and {args.warmup}")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault(CACHE_ENV, str((out / "cache").resolve()))  # --prepare and the GPU run share one cache
    check = GpuCheck(out, args.model, args.iters, args.warmup)
    if args.prepare:
        try:
            files = check.model.files
            print(f"exported {exported_onnx(files.weights, files.config)} (cache {os.environ[CACHE_ENV]})")
        except (CheckpointError, BackendUnavailable, ValueError) as e:
            print(f"sahm gpu-check: {e}")
            return 1
        return 0
    report = run_check(check)
    write_report(report, out)
    width = max(map(len, report))
    for name, result in report.items():
        print(f"{name:<{width}}  {result['status']}")
    status = exit_status(report)
    print(f"wrote {out / REPORT_JSON} and {out / REPORT_MD}; exit status {status}")
    return status
