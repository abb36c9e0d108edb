"""A cell's MLflow run from start to end, and the study's parent run: the one module that sets their status.

The worker starts a cell's run and ends it when the cell process cannot (it died, its claim was lost, it
never started); the cell process ends it when it can (finished, pruned, failed, interrupted). Both call
these functions, so every transition (RUNNING -> FINISHED | FAILED | KILLED) is written in one place.
"""

from __future__ import annotations


def start(tracker, experiment_id: str, parent: str, study: str, run_id: str, name: str, params: dict[str, str],
          attempt: int, tags: dict[str, str]) -> str:
    """A new RUNNING run for one attempt of a cell; returns its MLflow run id."""
    return tracker.start_cell(experiment_id, parent, study, run_id, name, params, attempt, tags)


def finished(tracker, mlflow_run_id: str, final: dict[str, float], outputs, settings: dict) -> None:
    tracker.finish_cell(mlflow_run_id, final, outputs, settings)


def pruned(tracker, mlflow_run_id: str, epoch: int, final: dict[str, float]) -> None:
    """A pruned trial is a FINISHED run tagged ablate.pruned=true, with the dev scores it reached (no test)."""
    from ablate.tracking.tags import PRUNED_TAG

    tracker.set_tags(mlflow_run_id, {PRUNED_TAG: "true", "ablate.pruned_epoch": str(epoch)})
    tracker.finish_cell(mlflow_run_id, final, None, {})


def failed(tracker, mlflow_run_id: str, error: str) -> None:
    _quietly(tracker.fail_cell, mlflow_run_id, error)


def killed(tracker, mlflow_run_id: str, why: str) -> None:
    """KILLED unless it ended already (a cell that FINISHED keeps its result); never raises."""
    _quietly(tracker.kill_if_running, mlflow_run_id, why)


def lost(tracker, reaped) -> None:
    """The runs of cells whose worker stopped beating (re-queued by `reap_stale`): KILLED."""
    for _, mlflow_id in reaped:
        if mlflow_id:
            killed(tracker, mlflow_id, "the worker running this cell stopped (no heartbeat); the cell was re-queued")


def study_running(tracker, parent: str) -> None:
    tracker.client.update_run(parent, status="RUNNING")  # the study's run shows its state in the UI


def study_ended(tracker, parent: str, complete: bool, interrupted: bool) -> None:
    _quietly(tracker.client.set_terminated, parent, "KILLED" if interrupted else "FINISHED" if complete else "FAILED")


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - the store is gone too: the heartbeat grace and the next plan cover it
        pass
