"""Reduced precision: bf16 autocast (training on GPUs) and fp16 (TensorRT engines), run on the CPU.

bf16: torch's CPU autocast runs the same op policy for bf16 as CUDA's does for the ops that matter here
(convolutions in bf16, grid_sample promoted to its widest input).
fp16: torch runs the whole per-frame graph in fp16 on the CPU, but keeps fp16 subnormals and accumulates
reductions in fp32, while a GPU engine may flush subnormals to zero and sum squares in fp16. `GpuFp16` puts
those two behaviours back: every fp16 op reads and writes subnormals as zero (constants included), and
ReduceL2 (linalg_vector_norm) rounds its sum of squares to fp16 before the square root.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from sahm_core.checkpoint import load_model
from sahm_core.config import model_config
from sahm_core.export.onnx_export import PerFrameGraph, example_inputs
from sahm_core.model.alignment import DeformableConv2d
from sahm_core.model.attention import masked_softmax
from sahm_core.model.backbone import stage_sizes
from sahm_core.model.numerics import EPS, l2_normalize
from sahm_core.model.point import no_point
from sahm_core.model.pull_push import background_prior
from sahm_core.text import shared_encoder

torch.set_num_threads(2)
BUNDLED_NANO = Path(__file__).resolve().parents[2] / "models" / "nano" / "model.safetensors"
FP16_TINY = torch.finfo(torch.float16).tiny  # smallest normal fp16 number, 2**-14
NORM_OPS = {torch.ops.aten.linalg_vector_norm.default, torch.ops.aten.norm.ScalarOpt_dim}


def flush(value):
    """Subnormal fp16 tensors and tiny Python constants read as zero, as a flush-to-zero GPU reads them."""
    if isinstance(value, torch.Tensor) and value.dtype == torch.float16:
        return value.masked_fill(value.abs() < FP16_TINY, 0.0)
    if isinstance(value, float) and 0.0 < abs(value) < FP16_TINY:
        return 0.0
    return value


class GpuFp16(TorchDispatchMode):
    """fp16 arithmetic as a flush-to-zero GPU engine does it (module docstring), for fp16 ops only."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if not any(t.dtype == torch.float16 for t in tensors):
            return func(*args, **kwargs)
        if func._schema.is_mutable or func.is_view:  # in-place / aliasing ops: values were flushed on the way in
            return func(*args, **kwargs)
        args, kwargs = tree_map(flush, (args, kwargs))
        if func in NORM_OPS:
            x, dims = args[0], args[2] if len(args) > 2 else kwargs.get("dim")
            keepdim = args[3] if len(args) > 3 else kwargs.get("keepdim", False)
            squares = x.float().square().sum(dims, keepdim=keepdim).half()  # 65504 and up: inf, as in fp16
            return flush(squares).float().sqrt().half()
        return tree_map(flush, func(*args, **kwargs))


def test_gpu_fp16_mode_flushes_what_a_gpu_flushes():
    """The emulation itself: a subnormal constant floor is zero, products below 2**-14 are zero, sums of squares
    overflow."""
    zero = torch.zeros(3, dtype=torch.float16)
    with GpuFp16():
        assert torch.isnan(zero / zero.clamp_min(1e-6)).all()  # 1e-6 is an fp16 subnormal: flushed
        assert torch.equal(zero / zero.clamp_min(EPS), zero)
        small = torch.full((4,), 1e-3, dtype=torch.float16)
        assert torch.equal(small * small, torch.zeros(4, dtype=torch.float16))  # 1e-6: subnormal result
        big = torch.full((768,), 10.0, dtype=torch.float16)
        assert torch.linalg.vector_norm(big).isinf()  # 768 * 100 > 65504
    assert torch.linalg.vector_norm(big) == pytest.approx(277.1, rel=1e-3)  # plain CPU fp16 accumulates in fp32


def ramp_map(side: int) -> torch.Tensor:
    """(1,1,side,side) with x = col % 4 + 4 * (row % 4): small integers (exact in bf16) that change at every pixel
    by 1 along a row and by 4 along a column, so a sample off by d pixels is off by >= d in value."""
    index = torch.arange(side)
    return ((index % 4).view(1, -1) + 4 * (index % 4).view(-1, 1)).float().view(1, 1, side, side)


def test_deformable_alignment_under_bf16_autocast_reads_the_same_pixels_as_fp32():
    """The tiny config's finest decoder map is 120 px: bf16 positions past column 64 are rounded to 0.5 px.

    Reference: the plain 3x3 convolution (zero offsets). Each one-hot kernel copies one tap's pixel, and the
    values are exact in bf16, so what remains is the fp32 grid's own rounding (~1e-5 px), not bf16's.
    """
    side = stage_sizes(model_config("tiny"))[0]
    assert side > 64
    x = ramp_map(side)
    module = DeformableConv2d(1, 1, 3)
    worst = 0.0
    for tap in range(9):
        with torch.no_grad():
            module.weight.zero_()
            module.weight.view(-1)[tap] = 1.0
            module.bias.zero_()
            expected = F.conv2d(x, module.weight, module.bias, padding=1)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                offsets = torch.zeros(1, 18, side, side, dtype=torch.bfloat16)  # what a bf16 offset conv emits
                got = module(x, offsets)
        assert got.dtype == torch.bfloat16
        worst = max(worst, (got.float() - expected).abs().max().item())
    assert worst < 1e-3, f"bf16 autocast sampled {worst} away from the pixel values (d px off moves a value >= d)"


