"""Train SAHM: `sahm train --config nano --data DIR [DIR ...] --out RUN_DIR`, or the same under `torchrun`.

Several data folders train as one set (their 'train' splits concatenated, in the order given), e.g. your
own recordings plus synthetic scenes, or a folder of extra negatives beside the original data; `--data-weights`
draws each batch's samples from the folders at given shares instead (`mixed_order`), so a few hundred examples of
one's own are not swamped by 20,000 synthetic ones.

Fine-tuning: `sahm train --init PATH --data OWN SYNTHETIC --out RUN` starts a fresh run from existing weights (a model
or run directory, or a .safetensors; `open_init`): their ModelConfig (a --config or --model-set that differs is an
error naming the fields), their discriminator when one is stored beside them (else a fresh one, logged), fresh
optimisers, and the FINETUNE schedule for every field not set (`finetune_config`). Every checkpoint of the run
records the init weights' path and sha256 in its metadata (INIT_KEY, INIT_SHA_KEY) and in state.pt.

`train()` sets up (run directory, data, networks, resume) with the functions above it, then runs the loop:
per step the lr (a function of the step), the batch, its commands encoded by the frozen text encoder (no
grad; or, with text_encoder_trainable, with grad and in the generator's optimiser), the generator step (SAHM
forward, eq. 14 loss, AdamW), the discriminator step (eq. 13, its own AdamW), the log and the checkpoint.
Settings follow the paper (section 5.1): AdamW betas (0.85, 0.91), weight decay 0.005, lr 6e-4 with
exponential decay, batch 32, 76 epochs, random crop + flip at the config's resolution.

Run directory: train_config.json, model.safetensors (generator, ModelConfig in its metadata),
discriminator.safetensors, state.pt (optimisers, step, RNG, the ModelConfig the run started with;
torch.load(weights_only=True)), history.jsonl (logged scalars), training_curve.png, tb/ (TensorBoard scalars and
image grids), and text_encoder/ when the run trains its text encoder: the weights' config then names it (stored as
"text_encoder", relative to model.safetensors), so eval, export and the runtime use the encoder the weights trained
with.

Exact resume: data order and augmentation are functions of (seed, epoch, sample index) only (see
`SeededSamples`), the learning rate of the step number only (`learning_rate`), and the RNG state is restored, so
k steps + `--resume` + k steps equals 2k steps in one go. `batch_size` is the global batch, split evenly
over processes (DDP averages gradients): N GPUs give the same update as one, their BatchNorm statistics
synchronised; N CPU processes normalise each with its own shard's statistics (see `synchronise_batchnorm`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, default_collate
from tqdm import tqdm

from .checkpoint import (
    WEIGHTS_FILE,
    CheckpointError,
    load_into,
    read_config,
    read_metadata,
    resolve_text_encoder,
    save_weights,
    weights_file,
)
from .config import MODEL_CONFIGS, ModelConfig, dataclass_from_dict, model_config, parse_overrides
from .export.cache import file_sha256
from .losses import LossWeights, discriminator_loss, generator_loss
from .text_features import TextFeatures

TRAIN_CONFIG_FILE = "train_config.json"
DISC_FILE = "discriminator.safetensors"
STATE_FILE = "state.pt"
HISTORY_FILE = "history.jsonl"
CURVE_FILE = "training_curve.png"
DEFAULT_PRESET = "nano"  # sahm train's --config
TEXT_ENCODER_DIR = "text_encoder"  # a trainable text encoder, as a local Hugging Face directory


@dataclass(frozen=True)
class TrainConfig(LossWeights):
    """Optimisation settings and the loss weights (the fields of LossWeights); the network's shape is the
    ModelConfig, stored with the weights."""

    batch_size: int = 32  # global batch over all processes (paper: 32)
    epochs: int = 76  # paper: 76 rounds
    steps: int = 0  # > 0: train this many steps instead of `epochs` epochs
    lr: float = 6e-4  # generator and discriminator (paper: 6e-4)
    lr_decay_per_epoch: float = 0.95  # exponential decay, applied smoothly per step; 0.95**76 ~ 0.02
    warmup_steps: int = 0  # linear warm-up before the decay (0: none, as in the paper)
    anneal_steps: int = 0  # then a linear ramp of the lr to zero over the run's last N steps (0: none; not in paper)
    betas: tuple[float, float] = (0.85, 0.91)
    weight_decay: float = 0.005
    grad_clip: float = 1.0  # max global grad norm per optimiser (0: no clipping)
    augment: bool = True  # random crop + flip
    bf16: bool = True  # bf16 autocast on CUDA
    cpu_bf16: bool = False  # bf16 autocast on CPU too: ~1.4x faster on AMX / AVX512-BF16 CPUs, slower without
    seed: int = 0
    num_workers: int = 4
    log_interval: int = 10  # steps between scalar logs
    image_interval: int = 250  # steps between TensorBoard image grids
    ckpt_interval: int = 500  # steps between checkpoints (and always at the end)
    # A timm SwinV2 checkpoint (.safetensors, or .pth read with weights_only=True) that a fresh run's backbone
    # starts from (paper 5.1); "" for none. A resumed run keeps its own weights. See sahm_core/model/pretrained.py.
    backbone_weights: str = ""
    # Train the text encoder too (paper 5.1: ALBERT base v2, initialised and trained), in its own AdamW parameter
    # group at lr * text_lr_scale; it is saved in the run as TEXT_ENCODER_DIR. False: frozen, as shipped.
    text_encoder_trainable: bool = False
    text_lr_scale: float = 0.1
    # Paper 5.1 first activates the segmentation layers: for the first N steps the rec and adv weights are 0
    # (so the discriminator does not train either), then the configured weights apply. 0: no warm-up.
    seg_warmup_steps: int = 0
    # One share per --data folder: each sample of a batch comes from folder k with probability
    # data_weights[k] / sum(data_weights) (see `mixed_order`), so a few hundred examples of one's own are not
    # swamped by 20,000 synthetic ones. (): the folders' samples concatenated, each seen once an epoch.
    data_weights: tuple[float, ...] = ()
    # The share of the expressions naming an object that train the point prompt instead: a click drawn inside the
    # object, with CLICK_TEXT for the command (model/point.py). 0: text commands only.
    click_fraction: float = 0.0

    def __post_init__(self):
        for name in ("betas", "data_weights"):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # JSON gives a list

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return dataclass_from_dict(cls, d)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


# `sahm train --init`'s schedule, for a few hundred examples of one's own beside the synthetic set; any field the user
# sets wins. `finetune_config` adds the rules that depend on the run: the lr ramps linearly to zero over the whole run
# (anneal_steps = steps), the warm-up takes at most a tenth of it, the loss weights are those the init weights trained
# with (the source's train_config.json, when it has one), and several --data folders get equal shares (data_weights)
# instead of being concatenated.
FINETUNE = {
    "steps": 2000,  # batch 8: 16,000 samples; at a 50 % share each of 300 own examples is seen ~27 times (augmented)
    "batch_size": 8,  # what the bundled nano trained with on 2 CPU cores (0.66 s a step on average there)
    "lr": 1.5e-4,  # the bundled nano's last lr cycle peaked at 1.65e-4: a fine-tune stays in that basin
    "warmup_steps": 100,  # the optimiser starts fresh: Adam's first steps move every weight by ~lr whatever its grad
    "lr_decay_per_epoch": 1.0,  # an epoch of a weighted mix means little; the final anneal does the decay
}
INIT_KEY, INIT_SHA_KEY = "sahm_init", "sahm_init_sha256"  # weights metadata: where a fine-tuned run started


@dataclass(frozen=True)
class InitSource:
    """Weights a fresh run starts from (`sahm train --init PATH`): a model or run directory, or a .safetensors."""

    weights: Path  # the generator's safetensors
    sha256: str  # of that file: the record says which weights, not only which path
    model_cfg: ModelConfig  # from its metadata; the run trains this network
    discriminator: Path | None  # DISC_FILE beside a directory's WEIGHTS_FILE, when there is one
    train_cfg: dict | None  # the source's train_config.json, when there is one

    @property
    def record(self) -> dict[str, str]:
        """What the run's weights metadata and state.pt keep about where it started."""
        return {INIT_KEY: os.path.abspath(self.weights), INIT_SHA_KEY: self.sha256}


