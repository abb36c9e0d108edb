"""MLflow tracking: the report reads a cell's best-epoch values, not its last epoch's."""

from __future__ import annotations

import pytest

from ablate.errors import UserError
from ablate.report.collect import load_cells
from ablate.tracking import Tracker


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
    from ablate.tracking.store_read import client_status, read_status
    from ablate.tracking.store_read import cell_status

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

    from ablate.tracking.store_read import cell_status

    assert cell_status(f"sqlite:///{tmp_path / 'absent.db'}", "s") is None
    assert cell_status("http://127.0.0.1:5000", "s") is None
    con = sqlite3.connect(tmp_path / "other.db")
    con.execute("CREATE TABLE runs (run_uuid TEXT)")
    con.commit()
    con.close()
    assert cell_status(f"sqlite:///{tmp_path / 'other.db'}", "s") is None
    (tmp_path / "empty.db").touch()
    assert cell_status(f"sqlite:///{tmp_path / 'empty.db'}", "s") == {}
    con = sqlite3.connect(tmp_path / "notes.db")
    con.execute("CREATE TABLE notes (text TEXT)")
    con.commit()
    con.close()
    with pytest.raises(UserError, match="without MLflow's tables"):  # and never migrated by a read
        cell_status(f"sqlite:///{tmp_path / 'notes.db'}", "s")


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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bad_uris(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    (tmp_path / "folder").mkdir()
    import importlib.util

    no_driver = not any(importlib.util.find_spec(m) for m in ("psycopg", "psycopg2"))
    return {
        **({"postgresql, no driver": "postgresql://me:secret@127.0.0.1:1/db"} if no_driver else {}),
        "bogus": "bogus",
        "file": (tmp_path / "fs").as_uri(),
        "unknown scheme": "foo://bar",
        "sqlite text file": f"sqlite:///{text}",
        "sqlite folder": f"sqlite:///{tmp_path / 'folder'}",  # MLflow retried this one for 101 s
        "sqlite under a file": f"sqlite:///{text}/mlflow.db",
        "http, nothing listening": f"http://me:secret@127.0.0.1:{_free_port()}",  # MLflow's retries: 247 s
    }


def test_a_bad_tracking_uri_is_one_user_error_at_once(tmp_path, monkeypatch):
    """`--tracking-uri` that MLflow cannot open: one UserError naming it and what works, never a traceback or a hang."""
    import time

    import pytest

    from ablate.errors import UserError

    monkeypatch.chdir(tmp_path)  # `bogus` would be a folder in the cwd
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    seconds = {}
    for case, uri in _bad_uris(tmp_path).items():
        start = time.perf_counter()
        with pytest.raises(UserError) as caught:
            Tracker(uri)
        seconds[case] = time.perf_counter() - start
        message = str(caught.value)
        assert "\n" not in message and "sqlite:///PATH" in message and "http(s)://HOST:PORT" in message, case
        assert uri.replace(":secret@", ":***@") in message and "secret" not in message, (case, message)
    print({case: round(s, 3) for case, s in seconds.items()})
    assert max(seconds.values()) < 15, seconds
    assert not (tmp_path / "bogus").exists()


def test_the_cli_says_a_bad_tracking_uri_in_one_line_and_exits_2(tmp_path):
    import subprocess
    import sys

    from tests.e2e.conftest import tiny_study

    study = tiny_study(tmp_path)  # its own data: a clean clone has no demo_data/
    for uri in ("foo://bar", f"http://127.0.0.1:{_free_port()}"):
        proc = subprocess.run([sys.executable, "-c", "from ablate.cli import main; main()", "status", str(study),
                               "--tracking-uri", uri], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and uri in lines[0], proc.stderr[-2000:]


def test_the_server_probe_accepts_what_answers_and_refuses_a_failing_server():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import pytest

    from ablate.errors import UserError
    from ablate.tracking import probe_server

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            code = {"/ok/health": 200, "/login/health": 401, "/down/health": 503}.get(self.path, 404)
            self.send_response(code)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        probe_server(f"{base}/ok/")  # an MLflow server
        probe_server(f"{base}/login")  # something answers (a login in front of it): MLflow's calls tell the rest
        probe_server(f"http://user:pw@127.0.0.1:{server.server_address[1]}/ok")  # credentials are MLflow's business
        with pytest.raises(UserError, match="answered HTTP 503"):
            probe_server(f"{base}/down")
        with pytest.raises(UserError, match="cannot reach"):
            probe_server(f"https://127.0.0.1:{server.server_address[1]}/ok")  # TLS to a plain HTTP server
    finally:
        server.shutdown()
        server.server_close()


def test_many_final_metrics_are_read_back_whole_from_both_readers(tmp_path):
    """ablate.final used to be cut at MLflow's 8,000-character tag limit: invalid JSON, last-epoch numbers."""
    import json

    from ablate.tracking.store_read import cell_status, client_status
    from ablate.tracking import FINAL_TAG, TAG_LIMIT, final_metrics, read_final

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    exp = tracker.experiment_id("s")
    parent = tracker.parent_run(exp, "s")
    mid = tracker.start_cell(exp, parent, "s", "abc", "cell", {"lr": "0.1"}, attempt=1)
    for epoch, f1 in enumerate([0.5, 0.9, 0.7], start=1):
        tracker.log_metrics(mid, {"dev/macro_f1": f1}, step=epoch)
    final = {f"test/type/T{i:03d}_LONGNAME/f1": 0.123456789 for i in range(600)}
    final.update({"dev/macro_f1": 0.9, "test/f1": 1 / 3})
    tracker.finish_cell(mid, final, None, {})

    run = tracker.client.get_run(mid)
    parts = sorted(k for k in run.data.tags if k == FINAL_TAG or k.startswith(f"{FINAL_TAG}."))
    assert len(parts) >= 3 and all(len(run.data.tags[k]) <= TAG_LIMIT for k in parts)
    via_client = final_metrics(tracker.cell_status(exp)["abc"]["run"])
    via_sqlite = cell_status(uri, "s")["abc"]["metrics"]
    for got in (via_client, via_sqlite, client_status(tracker, "s")["abc"]["metrics"]):
        assert {k: got[k] for k in final} == final  # every key, the exact values, the best epoch's dev/macro_f1

    # A cut or incomplete JSON is never used, not even in part.
    whole = {k: run.data.tags[k] for k in parts}
    assert read_final(whole) == final
    assert read_final({FINAL_TAG: whole[FINAL_TAG]}) is None
    assert read_final({k: v for k, v in whole.items() if k != f"{FINAL_TAG}.1"}) is None
    assert read_final({FINAL_TAG: json.dumps([1, 2])}) is None


def test_a_store_interrupted_while_being_created_is_not_left_half_made(tmp_path, monkeypatch):
    """Ctrl-C during a new store's schema migrations must not leave a file every later open fails on."""
    import mlflow.store.db.utils as db_utils

    real = db_utils._upgrade_db

    def interrupted(engine):
        real(engine)
        raise KeyboardInterrupt  # as if Ctrl-C came just before the last step

    monkeypatch.setattr(db_utils, "_upgrade_db", interrupted)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    with pytest.raises(KeyboardInterrupt):
        Tracker(uri)
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()
    assert [p.name for p in (tmp_path / "mlruns").iterdir() if p.name != ".store.lock"] == []
    monkeypatch.setattr(db_utils, "_upgrade_db", real)
    tracker = Tracker(uri)
    assert tracker.experiment_id("s") is not None


def test_cells_carry_mlflow_own_source_tags_and_the_experiment_its_kind(tmp_path):
    import getpass
    import subprocess
    from pathlib import Path

    from ablate.tracking.tags import runs_url

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracker.experiment_id("s")
    mid = tracker.start_cell(exp, tracker.parent_run(exp, "s"), "s", "abc", "cell", {"lr": "0.1"}, 1)
    tags = tracker.client.get_run(mid).data.tags
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    if head.returncode == 0:  # a checkout (CI clones one); a tarball has no commit to tag
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()
    assert tags["mlflow.user"] == getpass.getuser() and tags["mlflow.source.name"] == "ablate"
    assert tracker.client.get_experiment(exp).tags["mlflow.experimentKind"] == "finetuning"
    assert runs_url("http://127.0.0.1:5000", exp).endswith(f"#/experiments/{exp}/runs?workflowType=machine_learning")


def test_a_pretraining_run_whose_builder_died_is_marked_killed_when_it_is_built_again(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracker.experiment_id("s")
    parent = tracker.parent_run(exp, "s")
    log = tracker.pretrain_log(exp, parent, "s", "bert-mlm")
    params = {"key": "abc", "base": "/b", "text": "train split", "text_sha256": "0" * 64}
    dead = log.start(params)  # then the builder is killed: never log.end
    other = tracker.pretrain_log(exp, parent, "s", "other").start({**params, "key": "zzz"})  # another key: untouched
    again = log.start(params)
    log.end(again, True, {})
    status = {r: tracker.client.get_run(r).info.status for r in (dead, other, again)}
    assert status == {dead: "KILLED", other: "RUNNING", again: "FINISHED"}
