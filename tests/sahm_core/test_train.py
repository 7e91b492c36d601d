"""Training: real steps on tiny synthetic data, exact resume, DDP (2 gloo processes) == one process, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sahm_core import cli
from sahm_core.checkpoint import CheckpointError, read_config, save_weights
from sahm_core.config import model_config
from sahm_core.data.layout import make_folders, read_mask, read_refs, read_rgb, write_example, write_refs
from sahm_core.data.synthetic import make_dataset
from sahm_core.train import TrainConfig, learning_rate, train

SIZE = 64
# nano's structure at a quarter of its size and half its widths: every part runs, in a fraction of the time
SMALL = replace(model_config("nano"), image_size=SIZE, embed_dim=16, decoder_dim=16, disc_dim=8)
# Every step logged, no periodic checkpoints except the last, no DataLoader workers (2 shared cores).
FAST = TrainConfig(batch_size=4, steps=2, log_interval=1, image_interval=2, ckpt_interval=1000, num_workers=0)
# Every run here is on the CPU, named so even where torch sees a GPU: the bitwise and 1e-5 comparisons below are the
# CPU's reproducibility guarantee. On CUDA, bilinear and grid_sample backward add with atomics in no fixed order
# (torch.use_deterministic_algorithms refuses them), so CUDA runs are compared with a tolerance instead (last test).
DEVICE = "cpu"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """8 train + 4 test synthetic samples at 64 px."""
    root = tmp_path_factory.mktemp("synthetic")
    make_dataset(root, n=12, seed=7, size=SIZE, workers=1, negative_fraction=0.3, val_fraction=0.0, test_fraction=1 / 3)
    return root


def weights(run_dir: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / name))


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def test_training_steps_lower_the_loss_on_a_fixed_batch(data_dir, tmp_path):
    # One batch holds the whole training split and augmentation is off, so every step sees the same data.
    # The adversarial term is off: against a discriminator that learns too, eq. 14 need not fall step by step.
    cfg = dataclasses.replace(FAST, batch_size=8, steps=10, augment=False, adv_weight=0.0)
    run = train(SMALL, cfg, data_dir, tmp_path / "run", device=DEVICE)
    rows = history(run)
    assert [r["step"] for r in rows] == list(range(1, 11))
    # The pull-push prior starts the fill close to the target, so the reconstruction term has less to lose.
    for key, factor in (("loss/seg", 0.85), ("loss/rec", 0.9), ("loss/total", 0.85)):
        assert rows[-1][key] < factor * rows[0][key], (key, rows[0][key], rows[-1][key])
    assert "loss/adv" not in rows[0] and "loss/disc" not in rows[0]  # zero weight: never computed
    # run directory layout
    assert read_config(run / "model.safetensors") == SMALL
    assert TrainConfig.from_dict(json.loads((run / "train_config.json").read_text())) == cfg
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["step"] == 10
    assert set(weights(run, "discriminator.safetensors"))
    assert (run / "training_curve.png").stat().st_size > 0
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())


def merged_copy(folders: list[Path], out: Path) -> Path:
    """One folder holding the 'train' samples of `folders`, in order, under new ids (a by-hand concatenation)."""
    make_folders(out)
    refs = []
    for k, folder in enumerate(folders):
        for ref in read_refs(folder, "train"):
            stem = f"f{k}_{ref['id']}"
            mask = read_mask(folder / ref["mask"]).astype(np.uint8) * 255  # the reader sees the same bool mask
            pixels = (read_rgb(folder / ref["image"]), read_rgb(folder / ref["target"]), mask)
            refs.append({**ref, "id": stem, **write_example(out, stem, *pixels)})  # PNG: lossless
    write_refs(out, refs)
    return out


def test_several_data_folders_train_as_their_concatenation(data_dir, tmp_path, capsys):
    second = tmp_path / "second"
    make_dataset(second, n=8, seed=8, size=SIZE, workers=1, negative_fraction=0.5, val_fraction=0.0, test_fraction=0.0)
    # 16 samples, batch 4: the shuffled order mixes the folders, and 6 steps cross an epoch boundary
    cfg = dataclasses.replace(FAST, steps=6)
    both = train(SMALL, cfg, [data_dir, second], tmp_path / "both", device=DEVICE)
    merged = train(SMALL, cfg, merged_copy([data_dir, second], tmp_path / "merged"), tmp_path / "one", device=DEVICE)
    a, b = weights(both), weights(merged)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    code, text = run_cli("--data", str(data_dir), str(tmp_path / "missing"), "--out", str(tmp_path / "x"),
                         capsys=capsys)
    assert code == 2 and f"data folder {tmp_path / 'missing'} does not exist" in text


def test_resume_continues_exactly(data_dir, tmp_path):
    # 8 samples / batch 2 = 4 steps an epoch: stopping after 2 resumes in the middle of epoch 0, with augmentation on.
    once = train(SMALL, dataclasses.replace(FAST, batch_size=2, steps=4), data_dir, tmp_path / "once", device=DEVICE)
    split = train(SMALL, dataclasses.replace(FAST, batch_size=2, steps=2), data_dir, tmp_path / "split", device=DEVICE)
    train(SMALL, dataclasses.replace(FAST, batch_size=2, steps=4), data_dir, split, resume=True, device=DEVICE)
    for name in ("model.safetensors", "discriminator.safetensors"):
        a, b = weights(once, name), weights(split, name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6,
                                       msg=lambda m, key=key: f"{name}:{key}: {m}")
    assert [r["step"] for r in history(split)] == list(range(1, 5))
    assert {"loss/seg", "loss/rec", "loss/adv", "loss/disc", "lr"} <= set(history(split)[0])
    assert history(split)[-1]["loss/total"] == pytest.approx(history(once)[-1]["loss/total"], rel=1e-4)


def test_lr_schedule_worked_by_hand():
    # 2 steps an epoch, 10 in all: warm-up over steps 0-1, halving every epoch, linear ramp to zero over steps 6-9
    cfg = TrainConfig(lr=1e-3, lr_decay_per_epoch=0.5, warmup_steps=2, anneal_steps=4)
    expected = {0: 0.5, 1: 0.5**0.5, 2: 0.5, 5: 0.5**2.5, 6: 0.125, 8: 0.0625 * 0.5, 9: 0.5**4.5 * 0.25}
    for step, factor in expected.items():
        assert learning_rate(step, cfg, steps_per_epoch=2, total_steps=10) == pytest.approx(1e-3 * factor), step


def test_resume_applies_a_changed_learning_rate_schedule(data_dir, tmp_path):
    run = train(SMALL, dataclasses.replace(FAST, steps=2), data_dir, tmp_path / "run", device=DEVICE)
    train(SMALL, dataclasses.replace(FAST, steps=4, lr=1e-3, anneal_steps=2), data_dir, run, resume=True, device=DEVICE)
    # Each logged lr is the one the next step uses: lr * 0.95**(step / 2 steps an epoch) * anneal.
    lrs = {r["step"]: r["lr"] for r in history(run)}
    assert lrs[2] == pytest.approx(6e-4 * 0.95)
    assert lrs[3] == pytest.approx(1e-3 * 0.95**1.5 * 0.5)
    assert lrs[4] == 0.0
    assert json.loads((run / "train_config.json").read_text())["anneal_steps"] == 2


def test_resume_applies_a_set_value_equal_to_the_default(data_dir, tmp_path, capsys):
    # The run starts at lr 1e-3; `--set lr=6e-4` on resume must apply though 6e-4 is TrainConfig's default.
    run = tmp_path / "run"
    args = ["--config", "nano", "--data", str(data_dir), "--out", str(run), "--batch-size", "4", "--num-workers", "0",
            "--device", DEVICE, "--set", "ckpt_interval=1000", "--set", "image_interval=1000"]
    code, text = run_cli(*args, "--steps", "1", "--set", "lr=1e-3", capsys=capsys)
    assert code == 0, text
    code, text = run_cli(*args, "--resume", "--steps", "2", "--set", "lr=6e-4", capsys=capsys)
    assert code == 0, text
    assert TrainConfig().lr == 6e-4
    assert json.loads((run / "train_config.json").read_text())["lr"] == 6e-4
    lrs = {r["step"]: r["lr"] for r in history(run)}  # the lr the next step uses; 2 steps an epoch
    assert lrs[1] == pytest.approx(1e-3 * 0.95 ** (1 / 2)) and lrs[2] == pytest.approx(6e-4 * 0.95)


# A script's sys.path starts with its own folder, not the working directory: PYTHONPATH makes its sahm_core this
# checkout's, not the one the environment has installed (another checkout, for a git worktree).
CHECKOUT = str(Path(__file__).resolve().parents[2])
DDP_SCRIPT = """
import dataclasses, sys, torch
torch.set_num_threads(1)
from dataclasses import replace
from sahm_core.config import model_config
from sahm_core.train import TrainConfig, train
cfg = TrainConfig(batch_size=4, steps=2, log_interval=1, image_interval=1000, ckpt_interval=1000, num_workers=0)
# gloo on the CPU, named: on a one-GPU machine the default would send rank 1 to a cuda:1 that does not exist
train(replace(model_config("nano"), image_size={size}, embed_dim=16, decoder_dim=16, disc_dim=8, removal_margin=0), cfg,
      sys.argv[1], sys.argv[2], device="cpu")
