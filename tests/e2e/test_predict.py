"""From cells to artefacts through the real CLI: saved models, `ablate ensemble` into the report, `ablate predict`."""

from __future__ import annotations

import json

from tests.e2e.conftest import ablate, tiny_study


def test_ensemble_of_the_top_3_is_scored_logged_and_reported_and_predict_uses_the_saved_models(tmp_path):
    study = tiny_study(tmp_path, grid={"lr": [1.0e-3, 2.0e-3, 3.0e-3]}, save_model=True)
    r = ablate("run", study, "--no-display", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr

    r = ablate("ensemble", study, "--top", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    folder = tmp_path / "reports" / "tiny" / "ensemble" / "vote-top3"
    scores = json.loads((folder / "scores.json").read_text(encoding="utf-8"))
    assert len(scores["members"]) == 3 and scores["by"] == "dev/macro_f1" and 0 <= scores["macro_f1"] <= 1
    assert sorted(p.name for p in folder.glob("test_*.txt"))  # the official 2-column files, one per genre

    r = ablate("report", study, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    page = (tmp_path / "reports" / "tiny" / "README.md").read_text(encoding="utf-8")
    assert "Ensembles of the best cells" in page and "vote-top3" in page

    text = tmp_path / "new.txt"
    text.write_text("頭痛吃藥\n" + "糖尿病患者" * 130 + "\n", encoding="utf-8")  # a 650-character sentence
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = ablate("predict", study, f"{text}:ft", "--top", "2", "--out", tmp_path / "pred", cwd=tmp_path, env={"TMPDIR": str(tmp)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert not [p for p in tmp.iterdir() if p.name.startswith("ablate-models-")]  # downloaded models removed
    blocks = (tmp_path / "pred" / "ft.txt").read_text(encoding="utf-8").strip("\n").split("\n\n")
    assert [len(b.splitlines()) for b in blocks] == [4, 650]

    # bad input: one message, exit 2, nothing written
    r = ablate("ensemble", study, "--top", "7", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "3 finished" in r.stderr, r.stderr
    r = ablate("ensemble", study, "--by", "test/macro_f1", cwd=tmp_path)
    assert r.returncode == 2 and "dev" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = ablate("predict", tmp_path / "data", f"{text}:ft", "--out", tmp_path / "p2", cwd=tmp_path)
    assert r.returncode == 2 and "not a saved model" in r.stderr and not (tmp_path / "p2").exists(), r.stderr


def test_predict_on_a_study_without_saved_models_says_so(tmp_path):
    study = tiny_study(tmp_path, grid={"lr": [1.0e-3]})
    assert ablate("run", study, "--no-display", cwd=tmp_path, timeout=600).returncode == 0
    text = tmp_path / "new.txt"
    text.write_text("頭痛吃藥\n", encoding="utf-8")
    r = ablate("predict", study, f"{text}:ft", "--top", "1", "--out", tmp_path / "pred", cwd=tmp_path)
    assert r.returncode == 2 and "save_model" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "pred").exists()


def test_predict_by_run_id_uses_that_cells_saved_model(tmp_path):
    study = tiny_study(tmp_path, grid={"lr": [1.0e-3]}, save_model=True)
    assert ablate("run", study, "--no-display", cwd=tmp_path, timeout=600).returncode == 0
    [cell] = json.loads(ablate("plan", study, "--json", cwd=tmp_path).stdout)["cells"]
    text = tmp_path / "new.txt"
    text.write_text("頭痛吃藥\n", encoding="utf-8")
    r = ablate("predict", cell["run_id"], f"{text}:ft", "--out", tmp_path / "pred", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len((tmp_path / "pred" / "ft.txt").read_text(encoding="utf-8").strip().splitlines()) == 4
    r = ablate("predict", "0123456789ab", f"{text}:ft", "--out", tmp_path / "p2", cwd=tmp_path)
    assert r.returncode == 2 and "no FINISHED cell" in r.stderr, r.stderr
