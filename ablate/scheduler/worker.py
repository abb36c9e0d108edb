"""Where a cell runs: one worker's loop (claim from a sweep, heartbeat, supervise a cell process, OOM retry).

`work` serves grid and search studies alike: the sweep (sweep.py) says what to run next, this module runs
it. Cells fork from a fork server that has imported torch/transformers/peft once: a fresh process per cell
(no memory carried over) without paying ~4-8 s of imports each time.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path

from ablate.scheduler import lifecycle
from ablate.scheduler.cell import Exit

LOST = "lost"  # not a process exit code: the worker stopped a cell whose trial was re-queued elsewhere
# What every cell imports, loaded once by the fork server (the sqlite/SQL store alone is ~0.6 s a cell).
PRELOAD = ["torch", "transformers", "peft", "mlflow", "mlflow.store.tracking.sqlalchemy_store", "ablate.executor",
           "ablate.scheduler.cell"]


def _fork_context():
    import multiprocessing as mp
    from multiprocessing import forkserver

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    # The server inherits an ignored SIGINT: a Ctrl-C while it imports must not kill it with a
    # traceback (once it serves, it ignores SIGINT itself; cells restore the default handler).
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, handler)
    return ctx


def work(place, gpu: str = "", poll_seconds: float = 2.0, log=print, plan_first: bool = True) -> dict:
    """Claim and run cells until the sweep is done. Returns counts (finished, pruned, failed, skipped).

    `plan_first`: queue the cells MLflow has not finished (what `ablate run` does), so a worker
    started anywhere, in any order, joins the study; concurrent planners may queue a cell twice,
    and the claim rule runs only the lower-numbered copy.
    """
    from ablate.scheduler.plan import check_data, enqueue, expand_cells, load_study_of, with_status
    from ablate.scheduler.queue import Worker
    from ablate.scheduler.sweep import AGAIN, DONE, WAIT, GridSweep, SearchSweep
    from ablate.tracking.client import Tracker
    from ablate.tracking.store_read import read_status

    ctx = _fork_context()  # first: the server imports while this process opens the store and the queue
    study = load_study_of(place)
    tracker = Tracker(place.tracking_uri)
    exp = tracker.experiment_id(study.name)
    parent = tracker.parent_run(exp, study.name, study.description)
    worker = Worker.here(gpu)
    counts = {"finished": 0, "pruned": 0, "failed": 0, "skipped": 0}
    sweep = (GridSweep if study.search is None else SearchSweep)(place, study, tracker, exp, worker, counts, log)
    if plan_first and study.search is None:
        from ablate.scheduler.plan import Cell

        check_data(study, log)
        specs, names = sweep.specs, sweep.names
        cells = with_status([Cell(rid, names[rid], dict(s.axes)) for rid, s in specs.items()],
                            read_status(place.tracking_uri, study.name, tracker))
        enqueue(sweep.queue, cells)
    while True:
        lifecycle.lost(tracker, sweep.queue.reap_stale(place.grace_seconds))
        job = sweep.next()
        if job == DONE:
            return counts
        if job == WAIT:
            time.sleep(poll_seconds)
            continue
        if job == AGAIN:
            continue
        tid = job.claim.trial_id
        try:
            with sweep.queue.heartbeat_thread(tid, place.heartbeat_seconds) as beat:
                outcome, value, error = run_with_oom_retries(
                    ctx, place, tracker, exp, parent, study.name, job, lambda mid, a: sweep.queue.started(tid, mid, a),
                    worker, log, lost=beat.lost)
        except KeyboardInterrupt:  # from the claim on: the cell goes back to the queue at once (MLflow: KILLED)
            sweep.queue.release(tid, f"interrupted on {worker}")
            raise
        counts[sweep.tell(job, outcome, value, error)] += 1


def run_with_oom_retries(ctx, place, tracker, exp, parent, study_name, job, on_start, worker, log,
                         lost=None) -> tuple[str, float | None, str | None]:
    """Run a claimed cell, halving the batch on out-of-memory. Returns (finished|pruned|failed, value, error).

    `lost`: an Event the heartbeat sets when the claim was reaped; the cell is then stopped.
    """
    spec, claim, name = job.spec, job.claim, job.name
    batch, accum = spec.train.batch_size, spec.train.grad_accum
    error = None
    for retry in range(place.max_oom_retries + 1):
        ran = spec if retry == 0 else _with_batch(spec, batch, accum)
        attempt = claim.attempt + retry
        tags = {"ablate.worker": str(worker), "ablate.trial": str(claim.number), **job.tags}
        if retry:
            tags["ablate.oom_retry"] = str(retry)
        mid = lifecycle.start(tracker, exp, parent, study_name, claim.run_id, name, spec.flat_params(), attempt, tags)
        on_start(mid, attempt)
        log(f"[{worker}] {name} ({claim.run_id}) attempt {attempt}: running")
        code, value, error = _run_cell_process(ctx, ran, tracker, mid, job.trial_json, lost)
        if code == Exit.OK:
            log(f"[{worker}] {name}: FINISHED ({value:.4f})" + (f"; warning: {error}" if error else ""))
            return "finished", value, None
        if code == Exit.PRUNED:
            log(f"[{worker}] {name}: pruned ({value if value is not None else float('nan'):.4f})")
            return "pruned", value, None
        if code == Exit.INTERRUPTED:
            raise KeyboardInterrupt
        if code == LOST:
            log(f"[{worker}] {name}: stopped: {error}")
            return "failed", None, error
        if code == Exit.OOM and batch > 1:
            batch, accum = batch // 2, accum * 2
            log(f"[{worker}] {name}: out of memory; retrying with batch {batch} x accumulation {accum}")
            continue
        log(f"[{worker}] {name}: FAILED: {error}")
        return "failed", None, error
    return "failed", None, error


def _with_batch(spec, batch: int, accum: int):
    from ablate.spec.schema import RunSpec

    data = spec.model_dump(mode="json")
    data["train"]["batch_size"], data["train"]["grad_accum"] = batch, accum
    return RunSpec.model_validate(data)


def _run_cell_process(ctx, spec, tracker, mlflow_run_id: str, trial_json: str | None = None,
                      lost=None) -> tuple[int | str, float | None, str | None]:
    from ablate.scheduler.cell import run_cell

    with tempfile.TemporaryDirectory(prefix="ablate-cell-") as tmp:
        result_path = Path(tmp) / "result.json"
        proc = ctx.Process(target=run_cell, args=(spec.model_dump_json(), tracker.uri, mlflow_run_id, str(result_path),
                                                  trial_json, os.getpid()))
        try:
            proc.start()  # waits for the fork server, which may still be importing
            while proc.exitcode is None:
                proc.join(timeout=1.0)
                if lost is not None and lost.is_set() and proc.exitcode is None:
                    proc.terminate()  # SIGTERM: the cell marks its MLflow run KILLED
                    proc.join(timeout=60)
                    return LOST, None, "this worker's claim went stale and its cell was re-queued; stopped here"
        except KeyboardInterrupt:
            if proc.pid is not None:
                proc.join(timeout=60)  # the cell got the same SIGINT: let it mark itself KILLED
            lifecycle.killed(tracker, mlflow_run_id, "interrupted (Ctrl-C) before the cell process ended")
            raise
        code = proc.exitcode
        out = json.loads(result_path.read_text()) if result_path.exists() else {}
    if code is not None and code < 0:  # killed by a signal (kernel OOM killer, kill -9)
        error = f"cell process died with signal {-code}"
        lifecycle.failed(tracker, mlflow_run_id, error)
        return Exit.FAILED, None, error
    return code or 0, out.get("value"), out.get("error") or out.get("warning")  # a finished cell's warning
