"""The cell queue, on a journal file and on the real PostgreSQL: planning, exclusive claims, reaping, duplicates."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import uuid
from pathlib import Path

import pytest

from ablate.scheduler.queue import (ATTEMPT, CELL, ERROR, HEARTBEAT, NAME, ORIGIN, PREVIOUS, UNCOUNTED, WORKER, CellQueue, Worker,
                          _run_id)

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh database on the local PostgreSQL for this test run (dropped after); skip when none answers.

    `.ci/run` starts PostgreSQL (127.0.0.1:5432, trust auth, user postgres) when it is down.
    """
    psycopg2 = pytest.importorskip("psycopg2")
    name = f"ablate_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect(PG_ADMIN, connect_timeout=3)
    except psycopg2.OperationalError as e:
        pytest.skip(f"PostgreSQL is not reachable at 127.0.0.1:5432 ({str(e).strip().splitlines()[0]}); .ci/run starts it")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["journal", "postgresql"])
def storage(request, tmp_path: Path) -> str:
    """One storage URL of each kind the queue supports; every test below runs on both."""
    if request.param == "journal":
        return str(tmp_path / "queue.journal")
    return request.getfixturevalue("postgres_url")


def _study() -> str:
    return f"q{uuid.uuid4().hex[:8]}"  # one Optuna study per test on the shared database


def _cells(n: int) -> list[tuple[str, str]]:
    return [(f"cell{i:03d}", f"name{i}") for i in range(n)]


def _state(q: CellQueue) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for t in sorted(q.trials(), key=lambda t: t.number):
        out.setdefault(_run_id(t), []).append(t.state.name)
    return out


def test_enqueue_skips_finished_and_live_cells_and_requeues_the_rest(storage):
    q = CellQueue(storage, _study())
    assert q.enqueue(_cells(3), finished={"cell002"}) == 2
    assert q.enqueue(_cells(3), finished={"cell002"}) == 0  # both still waiting
    c = q.claim(Worker("h", 1, "0"))
    assert c.run_id == "cell000" and c.attempt == 1
    assert q.enqueue(_cells(3), finished={"cell002"}) == 0  # one running, one waiting
    q.finish(c.trial_id, 0.5)
    # The queue holds no result: a cell MLflow does not call FINISHED is queued again, numbered on.
    assert q.enqueue(_cells(3), finished={"cell002"}, attempts={"cell000": 1}) == 1
    again = [t for t in q.trials() if _run_id(t) == "cell000" and t.state.name == "WAITING"]
    assert len(again) == 1 and again[0].user_attrs[ATTEMPT] == 2 and again[0].user_attrs[NAME] == "name0"
    assert _state(q) == {"cell000": ["COMPLETE", "WAITING"], "cell001": ["WAITING"]}


def _claim_all(storage: str, study: str, who: int, out: list) -> None:
    q = CellQueue(storage, study)
    while (c := q.claim(Worker("h", who, "cpu"))) is not None:
        out.append((c.run_id, who))
        time.sleep(0.05)  # "runs" the cell, so every claimer gets a turn
        q.finish(c.trial_id, 1.0)


def _claim_all_in_process(args) -> list:
    out: list = []
    _claim_all(*args, out)
    return out


def test_claims_are_exclusive_under_concurrent_claimers(storage):
    study, n = _study(), 24
    CellQueue(storage, study).enqueue(_cells(n), finished=set())
    got: list = []
    threads = [threading.Thread(target=_claim_all, args=(storage, study, i, got)) for i in range(4)]
    with mp.get_context("fork").Pool(3) as pool:  # and three processes, each with its own storage connection
        procs = pool.map_async(_claim_all_in_process, [(storage, study, 100 + i) for i in range(3)])
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got += [x for part in procs.get(timeout=120) for x in part]
    ids = [rid for rid, _ in got]
    assert sorted(ids) == [f"cell{i:03d}" for i in range(n)]  # every cell once, none twice
    assert len({who for _, who in got}) > 1  # the claimers really competed
    assert _state(CellQueue(storage, study)) == {f"cell{i:03d}": ["COMPLETE"] for i in range(n)}


def test_stale_cell_is_requeued_with_its_attempts_until_the_limit(storage):
    q = CellQueue(storage, _study(), max_attempts=3)
    q.enqueue(_cells(1), finished=set())
    lost = []
    for attempt in (1, 2, 3):
        c = q.claim(Worker("h", attempt, "0"))
        assert c.attempt == attempt
        lost.append(c.number)
        assert q.reap_stale(grace=30) == []  # a fresh heartbeat is not stale
        q.note(c.trial_id, HEARTBEAT, time.time() - 100)
        assert q.reap_stale(grace=30) == [("cell000", None)]
    trials = sorted(q.trials(), key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "FAIL"]  # the third loss is final
    assert "lost: no heartbeat" in trials[-1].user_attrs[ERROR] and "h:3:0" in trials[-1].user_attrs[ERROR]
    assert trials[1].user_attrs[PREVIOUS] == lost[:1] and trials[2].user_attrs[PREVIOUS] == lost[:2]
    assert [UNCOUNTED in t.user_attrs for t in trials] == [True, True, False]  # replaced by a copy, or not
    assert q.claim(Worker("h", 9, "0")) is None


