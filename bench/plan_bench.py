"""Time `ablate plan` on a 10,000-cell grid, through the real CLI and phase by phase in-process.

10 backbones x full/lora x ce/focal x 25 learning rates x 10 seeds = 10,000 cells on a small demo
corpus. CLI calls (median of --repeats): `--no-status`; status when no store exists yet (nothing ran: the
store is not opened); status from an existing sqlite store holding this study with --stored cells
finished (default 2,000, with metrics, params and tags as `ablate run` writes them).
Then the same work in one process, phase by phase, wall and CPU seconds, so that time lost to other
processes on a shared machine shows as wall >> CPU. `--profile` adds the top cProfile entries.
Usage: python bench/plan_bench.py [--repeats 3] [--profile] [--out FILE.json]   (target: <= 3 s)
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
LRS = [float(f"{1e-5 * 1.3 ** k:.3g}") for k in range(25)]


def write_study(folder: Path) -> Path:
    from ablate.data.demo import make_demo_corpus

    make_demo_corpus(folder / "data", sentences=60, seed=0)
    study = {
        "name": "grid10k",
        "data": {"root": "data", "train": ["train.jsonl"], "dev": ["dev.jsonl"], "test": ["test.jsonl"]},
        "backbones": {f"b{i}": {"scratch": "bert", "shape": "tiny"} for i in range(10)},
        "grid": {"backbone": [f"b{i}" for i in range(10)], "finetune": ["full", "lora"], "loss": ["ce", "focal"],
                 "lr": LRS, "seed": list(range(1, 11))},
        "train": {"epochs": 2},
    }
    path = folder / "grid10k.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


def fill_store(study: Path, cwd: Path, cells: int) -> None:
    """`cells` finished cells of the study in `cwd/mlruns`, written through ablate's own Tracker."""
    from ablate.grid import expand, file_hashes, run_id, run_name
    from ablate.spec import load_study
    from ablate.tracking import Tracker

    spec = load_study(study)
    runs = expand(spec)[:cells]
    hashes = file_hashes(spec.data.resolved_files())
    tracker = Tracker(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    exp = tracker.experiment_id(spec.name)
    parent = tracker.parent_run(exp, spec.name)
    params = {f"train.setting_{i}": str(i) for i in range(40)}
    for r in runs:
        mid = tracker.start_cell(exp, parent, spec.name, run_id(r, hashes), run_name(r), params, attempt=1)
        tracker.log_metrics(mid, {"dev/macro_f1": 0.5, "train/loss": 0.7, "epoch_seconds": 1.0}, step=1)
        tracker.finish_cell(mid, {"dev/macro_f1": 0.5, "test/macro_f1": 0.5, "best_epoch": 1.0}, None, {})


def cli_seconds(study: Path, cwd: Path, *flags: str) -> tuple[float, float, int]:
    """(wall, child CPU seconds, cells, cells done) of one `ablate plan --json` call."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    before = os.times()
    start = time.perf_counter()
    r = subprocess.run([ABLATE, "plan", str(study), "--json", *flags], cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = os.times()
    if r.returncode != 0:
        raise SystemExit(f"ablate plan failed: {r.stderr}")
    out = json.loads(r.stdout)
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu, len(out["cells"]), out["summary"]["done"]


def phases(study: Path, cwd: Path) -> list[tuple[str, float, float]]:
    """(phase, wall, CPU) of what `ablate plan` does, in one fresh process, each timed apart."""
    code = r"""
import json, sys, time
t = [(time.perf_counter(), time.process_time())]
out = []
def mark(name):
    t.append((time.perf_counter(), time.process_time()))
    out.append((name, t[-1][0] - t[-2][0], t[-1][1] - t[-2][1]))
import ablate.cli, ablate.scheduler.plan, ablate.spec, ablate.grid; mark("import ablate.cli, scheduler.plan, spec, grid")
from ablate.spec import load_study
from ablate.grid import expand, run_id, run_name, file_hashes
study = load_study(sys.argv[1]); mark("load_study (YAML + validation)")
runs = expand(study); mark("grid.expand (10,000 RunSpecs)")
hashes = file_hashes(study.data.resolved_files()); mark("data file hashes")
ids = [run_id(r, hashes) for r in runs]; mark("run_id x 10,000")
names = [run_name(r) for r in runs]; mark("run_name x 10,000")
from ablate.tracking.store_read import read_status
from ablate.tracking import default_tracking_uri
status = read_status(default_tracking_uri(), study.name); mark(f"cell status from the store ({len(status)} cells stored)")
rows = [{"run_id": i, "name": n, "status": "pending", **r.axes} for i, n, r in zip(ids, names, runs)]
text = json.dumps({"cells": rows}, ensure_ascii=False, indent=2); mark("JSON of the cells")
import mlflow.tracking; mark("(for comparison) import mlflow")
from ablate.tracking.store_read import client_status
from ablate.tracking import Tracker
tracker = Tracker(default_tracking_uri()); mark("(for comparison) MlflowClient + sqlite store (schema check)")
assert client_status(tracker, study.name).keys() == status.keys(); mark("(for comparison) the same status via search_runs")
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", code, str(study)], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return [tuple(x) for x in json.loads(r.stdout.strip().splitlines()[-1])]


def profile(study: Path, cwd: Path, top: int = 25) -> str:
    prof = cwd / "plan.prof"
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "ablate.cli", "plan", str(study), "--json"],
                   cwd=cwd, capture_output=True, text=True, check=True)
    code = f"import pstats; pstats.Stats({str(prof)!r}).sort_stats('cumulative').print_stats({top})"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stored", type=int, default=2000, help="finished cells in the existing store")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="plan-bench-") as tmp:
        root = Path(tmp)
        study = write_study(root)
        (root / "shared").mkdir()
        t0 = time.perf_counter()
        fill_store(study, root / "shared", args.stored)
        print(f"store with {args.stored} finished cells written in {time.perf_counter() - t0:.0f} s")
        results: dict = {"load_average_before": os.getloadavg()[0], "cpus": os.cpu_count(), "stored": args.stored}
        for label, flags, fresh in (("no_status", ("--no-status",), False), ("status_new_store", (), True),
                                    ("status_existing_store", (), False)):
            runs = []
            for i in range(args.repeats):
                cwd = root / f"{label}-{i}" if fresh else root / ("shared" if label == "status_existing_store" else "empty")
                cwd.mkdir(exist_ok=True)
                runs.append(cli_seconds(study, cwd, *flags))
            cells = runs[0][2]
            results[label] = {"wall_median": statistics.median(r[0] for r in runs),
                              "cpu_median": statistics.median(r[1] for r in runs),
                              "walls": [round(r[0], 3) for r in runs], "cells": cells, "done": runs[0][3]}
            print(f"ablate plan --json {' '.join(flags):<12} {label:<22} {cells} cells ({runs[0][3]} done): "
                  f"wall {results[label]['wall_median']:.2f} s (CPU {results[label]['cpu_median']:.2f} s); "
                  f"runs {results[label]['walls']}")
        ph = phases(study, root / "shared")
        results["phases"] = [{"phase": n, "wall": w, "cpu": c} for n, w, c in ph]
        print("\nphases in one process (wall / CPU seconds):")
        for n, w, c in ph:
            print(f"  {n:<55} {w:6.2f} {c:6.2f}")
        mine = [p for p in ph if not p[0].startswith("(")]
        print(f"  {'total of what ablate plan does':<55} {sum(p[1] for p in mine):6.2f} {sum(p[2] for p in mine):6.2f}")
        results["load_average_after"] = os.getloadavg()[0]
        print(f"\nload average: {results['load_average_before']:.1f} before, {results['load_average_after']:.1f} after, "
              f"{results['cpus']} CPUs (wall >> CPU means the machine was shared)")
        if args.profile:
            (root / "prof").mkdir()
            text = profile(study, root / "prof")
            results["profile"] = text
            print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
