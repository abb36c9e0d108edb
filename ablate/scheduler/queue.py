"""The cell queue: a study's cells as Optuna trials in an Optuna storage (journal file or SQL database).

Optuna gives the atomic claim (`set_trial_state_values(RUNNING)` succeeds for one worker only,
in the journal and in RDB storages alike). On top we keep three things Optuna 5's
JournalStorage lacks or that ablate needs: a heartbeat per claimed cell (a user attribute, so
both storages behave the same), re-queueing a stale cell with its attempt count, and the
exactly-once rule: of two live trials for one cell, only the lower-numbered one may run.
A search study's trials live in a second Optuna study (`ablate:<study>:search`) with the same
heartbeat and re-queueing; the sampler creates them instead of the planner.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ablate.errors import UserError
from ablate.tracking.uri import driver_url

RUN_ID, ATTEMPT, HEARTBEAT, WORKER = "run_id", "ablate.attempt", "ablate.heartbeat", "ablate.worker"
MLFLOW_RUN, PREVIOUS, NAME, ERROR = "ablate.mlflow_run_id", "ablate.previous_trials", "ablate.name", "ablate.error"
CELL, ORIGIN, UNCOUNTED = "ablate.run_id", "ablate.origin", "ablate.uncounted"
_CARRIED = (NAME, ORIGIN)  # user attributes a re-queued trial keeps


def default_storage(tracking_uri: str, mlruns: Path) -> str:
    """A journal file beside the MLflow store it serves: a new tracking URI means a fresh queue."""
    from ablate.tracking.uri import local_store_dir

    store = local_store_dir(tracking_uri)
    if store is not None:
        return str(store / "queue.journal")
    import hashlib

    return str(mlruns / f"queue-{hashlib.sha256(tracking_uri.encode()).hexdigest()[:10]}.journal")


def open_storage(url: str):
    """An Optuna storage: a SQLAlchemy URL (postgresql://, mysql://, sqlite://) or a journal file path.

    A journal file takes `JournalFileOpenLock` (an O_EXCL lock file; NFSv3 or later, also local
    disks and Windows): the file may sit on a filesystem that several machines mount.
    """
    import optuna

    try:
        if "://" in url:
            return optuna.storages.RDBStorage(driver_url(url), engine_kwargs={"pool_pre_ping": True})
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        folder = Path(url).parent
        blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise UserError(f"cannot open the queue storage {url}: {blocker} is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(url, lock_obj=JournalFileOpenLock(url)))
    except UserError:
        raise
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

    @classmethod
    def parse(cls, text: str) -> "Worker | None":
        parts = (text or "").rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), parts[2])

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.gpu}"


class CellQueue:
    """One ablate study's queue in an Optuna storage: its cells (`kind="grid"`) or its search trials."""

    def __init__(self, storage_url: str, study: str, max_attempts: int = 3, kind: str = "grid"):
        import optuna

        self.url = storage_url
        self.storage = open_storage(storage_url)
        self.name = f"ablate:{study}" + (":search" if kind == "search" else "")
        self.max_attempts = max_attempts
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(storage=self.storage, study_name=self.name, direction="maximize", load_if_exists=True)
        self.study_id = self.study._study_id
        self._todo: list = []  # waiting trials of the last read, to try in order (see claim)
        self._snapshot: list = []  # the live trials of that read

    # ---- planning ---------------------------------------------------------------------------
    def trials(self, states=None):
        return self.storage.get_all_trials(self.study_id, deepcopy=False, states=states)

    def enqueue(self, cells: list[tuple[str, str]], finished: set[str], attempts: dict[str, int] | None = None) -> int:
        """Queue every (run_id, name) not finished in MLflow and not already waiting or running.

        `attempts`: run_id -> attempts MLflow holds already, so a retried cell's next run is numbered on.
        """
        from optuna.trial import TrialState

        live = {_run_id(t) for t in self.trials((TrialState.WAITING, TrialState.RUNNING))}
        n = 0
        for run_id, name in cells:
            if run_id in finished or run_id in live:
                continue
            self._add({RUN_ID: run_id}, {NAME: name, ATTEMPT: (attempts or {}).get(run_id, 0) + 1, PREVIOUS: []})
            n += 1
        return n

    def _add(self, params: dict, user_attrs: dict) -> None:
        self.study.enqueue_trial(params, user_attrs=user_attrs)

    # ---- working ----------------------------------------------------------------------------
    def claim(self, worker: Worker) -> Claim | None:
        """Atomically take one waiting cell (the oldest first), or None when none waits.

        The live trials are read once and then tried in order until the list runs out (others
        may have taken some meanwhile: the storage says so), so a claim costs a few round trips,
        not a read of the whole queue.
        """
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        for fresh in (False, True):
            if fresh or not self._todo:
                self._snapshot = self.trials((TrialState.WAITING, TrialState.RUNNING))
                self._todo = sorted((t for t in self._snapshot if t.state == TrialState.WAITING), key=lambda t: t.number)
            while self._todo:
                t = self._todo.pop(0)
                try:
                    won = self.storage.set_trial_state_values(t._trial_id, TrialState.RUNNING)
                except UpdateFinishedTrialError:
                    continue
                if not won:
                    continue
                self.hold(t._trial_id, worker)
                claim = Claim(t._trial_id, t.number, _run_id(t), int(t.user_attrs.get(ATTEMPT, 1)))
                if self._blocked(claim):
                    self.skip(claim.trial_id, "duplicate: a lower-numbered trial holds this cell")
                    continue
                return claim
        return None

    def hold(self, trial_id: int, worker: Worker) -> None:
        """Say who runs a trial just taken (claimed, or asked of the sampler) and beat once."""
        self.storage.set_trial_user_attr(trial_id, WORKER, str(worker))
        self.beat(trial_id)

    def _blocked(self, claim: Claim) -> bool:
        """Whether a lower-numbered copy of the claimed cell is still live (then it, not this one, runs).

        Run ids are written when a trial is created (enqueue_trial) and numbers grow, so every
        lower-numbered copy existed when the snapshot was read; a copy live then is looked up again.
        """
        from optuna.trial import TrialState

        lower = [t for t in self._snapshot if _run_id(t) == claim.run_id and t.number < claim.number]
        return any(self.storage.get_trial(t._trial_id).state in (TrialState.WAITING, TrialState.RUNNING) for t in lower)

    def beat(self, trial_id: int) -> None:
        self.storage.set_trial_user_attr(trial_id, HEARTBEAT, time.time())

    def heartbeat_thread(self, trial_id: int, interval: float) -> "_Heartbeat":
        return _Heartbeat(self, trial_id, interval)

    def note(self, trial_id: int, key: str, value, quiet: bool = False) -> None:
        """Set a user attribute; `quiet`: say nothing if the trial was reaped (finished) meanwhile."""
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            self.storage.set_trial_user_attr(trial_id, key, value)
        except UpdateFinishedTrialError:
            if not quiet:
                raise

    def started(self, trial_id: int, mlflow_run_id: str, attempt: int) -> None:
        """A run of this trial's cell began in MLflow (its attempt number moves on with out-of-memory retries)."""
        self.note(trial_id, MLFLOW_RUN, mlflow_run_id, quiet=True)
        self.note(trial_id, ATTEMPT, attempt, quiet=True)

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
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        try:
            self.storage.set_trial_user_attr(trial_id, ERROR, reason)
            self.storage.set_trial_state_values(trial_id, TrialState.PRUNED)
        except UpdateFinishedTrialError:
            pass

    def release(self, trial_id: int, reason: str) -> None:
        """Give a claimed cell back at once (its worker was interrupted): the trial ends, uncounted, and a
        copy waits for the next worker, so a resumed study need not wait out the heartbeat grace."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        t = self.storage.get_trial(trial_id)
        try:
            self.storage.set_trial_user_attr(trial_id, ERROR, reason)
            self.storage.set_trial_user_attr(trial_id, UNCOUNTED, "released; re-queued")
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            return  # reaped meanwhile: already re-queued
        params = {**t.system_attrs.get("fixed_params", {}), **t.params}
        carried = {k: t.user_attrs[k] for k in _CARRIED if k in t.user_attrs}
        # Not added to `previous_trials`: that list is the lost attempts `reap_stale` counts against
        # max_attempts, and an interruption is not a failure of the cell.
        self._add(params, {**carried, ATTEMPT: int(t.user_attrs.get(ATTEMPT, 1)) + 1,
                           PREVIOUS: list(t.user_attrs.get(PREVIOUS, []))})

    def reap_stale(self, grace: float) -> list[tuple[str, str | None]]:
        """Fail trials whose worker stopped beating; re-queue them while attempts remain.

        A trial that never beat counts from its start. The re-queued copy keeps the fixed (grid) or
        sampled (search) parameters, its name and origin, with attempt + 1 and the lost trial in
        `ablate.previous_trials`; the lost trial is then marked uncounted (a search counts the copy).
        Returns (run_id, mlflow_run_id) of each reaped trial so the caller can mark MLflow KILLED.
        """
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        now, reaped = time.time(), []
        for t in self.trials((TrialState.RUNNING,)):
            beat = t.user_attrs.get(HEARTBEAT)
            last = float(beat) if beat is not None else (t.datetime_start.timestamp() if t.datetime_start else now)
            if now - last <= grace:
                continue
            previous = list(t.user_attrs.get(PREVIOUS, [])) + [t.number]
            again = len(previous) < self.max_attempts
            try:
                self.storage.set_trial_user_attr(t._trial_id, ERROR, f"worker {t.user_attrs.get(WORKER)} lost: no heartbeat for {now - last:.0f} s")
                if again:
                    self.storage.set_trial_user_attr(t._trial_id, UNCOUNTED, "lost; re-queued")
                self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue  # another worker reaped it first (and re-queued it)
            if again:
                params = {**t.system_attrs.get("fixed_params", {}), **t.params}
                carried = {k: t.user_attrs[k] for k in _CARRIED if k in t.user_attrs}
                self._add(params, {**carried, ATTEMPT: int(t.user_attrs.get(ATTEMPT, 1)) + 1, PREVIOUS: previous})
            reaped.append((_run_id(t), t.user_attrs.get(MLFLOW_RUN)))
        return reaped

    def holders(self) -> list[dict]:
        """Who (host, pid, GPU) holds which cell right now, with its attempt and heartbeat age."""
        from optuna.trial import TrialState

        now, out = time.time(), []
        for t in self.trials((TrialState.RUNNING,)):
            w = Worker.parse(t.user_attrs.get(WORKER, ""))
            beat = t.user_attrs.get(HEARTBEAT)
            out.append({"run_id": _run_id(t), "name": t.user_attrs.get(NAME), "trial": t.number,
                        "worker": t.user_attrs.get(WORKER), "host": w.host if w else None, "pid": w.pid if w else None,
                        "gpu": w.gpu if w else None, "attempt": t.user_attrs.get(ATTEMPT, 1),
                        "mlflow_run_id": t.user_attrs.get(MLFLOW_RUN),
                        "heartbeat_age_s": round(now - float(beat), 1) if beat is not None else None})
        return out

    def pending(self) -> int:
        from optuna.trial import TrialState

        return len(self.trials((TrialState.WAITING, TrialState.RUNNING)))


def _run_id(t) -> str:
    return t.system_attrs.get("fixed_params", {}).get(RUN_ID) or t.params.get(RUN_ID) or t.user_attrs.get(CELL, "")


class _Heartbeat:
    """A daemon thread that beats while a cell runs; a context manager.

    `lost` is set when the trial was reaped meanwhile (this worker looked dead: beats that did
    not reach the storage for longer than the grace period): its cell now runs elsewhere, so the
    worker stops its own copy rather than finish the cell twice.
    """

    def __init__(self, queue: CellQueue, trial_id: int, interval: float):
        self.queue, self.trial_id, self.interval = queue, trial_id, interval
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        while not self._stop.wait(self.interval):
            try:
                self.queue.beat(self.trial_id)
            except UpdateFinishedTrialError:
                self.lost.set()
                return
            except Exception:  # a transient database error must not kill the cell; the next beat retries
                pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
