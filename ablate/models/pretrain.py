"""Masked-LM pretraining of a backbone (scratch or checkpoint) on text, built once per key into a shared cache.

The step loop reuses the fine-tuning loop's parts (`trainer._optimizer`, `trainer._schedule`, `batches`) and
the head seam (`MLMHead.loss`); it is not `trainer.train` itself, whose contract is epochs, dev F1, best-epoch
selection and predictions: MLM has none of them, it runs for a number of steps or seconds and scores masked-token
accuracy on held-out text.

The cache: `<cache>/pretrained/<key>/backbone`, key = SHA-256 of (the backbone spec with its `pretrain:`, the
base it starts from, the text's SHA-256). One process builds it under a file lock (`filelock`: an OS lock, so a
killed builder releases it); the others wait, then load the finished folder. A build writes into a `.tmp-*`
folder beside it and renames it in when complete: a crash leaves only a temporary folder, which the next builder
removes (it holds the lock, so nobody else is writing there).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.data.readers import Sentence
from ablate.errors import DataError
from ablate.spec.backbone import BackboneSpec, PretrainSpec

IGNORE = -100


@dataclass(frozen=True)
class Text:
    """One piece of pretraining text: its characters and, when the source segments it, word lengths."""

    chars: tuple[str, ...]
    words: tuple[int, ...] = ()


@dataclass
class PretrainLog:
    """What the caller is told: `start(params) -> handle`, `log(handle, metrics, step)`, `end(handle, ok, final)`."""

    start: Callable[[dict[str, str]], Any] = lambda params: None
    log: Callable[[Any, dict[str, float], int], None] = lambda handle, metrics, step: None
    end: Callable[[Any, bool, dict[str, float]], None] = lambda handle, ok, final: None


@dataclass(frozen=True)
class _Row:  # what `batches` needs of a window: its token ids
    input_ids: list[int]
    groups: list[int] = field(default_factory=list)  # per token: a maskable unit's index, -1 never masked


class MLMHead:
    """The head seam for masked-LM: cross-entropy over the masked positions only, in fp32."""

    lr_scale: dict[str, float] = {}

    def __init__(self):
        import torch

        self._module = torch.nn.Module()  # no weights of its own: the LM head is the model's (tied embeddings)

    def named_parameters(self):
        return self._module.named_parameters()

    def parameters(self):
        return self._module.parameters()

    def loss(self, output, batch):
        import torch

        logits = output.logits.float()
        labels = batch["labels"]
        total = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1),
                                                  ignore_index=IGNORE, reduction="sum")
        return total / (labels != IGNORE).sum().clamp(min=1)


# ------------------------------------------------------------------------------------------------ text
def read_text_file(path: Path) -> list[Text]:
    """A corpus file (.jsonl, or CoNLL: every line a token and its columns), or plain text: a sentence per line,
    its words where it has spaces between them (`Hello big world`), else its characters (Chinese text)."""
    from ablate.data.readers import _read_text, _split_columns, read_columns, read_corpus
    from ablate.spec.schema import JSONL_SUFFIXES

    path = Path(path)
    if path.suffix.lower() in JSONL_SUFFIXES:
        return [Text(s.chars, s.words) for s in read_corpus(path)]
    lines = [line.rstrip("\r") for line in _read_text(path).split("\n")]
    filled = [line for line in lines if line.strip()]
    if filled and all(len(_split_columns(line)) >= 2 and len(_split_columns(line)[0]) <= 30 for line in filled) and \
            len({len(_split_columns(line)) for line in filled}) == 1 and any(not line.strip() for line in lines):
        return [Text(tuple(r[0] for r in rows)) for _, rows in read_columns(path, None)]  # CoNLL: the tokens
    out = []
    for line in filled:
        words = line.split()
        out.append(Text(tuple(words)) if len(words) > 1 else Text(tuple(c for c in line if not c.isspace())))
    return [t for t in out if t.chars]


def pretrain_text(spec: PretrainSpec, train: Sequence[Sentence], resolve: Callable[[str], Path]) -> tuple[list[Text], list[str]]:
    """The text to pretrain on, and what it was (for the run's record): the training sentences and/or the files."""
    texts: list[Text] = []
    sources = []
    if spec.train_text:
        texts += [Text(s.chars, s.words) for s in train]
        sources.append(f"train split ({len(train)} sentences, labels ignored)")
    for name in spec.text:
        path = resolve(name)
        more = read_text_file(path)
        texts += more
        sources.append(f"{path} ({len(more)} sentences)")
    if not texts:
        raise DataError("backbone pretrain: the text is empty")
    return texts, sources


def text_digest(texts: Sequence[Text]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(("".join(t.chars) + "\t" + ",".join(map(str, t.words)) + "\n").encode("utf-8"))
    return h.hexdigest()


def cache_key(b: BackboneSpec, base: str, digest: str) -> str:
    payload = json.dumps([b.model_dump(mode="json"), base, digest], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ masking
def encode_text(texts: Sequence[Text], tokenizer, max_length: int, whole_word: bool) -> list[_Row]:
    """Token ids with [CLS]/[SEP], and per token the unit it is masked with (a word, or its character); long
    sentences are cut into pieces of `max_length - 2` characters (nothing is dropped)."""
    room = max_length - tokenizer.num_special_tokens_to_add()
    pieces: list[tuple[list[str], list[int]]] = []
    for t in texts:
        unit = list(range(len(t.chars)))
        if whole_word and t.words and sum(t.words) == len(t.chars):
            unit = [w for w, n in enumerate(t.words) for _ in range(n)]
        for a in range(0, len(t.chars), room):
            part = unit[a:a + room]
            pieces.append((list(t.chars[a:a + room]), [u - part[0] for u in part]))  # units numbered from 0 per piece
    rows = []
    for a in range(0, len(pieces), 1024):
        chunk = pieces[a:a + 1024]
        enc = tokenizer([p[0] for p in chunk], is_split_into_words=True, truncation=True, max_length=max_length)
        for i, (_, unit) in enumerate(chunk):
            ids = enc["input_ids"][i]
            groups = [-1 if w is None else unit[w] for w in enc.word_ids(i)]
            if any(g >= 0 for g in groups):
                rows.append(_Row(ids, groups))
    return rows


def collate_masked(rows: Sequence[_Row], idxs: Sequence[int], tokenizer, prob: float, generator) -> dict:
    """A padded batch with `prob` of each row's units masked (80% [MASK], 10% a random token, 10% kept).

    [CLS], [SEP] and padding are never chosen (their unit is -1); the labels are the original ids of the chosen
    tokens and IGNORE elsewhere. Each unit is chosen with probability `prob` (a word's tokens go together).
    """
    import torch

    n = max(len(rows[i].input_ids) for i in idxs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(idxs), n), pad, dtype=torch.long)
    groups = torch.full((len(idxs), n), -1, dtype=torch.long)
    for r, i in enumerate(idxs):
        ids[r, : len(rows[i].input_ids)] = torch.tensor(rows[i].input_ids)
        groups[r, : len(rows[i].groups)] = torch.tensor(rows[i].groups)
    attention = (torch.arange(n)[None, :] < torch.tensor([len(rows[i].input_ids) for i in idxs])[:, None]).long()
    draw = torch.rand((len(idxs), n), generator=generator)  # one draw per unit index (units < n)
    chosen = (groups >= 0) & (draw.gather(1, groups.clamp(min=0)) < prob)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    how = torch.rand((len(idxs), n), generator=generator)
    inputs = ids.clone()
    inputs[chosen & (how < 0.8)] = tokenizer.mask_token_id
    swap = chosen & (how >= 0.8) & (how < 0.9)
    random_ids = torch.randint(len(tokenizer), ids.shape, generator=generator)
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    random_ids = torch.where(torch.isin(random_ids, special), torch.full_like(ids, tokenizer.mask_token_id), random_ids)
    inputs[swap] = random_ids[swap]
    return {"input_ids": inputs, "attention_mask": attention, "labels": labels}


# ------------------------------------------------------------------------------------------------ the loop
def pretrain(base: str, spec: PretrainSpec, texts: Sequence[Text], out_dir: Path, device,
             on_log: Callable[[dict[str, float], int], None] = lambda m, s: None) -> dict[str, float]:
    """Masked-LM training of the backbone at `base` on `texts`; saves the encoder (+ LM head) and tokenizer to
    `out_dir`; returns the final figures (loss, held-out masked-token accuracy, tokens/s, seconds, steps)."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from ablate.data.encode import batches
    from ablate.spec.schema import TrainSpec
    from ablate.trainer import DivergedError, _optimizer, _schedule

    from ablate.models.backbones import _check_local, _unavailable

    _check_local(base)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a scratch encoder has no LM head yet: "newly initialized" is expected
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        torch.manual_seed(spec.seed)
        model = AutoModelForMaskedLM.from_pretrained(base).to(device)
    except OSError as e:
        raise _unavailable(base, str(e)) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if tokenizer.mask_token_id is None or not tokenizer.is_fast:
        raise DataError(f"{base}: masked-LM pretraining needs a fast tokenizer with a mask token")
    rows = encode_text(texts, tokenizer, spec.max_length, spec.whole_word)
    order = list(range(len(rows)))
    random.Random(spec.seed).shuffle(order)
    n_held = min(int(len(rows) * spec.held_out), 2000) if len(rows) >= 20 else 0
    held, train_rows = [rows[i] for i in order[:n_held]], [rows[i] for i in order[n_held:]]
    if not train_rows:
        raise DataError("backbone pretrain: no text left to train on (every sentence is empty to the tokenizer)")
    s = TrainSpec(lr=spec.lr, batch_size=spec.batch_size, warmup_ratio=spec.warmup_ratio, weight_decay=spec.weight_decay)
    head = MLMHead()
    optimizer = _optimizer(model, head, s, device)
    # A time budget alone has no known end: warm-up over the first 100 steps, then a constant rate.
    scheduler = _schedule(optimizer, spec.steps, s) if spec.steps else \
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / 101))
    trainable = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(spec.seed)
    log_every = max(1, (spec.steps or 1000) // 20)
    step, epoch, tokens, seconds, loss_sum, counted = 0, 0, 0, 0.0, 0.0, 0
    model.train()
    start = time.perf_counter()
    while True:
        epoch += 1
        for idxs in batches(train_rows, spec.batch_size, shuffle=True, seed=spec.seed * 1000 + epoch):
            b = {k: v.to(device) for k, v in collate_masked(train_rows, idxs, tokenizer, spec.mask_prob, gen).items()}
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            loss = head.loss(out, b)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0, foreach=True)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens += int(b["attention_mask"].sum())
            loss_sum, counted = loss_sum + loss.item(), counted + 1
            seconds = time.perf_counter() - start
            if step % log_every == 0:
                if not math.isfinite(loss_sum):
                    raise DivergedError(f"pretraining diverged at step {step} (lr {spec.lr:g}): lower pretrain.lr")
                on_log({"pretrain/loss": loss_sum / counted, "pretrain/tokens_per_second": tokens / seconds}, step)
                loss_sum, counted = 0.0, 0
            if (spec.steps and step >= spec.steps) or (spec.seconds and seconds >= spec.seconds):
                break
        else:
            continue
        break
    final = {"pretrain/steps": float(step), "pretrain/seconds": seconds, "pretrain/tokens": float(tokens),
             "pretrain/tokens_per_second": tokens / max(seconds, 1e-9), "pretrain/text_sentences": float(len(texts))}
    if counted:
        final["pretrain/loss"] = loss_sum / counted
    if held:
        final.update(masked_accuracy(model, tokenizer, held, spec, device))
    on_log(final, step)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return final


def masked_accuracy(model, tokenizer, rows: Sequence[_Row], spec: PretrainSpec, device) -> dict[str, float]:
    """Held-out masked-token accuracy and loss, under a fixed mask (the same for every call)."""
    import torch

    from ablate.data.encode import batches

    gen = torch.Generator().manual_seed(12345)
    model.eval()
    right = total = 0
    loss = 0.0
    with torch.inference_mode():
        for idxs in batches(rows, 64, shuffle=False):
            b = {k: v.to(device) for k, v in collate_masked(rows, idxs, tokenizer, spec.mask_prob, gen).items()}
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
            where = b["labels"] != IGNORE
            right += int((logits.argmax(-1)[where] == b["labels"][where]).sum())
            total += int(where.sum())
            loss += float(torch.nn.functional.cross_entropy(logits[where], b["labels"][where], reduction="sum"))
    model.train()
    return {"pretrain/held_out_accuracy": right / max(total, 1), "pretrain/held_out_loss": loss / max(total, 1)}


# ------------------------------------------------------------------------------------------------ the cache
def pretrained_backbone(b: BackboneSpec, base: str, texts: Sequence[Text], sources: list[str], cache: Path,
                        device=None, log: PretrainLog | None = None) -> tuple[str, str]:
    """(folder, key): the backbone `b` (at `base`) after its `pretrain:`, built once per key under `cache`."""
    import torch
    from filelock import FileLock

    assert b.pretrain is not None
    digest = text_digest(texts)
    key = cache_key(b, base, digest)
    root = cache / "pretrained"
    folder = root / key / "backbone"
    if (folder / "config.json").exists():
        return str(folder), key
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{key}.lock")):
        if (folder / "config.json").exists():  # built by another process while this one waited
            return str(folder), key
        for stale in root.glob(f".tmp-{key}-*"):  # a crashed build's leftovers: nobody else writes here now
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".tmp-{key}-{os.getpid()}"
        log = log or PretrainLog()
        spec = b.pretrain
        params = {"key": key, "base": base, "text_sha256": digest, "text": "; ".join(sources),
                  **{f"pretrain.{k}": json.dumps(v) if isinstance(v, list) else str(v)
                     for k, v in spec.model_dump(mode="json").items()}}
        handle = log.start(params)
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            final = pretrain(base, spec, texts, tmp / "backbone", dev, lambda m, step: log.log(handle, m, step))
            (tmp / "pretrain.json").write_text(json.dumps({**params, "final": final}, ensure_ascii=False, indent=2),
                                               encoding="utf-8")
            if (root / key).exists():  # a folder without a finished backbone (only ours could write it): replace it
                shutil.rmtree(root / key)
            os.rename(tmp, root / key)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            log.end(handle, False, {})
            raise
        log.end(handle, True, final)
    return str(folder), key


def backbone_for(b: BackboneSpec, train: Sequence[Sentence], cache: Path, resolve: Callable[[str], Path],
                 device=None, log: PretrainLog | None = None) -> tuple[str, str | None]:
    """(what `load_model` loads, the pretrained backbone's key or None): the backbone as `resolve_backbone` gives
    it, then, when the entry has `pretrain:`, that backbone after masked-LM training (cached)."""
    from ablate.models.backbones import resolve_backbone

    base = resolve_backbone(b.model_copy(update={"pretrain": None}), [s.chars for s in train], cache)
    if b.pretrain is None:
        return base, None
    texts, sources = pretrain_text(b.pretrain, train, resolve)
    return pretrained_backbone(b, base, texts, sources, cache, device, log)
