"""MLflow tracking: the report reads a cell's best-epoch values, not its last epoch's."""

from __future__ import annotations

from ablate.tracking import Tracker, load_cells


def test_final_metrics_are_the_best_epochs_not_the_last(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracker.experiment_id("s")
    parent = tracker.parent_run(exp, "s")
    mid = tracker.start_cell(exp, parent, "s", "abc", "cell", {"lr": "0.1"}, attempt=1)
    for epoch, f1 in enumerate([0.5, 0.9, 0.7], start=1):
        tracker.log_metrics(mid, {"dev/macro_f1": f1, "epoch_seconds": 1.0}, step=epoch)
    tracker.finish_cell(mid, {"dev/macro_f1": 0.9, "test/f1": 0.8, "best_epoch": 2.0}, None, {})
    frame = load_cells(tracker, "s", [("abc", "cell", {"lr": 0.1}), ("def", "other", {"lr": 0.2})])
    row = frame.set_index("run_id").loc["abc"]
    assert row["dev/macro_f1"] == 0.9 and row["best_epoch"] == 2.0 and row["lr"] == 0.1
    assert row["history"]["dev/macro_f1"] == [0.5, 0.9, 0.7]
    assert frame.set_index("run_id").loc["def", "status"] == "MISSING"
