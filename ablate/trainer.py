"""The one training loop: length-grouped batches, AdamW, warm-up then linear decay, per-genre dev scores.

Every cell of every study runs through `train`. Speed comes from what the loop does not do:
no padding to a fixed length, no per-step host syncs, decoding on the device at evaluation.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ablate.data.encode import Window, batches, collate, stitch
from ablate.data.readers import Sentence, write_conll
from ablate.metrics import GenreScores, score, score_genres, score_json
from ablate.schemes import IOB2, Scheme
from ablate.results import RunResult
from ablate.spec.schema import TrainSpec

SYNC_EVERY = 50  # optimizer steps between divergence checks (each check is a host sync)


class DivergedError(RuntimeError):
    """The loss became NaN or infinite: the run stops instead of training on garbage."""


@dataclass(frozen=True)
class Split:
    """Encoded windows and the gold sentences they came from (scoring reads the gold tags)."""

    windows: list[Window]
    sentences: list[Sentence]


def _optimizer(model, head, s: TrainSpec, device):
    import torch

    scales = getattr(head, "lr_scale", {})  # e.g. {"crf.": 100}: CRF transitions take a larger step
    grouped: dict[tuple[float, bool], list] = {}
    named = [(n, p, 1.0) for n, p in model.named_parameters()]
    named += [(n, p, next((m for k, m in scales.items() if n.startswith(k)), 1.0)) for n, p in head.named_parameters()]
    for name, p, scale in named:
        if p.requires_grad:
            decays = not (p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name)
            grouped.setdefault((scale, decays), []).append(p)
    groups = [{"params": ps, "lr": s.lr * scale, "weight_decay": s.weight_decay if decays else 0.0}
              for (scale, decays), ps in sorted(grouped.items(), key=lambda kv: (kv[0][0], not kv[0][1]))]
    # Fused AdamW (one kernel for all tensors) on CUDA and on CPU (torch >= 2.4): per-tensor AdamW
    # was ~12% of a tiny model's CPU epoch and 3x slower per base-BERT step (bench/README.md).
    return torch.optim.AdamW(groups, lr=s.lr, fused=device.type in ("cuda", "cpu"))


def _schedule(optimizer, total_steps: int, s: TrainSpec):
    import torch

    warmup = s.warmup_steps if s.warmup_steps is not None else math.ceil(s.warmup_ratio * total_steps)

    def factor(step: int) -> float:  # linear warm-up, then linear decay to 0 (as transformers' default)
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _use_bf16(device, precision: str) -> bool:
    import torch

    if precision == "fp32" or device.type != "cuda":
        return False
    return precision == "bf16" or torch.cuda.is_bf16_supported()


def predict(model, head, split: Split, id2label: Sequence[str], device, batch_size: int, bf16: bool,
            pad_id: int) -> list[list[str]]:
    """One predicted tag per character of every sentence (each window decoded by the head, then stitched)."""
    import torch

    model.eval()
    head.eval()
    outputs: list[list[int]] = [[] for _ in split.windows]
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for idxs in batches(split.windows, batch_size, shuffle=False):
            b = {k: v.to(device) for k, v in collate(split.windows, idxs, pad_id).items()}
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            for i, row in zip(idxs, head.decode(out, b).tolist()):
                outputs[i] = row
    ids = stitch(split.windows, outputs, [len(s) for s in split.sentences])
    rows = [[id2label[i] for i in row] for row in ids]
    # A BIO-constrained head decodes each window; a window that opens mid-entity (I-X) may meet an O at the
    # stitch: written as B-X (conlleval's own reading, so the scores are unchanged) to keep the files valid.
    return [getattr(head, "scheme", IOB2).repair(r) for r in rows] if getattr(head, "valid_bio", False) else rows


def evaluate(sentences: list[Sentence], pred: list[list[str]], prefix: str,
             scheme: Scheme = IOB2) -> tuple[dict[str, float], GenreScores]:
    """Overall (pooled), per-genre, macro-over-genres and per-type scores under `prefix/`, entities in `scheme`."""
    gold = [list(s.tags) for s in sentences]
    pooled = score(gold, pred, scheme)
    by_genre: dict[str, tuple[list, list]] = {}
    for s, g, p in zip(sentences, gold, pred):
        by_genre.setdefault(s.genre, ([], []))
        by_genre[s.genre][0].append(g)
        by_genre[s.genre][1].append(p)
    genres = score_genres(dict(sorted(by_genre.items())), scheme)
    m = {f"{prefix}/precision": pooled.precision, f"{prefix}/recall": pooled.recall, f"{prefix}/f1": pooled.f1,
         f"{prefix}/macro_f1": genres.macro.f1, f"{prefix}/macro_precision": genres.macro.precision,
         f"{prefix}/macro_recall": genres.macro.recall}
    for g, sc in genres.genres.items():
        m.update({f"{prefix}/f1/{g}": sc.f1, f"{prefix}/precision/{g}": sc.precision, f"{prefix}/recall/{g}": sc.recall})
    for t, ts in pooled.per_type.items():
        m[f"{prefix}/f1/type/{t}"] = ts.f1
    return m, genres


def _peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def train(
    model,
    head,
    train_split: Split,
    dev: Split,
    test: Split | None,
    id2label: Sequence[str],
    s: TrainSpec,
    device,
    out_dir: Path,
    pad_id: int = 0,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    extra_final: dict[str, float] | None = None,
    scheme: Scheme = IOB2,
) -> RunResult:
    """Train, keep the best epoch by `s.select_metric`, score test there, write predictions.

    The head gives the loss and the decoded tags (`ablate.models.heads.Head`); the loop never looks inside.
    """
    import torch

    out_dir = Path(out_dir)
    torch.manual_seed(s.seed)
    model.to(device)
    head.to(device)
    bf16 = _use_bf16(device, s.precision)
    n_batches = len(batches(train_split.windows, s.batch_size, shuffle=False))
    steps_per_epoch = math.ceil(n_batches / s.grad_accum)
    optimizer = _optimizer(model, head, s, device)
    scheduler = _schedule(optimizer, steps_per_epoch * s.epochs, s)
    trainable = [p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    history: list[dict[str, float]] = []
    best_value, best_epoch, best_state, best_dev_pred, stale = -math.inf, 0, None, None, 0
    for epoch in range(1, s.epochs + 1):
        model.train()
        head.train()
        order = batches(train_split.windows, s.batch_size, shuffle=True, seed=s.seed * 1000 + epoch)
        loss_sum = torch.zeros((), device=device)
        tokens = torch.zeros((), device=device, dtype=torch.long)
        counted = 0
        start = time.perf_counter()
        for i, idxs in enumerate(order):
            b = {k: v.to(device, non_blocking=True) for k, v in collate(train_split.windows, idxs, pad_id).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
                loss = head.loss(out, b)  # a scalar; heads compute it in fp32
            (loss / s.grad_accum).backward()
            loss_sum += loss.detach()
            tokens += b["attention_mask"].sum()
            counted += 1
            last = i + 1 == len(order)
            if (i + 1) % s.grad_accum == 0 or last:
                torch.nn.utils.clip_grad_norm_(trainable, s.max_grad_norm, foreach=True)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if (i + 1) % (SYNC_EVERY * s.grad_accum) == 0 or last:
                if not torch.isfinite(loss_sum):
                    raise DivergedError(
                        f"diverged: the training loss is {loss_sum.item()} at epoch {epoch}, batch {i + 1} "
                        f"(lr {s.lr:g}); lower the learning rate or check the data"
                    )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        dev_pred = predict(model, head, dev, id2label, device, s.eval_batch_size, bf16, pad_id)
        metrics, _ = evaluate(dev.sentences, dev_pred, "dev", scheme)
        metrics.update({
            "epoch": float(epoch),
            "train/loss": loss_sum.item() / max(counted, 1),
            "epoch_seconds": seconds,
            "train_tokens": float(tokens.item()),
            "train_tokens_per_second": tokens.item() / seconds if seconds > 0 else 0.0,
            "peak_memory_mb": _peak_memory_mb(device),
            "train/lr": scheduler.get_last_lr()[0],
        })
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        value = metrics[s.select_metric]
        if value > best_value:
            best_value, best_epoch, best_dev_pred, stale = value, epoch, dev_pred, 0
            # Keep the best weights on the CPU (for LoRA only adapters and head move).
            best_state = {n: p.detach().to("cpu", copy=True) for n, p in _trained(model, head)}
        else:
            stale += 1
            if s.early_stopping and stale >= s.early_stopping:
                break

    if best_state is not None:
        with torch.no_grad():
            params = dict(_trained(model, head))
            for n, v in best_state.items():
                params[n].copy_(v.to(device))
    final = {k: v for k, v in history[best_epoch - 1].items() if k.startswith("dev/")}
    pred_dir = out_dir / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    _write_predictions(pred_dir, "dev", dev.sentences, best_dev_pred or [])
    per_type = {"dev": {g: score_json(sc) for g, sc in evaluate(dev.sentences, best_dev_pred, "dev", scheme)[1].genres.items()}}
    if test is not None and test.windows:
        test_pred = predict(model, head, test, id2label, device, s.eval_batch_size, bf16, pad_id)
        test_metrics, test_genres = evaluate(test.sentences, test_pred, "test", scheme)
        final.update(test_metrics)
        _write_predictions(pred_dir, "test", test.sentences, test_pred)
        per_type["test"] = {g: score_json(sc) for g, sc in test_genres.genres.items()}
    final.update({
        "best_epoch": float(best_epoch),
        "epoch_seconds": sum(h["epoch_seconds"] for h in history) / len(history),
        "train_tokens_per_second": sum(h["train_tokens"] for h in history) / max(sum(h["epoch_seconds"] for h in history), 1e-9),
        "peak_memory_mb": max(h["peak_memory_mb"] for h in history),
        "epochs_run": float(len(history)),
        **(extra_final or {}),
    })
    (out_dir / "per_type.json").write_text(json.dumps(per_type, indent=2, ensure_ascii=False), encoding="utf-8")
    settings = {"batch_size": s.batch_size, "grad_accum": s.grad_accum, "device": str(device), "bf16": bf16}
    return RunResult(history, final, best_epoch, out_dir, settings)


def _trained(model, head):
    """(name, parameter) of everything that trains: the model's and the head's (prefixed `head.`)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad] + \
        [(f"head.{n}", p) for n, p in head.named_parameters() if p.requires_grad]


def _write_predictions(folder: Path, split: str, sentences: list[Sentence], pred: list[list[str]]) -> None:
    """Official 2-column files (`char PRED`) and 3-column conlleval files (`char GOLD PRED`) per genre."""
    genres = sorted({s.genre for s in sentences})
    for g in genres:
        idx = [i for i, s in enumerate(sentences) if s.genre == g]
        sents = [sentences[i] for i in idx]
        write_conll(sents, folder / f"{split}_{g}.txt", tags=[pred[i] for i in idx])
        three = [[f"{t} {p}" for t, p in zip(s.tags, pred[i])] for s, i in zip(sents, idx)]
        write_conll(sents, folder / f"{split}_{g}.conll", tags=three)
