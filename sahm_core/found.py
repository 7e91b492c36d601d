"""Found / not-found: the one rule deciding whether the referred object is in a frame, and its defaults.

The runtime (Remover), `sahm eval`, replay and the ROS node all decide with `found_decision` and take their
defaults and help texts from `FoundRule`. Only numpy is imported: ros_ror declares its parameters from here
without loading torch.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

import numpy as np


def _rule_field(default: float, help_text: str):
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class FoundRule:
    """Thresholds on the mask probabilities at model resolution (see `found_decision`); each in 0..1."""

    mask_threshold: float = _rule_field(0.5, "mask probability above which a pixel is removed (below 1)")
    min_score: float = _rule_field(0.6, "object score (mean mask probability) below which the command counts as "
                                        "not found")
    min_mask_area: float = _rule_field(0.002, "masks smaller than this fraction of the frame count as not found")

    def __post_init__(self):
        # mask_threshold 1 would remove nothing, ever: a configuration error, not a rule
        if not (0.0 <= self.mask_threshold < 1.0 and 0.0 <= self.min_score <= 1.0 and 0.0 <= self.min_mask_area <= 1.0):
            raise ValueError(f"found rule out of range: mask_threshold={self.mask_threshold} (0..1, below 1), "
                             f"min_score={self.min_score} (0..1), min_mask_area={self.min_mask_area} (0..1)")


DEFAULT_RULE = FoundRule()
RULE_HELP: dict[str, str] = {f.name: f.metadata["help"] for f in dataclasses.fields(FoundRule)}


def found_decision(mask_prob: np.ndarray, rule: FoundRule = DEFAULT_RULE) -> tuple[bool, float, float]:
    """Whether the referred object was found, from the mask probabilities at model resolution.

    mask_prob: (S,S) (or any shape) float probabilities. Returns (found, score, area) where
    area = fraction of pixels with probability > mask_threshold and score = mean probability over those pixels
    (0 when there are none): how sure the network is about the region it would erase. Found iff
    score >= min_score and area >= min_mask_area; a negative command ("the cup" when there is no cup) should
    produce a small, faint or empty mask and so pass the frame through.
    """
    selected = mask_prob > rule.mask_threshold
    count = int(np.count_nonzero(selected))
    area = count / max(1, mask_prob.size)
    score = float(mask_prob[selected].mean()) if count else 0.0
    return bool(count > 0 and score >= rule.min_score and area >= rule.min_mask_area), score, area


def add_rule_arguments(parser: argparse.ArgumentParser) -> None:
    """--mask-threshold, --min-score, --min-mask-area (dest: the FoundRule field names) with the rule's defaults."""
    for name, help_text in RULE_HELP.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(DEFAULT_RULE, name),
                            help=f"{help_text} (default {getattr(DEFAULT_RULE, name)})")


def rule_from_args(args: argparse.Namespace) -> FoundRule:
    """The FoundRule of parsed `add_rule_arguments` options; ValueError when out of range."""
    return FoundRule(**{name: getattr(args, name) for name in RULE_HELP})
