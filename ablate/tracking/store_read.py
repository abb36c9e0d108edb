"""Cell status from MLflow: a local sqlite store read directly (stdlib `sqlite3`, no mlflow import), else MlflowClient.

`ablate plan` and `ablate status` on a 10,000-cell study must answer in a few seconds. Through
`MlflowClient` the same answer costs ~1.2 s to import mlflow, ~1.5 s to open the store (its
alembic schema check) and then `search_runs` builds every param of every run. The four tables
read here (`experiments`, `runs`, `tags`, `latest_metrics`) are the ones `run.info` and
`run.data` come from in MLflow's SQLAlchemy store, unchanged in layout since MLflow 1.x.
If the store does not look like that (a future MLflow, another file), `cell_status` returns None
and the caller goes through `MlflowClient`; tests check both paths give the same answer.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

from ablate.errors import UserError
from ablate.tracking.tags import ATTEMPT, FINAL_TAG, ROLE, RUN_ID, read_final, representative
from ablate.tracking.uri import sqlite_file

_NEEDED = {
    "experiments": {"experiment_id", "name"},
    "runs": {"run_uuid", "name", "status", "experiment_id", "lifecycle_stage", "start_time"},
    "tags": {"key", "value", "run_uuid"},
    "latest_metrics": {"key", "value", "is_nan", "run_uuid"},
}
_TAGS = (RUN_ID, ROLE, ATTEMPT, FINAL_TAG, "ablate.error", "ablate.worker")
# ... and the further parts of FINAL_TAG (FINAL_TAG.1, FINAL_TAG.2, ...): keys in [FINAL_TAG + ".", FINAL_TAG + "/")
_FINAL_PARTS = (f"{FINAL_TAG}.", f"{FINAL_TAG}/")


def _connect(path: Path) -> sqlite3.Connection | None:
    """A read-only connection when the file has MLflow's tables as this module knows them, else None.

    A SQLite file with no MLflow tables at all is not a store: a UserError, so that a read-only
    command does not fall back to MlflowClient, which would migrate MLflow's schema into it.
    """
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return None
    try:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables & {"experiments", "runs", "alembic_version"}:
            con.close()
            raise UserError(f"{path} is a SQLite file without MLflow's tables: not an MLflow store "
                            "(point --tracking-uri at the study's store)")
        for table, cols in _NEEDED.items():
            have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
            if not cols <= have:
                con.close()
                return None
        return con
    except sqlite3.Error:
        con.close()
        return None


def cell_status(tracking_uri: str, study: str) -> dict[str, dict[str, Any]] | None:
    """run_id -> {status, attempts, metrics, error, name} as `scheduler` wants it; {} when the study
    never ran (or the file is empty); None when this is not a sqlite store this module can read (use
    MlflowClient)."""
    path = sqlite_file(tracking_uri)
    if path is None or not path.is_file():
        return None
    if path.stat().st_size == 0:
        return {}
    con = _connect(path)
    if con is None:
        return None
    try:
        return _read(con, study)
    except sqlite3.Error:
        return None
    finally:
        con.close()


def _read(con: sqlite3.Connection, study: str) -> dict[str, dict[str, Any]]:
    exp = con.execute("SELECT experiment_id FROM experiments WHERE name = ?", (study,)).fetchone()
    if exp is None:
        return {}
    marks = ",".join("?" * len(_TAGS))
    # Cell runs (tag ablate.role = cell) that are not deleted, oldest first, as Tracker.cell_runs.
    runs = con.execute(
        "SELECT r.run_uuid, r.name, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active' AND t.key = ? AND t.value = 'cell' "
        "ORDER BY r.start_time, r.run_uuid",
        (exp[0], ROLE),
    ).fetchall()
    tags: dict[str, dict[str, str]] = {}
    for uuid, key, value in con.execute(
        f"SELECT t.run_uuid, t.key, t.value FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
        f"WHERE r.experiment_id = ? AND (t.key IN ({marks}) OR (t.key > ? AND t.key < ?))",
        (exp[0], *_TAGS, *_FINAL_PARTS),
    ):
        tags.setdefault(uuid, {})[key] = value
    metrics: dict[str, dict[str, float]] = {}
    for uuid, key, value, is_nan in con.execute(
        "SELECT m.run_uuid, m.key, m.value, m.is_nan FROM latest_metrics m JOIN runs r ON r.run_uuid = m.run_uuid "
        "WHERE r.experiment_id = ?",
        (exp[0],),
    ):
        metrics.setdefault(uuid, {})[key] = math.nan if is_nan else float(value)
    out: dict[str, dict[str, Any]] = {}
    chosen = representative((tags.get(uuid, {}).get(RUN_ID), status, (uuid, name)) for uuid, name, status in runs)
    for rid, st in chosen.items():
        uuid, name = st["run"]
        t = tags.get(uuid, {})
        m = dict(metrics.get(uuid, {}))
        final = read_final(t)  # as tracking.final_metrics: None (keep the latest values) unless whole
        if final is not None:
            m.update(final)
        out[rid] = {"status": st["status"], "attempts": st["attempts"], "metrics": m, "error": t.get("ablate.error"),
                    "name": name, "worker": t.get("ablate.worker", ""), "mlflow_run_id": uuid}
    return out


def read_status(tracking_uri: str, study_name: str, tracker=None) -> dict[str, dict]:
    """run_id -> {status, attempts, metrics (final), error} of every cell MLflow holds.

    A local sqlite store is read directly (`ablate.tracking.store_read`: no mlflow import, seconds for
    10,000 cells); any other store, or a sqlite file that does not look like MLflow's, through
    `MlflowClient`.
    """
    fast = cell_status(tracking_uri, study_name)
    if fast is not None:
        return fast
    from ablate.tracking.client import Tracker

    return client_status(tracker or Tracker(tracking_uri), study_name)


def client_status(tracker, study_name: str) -> dict[str, dict]:
    """`read_status` through `MlflowClient.search_runs` (any store)."""
    from ablate.tracking.tags import final_metrics

    out = {}
    for rid, st in tracker.cell_status(tracker.experiment_id(study_name, create=False)).items():
        r = st["run"]
        out[rid] = {"status": r.info.status, "attempts": st["attempts"], "metrics": final_metrics(r),
                    "error": r.data.tags.get("ablate.error"), "name": r.info.run_name,
                    "worker": r.data.tags.get("ablate.worker", ""), "mlflow_run_id": r.info.run_id}
    return out
