"""The cell process: one cell trained in a fresh process, logged into its MLflow run, ended with an `Exit` code.

Signals: SIGINT and SIGTERM end the cell as interrupted (its run KILLED); the death of the worker that
started it kills it at once (kill -9 of a worker must not leave its cell training on).
"""

from __future__ import annotations

import enum
import json
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path


class Exit(enum.IntEnum):
    """How a cell process ends; the worker reads it from the exit status."""

    OK = 0
    FAILED = 1
    OOM = 3  # out of memory: the worker retries with half the batch
    PRUNED = 4  # a search trial stopped by its pruner: FINISHED in MLflow, tagged ablate.pruned
    INTERRUPTED = 130  # Ctrl-C or SIGTERM: the MLflow run is KILLED


def run_cell(spec_json: str, tracking_uri: str, mlflow_run_id: str, result_path: str, trial_json: str | None = None,
             worker_pid: int | None = None) -> None:
    """Run one cell, log it into its MLflow run, write {value, error} to `result_path`, exit with an `Exit` code.

    `trial_json` (search mode) names the Optuna trial this cell reports its per-epoch selection metric to.
    `worker_pid`: the worker whose death ends this cell at once.
    """
    _die_with_parent(worker_pid)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the fork server ignores SIGINT; a cell must not
    from ablate import faults
    from ablate.executor import run_one
    from ablate.scheduler import lifecycle
    from ablate.scheduler.search import Pruned, trial_reporter
    from ablate.spec.schema import RunSpec
    from ablate.tracking.client import Tracker
    from ablate.tracking.tags import PARENT_TAG, RUN_ID

    spec = RunSpec.model_validate_json(spec_json)
    tracker = Tracker(tracking_uri)
    run = tracker.client.get_run(mlflow_run_id)
    name = run.info.run_name or ""
    identity = {"name": name, "run_id": run.data.tags.get(RUN_ID, "")}
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    result = {"value": None, "error": None}
    code = Exit.OK
    with tempfile.TemporaryDirectory(prefix="ablate-out-") as tmp:
        try:
            report = trial_reporter(trial_json) if trial_json else None

            def on_epoch(epoch: int, metrics: dict) -> None:
                tracker.log_metrics(mlflow_run_id, metrics, step=epoch)
                if report is not None:
                    report(epoch, metrics)  # raises Pruned when the pruner stops this trial

            plog = tracker.pretrain_log(run.info.experiment_id, run.data.tags.get(PARENT_TAG, ""), spec.study, spec.backbone)
            res = run_one(spec, Path(tmp), on_epoch, fault=faults.fault_for(name, spec.train.batch_size), identity=identity,
                          pretrain_log=plog)
            lifecycle.finished(tracker, mlflow_run_id, res.final, res.outputs, res.settings)
            result["value"] = res.final.get(spec.train.select_metric)
            result["warning"] = res.settings.get("warning")
        except Pruned as p:
            try:
                lifecycle.pruned(tracker, mlflow_run_id, p.epoch, p.final)
                code, result["value"] = Exit.PRUNED, p.final.get(spec.train.select_metric)
            except Exception as e:  # noqa: BLE001 - the store refused the pruned result: a failed cell
                code, result["error"] = Exit.FAILED, f"{type(e).__name__}: {e}"
                lifecycle.failed(tracker, mlflow_run_id, traceback.format_exc())
        except KeyboardInterrupt:
            code, result["error"] = Exit.INTERRUPTED, "interrupted"
            lifecycle.killed(tracker, mlflow_run_id, "interrupted (Ctrl-C or SIGTERM)")
        except Exception as e:  # noqa: BLE001 - every failure is recorded in MLflow, then the study goes on
            oom = type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()
            code = Exit.OOM if oom else Exit.FAILED
            result["error"] = f"{type(e).__name__}: {e}"
            lifecycle.failed(tracker, mlflow_run_id, traceback.format_exc())
    Path(result_path).write_text(json.dumps(result))
    sys.stdout.flush()
    os._exit(int(code))


def _die_with_parent(worker_pid: int | None = None) -> None:
    """Die with the worker, so a killed worker leaves no orphan cell behind to finish a re-queued cell twice.

    PR_SET_PDEATHSIG (Linux) covers a cell whose parent is the worker. A cell forked from the
    worker's fork server has the fork server as parent, and the fork server outlives the worker
    while any cell it forked is alive (each holds its "alive" pipe), so the cell also watches the
    worker itself: a pidfd (Linux >= 5.3) wakes a thread the moment the worker exits, else polling.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
        except OSError:
            pass
    if worker_pid is None or worker_pid == os.getppid():
        return
    import select
    import threading
    import time

    try:
        fd = os.pidfd_open(worker_pid)
    except (AttributeError, OSError):  # not Linux, an old kernel, or the worker is gone already
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])
        else:
            while True:
                try:
                    os.kill(worker_pid, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-worker", daemon=True).start()