"""


class ShardBatchNorm(torch.nn.BatchNorm2d):
    """BatchNorm2d as `processes` DDP processes on the CPU apply it to one global batch: DistributedSampler gives
    process r the samples r, r + N, ... of each batch, each process normalises its shard with the shard's own
    statistics, and the running statistics are process 0's (DDP broadcasts rank 0's buffers before each forward)."""

    def __init__(self, layer: torch.nn.BatchNorm2d, processes: int):
        super().__init__(layer.num_features, layer.eps, layer.momentum)
        self.load_state_dict(layer.state_dict())
        self.processes = processes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        self.num_batches_tracked += 1
        out = torch.empty_like(x)
        for rank in range(self.processes):
            running = (self.running_mean, self.running_var) if rank == 0 else (None, None)
            out[rank :: self.processes] = torch.nn.functional.batch_norm(
                x[rank :: self.processes], *running, self.weight, self.bias, True, self.momentum, self.eps)
        return out


def with_shard_batchnorm(module: torch.nn.Module, processes: int) -> torch.nn.Module:
    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            setattr(module, name, ShardBatchNorm(child, processes))
        else:
            with_shard_batchnorm(child, processes)
    return module


def elementwise_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
    assert a.keys() == b.keys()
    return torch.cat([(a[k].double() - b[k].double()).abs().flatten() for k in a])


def test_two_gloo_processes_match_one_process_with_batchnorm_per_shard(data_dir, tmp_path, monkeypatch):
    # On the CPU, DDP keeps plain BatchNorm (torch's SyncBatchNorm needs a GPU), so each process normalises its
    # own half of the batch. The reference is one process with the whole batch whose BatchNorm does exactly that;
    # there is no dropout, so the split changes nothing else but the order of floating-point sums.
    # Without the removal margin: its max-pool sends each gradient to one pixel of a tie, and an untrained model's
    # near-flat mask is all ties, so summation-order noise would reroute gradients. The margin is per sample and
    # has nothing to do with how DDP splits and synchronises a batch.
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(size=SIZE)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": CHECKOUT}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29613"]
    done = subprocess.run([*torchrun, str(script), str(data_dir), str(tmp_path / "ddp")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    cfg, steps = dataclasses.replace(FAST, steps=2, image_interval=1000), 2
    whole_batch = train(replace(SMALL, removal_margin=0), cfg, data_dir, tmp_path / "whole", device=DEVICE)
    import sahm_core.model

    build_model = sahm_core.model.build_model
    monkeypatch.setattr(sahm_core.model, "build_model", lambda c: with_shard_batchnorm(build_model(c), processes=2))
    per_shard = train(replace(SMALL, removal_margin=0), cfg, data_dir, tmp_path / "per_shard", device=DEVICE)

    ddp = weights(tmp_path / "ddp")
    diff = elementwise_gap(ddp, weights(per_shard))
    # AdamW's first steps are ~lr * sign(grad): where a gradient is ~0 (below Adam's eps), summation-order noise can
    # flip a sign, so a few elements may differ by up to 2 * lr per step. A wrong gradient (un-averaged or mis-split
    # batches, other BatchNorm statistics) moves a large share of the elements by ~lr instead.
    # Under torch 2.14.1, 2.4 % of the elements (mean gap 1.2e-6) flip so, nearly all in the text attention's
    # projections, whose gradients at initialisation are near zero; the whole-batch statistics below move 65 %.
    assert diff.max() <= 2 * FAST.lr * steps
    assert diff.mean() < 5e-6
    assert (diff > 1e-5).double().mean() < 0.05
    # ... as the whole-batch statistics do: against one process with plain BatchNorm, a large share moves.
    assert (elementwise_gap(ddp, weights(whole_batch)) > 1e-5).double().mean() > 0.3


def run_cli(*argv: str, capsys) -> tuple[int, str]:
    code = cli.main(["train", *argv])
    return code, capsys.readouterr().out


def test_bad_input_fails_before_training_with_a_clear_error(data_dir, tmp_path, capsys):
    out = str(tmp_path / "run")
    code, text = run_cli("--config", "nano", "--data", str(tmp_path / "missing"), "--out", out, capsys=capsys)
    assert code == 2 and "does not exist" in text
    (tmp_path / "empty").mkdir()
    code, text = run_cli("--config", "nano", "--data", str(tmp_path / "empty"), "--out", out, capsys=capsys)
    assert code == 2 and "refs.jsonl" in text
    code, text = run_cli("--config", "nanoo", "--data", str(data_dir), "--out", out, capsys=capsys)
    assert code == 2 and "unknown model config 'nanoo'" in text and "nano" in text
    code, text = run_cli("--data", str(data_dir), "--out", out, "--set", "lr_decay=0.9", capsys=capsys)
    assert code == 2 and "unknown TrainConfig field(s): lr_decay" in text
    code, text = run_cli("--data", str(data_dir), "--out", out, "--set", "augment=maybe", capsys=capsys)
    assert code == 2 and "augment" in text
    code, text = run_cli("--data", str(data_dir), "--out", out, "--device", "tpu", capsys=capsys)
    assert code == 2 and "--device 'tpu': expected cpu, cuda or cuda:N" in text
    # no such GPU: on a CPU-only machine because there is no GPU, elsewhere because there are fewer than 100
    code, text = run_cli("--data", str(data_dir), "--out", out, "--device", "cuda:99", capsys=capsys)
    assert code == 2 and "--device cuda:99: " in text and ("no CUDA GPU" in text or "only" in text)
    assert not Path(out).exists()  # nothing was started

    # a run directory made for another config: refused on --resume, and a fresh run never overwrites it
    other = tmp_path / "other"
    save_weights(other / "model.safetensors", {"w": torch.zeros(1)}, model_config("tiny"))
    torch.save({"step": 1}, other / "state.pt")
    with pytest.raises(CheckpointError, match="'tiny'.*requested 'nano'"):
        train(model_config("nano"), FAST, data_dir, other, resume=True, device=DEVICE)
    code, text = run_cli("--data", str(data_dir), "--out", str(other), capsys=capsys)
    assert code == 2 and "--resume" in text
    code, text = run_cli("--data", str(data_dir), "--out", out, "--resume", capsys=capsys)
    assert code == 2 and "has no state.pt" in text


def test_cli_trains_the_nano_config_end_to_end(data_dir, tmp_path, capsys):
    out = tmp_path / "cli_run"
    code, text = run_cli("--config", "nano", "--data", str(data_dir), "--out", str(out), "--steps", "1",
                         "--batch-size", "2", "--num-workers", "0", "--device", DEVICE, capsys=capsys)
    assert code == 0, text
    assert read_config(out / "model.safetensors") == model_config("nano")
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["steps"] == 1 and saved["batch_size"] == 2


def test_batchnorm_is_synchronised_on_cuda_only_and_checkpoints_keep_their_keys():
    """Reference: the plain model's state_dict. SyncBatchNorm's conversion needs no GPU; its forward needs one."""
    from sahm_core.model import build_model
    from sahm_core.train import synchronise_batchnorm

    plain = build_model(SMALL)
    assert synchronise_batchnorm(plain, torch.device("cpu")) is plain
    expected = {k: v.clone() for k, v in plain.state_dict().items()}
    synced = synchronise_batchnorm(plain, torch.device("cuda"))
    kinds = {type(m) for m in synced.modules()}
    assert torch.nn.SyncBatchNorm in kinds and torch.nn.BatchNorm2d not in kinds
    state = synced.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)


def test_device_option_defaults_to_cuda_only_where_torch_sees_a_gpu(monkeypatch):
    from sahm_core.train import Dist, init_distributed, resolve_device

    assert resolve_device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed(resolve_device("cpu")) == (Dist(), torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; the CPU runs above are exact")
def test_resume_on_cuda_with_bf16_matches_within_the_gpus_nondeterminism(data_dir, tmp_path):
    """The exact-resume test on CUDA under bf16 autocast, with a tolerance instead of 1e-5.

    CUDA's bilinear and grid_sample backward sum with atomics in no fixed order, so even two identical CUDA runs
    differ in the last bits of some gradients. AdamW's first steps move each weight by about lr * sign(gradient):
    only a weight whose gradient is ~0 can flip its sign, and it moves at most 2 * lr per step. A broken resume
    (wrong batches, lost optimiser or RNG state) changes the update of a large share of all weights instead.
    """
    cuda, steps = "cuda", 4
    once = train(SMALL, dataclasses.replace(FAST, batch_size=2, steps=steps), data_dir, tmp_path / "once", device=cuda)
    split = train(SMALL, dataclasses.replace(FAST, batch_size=2, steps=2), data_dir, tmp_path / "split", device=cuda)
    train(SMALL, dataclasses.replace(FAST, batch_size=2, steps=steps), data_dir, split, resume=True, device=cuda)
    a, b = weights(once), weights(split)
    assert a.keys() == b.keys()
    diff = torch.cat([(a[k].double() - b[k].double()).abs().flatten() for k in a])
    assert diff.max() <= 2 * FAST.lr * steps
    assert (diff > 0.1 * FAST.lr).double().mean() < 0.05


# --- fine-tuning: --init, the fine-tune schedule, weighted data mixing ---------------------------------------------

@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A run directory to fine-tune from, as train() lays it out: SMALL's generator and discriminator with every
    tensor moved off its initial value (so loading them is not what a fresh build gives anyway), and the
    train_config.json of a run with dice on (a loss weight an --init run inherits)."""
    from sahm_core.model import PatchDiscriminator, build_model

    run = tmp_path_factory.mktemp("source") / "run"
    torch.manual_seed(5)
    parts = ((build_model(SMALL), "model.safetensors", {}),
             (PatchDiscriminator(SMALL), "discriminator.safetensors", {"sahm_part": "discriminator"}))
    for module, name, extra in parts:
        state = {k: v + torch.randn_like(v) * 0.01 if v.is_floating_point() else v
                 for k, v in module.state_dict().items()}
        save_weights(run / name, state, SMALL, extra={"step": "2", **extra})
    (run / "train_config.json").write_text(dataclasses.replace(FAST, dice_weight=0.5).to_json())
    return run


