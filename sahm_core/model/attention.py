"""Syntax-aware visual attention (SAHM paper, section 4.1, eq. 1-5).

Three heads read the command at every backbone stage:

- L-guided:   cosine similarity between projected pixels and projected tokens,
              divided by a learnable per-layer gamma, softmax over valid tokens.
- Law-guided: the same structure over attribute tokens only, scaled dot product.
- Liw-guided: hard attention, every identity token weighs the same.

Each head returns V * G (Hadamard product of the visual map with the language
map it attended to); the three are added with learnable weights (eq. 5).
The 1x1 projections of the paper are `nn.Linear` on channel-last tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from ..text_features import TextFeatures
from .numerics import EPS, l2_normalize

# Score given to excluded tokens before the softmax. Finite and inside the fp16
# range, so an all-excluded row never computes inf - inf (NaN) in a TensorRT fp16 engine.
MASKED_SCORE = -1.0e4


def masked_softmax(scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis restricted to `keep` entries; an all-excluded row gives zeros.

    scores: (B, N, T); keep: (B, 1, T) or (B, N, T), 0/1 float.
    A row with a kept entry sums to >= 1 (its largest kept weight is exp(0) once a kept score beats
    MASKED_SCORE), so the EPS floor only acts on an all-excluded row (a command with no attribute word),
    whose 0 / EPS is 0 in fp16 too.
    """
    filled = scores.masked_fill(keep <= 0, MASKED_SCORE)
    weights = torch.exp(filled - filled.amax(dim=-1, keepdim=True)) * keep
    return weights / weights.sum(dim=-1, keepdim=True).clamp_min(EPS)


class SentenceGuidedHead(nn.Module):
    """L-guided attention (eq. 1-4): head1 = V * unflatten(softmax(cos(Wq V, Wk L) / gamma) (Wv L)^T)."""

    def __init__(self, vis_dim: int, text_dim: int, temperature: float):
        super().__init__()
        self.query = nn.Linear(vis_dim, vis_dim)
        self.key = nn.Linear(text_dim, vis_dim)
        self.value = nn.Linear(text_dim, vis_dim)
        self.gamma = nn.Parameter(torch.tensor(float(temperature)))  # not shared between layers

    def forward(self, visual: torch.Tensor, tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """visual (B,N,C), tokens (B,T,C_L), keep (B,T) -> (B,N,C)"""
        query = l2_normalize(self.query(visual))  # (B,N,C)
        key = l2_normalize(self.key(tokens))  # (B,T,C)
        # gamma is learnable; keeping it away from zero keeps the scores finite
        scores = query @ key.transpose(1, 2) / self.gamma.clamp_min(1e-2)  # (B,N,T)
        language = masked_softmax(scores, keep.unsqueeze(1)) @ self.value(tokens)  # (B,N,C)
        return visual * language


class AttributeGuidedHead(nn.Module):
    """Law-guided attention: the L-guided structure over attribute tokens with a scaled dot product."""

    def __init__(self, vis_dim: int, text_dim: int):
        super().__init__()
        self.query = nn.Linear(vis_dim, vis_dim)
        # a key bias would add q.b to every token's score alike: softmax cancels it, so it would never learn
        self.key = nn.Linear(text_dim, vis_dim, bias=False)
        self.value = nn.Linear(text_dim, vis_dim)
        self.scale = vis_dim**-0.5

    def forward(self, visual: torch.Tensor, tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """visual (B,N,C), tokens (B,T,C_L), keep (B,T) attribute tokens -> (B,N,C)"""
        scores = self.query(visual) @ self.key(tokens).transpose(1, 2) * self.scale  # (B,N,T)
        language = masked_softmax(scores, keep.unsqueeze(1)) @ self.value(tokens)  # (B,N,C)
        return visual * language


class IdentityGuidedHead(nn.Module):
    """Liw-guided hard attention: every identity token has the same weight, so G is their mean value."""

    def __init__(self, vis_dim: int, text_dim: int):
        super().__init__()
        self.value = nn.Linear(text_dim, vis_dim)

    def forward(self, visual: torch.Tensor, tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """visual (B,N,C), tokens (B,T,C_L), keep (B,T) identity tokens -> (B,N,C)"""
        weights = keep / keep.sum(dim=1, keepdim=True).clamp_min(1.0)  # (B,T); zeros when no identity word
        language = weights.unsqueeze(1) @ self.value(tokens)  # (B,1,C), one vector for every pixel
        return visual * language


class SyntaxAwareAttention(nn.Module):
    """P_i = w1 head1 + w2 head2 + w3 head3 (eq. 5) on channel-last visual tokens."""

    def __init__(self, vis_dim: int, text_dim: int, temperature: float):
        super().__init__()
        self.sentence = SentenceGuidedHead(vis_dim, text_dim, temperature)
        self.attribute = AttributeGuidedHead(vis_dim, text_dim)
        self.identity = IdentityGuidedHead(vis_dim, text_dim)
        self.head_weights = nn.Parameter(torch.ones(3))

    def forward(self, visual: torch.Tensor, text: TextFeatures) -> torch.Tensor:
        """visual (B,N,C) + TextFeatures (tokens (B,T,C_L), masks (B,T)) -> multimodal P_i (B,N,C)"""
        sentence = self.sentence(visual, text.tokens, text.valid)
        attribute = self.attribute(visual, text.tokens, text.valid * text.attribute)
        identity = self.identity(visual, text.tokens, text.valid * text.identity)
        w = self.head_weights
        return w[0] * sentence + w[1] * attribute + w[2] * identity
