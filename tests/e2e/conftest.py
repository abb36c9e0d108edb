"""End-to-end fixtures: a tiny offline study on the synthetic corpus, run through the real CLI."""

from __future__ import annotations

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


def finished_runs(folder: Path, study: str) -> list:
    """Every cell run of `study` in the folder's MLflow store (all attempts)."""
    from ablate.tracking import Tracker

    tracker = Tracker(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    return tracker.cell_runs(tracker.experiment_id(study, create=False))


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    return tmp_path
