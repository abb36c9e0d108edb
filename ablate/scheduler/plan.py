"""What to run: a study's cells with their status in MLflow, the data check before queueing, the queue's fill.

`plan` says which cells are done (a search study's cells are its trials so far); `enqueue` queues the
rest; `log_plan` records the expanded plan (cells, axes, run_ids, data hashes) on the study's parent
run, so `ablate report` can rebuild the cells from MLflow alone when the data files are gone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ablate.errors import UserError
from ablate.tracking.store_read import read_status

PLAN_ARTIFACT = "plan.json"


@dataclass(frozen=True)
class Place:
    """Where a study runs: its file and overrides, the MLflow store and the queue storage."""

    study_path: Path
    overrides: tuple[str, ...]
    tracking_uri: str
    storage: str
    heartbeat_seconds: float = 10.0
    grace_seconds: float = 60.0
    max_attempts: int = 3
    max_oom_retries: int = 3


@dataclass
class Cell:
    run_id: str
    name: str
    axes: dict
    status: str = "PENDING"
    attempts: int = 0
    metrics: dict = field(default_factory=dict)
    error: str | None = None


def resolve_place(study_path: Path, overrides: list[str], tracking_uri: str | None, storage: str | None, **kw) -> Place:
    from ablate.scheduler.queue import default_storage
    from ablate.tracking.uri import default_tracking_uri

    uri = tracking_uri or default_tracking_uri(Path.cwd())
    return Place(Path(study_path), tuple(overrides), uri, storage or default_storage(uri, Path.cwd() / "mlruns"), **kw)


def load_study_of(place: Place, check_files: bool = True):
    from ablate.spec.load import load_study

    return load_study(place.study_path, list(place.overrides), check_files=check_files)


def expand_cells(study, hashes: dict[str, str] | None = None):
    """The study's RunSpecs by run_id (grid order) and their readable names; `hashes` default: read from disk."""
    from ablate.grid import expand, file_hashes, run_id, run_name

    hashes = hashes if hashes is not None else file_hashes(study.data.resolved_files())
    specs = {run_id(r, hashes): r for r in expand(study)}
    return specs, {rid: run_name(r) for rid, r in specs.items()}


def plan(place: Place, read_mlflow: bool = True, study=None) -> tuple[object, list[Cell]]:
    """Every cell with its status in MLflow: FINISHED, FAILED, KILLED, RUNNING, or PENDING.

    A search study's cells are the trials MLflow holds so far (read even when `read_mlflow` is
    False, since nothing else lists them; their status is then left PENDING).
    """
    study = study or load_study_of(place)
    if study.search is not None:
        from ablate.scheduler.search import trial_cells
        from ablate.tracking.client import Tracker

        tracker = Tracker(place.tracking_uri)
        cells = [Cell(rid, name, axes) for rid, name, axes in trial_cells(tracker, study)]
        return study, with_status(cells, read_status(place.tracking_uri, study.name, tracker)) if read_mlflow else cells
    specs, names = expand_cells(study)
    cells = [Cell(rid, names[rid], dict(spec.axes)) for rid, spec in specs.items()]
    if read_mlflow and store_exists(place.tracking_uri):
        cells = with_status(cells, read_status(place.tracking_uri, study.name))
    return study, cells


def store_exists(tracking_uri: str) -> bool:
    """False for a local sqlite store not created yet: nothing has run, and opening it would create it."""
    from ablate.tracking.uri import sqlite_file

    db = sqlite_file(tracking_uri)
    return db is None or db.exists()


def with_status(cells: list[Cell], status: dict[str, dict]) -> list[Cell]:
    for c in cells:
        st = status.get(c.run_id)
        if st:
            c.status, c.attempts, c.metrics, c.error = st["status"], st["attempts"], st["metrics"], st["error"]
    return cells


def check_data(study, log=print) -> None:
    """Read and repair the study's data once before anything is queued: a bad file is one message
    (exit 2) here, not the same failure in every cell. Repairs and warnings are counted."""
    import itertools

    from ablate.data.corpus import load_corpus, training_subset

    whole = study.data.model_copy(update={"train_genres": None, "train_fraction": 1.0})
    corpus = load_corpus(whole)
    for genres, fraction in itertools.product(study.grid.get("data.train_genres", [study.data.train_genres]),
                                              study.grid.get("data.train_fraction", [study.data.train_fraction])):
        training_subset(corpus.train, genres, fraction)  # a genre the data lacks, an empty subset: one message
    if corpus.repairs or corpus.warnings:
        kinds = sorted({f"{r.from_[:2]}X->{r.to[:2]}X" for r in corpus.repairs})
        log(f"data: {len(corpus.repairs)} tags repaired ({', '.join(kinds) or 'none'}), {len(corpus.warnings)} warnings "
            f"(`ablate data check` lists them)")


