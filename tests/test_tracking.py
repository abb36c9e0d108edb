"""MLflow tracking: the report reads a cell's best-epoch values, not its last epoch's."""

from __future__ import annotations

from ablate.tracking import Tracker, load_cells


def test_final_metrics_are_the_best_epochs_not_the_last(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracker.experiment_id("s")
    parent = tracker.parent_run(exp, "s")
    mid = tracker.start_cell(exp, parent, "s", "abc", "cell", {"lr": "0.1"}, attempt=1)
    for epoch, f1 in enumerate([0.5, 0.9, 0.7], start=1):
        tracker.log_metrics(mid, {"dev/macro_f1": f1, "epoch_seconds": 1.0}, step=epoch)
    tracker.finish_cell(mid, {"dev/macro_f1": 0.9, "test/f1": 0.8, "best_epoch": 2.0}, None, {})
    frame = load_cells(tracker, "s", [("abc", "cell", {"lr": 0.1}), ("def", "other", {"lr": 0.2})])
    row = frame.set_index("run_id").loc["abc"]
    assert row["dev/macro_f1"] == 0.9 and row["best_epoch"] == 2.0 and row["lr"] == 0.1
    assert row["history"]["dev/macro_f1"] == [0.5, 0.9, 0.7]
    assert frame.set_index("run_id").loc["def", "status"] == "MISSING"


def test_sqlite_fast_read_equals_the_mlflow_client_read(tmp_path, monkeypatch):
    """`plan`/`status` read a local store with sqlite3; they must see what MlflowClient sees."""
    from ablate.store_read import client_status, read_status
    from ablate.store_read import cell_status

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    exp = tracker.experiment_id("s")
    parent = tracker.parent_run(exp, "s")

    def attempt(rid, n, status, metrics=None, final=None):
        mid = tracker.start_cell(exp, parent, "s", rid, f"cell-{rid}", {"lr": "0.1"}, attempt=n)
        for epoch, value in enumerate(metrics or [], start=1):
            tracker.log_metrics(mid, {"dev/macro_f1": value}, step=epoch)
        if status == "FINISHED":
            tracker.finish_cell(mid, final or {}, None, {})
        elif status in ("FAILED", "KILLED"):
            tracker.fail_cell(mid, f"Traceback\nRuntimeError: boom {rid}{n}", status)
        return mid

    attempt("a", 1, "FAILED")
    attempt("a", 2, "FINISHED", [0.4, 0.6, 0.5], {"dev/macro_f1": 0.6, "test/f1": 0.55})
    attempt("a", 3, "FAILED")  # an attempt after a finished one: the cell stays FINISHED
    attempt("b", 1, "FAILED")
    attempt("b", 2, "KILLED")
    attempt("c", 1, "RUNNING", [0.3])
    attempt("d", 1, "FINISHED", [float("nan")], {"dev/macro_f1": 0.0})
    tracker.client.delete_run(attempt("e", 1, "FINISHED", [0.9], {"dev/macro_f1": 0.9}))  # deleted: not seen
    other = tracker.experiment_id("other")  # the same run_id in another study is not this study's
    tracker.start_cell(other, tracker.parent_run(other, "other"), "other", "f", "cell-f", {}, attempt=1)

    fast, slow = cell_status(uri, "s"), client_status(tracker, "s")
    assert fast is not None and set(fast) == set(slow) == {"a", "b", "c", "d"}
    for rid in fast:
        f, s = dict(fast[rid]), dict(slow[rid])
        fm, sm = f.pop("metrics"), s.pop("metrics")
        assert f == s, rid
        assert fm.keys() == sm.keys() and all(fm[k] == sm[k] or (fm[k] != fm[k] and sm[k] != sm[k]) for k in fm), rid
    assert (fast["a"]["status"], fast["a"]["attempts"], fast["a"]["metrics"]["test/f1"]) == ("FINISHED", 3, 0.55)
    assert fast["a"]["metrics"]["dev/macro_f1"] == 0.6  # the best epoch's, not the last epoch's 0.5
    assert (fast["b"]["status"], fast["b"]["attempts"], fast["b"]["error"]) == ("KILLED", 2, "RuntimeError: boom b2")
    assert fast["c"]["status"] == "RUNNING" and fast["c"]["metrics"]["dev/macro_f1"] == 0.3
    assert cell_status(uri, "never-ran") == {} and read_status(uri, "s") == fast
    monkeypatch.chdir(tmp_path)  # the README's relative form, sqlite:///mlruns/mlflow.db, is relative to the cwd
    assert cell_status("sqlite:///mlflow.db", "s") == fast


def test_fast_read_declines_what_is_not_an_mlflow_sqlite_store(tmp_path):
    import sqlite3

    from ablate.store_read import cell_status

    assert cell_status(f"sqlite:///{tmp_path / 'absent.db'}", "s") is None
    assert cell_status("http://127.0.0.1:5000", "s") is None
    con = sqlite3.connect(tmp_path / "other.db")
    con.execute("CREATE TABLE runs (run_uuid TEXT)")
    con.commit()
    con.close()
    assert cell_status(f"sqlite:///{tmp_path / 'other.db'}", "s") is None


def test_workers_opening_a_new_store_at_once_all_get_it(tmp_path):
    """MLflow migrates a new sqlite schema on first open; concurrent first opens used to break it."""
    import subprocess
    import sys
    import time

    code = (
        "import sys, time\n"
        "from ablate.tracking import Tracker\n"
        "while time.time() < float(sys.argv[2]): time.sleep(0.001)\n"
        "print(Tracker(f'sqlite:///{sys.argv[1]}/mlflow.db').experiment_id('s'))\n"
    )
    start = str(time.time() + 5)  # after every process has imported mlflow
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), start], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-400:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1
