"""The tag vocabulary of ablate's MLflow runs, and the rules for reading them back (final metrics, a cell's attempt)."""

from __future__ import annotations

import json
from typing import Any, Iterable

ROLE, STUDY, RUN_ID, ATTEMPT = "ablate.role", "ablate.study", "ablate.run_id", "ablate.attempt"
PARENT_TAG = "mlflow.parentRunId"
FINAL_TAG = "ablate.final"  # the final metrics as JSON, split over ablate.final, ablate.final.1, ...
TAG_LIMIT = 8000  # MLflow's limit on a tag value (MAX_TAG_VAL_LENGTH); longer values are cut
SEARCH_TAG, PRUNED_TAG, AXES_TAG, ORIGIN_TAG = "ablate.search", "ablate.pruned", "ablate.axes", "ablate.origin"
ERROR_TAG, WORKER_TAG = "ablate.error", "ablate.worker"
EXPERIMENT_KIND = "mlflow.experimentKind"


def runs_url(base: str, experiment_id: str) -> str:
    """The UI page of an experiment's runs in MLflow 3's model-training view (not its GenAI traces view)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def representative(attempts: Iterable[tuple[str | None, str, Any]]) -> dict[str, dict[str, Any]]:
    """(run_id, status, run) of every attempt, oldest first -> run_id -> {status, run, attempts}: the
    FINISHED attempt if there is one, else the latest. The one rule for every reader of cell status."""
    best: dict[str, dict[str, Any]] = {}
    for rid, status, run in attempts:
        if rid is None:
            continue
        cur = best.get(rid)
        if cur is None or cur["status"] != "FINISHED":
            best[rid] = {"status": status, "run": run, "attempts": (cur["attempts"] if cur else 0) + 1}
        else:
            cur["attempts"] += 1
    return best


def final_tags(final: dict[str, float]) -> dict[str, str]:
    """The final metrics as JSON in tags FINAL_TAG, FINAL_TAG.1, FINAL_TAG.2, ..., each within MLflow's limit.

    Values are kept whole (JSON writes a float so that it reads back the same), as logged at step 0.
    """
    text = json.dumps({k: float(v) for k, v in final.items()})
    parts = [text[i : i + TAG_LIMIT] for i in range(0, len(text), TAG_LIMIT)]
    return {FINAL_TAG if i == 0 else f"{FINAL_TAG}.{i}": part for i, part in enumerate(parts)}


def read_final(tags: dict[str, str]) -> dict[str, float] | None:
    """`final_tags` read back from a run's tags; None when there are none or they do not make one JSON
    object (an older ablate cut a long one at 8,000 characters): never a part of one."""
    raw = tags.get(FINAL_TAG)
    if not raw:
        return None
    parts, i = [raw], 1
    while f"{FINAL_TAG}.{i}" in tags:
        parts.append(tags[f"{FINAL_TAG}.{i}"])
        i += 1
    try:
        value = json.loads("".join(parts))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def final_metrics(run) -> dict[str, float]:
    """A finished cell's final metrics (best-epoch dev, test, params, speed), not its last epoch's."""
    metrics = dict(run.data.metrics)
    final = read_final(run.data.tags)
    if final is not None:  # else (no tag, or a cut one) the latest values: a cut JSON is never half used
        metrics.update(final)
    return metrics
