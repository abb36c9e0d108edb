"""`ablate ui`: the MLflow UI on the study's store, started lean (one worker, no job runner)."""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
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


def check_port(port: int, host: str = "127.0.0.1") -> None:
    """Fail with one message unless `host:port` is free, so the URL we print is our server's, not someone else's."""
    if not 0 < port < 65536:
        raise UserError(f"--port {port}: a port is a number from 1 to 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the server does: a port left in TIME_WAIT by a stopped server counts as free, a listener does not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is in use; pick another with --port") from None
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another with --port") from None


def exit_reason(log: str, port: int, host: str = "127.0.0.1") -> str:
    """The line of an exited server's log that says why (its last error line, else its last line)."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    if any("address already in use" in ln.lower() for ln in lines):
        return f"port {port} on {host} is in use; pick another with --port"
    errors = [ln for ln in lines if re.search(r"error|exception|denied|errno|cannot|unable", ln, re.IGNORECASE)]
    return (errors or lines or ["(it printed nothing)"])[-1]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_server(tracking_uri: str, port: int, timeout: float = 90.0) -> subprocess.Popen:
    """Start `mlflow server` on a free port and wait until it answers /health."""
    if not tracking_uri.startswith(("sqlite:", "postgresql", "mysql", "file:")) and "://" in tracking_uri:
        raise UserError(f"{tracking_uri} is already a server: open it in a browser")
    check_port(port)
    proc = subprocess.Popen(server_command(tracking_uri, port), env=lean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise UserError(f"mlflow server exited with code {proc.returncode}: {exit_reason(out, port)}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200 and proc.poll() is None:  # answered, and by a server that is still ours
                        return proc
            except OSError:
                time.sleep(0.5)
    except BaseException:
        stop(proc)
        raise
    stop(proc)
    raise UserError(f"mlflow server did not answer on {url} within {timeout:.0f} s")


def serve(tracking_uri: str | None, port: int, study: Path | None = None) -> int:
    from ablate.tracking import Tracker, default_tracking_uri

    uri = tracking_uri or default_tracking_uri(Path.cwd())
    url = f"http://127.0.0.1:{port}"
    if study is not None:  # a bad study fails here, before any server runs
        from ablate.spec import load_study

        name = load_study(study).name
        exp = Tracker(uri).experiment_id(name, create=False)
        if exp:
            from ablate.tracking.tags import runs_url

            url = runs_url(url, exp)
    proc = start_server(uri, port)
    try:
        # `kill PID` of ablate alone must not leave the server running: exit through `finally`.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    except ValueError:  # not the main thread (called from Python): the caller owns signals
        pass
    try:
        print(f"MLflow UI for {uri}: {url}  (Ctrl-C stops it)", flush=True)
        if proc.stdout:
            for _ in proc.stdout:  # drain the server's log so its pipe never fills
                pass
        return proc.wait()
    except KeyboardInterrupt:
        stop(proc)
        return 0
    finally:
        stop(proc)
