"""Seconds per training epoch of the three heads (linear, crf, bilstm-crf) on a scratch BERT, tiny and base,
on the real ROCLING training files, CPU, batch 32, max_length 128; interleaved repeats, medians, ratios vs linear.
OMP_WAIT_POLICY defaults to PASSIVE: on a shared, loaded 2-core machine spinning OpenMP threads made epochs 7-25x slower.

Usage: python bench/heads_bench.py [--shapes tiny,base] [--repeats 3] [--base-sentences 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # scratch backbones only
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once when torch loads; export ACTIVE to compare
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rocling"
HEADS = ("linear", "crf", "bilstm-crf")
LR = {"tiny": 1e-3, "base": 1e-4}  # irrelevant to speed; keeps one epoch finite


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def corpus(data_dir: Path):
    """The study's data (studies/rocling_scratch.yaml): ft+sm jsonl and wa CoNLL, 80/20 split seed 0."""
    from ablate.data.corpus import load_corpus
    from ablate.spec import DataSpec

    spec = DataSpec.model_validate({
        "root": str(data_dir), "max_length": 128, "dev": {"split": 0.2, "seed": 0},
        "train": [{"path": "healthner_test.jsonl"}, {"path": "rocling22_chner_truth.txt", "genre": "wa"}],
    })
    return load_corpus(spec)


def run_spec(head: str, shape: str, seed: int):
    from ablate.spec import RunSpec

    return RunSpec.model_validate({
        "study": "heads_bench", "backbone": f"bert-{shape}", "backbone_spec": {"scratch": "bert", "shape": shape},
        "finetune": "full", "loss": "ce", "head": head, "data": {"train": [{"path": "x.jsonl"}], "dev": {"split": 0.2}},
        "train": {"epochs": 1, "batch_size": 32, "eval_batch_size": 64, "lr": LR[shape], "seed": seed,
                  "precision": "fp32"},
        "axes": {},
    })


def one_epoch(folder: str, c, train_sents, dev_sents, head: str, shape: str, seed: int, out: Path) -> dict:
    """One cell as ablate.executor.run_one composes it, one epoch: its epoch_seconds and train tokens."""
    import torch

    from ablate.data.encode import encode
    from ablate.models.backbones import load_model
    from ablate.models.heads import build_head
    from ablate.trainer import Split, train

    spec = run_spec(head, shape, seed)
    torch.manual_seed(seed)
    model, tok = load_model(folder, c.labels)
    label2id = {t: i for i, t in enumerate(c.labels)}
    tr = Split(encode(train_sents, tok, label2id, 128), train_sents)
    dev = Split(encode(dev_sents, tok, label2id, 128), dev_sents)
    counts = [0] * len(c.labels)
    for w in tr.windows:
        for label in w.labels:
            if label >= 0:
                counts[label] += 1
    model, h = build_head(head, model, spec, c.labels, counts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    res = train(model, h, tr, dev, None, c.labels, spec.train, torch.device("cpu"), out, pad_id=pad)
    e = res.history[0]
    return {"seconds": e["epoch_seconds"], "tokens": e["train_tokens"], "windows": len(tr.windows)}


def bench_shape(shape: str, c, args, work: Path) -> list[str]:
    from ablate.models.backbones import resolve_backbone
    from ablate.spec import BackboneSpec

    folder = resolve_backbone(BackboneSpec(scratch="bert", shape=shape), [s.chars for s in c.train], work / "cache")
    train_sents = list(c.train)
    if shape != "tiny":  # a fixed seeded subset, the same for every head and repeat
        random.Random(0).shuffle(train_sents)
        train_sents = train_sents[: args.base_sentences]
    dev_sents = c.dev[:16]
    for head in HEADS:  # untimed warm-up: one batch per head
        one_epoch(folder, c, train_sents[:32], dev_sents, head, shape, 0, work / "warm")
    runs: dict[str, list[dict]] = {h: [] for h in HEADS}
    t0, load0 = time.perf_counter(), load_avg()
    for r in range(args.repeats):  # interleaved: load drifts hit every head alike
        for head in HEADS:
            runs[head].append(one_epoch(folder, c, train_sents, dev_sents, head, shape, 1 + r, work / f"{head}{r}"))
            print(f"  {shape} repeat {r + 1} {head}: {runs[head][-1]['seconds']:.2f} s  (load {load_avg()})",
                  file=sys.stderr, flush=True)
    med = {h: statistics.median(x["seconds"] for x in runs[h]) for h in HEADS}
    lines = [f"\n### {shape}: {len(train_sents)} train sentences ({runs['linear'][0]['windows']} windows, "
             f"{int(runs['linear'][0]['tokens'])} tokens), {args.repeats} repeats; wall "
             f"{time.perf_counter() - t0:.0f} s; load before {load0}, after {load_avg()}\n",
             "| head | s / epoch, median (min-max) | tokens/s | vs linear (median) | vs linear per repeat |",
             "|---|---:|---:|---:|---|"]
    for h in HEADS:
        s = [x["seconds"] for x in runs[h]]
        per = ", ".join(f"{a['seconds'] / b['seconds']:.2f}" for a, b in zip(runs[h], runs["linear"]))
        lines.append(f"| {h} | {med[h]:.2f} ({min(s):.2f}-{max(s):.2f}) | {runs[h][0]['tokens'] / med[h]:,.0f} "
                     f"| {med[h] / med['linear']:.2f}x | {per} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description="Seconds per training epoch of the linear, crf and bilstm-crf heads (scratch BERT, CPU).")
    ap.add_argument("--shapes", default="tiny,base", help="comma-separated: tiny, base")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--base-sentences", type=int, default=256, help="seeded subset of train for base")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()

    import torch

    from ablate.executor import _quiet_libraries

    torch.set_num_threads(args.threads)
    _quiet_libraries()
    c = corpus(args.data)
    out = [f"heads_bench: torch {torch.__version__}, {args.threads} threads, batch 32, max_length 128, fp32 CPU, "
           f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; train {len(c.train)}, dev 16 of {len(c.dev)}"]
    with tempfile.TemporaryDirectory(prefix="heads_bench-") as tmp:
        for shape in args.shapes.split(","):
            out += bench_shape(shape.strip(), c, args, Path(tmp))
    print("\n".join(out))


if __name__ == "__main__":
    main()
