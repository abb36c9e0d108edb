"""The cell queue: a study's cells as Optuna trials in an Optuna storage (journal file or SQL database).

Optuna gives the atomic claim (`set_trial_state_values(RUNNING)` succeeds for one worker only,
in the journal and in RDB storages alike). On top we keep three things Optuna 5's
JournalStorage lacks or that ablate needs: a heartbeat per claimed cell (a user attribute, so
both storages behave the same), re-queueing a stale cell with its attempt count, and the
exactly-once rule: of two live trials for one cell, only the lower-numbered one may run.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ablate.errors import UserError

RUN_ID, ATTEMPT, HEARTBEAT, WORKER = "run_id", "ablate.attempt", "ablate.heartbeat", "ablate.worker"
MLFLOW_RUN, PREVIOUS, NAME, ERROR = "ablate.mlflow_run_id", "ablate.previous_trials", "ablate.name", "ablate.error"


def default_storage(tracking_uri: str, mlruns: Path) -> str:
    """A journal file beside the MLflow store it serves: a new tracking URI means a fresh queue."""
    from ablate.tracking import local_store_dir

    store = local_store_dir(tracking_uri)
    if store is not None:
        return str(store / "queue.journal")
    import hashlib

    return str(mlruns / f"queue-{hashlib.sha256(tracking_uri.encode()).hexdigest()[:10]}.journal")


def open_storage(url: str):
    """An Optuna storage: a SQLAlchemy URL (postgresql://, mysql://, sqlite://) or a journal file path."""
    import optuna

    try:
        if "://" in url:
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        from optuna.storages.journal import JournalFileBackend

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(url))
    except ImportError as e:
        raise UserError(f"queue storage {url}: missing driver ({e}); for PostgreSQL install psycopg2-binary") from None
    except Exception as e:  # SQLAlchemy OperationalError and friends: a database we cannot reach
        raise UserError(f"cannot open the queue storage {url}: {str(e).splitlines()[0]}") from None


@dataclass(frozen=True)
class Claim:
    trial_id: int
    number: int
    run_id: str
    attempt: int


@dataclass(frozen=True)
class Worker:
    host: str
    pid: int
    gpu: str

    @classmethod
    def here(cls, gpu: str = "") -> "Worker":
        return cls(socket.gethostname(), os.getpid(), gpu or os.environ.get("CUDA_VISIBLE_DEVICES", "") or "cpu")

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.gpu}"


