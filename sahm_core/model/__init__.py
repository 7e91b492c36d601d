"""The SAHM network: `build_model(cfg)` -> SAHM; PatchDiscriminator for adversarial training."""

from .discriminator import PatchDiscriminator
from .sahm import SAHM, SAHMOutput, build_model

__all__ = ["SAHM", "SAHMOutput", "PatchDiscriminator", "build_model"]
