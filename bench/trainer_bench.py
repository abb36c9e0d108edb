"""Time ablate's training loop against a transformers `Trainer` set up as run_ner.py sets it up.

Same data (the public ROCLING training files, 80/20 split, seed 0), same scratch backbone folder,
seed, batch size, epochs, lr, warm-up, weight decay and clipping for all three:
  ablate   `ablate.trainer.train` (length-grouped batches, no fixed padding)
  trainer  `Trainer` as examples/pytorch/token-classification/run_ner.py: is_split_into_words, the label
           on the first sub-token, truncation at max_length, DataCollatorForTokenClassification, random order
  grouped  the same `Trainer` with length grouping (`group_by_length=True`)
Reported: real (non-padding) train tokens per second (attention-mask ones / training seconds, no
evaluation), the padded share of the train batches, and dev F1 at the last epoch (ablate.metrics).
After an untimed warm-up of each, repeats rotate the order of the three and use seed, seed+1, ...;
speeds are medians over repeats. See bench/README.md for the figures measured.

Usage: python bench/trainer_bench.py [--shape tiny|base|all] [--epochs N] [--steps N] [--batch-size B]
                                     [--repeats R] [--lr LR] [--dev-f1|--no-dev-f1] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # scratch backbones only: never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "rocling"
OUT = ROOT / "bench" / "out"
VARIANTS = ("ablate", "trainer", "grouped")
TITLES = {"ablate": "ablate loop", "trainer": "Trainer (run_ner)", "grouped": "Trainer group_by_length"}
# Floors of issue 4, reported (never asserted): speed ratios, padded share, F1 gap in points.
FLOOR_VS_TRAINER, FLOOR_VS_GROUPED, FLOOR_PADDING, FLOOR_F1_POINTS = 1.3, 1.0, 0.10, 1.0


@dataclass(frozen=True)
class BenchSpec:
    """One benchmark: everything the three loops share."""

    shape: str
    epochs: int
    steps: int | None  # None: whole epochs of the train split; N: a seeded N x batch_size subset, 1 epoch
    batch_size: int
    lr: float
    repeats: int
    dev_f1: bool = True  # False: every loop evaluates 16 dev sentences only (ablate's loop always evaluates)
    seed: int = 0
    max_length: int = 256  # above the longest ROCLING training sentence (249): nothing truncated
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 5.0
    eval_batch_size: int = 64
    threads: int = 2


# --- data and model -------------------------------------------------------------------------


def load_data(data_dir: Path):
    """The two public ROCLING training files (ft+sm jsonl, wa CoNLL), repaired, split 80/20 with seed 0."""
    from ablate.data.readers import read_corpus
    from ablate.data.splits import split
    from ablate.data.tags import entity_types, label_list, repair_tags

    sentences = []
    for name, genre in (("healthner_test.jsonl", None), ("rocling22_chner_truth.txt", "wa")):
        path = data_dir / name
        sentences += repair_tags(read_corpus(path, genre), str(path)).sentences
    train, dev = split(sentences, 0.2, seed=0)
    return train, dev, label_list(entity_types(train))


def train_subset(train: list, spec: BenchSpec) -> list:
    """All of train, or (with --steps) a seeded sample of steps x batch_size sentences: one epoch = N steps."""
    if spec.steps is None:
        return train
    n = min(len(train), spec.steps * spec.batch_size)
    return random.Random(spec.seed).sample(train, n)


def build_backbone(shape: str, train: list, work: Path) -> str:
    """One scratch BERT folder (char tokenizer + random weights, seed 0) that every loop loads by path."""
    from ablate.models import prepare_backbone
    from ablate.spec import BackboneSpec

    return prepare_backbone(BackboneSpec(scratch="bert", shape=shape), [s.chars for s in train], work / shape, seed=0)


def fresh_model(folder: str, labels: list[str], seed: int):
    """The backbone with a new head; seeding first gives every loop the same head weights."""
    import torch

    from ablate.models import load_model

    torch.manual_seed(seed)
    return load_model(folder, labels, "full")


# --- (a) ablate -------------------------------------------------------------------------------


def run_ablate(folder: str, labels: list[str], train: list, dev: list, spec: BenchSpec, seed: int) -> dict:
    import torch

    from ablate.data.encode import batches, encode, padding_fraction
    from ablate.losses import build_loss
    from ablate.models.heads import LinearHead
    from ablate.spec import TrainSpec
    from ablate.trainer import Split, train as ablate_train

    model, tokenizer = fresh_model(folder, labels, seed)
    label2id = {t: i for i, t in enumerate(labels)}
    train_split = Split(encode(train, tokenizer, label2id, spec.max_length), train)
    dev_split = Split(encode(dev, tokenizer, label2id, spec.max_length), dev)
    s = TrainSpec(
        lr=spec.lr, epochs=spec.epochs, seed=seed, batch_size=spec.batch_size, eval_batch_size=spec.eval_batch_size,
        warmup_ratio=spec.warmup_ratio, weight_decay=spec.weight_decay, max_grad_norm=spec.max_grad_norm,
        precision="fp32",
    )
    with tempfile.TemporaryDirectory(prefix="bench-ablate-") as tmp:
        head = LinearHead(build_loss("ce", len(labels), s))
        result = ablate_train(model, head, train_split, dev_split, None, labels, s,
                              torch.device("cpu"), Path(tmp), pad_id=tokenizer.pad_token_id)
    # The same batches the loop drew (it seeds each epoch with seed * 1000 + epoch).
    real = padded = 0
    for epoch in range(1, spec.epochs + 1):
        order = batches(train_split.windows, s.batch_size, shuffle=True, seed=s.seed * 1000 + epoch)
        n = sum(len(w) for w in train_split.windows)
        real += n
        padded += round(n / (1 - padding_fraction(train_split.windows, order)))
    seconds = sum(h["epoch_seconds"] for h in result.history)
    last = result.history[-1]  # equal epochs for all three: the last epoch, not ablate's best one
    loss = statistics.mean(h["train/loss"] for h in result.history)  # over all steps, as Trainer's training_loss
    return _figures(real, padded, seconds, len(train_split.windows), last["dev/f1"], last["dev/macro_f1"], loss)


# --- (b, c) transformers Trainer as run_ner.py ------------------------------------------------


def run_ner_features(sentences: list, tokenizer, label2id: dict, max_length: int) -> tuple[list[dict], list[list]]:
    """run_ner.py's tokenize_and_align_labels (label_all_tokens=False), and the word ids for read-back."""
    enc = tokenizer([list(s.chars) for s in sentences], truncation=True, max_length=max_length,
                    is_split_into_words=True)
    features, word_ids = [], []
    for k, s in enumerate(sentences):
        wids = enc.word_ids(k)
        labels, prev = [], None
        for w in wids:
            # Specials and later sub-tokens of a word: -100; the first sub-token: the word's label.
            labels.append(-100 if w is None or w == prev else label2id.get(s.tags[w], -100))
            prev = w
        features.append({key: enc[key][k] for key in enc.keys()} | {"labels": labels})
        word_ids.append(wids)
    return features, word_ids


