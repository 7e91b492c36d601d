"""The whole SAHM network: forward/backward of nano on CPU, determinism, masking invariants, and the bundled
nano computing what it shipped with."""

from __future__ import annotations

import json
import math
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from sahm_core.checkpoint import CONFIG_KEY, load_model, read_config, read_metadata
from sahm_core.config import ModelConfig, model_config
from sahm_core.model import SAHM, SAHMOutput, build_model
from sahm_core.model.backbone import stage_sizes
from sahm_core.model.presence import INITIAL_LOGIT
from sahm_core.model.pull_push import background_prior
from sahm_core.model.sahm import blend
from sahm_core.runtime import found_decision
from sahm_core.text_features import TextFeatures

torch.set_num_threads(2)
NANO = model_config("nano")
NANO_WEIGHTS = Path(__file__).parents[2] / "models" / "nano" / "model.safetensors"
REFERENCE = Path(__file__).parent / "data" / "nano_reference.safetensors"


def make_text(batch: int, cfg=NANO, seed: int = 0) -> TextFeatures:
    """A batch of commands: 7 real tokens, one identity word, two attribute words, the rest padding."""
    g = torch.Generator().manual_seed(seed)
    valid, attribute, identity = (torch.zeros(batch, cfg.text_len) for _ in range(3))
    valid[:, :7] = 1.0
    attribute[:, 2:4] = 1.0
    identity[:, 4] = 1.0
    return TextFeatures(torch.randn(batch, cfg.text_len, cfg.text_dim, generator=g), valid, attribute, identity)


def make_image(batch: int, cfg=NANO, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(seed))


def nudge_off_zero(model: torch.nn.Module) -> None:
    """Every weight moved a little, so zero-initialised ones (language gates, deformable offsets, RGB heads,
    Swin V2 res-post-norms) no longer vanish from the output or the gradient."""
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))


@pytest.fixture(scope="module")
def trained_step():
    """One forward + backward of nano at 256x256, batch 2, with every zero-initialised weight nudged off zero
    (language gates, deformable offsets, RGB heads, Swin V2 res-post-norms) so that every parameter must get
    a non-zero gradient."""
    torch.manual_seed(0)
    model = build_model(NANO).train()
    nudge_off_zero(model)
    clicks = torch.tensor([[0.3, 0.4, 1.0], [0.6, 0.2, 1.0]])  # so the point prompt gets its gradient too
    out = model(make_image(2), make_text(2), clicks)
    # every scale of both outputs feeds the loss, as deep supervision does
    loss = sum(m.mean() for m in out.scale_masks) + sum((i - 0.5).square().mean() for i in out.scale_images)
    loss.backward()
    return model, out


def test_output_shapes_per_scale(trained_step):
    _, out = trained_step
    assert isinstance(out, SAHMOutput)
    sides = [*reversed(stage_sizes(NANO)), NANO.image_size]  # 4, 8, 16, 32, 256
    assert [tuple(m.shape) for m in out.scale_masks] == [(2, 1, s, s) for s in sides]
    assert [tuple(i.shape) for i in out.scale_images] == [(2, 3, s, s) for s in sides]
    assert out.image is out.scale_images[-1] and out.mask_logits is out.scale_masks[-1]
    assert out.image.min() >= 0.0 and out.image.max() <= 1.0


def test_every_trainable_parameter_gets_a_finite_nonzero_gradient(trained_step):
    model, _ = trained_step
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient: {missing}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient: {bad}"
    dead = [n for n, p in model.named_parameters() if p.grad.abs().max() == 0]
    assert not dead, f"zero gradient (not connected to the outputs): {dead}"


def test_same_seed_same_result():
    image, text = make_image(1), make_text(1)
    models, outputs = [], []
    for _ in range(2):
        torch.manual_seed(123)
        models.append(build_model(NANO).eval())
        with torch.no_grad():
            outputs.append(models[-1](image, text))
    first, second = (dict(m.state_dict()) for m in models)
    assert all(torch.equal(first[k], second[k]) for k in first)
    for a, b in zip(outputs[0].scale_masks + outputs[0].scale_images, outputs[1].scale_masks + outputs[1].scale_images):
        assert torch.equal(a, b)
    torch.manual_seed(124)
    other = build_model(NANO).state_dict()
    assert not all(torch.equal(first[k], other[k]) for k in first)


