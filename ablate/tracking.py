"""MLflow as the results store: one experiment per study, a parent run, one nested run per cell.

Always an explicit `MlflowClient(tracking_uri)`, never the fluent API (its active run is
process-global). Metrics go in batches (`log_batch`): one call per value costs ~4 ms on sqlite.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from ablate.errors import UserError
from ablate.store_uri import (  # noqa: F401 - default_tracking_uri, local_store_dir, sqlite_file: the public names
    _bad_uri,
    _sqlite_problem,
    _store_error,
    default_tracking_uri,
    driver_url,
    local_store_dir,
    probe_server,
    sqlite_file,
)

ROLE, STUDY, RUN_ID, ATTEMPT = "ablate.role", "ablate.study", "ablate.run_id", "ablate.attempt"
PARENT_TAG = "mlflow.parentRunId"
FINAL_TAG = "ablate.final"  # the final metrics as JSON, split over ablate.final, ablate.final.1, ...
TAG_LIMIT = 8000  # MLflow's limit on a tag value (MAX_TAG_VAL_LENGTH); longer values are cut
HISTORY_KEYS = ("train/loss", "dev/f1", "dev/macro_f1", "epoch_seconds")


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("ablate", "torch", "transformers", "peft", "mlflow", "optuna"):
        try:
            out[f"ablate.version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=cwd, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=cwd, timeout=5)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


class Tracker:
    """Writes and reads one study's runs in one MLflow store."""

    def __init__(self, tracking_uri: str):
        """Opens the store now; a URI that does not open, or a server that does not answer, is a UserError."""
        import logging

        from mlflow.tracking import MlflowClient

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        for name in ("mlflow", "alembic"):  # schema-migration chatter on first use of a store
            logging.getLogger(name).setLevel(logging.WARNING)
        store = local_store_dir(tracking_uri)
        self.uri = tracking_uri
        if tracking_uri.lower().startswith(("http://", "https://")):
            probe_server(tracking_uri)

        def client(uri: str = driver_url(tracking_uri)) -> Any:  # MlflowClient opens the store (sqlite: its schema) here
            try:
                return MlflowClient(uri)
            except Exception as e:
                raise _store_error(tracking_uri, e) from None

        if store is None:
            self.client = client()
            return
        problem = _sqlite_problem(sqlite_file(tracking_uri))
        if problem:
            raise _bad_uri(tracking_uri, problem)
        if store.exists() and not store.is_dir():
            raise _bad_uri(tracking_uri, f"{store} is not a folder")
        if not sqlite_file(tracking_uri).exists():
            self._create_sqlite_store(tracking_uri, store, client)
        self.client = client()  # an existing store: no lock, so a read-only one opens too

    @staticmethod
    def _create_sqlite_store(tracking_uri: str, store: Path, client) -> None:
        """A new sqlite store: built aside, then renamed into place, one process at a time.

        MLflow gives a new store its schema by alembic migrations; two processes doing that together
        (workers started at the same moment) break each other's, and a Ctrl-C in the middle leaves a
        half-made file every later open fails on. The lock file serialises creators; the rename makes
        the store appear whole or not at all.
        """
        import fcntl
        import uuid

        db = sqlite_file(tracking_uri)
        try:
            store.mkdir(parents=True, exist_ok=True)
            lock = open(store / ".store.lock", "a")
        except OSError as e:
            raise _bad_uri(tracking_uri, f"cannot create {store / '.store.lock'} ({e.strerror or e})") from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if db.exists():
                    return  # another process created it while this one waited
                for stale in store.glob(f".{db.name}.*.new*"):  # left by a creator killed with -9
                    stale.unlink(missing_ok=True)
                tmp = db.with_name(f".{db.name}.{uuid.uuid4().hex[:12]}.new")  # MLflow caches a store per URI
                try:
                    client(f"sqlite:///{tmp}")
                    os.replace(tmp, db)
                finally:
                    tmp.unlink(missing_ok=True)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # ---- experiments and the parent run -------------------------------------------------
    def experiment_id(self, study: str, create: bool = True) -> str | None:
        exp = self._call(self.client.get_experiment_by_name, study)
        if exp is not None:
            return exp.experiment_id
        if not create:
            return None
        store = local_store_dir(self.uri)
        location = (store.resolve() / "artifacts" / study).as_uri() if store else None
        try:
            return self.client.create_experiment(study, artifact_location=location)
        except Exception:  # another worker created it first
            exp = self._call(self.client.get_experiment_by_name, study)
            if exp is None:
                raise
            return exp.experiment_id

    def parent_run(self, experiment_id: str, study: str, description: str = "") -> str:
        """The study's parent run (created once): cells nest under it in the UI."""
        runs = self.client.search_runs([experiment_id], f"tags.`{ROLE}` = 'study'", max_results=1, order_by=["attributes.start_time ASC"])
        if runs:
            return runs[0].info.run_id
        tags = {ROLE: "study", STUDY: study, "mlflow.note.content": description}
        run = self.client.create_run(experiment_id, tags=tags, run_name=study)
        return run.info.run_id

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # network or server down: one clear message
            if "Connection" in type(e).__name__ or "connect" in str(e).lower():
                raise UserError(f"cannot reach the MLflow tracking server at {self.uri}: {e}") from None
            raise

    # ---- writing a cell --------------------------------------------------------------------
    def start_cell(self, experiment_id: str, parent_id: str, study: str, run_id: str, name: str,
                   params: dict[str, str], attempt: int, extra_tags: dict[str, str] | None = None) -> str:
        from mlflow.entities import Param

        tags = {
            ROLE: "cell", STUDY: study, RUN_ID: run_id, ATTEMPT: str(attempt), PARENT_TAG: parent_id,
            "ablate.git_commit": git_commit(), "ablate.host": socket.gethostname(), "ablate.pid": str(os.getpid()),
            "ablate.python": platform.python_version(), **_versions(), **(extra_tags or {}),
        }
        run = self.client.create_run(experiment_id, tags=tags, run_name=name)
        mid = run.info.run_id
        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(mid, params=items[i : i + 100])
        return mid

    def set_tags(self, mlflow_run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 tags per batch
            self.client.log_batch(mlflow_run_id, tags=items[i : i + 100])

    def log_metrics(self, mlflow_run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 1000):
            self.client.log_batch(mlflow_run_id, metrics=items[i : i + 1000])

    def finish_cell(self, mlflow_run_id: str, final: dict[str, float], outputs: Path | None, settings: dict) -> None:
        # Final values (dev and test at the best epoch) go at step 0; MLflow's run.data.metrics
        # shows the highest step (the last epoch), so the finals are also kept as JSON in tags that
        # readers take from the same search_runs call (no per-metric history queries).
        self.log_metrics(mlflow_run_id, final, step=0)
        self.set_tags(mlflow_run_id, final_tags(final))
        if settings:
            self.set_tags(mlflow_run_id, {f"ablate.ran.{k}": v for k, v in settings.items()})
        if outputs is not None and Path(outputs).exists():
            self.client.log_artifacts(mlflow_run_id, str(outputs))
        self.client.set_terminated(mlflow_run_id, "FINISHED")

    def kill_if_running(self, mlflow_run_id: str, why: str) -> None:
        """Mark a cell run KILLED unless it ended already (a cell that FINISHED keeps its result)."""
        if self.client.get_run(mlflow_run_id).info.status == "RUNNING":
            self.fail_cell(mlflow_run_id, why, "KILLED")

    def fail_cell(self, mlflow_run_id: str, error: str, status: str = "FAILED") -> None:
        self.client.set_tag(mlflow_run_id, "ablate.error", error.strip().splitlines()[-1][:4000] if error.strip() else status)
        self.client.log_text(mlflow_run_id, error, "error.txt")
        self.client.set_terminated(mlflow_run_id, status)

    # ---- reading ---------------------------------------------------------------------------
    def cell_runs(self, experiment_id: str, run_ids: Iterable[str] | None = None) -> list:
        """Every cell run (all attempts) of the experiment, oldest first."""
        out, token = [], None
        while True:
            page = self.client.search_runs(
                [experiment_id], f"tags.`{ROLE}` = 'cell'", max_results=5000,
                order_by=["attributes.start_time ASC"], page_token=token,
            )
            out += list(page)
            token = page.token
            if not token:
                break
        if run_ids is not None:
            wanted = set(run_ids)
            out = [r for r in out if r.data.tags.get(RUN_ID) in wanted]
        return out

    def cell_status(self, experiment_id: str | None) -> dict[str, dict[str, Any]]:
        """run_id -> the representative attempt: FINISHED if any, else the latest; with attempt count."""
        if experiment_id is None:
            return {}
        return representative((r.data.tags.get(RUN_ID), r.info.status, r) for r in self.cell_runs(experiment_id))

    def history(self, mlflow_run_id: str, keys: Iterable[str] = HISTORY_KEYS) -> dict[str, list[float]]:
        out = {}
        for k in keys:
            hist = sorted(self.client.get_metric_history(mlflow_run_id, k), key=lambda m: m.step)
            if hist:
                out[k] = [m.value for m in hist if m.step >= 1]
        return out


def representative(attempts: Iterable[tuple[str | None, str, Any]]) -> dict[str, dict[str, Any]]:
    """(run_id, status, run) of every attempt, oldest first -> run_id -> {status, run, attempts}: the
    FINISHED attempt if there is one, else the latest. The one rule for every reader of cell status."""
    best: dict[str, dict[str, Any]] = {}
    for rid, status, run in attempts:
        if rid is None:
            continue
        cur = best.get(rid)
        if cur is None or cur["status"] != "FINISHED":
            best[rid] = {"status": status, "run": run, "attempts": (cur["attempts"] if cur else 0) + 1}
        else:
            cur["attempts"] += 1
    return best


def final_tags(final: dict[str, float]) -> dict[str, str]:
    """The final metrics as JSON in tags FINAL_TAG, FINAL_TAG.1, FINAL_TAG.2, ..., each within MLflow's limit.

    Values are kept whole (JSON writes a float so that it reads back the same), as logged at step 0.
    """
    text = json.dumps({k: float(v) for k, v in final.items()})
    parts = [text[i : i + TAG_LIMIT] for i in range(0, len(text), TAG_LIMIT)]
    return {FINAL_TAG if i == 0 else f"{FINAL_TAG}.{i}": part for i, part in enumerate(parts)}


def read_final(tags: dict[str, str]) -> dict[str, float] | None:
    """`final_tags` read back from a run's tags; None when there are none or they do not make one JSON
    object (an older ablate cut a long one at 8,000 characters): never a part of one."""
    raw = tags.get(FINAL_TAG)
    if not raw:
        return None
    parts, i = [raw], 1
    while f"{FINAL_TAG}.{i}" in tags:
        parts.append(tags[f"{FINAL_TAG}.{i}"])
        i += 1
    try:
        value = json.loads("".join(parts))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def final_metrics(run) -> dict[str, float]:
    """A finished cell's final metrics (best-epoch dev, test, params, speed), not its last epoch's."""
    metrics = dict(run.data.metrics)
    final = read_final(run.data.tags)
    if final is not None:  # else (no tag, or a cut one) the latest values: a cut JSON is never half used
        metrics.update(final)
    return metrics


def load_cells(tracker: Tracker, study: str, planned: list[tuple[str, str, dict[str, Any]]], history: bool = True):
    """The report's DataFrame: one row per planned cell (run_id, name, axis values), MISSING when never run."""
    import pandas as pd

    exp = tracker.experiment_id(study, create=False)
    status = tracker.cell_status(exp)
    rows = []
    axes: list[str] = []
    for run_id, name, axis_values in planned:
        for a in axis_values:
            if a not in axes:
                axes.append(a)
        row: dict[str, Any] = {"run_id": run_id, "name": name, **axis_values}
        st = status.get(run_id)
        if st is None:
            row.update(status="MISSING", error=None, mlflow_run_id=None, attempts=0, history={})
        else:
            r = st["run"]
            # Metrics never overwrite the cell's identity columns (an axis named like a metric).
            row.update({k: v for k, v in final_metrics(r).items() if k not in row})
            row.update(status=r.info.status, error=r.data.tags.get("ablate.error"), mlflow_run_id=r.info.run_id,
                       attempts=st["attempts"])
            row["history"] = tracker.history(r.info.run_id) if history and r.info.status == "FINISHED" else {}
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["axes"] = axes
    return df


def read_predictions(tracker: Tracker, mlflow_run_id: str, split: str) -> dict[str, list[tuple[list[str], list[str]]]]:
    """Per genre, per sentence (gold tags, predicted tags) from a run's `predictions/<split>_<genre>.conll`."""
    import tempfile

    from ablate.data.readers import read_predictions as read_three

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = tracker.client.download_artifacts(mlflow_run_id, "predictions", tmp)
        except Exception:
            return {}
        for f in sorted(Path(local).glob(f"{split}_*.conll")):
            genre = f.stem[len(split) + 1 :]
            gold, pred = read_three(f)
            out[genre] = [(list(g.tags), p) for g, p in zip(gold, pred)]
    return out


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True), encoding="utf-8")
