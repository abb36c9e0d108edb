"""Shared test setup: offline, tiny, and the real ROCLING files by path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Never reach a model hub from the default suite.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Several CPU cells at once on 2 cores oversubscribe OpenMP threads (epochs 5-20 s instead of 0.06 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ROCLING = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rocling"


@pytest.fixture(scope="session")
def rocling() -> Path:
    """The real ROCLING files (../shared/data/rocling); skip when this checkout has none beside it."""
    if not (ROCLING / "rocling22_chner_truth.txt").exists():
        pytest.skip(f"real ROCLING data not found at {ROCLING}")
    return ROCLING
