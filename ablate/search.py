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
import time
import warnings

EXIT_PRUNED = 4
SEARCH_TAG, PRUNED_TAG, AXES_TAG, ORIGIN_TAG = "ablate.search", "ablate.pruned", "ablate.axes", "ablate.origin"
_GROUPS = {"lora.": ("finetune", "lora"), "focal.": ("loss", "focal")}  # settings used only by one method


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
    from ablate.spec import CELL_AXES, axis_kind

    space = study.search.space
    order = [a for a in CELL_AXES if a in space] + [a for a in space if a not in CELL_AXES]
    params: dict = {}
    for axis in order:
        group = next((g for g in _GROUPS if axis.startswith(g)), None)
        if group:
            by, needed = _GROUPS[group]
            if params.get(by, (study.grid.get(by) or [None])[0]) != needed:
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
    from ablate.spec import StudySpec

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
        if tags.get(SEARCH_TAG) != "true" or tags.get("ablate.run_id") in seen:
            continue
        axes = {a: None for a in study.search.space} | json.loads(tags.get(AXES_TAG, "{}"))
        seen[tags["ablate.run_id"]] = (int(tags.get(ORIGIN_TAG, 0)), r.info.run_name or "", axes)
    return [(rid, name, axes) for rid, (_, name, axes) in sorted(seen.items(), key=lambda kv: kv[1][0])]


# ---- the worker's loop ----------------------------------------------------------------------------


def _tally(trials) -> tuple[int, int, int]:
    """(finished, running, waiting) trials that count toward n_trials (lost and surplus ones do not)."""
    from ablate.queue import UNCOUNTED

    counted = [t for t in trials if UNCOUNTED not in t.user_attrs]
    done = sum(t.state.is_finished() for t in counted)
    waiting = sum(t.state.name == "WAITING" for t in counted)
    return done, len(counted) - done - waiting, waiting


def _final_value(tracker, run, metric: str) -> float | None:
    """The cell's final value (logged at step 0); `run.data.metrics` holds the last epoch's instead."""
    final = [m.value for m in tracker.client.get_metric_history(run.info.run_id, metric) if m.step == 0]
    return final[-1] if final else run.data.metrics.get(metric)


def work_search(place, study, worker, ctx, tracker, exp: str, parent: str, log, poll_seconds: float) -> dict:
    """Ask the sampler for trials and run each as a cell until the search has `n_trials`."""
    import optuna
    from optuna.trial import TrialState

    from ablate.grid import data_hashes, run_id, run_name
    from ablate.queue import CELL, ERROR, NAME, ORIGIN, UNCOUNTED, CellQueue, Claim
    from ablate.scheduler import _mark_lost, _run_with_oom_retries, cell_runs

    search = study.search
    queue = CellQueue(place.storage, study.name, place.max_attempts, kind="search")
    ostudy = optuna.load_study(study_name=queue.name, storage=queue.storage,
                               sampler=optuna.samplers.RandomSampler(), pruner=optuna.pruners.NopPruner())
    hashes = data_hashes(study)
    counts = {"finished": 0, "pruned": 0, "failed": 0, "skipped": 0}
    while True:
        _mark_lost(tracker, queue.reap_stale(place.grace_seconds))
        trials = queue.trials()
        done, running, waiting = _tally(trials)
        if done >= search.n_trials:
            return counts
        if done + running >= search.n_trials:  # (a waiting trial, one re-queued, is asked for below)
            time.sleep(poll_seconds)  # the last trials run elsewhere: stay to re-queue one whose worker dies
            continue
        trial = ostudy.ask()  # a re-queued trial first, else a new one
        queue.hold(trial._trial_id, worker)
        ahead = sum(1 for t in queue.trials() if t.number < trial.number and UNCOUNTED not in t.user_attrs)
        if ahead >= search.n_trials:  # another worker asked at the same moment and took the last place
            queue.note(trial._trial_id, UNCOUNTED, "surplus")
            ostudy.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            continue
        ostudy.sampler = make_sampler(search, trial.number)
        try:
            params = suggest(trial, study)
            spec = trial_spec(study, params)
        except Exception as e:  # noqa: BLE001 - e.g. a re-queued trial whose values the edited space no longer holds
            queue.note(trial._trial_id, ERROR, f"cannot build this trial's cell: {type(e).__name__}: {e}"[-2000:])
            ostudy.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            counts["failed"] += 1
            continue
        origin = int(trial.user_attrs.get(ORIGIN, trial.number))
        rid = trial_run_id(run_id(spec, hashes), origin)
        name = f"{run_name(spec)}-t{origin}"
        for key, value in ((CELL, rid), (NAME, name), (ORIGIN, origin)):
            queue.note(trial._trial_id, key, value)
        runs = cell_runs(tracker, exp, rid)
        prior = next((r for r in runs if r.info.status == "FINISHED"), None)
        if prior is not None:  # lost after MLflow had its result: tell that result, never run it again
            pruned = prior.data.tags.get(PRUNED_TAG) == "true"
            value = _final_value(tracker, prior, spec.train.select_metric)
            ostudy.tell(trial, values=None if pruned else value, state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
                        skip_if_finished=True)
            counts["skipped"] += 1
            continue
        claim = Claim(trial._trial_id, trial.number, rid, len(runs) + 1)  # attempt: MLflow's runs of this cell, plus one
        tags = {SEARCH_TAG: "true", PRUNED_TAG: "false", ORIGIN_TAG: str(origin),
                AXES_TAG: json.dumps({a: spec.axes.get(a) for a in spec.axes} | params, default=str)}
        info = json.dumps({"storage": place.storage, "study": queue.name, "trial_id": trial._trial_id,
                           "metric": spec.train.select_metric, "pruner": pruner_settings(search, spec.train.epochs)})
        try:
            with queue.heartbeat_thread(trial._trial_id, place.heartbeat_seconds) as beat:
                outcome, value, error = _run_with_oom_retries(
                    ctx, place, tracker, exp, parent, study.name, claim, spec, name,
                    lambda mid, attempt: queue.started(trial._trial_id, mid, attempt), worker, log, tags, info, beat.lost)
        except KeyboardInterrupt:  # the trial, with its sampled values, is queued again at once (as a reaped one is)
            queue.release(trial._trial_id, f"interrupted on {worker}")
            raise
        if outcome == "finished" and value is not None:
            ostudy.tell(trial, values=value, skip_if_finished=True)
        elif outcome == "pruned":
            ostudy.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            queue.note(trial._trial_id, ERROR, (error or "no value")[-2000:], quiet=True)
            ostudy.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            outcome = "failed"
        counts[outcome] += 1


# ---- inside the cell process --------------------------------------------------------------------


def trial_reporter(info_json: str):
    """A per-epoch callback for the cell: report the selection metric to the trial; raise Pruned when told."""
    import optuna

    from ablate.queue import open_storage

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


def finish_pruned(tracker, mlflow_run_id: str, pruned: Pruned) -> None:
    """A pruned trial is a FINISHED run tagged ablate.pruned=true, with the dev scores it reached (no test)."""
    tracker.set_tags(mlflow_run_id, {PRUNED_TAG: "true", "ablate.pruned_epoch": str(pruned.epoch)})
    tracker.finish_cell(mlflow_run_id, pruned.final, None, {})