class CountingCollator:
    """Wraps the collator to count attention-mask ones and padded tensor cells of the train batches."""

    def __init__(self, inner):
        self.inner, self.real, self.cells = inner, 0, 0

    def __call__(self, features):
        batch = self.inner(features)
        mask = batch["attention_mask"]
        self.real += int(mask.sum())
        self.cells += mask.numel()
        return batch


def run_trainer(folder: str, labels: list[str], train: list, dev: list, spec: BenchSpec, seed: int,
                grouped: bool) -> dict:
    import numpy as np
    from transformers import DataCollatorForTokenClassification, PrinterCallback, Trainer, TrainingArguments

    from ablate.trainer import evaluate

    model, tokenizer = fresh_model(folder, labels, seed)
    label2id = {t: i for i, t in enumerate(labels)}
    train_features, _ = run_ner_features(train, tokenizer, label2id, spec.max_length)
    dev_features, dev_word_ids = run_ner_features(dev, tokenizer, label2id, spec.max_length)
    collator = CountingCollator(DataCollatorForTokenClassification(tokenizer))
    clock = _epoch_clock()
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=spec.batch_size,
            per_device_eval_batch_size=spec.eval_batch_size, learning_rate=spec.lr, num_train_epochs=spec.epochs,
            lr_scheduler_type="linear", **_warmup(spec.warmup_ratio), weight_decay=spec.weight_decay,
            max_grad_norm=spec.max_grad_norm, seed=seed,  # optim: the default (adamw_torch_fused on torch >= 2.8)
            eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
            disable_tqdm=True, use_cpu=True, dataloader_pin_memory=False, **_grouping(grouped),
        )
        trainer = Trainer(model=model, args=args, train_dataset=train_features, data_collator=collator,
                          processing_class=tokenizer, callbacks=[clock])
        trainer.remove_callback(PrinterCallback)  # its end-of-training dict would interleave with our table
        out = trainer.train()
        real, cells = collator.real, collator.cells
        # transformers >= 4.45 (PR #33514) also length-groups the *eval* sampler under group_by_length, and
        # predict() hands rows back in that shuffled order: read dev back in file order, grouping off.
        for key, value in _grouping(False).items():
            setattr(trainer.args, key, value)
        logits = trainer.predict(dev_features).predictions  # (sentences, longest, labels), -100 padded
    pred = []
    for s, wids, row in zip(dev, dev_word_ids, np.asarray(logits).argmax(-1)):
        tags, prev = ["O"] * len(s.chars), None  # a character with no token (a space) stays O, as in run_ner
        for t, w in enumerate(wids):
            if w is not None and w != prev:
                tags[w] = labels[int(row[t])]
            prev = w
        pred.append(tags)
    metrics, _ = evaluate(dev, pred, "dev")
    return _figures(real, cells, clock.seconds, len(train_features), metrics["dev/f1"], metrics["dev/macro_f1"],
                    out.training_loss)