def test_a_claim_that_never_beat_goes_stale_from_its_start(storage):
    q = CellQueue(storage, _study())
    q.enqueue(_cells(1), finished=set())
    tid = next(t._trial_id for t in q.trials())
    from optuna.trial import TrialState

    assert q.storage.set_trial_state_values(tid, TrialState.RUNNING)  # a worker died right after claiming
    time.sleep(1.2)
    assert q.reap_stale(grace=1) == [("cell000", None)]
    assert _state(q) == {"cell000": ["FAIL", "WAITING"]}


def test_two_reapers_requeue_a_lost_cell_once(storage):
    study = _study()
    q = CellQueue(storage, study)
    q.enqueue(_cells(1), finished=set())
    c = q.claim(Worker("h", 1, "0"))
    q.note(c.trial_id, HEARTBEAT, time.time() - 100)
    results: list = []
    reapers = [threading.Thread(target=lambda: results.append(CellQueue(storage, study).reap_stale(5))) for _ in range(3)]
    for t in reapers:
        t.start()
    for t in reapers:
        t.join()
    assert sum(len(r) for r in results) == 1
    assert _state(q) == {"cell000": ["FAIL", "WAITING"]}


def test_of_two_live_copies_of_a_cell_only_the_lower_numbered_runs(storage):
    q = CellQueue(storage, _study())
    # Two planners that read the queue at the same moment both queue the cell.
    for _ in range(2):
        q._add({"run_id": "cell000"}, {NAME: "n", ATTEMPT: 1, PREVIOUS: []})
    a = q.claim(Worker("a", 1, "0"))
    assert a.number == 0
    assert q.claim(Worker("b", 2, "1")) is None  # the copy is set aside, not run beside the original
    assert _state(q) == {"cell000": ["RUNNING", "PRUNED"]}
    assert "duplicate" in sorted(q.trials(), key=lambda t: t.number)[1].user_attrs[ERROR]
    # Once the original is done, a later copy is claimable: the worker then asks MLflow whether it finished.
    q.finish(a.trial_id, 0.7)
    q._add({"run_id": "cell000"}, {NAME: "n", ATTEMPT: 2, PREVIOUS: []})
    assert q.claim(Worker("b", 2, "1")).run_id == "cell000"


def test_holders_say_which_worker_holds_which_cell(storage):
    q = CellQueue(storage, _study())
    q.enqueue(_cells(2), finished=set())
    q.claim(Worker("gpu-box", 4242, "1"))
    (h,) = q.holders()
    assert (h["run_id"], h["name"], h["host"], h["pid"], h["gpu"], h["attempt"]) == ("cell000", "name0", "gpu-box", 4242, "1", 1)
    assert h["worker"] == "gpu-box:4242:1" and 0 <= h["heartbeat_age_s"] < 30


def test_a_lost_search_trial_is_requeued_with_its_sampled_params_and_origin(storage):
    import optuna

    q = CellQueue(storage, _study(), kind="search")
    study = optuna.load_study(study_name=q.name, storage=q.storage, sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    r = trial.suggest_categorical("lora.r", [4, 8])
    q.hold(trial._trial_id, Worker("h", 1, "0"))
    q.note(trial._trial_id, ORIGIN, trial.number)
    q.note(trial._trial_id, CELL, "abc")
    q.note(trial._trial_id, HEARTBEAT, time.time() - 100)
    assert q.reap_stale(grace=5) == [("abc", None)]
    again = study.ask()  # the sampler's queue hands out the re-queued trial first
    assert again.number != trial.number and again.user_attrs[ORIGIN] == trial.number and again.user_attrs[ATTEMPT] == 2
    assert again.suggest_float("lr", 1e-4, 1e-2, log=True) == lr and again.suggest_categorical("lora.r", [4, 8]) == r


def test_worker_names_round_trip():
    w = Worker("node-3.cluster", 77, "2")
    assert Worker.parse(str(w)) == w and Worker.parse("garbage") is None
    assert WORKER == "ablate.worker"


def test_a_worker_whose_claim_was_reaped_learns_it_from_its_heartbeat(storage):
    from optuna.trial import TrialState

    q = CellQueue(storage, _study())
    q.enqueue(_cells(1), finished=set())
    c = q.claim(Worker("h", 1, "0"))
    with q.heartbeat_thread(c.trial_id, 0.1) as beat:
        time.sleep(0.3)
        assert not beat.lost.is_set()
        # Another worker took this one for dead (its beats did not arrive in time) and reaped it.
        CellQueue(storage, q.name.removeprefix("ablate:")).storage.set_trial_state_values(c.trial_id, TrialState.FAIL)
        assert beat.lost.wait(5)  # the worker then stops its cell instead of finishing it twice


def test_a_released_cell_waits_again_at_once_without_using_an_attempt(storage):
    """Ctrl-C gives the claim back: the next worker takes it now, and it does not count as a loss."""
    q = CellQueue(storage, _study(), max_attempts=2)
    q.enqueue(_cells(1), finished=set())
    for attempt in (1, 2, 3):  # more releases than max_attempts: none of them counts
        c = q.claim(Worker("h", attempt, "0"))
        assert c is not None and c.attempt == attempt
        q.release(c.trial_id, "interrupted on h")
    trials = sorted(q.trials(), key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "FAIL", "WAITING"]
    assert all(UNCOUNTED in t.user_attrs for t in trials[:3]) and trials[-1].user_attrs[PREVIOUS] == []
    c = q.claim(Worker("h", 4, "0"))
    q.note(c.trial_id, HEARTBEAT, time.time() - 100)  # then a real loss is still retried (1 of 2)
    assert q.reap_stale(grace=30) == [("cell000", None)] and _state(q)["cell000"][-1] == "WAITING"
