"""Search mode: a `search:` block validated like the grid; trials are cells; the pruner saves epochs.

The end-to-end test runs the same random search twice, median-pruned and unpruned, through
`ablate run`: same seed, so the same learning rates, and the pruned search runs fewer epochs.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from ablate.errors import UserError
from ablate.spec import load_study
from tests.e2e.conftest import ABLATE, ablate, interrupt_mid_cell, reaped

TRIALS, EPOCHS = 6, 3


def _study(folder: Path, name: str, search: dict, grid: dict | None = None, sentences: int = 90, **train) -> Path:
    """A tiny search study on a demo corpus; batch 4 without warm-up learns within a few epochs."""
    from ablate.data.demo import make_demo_corpus

    data = folder / "data"
    if not (data / "train.jsonl").exists():
        make_demo_corpus(data, sentences=sentences, seed=3)
    study = {
        "name": name,
        "data": {"root": "data", "train": ["train.jsonl"], "dev": ["dev.jsonl"], "test": ["test.jsonl"], "max_length": 64},
        "backbones": {"tb": {"scratch": "bert", "shape": "tiny"}},
        "grid": grid if grid is not None else {"finetune": ["full"]},
        "train": {k: v for k, v in {"epochs": EPOCHS, "batch_size": 4, "warmup_ratio": 0.0, **train}.items() if v is not None},
        "search": search,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


LR = {"lr": {"low": 1.0e-4, "high": 3.0e-2, "log": True}}


def test_a_search_block_loads_typed(tmp_path: Path):
    space = {**LR, "lora.r": {"choices": [4, 8, 16]}, "epochs": {"low": 2, "high": 6}}
    study = load_study(_study(tmp_path, "ok", {"n_trials": 12, "space": space}, grid={"finetune": ["lora"]}, epochs=None))
    s = study.search
    assert (s.sampler, s.n_trials, s.seed, s.pruner) == ("tpe", 12, 0, "median")
    assert s.space["lr"].log and s.space["lr"].low == 1e-4 and s.space["lora.r"].choices == [4, 8, 16]
    assert study.grid == {"backbone": ["tb"], "finetune": ["lora"], "loss": ["ce"], "head": ["linear"]}
    # A searched cell axis is neither defaulted in the grid nor required there.
    both = load_study(_study(tmp_path, "cells", {"n_trials": 3, "space": {"finetune": {"choices": ["lora", "full"]},
                                                                          "lora.r": {"choices": [4, 8]}}}, grid={}))
    assert "finetune" not in both.grid


def test_a_bad_search_block_is_one_error_listing_every_problem(tmp_path: Path):
    search = {"sampler": "tpee", "n_trials": 0, "pruner": "median",
              "space": {"lrr": {"low": 1}, "lr": {"low": -1.0, "high": 1.0, "log": True}, "precision": {"low": 1, "high": 2},
                        "warmup_ratio": {"low": 0.5, "high": 0.2}, "focal.gamma": {"low": 0.0, "high": 2.0},
                        "seed": {"choices": [1, 1]}, "lora.target_modules": {"choices": [["query"]]}}}
    path = _study(tmp_path, "bad", search, grid={"finetune": ["full", "lora"], "lr": [1.0e-3]}, batch_size=None)
    with pytest.raises(UserError) as info:
        load_study(path)
    text = str(info.value)
    for expected in ("search.sampler: 'tpee' is not one of tpe, random; did you mean tpe?",
                     "search.n_trials: should be greater than or equal to 1",
                     "search.space.lrr: unknown axis; did you mean lr?",
                     "search.space.lr.low: should be greater than 0",
                     "search.space.precision: precision is not numeric: give `choices`",
                     "search.space.warmup_ratio: low (0.5) must be below high (0.2)",
                     "search.space.focal.gamma: varies focal settings but grid.loss has no focal",
                     "search.space.seed.choices[1]: duplicate choice 1",
                     "search.space.lora.target_modules.choices[0]: choices must be plain values",
                     "grid.finetune: a search study takes one value per grid axis",
                     "search.space.lr: also a grid axis (grid.lr)"):
        assert expected in text, f"{expected!r} not in\n{text}"


def test_a_trial_is_a_cell_built_from_its_sampled_params(tmp_path: Path):
    import optuna

    from ablate.grid import data_hashes, run_id
    from ablate.scheduler.search import suggest, trial_run_id, trial_spec

    space = {**LR, "finetune": {"choices": ["full", "lora"]}, "lora.r": {"choices": [4, 8]}}
    study = load_study(_study(tmp_path, "cells", {"n_trials": 3, "space": space}, grid={}))
    full = suggest(optuna.trial.FixedTrial({"lr": 2e-3, "finetune": "full", "lora.r": 8}), study)
    assert full == {"finetune": "full", "lr": 2e-3}  # lora.r is not sampled for a full fine-tune
    lora = suggest(optuna.trial.FixedTrial({"lr": 2e-3, "finetune": "lora", "lora.r": 8}), study)
    spec = trial_spec(study, lora)
    assert (spec.finetune, spec.train.lr, spec.train.lora.r, spec.train.epochs) == ("lora", 2e-3, 8, EPOCHS)
    rid = run_id(spec, data_hashes(study))
    assert trial_run_id(rid, 0) == trial_run_id(rid, 0) != trial_run_id(rid, 1)  # a trial is its own cell


def _run(folder: Path, study: Path) -> subprocess.Popen:
    env = {**os.environ, "ABLATE_CACHE": str(folder / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([ABLATE, "run", str(study), "--no-display"], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _trials(folder: Path, name: str) -> list:
    from ablate.tracking import Tracker

    tracker = Tracker(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    runs = tracker.cell_runs(tracker.experiment_id(name, create=False))
    return sorted(runs, key=lambda r: int(r.data.tags["ablate.trial"]))


def _searches(tmp_path: Path, pruners: tuple[str, ...]) -> dict:
    """Run the same random search (one seed: the same trials) once per pruner, side by side, each in its own store."""
    search = {"sampler": "random", "n_trials": TRIALS, "seed": 0, "startup_trials": 2, "space": LR}
    runs = {}
    for pruner in pruners:  # 2 cores, one thread each
        folder = tmp_path / pruner
        folder.mkdir()
        study = _study(folder, f"lr_{pruner}", {**search, "pruner": pruner}, sentences=400)
        runs[pruner] = (folder, study, _run(folder, study))
    out = {p: proc.communicate(timeout=400)[0] for p, (_, _, proc) in runs.items()}
    assert all(proc.returncode == 0 for _, _, proc in runs.values()), out
    found = {}
    for p, (folder, study, _) in runs.items():
        trials = _trials(folder, f"lr_{p}")
        assert [r.data.tags["ablate.trial"] for r in trials] == [str(i) for i in range(TRIALS)], out[p]
        assert {r.info.status for r in trials} == {"FINISHED"} and all(r.data.tags["ablate.search"] == "true" for r in trials)
        found[p] = (folder, study, trials)
    return found


def _epochs(trials) -> float:
    return sum(r.data.metrics["epochs_run"] for r in trials)


def test_a_pruned_search_spends_fewer_epochs_and_its_trials_reach_mlflow_and_the_report(tmp_path: Path):
    (folder, study, trials), = _searches(tmp_path, ("median",)).values()
    pruned = [r for r in trials if r.data.tags["ablate.pruned"] == "true"]
    # Unpruned, these trials run TRIALS x EPOCHS epochs (the slow test below runs them to show it).
    assert pruned and _epochs(trials) < TRIALS * EPOCHS
    assert all(r.data.metrics["epochs_run"] < EPOCHS and "dev/macro_f1" in r.data.metrics for r in pruned)

    # The Optuna study agrees: the pruned trials are PRUNED there, with per-epoch values the pruner read.
    import optuna

    from ablate.scheduler.queue import open_storage
    from ablate.tracking import Tracker

    ostudy = optuna.load_study(study_name="ablate:lr_median:search", storage=open_storage(str(folder / "mlruns" / "queue.journal")))
    states = [t.state.name for t in sorted(ostudy.trials, key=lambda t: t.number)]
    assert states.count("PRUNED") == len(pruned) and states.count("COMPLETE") == TRIALS - len(pruned)
    assert all(len(t.intermediate_values) >= 1 for t in ostudy.trials)
    # The objective is the selection metric at the best epoch: the final value, logged at step 0. (`run.data.metrics`
    # holds the highest step's value, the last epoch's, and is not that when the best epoch came earlier.)
    client = Tracker(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}").client
    finals = [next(m.value for m in client.get_metric_history(r.info.run_id, "dev/macro_f1") if m.step == 0)
              for r in trials if r not in pruned]
    assert ostudy.best_value == max(finals)

    # plan and report read the trials as the study's cells.
    lrs = [float(r.data.params["train.lr"]) for r in trials]
    plan = json.loads(ablate("plan", study, "--json", cwd=folder).stdout)
    assert {c["run_id"] for c in plan["cells"]} == {r.data.tags["ablate.run_id"] for r in trials}
    assert sorted(c["lr"] for c in plan["cells"]) == sorted(lrs)
    r = ablate("report", study, cwd=folder)
    assert r.returncode == 0, r.stdout + r.stderr
    page = (folder / "reports" / "lr_median" / "README.md").read_text(encoding="utf-8")
    assert f"**{TRIALS} cells planned: {TRIALS} finished" in page
    assert all(f"{lr:g}" in page for lr in lrs)


@pytest.mark.slow
def test_the_same_trials_unpruned_spend_every_epoch(tmp_path: Path):
    found = _searches(tmp_path, ("median", "none"))
    trials = {p: t for p, (_, _, t) in found.items()}
    lrs = {p: [float(r.data.params["train.lr"]) for r in t] for p, t in trials.items()}
    assert lrs["median"] == lrs["none"] and len(set(lrs["none"])) == TRIALS  # one seed: the same trials in both
    assert not any(r.data.tags["ablate.pruned"] == "true" for r in trials["none"])
    assert _epochs(trials["median"]) < _epochs(trials["none"]) == TRIALS * EPOCHS


@pytest.mark.slow
def test_a_search_trial_lost_with_its_worker_is_rerun_with_the_same_params(tmp_path: Path):
    import optuna

    from ablate.scheduler.queue import ATTEMPT, ORIGIN, PREVIOUS, UNCOUNTED, open_storage
    from ablate.tracking import Tracker
    from tests.e2e.test_distributed import _gone, _kill_a_worker_mid_cell, _worker

    study = _study(tmp_path, "lost", {"sampler": "tpe", "n_trials": 4, "seed": 0, "pruner": "none", "startup_trials": 2,
                                      "space": {**LR, "lora.r": {"choices": [4, 8]}}}, grid={"finetune": ["lora"]})
    uri, storage = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", str(tmp_path / "queue.journal")
    Tracker(uri).experiment_id("lost")
    procs = [_worker(tmp_path, study, storage, uri, f"w{i}.log") for i in range(2)]
    with reaped(procs):
        victim, held, family = _kill_a_worker_mid_cell(storage, uri, {p.pid: p for p in procs}, time.time() + 180, "lost", "search")
    assert all(_gone(p) for p in family)
    assert sorted(p.returncode for p in procs) == [-9, 0]
    trials = sorted(optuna.load_study(study_name="ablate:lost:search", storage=open_storage(storage)).trials, key=lambda t: t.number)
    lost = next(t for t in trials if t.number == held["trial"])
    again = next(t for t in trials if t.user_attrs.get(PREVIOUS) == [lost.number])
    assert lost.state.name == "FAIL" and UNCOUNTED in lost.user_attrs
    assert again.state.name == "COMPLETE" and again.params == lost.params
    assert again.user_attrs[ORIGIN] == lost.number and again.user_attrs[ATTEMPT] == 2
    assert sum(UNCOUNTED not in t.user_attrs for t in trials) == 4  # n_trials, the lost one replaced by its copy
    runs = [r for r in Tracker(uri).cell_runs(Tracker(uri).experiment_id("lost")) if r.data.tags["ablate.run_id"] == held["run_id"]]
    assert sorted((r.info.status, r.data.tags["ablate.attempt"]) for r in runs) == [("FINISHED", "2"), ("KILLED", "1")]


def test_ctrl_c_gives_a_search_trial_back_at_once(tmp_path: Path):
    """As for grid cells: after Ctrl-C no trial stays RUNNING, so a re-run need not wait out the grace."""
    from collections import Counter

    from ablate.scheduler.queue import CellQueue

    study = _study(tmp_path, "sc", {"n_trials": 2, "sampler": "random", "seed": 0, "pruner": "none", "space": LR}, epochs=40)
    code, out = interrupt_mid_cell(study, tmp_path)
    assert code == 130, out
    states = Counter(t.state.name for t in CellQueue(str(tmp_path / "mlruns" / "queue.journal"), "sc", kind="search").trials())
    assert states["RUNNING"] == 0 and states["WAITING"] == 1, states
    r = ablate("run", study, "--no-display", "--grace", "600", cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