def _warmup(ratio: float) -> dict:
    """Warm-up as a ratio: transformers 5 takes it as a float `warmup_steps` below 1 (ceil, as ablate)."""
    from transformers import TrainingArguments

    key = "warmup_ratio" if "warmup_ratio" in TrainingArguments.__dataclass_fields__ else "warmup_steps"
    return {key: ratio}


def _grouping(grouped: bool) -> dict:
    """`group_by_length=True`; transformers 5.x renamed it train_sampling_strategy='group_by_length'."""
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    if "group_by_length" in fields:
        return {"group_by_length": grouped}
    return {"train_sampling_strategy": "group_by_length" if grouped else "random"}


def _epoch_clock():
    """A callback timing the Trainer's epochs (the class is built here: transformers is imported lazily)."""
    from transformers import TrainerCallback

    class EpochClock(TrainerCallback):
        """Seconds inside the Trainer's epochs (its training steps, no set-up, no evaluation)."""

        def __init__(self):
            self.seconds, self._start = 0.0, 0.0

        def on_epoch_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            self.seconds += time.perf_counter() - self._start

    return EpochClock()


def _figures(real: int, cells: int, seconds: float, examples: int, f1: float, macro_f1: float, loss: float) -> dict:
    return {"real_tokens": real, "padded_tokens": cells - real, "padding": (cells - real) / cells if cells else 0.0,
            "seconds": seconds, "tokens_per_second": real / seconds if seconds else 0.0, "examples": examples,
            "dev_f1": f1, "dev_macro_f1": macro_f1, "train_loss": loss}


# --- driver -----------------------------------------------------------------------------------