def open_init(path: str | Path) -> InitSource:
    """The weights `--init` names, checked (a SAHM safetensors with its config; never a pickle) and hashed."""
    weights = weights_file(path)
    model_cfg = read_config(weights)  # CheckpointError for a missing file or a safetensors that is not SAHM's
    disc = weights.parent / DISC_FILE
    if weights.name != WEIGHTS_FILE or not disc.is_file():
        disc = None  # a loose .safetensors (an average, say) has no discriminator of its own
    elif read_metadata(disc).get("sahm_part") != "discriminator":
        raise CheckpointError(f"{disc}: not a SAHM discriminator (no sahm_part=discriminator in its metadata)")
    config_file = weights.parent / TRAIN_CONFIG_FILE
    train_cfg = json.loads(config_file.read_text()) if weights.name == WEIGHTS_FILE and config_file.is_file() else None
    return InitSource(weights, file_sha256(weights), model_cfg, disc, train_cfg)


def finetune_config(source: InitSource, named: dict, folders: int) -> TrainConfig:
    """The TrainConfig of an --init run: FINETUNE, the source's loss weights, the rules above, then `named` (the
    fields the user set) on top."""
    inherited = {f.name: source.train_cfg[f.name] for f in dataclasses.fields(LossWeights)
                 if source.train_cfg and f.name in source.train_cfg}
    cfg = dataclasses.replace(TrainConfig(), **{**FINETUNE, **inherited, **named})
    rules = {"anneal_steps": cfg.steps, "warmup_steps": min(cfg.warmup_steps, cfg.steps // 10),
             "data_weights": (1.0,) * folders if folders > 1 else ()}
    return dataclasses.replace(cfg, **{k: v for k, v in rules.items() if k not in named})


class SeededSamples(Dataset):
    """Wraps a dataset so each item's randomness (augmentation) depends only on (seed, epoch, index).

    That makes the data independent of the number of processes, of DataLoader workers and of where a
    resumed run starts, which is what exact resume and DDP == single-process rest on.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index: int):
        item_seed = hash((self.seed, self.epoch, index)) % 2**31  # ints hash deterministically
        with torch.random.fork_rng(devices=[]):
            np_state, py_state = np.random.get_state(), random.getstate()
            torch.manual_seed(item_seed)
            np.random.seed(item_seed)
            random.seed(item_seed)
            try:
                return self.dataset[index]
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str | None) -> torch.device:
    """`--device`: "cpu", "cuda" or "cuda:N"; None picks CUDA when torch sees a GPU, else the CPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise ValueError(f"--device {name!r}: expected cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: torch sees no CUDA GPU here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; plain runs are one process. `device` from `resolve_device`.

    On CUDA each torchrun process takes GPU LOCAL_RANK and the group talks NCCL; on the CPU it talks gloo and
    never touches a GPU, so CPU training (and its tests) runs the same on a machine that has one.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        if device.type == "cuda" and device.index is not None:  # cuda:N; plain "cuda" is the current GPU
            torch.cuda.set_device(device)
        return Dist(), device
    ddp = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        if device.index is not None:
            raise ValueError(f"--device {device}: under torchrun each process takes cuda:LOCAL_RANK; "
                             "pass --device cuda")
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ddp, device


def open_train_splits(data_dirs: list[Path], size: int, augment: bool, click_fraction: float = 0.0) -> list[Dataset]:
    """Each folder's 'train' split; fails before any training on a folder that is missing, empty, malformed
    or has no training samples (RemovalDataset checks every ref and referenced file as it opens)."""
    from .data import RemovalDataset

    for folder in data_dirs:
        if not folder.is_dir():
            raise FileNotFoundError(f"data folder {folder} does not exist")
    return [RemovalDataset(folder, "train", size, augment=augment, click_fraction=click_fraction)
            for folder in data_dirs]


@dataclass
class TrainingSet:
    samples: SeededSamples  # every folder's 'train' split, concatenated
    folder_sizes: list[int]  # samples per folder, in the order of the concatenation
    steps_per_epoch: int
    total_steps: int


def check_data_weights(weights: tuple[float, ...], data_dirs: list[Path]) -> None:
    if not weights:
        return
    if len(weights) != len(data_dirs):
        raise ValueError(f"--data-weights: {len(weights)} weight(s) for {len(data_dirs)} --data folder(s); "
                         "give one per folder, in the same order")
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise ValueError(f"--data-weights {' '.join(map(str, weights))}: every weight must be a positive number "
                         "(leave a folder out of --data instead of giving it 0)")


def data_folders(data: str | Path | list[str | Path]) -> list[Path]:
    """train()'s `data`, one folder or several, as a list."""
    return [Path(d) for d in ([data] if isinstance(data, (str, Path)) else data)]


def open_training_set(data: str | Path | list[str | Path], size: int, cfg: TrainConfig) -> TrainingSet:
    """The data folders' training samples at `size` px, and the run's length. The process count comes from
    torchrun's WORLD_SIZE, so a batch that does not split fails before the process group starts."""
    data_dirs = data_folders(data)
    check_data_weights(cfg.data_weights, data_dirs)
    splits = open_train_splits(data_dirs, size, augment=cfg.augment, click_fraction=cfg.click_fraction)
    samples = SeededSamples(ConcatDataset(splits), cfg.seed)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes")
    steps_per_epoch = math.ceil(len(samples) / world) // (cfg.batch_size // world)  # len(DistributedSampler) // B
    if steps_per_epoch == 0:
        names = ", ".join(map(str, data_dirs))
        raise ValueError(f"{names}: {len(samples)} training samples, fewer than one batch of {cfg.batch_size}")
    return TrainingSet(samples, [len(s) for s in splits], steps_per_epoch, cfg.steps or cfg.epochs * steps_per_epoch)


def mixed_order(sizes: list[int], weights: tuple[float, ...], seed: int, epoch: int, count: int) -> list[int]:
    """`count` indices into the concatenation of folders holding `sizes` samples: each index draws its folder k with
    probability weights[k] / sum(weights), independently (so a batch of B holds B * share samples of each folder on
    average, binomially spread), and each folder's draws walk its samples in shuffled passes, so every sample of a
    folder is seen as often as any other, to within one. A function of (seed, epoch) only, as DistributedSampler's
    order is, which exact resume rests on."""
    generator = torch.Generator().manual_seed(hash((seed, epoch)) % 2**63)  # ints hash deterministically
    folders = torch.multinomial(torch.tensor(weights, dtype=torch.float64), count, replacement=True,
                                generator=generator)
    order = torch.empty(count, dtype=torch.long)
    offset = 0
    for k, size in enumerate(sizes):
        draws = (folders == k).nonzero().flatten()
        passes = [torch.randperm(size, generator=generator) for _ in range(-(-len(draws) // size))]
        order[draws] = torch.cat(passes or [torch.empty(0, dtype=torch.long)])[: len(draws)] + offset
        offset += size
    return order.tolist()


def epoch_order(data: TrainingSet, cfg: TrainConfig, ddp: Dist, epoch: int) -> list[int]:
    """This process's sample indices of one epoch. Either way process r takes items r, r + N, ... of one global order
    (DistributedSampler's split), so N processes see the global batches one process would."""
    if not cfg.data_weights:
        sampler = DistributedSampler(data.samples, num_replicas=ddp.world, rank=ddp.rank, shuffle=True, seed=cfg.seed)
        sampler.set_epoch(epoch)
        return list(sampler)
    per_process = math.ceil(len(data.samples) / ddp.world)  # an epoch is as long as the concatenation's
    order = mixed_order(data.folder_sizes, cfg.data_weights, cfg.seed, epoch, per_process * ddp.world)
    return order[ddp.rank :: ddp.world]


def epoch_loader(data: TrainingSet, cfg: TrainConfig, ddp: Dist, epoch: int, first_batch: int,
                 pin: bool, collate: Callable[[list[dict]], dict] = default_collate) -> DataLoader:
    """This process's batches of one epoch, starting at batch `first_batch` (for resume)."""
    per_rank = cfg.batch_size // ddp.world
    order = epoch_order(data, cfg, ddp, epoch)[first_batch * per_rank :]
    data.samples.epoch = epoch  # workers copy the dataset when the loader's iterator starts
    # Its own generator: starting an iterator then draws its worker seed (unused: items seed themselves) from it,
    # not from the global RNG that dropout in a trainable text encoder uses, so a run resumed mid-epoch (one more
    # iterator than the uninterrupted run) draws the same dropout masks.
    return DataLoader(data.samples, batch_size=per_rank, sampler=order, drop_last=True, num_workers=cfg.num_workers,
                      pin_memory=pin, generator=torch.Generator(), collate_fn=collate)


def batches_from(step: int, data: TrainingSet, cfg: TrainConfig, ddp: Dist, pin: bool,
                 collate: Callable[[list[dict]], dict] = default_collate) -> Iterator[dict]:
    """This process's batches from `step` on, epoch after epoch; a resumed run starts at its step's batch."""
    epoch, first_batch = divmod(step, data.steps_per_epoch)
    while True:
        yield from epoch_loader(data, cfg, ddp, epoch, first_batch, pin, collate)
        epoch, first_batch = epoch + 1, 0


def synchronise_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm for DDP. On CUDA, SyncBatchNorm: statistics over the global batch, so N GPUs train like one GPU
    with the whole batch (same parameters and state_dict keys).

    On the CPU the module is returned as it is: torch's SyncBatchNorm refuses CPU tensors ("SyncBatchNorm expected
    input tensor to be on GPU or XPU or privateuseone"). Each process then normalises with its own shard's
    statistics (DDP's default; the running statistics are rank 0's, broadcast before every forward), so N gloo
    processes train like one process whose BatchNorm takes each shard's statistics separately, not exactly like
    one process with the whole batch (tests/sahm_core/test_train.py checks both).
    """
    return nn.SyncBatchNorm.convert_sync_batchnorm(module) if device.type == "cuda" else module


def encode_texts(encoder, prepared: dict[str, torch.Tensor], trainable: bool = False) -> TextFeatures:
    """Batch commands, as `encoder.prepare` made them -> TextFeatures; with gradients into the encoder only when it
    is trainable."""
    if trainable:
        return encoder.embed(prepared)
    with torch.no_grad():
        return encoder.embed(prepared)


class PreparedTexts:
    """The loaders' collate_fn: torch's default collation, plus the batch's commands through `encoder.prepare`
    (tokeniser and tagger) as `prepared_text`. It runs in the worker processes, beside the images' decoding."""

    def __init__(self, encoder):
        self.encoder = encoder

    def __call__(self, samples: list[dict]) -> dict:
        batch = default_collate(samples)
        batch["prepared_text"] = self.encoder.prepare(batch["text"])
        return batch


def own_encoder_config(model_cfg: ModelConfig, run_dir: Path) -> ModelConfig:
    """model_cfg naming the run's own text encoder, RUN/TEXT_ENCODER_DIR: what the weights of a run that trains its
    encoder record, so `sahm eval`, export, `sahm remove` and the node use the encoder they were trained with."""
    return dataclasses.replace(model_cfg, text_encoder=os.path.abspath(run_dir / TEXT_ENCODER_DIR))


def resumes_own_encoder(run_dir: Path, resumed: bool) -> bool:
    """This resume continues a text encoder the run trained before (from its TEXT_ENCODER_DIR)."""
    return resumed and (run_dir / TEXT_ENCODER_DIR).is_dir()


def has_own_encoder(cfg: TrainConfig, run_dir: Path, resumed: bool) -> bool:
    """The run trains its text encoder, or trained it before this resume."""
    return cfg.text_encoder_trainable or resumes_own_encoder(run_dir, resumed)


def open_text_encoder(model_cfg: ModelConfig, cfg: TrainConfig, run_dir: Path, resumed: bool, device: torch.device):
    """The frozen encoder the package shares; or, with cfg.text_encoder_trainable, this run's own copy in train mode
    (the config's encoder in a fresh run). A resumed run whose encoder trained continues from its TEXT_ENCODER_DIR."""
    from .text import CommandEncoder, shared_encoder

    if resumes_own_encoder(run_dir, resumed):
        encoder = CommandEncoder.for_config(own_encoder_config(model_cfg, run_dir), device=device)
    elif cfg.text_encoder_trainable:
        encoder = CommandEncoder.for_config(model_cfg, device=device)  # not the shared one: training changes it
    else:
        return shared_encoder(model_cfg, str(device))
    if cfg.text_encoder_trainable:
        encoder.model.train().requires_grad_(True)
    return encoder


def save_text_encoder(run_dir: Path, encoder) -> None:
    """A trained encoder as a local Hugging Face directory (safetensors weights and tokenizer), replaced whole. A
    resumed run loads it; the run's weights name it (own_encoder_config)."""
    final, tmp, old = (run_dir / (TEXT_ENCODER_DIR + suffix) for suffix in ("", ".tmp", ".old"))
    shutil.rmtree(tmp, ignore_errors=True)
    getattr(encoder.model, "module", encoder.model).save_pretrained(tmp, safe_serialization=True)  # DDP's .module
    encoder.tokenizer.save_pretrained(tmp)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def learning_rate(step: int, cfg: TrainConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Both optimisers' lr at `step` (0-based): cfg.lr times a linear warm-up, the paper's per-epoch exponential
    decay (applied smoothly per step) and an optional final linear anneal to zero. A function of the step and
    the config only, so a resumed run (with any --set) recomputes it instead of restoring it."""
    warmup = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    anneal = min(1.0, (total_steps - step) / cfg.anneal_steps) if cfg.anneal_steps else 1.0
    return cfg.lr * (warmup * cfg.lr_decay_per_epoch ** (step / steps_per_epoch) * anneal)


def adamw(*modules: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """The paper's optimiser, one parameter group per module; `optimise` sets the groups' lr before every step."""
    groups = [{"params": list(module.parameters())} for module in modules]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def optimise(opt: torch.optim.Optimizer, loss: torch.Tensor, lr: float, grad_clip: float,
             lr_scales: tuple[float, ...] = (1.0,)) -> torch.Tensor:
    """Backward `loss`, clip the gradient of all of `opt`'s parameters to norm `grad_clip` (0: no clipping) and step
    `opt`, parameter group i at lr * lr_scales[i]. Returns the gradient norm before clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in opt.param_groups for p in group["params"]]
    grad_norm = nn.utils.clip_grad_norm_(params, grad_clip or math.inf)
    for group, scale in zip(opt.param_groups, lr_scales, strict=True):
        group["lr"] = lr * scale
    opt.step()
    return grad_norm


def data_parallel(model: nn.Module, disc: nn.Module, ddp: Dist, cfg: TrainConfig) -> tuple[nn.Module, nn.Module]:
    """What the step calls: under torchrun, DDP wrappers (gradients averaged over processes); else the modules."""
    if ddp.world == 1:
        return model, disc
    # A zero-weight seg or rec term (or the seg warm-up) leaves a decoder branch without gradient, which DDP must be
    # told about.
    unused_branches = min(cfg.seg_weight, cfg.rec_weight) == 0 or cfg.seg_warmup_steps > 0
    return DistributedDataParallel(model, find_unused_parameters=unused_branches), DistributedDataParallel(disc)


def resolve_run(run_dir: Path, cfg: TrainConfig, model_cfg: ModelConfig, resume: bool,
                overrides: Iterable[str] | None = None) -> tuple[TrainConfig, dict | None]:
    """Checks a run directory and returns the TrainConfig to use and the saved state (None for a fresh run).

    A resumed run keeps its saved TrainConfig except the fields named in `overrides` (the CLI's --set keys
    and flags; e.g. more --steps), which take cfg's values even where those equal the defaults. Without
    `overrides`, the fields where cfg differs from the defaults. Its weights must have been made for `model_cfg` (or
    for model_cfg with the run's own text encoder, `own_encoder_config`).
    """
    state_path = run_dir / STATE_FILE
    if not resume:
        if (run_dir / WEIGHTS_FILE).exists() or state_path.exists():
            raise FileExistsError(f"{run_dir} already holds a training run; pass --resume to continue it "
                                  "or choose a new --out")
        return cfg, None
    check_resumable(run_dir)
    saved_cfg = read_config(run_dir / WEIGHTS_FILE)
    if saved_cfg not in (model_cfg, own_encoder_config(model_cfg, run_dir)):
        raise CheckpointError(
            f"--resume: {run_dir / WEIGHTS_FILE} was trained with model config {saved_cfg.name!r}, not the requested "
            f"{model_cfg.name!r}: {config_differences(saved_cfg, model_cfg)}"
        )
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    fields = dataclasses.asdict(cfg)
    if overrides is None:
        overrides = [k for k, v in fields.items() if v != getattr(TrainConfig(), k)]
    changed = {k: fields[k] for k in overrides}
    return dataclasses.replace(TrainConfig.from_dict(state["train_config"]), **changed), state


def check_resumable(run_dir: Path) -> None:
    if not (run_dir / STATE_FILE).is_file() or not (run_dir / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"--resume: {run_dir} has no {STATE_FILE} and {WEIGHTS_FILE} to resume from")


def config_differences(saved: ModelConfig, requested: ModelConfig) -> str:
    """"field: saved X, requested Y" for each ModelConfig field where the two differ."""
    return "; ".join(f"{f.name}: saved {getattr(saved, f.name)!r}, requested {getattr(requested, f.name)!r}"
                     for f in dataclasses.fields(ModelConfig) if getattr(saved, f.name) != getattr(requested, f.name))


def started_model_config(run_dir: Path) -> ModelConfig:
    """The ModelConfig a run was started with (its state.pt; the weights may name the run's own text encoder
    instead). mmap: the optimiser moments are not read."""
    check_resumable(run_dir)
    state = torch.load(run_dir / STATE_FILE, map_location="cpu", weights_only=True, mmap=True)
    if "model_config" not in state:
        raise CheckpointError(f"{run_dir / STATE_FILE}: holds no model config to resume with")
    return resolve_text_encoder(ModelConfig.from_json(state["model_config"]), os.getcwd())


def restore_state(state: dict, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer) -> int:
    """Optimiser moments and RNG from a saved state.pt; returns its step. (Runs saved with lr schedulers in the
    state resume too: the lr is recomputed from the step.)"""
    opt_g.load_state_dict(state["optimizer_g"])
    opt_d.load_state_dict(state["optimizer_d"])
    torch.set_rng_state(state["rng_cpu"])
    if torch.cuda.is_available() and state["rng_cuda"]:
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return state["step"]


def save_checkpoint(run_dir: Path, model: nn.Module, disc: nn.Module, opt_g: torch.optim.Optimizer,
                    opt_d: torch.optim.Optimizer, step: int, cfg: TrainConfig, model_cfg: ModelConfig,
                    weights_cfg: ModelConfig, init_record: dict[str, str], encoder=None) -> None:
    """`encoder`, when it trains (first: the weights may name it); the weights with `weights_cfg` (model_cfg, or
    own_encoder_config) and `init_record` (InitSource.record; {} for a run from scratch) in their metadata; then
    state.pt with model_cfg and the record."""
    if encoder is not None:
        save_text_encoder(run_dir, encoder)
    save_weights(run_dir / WEIGHTS_FILE, model.state_dict(), weights_cfg, extra={"step": str(step), **init_record})
    save_weights(run_dir / DISC_FILE, disc.state_dict(), weights_cfg,
                 extra={"sahm_part": "discriminator", "step": str(step), **init_record})
    state = {
        "step": step,
        "optimizer_g": opt_g.state_dict(),
        "optimizer_d": opt_d.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "train_config": json.loads(cfg.to_json()),
        "model_config": model_cfg.to_json(),
        "init": init_record,
    }
    tmp = run_dir / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(run_dir / STATE_FILE)  # a crash mid-save never leaves a truncated state.pt


def image_grid(batch: dict, out) -> torch.Tensor:
    """Rows: input, predicted background, predicted mask, ground-truth mask, target (first 4 samples)."""
    from torchvision.utils import make_grid

    n = min(4, batch["image"].shape[0])
    pred_mask = torch.sigmoid(out.mask_logits[:n].float()).expand(-1, 3, -1, -1)
    rows = [batch["image"][:n], out.image[:n].float().clamp(0, 1), pred_mask, batch["mask"][:n].expand(-1, 3, -1, -1),
            batch["target"][:n]]
    return make_grid(torch.cat([r.detach().cpu() for r in rows]), nrow=n)


def plot_history(run_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (run_dir / HISTORY_FILE).read_text().splitlines() if line.strip()]
    if not rows:
        return
    keys = sorted({k for r in rows for k in r if k.startswith("loss/")}) + ["lr"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        steps, values = np.array([(r["step"], r[key]) for r in rows if key in r], dtype=np.float64).T
        ax.plot(steps, values, alpha=0.3, linewidth=0.5)  # each point is one logged batch: noisy
        window = len(values) // 50  # a running mean over 2% of the run shows the trend
        if window > 1:
            ax.plot(steps[window - 1:], np.convolve(values, np.ones(window) / window, mode="valid"), color="C0")
        ax.set_title(key.removeprefix("loss/"))
        ax.set_xlabel("step")
        ax.set_yscale("log" if (values > 0).all() else "linear")
    fig.tight_layout()
    fig.savefig(run_dir / CURVE_FILE, dpi=100)
    plt.close(fig)


class RunLog:
    """Rank 0's record of a run: train_config.json, history.jsonl, TensorBoard scalars and image grids, a progress
    bar. Opened for a resumed run, it drops the history rows and TensorBoard events after the resumed step."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, step: int, total_steps: int):
        from torch.utils.tensorboard import SummaryWriter

        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / TRAIN_CONFIG_FILE).write_text(cfg.to_json())
        self.history, self.cfg, self.total_steps = run_dir / HISTORY_FILE, cfg, total_steps
        if self.history.exists():
            rows = [r for r in self.history.read_text().splitlines() if r.strip() and json.loads(r)["step"] <= step]
            self.history.write_text("".join(r + "\n" for r in rows))
        self.writer = SummaryWriter(run_dir / "tb", purge_step=step + 1)
        self.bar = tqdm(total=total_steps, initial=step, desc="train", dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, torch.Tensor], next_lr: float, batch: dict, out) -> None:
        """After step `step`: its metrics (rank 0's shard) and the lr the next step uses; now and then images."""
        self.bar.update(1)
        if step % self.cfg.log_interval == 0 or step == self.total_steps:
            scalars = {k: float(v) for k, v in metrics.items()} | {"lr": next_lr}
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)
            with self.history.open("a") as f:
                f.write(json.dumps({"step": step, **scalars}) + "\n")
            self.bar.set_postfix(loss=f"{scalars['loss/total']:.4f}", lr=f"{next_lr:.2e}")
        if step % self.cfg.image_interval == 0:
            self.writer.add_image("train/input_pred_predmask_mask_target", image_grid(batch, out), step)

    def close(self) -> None:
        self.bar.close()
        self.writer.close()


def check_init(init: InitSource, model_cfg: ModelConfig, cfg: TrainConfig, resume: bool) -> None:
    if resume:
        raise ValueError("--init starts a fresh run from other weights and --resume continues this run's own: "
                         "give one of them")
    if cfg.backbone_weights:
        raise ValueError(f"--init {init.weights} and backbone_weights={cfg.backbone_weights} both give the starting "
                         "weights: give one of them")
    if init.model_cfg != model_cfg:
        raise CheckpointError(f"--init: {init.weights} holds model config {init.model_cfg.name!r}; the requested one "
                              f"differs: {config_differences(init.model_cfg, model_cfg)}")


def describe_init(init: InitSource, cfg: TrainConfig) -> str:
    """The log line of an --init run: which weights (path and hash), and where its discriminator comes from."""
    if init.discriminator is not None:
        disc = f"discriminator from {init.discriminator}"
    else:
        disc = f"discriminator fresh ({init.weights} has no {DISC_FILE} beside it)"
    if not cfg.adv_weight:
        disc += ", not trained (adv_weight 0)"
    return f"init: {init.weights} (sha256 {init.sha256}); {disc}; optimisers fresh"


def describe_mix(data: TrainingSet, cfg: TrainConfig, data_dirs: list[Path]) -> str:
    total = sum(cfg.data_weights)
    return "data mix: " + ", ".join(f"{folder} {size} samples at {weight / total:.1%} of each batch"
                                    for folder, size, weight in zip(data_dirs, data.folder_sizes, cfg.data_weights))


def train(model_cfg: ModelConfig, cfg: TrainConfig, data: str | Path | list[str | Path], run_dir: str | Path,
          resume: bool = False, overrides: Iterable[str] | None = None, device: str | None = None,
          init: InitSource | None = None) -> Path:
    """Train (or resume) a run on one data folder or several; returns the run directory. One process or torchrun.

    overrides: on --resume, the TrainConfig fields that replace the saved ones (see `resolve_run`).
    device: "cpu", "cuda" or "cuda:N" (None: CUDA when there is a GPU). A machine setting, not saved with the run:
    a run may resume on another device. bf16 autocast runs on CUDA (cfg.bf16), on the CPU only with cfg.cpu_bf16.
    init: weights a fresh run starts from (`open_init`; its config must be model_cfg), with its discriminator when
    it has one; the optimisers start fresh. The weights' path and sha256 go into every checkpoint's metadata."""
    from .model import PatchDiscriminator, build_model
    from .model.pretrained import load_backbone_weights

    run_dir = Path(run_dir)
    model_cfg = resolve_text_encoder(model_cfg, os.getcwd())  # a text encoder path given here is the working dir's
    requested_device = resolve_device(device)  # a bad --device fails before anything is read
    if init is not None:
        check_init(init, model_cfg, cfg, resume)
    cfg, state = resolve_run(run_dir, cfg, model_cfg, resume, overrides)
    train_set = open_training_set(data, model_cfg.image_size, cfg)  # with the resumed run's augment
    ddp, device = init_distributed(requested_device)
    if ddp.main and cfg.data_weights:
        print(describe_mix(train_set, cfg, data_folders(data)))

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg).to(device)
    disc = PatchDiscriminator(model_cfg).to(device)
    if state is None and cfg.backbone_weights:  # a resumed run keeps its own weights
        loaded = load_backbone_weights(model, cfg.backbone_weights)
        if ddp.main:
            print(loaded)
    if init is not None:  # a fresh run (check_init)
        load_into(model, init.weights, model_cfg)
        if init.discriminator is not None:
            load_into(disc, init.discriminator, model_cfg)
        if ddp.main:
            print(describe_init(init, cfg))
    init_record = init.record if init is not None else (state or {}).get("init", {})
    if ddp.world > 1:
        model = synchronise_batchnorm(model, device)
    encoder = open_text_encoder(model_cfg, cfg, run_dir, state is not None, device)
    own_encoder = has_own_encoder(cfg, run_dir, state is not None)
    weights_cfg = own_encoder_config(model_cfg, run_dir) if own_encoder else model_cfg
    trained_encoder = encoder if cfg.text_encoder_trainable else None
    text_modules = [encoder.model] if trained_encoder else []
    opt_g, opt_d = adamw(model, *text_modules, cfg=cfg), adamw(disc, cfg=cfg)
    g_lr_scales = (1.0,) + (cfg.text_lr_scale,) * len(text_modules)
    step = 0
    if state is not None:
        saved_cfg = load_into(model, run_dir / WEIGHTS_FILE)  # resolve_run checked its config
        load_into(disc, run_dir / DISC_FILE, saved_cfg)
        step = restore_state(state, opt_g, opt_d)
    model_ddp, disc_ddp = data_parallel(model, disc, ddp, cfg)
    if trained_encoder and ddp.world > 1:  # its gradients are averaged over processes too (the pooler gets none)
        encoder.model = DistributedDataParallel(encoder.model, find_unused_parameters=True)
    segmentation_only = dataclasses.replace(cfg, rec_weight=0.0, adv_weight=0.0)  # loss weights in seg warm-up
    use_bf16 = cfg.bf16 if device.type == "cuda" else cfg.cpu_bf16
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
    schedule = partial(learning_rate, cfg=cfg, steps_per_epoch=train_set.steps_per_epoch,
                       total_steps=train_set.total_steps)
    batches = batches_from(step, train_set, cfg, ddp, pin=device.type == "cuda", collate=PreparedTexts(encoder))
    log = RunLog(run_dir, cfg, step, train_set.total_steps) if ddp.main else None

    model.train()
    disc.train()
    try:
        while step < train_set.total_steps:
            lr = schedule(step)
            weights = segmentation_only if step < cfg.seg_warmup_steps else cfg
            batch = next(batches)
            image, target, mask, point = (batch[k].to(device, non_blocking=True)
                                          for k in ("image", "target", "mask", "point"))
            text = encode_texts(encoder, batch["prepared_text"], cfg.text_encoder_trainable).to(device)

            # Generator step: SAHM forward, eq. 14; D is a fixed critic here (no grads into it).
            disc.requires_grad_(False)
            with autocast:
                out = model_ddp(image, text, point)
                g_loss, metrics = generator_loss(out, target, mask, disc, weights)
            metrics["grad_norm/generator"] = optimise(opt_g, g_loss, lr, cfg.grad_clip, g_lr_scales)
            disc.requires_grad_(True)

            # Discriminator step: eq. 13 on targets vs the generator's (detached) images.
            if weights.adv_weight:
                with autocast:
                    d_loss, d_metrics = discriminator_loss(disc_ddp, target, out.image.detach())
                optimise(opt_d, d_loss, lr, cfg.grad_clip)
                metrics |= d_metrics
            step += 1

            if ddp.main:
                log.log(step, metrics, schedule(step), batch, out)
                if step % cfg.ckpt_interval == 0 or step == train_set.total_steps:
                    save_checkpoint(run_dir, model, disc, opt_g, opt_d, step, cfg, model_cfg, weights_cfg,
                                    init_record, trained_encoder)
    except KeyboardInterrupt:
        if ddp.main and ddp.world == 1:
            save_checkpoint(run_dir, model, disc, opt_g, opt_d, step, cfg, model_cfg, weights_cfg, init_record,
                            trained_encoder)
            print(f"\ninterrupted at step {step}; saved, continue with --resume")
        raise
    finally:
        if log is not None:
            log.close()
        if ddp.world > 1:
            dist.destroy_process_group()
    if ddp.main:
        plot_history(run_dir)
    return run_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"model config preset ({', '.join(MODEL_CONFIGS)}; default {DEFAULT_PRESET}); "
                                         "a resumed run keeps the config it started with")
    parser.add_argument("--data", required=True, nargs="+", metavar="DIR",
                        help="removal dataset folder(s) (refs.jsonl + images/ targets/ masks/); "
                             "several train as one set")
    parser.add_argument("--out", required=True, help="run directory (checkpoints, tensorboard, curves)")
    parser.add_argument("--steps", type=int, help="train this many steps in total instead of the config's epochs")
    parser.add_argument("--batch-size", type=int, help="global batch size over all processes (default 32)")
    parser.add_argument("--lr", type=float, help="initial learning rate (default 6e-4)")
    parser.add_argument("--num-workers", type=int, help="DataLoader worker processes per training process")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    parser.add_argument("--init", metavar="PATH",
                        help="start a fresh run from these weights (a model or run directory, or a .safetensors): "
                             "their model config, their discriminator when stored beside them, fresh optimisers, and "
                             "the fine-tune schedule (train.FINETUNE) for whatever is not set")
    parser.add_argument("--data-weights", type=float, nargs="+", metavar="W",
                        help="one weight per --data folder: each batch draws from folder k with probability "
                             "W_k / sum(W) (default: concatenated; with --init and several folders, equal shares)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when torch sees a GPU, else cpu); "
                                         "under torchrun, cuda means each process's cuda:LOCAL_RANK")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="set any TrainConfig field, e.g. --set adv_weight=0 --set expansion_weight=1")
    parser.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                        help="set a ModelConfig field of the --config preset for a fresh run (a tuple as a comma "
                             "list), e.g. --model-set text_encoder=DIR --model-set text_dim=768; on --resume a value "
                             "that differs from the run's is an error")


def model_config_from_args(args: argparse.Namespace, init: InitSource | None = None) -> ModelConfig:
    """--config and --model-set for a fresh run. A resumed run keeps the ModelConfig it started with, and an --init run
    takes its weights' config; a --config or --model-set that asks for another is an error naming each differing
    field."""
    if init is None and not args.resume:
        preset = model_config(args.config or DEFAULT_PRESET)
        return dataclasses.replace(preset, **parse_overrides(preset, args.model_set, "--model-set"))
    saved = init.model_cfg if init is not None else started_model_config(Path(args.out))
    base = saved if args.config is None else model_config(args.config)
    asked = dataclasses.replace(base, **parse_overrides(base, args.model_set, "--model-set"))
    asked = resolve_text_encoder(asked, os.getcwd())
    if asked != saved:
        where = (f"--init: the weights {init.weights} have their own" if init is not None
                 else f"--resume: the run in {args.out} keeps the")
        raise ValueError(f"{where} model config; the requested one differs: {config_differences(saved, asked)}")
    return saved


def main(args: argparse.Namespace) -> int:
    try:
        if args.init and args.resume:
            raise ValueError("--init starts a fresh run from other weights and --resume continues the run in --out: "
                             "give one of them")
        init = open_init(args.init) if args.init else None
        model_cfg = model_config_from_args(args, init)
        flags = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "num_workers": args.num_workers,
                 "data_weights": tuple(args.data_weights) if args.data_weights else None}
        # what the user asked for, default or not; a flag wins over a --set of the same field
        named = {**parse_overrides(TrainConfig(), args.set), **{k: v for k, v in flags.items() if v is not None}}
        if init is None:
            cfg = dataclasses.replace(TrainConfig(), **named)
        else:
            cfg = finetune_config(init, named, len(args.data))
            source = f"{init.weights.parent / TRAIN_CONFIG_FILE}" if init.train_cfg else "TrainConfig (none stored)"
            print(f"fine-tune: steps {cfg.steps}, batch {cfg.batch_size}, lr {cfg.lr:g} (warm-up {cfg.warmup_steps}, "
                  f"to zero over {cfg.anneal_steps} steps); loss weights from {source}: seg {cfg.seg_weight:g}, "
                  f"rec {cfg.rec_weight:g}, adv {cfg.adv_weight:g}, dice {cfg.dice_weight:g}, "
                  f"presence {cfg.presence_weight:g}")
        run_dir = train(model_cfg, cfg, args.data, args.out, resume=args.resume, overrides=named.keys(),
                        device=args.device, init=init)
    except (ValueError, FileNotFoundError, FileExistsError, CheckpointError) as e:
        print(f"sahm train: error: {e}")
        return 2
    print(f"trained model: {run_dir / WEIGHTS_FILE}")
    return 0