def test_deformable_alignment_under_bf16_autocast_matches_fp32_with_learnt_offsets():
    """Random weights and fractional offsets on a 120 px map: only the bf16 rounding of the 1x1 tap mix remains."""
    side = stage_sizes(model_config("tiny"))[0]
    torch.manual_seed(0)
    module = DeformableConv2d(8, 8, 3)
    x = torch.rand(1, 8, side, side)
    offsets = 3 * torch.randn(1, 18, side, side)
    with torch.no_grad():
        expected = module(x, offsets)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = module(x, offsets.bfloat16())
    # bf16 keeps 8 significant bits: inputs, weights and output each round by <= 2**-9 relative
    scale = expected.abs().max().item()
    assert (got.float() - expected).abs().max().item() < 0.02 * scale


def test_l2_normalize_is_f_normalize_bit_for_bit_in_fp32():
    """Reference: F.normalize(x, eps=EPS), with huge, tiny and zero vectors among ordinary ones."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, 96, generator=g)
    x[0] *= 1e4
    x[1] *= 1e-3
    x[2] *= 1e-7  # norm below EPS: both scale by 1 / EPS
    x[3, 0] = 0.0  # a zero vector
    assert torch.equal(l2_normalize(x), F.normalize(x, dim=-1, eps=EPS))
    assert torch.equal(l2_normalize(x.transpose(1, 2), dim=1), F.normalize(x.transpose(1, 2), dim=1, eps=EPS))


def test_l2_normalize_in_gpu_fp16_survives_sums_of_squares_beyond_fp16():
    """768 channels (the tiny config's last stage) with an RMS of 30: the sum of squares is 691,200 > 65504."""
    g = torch.Generator().manual_seed(2)
    x = 30 * torch.randn(4, 768, generator=g)
    x[3] = 0.0
    expected = F.normalize(x, dim=-1, eps=EPS)
    with GpuFp16():
        got = l2_normalize(x.half())
        naive = F.normalize(x.half(), dim=-1, eps=EPS)
    assert torch.equal(naive[:3], torch.zeros_like(naive[:3]))  # what the unscaled norm does: x / inf
    torch.testing.assert_close(got.float(), expected, rtol=0, atol=2e-3)
    assert torch.equal(got[3], torch.zeros_like(got[3]))


def test_denominator_floors_are_normal_fp16_numbers():
    assert torch.tensor(EPS, dtype=torch.float16).item() >= FP16_TINY


def test_masked_softmax_of_no_kept_token_is_zero_in_gpu_fp16():
    """A command without an attribute word: the attribute head's softmax keeps no token. Reference: zeros."""
    scores = torch.randn(1, 5, 7).half()
    keep = torch.zeros(1, 1, 7, dtype=torch.float16)
    with GpuFp16():
        got = masked_softmax(scores, keep)
    assert torch.equal(got, torch.zeros_like(got))


def test_background_prior_with_nothing_visible_is_finite_in_gpu_fp16():
    """The whole frame under the mask: the mean visible colour is 0 / 0 without a normal-fp16 floor."""
    frame = torch.rand(1, 3, 32, 32).half()
    with GpuFp16():
        prior = background_prior(frame, torch.ones(1, 1, 32, 32, dtype=torch.float16), sweeps=2)
    assert torch.isfinite(prior).all()


@pytest.fixture(scope="module")
def bundled_nano():
    model, cfg = load_model(BUNDLED_NANO)  # the loader that gives weights from before the point prompt its zeros
    return model, cfg


def test_per_frame_graph_in_gpu_fp16_is_finite_for_a_command_without_attribute_words(bundled_nano):
    """The bundled nano's per-frame graph in fp16 (model.half() on the CPU, GpuFp16), "remove the cup".

    Reference: the same graph in fp32; fp16 must stay finite and close to it."""
    model, cfg = bundled_nano
    text = shared_encoder(cfg, "cpu").encode("remove the cup")
    assert text.attribute.sum() == 0 and text.identity.sum() > 0  # the case under test: no attribute word
    image = example_inputs(cfg)[0]
    with torch.no_grad():
        cleaned, mask = PerFrameGraph(model)(image, *text, no_point(1))
        half = PerFrameGraph(model.half()).eval()
        with GpuFp16():
            cleaned16, mask16 = half(image.half(), *(t.half() for t in text), no_point(1).half())
    model.float()
    assert torch.isfinite(cleaned16).all() and torch.isfinite(mask16).all()
    assert (cleaned16.float() - cleaned).abs().max() < 0.05
    assert (mask16.float() - mask).abs().max() < 0.05
