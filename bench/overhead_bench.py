"""Per-cell overhead of `ablate run` on CPU with tiny models: what a cell costs beyond its training epochs.

Part 1, end to end: a study of N tiny cells (scratch BERT, 64 wide, 2 layers; demo corpus; 1 epoch)
through the real CLI. From the MLflow runs: cell wall = end_time - start_time, training = the
logged epoch_seconds, overhead = cell wall - training; also the time between cells (the worker's
claim and bookkeeping) and before the first cell (plan, queue, worker and fork-server start).
Part 2, breakdown: the same steps timed one by one in this process (fork server start and a fork,
corpus load, scratch backbone build and cached reuse, model load, encoding, the trainer's evaluation
and prediction writing, MLflow store open, params, per-epoch metrics, artifacts).
Usage: python bench/overhead_bench.py [--cells 6] [--sentences 150] [--out FILE.json]   (floor: <= 10 s a cell)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ABLATE = str(Path(sys.executable).with_name("ablate"))


def write_study(folder: Path, cells: int, sentences: int) -> Path:
    from ablate.data.demo import make_demo_corpus

    make_demo_corpus(folder / "data", sentences=sentences, seed=3)
    lrs = [round(1.0e-3 * (k + 1), 6) for k in range((cells + 1) // 2)]
    study = {
        "name": "overhead",
        "data": {"root": "data", "train": ["train.jsonl"], "dev": ["dev.jsonl"], "test": ["test.jsonl"], "max_length": 64},
        "backbones": {"tb": {"scratch": "bert", "shape": "tiny"}},
        "grid": {"finetune": ["full", "lora"], "lr": lrs},
        "train": {"epochs": 1, "batch_size": 8},
    }
    path = folder / "overhead.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


def end_to_end(folder: Path, study: Path) -> dict:
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "ABLATE_CACHE": str(folder / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.time()
    r = subprocess.run([ABLATE, "run", str(study), "--no-display"], cwd=folder, env=env, capture_output=True, text=True)
    t1 = time.time()
    if r.returncode != 0:
        raise SystemExit(f"ablate run failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    client = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("overhead").experiment_id
    runs = [x for x in client.search_runs([exp], order_by=["attributes.start_time ASC"])
            if x.data.tags.get("ablate.role") == "cell"]
    cells = []
    for x in runs:
        train = sum(m.value for m in client.get_metric_history(x.info.run_id, "epoch_seconds") if m.step >= 1)
        wall = (x.info.end_time - x.info.start_time) / 1000
        cells.append({"name": x.info.run_name, "status": x.info.status, "start": x.info.start_time / 1000,
                      "end": x.info.end_time / 1000, "wall": wall, "training": train, "overhead": wall - train})
    gaps = [b["start"] - a["end"] for a, b in zip(cells, cells[1:])]
    return {
        "total_seconds": t1 - t0,
        "before_first_cell": cells[0]["start"] - t0,
        "after_last_cell": t1 - cells[-1]["end"],
        "cells": cells,
        "between_cells": gaps,
        "overhead_median": statistics.median(c["overhead"] for c in cells),
        "overhead_first": cells[0]["overhead"],
        "overhead_rest_median": statistics.median(c["overhead"] for c in cells[1:]) if len(cells) > 1 else None,
        "per_cell_end_to_end": (t1 - t0) / len(cells),
    }


def _noop() -> None:
    pass


# Imported lazily inside a cell (not by the fork server's PRELOAD), so every forked cell pays them again.
LAZY = ("transformers.models.bert.modeling_bert",
        "peft.tuners.lora", "ablate.trainer", "ablate.models.heads")


def lazy_imports() -> list[tuple[str, float]]:
    """Seconds to import each LAZY module in a fresh process that has already imported PRELOAD."""
    code = (
        "import importlib, json, time\n"
        "from ablate.scheduler.worker import PRELOAD\n"
        "[importlib.import_module(m) for m in PRELOAD]\n"
        "out = []\n"
        f"for m in {LAZY!r}:\n"
        "    t = time.perf_counter(); importlib.import_module(m); out.append((m, time.perf_counter() - t))\n"
        "print(json.dumps(out))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [tuple(x) for x in json.loads(r.stdout.strip().splitlines()[-1])]


def breakdown(folder: Path, study: Path) -> list[tuple[str, float]]:
    """Each step of a cell, timed apart in this process (imports first, as the fork server pays them)."""
    out: list[tuple[str, float]] = []
    clock = [time.perf_counter()]

    def mark(name: str) -> None:
        now = time.perf_counter()
        out.append((name, now - clock[0]))
        clock[0] = now

    import multiprocessing as mp

    from ablate.scheduler.worker import PRELOAD

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    clock[0] = time.perf_counter()
    p = ctx.Process(target=_noop)
    p.start()
    p.join()
    mark("fork server start (imports torch, transformers, peft, mlflow once per worker) + 1st process")
    p = ctx.Process(target=_noop)
    p.start()
    p.join()
    mark("a fresh cell process forked from the warm server")

    import importlib

    for mod in PRELOAD:
        importlib.import_module(mod)
    mark("the same imports in this process (what a cold cell process would pay each time)")

    from ablate.data.corpus import load_corpus
    from ablate.data.encode import encode_cached
    from ablate.grid import expand
    from ablate.models.backbones import apply_lora, load_model, resolve_backbone
    from ablate.models.heads import build_head
    from ablate.spec import load_study
    from ablate.tracking import Tracker
    from ablate.trainer import Split, train

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    spec = expand(load_study(study))[0]
    cache = folder / "bd-cache"
    mark("load_study + expand")
    corpus = load_corpus(spec.data)
    mark("read + repair + split the corpus")
    chars = [s.chars for s in corpus.train]
    model_path = resolve_backbone(spec.backbone_spec, chars, cache)
    mark("scratch backbone: build tokenizer + model, save (first cell of a study only)")
    resolve_backbone(spec.backbone_spec, chars, cache)
    mark("scratch backbone: cached (every later cell)")
    model, tokenizer = load_model(model_path, corpus.labels)
    mark("load_model (from the saved folder, fresh classifier)")
    label2id = {t: i for i, t in enumerate(corpus.labels)}
    splits = [Split(encode_cached(s, tokenizer, label2id, spec.data.max_length, cache / "enc"), s)
              for s in (corpus.train, corpus.dev, corpus.test)]
    mark("encode train/dev/test (cache miss)")
    for s in (corpus.train, corpus.dev, corpus.test):
        encode_cached(s, tokenizer, label2id, spec.data.max_length, cache / "enc")
    mark("encode train/dev/test (cache hit)")
    counts = [0] * len(corpus.labels)  # training label counts, as ablate.executor.run_one counts them
    for w in splits[0].windows:
        for label in w.labels:
            if label >= 0:
                counts[label] += 1
    model, head = build_head(spec.head, model, spec, corpus.labels, counts)  # before LoRA, as run_one
    if spec.finetune == "lora":
        model = apply_lora(model, spec.train.lora)
    mark(f"build_head ({spec.head} + the cell's loss){' + LoRA adapters' if spec.finetune == 'lora' else ''}")
    start = time.perf_counter()
    res = train(model, head, *splits, corpus.labels, spec.train, __import__("torch").device("cpu"), folder / "bd-out",
                pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    wall = time.perf_counter() - start
    training = sum(h["epoch_seconds"] for h in res.history)
    out.append(("trainer: the training epoch (epoch_seconds)", training))
    out.append(("trainer: dev + test evaluation, predictions and per-type files", wall - training))
    clock[0] = time.perf_counter()

    uri = f"sqlite:///{folder / 'bd-mlruns' / 'mlflow.db'}"
    tracker = Tracker(uri)
    exp = tracker.experiment_id("bd")
    parent = tracker.parent_run(exp, "bd")
    mark("MLflow: new sqlite store (schema), experiment, parent run")
    tracker = Tracker(uri)
    mark("MLflow: Tracker() on the existing store (each cell process opens one)")
    mid = tracker.start_cell(exp, parent, "bd", "x" * 12, "bd-cell", spec.flat_params(), 1)
    mark(f"MLflow: create the cell run + {len(spec.flat_params())} params + tags (git commit, versions)")
    tracker.log_metrics(mid, res.history[0], step=1)
    mark("MLflow: one epoch's metrics (log_batch)")
    tracker.finish_cell(mid, res.final, res.outputs, res.settings)
    mark("MLflow: final metrics + artifacts (predictions, per_type.json) + FINISHED")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=6)
    ap.add_argument("--sentences", type=int, default=150)
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results: dict = {"load_average_before": os.getloadavg()[0], "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="overhead-bench-") as tmp:
        folder = Path(tmp)
        study = write_study(folder, args.cells, args.sentences)
        e2e = end_to_end(folder, study)
        results["end_to_end"] = e2e
        print(f"`ablate run`, {len(e2e['cells'])} cells of 1 epoch: {e2e['total_seconds']:.1f} s end to end "
              f"({e2e['per_cell_end_to_end']:.1f} s a cell); {e2e['before_first_cell']:.1f} s before the first cell "
              f"started, {e2e['after_last_cell']:.1f} s after the last one ended")
        print(f"{'cell':<32} {'wall':>6} {'train':>6} {'overhead':>8}")
        for c in e2e["cells"]:
            print(f"{c['name']:<32} {c['wall']:6.2f} {c['training']:6.2f} {c['overhead']:8.2f}")
        print(f"overhead a cell: median {e2e['overhead_median']:.2f} s (first cell {e2e['overhead_first']:.2f} s, "
              f"later cells {e2e['overhead_rest_median'] or 0:.2f} s); between cells "
              f"{statistics.median(e2e['between_cells']) if e2e['between_cells'] else 0:.2f} s (median)")
        if not args.no_breakdown:
            (folder / "bd").mkdir()
            steps = breakdown(folder / "bd", study)
            steps += [(f"import {m} in a forked cell (lazy: not in the fork server's PRELOAD)", t) for m, t in lazy_imports()]
            results["breakdown"] = [{"step": n, "seconds": s} for n, s in steps]
            print("\nbreakdown (one cell's steps timed apart in one process):")
            for n, s in steps:
                print(f"  {s:6.2f} s  {n}")
    results["load_average_after"] = os.getloadavg()[0]
    print(f"\nload average {results['load_average_before']:.1f} -> {results['load_average_after']:.1f} on "
          f"{results['cpus']} CPUs (other work on a shared machine inflates every figure)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
