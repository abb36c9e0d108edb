"""`ablate ui` against a real `mlflow server`: after a tiny study, its REST API shows the experiment,
the parent run with its nested cell runs, per-epoch metric history and the cells' artifacts; a taken port,
a bad study or a server that dies early is one message, exit 2, and no server left running."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from ablate import ui
from ablate.errors import UserError
from tests.e2e.conftest import ABLATE, ablate, tiny_study

EPOCHS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(base: str, endpoint: str, **query) -> dict:
    url = f"{base}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(base: str, endpoint: str, body: dict) -> dict:
    req = urllib.request.Request(f"{base}/api/2.0/mlflow/{endpoint}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _wait_for_line(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    """The first stdout line containing `needle`; fails with everything read so far after `timeout`."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if needle in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout), f"`ablate ui` printed no {needle!r} in {timeout:.0f} s: {''.join(lines)}"
    return lines[-1]


def test_ui_serves_the_study_with_nested_runs_history_and_artifacts(study_dir):
    study = tiny_study(study_dir, grid={"finetune": ["full", "lora"]}, epochs=EPOCHS, lr=2.0e-3)
    r = ablate("run", study, "--no-display", cwd=study_dir)
    assert r.returncode == 0, r.stdout + r.stderr

    port = _free_port()
    env = {**os.environ}
    env.pop("MLFLOW_TRACKING_URI", None)
    # Its own session, so that terminating the group also stops the server's worker processes.
    proc = subprocess.Popen([ABLATE, "ui", str(study), "--port", str(port)], cwd=study_dir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        line = _wait_for_line(proc, "MLflow UI for", timeout=60)
        base = f"http://127.0.0.1:{port}"
        assert base in line

        exp = _get(base, "experiments/get-by-name", experiment_name="tiny")["experiment"]
        assert f"/#/experiments/{exp['experiment_id']}" in line  # the printed URL opens the study
        runs = _post(base, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
        tags = {run["info"]["run_id"]: {t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs}
        parents = [rid for rid, t in tags.items() if t.get("ablate.role") == "study"]
        assert len(parents) == 1
        children = [run for run in runs if tags[run["info"]["run_id"]].get("mlflow.parentRunId") == parents[0]]
        assert len(children) == 2 and len(runs) == 3
        assert {run["info"]["status"] for run in children} == {"FINISHED"}
        assert len({tags[run["info"]["run_id"]]["ablate.run_id"] for run in children}) == 2  # two distinct cells

        for run in children:
            rid = run["info"]["run_id"]
            history = _get(base, "metrics/get-history", run_id=rid, metric_key="dev/macro_f1")["metrics"]
            per_epoch = {m["step"]: m["value"] for m in history if m["step"] >= 1}
            assert sorted(per_epoch) == list(range(1, EPOCHS + 1))  # one point per epoch, step = epoch
            assert all(0.0 <= v <= 1.0 for v in per_epoch.values())
            # (tracking.finish_cell also logs the best epoch's value at step 0; that is not an epoch.)
            assert all(m["step"] <= EPOCHS for m in history)
            top = {f["path"]: f.get("is_dir", False) for f in _get(base, "artifacts/list", run_id=rid)["files"]}
            assert top.get("predictions") is True and "per_type.json" in top, top
            inside = [f["path"] for f in _get(base, "artifacts/list", run_id=rid, path="predictions")["files"]]
            assert any(p.startswith("predictions/dev_") for p in inside), inside
            assert any(p.startswith("predictions/test_") for p in inside), inside
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # The whole group is gone: nothing answers on the port any more.
    deadline = time.time() + 10
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                break
        time.sleep(0.2)
    else:
        raise AssertionError(f"something still answers on port {port} after stopping `ablate ui`")


def _mlflow_servers_on(port: int) -> list[str]:
    """Command lines of running `mlflow server ... --port PORT` processes (Linux /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "mlflow" in args and "server" in args and str(port) in args:
            found.append(" ".join(args))
    return found


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_ui_on_a_taken_port_is_one_message_and_starts_no_server(tmp_path):
    with socket.socket() as other:  # someone else's listener, not an MLflow server
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        r = ablate("ui", "--port", port, cwd=tmp_path, timeout=60)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert f"error: port {port} on 127.0.0.1 is in use; pick another with --port" in r.stderr
        assert "MLflow UI for" not in r.stdout and "Traceback" not in r.stderr
        assert _mlflow_servers_on(port) == []


def test_ui_with_a_bad_study_starts_no_server(tmp_path):
    port = _free_port()
    r = ablate("ui", "nonexist.yaml", "--port", port, cwd=tmp_path, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "nonexist.yaml: no such study file" in r.stderr and "Traceback" not in r.stderr
    assert _port_is_free(port) and _mlflow_servers_on(port) == []


def test_a_server_that_exits_early_is_quoted_by_its_error_line(monkeypatch):
    """(No real mlflow: a stand-in that logs as uvicorn does when its port is taken, then exits 0 as mlflow does.)"""
    log = ("INFO:     Started server process [1]\n"
           "ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 1): address already in use\n"
           "INFO:     Application shutdown complete.\n")
    monkeypatch.setattr(ui, "server_command", lambda uri, port: [sys.executable, "-c", f"print({log!r}, end='')"])
    with pytest.raises(UserError) as e:
        ui.start_server("sqlite:///unused.db", _free_port())
    assert str(e.value).endswith("is in use; pick another with --port") and "[" not in str(e.value)
    monkeypatch.setattr(ui, "server_command", lambda uri, port: [
        sys.executable, "-c", "import sys; print('INFO: starting'); sys.exit('PermissionError: [Errno 13] Permission denied: /x')"])
    with pytest.raises(UserError, match=r"exited with code 1: PermissionError: \[Errno 13\] Permission denied: /x$"):
        ui.start_server("sqlite:///unused.db", _free_port())