def first_step_parameters(monkeypatch) -> list[list[torch.Tensor]]:
    """Wraps train.optimise: the parameters each optimiser holds when it is first called (G, then D), as copies."""
    import sahm_core.train as train_module

    seen, real = [], train_module.optimise

    def spy(opt, *args, **kwargs):
        if len(seen) < 2:
            seen.append([p.detach().clone() for group in opt.param_groups for p in group["params"]])
        return real(opt, *args, **kwargs)

    monkeypatch.setattr(train_module, "optimise", spy)
    return seen


def test_init_starts_from_the_source_weights_records_them_and_resumes_exactly(source_run, data_dir, tmp_path,
                                                                              monkeypatch):
    import hashlib

    from safetensors import safe_open

    from sahm_core.model import PatchDiscriminator, build_model
    from sahm_core.train import INIT_KEY, INIT_SHA_KEY, open_init

    init = open_init(source_run)  # a run directory: its model.safetensors and discriminator.safetensors
    assert init.weights == source_run / "model.safetensors"
    assert init.discriminator == source_run / "discriminator.safetensors"
    assert init.sha256 == hashlib.sha256(init.weights.read_bytes()).hexdigest()
    assert init.model_cfg == SMALL and init.train_cfg["dice_weight"] == 0.5

    short = dataclasses.replace(FAST, batch_size=2)
    seen = first_step_parameters(monkeypatch)
    once = train(SMALL, dataclasses.replace(short, steps=2), data_dir, tmp_path / "once", device=DEVICE, init=init)
    # What the optimisers were about to step are exactly the source's parameters (G: SAHM, D: the PatchGAN).
    for (names, source), got in zip(((build_model(SMALL), weights(source_run)),
                                     (PatchDiscriminator(SMALL), weights(source_run, "discriminator.safetensors"))),
                                    seen, strict=True):
        keys = [name for name, _ in names.named_parameters()]
        assert len(keys) == len(got)
        assert all(torch.equal(source[k], v) for k, v in zip(keys, got)), "init did not load the source weights"
    after = weights(once)
    assert any(not torch.equal(after[k], weights(source_run)[k]) for k in after)  # and real steps ran from there

    expected = {INIT_KEY: str(source_run / "model.safetensors"), INIT_SHA_KEY: init.sha256}
    # --init and --resume are exclusive; a resume of an init run continues it exactly and keeps its record
    with pytest.raises(ValueError, match="--init .* --resume"):
        train(SMALL, FAST, data_dir, tmp_path / "x", resume=True, device=DEVICE, init=init)
    split = train(SMALL, dataclasses.replace(short, steps=1), data_dir, tmp_path / "split", device=DEVICE, init=init)
    train(SMALL, dataclasses.replace(short, steps=2), data_dir, split, resume=True, device=DEVICE)
    for name in ("model.safetensors", "discriminator.safetensors"):
        a, b = weights(once, name), weights(split, name)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
        with safe_open(str(split / name), framework="pt") as f:
            assert expected.items() <= f.metadata().items()
    assert torch.load(split / "state.pt", weights_only=True)["init"] == expected


