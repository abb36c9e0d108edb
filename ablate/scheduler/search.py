"""Search mode: Optuna samples a study's cells from its `search:` space; the pruner stops weak ones early.

A trial is a cell: its RunSpec is the grid's fixed values plus the sampled ones, and its run_id
hashes that cell's run_id with the trial's origin (the number of its first trial), so a trial
lost with its worker and re-queued keeps its identity, and FINISHED in MLflow still means never
again. Trial k is sampled with seed + k: one worker replays a search exactly. The cell process
reports each epoch's selection metric to its trial and asks the pruner (`trial_reporter`).
"""

from __future__ import annotations

import hashlib
import json
import warnings

from ablate.tracking.tags import AXES_TAG, ORIGIN_TAG, RUN_ID, SEARCH_TAG


class Pruned(Exception):
    """Raised in the cell process when the pruner stops a trial: `final` is what it reached."""

    def __init__(self, epoch: int, final: dict[str, float]):
        super().__init__(f"pruned after epoch {epoch}")
        self.epoch, self.final = epoch, final


# ---- samplers, pruners, the space -------------------------------------------------------------


def make_sampler(search, number: int):
    """The study's sampler, seeded for trial `number` (TPE with constant liar: workers see running trials)."""
    import optuna

    seed = None if search.seed is None else search.seed + number
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=search.startup_trials, constant_liar=True)


def pruner_settings(search, epochs: int) -> dict:
    return {"pruner": search.pruner, "startup_trials": search.startup_trials,
            "warmup_epochs": search.warmup_epochs, "epochs": epochs}


def make_pruner(settings: dict):
    """median: below the median of earlier trials at the same epoch; hyperband: successive halving brackets."""
    import optuna

    if settings["pruner"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings["startup_trials"], n_warmup_steps=settings["warmup_epochs"])
    if settings["pruner"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, settings["warmup_epochs"]),
                                              max_resource=max(1, settings["epochs"]), reduction_factor=3)
    return optuna.pruners.NopPruner()


def suggest(trial, study) -> dict:
    """Sample every axis of the space; lora.* only when the cell fine-tunes with LoRA, focal.* only under focal."""
    from ablate.spec.schema import CELL_AXES, uses
    from ablate.spec.study import axis_kind

    space = study.search.space
    order = [a for a in CELL_AXES if a in space] + [a for a in space if a not in CELL_AXES]
    params: dict = {}
    for axis in order:
        cell = {a: params.get(a, (study.grid.get(a) or [None])[0]) for a in CELL_AXES}
        if not uses(cell, axis):  # e.g. lora.r when this trial fine-tunes fully
            continue
        d, kind = space[axis], axis_kind(axis)
        if d.choices is not None:
            params[axis] = trial.suggest_categorical(axis, d.choices)
        elif kind == "int":
            params[axis] = trial.suggest_int(axis, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
        else:
            params[axis] = trial.suggest_float(axis, float(d.low), float(d.high), step=d.step, log=d.log)
    return params


def trial_spec(study, params: dict):
    """The RunSpec of one trial: the study's single grid values with the sampled ones on top."""
    from ablate.grid import expand
    from ablate.spec.study import StudySpec

    cell = {a: v[0] for a, v in study.grid.items()} | params
    raw = study.model_dump(mode="json", exclude={"search"})
    raw["grid"] = {a: [v] for a, v in cell.items()}
    return expand(StudySpec.model_validate(raw))[0]


def trial_run_id(cell_run_id: str, origin: int) -> str:
    return hashlib.sha256(f"{cell_run_id}:trial{origin}".encode()).hexdigest()[:12]


def trial_cells(tracker, study) -> list[tuple[str, str, dict]]:
    """(run_id, name, axes) of every trial MLflow holds for this search study, by trial origin."""
    exp = tracker.experiment_id(study.name, create=False)
    if exp is None:
        return []
    seen: dict[str, tuple[int, str, dict]] = {}
    for r in tracker.cell_runs(exp):
        tags = r.data.tags
        if tags.get(SEARCH_TAG) != "true" or tags.get(RUN_ID) in seen:
            continue
        axes = {a: None for a in study.search.space} | json.loads(tags.get(AXES_TAG, "{}"))
        seen[tags[RUN_ID]] = (int(tags.get(ORIGIN_TAG, 0)), r.info.run_name or "", axes)
    return [(rid, name, axes) for rid, (_, name, axes) in sorted(seen.items(), key=lambda kv: kv[1][0])]


# ---- inside the cell process --------------------------------------------------------------------


def trial_reporter(info_json: str):
    """A per-epoch callback for the cell: report the selection metric to the trial; raise Pruned when told."""
    import optuna

    from ablate.scheduler.queue import open_storage

    info = json.loads(info_json)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ostudy = optuna.load_study(study_name=info["study"], storage=open_storage(info["storage"]),
                               sampler=optuna.samplers.RandomSampler(), pruner=make_pruner(info["pruner"]))
    trial = optuna.trial.Trial(ostudy, info["trial_id"])
    metric, history = info["metric"], []

    def report(epoch: int, metrics: dict) -> None:
        history.append(metrics)
        trial.report(float(metrics[metric]), epoch)
        if trial.should_prune():
            raise Pruned(epoch, _reached(history, metric))

    return report


def _reached(history: list[dict], metric: str) -> dict[str, float]:
    """A pruned cell's final metrics: dev at its best epoch so far, and how many epochs it ran."""
    best = max(range(len(history)), key=lambda i: history[i][metric])
    out = {k: v for k, v in history[best].items() if k.startswith("dev/")}
    out.update({"best_epoch": float(best + 1), "epochs_run": float(len(history)),
                "epoch_seconds": sum(h["epoch_seconds"] for h in history) / len(history),
                "train_tokens_per_second": sum(h["train_tokens_per_second"] for h in history) / len(history),
                "peak_memory_mb": max(h["peak_memory_mb"] for h in history)})
    return out
