"""`sahm info`: FLOP counts against hand-worked ones, the table's sum-of-parts invariant, and the cost budget."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
import torch
from torch import nn

from sahm_core import cli
from sahm_core.config import model_config
from sahm_core.info import ALBERT_BASE_V2, call_gflops, encoder_parameters
from sahm_core.model import build_model
from sahm_core.model.filling import FillingMapping

PARTS = ["backbone", "language fusion", "point prompt", "heads", "decoder/segmentation", "decoder/filling"]
DECODER = ["heads", "decoder/segmentation", "decoder/filling"]


def test_a_convolution_and_a_linear_layer_count_two_flops_per_multiply_add():
    conv = nn.Conv2d(5, 7, 3, padding=2, dilation=2, bias=False)
    # every output pixel of every output channel: 5 input channels x 3 x 3 taps
    assert call_gflops(conv, torch.zeros(2, 5, 9, 11)) * 1e9 == pytest.approx(2 * (2 * 7 * 9 * 11) * (5 * 3 * 3))
    linear = nn.Linear(6, 4)
    assert call_gflops(linear, torch.zeros(3, 10, 6)) * 1e9 == pytest.approx(2 * (3 * 10 * 4) * 6)


def test_tiny_filling_at_stride_4_costs_its_hand_count():
    """tiny's finest FillingMapping (120 x 120, 48 channels, fixed 15 x 15 grid of 8-pixel patches, 1x1 merge)."""
    cfg = model_config("tiny")
    dim, side, patch = cfg.decoder_dim, 120, 8
    with torch.device("meta"):
        fill = FillingMapping(cfg, patch).eval()
        inputs = (torch.zeros(1, dim, side, side), torch.zeros(1, dim, side // 2, side // 2),
                  torch.zeros(1, 1, side, side))
    pixels, patches = side * side, (side // patch) ** 2
    merge = pixels * dim * 2 * dim  # 1x1 over concat(S_i, up(I_{i+1}))
    hdc = len(cfg.hdc_rates) * pixels * dim * dim * 9
    similarity = patches * patches * dim * (patch // 2) ** 2  # eq. 8 on I_{i+1}'s (patch/2)^2 patches
    transfer = patches * patches * dim * patch**2  # eq. 10 with the finer map's patch^2 patches
    assert call_gflops(fill, *inputs) * 1e9 == pytest.approx(2 * (merge + hdc + similarity + transfer))


def test_albert_base_v2_has_its_published_size():
    """The paper's text encoder, built from its published shape: ~12 M parameters (ALBERT paper, table 1)."""
    from transformers import AlbertConfig

    assert 11_500_000 <= encoder_parameters(AlbertConfig(**ALBERT_BASE_V2)) <= 12_000_000


def parse_info(text: str) -> dict[str, dict[str, tuple[int, float, float]]]:
    """config name -> part -> (parameters, GFLOPs, GMACs)"""
    tables, name = {}, None
    for line in text.splitlines():
        if line.startswith("config "):
            name = line.split()[1].rstrip(":")
            tables[name] = {}
        elif match := re.match(r"^(\S.*?)\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)$", line):
            tables[name][match[1]] = (int(match[2].replace(",", "")), float(match[3]), float(match[4]))
    return tables


@pytest.fixture(scope="module")
def info_text() -> str:
    """`sahm info --config nano tiny`, run once for the module (building tiny on the meta device takes seconds)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["info", "--config", "nano", "tiny"]) == 0
    return out.getvalue()


def test_sahm_info_tables_add_up(info_text):
    tables = parse_info(info_text)
    assert set(tables) == {"nano", "tiny"}
    for name, table in tables.items():
        assert set(PARTS) <= set(table), name
        assert sum(table[p][0] for p in PARTS) == table["generator total"][0]
        assert table["discriminator"][0] > 0
        # every part does work; the point prompt's (a few 2 -> C projections, ~1e-4 GFLOPs) rounds to 0.000
        assert all(table[p][1] > 0 for p in PARTS if p != "point prompt"), name
        # the parts are disjoint; the total also counts the normalisation and blending outside every part
        assert sum(table[p][1] for p in PARTS) <= table["generator total"][1] + 1e-3
        assert all(gmacs == pytest.approx(gflops / 2, abs=1e-3) for _, gflops, gmacs in table.values())
    # the runtime's per-frame path does a subset of forward's work (it skips the coarse scales' blends)
    per_frame = [float(g) for g in re.findall(r"per-frame path \(SAHM\.per_frame.*\): ([\d.]+) GFLOPs", info_text)]
    assert len(per_frame) == 2
    assert all(0 < g <= tables[name]["generator total"][1] for g, name in zip(per_frame, ("nano", "tiny")))
    # the table counts what the network really has
    real = sum(p.numel() for p in build_model(model_config("nano")).parameters() if p.requires_grad)
    assert tables["nano"]["generator total"][0] == real


def test_nano_and_tiny_are_within_their_budgets(info_text):
    tables = parse_info(info_text)
    assert tables["nano"]["generator total"][0] <= 5_000_000
    tiny = tables["tiny"]
    # issue 18: tiny at 480 x 480 at most 60 GFLOPs, the decoder with its heads at most 15 % of it
    assert tiny["generator total"][1] <= 60.0
    assert sum(tiny[p][1] for p in DECODER) <= 0.15 * tiny["generator total"][1]
    # the paper's 42 M include ALBERT base v2 (11.7 M): tiny's own parameters are of the paper's order
    assert 25_000_000 <= tiny["generator total"][0] <= 35_000_000
    share = re.findall(r"decoder with its heads: ([\d.]+) GFLOPs, ([\d.]+) %", info_text)
    assert [float(g) for g, _ in share] == pytest.approx([sum(t[p][1] for p in DECODER) for t in tables.values()],
                                                         abs=2e-3)


def test_sahm_info_reports_the_paper_geometry_and_the_text_encoders(info_text):
    tiny_text = info_text[info_text.index("config tiny"):]
    nano_text = info_text[:info_text.index("config tiny")]
    at_224 = re.search(r"at 224x224, window 7 .*: generator ([\d.]+) GFLOPs = ([\d.]+) GMACs", tiny_text)
    assert at_224 and float(at_224[2]) == pytest.approx(float(at_224[1]) / 2, abs=1e-3)
    # (224/480)^2 of the pixels: Swin's windowed attention and the convolutions scale with the pixel count
    assert float(at_224[1]) < 0.3 * parse_info(info_text)["tiny"]["generator total"][1]
    assert "at 224x224, window 7: not buildable" in nano_text  # patch 8: 224 is not a multiple of 64
    for name, text in (("tiny", tiny_text), ("nano", nano_text)):
        own = parse_info(text)[name]["generator total"][0]
        rows = re.findall(r"^  (minilm|ALBERT base v2) .*?([\d,]+) -> ([\d,]+)$", text, re.M)
        assert [encoder for encoder, _, _ in rows] == ["minilm", "ALBERT base v2"]
        for _, encoder, total in rows:  # with the encoder = without it + the encoder
            assert int(total.replace(",", "")) == own + int(encoder.replace(",", ""))
    assert "42 M parameters" in info_text and "10.42 G" in info_text
