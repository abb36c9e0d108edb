"""Training data as grid axes through the real CLI: per-genre subsets and fractions run, are hashed into new
cells, and a genre the training files lack is one message before anything runs."""

from __future__ import annotations

import json

from tests.e2e.conftest import ablate, tiny_study


def test_genre_and_fraction_axes_run_as_cells_and_report(tmp_path):
    study = tiny_study(tmp_path, grid={"data.train_genres": [["ft", "sm", "wa"], ["ft"], ["sm"], ["wa"]],
                                       "data.train_fraction": [0.5, 1.0]}, lr=3.0e-3)
    plan = json.loads(ablate("plan", study, "--json", cwd=tmp_path).stdout)
    assert len(plan["cells"]) == 8 and len({c["run_id"] for c in plan["cells"]}) == 8
    r = ablate("run", study, "--no-display", "--workers", "2", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    r = ablate("report", study, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    page = (tmp_path / "reports" / "tiny" / "README.md").read_text(encoding="utf-8")
    assert "Per-genre models (the paper's proposal) against one model for all genres, test" in page
    assert "ft: tb-" in page and "sm: tb-" in page and "wa: tb-" in page  # each genre's own cell named

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    cells = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'cell'")
    assert len(cells) == 8 and all(c.info.status == "FINISHED" for c in cells)
    genres = {c.data.params["data.train_genres"] for c in cells}
    assert genres == {'["ft"]', '["sm"]', '["wa"]', '["ft", "sm", "wa"]'}, genres
    assert all({"dev/f1/ft", "dev/f1/sm", "dev/f1/wa"} <= set(c.data.metrics) for c in cells)  # dev stays whole


def test_a_genre_the_training_files_lack_is_one_message_before_anything_runs(tmp_path):
    study = tiny_study(tmp_path, grid={"data.train_genres": [["ft"], ["xx"]]})
    r = ablate("run", study, "--no-display", cwd=tmp_path)
    assert r.returncode == 2 and "xx is not a genre of the training data" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = ablate("run", tiny_study(tmp_path, grid={"data.train_fraction": [0]}), "--no-display", cwd=tmp_path)
    assert r.returncode == 2 and "data.train_fraction" in r.stderr and "Traceback" not in r.stderr, r.stderr
