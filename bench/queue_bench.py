"""Time the queue's round trip per claimed cell (claim + one heartbeat + finish) on the journal file and PostgreSQL.

N cells (default 200) are queued in a fresh Optuna study, then one worker claims, beats and
finishes them one by one, as `ablate worker` does around each cell; a second pass times the same
with 4 competing worker threads (each its own storage connection). PostgreSQL gets a fresh
database on 127.0.0.1:5432 (dropped after); it is skipped when unreachable. Wall and CPU seconds
are both reported, so time lost to other processes on a shared machine shows.
Usage: python bench/queue_bench.py [--n 200] [--pg postgresql://postgres@127.0.0.1:5432/postgres] [--out FILE.json]
(floor: <= 200 ms per cell on the local PostgreSQL)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _create_db(admin_url: str) -> tuple[str, object] | None:
    import psycopg2

    try:
        admin = psycopg2.connect(admin_url, connect_timeout=3)
    except psycopg2.OperationalError as e:
        print(f"PostgreSQL unreachable ({str(e).strip().splitlines()[0]}): skipped")
        return None
    admin.autocommit = True
    name = f"ablate_bench_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name, (admin, name)


def _drop_db(handle) -> None:
    admin, name = handle
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def one_worker(url: str, n: int) -> dict:
    from ablate.scheduler.queue import CellQueue, Worker

    q = CellQueue(url, f"bench{uuid.uuid4().hex[:6]}")
    t0 = time.perf_counter()
    q.enqueue([(f"cell{i:05d}", f"name{i}") for i in range(n)], finished=set())
    enqueue_s = time.perf_counter() - t0
    worker, laps = Worker.here("0"), []
    cpu0 = time.process_time()
    while True:
        t = time.perf_counter()
        c = q.claim(worker)
        if c is None:
            break
        q.beat(c.trial_id)
        q.finish(c.trial_id, 0.5)
        laps.append(time.perf_counter() - t)
    cpu = time.process_time() - cpu0
    assert len(laps) == n, len(laps)
    return {"enqueue_ms_per_cell": 1000 * enqueue_s / n, "round_trip_ms_mean": 1000 * statistics.mean(laps),
            "round_trip_ms_p50": 1000 * statistics.median(laps),
            "round_trip_ms_p95": 1000 * statistics.quantiles(laps, n=20)[18],
            "round_trip_ms_first10": 1000 * statistics.mean(laps[:10]), "round_trip_ms_last10": 1000 * statistics.mean(laps[-10:]),
            "cpu_ms_per_cell": 1000 * cpu / n}


def four_workers(url: str, n: int) -> dict:
    from ablate.scheduler.queue import CellQueue, Worker

    name = f"bench{uuid.uuid4().hex[:6]}"
    CellQueue(url, name).enqueue([(f"cell{i:05d}", f"name{i}") for i in range(n)], finished=set())
    got: list[str] = []

    def work(i: int) -> None:
        q, w = CellQueue(url, name), Worker("bench", 1000 + i, str(i))
        while (c := q.claim(w)) is not None:
            q.beat(c.trial_id)
            q.finish(c.trial_id, 0.5)
            got.append(c.run_id)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    assert sorted(got) == [f"cell{i:05d}" for i in range(n)], "a cell was claimed twice or never"
    return {"cells_per_second": n / wall, "wall_ms_per_cell": 1000 * wall / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "queue_bench.json")
    args = ap.parse_args()
    results = {"n": args.n, "load_average": os.getloadavg()[0], "storages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        targets = [("journal", str(Path(tmp) / "queue.journal"), None)]
        db = _create_db(args.pg)
        if db:
            targets.append(("postgresql", db[0], db[1]))
        try:
            for kind, url, _ in targets:
                results["storages"][kind] = {"one_worker": one_worker(url, args.n), "four_workers": four_workers(url, args.n)}
        finally:
            if db:
                _drop_db(db[1])
    print(f"queue round trip per claimed cell (claim + heartbeat + finish), N={args.n}, load {results['load_average']:.1f}")
    print("| storage | mean ms | p50 ms | p95 ms | first 10 / last 10 ms | CPU ms | enqueue ms/cell | 4 workers: cells/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, r in results["storages"].items():
        o, f = r["one_worker"], r["four_workers"]
        print(f"| {kind} | {o['round_trip_ms_mean']:.1f} | {o['round_trip_ms_p50']:.1f} | {o['round_trip_ms_p95']:.1f} | "
              f"{o['round_trip_ms_first10']:.1f} / {o['round_trip_ms_last10']:.1f} | {o['cpu_ms_per_cell']:.1f} | "
              f"{o['enqueue_ms_per_cell']:.1f} | {f['cells_per_second']:.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
