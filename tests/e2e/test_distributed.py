"""Many workers on one queue, through the real CLI: one conformance suite over the journal file and PostgreSQL.

Three `ablate worker` processes share a study; one is killed with SIGKILL while its cell runs. Its
cell process must die with it, the cell must be re-queued and retried, and every cell must end
FINISHED exactly once in MLflow. Then two workers started apart log to one real `mlflow server`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import ABLATE, tiny_study, reaped
from tests.test_queue import postgres_url  # noqa: F401 - the fixture, shared with the queue's unit tests

psutil = pytest.importorskip("psutil")
GRID12 = {"finetune": ["full", "lora"], "lr": [1.0e-3, 2.0e-3, 3.0e-3], "seed": [1, 2]}
EPOCHS = 3  # a cell trains long enough to be killed in the middle


@pytest.fixture(params=["journal", "postgresql"])
def storage(request, tmp_path: Path) -> str:
    """The suite's storages: a journal file (one machine, or a shared filesystem) and the real PostgreSQL."""
    if request.param == "journal":
        return str(tmp_path / "shared" / "queue.journal")
    return request.getfixturevalue("postgres_url")


def _env(folder: Path) -> dict:
    # Three workers on two cores: torch's default thread per core each would oversubscribe them.
    env = {**os.environ, "ABLATE_CACHE": str(folder / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _worker(folder: Path, study: Path, storage: str, uri: str, log: str) -> subprocess.Popen:
    out = open(folder / log, "w")
    return subprocess.Popen([ABLATE, "worker", str(study), "--storage", storage, "--tracking-uri", uri,
                             "--heartbeat", "1", "--grace", "3"], cwd=folder, env=_env(folder), stdout=out, stderr=subprocess.STDOUT)


def _cli(*args) -> str:
    """The real CLI app, in this process (no second start-up of mlflow and optuna imports)."""
    from typer.testing import CliRunner

    from ablate.cli import app

    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.stdout


def _gone(p) -> bool:
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _kill_a_worker_mid_cell(storage: str, uri: str, workers: dict, deadline: float, study: str = "tiny", kind: str = "grid"):
    """SIGKILL the worker of a cell that is training (RUNNING in MLflow, its last epoch still ahead).

    Returns (worker pid, its holder row, its processes then).
    """
    from ablate.scheduler.queue import CellQueue
    from ablate.tracking import Tracker

    queue, client = CellQueue(storage, study, kind=kind), Tracker(uri).client
    while time.time() < deadline:
        for h in queue.holders():
            if h["pid"] not in workers or not h["mlflow_run_id"]:
                continue
            try:
                family = psutil.Process(h["pid"]).children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            if not any(p.ppid() != h["pid"] for p in family if not _gone(p)):  # no cell forked from its fork server yet
                continue
            epochs = len(client.get_metric_history(h["mlflow_run_id"], "dev/macro_f1"))
            if client.get_run(h["mlflow_run_id"]).info.status == "RUNNING" and epochs < EPOCHS:
                os.kill(h["pid"], signal.SIGKILL)
                return h["pid"], h, family
        time.sleep(0.1)
    raise AssertionError("no cell was seen running within the time limit")


# 45-90 s per storage on 2 shared cores: the journal variant is `slow` (`make test-all`); the default suite
# still kills and resumes on the journal through `ablate run` (test_runner) and in the queue's unit tests.
@pytest.mark.parametrize("storage", [pytest.param("journal", marks=pytest.mark.slow), "postgresql"], indirect=True)
def test_three_workers_one_killed_mid_cell_every_cell_finishes_exactly_once(storage, tmp_path: Path):
    from ablate.scheduler.queue import ATTEMPT, ERROR, PREVIOUS, WORKER, CellQueue, _run_id
    from ablate.tracking import Tracker

    study = tiny_study(tmp_path, grid=GRID12, epochs=EPOCHS)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    Tracker(uri).experiment_id("tiny")  # a fresh sqlite store migrates its schema once, not three times at once
    procs = [_worker(tmp_path, study, storage, uri, f"worker{i}.log") for i in range(3)]
    workers = {p.pid: p for p in procs}
    with reaped(procs):
        victim, held, family = _kill_a_worker_mid_cell(storage, uri, workers, time.time() + 180)
        # PR_SET_PDEATHSIG: the fork server and the cell die with their worker, no orphan trains on.
        deadline = time.time() + 15
        while time.time() < deadline and not all(_gone(p) for p in family):
            time.sleep(0.2)
        assert all(_gone(p) for p in family), [p.pid for p in family if not _gone(p)]
    logs = "\n".join((tmp_path / f"worker{i}.log").read_text() for i in range(3))
    assert workers[victim].returncode == -signal.SIGKILL
    assert all(p.returncode == 0 for p in procs if p.pid != victim), logs

    tracker = Tracker(uri)
    runs = tracker.cell_runs(tracker.experiment_id("tiny"))
    by_cell: dict[str, list] = {}
    for r in runs:
        by_cell.setdefault(r.data.tags["ablate.run_id"], []).append(r)
    assert len(by_cell) == 12
    assert all([r.info.status for r in rs].count("FINISHED") == 1 for rs in by_cell.values()), logs
    killed = sorted(by_cell[held["run_id"]], key=lambda r: r.info.start_time)
    assert [(r.info.status, r.data.tags["ablate.attempt"]) for r in killed] == [("KILLED", "1"), ("FINISHED", "2")]
    assert "stopped (no heartbeat)" in killed[0].data.tags["ablate.error"]
    assert killed[0].data.tags["ablate.worker"].split(":")[1] == str(victim)

    # The queue's side of the story: the lost trial failed with its cause and was re-queued as attempt 2;
    # the retry ran as attempt 2 (the re-queued copy, or a copy of concurrent planning, which is then PRUNED).
    trials = sorted((t for t in CellQueue(storage, "tiny").trials() if _run_id(t) == held["run_id"]), key=lambda t: t.number)
    (lost,) = [t for t in trials if t.state.name == "FAIL"]
    (done,) = [t for t in trials if t.state.name == "COMPLETE"]
    assert {t.state.name for t in trials} <= {"FAIL", "COMPLETE", "PRUNED"}
    assert "lost: no heartbeat" in lost.user_attrs[ERROR] and f":{victim}:" in lost.user_attrs[WORKER]
    assert [t.user_attrs[ATTEMPT] for t in trials if t.user_attrs.get(PREVIOUS) == [lost.number]] == [2]
    assert done.user_attrs[ATTEMPT] == 2 and done.number > lost.number

    status = json.loads(_cli("status", study, "--storage", storage, "--tracking-uri", uri, "--json"))
    assert status["counts"] == {"FINISHED": 12} and status["running"] == [] and status["failed"] == []


def test_status_shows_which_worker_holds_which_cell(storage, tmp_path: Path):
    from ablate.scheduler.queue import CellQueue, Worker
    from ablate.scheduler.plan import enqueue, plan, resolve_place

    study = tiny_study(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    place = resolve_place(study, [], uri, storage)
    spec, cells = plan(place)
    queue = CellQueue(storage, spec.name)
    assert enqueue(queue, cells) == 4
    claim = queue.claim(Worker("gpu-node-7", 4242, "1"))
    (held,) = json.loads(_cli("status", study, "--storage", storage, "--tracking-uri", uri, "--json"))["running"]
    assert {k: held[k] for k in ("run_id", "host", "pid", "gpu", "attempt")} == \
        {"run_id": claim.run_id, "host": "gpu-node-7", "pid": 4242, "gpu": "1", "attempt": 1}
    text = _cli("status", study, "--storage", storage, "--tracking-uri", uri)
    assert "on host gpu-node-7 pid 4242 gpu 1, attempt 1" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A real `mlflow server` on 127.0.0.1, started lean as `ablate ui` starts it, in its own folder."""
    from ablate.ui import lean_env, server_command

    folder = tmp_path / "server"
    folder.mkdir()
    port = _free_port()
    log = open(folder / "server.log", "w")
    # Its cwd is its own folder: artifacts uploaded through the server land under ./mlartifacts there.
    proc = subprocess.Popen(server_command(f"sqlite:///{folder / 'mlflow.db'}", port), env=lean_env(), cwd=folder,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url, folder
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_two_workers_started_apart_log_to_one_mlflow_server(mlflow_server, tmp_path: Path):
    from mlflow.tracking import MlflowClient

    url, server_dir = mlflow_server
    study = tiny_study(tmp_path, grid={"finetune": ["full", "lora"], "lr": [1.0e-3, 2.0e-3, 3.0e-3]})
    storage = str(tmp_path / "shared" / "queue.journal")
    first = _worker(tmp_path, study, storage, url, "a.log")
    time.sleep(1.0)  # another machine joins a moment later; both plan, the queue keeps each cell once
    second = _worker(tmp_path, study, storage, url, "b.log")
    with reaped([first, second], timeout=300):
        pass
    codes = [first.returncode, second.returncode]
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    assert codes == [0, 0], logs
    client = MlflowClient(url)
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'cell'")
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 6, logs
    assert len({r.data.tags["ablate.run_id"] for r in runs}) == 6
    assert {r.data.tags["ablate.worker"].split(":")[1] for r in runs} == {str(first.pid), str(second.pid)}
    for r in runs:  # artifacts went through the server too
        names = {a.path for a in client.list_artifacts(r.info.run_id, "predictions")}
        assert "predictions/test_ft.conll" in names or any(n.endswith(".conll") for n in names), names
    assert list((server_dir / "mlartifacts").rglob("*.conll"))  # stored by the server, not by the workers
    got = Path(client.download_artifacts(runs[0].info.run_id, "predictions", str(tmp_path / "dl")))
    assert any(f.read_text(encoding="utf-8").strip() for f in got.glob("*.conll"))
