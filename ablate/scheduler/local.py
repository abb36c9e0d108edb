"""`ablate run` on this machine: plan, queue, start one worker process per GPU (or `--workers` on the CPU),
show live progress, and turn the outcome into the exit code; `ablate worker --gpus 0,1` alike."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from ablate.scheduler import lifecycle
from ablate.scheduler.cell import Exit


def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
        return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]
    except (OSError, subprocess.TimeoutExpired):
        return []


def worker_command(place, gpu: str) -> list[str]:
    """A local worker for a study its caller has planned already (--no-plan)."""
    cmd = [sys.executable, "-m", "ablate.cli", "worker", str(place.study_path), "--tracking-uri", place.tracking_uri,
           "--storage", place.storage, "--heartbeat", str(place.heartbeat_seconds), "--grace", str(place.grace_seconds),
           "--max-attempts", str(place.max_attempts), "--no-plan"]
    for o in place.overrides:
        cmd += ["--set", o]
    if gpu:
        cmd += ["--gpus", gpu]
    return cmd


def worker_exit(counts: dict) -> int:
    """A worker's exit code: 1 when a cell it ran failed, else 0 (Ctrl-C: 130, raised as KeyboardInterrupt)."""
    return int(Exit.FAILED) if counts.get("failed") else int(Exit.OK)


def run(place, workers: int | None, display: bool = True, console=None) -> int:
    """Plan, queue, start workers, show progress; 0 only when every cell is FINISHED."""
    from ablate.scheduler.plan import check_data, enqueue, log_plan, plan
    from ablate.scheduler.queue import CellQueue
    from ablate.tracking.client import Tracker

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
    if study.search is None:
        log_plan(tracker, parent, study, cells)
    lifecycle.study_running(tracker, parent)
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
            from ablate.scheduler.progress import watch

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
    _, final = plan(place, study=study)
    by: dict[str, int] = {}
    for c in final:
        by[c.status] = by.get(c.status, 0) + 1
    log("cells: " + ", ".join(f"{k} {v}" for k, v in sorted(by.items())))
    for c in final:
        if c.status not in ("FINISHED", "PENDING"):
            log(f"  {c.status:<8} {c.name} ({c.run_id}): {c.error or ''}")
    complete = bool(final) and by.get("FINISHED", 0) == len(final)
    lifecycle.study_ended(tracker, parent, complete, interrupted)
    if interrupted:
        return int(Exit.INTERRUPTED)
    return 0 if complete else 1


def work_on_gpus(place, gpus: list[str], plan_first: bool = True) -> int:
    """One worker process per GPU on this machine, each seeing only its own GPU (planned once, here)."""
    from ablate.scheduler.plan import check_data, enqueue, plan
    from ablate.scheduler.queue import CellQueue

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
        return int(Exit.INTERRUPTED)
