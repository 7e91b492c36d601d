"""Evaluate a checkpoint: `sahm eval --checkpoint CKPT --data DIR --split test --out DIR`.

Removal (paper 5.2), on positives: PSNR and SSIM on the whole image and inside the ground-truth mask, for SAHM and for
three baselines in the same table: no removal (input as output), OpenCV Telea inpainting with the
ground-truth mask (an oracle two-stage pipeline) and Telea with SAHM's own mask (the region SAHM erases and
publishes: the segmentation grown by the removal margin). LPIPS and FID
only with the user's local backbone weights; otherwise reported as unavailable, never as a number.
Segmentation: mean / overall IoU and Pr@0.5/0.7/0.9 on positives; not-found accuracy on negatives and the
false-negative rate on positives, with the runtime's found / not-found rule.
With `--clicks`, every positive is named by a click instead of its expression: a pixel drawn uniformly inside its
ground-truth mask (the rim included; seeded by --seed), the point prompt (issue 20); negatives are left out.
With `--given-masks`, one more method: SAHM's fill graph under the ground-truth mask ("SAHM fill + GT mask", what
the node does with a mask on ~/erase_mask, with the runtime's FILL_CONTEXT as the text), beside the oracle Telea
under the same mask.
Cost: parameters, GFLOPs and FPS of the per-frame forward at the config's resolution.

Everything runs at the model resolution S. SAHM's output is what the runtime publishes: the input with
the predicted background composited under the thresholded mask grown by the removal margin, quantised to
uint8, or the unchanged input when nothing was found (IoU is scored on the segmentation itself):
`sahm_core.runtime.composite` and `found_decision`, the runtime's own. SSIM is scikit-image's (Gaussian window,
sigma 1.5, as Wang et al. 2004);
its full SSIM map is averaged over the whole image or over the mask.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity
from tqdm import tqdm

from .checkpoint import CheckpointError, load_model, weights_file
from .config import ModelConfig
from .found import DEFAULT_RULE, FoundRule, add_rule_arguments, found_decision, rule_from_args
from .runtime import FILL_CONTEXT, composite

PR_THRESHOLDS = (0.5, 0.7, 0.9)
EDGE_CLICK_PX = 3  # a click this close to its object's edge is an edge click (reported apart with --clicks)
PSNR_CAP_DB = 100.0  # identical images (e.g. a negative passed through) have infinite PSNR
TELEA_RADIUS = 3
METHODS = ("no removal", "Telea + GT mask (oracle)", "Telea + SAHM mask", "SAHM")
GIVEN_MASK_METHOD = "SAHM fill + GT mask"  # with --given-masks
REMOVAL_SCORES = ("psnr", "ssim", "psnr_mask", "ssim_mask", "lpips")  # per sample, averaged; FID is per set


def psnr(pred: np.ndarray, target: np.ndarray, region: np.ndarray | None = None) -> float:
    """PSNR in dB of HxWx3 float images in [0,1], over all pixels or the HxW bool `region`."""
    err = (pred.astype(np.float64) - target.astype(np.float64)) ** 2
    mse = err[region].mean() if region is not None else err.mean()
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * np.log10(1.0 / mse))


def ssim_map(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM (HxW, the mean over channels) of HxWx3 float images in [0,1]."""
    _, smap = structural_similarity(
        pred, target, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        full=True
    )
    return smap.mean(axis=2)