def run_bench(spec: BenchSpec, data_dir: Path, work: Path, log=print) -> dict:
    """All repeats of the three loops on one shape; per-run figures, medians and ratios."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the fresh head's "newly initialized" report is expected
    hf_logging.disable_progress_bar()
    train, dev, labels = load_data(data_dir)
    sub = train_subset(train, spec)
    dev = dev if spec.dev_f1 else dev[:16]
    folder = build_backbone(spec.shape, train, work)
    steps = math.ceil(len(sub) / spec.batch_size) * spec.epochs
    log(f"[{spec.shape}] {len(sub)} train / {len(dev)} dev sentences, {spec.epochs} epoch(s), {steps} optimizer "
        f"steps per run, batch {spec.batch_size}, lr {spec.lr:g}, {spec.repeats} repeat(s)")
    # Untimed warm-up of each loop (allocator, oneDNN kernels, lazy imports): else whichever runs first pays it.
    warm = replace(spec, epochs=1)
    few = sub[: 2 * spec.batch_size]
    run_ablate(folder, labels, few, dev[:16], warm, spec.seed)
    for grouped in (False, True):
        run_trainer(folder, labels, few, dev[:16], warm, spec.seed, grouped)
    runs: list[dict] = []
    for r in range(spec.repeats):
        seed = spec.seed + r
        order = VARIANTS[r % 3:] + VARIANTS[: r % 3]  # rotate: no loop always runs first (or warm)
        for v in order:
            gc.collect()
            load, wall, cpu = os.getloadavg()[0], time.perf_counter(), time.process_time()
            if v == "ablate":
                fig = run_ablate(folder, labels, sub, dev, spec, seed)
            else:
                fig = run_trainer(folder, labels, sub, dev, spec, seed, grouped=v == "grouped")
            # Contention check: cores this process kept busy (about `threads` when it had the machine).
            busy = (time.process_time() - cpu) / (time.perf_counter() - wall)
            if not spec.dev_f1:
                fig["dev_f1"] = fig["dev_macro_f1"] = None
            runs.append({"variant": v, "repeat": r, "seed": seed, **fig, "load_before": load, "cores_busy": busy})
            f1 = "   -- " if fig["dev_f1"] is None else f"{100 * fig['dev_f1']:5.2f}"
            log(f"  repeat {r} {v:8s} {fig['tokens_per_second']:9.0f} tok/s  {fig['seconds']:7.1f} s  "
                f"padding {100 * fig['padding']:5.1f}%  dev F1 {f1}  loss {fig['train_loss']:.3f}  "
                f"load {load:.1f}  cores busy {busy:.2f}", flush=True)
    summary = summarise(runs)
    return {"spec": asdict(spec), "train_sentences": len(sub), "dev_sentences": len(dev),
            "optimizer_steps": steps, "runs": runs, "summary": summary, "floors": floors(summary)}


def summarise(runs: list[dict]) -> dict:
    out = {}
    for v in VARIANTS:
        rs = [r for r in runs if r["variant"] == v]
        f1s = [r["dev_f1"] for r in rs if r["dev_f1"] is not None]
        out[v] = {
            "tokens_per_second": statistics.median(r["tokens_per_second"] for r in rs),
            "best_tokens_per_second": max(r["tokens_per_second"] for r in rs),
            "seconds": statistics.median(r["seconds"] for r in rs),
            "padding": statistics.median(r["padding"] for r in rs),
            "dev_f1": statistics.mean(f1s) if f1s else None,
            "dev_f1_sd": statistics.stdev(f1s) if len(f1s) > 1 else 0.0,
            "dev_macro_f1": statistics.mean(r["dev_macro_f1"] for r in rs) if f1s else None,
        }
    a, best = out["ablate"]["tokens_per_second"], out["ablate"]["best_tokens_per_second"]
    for v in VARIANTS:
        out[v]["speedup"] = a / out[v]["tokens_per_second"] if out[v]["tokens_per_second"] else 0.0
        out[v]["best_speedup"] = best / out[v]["best_tokens_per_second"] if out[v]["best_tokens_per_second"] else 0.0
    return out


def floors(summary: dict) -> dict:
    """The issue's floors, each with the measured value and whether it was met (reported, not asserted)."""
    a = summary["ablate"]
    gap = None
    if a["dev_f1"] is not None:
        gap = max(abs(a["dev_f1"] - summary[v]["dev_f1"]) for v in ("trainer", "grouped")) * 100
    checks = {
        "speedup_vs_trainer": (summary["trainer"]["speedup"], summary["trainer"]["speedup"] >= FLOOR_VS_TRAINER),
        "speedup_vs_grouped": (summary["grouped"]["speedup"], summary["grouped"]["speedup"] >= FLOOR_VS_GROUPED),
        "ablate_padding": (a["padding"], a["padding"] <= FLOOR_PADDING),
        "dev_f1_gap_points": (gap, None if gap is None else gap <= FLOOR_F1_POINTS),
    }
    return {k: {"value": v, "met": ok} for k, (v, ok) in checks.items()}


