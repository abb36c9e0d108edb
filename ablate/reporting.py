"""`ablate report`: read a study's cells from MLflow, build the report, log it to the study's parent run."""

from __future__ import annotations

from pathlib import Path


def make_report(place, out: Path | None = None) -> Path:
    from ablate.errors import UserError
    from ablate.report.page import build_report
    from ablate.scheduler import plan
    from ablate.tracking import Tracker, load_cells, read_predictions, sqlite_file

    study, cells = plan(place, read_mlflow=False)
    db = sqlite_file(place.tracking_uri)
    if db is not None and not db.exists():  # opening it would create an empty store here
        raise UserError(f"nothing to report for {study.name}: no MLflow store at {db} "
                        "(run `ablate run` on the study first, or point --tracking-uri at its store)")
    tracker = Tracker(place.tracking_uri)
    exp = tracker.experiment_id(study.name, create=False)
    if exp is None:
        raise UserError(f"nothing to report for {study.name}: it has no runs in {place.tracking_uri} "
                        "(run `ablate run` on the study first)")
    frame = load_cells(tracker, study.name, [(c.run_id, c.name, c.axes) for c in cells])
    out = Path(out or Path("reports") / study.name)
    page = build_report(study.name, study.description or "", frame, study.report, out,
                        lambda run, split: read_predictions(tracker, run, split))
    tracker.client.log_artifacts(tracker.parent_run(exp, study.name, study.description), str(out), "report")
    return page
