"""What a worker runs next, per mode: `GridSweep` claims queued cells, `SearchSweep` asks the sampler for trials.

Both answer `next()` with a `Job` (a claimed cell to run), `WAIT` (others hold the last cells) or `DONE`,
and take the outcome back with `tell`. They decide what to run; `worker.work` decides nothing about that
and runs whatever it gets, so one worker loop serves grid and search studies (Hydra's sweeper/launcher split).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

WAIT, DONE, AGAIN = "wait", "done", "again"  # again: nothing run, ask for the next one at once


@dataclass
class Job:
    """A claimed cell: its queue trial, RunSpec, name, extra MLflow tags and (search) the trial it reports to."""

    claim: object  # queue.Claim
    spec: object  # RunSpec
    name: str
    tags: dict = field(default_factory=dict)
    trial_json: str | None = None
    trial: object = None  # search: the Optuna trial to tell


def cell_runs(tracker, exp: str, run_id: str) -> list:
    """Every MLflow run (attempt) of one cell."""
    from ablate.tracking.tags import RUN_ID

    return list(tracker.client.search_runs([exp], f"tags.`{RUN_ID}` = '{run_id}'", max_results=1000))


class GridSweep:
    """The grid's cells, queued by the planner; a claim runs only if MLflow has not FINISHED it."""

    def __init__(self, place, study, tracker, exp: str, worker, counts: dict, log=print):
        from ablate.scheduler.plan import expand_cells
        from ablate.scheduler.queue import CellQueue

        self.tracker, self.exp, self.worker, self.counts, self.log = tracker, exp, worker, counts, log
        self.specs, self.names = expand_cells(study)
        self.queue = CellQueue(place.storage, study.name, place.max_attempts)

    def next(self):
        claim = self.queue.claim(self.worker)
        if claim is None:
            return DONE if self.queue.pending() == 0 else WAIT
        try:
            spec = self.specs.get(claim.run_id)
            if spec is None:
                why = f"cell {claim.run_id} is not in this study as this worker read it (study file or data changed?)"
                self.log(f"[{self.worker}] {why}")
                self.queue.finish(claim.trial_id, None, why)
                self.counts["failed"] += 1
                return AGAIN
            prior = cell_runs(self.tracker, self.exp, claim.run_id)
            if any(r.info.status == "FINISHED" for r in prior):
                self.queue.skip(claim.trial_id, "already FINISHED in MLflow")
                self.counts["skipped"] += 1
                return AGAIN
        except KeyboardInterrupt:
            self.queue.release(claim.trial_id, f"interrupted on {self.worker}")
            raise
        # The attempt is MLflow's count of this cell's runs plus one: right even when a planning
        # duplicate, not the re-queued copy, is the trial that retries a lost cell.
        return Job(dataclasses.replace(claim, attempt=len(prior) + 1), spec, self.names[claim.run_id])

    def tell(self, job: Job, outcome: str, value: float | None, error: str | None) -> str:
        """Record the outcome in the queue; returns it as counted (finished, pruned or failed)."""
        self.queue.finish(job.claim.trial_id, value, error)
        return outcome