def iou(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """(intersection, union) pixel counts of two HxW bool masks."""
    return int(np.logical_and(pred, gt).sum()), int(np.logical_or(pred, gt).sum())


def telea(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """OpenCV Telea inpainting of an HxWx3 uint8 image under an HxW bool mask (empty mask: the input)."""
    if not mask.any():
        return image.copy()
    return cv2.inpaint(image, mask.astype(np.uint8) * 255, TELEA_RADIUS, cv2.INPAINT_TELEA)


def segmentation_metrics(inter_union: list[tuple[int, int]], found_pos: list[bool], found_neg: list[bool]) -> dict:
    """IoU over positives (an empty prediction scores 0), Pr@X = share of positives with IoU > X."""
    ious = np.array([i / u if u else 1.0 for i, u in inter_union])
    total_i, total_u = sum(i for i, _ in inter_union), sum(u for _, u in inter_union)
    out = {
        "mean_iou": float(ious.mean()) if len(ious) else None,
        "overall_iou": total_i / total_u if total_u else None,
        **{f"pr@{t}": float((ious > t).mean()) if len(ious) else None for t in PR_THRESHOLDS},
        "not_found_accuracy": float(np.mean([not f for f in found_neg])) if found_neg else None,
        "false_negative_rate": float(np.mean([not f for f in found_pos])) if found_pos else None,
    }
    return out


def near_edge(gt: np.ndarray, point: np.ndarray) -> bool:
    """Whether a click (x, y, on) lies within EDGE_CLICK_PX of the edge of the ground-truth mask gt (SxS bool): the
    distance from its pixel to the nearest pixel outside the object. False when there is no click."""
    if not point[2]:
        return False
    size = gt.shape[0]
    row, col = min(int(point[1] * size), size - 1), min(int(point[0] * size), size - 1)
    depth = cv2.distanceTransform(np.pad(gt, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    return bool(depth[row, col] <= EDGE_CLICK_PX)


def edge_click_metrics(positives: list[Record]) -> dict:
    """--clicks: how many clicks fell within EDGE_CLICK_PX of the edge, and the mean IoU of those and of the rest."""
    def mean_iou(records):
        return segmentation_metrics([r.inter_union for r in records], [], [])["mean_iou"]

    edge = [r for r in positives if r.edge_click]
    inner = [r for r in positives if not r.edge_click]
    return {"within_px": EDGE_CLICK_PX, "edge_clicks": len(edge), "mean_iou_edge": mean_iou(edge),
            "mean_iou_inner": mean_iou(inner)}


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3,S,S) float [0,1] -> SxSx3 uint8."""
    return (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def model_cost(model, text, cfg: ModelConfig, device: torch.device, frames: int = 20) -> dict:
    """Parameters, GFLOPs and FPS of the per-frame path (SAHM.per_frame, batch 1) at the config's resolution: the
    FLOPs are counted on the very call that is timed."""
    from .info import GENERATOR, call_gflops, count_parameters

    image = torch.rand(1, 3, cfg.image_size, cfg.image_size, device=device)
    text = text.to(device)
    step = model.per_frame
    gflops = call_gflops(step, image, text)  # also the first warm-up call
    with torch.no_grad():
        for _ in range(2):  # warm-up: allocator, cuDNN autotuning
            step(image, text)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(frames):
            step(image, text)
        sync()
        elapsed = time.perf_counter() - start
    return {
        "params_m": count_parameters(cfg)[GENERATOR] / 1e6,  # without the frozen text encoder
        "gflops": gflops,
        "fps": frames / elapsed,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch_threads": torch.get_num_threads(),
    }


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A local weights file: safetensors, or a torch state dict read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{path}: not a readable weights file ({e})") from None


class LPIPS(torch.nn.Module):
    """LPIPS (Zhang et al. 2018), AlexNet variant: unit-normalised conv1..5 activations, squared differences
    weighted per channel by the learned linear layers, averaged over space and summed over layers.

    backbone: torchvision AlexNet weights; linear: the LPIPS v0.1 linear layers (keys lin{k}.model.1.weight).
    """

    SHIFT = (-0.030, -0.088, -0.188)  # LPIPS input scaling layer
    SCALE = (0.458, 0.448, 0.450)
    TAPS = (1, 4, 7, 9, 11)  # AlexNet feature indices of the ReLUs after conv1..conv5

    def __init__(self, linear_path: str | Path, backbone_path: str | Path):
        from torchvision.models import alexnet

        super().__init__()
        features = alexnet(weights=None).features
        state = {k.removeprefix("features."): v for k, v in load_state_file(backbone_path).items()
                 if k.startswith("features.")}
        try:  # only the convolutional part is used; a full AlexNet file or its features.* alone both work
            features.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{backbone_path}: not torchvision AlexNet weights ({e})") from None
        self.features = features[: self.TAPS[-1] + 1].eval().requires_grad_(False)
        linear = load_state_file(linear_path)
        keys = [f"lin{k}.model.1.weight" for k in range(len(self.TAPS))]
        if any(k not in linear for k in keys):
            raise ValueError(f"{linear_path}: LPIPS linear layers need keys {', '.join(keys)}")
        self.linear = [linear[k].float() for k in keys]  # (1,C,1,1) each
        self.register_buffer("shift", torch.tensor(self.SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(self.SCALE).view(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b (B,3,H,W) in [0,1] -> (B,) distances."""
        x = torch.cat([a, b]) * 2 - 1
        x = (x - self.shift) / self.scale
        total = torch.zeros(a.shape[0])
        layer = 0
        for index, module in enumerate(self.features):
            x = module(x)
            if index in self.TAPS:
                unit = x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
                fa, fb = unit.chunk(2)
                total += F.conv2d((fa - fb) ** 2, self.linear[layer]).mean(dim=(1, 2, 3))
                layer += 1
        return total


class InceptionFeatures(torch.nn.Module):
    """2048-d pool features of torchvision's Inception-v3 (from the user's local weights), for FID.

    Not the TensorFlow FID network, so values compare with other runs of this evaluator, not with papers.
    """

    MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, weights_path: str | Path):
        from torchvision.models import inception_v3

        super().__init__()
        self.net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
        try:
            self.net.load_state_dict(load_state_file(weights_path))
        except RuntimeError as e:
            raise ValueError(f"{weights_path}: not torchvision Inception-v3 weights ({e})") from None
        self.net.fc = torch.nn.Identity()
        self.net.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] -> (B,2048)."""
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (N,D): |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""
    from scipy.linalg import sqrtm

    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = sqrtm(cov_a @ cov_b).real  # tiny imaginary parts are round-off
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def fid(records: list["Record"], method: str) -> float | None:
    """FID of a method's outputs against the targets, over the records that carry Inception features."""
    features = [r.features for r in records if r.features]
    if not features:
        return None
    return frechet_distance(torch.stack([f[method] for f in features]).double().numpy(),
                            torch.stack([f["target"] for f in features]).double().numpy())


def unavailable_reasons(lpips_weights: str | None, lpips_backbone: str | None,
                        fid_weights: str | None) -> dict[str, str]:
    reasons = {}
    if lpips_weights is None or lpips_backbone is None:
        reasons["lpips"] = ("needs local LPIPS linear-layer weights (--lpips-weights) and AlexNet weights "
                            "(--lpips-backbone); they cannot be downloaded here")
    if fid_weights is None:
        reasons["fid"] = "no Inception weights given (--fid-weights); they cannot be downloaded here"
    return reasons


def contact_sheet(rows: list[dict], path: Path) -> None:
    """Columns: input + command, SAHM output, predicted mask, ground-truth target, ground-truth mask."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = ("input", "SAHM output", "predicted mask", "ground truth", "GT mask")
    fig, axes = plt.subplots(len(rows), 5, figsize=(11, 2.3 * len(rows)), squeeze=False)
    for ax_row, row in zip(axes, rows):
        for ax, title, key in zip(ax_row, titles, ("input", "output", "pred_mask", "target", "gt_mask")):
            ax.imshow(row[key], cmap="gray" if row[key].ndim == 2 else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)
        verdict = f"found (IoU {row['iou']:.2f})" if row["found"] else "not found"
        ax_row[0].set_xlabel(f"\"{row['text']}\"{' [negative]' if row['negative'] else ''}", fontsize=7)
        ax_row[1].set_xlabel(verdict, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@dataclass(frozen=True)
class EvalConfig:
    """What `sahm eval` measures: which samples, the found rule, and the optional local LPIPS / FID weights."""

    split: str = "test"
    limit: int | None = None  # only the first N samples
    batch_size: int = 8
    rule: FoundRule = DEFAULT_RULE
    lpips_weights: str | None = None  # LPIPS v0.1 linear layers for AlexNet
    lpips_backbone: str | None = None  # torchvision AlexNet
    fid_weights: str | None = None  # torchvision Inception-v3
    sheet_rows: int = 8  # contact sheet: the first N samples
    given_masks: bool = False  # also fill the ground-truth mask with the fill graph (GIVEN_MASK_METHOD)
    clicks: bool = False  # name each positive by a click inside its mask instead of its expression; no negatives
    seed: int = 0  # the clicks' draw


class Sample(NamedTuple):
    """One sample as SAHM and the baselines leave it, at model resolution S."""

    text: str
    negative: bool
    image: np.ndarray  # SxSx3 uint8 input
    target: np.ndarray  # SxSx3 uint8 ground truth without the object
    gt: np.ndarray  # SxS bool ground-truth mask
    pred: np.ndarray  # SxS bool segmentation (probability > mask_threshold); the erased region adds the margin
    found: bool
    edge_click: bool  # named by a click within EDGE_CLICK_PX of its object's edge
    outputs: dict[str, np.ndarray]  # METHODS (+ GIVEN_MASK_METHOD) -> SxSx3 uint8


@dataclass
class Record:
    """What one sample contributes to the metrics."""

    negative: bool
    found: bool
    inter_union: tuple[int, int]  # the segmentation (empty when not found) against the ground-truth mask
    edge_click: bool = False
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> psnr, ssim, ... (positives only)
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # method | "target" -> Inception features


class Scorers(NamedTuple):
    """The learned metrics, when their local weights were given."""

    lpips: LPIPS | None
    inception: InceptionFeatures | None


def batch_samples(model, encoder, batch: dict, rule: FoundRule, margin: int, device: torch.device,
                  given_masks: bool = False) -> Iterator[Sample]:
    """Run SAHM's per-frame path on a dataset batch and make each sample's outputs as the runtime would publish them:
    the composite under the found rule, or the unchanged input when nothing was found; with given_masks, also the
    fill graph's composite under the ground-truth mask."""
    text = encoder.encode_batch(list(batch["text"])).to(device)
    images = batch["image"].to(device)
    cleaned, mask_logits = model.per_frame(images, text, batch["point"].to(device))
    prob = torch.sigmoid(mask_logits.float()).cpu()
    if given_masks:
        holes = (batch["mask"] > 0.5).float()  # (B,1,S,S)
        filled = model.fill(images, encoder.encode_batch([FILL_CONTEXT] * len(holes)).to(device), holes.to(device))
    for k in range(prob.shape[0]):
        image, target = to_uint8(batch["image"][k]), to_uint8(batch["target"][k])
        gt = batch["mask"][k, 0].numpy() > 0.5
        mask_prob = prob[k, 0].numpy()
        found, _, _ = found_decision(mask_prob, rule)
        removed, erased = composite(image, cleaned[k].float().cpu().numpy(), mask_prob, rule.mask_threshold, margin)
        outputs = {
            "no removal": image,
            "Telea + GT mask (oracle)": telea(image, gt),
            "Telea + SAHM mask": telea(image, erased > 0) if found else image,  # the mask SAHM publishes
            "SAHM": removed if found else image,  # the runtime passes the frame through when nothing is found
        }
        if given_masks:  # as Remover.remove(frame, erase=gt): the hole grown by the margin, composited
            outputs[GIVEN_MASK_METHOD] = composite(image, filled[k].float().cpu().numpy(), gt.astype(np.float32), 0.5,
                                                   margin)[0]
        yield Sample(batch["text"][k], bool(batch["negative"][k]), image, target, gt, mask_prob > rule.mask_threshold,
                     found, near_edge(gt, batch["point"][k].numpy()), outputs)


def score(sample: Sample, scorers: Scorers) -> Record:
    """Removal quality is scored on positives: a negative has no region to fill, and its whole-image PSNR would be
    capped at infinity; what a negative measures is the not-found accuracy."""
    record = Record(sample.negative, sample.found, iou(sample.pred & sample.found, sample.gt), sample.edge_click)
    if not sample.gt.any():
        return record
    target, gt = sample.target.astype(np.float64) / 255, sample.gt
    for method, output in sample.outputs.items():
        output = output.astype(np.float64) / 255
        smap = ssim_map(output, target)  # the costliest score: one map serves the image and the mask
        record.scores[method] = {"psnr": psnr(output, target), "ssim": float(smap.mean()),
                                 "psnr_mask": psnr(output, target, gt), "ssim_mask": float(smap[gt].mean())}
    if scorers.lpips is None and scorers.inception is None:
        return record
    # (M+1,3,S,S): the methods' outputs, then the target
    methods = list(sample.outputs)
    stack = torch.from_numpy(np.stack([*sample.outputs.values(), sample.target])).permute(0, 3, 1, 2).float() / 255
    if scorers.lpips is not None:
        for method, value in zip(methods, scorers.lpips(stack[:-1], stack[-1:].expand(len(methods), -1, -1, -1))):
            record.scores[method]["lpips"] = float(value)
    if scorers.inception is not None:
        record.features = dict(zip((*methods, "target"), scorers.inception(stack)))
    return record


def removal_metrics(records: list[Record]) -> dict[str, dict[str, float | None]]:
    """Per method: the mean of each score over the positives (None where nothing was scored) and FID."""
    scored = [r.scores for r in records if r.scores]
    table = {}
    for method in scored[0] if scored else METHODS:
        values = {name: [s[method][name] for s in scored if name in s[method]] for name in REMOVAL_SCORES}
        table[method] = {name: float(np.mean(v)) if v else None for name, v in values.items()}
        table[method]["fid"] = fid(records, method)
    return table


def sheet_row(sample: Sample) -> dict:
    """A contact sheet row; its IoU is the segmentation's whether or not the object counted as found."""
    inter, union = iou(sample.pred, sample.gt)
    return dict(input=sample.image, output=sample.outputs["SAHM"], pred_mask=sample.pred.astype(np.uint8) * 255,
                target=sample.target, gt_mask=sample.gt.astype(np.uint8) * 255, text=sample.text,
                negative=sample.negative, found=sample.found, iou=inter / union if union else 1.0)


def evaluate(checkpoint: str | Path, data_dir: str | Path, out_dir: str | Path, options: EvalConfig = EvalConfig()
             ) -> dict:
    """Runs the evaluation, writes metrics.json and contact_sheet.png into out_dir, returns the metrics."""
    from .data import RemovalDataset
    from .text import shared_encoder

    out_dir = Path(out_dir)
    weights_path = weights_file(checkpoint)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, cfg = load_model(weights_path, device=device)
    reasons = unavailable_reasons(options.lpips_weights, options.lpips_backbone, options.fid_weights)
    scorers = Scorers(LPIPS(options.lpips_weights, options.lpips_backbone) if "lpips" not in reasons else None,
                      InceptionFeatures(options.fid_weights) if "fid" not in reasons else None)
    dataset = RemovalDataset(data_dir, options.split, cfg.image_size, augment=False,
                             click_fraction=1.0 if options.clicks else 0.0)
    if options.clicks:
        dataset = torch.utils.data.Subset(dataset, [i for i, ref in enumerate(dataset.refs) if not ref["negative"]])
    if options.limit:
        dataset = torch.utils.data.Subset(dataset, range(min(options.limit, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"{data_dir}: split {options.split!r} has no samples")
    encoder = shared_encoder(cfg, str(device))

    records, sheet = [], []
    torch.manual_seed(options.seed)  # the clicks' draw (the loader runs in this process)
    loader = torch.utils.data.DataLoader(dataset, batch_size=options.batch_size)
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"eval {options.split}", unit="batch"):
            for sample in batch_samples(model, encoder, batch, options.rule, cfg.removal_margin, device,
                                        options.given_masks):
                records.append(score(sample, scorers))
                if len(sheet) < options.sheet_rows:
                    sheet.append(sheet_row(sample))

    positives = [r for r in records if not r.negative]
    negatives = [r for r in records if r.negative]
    metrics = {
        "checkpoint": str(weights_path),
        "config": cfg.name,
        "data": str(data_dir),
        "split": options.split,
        "prompt": f"click (seed {options.seed})" if options.clicks else "text",
        "samples": len(dataset),
        "positives": len(positives),
        "negatives": len(negatives),
        "found_rule": dataclasses.asdict(options.rule),
        "removal": removal_metrics(records),
        "unavailable": reasons,
        "segmentation": segmentation_metrics([r.inter_union for r in positives], [r.found for r in positives],
                                             [r.found for r in negatives]),
        **({"edge_clicks": edge_click_metrics(positives)} if options.clicks else {}),
        "cost": model_cost(model, encoder.encode("remove the object"), cfg, device),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    contact_sheet(sheet, out_dir / "contact_sheet.png")
    return metrics


def format_table(metrics: dict) -> str:
    lines = [f"{metrics['checkpoint']} on {metrics['data']} [{metrics['split']}]: {metrics['samples']} samples "
             f"({metrics['positives']} positive, {metrics['negatives']} negative), named by {metrics['prompt']}", ""]
    cols = ("psnr", "ssim", "psnr_mask", "ssim_mask", "lpips", "fid")
    lines.append(f"{'method':<26}" + "".join(f"{c:>11}" for c in cols))
    for method, row in metrics["removal"].items():
        lines.append(f"{method:<26.26}" + "".join(f"{'n/a' if row[c] is None else f'{row[c]:.4f}':>11}" for c in cols))
    for name, why in metrics["unavailable"].items():
        lines.append(f"{name}: unavailable: {why}")
    lines.append("")
    for name, value in metrics["segmentation"].items():
        lines.append(f"{name:<22}{'n/a' if value is None else f'{value:.4f}'}")
    if "edge_clicks" in metrics:
        edge = metrics["edge_clicks"]
        shown = {k: "n/a" if v is None else f"{v:.4f}" for k, v in edge.items() if k.startswith("mean")}
        lines.append(f"clicks within {edge['within_px']} px of the edge: {edge['edge_clicks']}, mean IoU "
                     f"{shown['mean_iou_edge']} (the rest: {shown['mean_iou_inner']})")
    cost = metrics["cost"]
    lines.append("")
    lines.append(f"params {cost['params_m']:.2f} M   GFLOPs {cost['gflops']:.2f}   FPS {cost['fps']:.1f} "
                 f"(batch 1, {cost['device']}, {cost['torch_threads']} threads)")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="model.safetensors or a model directory holding it")
    parser.add_argument("--data", required=True, help="removal dataset folder")
    parser.add_argument("--split", default="test", help="split to evaluate (default test)")
    parser.add_argument("--out", required=True, help="folder for metrics.json and contact_sheet.png")
    parser.add_argument("--limit", type=int, help="evaluate only the first N samples")
    parser.add_argument("--batch-size", type=int, default=8)
    add_rule_arguments(parser)  # the runtime's found / not-found rule
    parser.add_argument("--lpips-weights",
                        help="local LPIPS v0.1 linear-layer weights for AlexNet (e.g. lpips' alex.pth)")
    parser.add_argument("--lpips-backbone", help="local torchvision AlexNet weights (.pth or .safetensors)")
    parser.add_argument("--fid-weights", help="local torchvision Inception-v3 weights (.pth or .safetensors)")
    parser.add_argument("--given-masks", action="store_true",
                        help=f"also score {GIVEN_MASK_METHOD!r}: the fill graph under each ground-truth mask, as the "
                             "node erases a mask on ~/erase_mask")
    parser.add_argument("--clicks", action="store_true",
                        help="name each positive by a click drawn uniformly inside its mask (the point prompt) "
                             "instead of its expression; negatives are left out")
    parser.add_argument("--seed", type=int, default=0, help="seed of the clicks' draw (default 0)")


def main(args: argparse.Namespace) -> int:
    try:
        options = EvalConfig(split=args.split, limit=args.limit, batch_size=args.batch_size, rule=rule_from_args(args),
                             lpips_weights=args.lpips_weights, lpips_backbone=args.lpips_backbone,
                             fid_weights=args.fid_weights, given_masks=args.given_masks, clicks=args.clicks,
                             seed=args.seed)
        metrics = evaluate(args.checkpoint, args.data, args.out, options)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"sahm eval: error: {e}")
        return 2
    print(format_table(metrics))
    print(f"\nwrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'contact_sheet.png'}")
    return 0