def test_cli_init_takes_the_source_config_and_the_fine_tune_schedule(source_run, data_dir, tmp_path, capsys):
    from sahm_core.train import FINETUNE, describe_init, open_init

    out = tmp_path / "ft"
    code, text = run_cli("--init", str(source_run / "model.safetensors"), "--data", str(data_dir), str(data_dir),
                         "--out", str(out), "--steps", "1", "--batch-size", "2", "--num-workers", "0",
                         "--device", DEVICE, capsys=capsys)
    assert code == 0, text
    assert read_config(out / "model.safetensors") == SMALL  # no --config: the source's own
    saved = TrainConfig.from_dict(json.loads((out / "train_config.json").read_text()))
    assert (saved.steps, saved.batch_size) == (1, 2)  # the user's values win
    assert (saved.lr, saved.lr_decay_per_epoch) == (FINETUNE["lr"], FINETUNE["lr_decay_per_epoch"])
    assert (saved.anneal_steps, saved.warmup_steps) == (1, 0)  # to zero over the whole run; warm-up <= a tenth of it
    assert saved.dice_weight == 0.5 and saved.adv_weight == FAST.adv_weight  # the source's loss weights
    assert saved.data_weights == (1.0, 1.0)  # two folders: equal shares
    assert f"sha256 {read_sha(source_run)}" in text and "discriminator from" in text and "50.0% of each batch" in text

    # a loose .safetensors (an average, say) has no discriminator nor train_config.json: a fresh one, said so
    loose = tmp_path / "average.safetensors"
    loose.write_bytes((source_run / "model.safetensors").read_bytes())
    init = open_init(loose)
    assert init.discriminator is None and init.train_cfg is None
    assert "discriminator fresh" in describe_init(init, TrainConfig(adv_weight=0.0))
    assert "not trained (adv_weight 0)" in describe_init(init, TrainConfig(adv_weight=0.0))


