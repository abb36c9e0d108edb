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

# The real ROCLING files: ABLATE_ROCLING_DATA, else ../shared/data/rocling beside this checkout, else
# the workplace's copy (a clone made elsewhere, e.g. by CI in a temporary folder, still finds it).
_CANDIDATES = [Path(p) for p in (os.environ.get("ABLATE_ROCLING_DATA"),) if p] + [
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rocling",
    Path("/work/shared/data/rocling"),
]
ROCLING = next((p for p in _CANDIDATES if (p / "rocling22_chner_truth.txt").exists()), _CANDIDATES[0])


@pytest.fixture(scope="session")
def rocling() -> Path:
    """The real ROCLING files; skip (saying where it looked) when none of the candidates has them."""
    if not (ROCLING / "rocling22_chner_truth.txt").exists():
        pytest.skip(f"real ROCLING data not found at {', '.join(map(str, _CANDIDATES))}")
    return ROCLING
