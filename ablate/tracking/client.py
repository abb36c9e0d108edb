"""The MLflow client: one experiment per study, a parent run, one nested run per cell (`Tracker`).

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
from ablate.tracking.tags import ATTEMPT, EXPERIMENT_KIND, PARENT_TAG, ROLE, RUN_ID, STUDY, final_tags, representative
from ablate.tracking.uri import _bad_uri, _sqlite_problem, _store_error, driver_url, local_store_dir, probe_server, sqlite_file

HISTORY_KEYS = ("train/loss", "dev/f1", "dev/macro_f1", "epoch_seconds")


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("ablate", "torch", "transformers", "peft", "mlflow", "optuna"):
        try:
            out[f"ablate.version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a container)
        return str(os.getuid())


def source_tags(cwd: Path | None = None) -> dict[str, str]:
    """MLflow's own source tags (the UI shows them): the commit (full hash), the repository URL, user, entry point."""
    tags = {"mlflow.user": _user(), "mlflow.source.name": "ablate", "mlflow.source.type": "LOCAL"}
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=cwd, timeout=5)
        url = subprocess.run(["git", "remote", "get-url", "origin"], capture_output=True, text=True, cwd=cwd, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return tags
    if sha.returncode == 0:
        tags["mlflow.source.git.commit"] = sha.stdout.strip()
    if url.returncode == 0 and url.stdout.strip():
        tags["mlflow.source.git.repoURL"] = url.stdout.strip()
    return tags


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
            # "finetuning": MLflow 3's UI then opens the experiment's runs, not its GenAI (traces) view
            return self.client.create_experiment(study, artifact_location=location, tags={EXPERIMENT_KIND: "finetuning"})
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
            "ablate.python": platform.python_version(), **_versions(), **source_tags(), **(extra_tags or {}),
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

    def pretrain_log(self, experiment_id: str, parent_id: str, study: str, backbone: str):
        """What `ablate.models.pretrain` reports to (start / log / end): a backbone's pretraining as its own run
        (role pretrain, nested under the study's parent run)."""
        from types import SimpleNamespace

        from mlflow.entities import Param

        def start(params: dict[str, str]) -> str:
            # The caller holds the build's file lock: a RUNNING build of this key from this host is a builder
            # that died (kill -9, power loss); it is marked KILLED rather than left looking alive.
            stale = self.client.search_runs(
                [experiment_id], f"tags.`{ROLE}` = 'pretrain' and tags.`ablate.pretrain.key` = '{params['key']}' "
                f"and tags.`ablate.host` = '{socket.gethostname()}' and attributes.status = 'RUNNING'")
            for old in stale:
                self.client.set_tag(old.info.run_id, "ablate.error", "its builder died before finishing; built again")
                self.client.set_terminated(old.info.run_id, "KILLED")
            tags = {ROLE: "pretrain", STUDY: study, PARENT_TAG: parent_id, "ablate.pretrain.key": params["key"],
                    "ablate.backbone": backbone, "ablate.host": socket.gethostname(), **source_tags(),
                    "mlflow.note.content": f"masked-LM pretraining of backbone {backbone} on: {params['text']}"}
            run = self.client.create_run(experiment_id, tags=tags, run_name=f"pretrain-{backbone}-{params['key'][:8]}")
            self.client.log_batch(run.info.run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
            return run.info.run_id

        def end(run: str, ok: bool, final: dict[str, float]) -> None:
            self.client.set_terminated(run, "FINISHED" if ok else "FAILED")

        return SimpleNamespace(start=start, log=lambda run, metrics, step: self.log_metrics(run, metrics, step), end=end)

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


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True), encoding="utf-8")
