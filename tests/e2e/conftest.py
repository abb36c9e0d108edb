"""End-to-end fixtures: a tiny offline study on the synthetic corpus, run through the real CLI."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ABLATE = str(Path(sys.executable).with_name("ablate"))


def tiny_study(folder: Path, name: str = "tiny", grid: dict | None = None, **train) -> Path:
    """A study of tiny scratch models on a small demo corpus written under `folder`."""
    from ablate.data.demo import make_demo_corpus

    data = folder / "data"
    if not (data / "train.jsonl").exists():
        make_demo_corpus(data, sentences=90, seed=3)
    study = {
        "name": name,
        "data": {"root": "data", "train": [{"path": "train.jsonl"}], "dev": [{"path": "dev.jsonl"}],
                 "test": [{"path": "test.jsonl"}], "max_length": 64},
        "backbones": {"tb": {"scratch": "bert", "shape": "tiny"}},
        "grid": grid or {"finetune": ["full", "lora"], "lr": [1.0e-3, 2.0e-3]},
        "train": {"epochs": 1, "batch_size": 8, **train},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


def ablate(*args, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "ABLATE_CACHE": str(cwd / "cache"), **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([ABLATE, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def interrupt_mid_cell(study: Path, cwd: Path) -> tuple[int, str]:
    """`ablate run STUDY`, then Ctrl-C (SIGINT to its process group) 2 s after a cell starts: (exit code, output)."""
    import signal
    import time

    proc = subprocess.Popen([ABLATE, "run", str(study), "--no-display"], cwd=cwd,
                            env={**os.environ, "ABLATE_CACHE": str(cwd / "cache")},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if ": running" in line:  # a cell started (the study's path may hold the word too)
            break
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole foreground group
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, "".join(seen) + out


@contextlib.contextmanager
def reaped(procs: list, timeout: float = 240):
    """Wait for every process after the block; kill what still runs if the block or the wait fails."""
    try:
        yield procs
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def finished_runs(folder: Path, study: str) -> list:
    """Every cell run of `study` in the folder's MLflow store (all attempts)."""
    from ablate.tracking import Tracker

    tracker = Tracker(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    return tracker.cell_runs(tracker.experiment_id(study, create=False))


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    return tmp_path
