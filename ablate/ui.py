"""`ablate ui`: the MLflow UI on the study's store, started lean (one worker, no job runner)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ablate.errors import UserError


def server_command(tracking_uri: str, port: int, host: str = "127.0.0.1") -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
            "--host", host, "--port", str(port), "--workers", "1"]


def lean_env() -> dict[str, str]:
    # ~6 s and ~0.5 GB instead of 15 processes and ~2.7 GB (DESIGN.md, environment facts).
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def start_server(tracking_uri: str, port: int, timeout: float = 90.0) -> subprocess.Popen:
    """Start `mlflow server` and wait until it answers /health."""
    if not tracking_uri.startswith(("sqlite:", "postgresql", "mysql", "file:")) and "://" in tracking_uri:
        raise UserError(f"{tracking_uri} is already a server: open it in a browser")
    proc = subprocess.Popen(server_command(tracking_uri, port), env=lean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise UserError(f"mlflow server exited with code {proc.returncode}: {out.strip().splitlines()[-1:] or ''}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise UserError(f"mlflow server did not answer on {url} within {timeout:.0f} s")


def serve(tracking_uri: str | None, port: int, study: Path | None = None) -> int:
    from ablate.tracking import Tracker, default_tracking_uri

    uri = tracking_uri or default_tracking_uri(Path.cwd())
    proc = start_server(uri, port)
    url = f"http://127.0.0.1:{port}"
    if study is not None:
        from ablate.spec import load_study

        name = load_study(study).name
        exp = Tracker(uri).experiment_id(name, create=False)
        url += f"/#/experiments/{exp}" if exp else ""
    print(f"MLflow UI for {uri}: {url}  (Ctrl-C stops it)", flush=True)
    try:
        if proc.stdout:
            for _ in proc.stdout:  # drain the server's log so its pipe never fills
                pass
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=30)
        return 0
