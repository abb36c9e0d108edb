"""Plan a study against MLflow, queue its cells, and work the queue: one fresh process per cell.

`plan` says which cells are done (a search study's cells are its trials so far); `work` is one
worker's loop (plan, claim, heartbeat, run the cell in a process forked from a pre-loaded fork
server, retry out-of-memory with half the batch; search studies: `search.work_search`); `run`
plans, starts local workers, shows live progress and returns the exit code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ablate.store_read import read_status

EXIT_OK, EXIT_FAILED, EXIT_OOM, EXIT_INTERRUPTED = 0, 1, 3, 130
EXIT_LOST = -1  # not a process exit code: the worker stopped a cell whose trial was re-queued elsewhere
# What every cell imports, loaded once by the fork server (the sqlite/SQL store alone is ~0.6 s a cell).
PRELOAD = ["torch", "transformers", "peft", "mlflow", "mlflow.store.tracking.sqlalchemy_store", "ablate.executor"]


@dataclass(frozen=True)
class Place:
    """Where a study runs: its file and overrides, the MLflow store and the queue storage."""

    study_path: Path
    overrides: tuple[str, ...]
    tracking_uri: str
    storage: str
    heartbeat_seconds: float = 10.0
    grace_seconds: float = 60.0
    max_attempts: int = 3
    max_oom_retries: int = 3


@dataclass
class Cell:
    run_id: str
    name: str
    axes: dict
    status: str = "PENDING"
    attempts: int = 0
    metrics: dict = field(default_factory=dict)
    error: str | None = None


def resolve_place(study_path: Path, overrides: list[str], tracking_uri: str | None, storage: str | None, **kw) -> Place:
    from ablate.queue import default_storage
    from ablate.tracking import default_tracking_uri

    uri = tracking_uri or default_tracking_uri(Path.cwd())
    return Place(Path(study_path), tuple(overrides), uri, storage or default_storage(uri, Path.cwd() / "mlruns"), **kw)


def load_cells(place: Place, study=None):
    """The study, its RunSpecs by run_id (grid order), and their readable names."""
    from ablate.grid import expand, run_id, run_name, file_hashes
    from ablate.spec import load_study

    study = study or load_study(place.study_path, list(place.overrides))
    runs = expand(study)
    hashes = file_hashes(study.data.resolved_files())
    specs = {}
    for r in runs:
        specs[run_id(r, hashes)] = r
    return study, specs, {rid: run_name(r) for rid, r in specs.items()}


def plan(place: Place, read_mlflow: bool = True) -> tuple[object, list[Cell]]:
    """Every cell with its status in MLflow: FINISHED, FAILED, KILLED, RUNNING, or PENDING.

    A search study's cells are the trials MLflow holds so far (read even when `read_mlflow` is
    False, since nothing else lists them; their status is then left PENDING).
    """
    from ablate.spec import load_study

    study = load_study(place.study_path, list(place.overrides))
    if study.search is not None:
        from ablate.search import trial_cells
        from ablate.tracking import Tracker

        tracker = Tracker(place.tracking_uri)
        cells = [Cell(rid, name, axes) for rid, name, axes in trial_cells(tracker, study)]
        return study, _with_status(cells, read_status(place.tracking_uri, study.name, tracker)) if read_mlflow else cells
    study, specs, names = load_cells(place, study)
    cells = [Cell(rid, names[rid], dict(spec.axes)) for rid, spec in specs.items()]
    if read_mlflow and _store_exists(place.tracking_uri):
        cells = _with_status(cells, read_status(place.tracking_uri, study.name))
    return study, cells


def _store_exists(tracking_uri: str) -> bool:
    """False for a local sqlite store not created yet: nothing has run, and opening it would create it."""
    from ablate.tracking import sqlite_file

    db = sqlite_file(tracking_uri)
    return db is None or db.exists()


def _with_status(cells: list[Cell], status: dict[str, dict]) -> list[Cell]:
    for c in cells:
        st = status.get(c.run_id)
        if st:
            c.status, c.attempts, c.metrics, c.error = st["status"], st["attempts"], st["metrics"], st["error"]
    return cells


def check_data(study, log=print) -> None:
    """Read and repair the study's data once before anything is queued: a bad file is one message
    (exit 2) here, not the same failure in every cell. Repairs and warnings are counted."""
    from ablate.executor import load_corpus

    corpus = load_corpus(study.data)
    if corpus.repairs or corpus.warnings:
        kinds = sorted({f"{r.from_[:2]}X->{r.to[:2]}X" for r in corpus.repairs})
        log(f"data: {len(corpus.repairs)} tags repaired ({', '.join(kinds) or 'none'}), {len(corpus.warnings)} warnings "
            f"(`ablate data check` lists them)")


def enqueue(queue, cells: list[Cell]) -> int:
    """Queue the cells MLflow has not FINISHED (numbering each retry's attempt after MLflow's runs)."""
    done = {c.run_id for c in cells if c.status == "FINISHED"}
    return queue.enqueue([(c.run_id, c.name) for c in cells], done, {c.run_id: c.attempts for c in cells})


# ---- one worker ---------------------------------------------------------------------------------


def cell_runs(tracker, exp: str, run_id: str) -> list:
    """Every MLflow run (attempt) of one cell."""
    from ablate.tracking import RUN_ID

    return list(tracker.client.search_runs([exp], f"tags.`{RUN_ID}` = '{run_id}'", max_results=1000))


def _mark_lost(tracker, reaped) -> None:
    for _, mlflow_id in reaped:
        if not mlflow_id:
            continue
        try:
            tracker.kill_if_running(mlflow_id, "the worker running this cell stopped (no heartbeat); the cell was re-queued")
        except Exception:
            pass


def work(place: Place, gpu: str = "", poll_seconds: float = 2.0, log=print, plan_first: bool = True) -> dict:
    """Claim and run cells until the queue has nothing waiting or running. Returns counts.

    `plan_first`: queue the cells MLflow has not finished (what `ablate run` does), so a worker
    started anywhere, in any order, joins the study; concurrent planners may queue a cell twice,
    and the claim rule runs only the lower-numbered copy.
    """
    import multiprocessing as mp

    from ablate.queue import CellQueue, Worker
    from ablate.spec import load_study
    from ablate.tracking import Tracker

    from multiprocessing import forkserver

    ctx = mp.get_context("forkserver")
    # Cells fork from a server that has imported torch/transformers/peft once: a fresh process
    # per cell (no memory carried over) without paying ~4-8 s of imports each time. Started
    # first: it imports while this process opens the store and the queue.
    ctx.set_forkserver_preload(PRELOAD)
    # The server inherits an ignored SIGINT: a Ctrl-C while it imports must not kill it with a
    # traceback (once it serves, it ignores SIGINT itself; cells restore the default handler).
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, handler)
    study = load_study(place.study_path, list(place.overrides))
    tracker = Tracker(place.tracking_uri)
    exp = tracker.experiment_id(study.name)
    parent = tracker.parent_run(exp, study.name, study.description)
    worker = Worker.here(gpu)
    if study.search is not None:
        from ablate.search import work_search

        return work_search(place, study, worker, ctx, tracker, exp, parent, log, poll_seconds)
    study, specs, names = load_cells(place, study)
    queue = CellQueue(place.storage, study.name, place.max_attempts)
    if plan_first:
        check_data(study, log)
        cells = _with_status([Cell(rid, names[rid], dict(s.axes)) for rid, s in specs.items()],
                             read_status(place.tracking_uri, study.name, tracker))
        enqueue(queue, cells)
    counts = {"finished": 0, "failed": 0, "skipped": 0}
    while True:
        _mark_lost(tracker, queue.reap_stale(place.grace_seconds))
        claim = queue.claim(worker)
        if claim is None:
            if queue.pending() == 0:
                return counts
            time.sleep(poll_seconds)
            continue
        try:
            spec = specs.get(claim.run_id)
            if spec is None:
                queue.finish(claim.trial_id, None, f"cell {claim.run_id} is not in this study as this worker read it (study file or data changed?)")
                counts["failed"] += 1
                continue
            prior = cell_runs(tracker, exp, claim.run_id)
            if any(r.info.status == "FINISHED" for r in prior):
                queue.skip(claim.trial_id, "already FINISHED in MLflow")
                counts["skipped"] += 1
                continue
            # The attempt is MLflow's count of this cell's runs plus one: right even when a planning
            # duplicate, not the re-queued copy, is the trial that retries a lost cell.
            claim = dataclasses.replace(claim, attempt=len(prior) + 1)
            with queue.heartbeat_thread(claim.trial_id, place.heartbeat_seconds) as beat:
                _, value, error = _run_with_oom_retries(ctx, place, tracker, exp, parent, study.name, claim, spec, names[claim.run_id],
                                                        lambda mid, attempt: queue.started(claim.trial_id, mid, attempt), worker,
                                                        log, lost=beat.lost)
        except KeyboardInterrupt:  # from the claim on: the cell goes back to the queue at once (MLflow: KILLED)
            queue.release(claim.trial_id, f"interrupted on {worker}")
            raise
        queue.finish(claim.trial_id, value, error)
        counts["failed" if error else "finished"] += 1


def _run_with_oom_retries(ctx, place, tracker, exp, parent, study_name, claim, spec, name, on_start, worker, log,
                          tags: dict | None = None, trial_json: str | None = None, lost=None) -> tuple[str, float | None, str | None]:
    """Run a claimed cell, halving the batch on out-of-memory. Returns (finished|pruned|failed, value, error).

    `lost`: an Event the heartbeat sets when the claim was reaped; the cell is then stopped.
    """
    from ablate.search import EXIT_PRUNED

    batch, accum = spec.train.batch_size, spec.train.grad_accum
    for retry in range(place.max_oom_retries + 1):
        ran = spec if retry == 0 else _with_batch(spec, batch, accum)
        attempt = claim.attempt + retry
        extra = {"ablate.worker": str(worker), "ablate.trial": str(claim.number), **(tags or {})}
        if retry:
            extra["ablate.oom_retry"] = str(retry)
        mid = tracker.start_cell(exp, parent, study_name, claim.run_id, name, spec.flat_params(), attempt, extra)
        on_start(mid, attempt)
        log(f"[{worker}] {name} ({claim.run_id}) attempt {attempt}: running")
        code, value, error = _run_cell_process(ctx, ran, place.tracking_uri, mid, trial_json, lost)
        if code == EXIT_OK:
            log(f"[{worker}] {name}: FINISHED ({value:.4f})")
            return "finished", value, None
        if code == EXIT_PRUNED:
            log(f"[{worker}] {name}: pruned ({value if value is not None else float('nan'):.4f})")
            return "pruned", value, None
        if code == EXIT_INTERRUPTED:
            raise KeyboardInterrupt
        if code == EXIT_LOST:
            log(f"[{worker}] {name}: stopped: {error}")
            return "failed", None, error
        if code == EXIT_OOM and batch > 1:
            batch, accum = batch // 2, accum * 2
            log(f"[{worker}] {name}: out of memory; retrying with batch {batch} x accumulation {accum}")
            continue
        log(f"[{worker}] {name}: FAILED: {error}")
        return "failed", None, error
    return "failed", None, error


def _with_batch(spec, batch: int, accum: int):
    from ablate.spec import RunSpec

    data = spec.model_dump(mode="json")
    data["train"]["batch_size"], data["train"]["grad_accum"] = batch, accum
    return RunSpec.model_validate(data)


def _run_cell_process(ctx, spec, tracking_uri: str, mlflow_run_id: str, trial_json: str | None = None,
                      lost=None) -> tuple[int, float | None, str | None]:
    from ablate.executor import run_cell

    with tempfile.TemporaryDirectory(prefix="ablate-cell-") as tmp:
        result_path = Path(tmp) / "result.json"
        proc = ctx.Process(target=run_cell, args=(spec.model_dump_json(), tracking_uri, mlflow_run_id, str(result_path),
                                                  trial_json, os.getpid()))
        try:
            proc.start()  # waits for the fork server, which may still be importing
            while proc.exitcode is None:
                proc.join(timeout=1.0)
                if lost is not None and lost.is_set() and proc.exitcode is None:
                    proc.terminate()  # SIGTERM: the cell marks its MLflow run KILLED
                    proc.join(timeout=60)
                    return EXIT_LOST, None, "this worker's claim went stale and its cell was re-queued; stopped here"
        except KeyboardInterrupt:
            if proc.pid is not None:
                proc.join(timeout=60)  # the cell got the same SIGINT: let it mark itself KILLED
            _killed_unless_ended(tracking_uri, mlflow_run_id)  # it may never have started
            raise
        code = proc.exitcode
        out = json.loads(result_path.read_text()) if result_path.exists() else {}
    if code is not None and code < 0:  # killed by a signal (kernel OOM killer, kill -9)
        from ablate.tracking import Tracker

        error = f"cell process died with signal {-code}"
        try:
            Tracker(tracking_uri).fail_cell(mlflow_run_id, error)
        except Exception:
            pass
        return EXIT_FAILED, None, error
    return code or 0, out.get("value"), out.get("error")


def _killed_unless_ended(tracking_uri: str, mlflow_run_id: str) -> None:
    from ablate.tracking import Tracker

    try:
        Tracker(tracking_uri).kill_if_running(mlflow_run_id, "interrupted (Ctrl-C) before the cell process ended")
    except Exception:  # noqa: BLE001 - the store is unreachable too; the heartbeat grace covers it
        pass


# ---- the `ablate run` front end -------------------------------------------------------------------


def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
        return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]
    except (OSError, subprocess.TimeoutExpired):
        return []


def worker_command(place: Place, gpu: str) -> list[str]:
    """A local worker for a study its caller has planned already (--no-plan)."""
    cmd = [sys.executable, "-m", "ablate.cli", "worker", str(place.study_path), "--tracking-uri", place.tracking_uri,
           "--storage", place.storage, "--heartbeat", str(place.heartbeat_seconds), "--grace", str(place.grace_seconds),
           "--max-attempts", str(place.max_attempts), "--no-plan"]
    for o in place.overrides:
        cmd += ["--set", o]
    if gpu:
        cmd += ["--gpus", gpu]
    return cmd


def run(place: Place, workers: int | None, display: bool = True, console=None) -> int:
    """Plan, queue, start workers, show progress; 0 only when every cell is FINISHED."""
    from ablate.queue import CellQueue
    from ablate.tracking import Tracker

    study, cells = plan(place)
    done = {c.run_id for c in cells if c.status == "FINISHED"}
    log = console.print if console else print
    if len(done) < len(cells) or study.search is not None:
        check_data(study, log)
    if study.search is None:
        queued = enqueue(CellQueue(place.storage, study.name, place.max_attempts), cells)
        log(f"{study.name}: {len(cells)} cells, {len(done)} finished, {queued} queued; MLflow {place.tracking_uri}; queue {place.storage}")
    else:
        CellQueue(place.storage, study.name, place.max_attempts, kind="search")  # created once, before the workers race to
        log(f"{study.name}: search of {study.search.n_trials} trials ({study.search.sampler}, pruner {study.search.pruner}), "
            f"{len(done)} finished so far; MLflow {place.tracking_uri}; queue {place.storage}")
    tracker = Tracker(place.tracking_uri)
    parent = tracker.parent_run(tracker.experiment_id(study.name), study.name, study.description)
    tracker.client.update_run(parent, status="RUNNING")  # the study's run shows its state in the UI
    gpus = visible_gpus()
    n = workers or max(1, len(gpus))
    procs = []
    for i in range(n):
        gpu = gpus[i % len(gpus)] if gpus else ""
        env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": gpu} if gpu else {})}
        if not gpus and n > 1 and "OMP_NUM_THREADS" not in os.environ:
            # CPU workers share the cores: torch's default (a thread per core each) oversubscribes them.
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
        procs.append(subprocess.Popen(worker_command(place, gpu), env=env))
    interrupted = False
    try:
        if display and study.search is None:  # a search's cells appear as it samples them: the workers' log lines say more
            from ablate.progress import watch

            watch(place, study.name, [c.run_id for c in cells], procs, console)
        for p in procs:
            p.wait()
    except KeyboardInterrupt:
        interrupted = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
    _, final = plan(place)
    by = {}
    for c in final:
        by[c.status] = by.get(c.status, 0) + 1
    log("cells: " + ", ".join(f"{k} {v}" for k, v in sorted(by.items())))
    for c in final:
        if c.status not in ("FINISHED", "PENDING"):
            log(f"  {c.status:<8} {c.name} ({c.run_id}): {c.error or ''}")
    complete = bool(final) and by.get("FINISHED", 0) == len(final)
    try:
        tracker.client.set_terminated(parent, "KILLED" if interrupted else "FINISHED" if complete else "FAILED")
    except Exception:  # noqa: BLE001 - the cells' results are what matters; the store may be gone
        pass
    if interrupted:
        return EXIT_INTERRUPTED
    return 0 if complete else 1


def work_on_gpus(place: Place, gpus: list[str], plan_first: bool = True) -> int:
    """One worker process per GPU on this machine, each seeing only its own GPU (planned once, here)."""
    from ablate.queue import CellQueue

    study, cells = plan(place)
    if plan_first:
        check_data(study)
    if plan_first and study.search is None:
        enqueue(CellQueue(place.storage, study.name, place.max_attempts), cells)
    procs = [subprocess.Popen(worker_command(place, g), env={**os.environ, "CUDA_VISIBLE_DEVICES": g}) for g in gpus]
    try:
        return max(p.wait() for p in procs)
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        return EXIT_INTERRUPTED


def study_status(place: Place) -> dict:
    """Counts by status, who holds which cell (from the queue), and each failure's cause."""
    from ablate.queue import CellQueue

    study, cells = plan(place)
    counts: dict[str, int] = {}
    for c in cells:
        counts[c.status] = counts.get(c.status, 0) + 1
    holders = []
    if Path(place.storage).exists() or "://" in place.storage:
        holders = CellQueue(place.storage, study.name, kind="grid" if study.search is None else "search").holders()
    return {
        "study": study.name,
        "cells": len(cells),
        "counts": counts,
        "running": holders,
        "failed": [{"run_id": c.run_id, "name": c.name, "status": c.status, "error": c.error, "attempts": c.attempts}
                   for c in cells if c.status in ("FAILED", "KILLED")],
        "tracking_uri": place.tracking_uri,
        "storage": place.storage,
    }