def markdown(result: dict) -> str:
    spec, s, f = result["spec"], result["summary"], result["floors"]
    rows = [
        f"### shape `{spec['shape']}`: {result['train_sentences']} train sentences, {spec['epochs']} epoch(s) = "
        f"{result['optimizer_steps']} steps, batch {spec['batch_size']}, lr {spec['lr']:g}, "
        f"{spec['repeats']} repeat(s) (medians, best run in brackets; dev F1 at the last epoch, mean over seeds)",
        "",
        "| loop | real train tokens/s | ablate speed-up | padded tokens | train s | dev F1 | dev macro F1 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for v in VARIANTS:
        x = s[v]
        if x["dev_f1"] is None:
            f1 = macro = "not run"
        else:
            sd = f" ± {100 * x['dev_f1_sd']:.2f}" if spec["repeats"] > 1 else ""
            f1, macro = f"{100 * x['dev_f1']:.2f}{sd}", f"{100 * x['dev_macro_f1']:.2f}"
        rows.append(f"| {TITLES[v]} | {x['tokens_per_second']:,.0f} ({x['best_tokens_per_second']:,.0f}) | "
                    f"{x['speedup']:.2f}x ({x['best_speedup']:.2f}x) | {100 * x['padding']:.1f}% | "
                    f"{x['seconds']:.1f} | {f1} | {macro} |")
    mark = lambda ok: "n/a (no dev F1)" if ok is None else "met" if ok else "NOT met"  # noqa: E731
    rows += [
        "",
        f"Floors: ablate/Trainer {f['speedup_vs_trainer']['value']:.2f}x (>= {FLOOR_VS_TRAINER}x: "
        f"{mark(f['speedup_vs_trainer']['met'])}); ablate/grouped {f['speedup_vs_grouped']['value']:.2f}x "
        f"(>= {FLOOR_VS_GROUPED}x: {mark(f['speedup_vs_grouped']['met'])}); ablate padding "
        f"{100 * f['ablate_padding']['value']:.1f}% (<= {100 * FLOOR_PADDING:.0f}%: "
        f"{mark(f['ablate_padding']['met'])}); "
        f"dev F1 gap {_num(f['dev_f1_gap_points']['value'])} points (<= {FLOOR_F1_POINTS:g}: "
        f"{mark(f['dev_f1_gap_points']['met'])})",
    ]
    return "\n".join(rows)


def _num(x: float | None) -> str:
    return "--" if x is None else f"{x:.2f}"


DEFAULTS = {  # shape -> (epochs, steps, lr, repeats, dev_f1): `make bench` runs both in ~15 minutes on 2 cores
    "tiny": (3, None, 2e-3, 3, True),
    "base": (1, 24, 1e-4, 1, False),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=("tiny", "base", "all"), default="all")
    p.add_argument("--epochs", type=int, help="epochs per run (tiny default 3; base 1)")
    p.add_argument("--steps", type=int, help="optimizer steps per epoch: a seeded subset of steps x batch sentences "
                   "(base default 24; tiny default: the whole train split)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, help="learning rate (tiny default 2e-3, base 1e-4)")
    p.add_argument("--repeats", type=int, help="runs of each loop, order rotated, seeds 0.. (default 3)")
    p.add_argument("--dev-f1", action=argparse.BooleanOptionalAction, default=None,
                   help="score the whole dev split (tiny default: yes; base: no, ~1.5 min per loop on 2 cores)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 1 epoch of 30 steps (base: 4)")
    p.add_argument("--data", type=Path, default=DATA, help="folder with the ROCLING training files")
    p.add_argument("--out", type=Path, default=OUT, help="where the JSON goes (git-ignored)")
    return p.parse_args(argv)


def spec_for(shape: str, a: argparse.Namespace) -> BenchSpec:
    epochs, steps, lr, repeats, dev_f1 = DEFAULTS[shape]
    if a.quick:
        epochs, steps, repeats = 1, 4 if shape == "base" else 30, 1
    return BenchSpec(shape=shape, epochs=a.epochs or epochs, steps=a.steps or steps, batch_size=a.batch_size,
                     lr=a.lr or lr, repeats=a.repeats or repeats, threads=a.threads,
                     dev_f1=dev_f1 if a.dev_f1 is None else a.dev_f1)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    import torch
    import transformers

    torch.set_num_threads(a.threads)
    shapes = ("tiny", "base") if a.shape == "all" else (a.shape,)
    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    a.out.mkdir(parents=True, exist_ok=True)
    tables = []
    with tempfile.TemporaryDirectory(prefix="bench-backbones-") as work:
        for shape in shapes:
            spec = spec_for(shape, a)
            start = time.perf_counter()
            result = run_bench(spec, a.data, Path(work))
            result["env"], result["wall_seconds"] = env, time.perf_counter() - start
            name = f"trainer_bench_{shape}{'_quick' if a.quick else ''}.json"
            (a.out / name).write_text(json.dumps(result, indent=2), encoding="utf-8")
            tables.append(markdown(result))
            print(f"\n{tables[-1]}\n\n(wall {result['wall_seconds']:.0f} s; JSON: {a.out / name})\n", flush=True)
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
