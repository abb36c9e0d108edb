"""MLflow -> the report: one row per planned cell with its final metrics and history, its predictions, `make_report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ablate.tracking.client import Tracker
from ablate.tracking.tags import PRUNED_TAG, final_metrics


def load_cells(tracker: Tracker, study: str, planned: list[tuple[str, str, dict[str, Any]]], history: bool = True):
    """The report's DataFrame: one row per planned cell (run_id, name, axis values), MISSING when never run."""
    import pandas as pd

    exp = tracker.experiment_id(study, create=False)
    status = tracker.cell_status(exp)
    rows = []
    axes: list[str] = []
    for run_id, name, axis_values in planned:
        for a in axis_values:
            if a not in axes:
                axes.append(a)
        # A list-valued axis value (data.train_genres [ft, sm], lora.target_modules) reads as `ft+sm`, as in the
        # cell's name: tables group on it, and a list cannot be a group key.
        shown = {k: "+".join(map(str, v)) if isinstance(v, list) else v for k, v in axis_values.items()}
        row: dict[str, Any] = {"run_id": run_id, "name": name, **shown}
        st = status.get(run_id)
        if st is None:
            row.update(status="MISSING", error=None, mlflow_run_id=None, attempts=0, history={}, pruned=False)
        else:
            r = st["run"]
            # Metrics never overwrite the cell's identity columns (an axis named like a metric).
            row.update({k: v for k, v in final_metrics(r).items() if k not in row})
            row.update(status=r.info.status, error=r.data.tags.get("ablate.error"), mlflow_run_id=r.info.run_id,
                       attempts=st["attempts"], pruned=r.data.tags.get(PRUNED_TAG) == "true",
                       scheme=r.data.tags.get("ablate.ran.scheme"))  # the tag scheme the cell trained and scored in
            row["history"] = tracker.history(r.info.run_id) if history and r.info.status == "FINISHED" else {}
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["axes"] = axes
    return df


def read_predictions(tracker: Tracker, mlflow_run_id: str, split: str) -> dict[str, list[tuple[list[str], list[str]]]]:
    """Per genre, per sentence (gold tags, predicted tags) from a run's `predictions/<split>_<genre>.conll`."""
    return {genre: [(list(g.tags), p) for g, p in zip(gold, pred)]
            for genre, (gold, pred) in read_prediction_files(tracker, mlflow_run_id, split).items()}


def make_report(place, out: Path | None = None) -> Path:
    """`ablate report`: the study's cells from MLflow alone (the data files may be gone) -> reports/<study>/,
    also logged to the study's parent run."""
    from ablate.errors import UserError
    from ablate.report.page import build_report
    from ablate.scheduler.plan import load_study_of, report_cells
    from ablate.tracking.uri import sqlite_file

    study = load_study_of(place, check_files=False)
    db = sqlite_file(place.tracking_uri)
    if db is not None and not db.exists():  # opening it would create an empty store here
        raise UserError(f"nothing to report for {study.name}: no MLflow store at {db} "
                        "(run `ablate run` on the study first, or point --tracking-uri at its store)")
    tracker = Tracker(place.tracking_uri)
    exp = tracker.experiment_id(study.name, create=False)
    if exp is None:
        raise UserError(f"nothing to report for {study.name}: it has no runs in {place.tracking_uri} "
                        "(run `ablate run` on the study first)")
    frame = load_cells(tracker, study.name, report_cells(tracker, study))
    out = Path(out or Path("reports") / study.name)
    parent = tracker.parent_run(exp, study.name, study.description)
    page = build_report(study.name, study.description or "", frame, study.report, out,
                        lambda run, split: read_predictions(tracker, run, split), _logged_ensembles(tracker, parent, frame))
    tracker.client.log_artifacts(parent, str(out), "report")
    return page


def _logged_ensembles(tracker: Tracker, parent: str, frame) -> list[dict]:
    """The ensembles `ablate ensemble` logged on the parent run, with their and their best member's test predictions."""
    import json
    import tempfile

    from ablate.data.readers import read_predictions as read_three

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(tracker.client.download_artifacts(parent, "ensemble", tmp))
        except Exception:  # noqa: BLE001 - none logged
            return []
        for folder in sorted(p for p in local.iterdir() if (p / "scores.json").exists()):
            scores = json.loads((folder / "scores.json").read_text(encoding="utf-8"))
            pairs = {}
            for f in sorted(folder.glob("test_*.conll")):
                gold, pred = read_three(f)
                pairs[f.stem[5:]] = [(list(g.tags), p) for g, p in zip(gold, pred)]
            if scores.get("run_ids"):
                best = frame[frame["run_id"] == scores["run_ids"][0]]
            else:
                best = frame[frame["name"] == scores["members"][0]]
            run = best["mlflow_run_id"].iloc[0] if len(best) else None
            out.append({"scores": scores, "pairs": pairs, "best_pairs": read_predictions(tracker, run, "test") if run else {}})
    return out


