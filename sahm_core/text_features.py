"""TextFeatures: what crosses from the text side (once per command) to the per-frame graph."""

from __future__ import annotations

from typing import NamedTuple

import torch


class TextFeatures(NamedTuple):
    """A batch of encoded commands, fixed length T.

    tokens:    (B, T, C) float32  contextual token embeddings L from the frozen text encoder
    valid:     (B, T)    float32  1.0 for real tokens, 0.0 for padding
    attribute: (B, T)    float32  1.0 for tokens of attribute words (AW: colour, place, size, state)
    identity:  (B, T)    float32  1.0 for tokens of identity words (IW: the object's category)

    Masks are float 0/1 (not bool) so the exported graph has one input dtype that
    ONNX Runtime and TensorRT both take without casts.
    """

    tokens: torch.Tensor
    valid: torch.Tensor
    attribute: torch.Tensor
    identity: torch.Tensor

    def to(self, device) -> "TextFeatures":
        return TextFeatures(*(t.to(device) for t in self))