def read_sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_cli_init_refuses_contradictions_and_bad_mixes(source_run, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--data", str(data_dir), "--out", str(out), "--device", DEVICE]
    code, text = run_cli("--init", str(source_run), "--config", "nano", *base, capsys=capsys)
    assert code == 2 and "--init" in text and "image_size: saved 64, requested 256" in text and "embed_dim" in text
    code, text = run_cli("--init", str(source_run), "--model-set", "decoder_dim=32", *base, capsys=capsys)
    assert code == 2 and "decoder_dim: saved 16, requested 32" in text and "image_size" not in text
    code, text = run_cli("--init", str(source_run), "--resume", *base, capsys=capsys)
    assert code == 2 and "give one of them" in text
    code, text = run_cli("--init", str(tmp_path / "nothing"), *base, capsys=capsys)
    assert code == 2 and "not found" in text
    code, text = run_cli("--init", str(source_run), "--set", "backbone_weights=x.pth", *base, capsys=capsys)
    assert code == 2 and "backbone_weights" in text
    code, text = run_cli("--data-weights", "1", "2", *base, capsys=capsys)
    assert code == 2 and "2 weight(s) for 1 --data folder(s)" in text
    code, text = run_cli("--data-weights", "1", "0", "--data", str(data_dir), str(data_dir), "--out", str(out),
                         capsys=capsys)
    assert code == 2 and "positive" in text
    assert not out.exists()


def test_mixed_order_draws_each_folder_at_its_share_and_walks_its_samples_evenly():
    from sahm_core.train import Dist, TrainingSet, epoch_order, mixed_order

    sizes, shares, count = [30, 2000], (1.0, 3.0), 8000
    order = np.array(mixed_order(sizes, shares, seed=0, epoch=0, count=count))
    assert order.min() >= 0 and order.max() < sum(sizes)
    own = order < sizes[0]
    # a binomial count: 2000 expected, sd sqrt(8000 * 0.25 * 0.75) = 38.7; 4.5 sd
    assert abs(own.sum() - count * 0.25) < 4.5 * (count * 0.25 * 0.75) ** 0.5
    for start in range(0, count, 800):  # and so is every stretch of batches
        assert abs(own[start:start + 800].sum() - 200) < 4.5 * (800 * 0.25 * 0.75) ** 0.5
    seen = np.bincount(order[own], minlength=sizes[0])
    assert seen.max() - seen.min() <= 1  # shuffled passes: every own sample ~67 times
    assert order.tolist() == mixed_order(sizes, shares, seed=0, epoch=0, count=count)  # a function of (seed, epoch)
    assert order.tolist() != mixed_order(sizes, shares, seed=0, epoch=1, count=count)

    # two processes take alternate items of the one order (DistributedSampler's split)
    data = TrainingSet(samples=[None] * 2030, folder_sizes=sizes, steps_per_epoch=0, total_steps=0)
    cfg = TrainConfig(data_weights=shares)
    ranks = [epoch_order(data, cfg, Dist(rank, 2), epoch=3) for rank in range(2)]
    assert [i for pair in zip(*ranks) for i in pair] == epoch_order(data, cfg, Dist(), epoch=3)


MIX = {"batch_size": 4, "steps": 1, "num_workers": 0, "data_weights": (1.0, 3.0)}
MIX_SCRIPT = """
import json, sys, torch
from sahm_core.train import TrainConfig, batches_from, init_distributed, open_training_set
cfg = TrainConfig(**{mix})
data = open_training_set(sys.argv[1:3], {size}, cfg)
ddp, _ = init_distributed(torch.device("cpu"))
batches = batches_from(0, data, cfg, ddp, pin=False)
ids = [next(batches)["id"] for _ in range(60)]  # this process's share of 60 global batches
gathered = [None] * ddp.world
torch.distributed.all_gather_object(gathered, ids)
torch.distributed.destroy_process_group()
if ddp.main:  # global batch b: the processes' items interleaved, as DistributedSampler splits an order
    open(sys.argv[3], "w").write(json.dumps([[i for pair in zip(*(g[b] for g in gathered)) for i in pair]
                                             for b in range(len(ids))]))
"""


def test_mixed_batches_under_two_gloo_processes_are_one_processs_batches(data_dir, tmp_path):
    from sahm_core.train import Dist, batches_from, open_training_set

    # the second folder's ids renamed, so every batch says which folder each sample came from
    second = tmp_path / "second"
    make_dataset(second, n=8, seed=8, size=SIZE, workers=1, val_fraction=0.0, test_fraction=0.0)
    write_refs(second, [{**ref, "id": "b_" + ref["id"]} for ref in read_refs(second)])
    script = tmp_path / "mix.py"
    script.write_text(textwrap.dedent(MIX_SCRIPT.format(mix=MIX, size=SIZE)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": CHECKOUT}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29614"]
    args = [str(data_dir), str(second)]
    done = subprocess.run([*torchrun, str(script), *args, str(tmp_path / "ddp.json")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    cfg = TrainConfig(**MIX)
    batches = batches_from(0, open_training_set([data_dir, second], SIZE, cfg), cfg, Dist(), pin=False)
    one = [next(batches)["id"] for _ in range(len(ddp))]
    assert ddp == one  # global batch b of 2 processes = batch b of one (items interleaved as DistributedSampler's)
    drawn = [i.startswith("b_") for batch in ddp for i in batch]  # 240 draws at a 3/4 share: sd 6.7
    assert abs(sum(drawn) - 0.75 * len(drawn)) < 4.5 * (len(drawn) * 0.75 * 0.25) ** 0.5


def test_a_loader_worker_prepares_the_commands_and_the_step_embeds_what_the_runtime_would(data_dir):
    """The tokeniser and tagger run in the DataLoader's worker process (PreparedTexts); the step's text features
    equal encode_batch's, the path every command at run time takes."""
    from sahm_core.text import shared_encoder
    from sahm_core.train import Dist, PreparedTexts, batches_from, encode_texts, open_training_set

    cfg = TrainConfig(batch_size=4, steps=1, num_workers=1)
    encoder = shared_encoder(model_config("nano"), "cpu")
    data = open_training_set([data_dir], SIZE, cfg)
    batch = next(batches_from(0, data, cfg, Dist(), pin=False, collate=PreparedTexts(encoder)))
    got = encode_texts(encoder, batch["prepared_text"])
    want = encoder.encode_batch(list(batch["text"]))
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    assert got.attribute.sum() + got.identity.sum() > 0  # the tagger's classes reached the features