def read_prediction_files(tracker: Tracker, mlflow_run_id: str, split: str) -> dict[str, tuple[list, list[list[str]]]]:
    """Per genre (gold sentences with their characters, predicted tags) from a run's `predictions/<split>_<genre>.conll`."""
    import tempfile

    from ablate.data.readers import read_predictions as read_three

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = tracker.client.download_artifacts(mlflow_run_id, "predictions", tmp)
        except Exception:  # noqa: BLE001 - no predictions logged
            return {}
        for f in sorted(Path(local).glob(f"{split}_*.conll")):
            out[f.stem[len(split) + 1:]] = read_three(f)
    return out


def make_ensemble(place, k: int, method: str, by: str = "dev/macro_f1", out: Path | None = None) -> tuple[Path, Any, list]:
    """`ablate ensemble`: the test predictions of the study's k best cells by a dev metric, combined without loading
    a model; files and scores under reports/<study>/ensemble/<method>-top<k>/, also logged to the parent run.
    Returns (folder, GenreScores, the members' names)."""
    import json
    import os
    import shutil
    import tempfile

    from ablate.data.readers import write_conll
    from ablate.errors import UserError
    from ablate.metrics import score_genres, score_json
    from ablate.report.ensemble import METHODS, check_aligned, top_k
    from ablate.scheduler.plan import load_study_of, report_cells

    study = load_study_of(place, check_files=False)
    tracker = Tracker(place.tracking_uri)
    exp = tracker.experiment_id(study.name, create=False)
    if exp is None:
        raise UserError(f"nothing to ensemble for {study.name}: it has no runs in {place.tracking_uri}")
    chosen = top_k(load_cells(tracker, study.name, report_cells(tracker, study), history=False), k, by)
    members = list(chosen["name"])
    files = [read_prediction_files(tracker, rid, "test") for rid in chosen["mlflow_run_id"]]
    for name, f in zip(members, files):
        if not f:
            raise UserError(f"cell {name} has no test predictions (a study without data.test cannot be ensembled on test)")
    genres = sorted(files[0])
    if any(sorted(f) != genres for f in files):
        raise UserError(f"the members' test genres differ: {', '.join(f'{n}: {sorted(f)}' for n, f in zip(members, files))}")
    suffix = "" if by == "dev/macro_f1" else "-by-" + by.replace("/", "_")
    folder = Path(out or Path("reports") / study.name / "ensemble" / f"{method}-top{k}{suffix}")
    if folder.exists() and (not folder.is_dir() or any(not (f.name == "scores.json" or f.name.startswith("test_"))
                                                        for f in folder.iterdir())):
        raise UserError(f"--out {folder}: exists and holds files that are not an ensemble's; name a new folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    pairs = {}
    from ablate.schemes import detect, parse_declared

    logged = next((x for x in chosen.get("scheme", []) if isinstance(x, str) and x), None)
    scheme = parse_declared(logged) if logged else detect([s.tags for g in genres for s in files[0][g][0]])[0]
    try:
        for g in genres:
            gold = files[0][g][0]
            models = [f[g][1] for f in files]
            check_aligned(models, members)
            tags = METHODS[method](models, scheme)
            write_conll(gold, tmp / f"test_{g}.txt", tags=tags)  # the official 2-column file
            write_conll(gold, tmp / f"test_{g}.conll", tags=[[f"{t} {p}" for t, p in zip(s.tags, row)] for s, row in zip(gold, tags)])
            pairs[g] = ([list(s.tags) for s in gold], tags)
        scores = score_genres(pairs, scheme)
        (tmp / "scores.json").write_text(json.dumps({"members": members, "run_ids": list(chosen["run_id"]),
                                                     "by": by, "method": method, "k": k,
                                                     "macro_f1": scores.macro.f1,
                                                     "genres": {g: score_json(s) for g, s in scores.genres.items()}},
                                                    indent=2, ensure_ascii=False), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tracker.client.log_artifacts(tracker.parent_run(exp, study.name, study.description), str(folder),
                                 f"ensemble/{folder.name}")
    return folder, scores, members