def enqueue(queue, cells: list[Cell]) -> int:
    """Queue the cells MLflow has not FINISHED (numbering each retry's attempt after MLflow's runs), taking the
    backbones in turn: the first cells workers claim need different backbones, so the backbones that must be
    built first (a masked-LM pretraining: minutes) are built side by side, not one after another while the
    other workers wait for the first."""
    done = {c.run_id for c in cells if c.status == "FINISHED"}
    return queue.enqueue([(c.run_id, c.name) for c in by_backbone_in_turn(cells)], done,
                         {c.run_id: c.attempts for c in cells})


def by_backbone_in_turn(cells: list[Cell]) -> list[Cell]:
    """The cells round-robin over their backbones, each backbone's cells in grid order."""
    groups: dict[object, list[Cell]] = {}
    for c in cells:
        groups.setdefault(str(c.axes.get("backbone")), []).append(c)
    out = []
    for i in range(max((len(g) for g in groups.values()), default=0)):
        out += [g[i] for g in groups.values() if i < len(g)]
    return out


# ---- the plan on the parent run --------------------------------------------------------------------


def _role_hashes(study, hashes: dict[str, str]) -> dict[str, str]:
    """Data hashes by YAML place (`train[0]`), not by path: the files may move, the place does not."""
    return {f"{role}[{i}]": hashes[str(study.data.resolve(f.path))] for (role, i), f in study.data.files()}


def log_plan(tracker, parent: str, study, cells: list[Cell]) -> None:
    """Record the expanded plan on the study's parent run (artifact plan.json)."""
    from ablate.grid import data_hashes

    plan_json = {"study": study.name, "data_sha256": _role_hashes(study, data_hashes(study)),
                 "cells": [{"run_id": c.run_id, "name": c.name, "axes": c.axes} for c in cells]}
    tracker.client.log_text(parent, json.dumps(plan_json, ensure_ascii=False, indent=1, default=str), PLAN_ARTIFACT)


def report_cells(tracker, study) -> list[tuple[str, str, dict]]:
    """(run_id, name, axes) of every cell, for the report: planned from the data files when they are on disk,
    else from the data hashes `ablate run` logged on the parent run (so moving the data keeps the report)."""
    if study.search is not None:
        from ablate.scheduler.search import trial_cells

        return trial_cells(tracker, study)
    files = study.data.resolved_files()
    if all(p.is_file() for p in files):
        specs, names = expand_cells(study)
    else:
        logged = _logged_hashes(tracker, study)
        missing = [str(p) for p in files if not p.is_file()]
        places = [f"{role}[{i}]" for (role, i), _ in study.data.files()]
        if logged is None or any(p not in logged for p in places):
            raise UserError(f"cannot plan {study.name}: data file {missing[0]} is missing and the study's MLflow runs "
                            "hold no plan for these files (run `ablate run` once with the data in place)")
        hashes = {str(study.data.resolve(f.path)): logged[f"{role}[{i}]"] for (role, i), f in study.data.files()}
        specs, names = expand_cells(study, hashes)
    return [(rid, names[rid], dict(spec.axes)) for rid, spec in specs.items()]


def _logged_hashes(tracker, study) -> dict[str, str] | None:
    import tempfile

    from ablate.tracking.tags import ROLE

    exp = tracker.experiment_id(study.name, create=False)
    if exp is None:
        return None
    runs = tracker.client.search_runs([exp], f"tags.`{ROLE}` = 'study'", max_results=1, order_by=["attributes.start_time ASC"])
    if not runs:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tracker.client.download_artifacts(runs[0].info.run_id, PLAN_ARTIFACT, tmp)
            return json.loads(Path(path).read_text(encoding="utf-8"))["data_sha256"]
        except Exception:  # noqa: BLE001 - no plan logged (a store from an older ablate)
            return None


def study_status(place: Place) -> dict:
    """Counts by status, who holds which cell (from the queue), and each failure's cause."""
    from ablate.scheduler.queue import CellQueue

    study, cells = plan(place)
    counts: dict[str, int] = {}
    for c in cells:
        counts[c.status] = counts.get(c.status, 0) + 1
    holders = []
    if Path(place.storage).exists() or "://" in place.storage:
        holders = CellQueue(place.storage, study.name, kind="grid" if study.search is None else "search").holders()
    return {
        "study": study.name,
        "cells": len(cells),
        "counts": counts,
        "running": holders,
        "failed": [{"run_id": c.run_id, "name": c.name, "status": c.status, "error": c.error, "attempts": c.attempts}
                   for c in cells if c.status in ("FAILED", "KILLED")],
        "tracking_uri": place.tracking_uri,
        "storage": place.storage,
    }
