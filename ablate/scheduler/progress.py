"""The live display of `ablate run`: cells done/running/failed/left, each running cell's epoch and dev F1, an ETA."""

from __future__ import annotations

import time


def _table(study: str, cells: dict, started: float, finished_at_start: int):
    from rich.table import Table

    counts: dict[str, int] = {}
    for st in cells.values():
        counts[st["status"]] = counts.get(st["status"], 0) + 1
    total = len(cells)
    done = counts.get("FINISHED", 0)
    left = total - done - counts.get("FAILED", 0) - counts.get("KILLED", 0)
    new = done - finished_at_start
    elapsed = time.time() - started
    eta = f"{(elapsed / new) * left / 60:.1f} min" if new > 0 and left > 0 else "-"
    t = Table(title=f"{study}: {done}/{total} finished, {counts.get('RUNNING', 0)} running, "
                    f"{counts.get('FAILED', 0)} failed, {left} left; ETA {eta}", title_justify="left")
    for col in ("cell", "run_id", "epoch", "dev macro F1", "worker"):
        t.add_column(col)
    for rid, st in cells.items():
        if st["status"] == "RUNNING":
            m = st["metrics"]
            f1 = m.get("dev/macro_f1")
            t.add_row(st["name"], rid, str(st.get("epoch", "-")), f"{100 * f1:.2f}" if f1 is not None else "-", st.get("worker", ""))
    return t


def snapshot(tracker, study: str, run_ids: list[str]) -> dict:
    from ablate.tracking.store_read import read_status

    status = read_status(tracker.uri, study, tracker)
    out = {}
    for rid in run_ids:
        st = status.get(rid)
        if st is None:
            out[rid] = {"status": "PENDING", "name": rid, "metrics": {}}
            continue
        m = st["metrics"]
        out[rid] = {"status": st["status"], "name": st["name"], "metrics": m,
                    "epoch": int(m.get("epoch", 0) or 0) or "-", "worker": st["worker"]}
    return out


def watch(place, study: str, run_ids: list[str], procs, console=None, every: float = 2.0) -> None:
    """Refresh until every worker process has exited."""
    from rich.console import Console
    from rich.live import Live

    from ablate.tracking.client import Tracker

    console = console or Console(stderr=True)
    tracker = Tracker(place.tracking_uri)
    started = time.time()
    first = snapshot(tracker, study, run_ids)
    at_start = sum(1 for s in first.values() if s["status"] == "FINISHED")
    with Live(_table(study, first, started, at_start), console=console, refresh_per_second=1, transient=False) as live:
        while any(p.poll() is None for p in procs):
            time.sleep(every)
            try:
                live.update(_table(study, snapshot(tracker, study, run_ids), started, at_start))
            except Exception:  # a busy sqlite store: show the last table, try again next tick
                pass