class SearchSweep:
    """Trials sampled by Optuna until the search has `n_trials` (lost and surplus trials do not count)."""

    def __init__(self, place, study, tracker, exp: str, worker, counts: dict, log=print):
        import optuna

        from ablate.grid import data_hashes
        from ablate.scheduler.queue import CellQueue

        self.place, self.study, self.tracker, self.exp, self.worker, self.counts = place, study, tracker, exp, worker, counts
        self.queue = CellQueue(place.storage, study.name, place.max_attempts, kind="search")
        self.ostudy = optuna.load_study(study_name=self.queue.name, storage=self.queue.storage,
                                        sampler=optuna.samplers.RandomSampler(), pruner=optuna.pruners.NopPruner())
        self.hashes = data_hashes(study)

    def _tally(self, trials) -> tuple[int, int, int]:
        """(finished, running, waiting) trials that count toward n_trials."""
        from ablate.scheduler.queue import UNCOUNTED

        counted = [t for t in trials if UNCOUNTED not in t.user_attrs]
        done = sum(t.state.is_finished() for t in counted)
        waiting = sum(t.state.name == "WAITING" for t in counted)
        return done, len(counted) - done - waiting, waiting

    def next(self):
        from optuna.trial import TrialState

        from ablate.grid import run_id, run_name
        from ablate.scheduler.queue import CELL, ERROR, NAME, ORIGIN, UNCOUNTED, Claim
        from ablate.scheduler.search import make_sampler, pruner_settings, suggest, trial_run_id, trial_spec
        from ablate.tracking.tags import AXES_TAG, ORIGIN_TAG, PRUNED_TAG, SEARCH_TAG

        search, queue = self.study.search, self.queue
        done, running, _ = self._tally(queue.trials())
        if done >= search.n_trials:
            return DONE
        if done + running >= search.n_trials:  # the last trials run elsewhere: stay to re-queue one whose worker dies
            return WAIT
        trial = self.ostudy.ask()  # a re-queued trial first, else a new one
        queue.hold(trial._trial_id, self.worker)
        try:
            ahead = sum(1 for t in queue.trials() if t.number < trial.number and UNCOUNTED not in t.user_attrs)
            if ahead >= search.n_trials:  # another worker asked at the same moment and took the last place
                queue.note(trial._trial_id, UNCOUNTED, "surplus")
                self.ostudy.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                return AGAIN
            self.ostudy.sampler = make_sampler(search, trial.number)
            try:
                params = suggest(trial, self.study)
                spec = trial_spec(self.study, params)
            except Exception as e:  # noqa: BLE001 - e.g. a re-queued trial whose values the edited space no longer holds
                queue.note(trial._trial_id, ERROR, f"cannot build this trial's cell: {type(e).__name__}: {e}"[-2000:])
                self.ostudy.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                self.counts["failed"] += 1
                return AGAIN
            origin = int(trial.user_attrs.get(ORIGIN, trial.number))
            rid = trial_run_id(run_id(spec, self.hashes), origin)
            name = f"{run_name(spec)}-t{origin}"
            for key, value in ((CELL, rid), (NAME, name), (ORIGIN, origin)):
                queue.note(trial._trial_id, key, value)
            runs = cell_runs(self.tracker, self.exp, rid)
            prior = next((r for r in runs if r.info.status == "FINISHED"), None)
            if prior is not None:  # lost after MLflow had its result: tell that result, never run it again
                was_pruned = prior.data.tags.get(PRUNED_TAG) == "true"
                value = self._final_value(prior, spec.train.select_metric)
                self.ostudy.tell(trial, values=None if was_pruned else value, skip_if_finished=True,
                                 state=TrialState.PRUNED if was_pruned else TrialState.COMPLETE)
                self.counts["skipped"] += 1
                return AGAIN
        except KeyboardInterrupt:  # the trial, with its sampled values, is queued again at once (as a reaped one is)
            queue.release(trial._trial_id, f"interrupted on {self.worker}")
            raise
        tags = {SEARCH_TAG: "true", PRUNED_TAG: "false", ORIGIN_TAG: str(origin),
                AXES_TAG: json.dumps({a: spec.axes.get(a) for a in spec.axes} | params, default=str)}
        info = json.dumps({"storage": self.place.storage, "study": queue.name, "trial_id": trial._trial_id,
                           "metric": spec.train.select_metric, "pruner": pruner_settings(search, spec.train.epochs)})
        return Job(Claim(trial._trial_id, trial.number, rid, len(runs) + 1), spec, name, tags, info, trial)

    def tell(self, job: Job, outcome: str, value: float | None, error: str | None) -> str:
        from optuna.trial import TrialState

        from ablate.scheduler.queue import ERROR

        trial = job.trial
        if outcome == "finished" and value is not None:
            self.ostudy.tell(trial, values=value, skip_if_finished=True)
            return "finished"
        if outcome == "pruned":
            self.ostudy.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
            return "pruned"
        self.queue.note(trial._trial_id, ERROR, (error or "no value")[-2000:], quiet=True)
        self.ostudy.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        return "failed"

    def _final_value(self, run, metric: str) -> float | None:
        """The cell's final value (logged at step 0); `run.data.metrics` holds the last epoch's instead."""
        final = [m.value for m in self.tracker.client.get_metric_history(run.info.run_id, metric) if m.step == 0]
        return final[-1] if final else run.data.metrics.get(metric)