class CellQueue:
    """One ablate study's queue in an Optuna storage."""

    def __init__(self, storage_url: str, study: str, max_attempts: int = 3):
        import optuna

        self.url = storage_url
        self.storage = open_storage(storage_url)
        self.name = f"ablate:{study}"
        self.max_attempts = max_attempts
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(storage=self.storage, study_name=self.name, direction="maximize", load_if_exists=True)
        self.study_id = self.study._study_id

    # ---- planning ---------------------------------------------------------------------------
    def trials(self, states=None):
        return self.storage.get_all_trials(self.study_id, deepcopy=False, states=states)

    def enqueue(self, cells: list[tuple[str, str]], finished: set[str]) -> int:
        """Queue every (run_id, name) not finished in MLflow and not already waiting or running."""
        from optuna.trial import TrialState

        live = {_run_id(t) for t in self.trials((TrialState.WAITING, TrialState.RUNNING))}
        n = 0
        for run_id, name in cells:
            if run_id in finished or run_id in live:
                continue
            self._add(run_id, name, attempt=1, previous=[])
            n += 1
        return n

    def _add(self, run_id: str, name: str, attempt: int, previous: list[int]) -> None:
        self.study.enqueue_trial({RUN_ID: run_id}, user_attrs={NAME: name, ATTEMPT: attempt, PREVIOUS: previous})

    # ---- working ----------------------------------------------------------------------------
    def claim(self, worker: Worker) -> Claim | None:
        """Atomically take one waiting cell (the oldest first), or None when none waits."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        for t in sorted(self.trials((TrialState.WAITING,)), key=lambda t: t.number):
            try:
                won = self.storage.set_trial_state_values(t._trial_id, TrialState.RUNNING)
            except UpdateFinishedTrialError:
                continue
            if not won:
                continue
            self.storage.set_trial_user_attr(t._trial_id, WORKER, str(worker))
            self.beat(t._trial_id)
            claim = Claim(t._trial_id, t.number, _run_id(t), int(t.user_attrs.get(ATTEMPT, 1)))
            if self._blocked(claim):
                self.skip(claim.trial_id, "duplicate: a lower-numbered trial holds this cell")
                continue
            return claim
        return None

    def _blocked(self, claim: Claim) -> bool:
        from optuna.trial import TrialState

        return any(
            _run_id(t) == claim.run_id and t.number < claim.number
            for t in self.trials((TrialState.WAITING, TrialState.RUNNING))
        )

    def beat(self, trial_id: int) -> None:
        self.storage.set_trial_user_attr(trial_id, HEARTBEAT, time.time())

    def heartbeat_thread(self, trial_id: int, interval: float) -> "_Heartbeat":
        return _Heartbeat(self, trial_id, interval)

    def note(self, trial_id: int, key: str, value) -> None:
        self.storage.set_trial_user_attr(trial_id, key, value)

    def finish(self, trial_id: int, value: float | None, error: str | None = None) -> None:
        """COMPLETE with the selection metric, or FAIL with the error (kept as a user attribute)."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        try:
            if error is not None:
                self.storage.set_trial_user_attr(trial_id, ERROR, error[-2000:])
                self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
            else:
                self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [float(value or 0.0)])
        except UpdateFinishedTrialError:
            pass  # reaped as stale meanwhile; the re-queued copy will find MLflow's result

    def skip(self, trial_id: int, reason: str) -> None:
        """PRUNED: this trial did not run its cell (a duplicate, or the cell had finished already)."""
        from optuna.trial import TrialState

        self.storage.set_trial_user_attr(trial_id, ERROR, reason)
        self.storage.set_trial_state_values(trial_id, TrialState.PRUNED)

    def reap_stale(self, grace: float) -> list[tuple[str, str | None]]:
        """Fail cells whose worker stopped beating; re-queue them while attempts remain.

        Returns (run_id, mlflow_run_id) of each reaped cell so the caller can mark MLflow KILLED.
        """
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        now, reaped = time.time(), []
        for t in self.trials((TrialState.RUNNING,)):
            beat = t.user_attrs.get(HEARTBEAT)
            if beat is None or now - float(beat) <= grace:
                continue
            try:
                self.storage.set_trial_user_attr(t._trial_id, ERROR, f"worker {t.user_attrs.get(WORKER)} lost: no heartbeat for {now - float(beat):.0f} s")
                self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue
            attempt = int(t.user_attrs.get(ATTEMPT, 1))
            if attempt < self.max_attempts:
                self._add(_run_id(t), t.user_attrs.get(NAME, ""), attempt + 1, list(t.user_attrs.get(PREVIOUS, [])) + [t.number])
            reaped.append((_run_id(t), t.user_attrs.get(MLFLOW_RUN)))
        return reaped

    def counts(self) -> dict[str, int]:
        from collections import Counter

        return dict(Counter(t.state.name for t in self.trials()))

    def holders(self) -> list[dict]:
        """Who (host:pid:gpu) holds which cell right now."""
        from optuna.trial import TrialState

        return [
            {"run_id": _run_id(t), "name": t.user_attrs.get(NAME), "worker": t.user_attrs.get(WORKER),
             "attempt": t.user_attrs.get(ATTEMPT, 1), "heartbeat": t.user_attrs.get(HEARTBEAT)}
            for t in self.trials((TrialState.RUNNING,))
        ]

    def pending(self) -> int:
        from optuna.trial import TrialState

        return len(self.trials((TrialState.WAITING, TrialState.RUNNING)))


def _run_id(t) -> str:
    return t.system_attrs.get("fixed_params", {}).get(RUN_ID) or t.params.get(RUN_ID, "")


class _Heartbeat:
    """A daemon thread that beats while a cell runs; a context manager."""

    def __init__(self, queue: CellQueue, trial_id: int, interval: float):
        self.queue, self.trial_id, self.interval = queue, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.queue.beat(self.trial_id)
            except Exception:  # a transient database error must not kill the cell; the next beat retries
                pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
