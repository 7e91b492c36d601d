"""Syntax-aware visual attention (paper eq. 1-5) against the equations worked out with explicit loops in numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sahm_core.model.attention import (
    AttributeGuidedHead,
    IdentityGuidedHead,
    SentenceGuidedHead,
    SyntaxAwareAttention,
    masked_softmax,
)
from sahm_core.text_features import TextFeatures

torch.set_num_threads(2)

VIS, TXT, N, T = 3, 4, 5, 6  # visual channels, text channels, pixels, tokens


def linear(layer: torch.nn.Linear, x: np.ndarray) -> np.ndarray:
    """W x + b for one vector, by hand."""
    w = layer.weight.detach().double().numpy()
    b = np.zeros(w.shape[0]) if layer.bias is None else layer.bias.detach().double().numpy()
    return np.array([sum(w[o, i] * x[i] for i in range(len(x))) + b[o] for o in range(w.shape[0])])


def softmax_over(scores: list[float], keep: list[float]) -> list[float]:
    """Softmax restricted to kept entries; nothing kept -> all zeros."""
    kept = [s for s, k in zip(scores, keep) if k]
    if not kept:
        return [0.0] * len(scores)
    top = max(kept)
    exps = [math.exp(s - top) if k else 0.0 for s, k in zip(scores, keep)]
    return [e / sum(exps) for e in exps]


def reference_sentence(head: SentenceGuidedHead, visual, tokens, keep) -> np.ndarray:
    """head1[n] = V[n] * sum_t softmax_t(cos(Wq V[n], Wk L[t]) / gamma) Wv L[t] (eq. 1-4)."""
    gamma = head.gamma.item()
    out = np.zeros((N, VIS))
    keys = [linear(head.key, tokens[t]) for t in range(T)]
    values = [linear(head.value, tokens[t]) for t in range(T)]
    for n in range(N):
        q = linear(head.query, visual[n])
        scores = [float(q @ k) / (np.linalg.norm(q) * np.linalg.norm(k)) / gamma for k in keys]
        weights = softmax_over(scores, keep)
        language = sum(w * v for w, v in zip(weights, values))
        out[n] = visual[n] * language
    return out


def reference_attribute(head: AttributeGuidedHead, visual, tokens, keep) -> np.ndarray:
    """head2[n] = V[n] * sum_t softmax_t over attribute tokens(Wq V[n] . Wk L[t] / sqrt(C)) Wv L[t]."""
    out = np.zeros((N, VIS))
    keys = [linear(head.key, tokens[t]) for t in range(T)]
    values = [linear(head.value, tokens[t]) for t in range(T)]
    for n in range(N):
        q = linear(head.query, visual[n])
        weights = softmax_over([float(q @ k) / math.sqrt(VIS) for k in keys], keep)
        out[n] = visual[n] * sum(w * v for w, v in zip(weights, values))
    return out


def reference_identity(head: IdentityGuidedHead, visual, tokens, keep) -> np.ndarray:
    """head3[n] = V[n] * mean over identity tokens of Wv L[t]; zeros when there is none."""
    chosen = [linear(head.value, tokens[t]) for t in range(T) if keep[t]]
    language = sum(chosen) / len(chosen) if chosen else np.zeros(VIS)
    return np.stack([visual[n] * language for n in range(N)])


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(3)
    visual = torch.randn(1, N, VIS, generator=g)
    tokens = torch.randn(1, T, TXT, generator=g)
    return visual, tokens


def run(head, visual, tokens, keep) -> np.ndarray:
    with torch.no_grad():
        return head(visual, tokens, torch.tensor([keep], dtype=torch.float32))[0].double().numpy()


def test_sentence_head_matches_equations(inputs):
    torch.manual_seed(0)
    head = SentenceGuidedHead(VIS, TXT, temperature=0.3)
    visual, tokens = inputs
    keep = [1, 1, 1, 1, 0, 0]  # two padding tokens
    expected = reference_sentence(head, visual[0].double().numpy(), tokens[0].double().numpy(), keep)
    np.testing.assert_allclose(run(head, visual, tokens, keep), expected, rtol=1e-5, atol=1e-6)


def test_attribute_head_matches_equations(inputs):
    torch.manual_seed(1)
    head = AttributeGuidedHead(VIS, TXT)
    visual, tokens = inputs
    keep = [0, 1, 0, 1, 0, 0]  # attribute tokens only
    expected = reference_attribute(head, visual[0].double().numpy(), tokens[0].double().numpy(), keep)
    np.testing.assert_allclose(run(head, visual, tokens, keep), expected, rtol=1e-5, atol=1e-6)


def test_identity_head_is_equal_weight_mean(inputs):
    torch.manual_seed(2)
    head = IdentityGuidedHead(VIS, TXT)
    visual, tokens = inputs
    keep = [0, 0, 1, 1, 1, 0]
    expected = reference_identity(head, visual[0].double().numpy(), tokens[0].double().numpy(), keep)
    np.testing.assert_allclose(run(head, visual, tokens, keep), expected, rtol=1e-5, atol=1e-6)


def text_features(tokens, valid, attribute, identity) -> TextFeatures:
    as_row = lambda values: torch.tensor([values], dtype=torch.float32)  # noqa: E731
    return TextFeatures(tokens, as_row(valid), as_row(attribute), as_row(identity))


def test_heads_added_with_learnable_weights(inputs):
    """P = w1 head1 + w2 head2 + w3 head3 (eq. 5), each head seeing its own token set."""
    torch.manual_seed(4)
    attention = SyntaxAwareAttention(VIS, TXT, temperature=0.2)
    with torch.no_grad():
        attention.head_weights.copy_(torch.tensor([0.5, -1.5, 2.0]))
    visual, tokens = inputs
    valid, attribute, identity = [1, 1, 1, 1, 1, 0], [0, 1, 1, 0, 0, 1], [0, 0, 0, 1, 0, 1]
    v, l = visual[0].double().numpy(), tokens[0].double().numpy()  # noqa: E741 - the paper's visual / language features
    attribute_keep = [a * b for a, b in zip(valid, attribute)]  # the padded token is not an attribute
    identity_keep = [a * b for a, b in zip(valid, identity)]
    expected = (
        0.5 * reference_sentence(attention.sentence, v, l, valid)
        - 1.5 * reference_attribute(attention.attribute, v, l, attribute_keep)
        + 2.0 * reference_identity(attention.identity, v, l, identity_keep)
    )
    with torch.no_grad():
        got = attention(visual, text_features(tokens, valid, attribute, identity))[0].double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_padding_tokens_do_not_change_the_output(inputs):
    torch.manual_seed(5)
    attention = SyntaxAwareAttention(VIS, TXT, temperature=0.1)
    visual, tokens = inputs
    # padded tokens even carry attribute / identity flags: valid must still exclude them
    masks = ([1, 1, 1, 1, 0, 0], [0, 1, 0, 0, 1, 0], [0, 0, 1, 0, 0, 1])
    changed = tokens.clone()
    changed[:, 4:] = 1000.0 * torch.randn(1, 2, TXT)
    with torch.no_grad():
        before = attention(visual, text_features(tokens, *masks))
        after = attention(visual, text_features(changed, *masks))
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    # and a real token does change it (the check above is not vacuous)
    changed[:, 0] += 1.0
    with torch.no_grad():
        assert not torch.allclose(attention(visual, text_features(changed, *masks)), before)


def test_empty_attribute_and_identity_sets_give_zero_heads_and_finite_gradients(inputs):
    torch.manual_seed(6)
    attention = SyntaxAwareAttention(VIS, TXT, temperature=0.1)
    visual, tokens = inputs
    visual = visual.clone().requires_grad_(True)
    text = text_features(tokens, [1, 1, 1, 0, 0, 0], [0] * T, [0] * T)
    heads = (
        attention.attribute(visual, text.tokens, text.valid * text.attribute),
        attention.identity(visual, text.tokens, text.valid * text.identity),
    )
    for head in heads:
        assert torch.equal(head, torch.zeros_like(head))
    out = attention(visual, text)
    out.square().sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(visual.grad).all()
    for name, param in attention.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_no_valid_token_at_all_is_finite(inputs):
    attention = SyntaxAwareAttention(VIS, TXT, temperature=0.1)
    visual, tokens = inputs
    out = attention(visual, text_features(tokens, [0] * T, [0] * T, [0] * T))
    assert torch.equal(out, torch.zeros_like(out))


def test_masked_softmax_matches_reference_and_zeroes_empty_rows():
    g = torch.Generator().manual_seed(7)
    scores = 30.0 * torch.randn(2, 3, T, generator=g)  # large scores: the max-shift must keep exp finite
    keep = torch.tensor([[[1, 0, 1, 1, 0, 1]], [[0, 0, 0, 0, 0, 0]]], dtype=torch.float32)
    got = masked_softmax(scores, keep)
    for b in range(2):
        for n in range(3):
            expected = softmax_over(scores[b, n].double().tolist(), keep[b, 0].tolist())
            np.testing.assert_allclose(got[b, n].double().numpy(), expected, rtol=1e-5, atol=1e-7)
    assert torch.equal(got[1], torch.zeros_like(got[1]))