@pytest.fixture(scope="module")
def eval_model() -> SAHM:
    torch.manual_seed(1)
    return build_model(NANO).eval()


def test_frames_of_a_batch_do_not_mix(eval_model):
    """Reshapes between (B,N,C) and maps must keep samples apart: a frame's result does not depend on its batch mates.

    The batch also carries the same frame with its padding tokens replaced by noise: padding must change nothing.
    """
    image, text = make_image(1).expand(3, -1, -1, -1), make_text(3)
    tokens = text.tokens.clone()
    tokens[1] = tokens[0]
    tokens[1, 7:] = 100.0 * torch.randn_like(tokens[1, 7:])  # everything past the 7 valid tokens
    tokens[2] = 5.0  # a very different command for a batch mate
    text = text._replace(tokens=tokens)
    with torch.no_grad():
        together = eval_model(image, text)
        alone = eval_model(image[:1], TextFeatures(*(t[:1] for t in text)))
    for got in (together.mask_logits[:1], together.mask_logits[1:2]):
        torch.testing.assert_close(got, alone.mask_logits, rtol=1e-4, atol=1e-4)
    for got in (together.image[:1], together.image[1:2]):
        torch.testing.assert_close(got, alone.image, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(together.mask_logits[2], alone.mask_logits[0], atol=1e-4)  # the text does matter


def test_empty_word_sets_never_give_nan(eval_model):
    """One batch: no attribute word, no identity word, neither, and no valid token at all."""
    text = make_text(4)
    attribute, identity, valid = text.attribute.clone(), text.identity.clone(), text.valid.clone()
    attribute[0] = 0.0
    identity[1] = 0.0
    attribute[2], identity[2] = 0.0, 0.0
    valid[3], attribute[3], identity[3] = 0.0, 0.0, 0.0
    with torch.no_grad():
        out = eval_model(make_image(4), TextFeatures(text.tokens, valid, attribute, identity))
    assert all(torch.isfinite(t).all() for t in out.scale_masks + out.scale_images)


def test_blend_keeps_the_frame_where_the_mask_is_off_and_the_fill_where_it_is_on():
    image = make_image(1)
    frame = F.avg_pool2d(image, 4)
    rgb_logits = torch.randn(1, 3, 64, 64)
    background = blend(image, torch.zeros(1, 1, 64, 64), rgb_logits)
    torch.testing.assert_close(background, frame)
    hole = torch.zeros(1, 1, 64, 64)
    hole[..., 20:40, 10:30] = 1.0
    foreground = blend(image, hole, rgb_logits, sweeps=3)
    prior = background_prior(frame, hole, 3)
    fill = torch.sigmoid(torch.log(prior / (1 - prior)) + rgb_logits)
    torch.testing.assert_close(foreground, frame * (1 - hole) + fill * hole)


def test_blend_margin_fills_exactly_the_pixels_within_margin_of_the_mask():
    """A single-pixel hole with margin 2 erases the 5x5 square around it (hand-worked); the rest stays the frame's."""
    image = make_image(1)
    frame = F.avg_pool2d(image, 4)  # (1,3,64,64)
    rgb_logits = torch.randn(1, 3, 64, 64)
    hole = torch.zeros(1, 1, 64, 64)
    hole[..., 30, 0] = 1.0  # at the border: the square is clipped to 5x3
    out = blend(image, hole, rgb_logits, margin=2, sweeps=3)
    grown = torch.zeros_like(hole)
    grown[..., 28:33, 0:3] = 1.0
    prior = background_prior(frame, grown, 3)
    fill = torch.sigmoid(torch.log(prior / (1 - prior)) + rgb_logits)
    torch.testing.assert_close(out, frame * (1 - grown) + fill * grown)


def test_only_the_full_resolution_scale_gets_the_removal_margin():
    model = build_model(NANO)
    sides = [NANO.image_size // (NANO.patch_size * 2**i) for i in reversed(range(len(NANO.depths)))] + [NANO.image_size]
    assert [model.margin_at(side) for side in sides] == [0, 0, 0, 0, NANO.removal_margin]


def test_an_untrained_model_fills_the_hole_with_the_pull_push_prior():
    """The RGB heads start at zero: the fill is the prior, sigmoid(logit(prior) + 0), under the grown mask."""
    torch.manual_seed(0)
    model = build_model(NANO).eval()
    image = make_image(1)
    margin = NANO.removal_margin
    with torch.no_grad():
        out = model(image, make_text(1))
        mask = F.max_pool2d(torch.sigmoid(out.mask_logits), 2 * margin + 1, stride=1, padding=margin)
        expected = image * (1 - mask) + background_prior(image, mask, NANO.prior_sweeps) * mask
    torch.testing.assert_close(out.image, expected, rtol=1e-4, atol=1e-4)


def test_the_per_frame_path_is_forward_at_full_resolution_bit_for_bit():
    """per_frame() (what the ONNX graph and the runtime compute) skips the coarse scales' blends only."""
    torch.manual_seed(0)
    model = build_model(NANO).eval()
    nudge_off_zero(model)  # RGB heads and gates off zero, so the fill is not just the prior
    with torch.no_grad():
        image, text = make_image(2), make_text(2)
        out = model(image, text)
        cleaned, mask_logits = model.per_frame(image, text)
    assert torch.equal(cleaned, out.image) and torch.equal(mask_logits, out.mask_logits)


def test_presence_starts_almost_neutral_and_a_negative_presence_empties_every_scale():
    torch.manual_seed(0)
    model = build_model(NANO).eval()
    image, text = make_image(1), make_text(1)
    with torch.no_grad():
        before = model(image, text)
        assert before.presence_logit.item() == INITIAL_LOGIT  # untrained: P(present) = sigmoid(4), shift -0.018
        model.presence.proj.bias.fill_(-60.0)  # "the object is not here": log sigmoid(-60) = -60
        after = model(image, text)
    for old, new in zip(before.scale_masks, after.scale_masks):
        torch.testing.assert_close(new, old - 60.0 + math.log1p(math.exp(-INITIAL_LOGIT)), rtol=1e-5, atol=1e-4)
    mask = torch.sigmoid(after.mask_logits)[0, 0].numpy()
    assert mask.max() < 1e-6
    assert found_decision(mask)[0] is False
    torch.testing.assert_close(after.image, image, rtol=1e-5, atol=1e-5)  # nothing erased


def test_bad_configs_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="window_size 5"):
        build_model(replace(NANO, window_size=5))
    with pytest.raises(ValueError, match="fill_patch 3"):
        build_model(replace(NANO, fill_patch=3))
    with pytest.raises(ValueError, match="image_size 250"):
        build_model(replace(NANO, image_size=250))
    with pytest.raises(ValueError, match="window_size"):
        build_model(replace(NANO, image_size=32))  # stage sides 4, 2, 1, 0
    with pytest.raises(ValueError, match="num_heads"):
        build_model(replace(NANO, num_heads=(3, 2, 4, 8)))
    with pytest.raises(ValueError, match="merge_kernel 2"):
        build_model(replace(NANO, merge_kernel=2))


def test_the_bundled_nano_config_is_the_preset_and_new_fields_default_to_the_old_behaviour(tmp_path):
    """models/nano's config was saved before fill_fixed_grid and merge_kernel existed: it must still load, and as
    the very `nano` preset, so a ModelConfig field added later cannot change what the shipped weights compute."""
    stored = json.loads(read_metadata(NANO_WEIGHTS)[CONFIG_KEY])
    assert "fill_fixed_grid" not in stored and "merge_kernel" not in stored  # an old checkpoint, as shipped
    assert read_config(NANO_WEIGHTS) == NANO
    # every field the file lacks is at its default, which is what the code did before the field existed
    defaults = {f.name: f.default for f in fields(ModelConfig)}
    assert all(getattr(NANO, name) == defaults[name] for name in set(defaults) - set(stored))


def test_the_bundled_nano_computes_what_it_computed_when_it_shipped():
    """models/nano on a fixed scene and command against outputs saved from the code at commit 8f8cf9c (before
    issue 18's decoder options), see the file's metadata. Same machine and threads give bit-identical results
    (checked when the file was made); the tolerance only allows another CPU's summation order."""
    ref = load_file(str(REFERENCE))
    model, cfg = load_model(NANO_WEIGHTS, expect=NANO)
    text = TextFeatures(ref["tokens"], ref["valid"], ref["attribute"], ref["identity"])
    image = ref["image_u8"].float() / 255
    with torch.no_grad():
        out = model(image, text)
        cleaned, mask_logits = model.per_frame(image, text)
    assert (ref["mask_logits_stride2"] > 0).float().mean() > 0.02  # the scene's hole: the fill path is exercised
    close = {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(cleaned[..., ::2, ::2], ref["cleaned_stride2"], **close)
    torch.testing.assert_close(mask_logits[..., ::2, ::2], ref["mask_logits_stride2"], **close)
    for i, (mask, rgb) in enumerate(zip(out.scale_masks[:-1], out.scale_images[:-1])):
        torch.testing.assert_close(mask, ref[f"scale_mask_{i}"], **close)
        torch.testing.assert_close(rgb, ref[f"scale_image_{i}"], **close)


def test_fill_with_an_empty_hole_is_the_frame_bit_for_bit():
    torch.manual_seed(0)
    model = build_model(NANO).eval()
    nudge_off_zero(model)
    image = make_image(2)
    with torch.no_grad():
        out = model.fill(image, make_text(2), torch.zeros(2, 1, NANO.image_size, NANO.image_size))
    assert torch.equal(out, image)


def test_an_untrained_fill_is_the_prior_under_the_given_hole_grown_by_the_margin():
    torch.manual_seed(0)
    model = build_model(NANO).eval()
    image = make_image(1)
    hole = torch.zeros(1, 1, NANO.image_size, NANO.image_size)
    hole[..., 40:90, 100:180] = 1.0
    margin = NANO.removal_margin
    with torch.no_grad():
        out = model.fill(image, make_text(1), hole)
    grown = torch.zeros_like(hole)
    grown[..., 40 - margin:90 + margin, 100 - margin:180 + margin] = 1.0  # by hand: a grown rectangle
    expected = image * (1 - grown) + background_prior(image, grown, NANO.prior_sweeps) * grown
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_every_decoder_scale_fills_the_given_hole_instead_of_its_own_mask():
    """The hole each attention filling gets: its own mask's (probability > 0.5) without a given hole; with one,
    the given hole reduced to the scale by torch's adaptive max pool (a patch is in the hole when any pixel is)."""
    torch.manual_seed(0)
    model = build_model(NANO).eval()
    nudge_off_zero(model)
    seen, logits = [], []
    for mapping in model.decoder.mappings:
        mapping.fill.register_forward_hook(lambda module, args, out: seen.append(args[2].float()))
        mapping.mask_head.register_forward_hook(lambda module, args, out: logits.append(out))
    image, text = make_image(1), make_text(1)
    hole = torch.zeros(1, 1, NANO.image_size, NANO.image_size)
    hole[..., 37:101, 150:211] = 1.0
    with torch.no_grad():
        model.fill(image, text, hole)
        given = seen[:]
        seen.clear(), logits.clear()
        model(image, text)
    assert len(given) == len(seen) == len(logits) == len(model.decoder.mappings)
    for own, filled, mask_logits in zip(seen, given, logits):
        torch.testing.assert_close(filled, F.adaptive_max_pool2d(hole, filled.shape[-2:]))
        assert torch.equal(own, (mask_logits > 0).float())
