"""What the restructure promised, through the real CLI: the report from MLflow alone, the worker's exit code,
the plan logged on the study's parent run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.e2e.conftest import ablate, tiny_study

ONE_CELL = {"lr": [1.0e-3]}
TWO_CELLS = {"lr": [1.0e-3, 2.0e-3]}  # 90 demo sentences, 63 to train on: 8 batches of 8 per epoch


def _uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"


def _parent(folder: Path, study: str):
    """The study's own MLflow run (tag ablate.role = study)."""
    from ablate.tracking import Tracker
    from ablate.tracking.tags import ROLE

    tracker = Tracker(_uri(folder))
    exp = tracker.experiment_id(study, create=False)
    runs = tracker.client.search_runs([exp], f"tags.`{ROLE}` = 'study'")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return tracker, runs[0]


def _files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def test_report_after_the_data_is_moved_away_is_the_same_report(study_dir):
    study = tiny_study(study_dir, grid=ONE_CELL)
    r = ablate("run", study, "--no-display", cwd=study_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    a = ablate("report", study, "--out", "A", cwd=study_dir)
    assert a.returncode == 0, a.stdout + a.stderr
    assert "1 cells planned: 1 finished" in (study_dir / "A" / "README.md").read_text(encoding="utf-8")

    (study_dir / "data").rename(study_dir / "data.moved")  # every data file of the study is gone from its place
    b = ablate("report", study, "--out", "B", cwd=study_dir)
    assert b.returncode == 0, b.stdout + b.stderr
    assert "Traceback" not in b.stderr
    in_a, in_b = _files(study_dir / "A"), _files(study_dir / "B")
    assert set(in_a) == set(in_b)
    texts = [k for k in in_a if k.endswith((".md", ".csv"))]
    assert "README.md" in texts and any(k.startswith("tables/") and k.endswith(".csv") for k in texts), texts
    # The page and the tables must be byte-identical: same cells (run_ids from the logged hashes), same metrics.
    # Figures are only required to exist: a renderer may embed a date or an id in them.
    for k in texts:
        assert in_a[k].read_bytes() == in_b[k].read_bytes(), k

    # Data absent and a store where the study never ran: one message, exit 2, nothing created.
    fresh = study_dir / "elsewhere" / "mlflow.db"
    r = ablate("report", study, "--out", "C", "--tracking-uri", f"sqlite:///{fresh}", cwd=study_dir)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("error:") == 1, r.stderr
    assert "nothing to report for tiny" in r.stderr, r.stderr
    assert not fresh.exists() and not (study_dir / "C").exists()

    # Data absent and the study's runs hold no plan (a store from before `ablate run` logged one): exit 2, one message.
    tracker, parent = _parent(study_dir, "tiny")
    plan_file = Path(parent.info.artifact_uri.removeprefix("file://")) / "plan.json"
    assert plan_file.is_file(), parent.info.artifact_uri
    plan_file.unlink()
    r = ablate("report", study, "--out", "D", cwd=study_dir)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("error:") == 1, r.stderr
    assert "cannot plan tiny" in r.stderr and "train.jsonl is missing" in r.stderr, r.stderr


def test_worker_exits_1_when_a_cell_it_ran_failed_and_0_when_all_finished(study_dir):
    study = tiny_study(study_dir, grid=TWO_CELLS)
    place = ["--tracking-uri", _uri(study_dir), "--storage", study_dir / "mlruns" / "queue.journal"]
    r = ablate("worker", study, *place, cwd=study_dir, env={"ABLATE_FAULT": "error@lr1e-03"})
    assert r.returncode == 1, r.stdout + r.stderr
    st = json.loads(ablate("status", study, *place, "--json", cwd=study_dir).stdout)
    assert st["counts"] == {"FAILED": 1, "FINISHED": 1}, st
    [failed] = st["failed"]
    assert failed["name"] == "tb-full-ce-lr1e-03-e1-s1" and "injected failure" in failed["error"], failed
    cells = json.loads(ablate("plan", study, "--tracking-uri", _uri(study_dir), "--json", cwd=study_dir).stdout)["cells"]
    assert {c["name"]: c["status"] for c in cells} == {"tb-full-ce-lr1e-03-e1-s1": "failed",
                                                       "tb-full-ce-lr2e-03-e1-s1": "done"}

    # No faults: the worker re-queues the failed cell, runs it (and only it), and it finishes -> exit 0.
    r = ablate("worker", study, *place, cwd=study_dir, env={"ABLATE_FAULT": ""})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tb-full-ce-lr1e-03-e1-s1: FINISHED" in r.stdout and "lr2e-03-e1-s1: FINISHED" not in r.stdout, r.stdout
    st = json.loads(ablate("status", study, *place, "--json", cwd=study_dir).stdout)
    assert st["counts"] == {"FINISHED": 2} and st["failed"] == [], st


def test_run_logs_its_plan_on_the_study_run(study_dir):
    study = tiny_study(study_dir, grid=TWO_CELLS)
    r = ablate("run", study, "--no-display", cwd=study_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    tracker, parent = _parent(study_dir, "tiny")
    path = tracker.client.download_artifacts(parent.info.run_id, "plan.json", str(study_dir / "fetched"))
    logged = json.loads(Path(path).read_text(encoding="utf-8"))
    planned = json.loads(ablate("plan", study, "--json", cwd=study_dir).stdout)
    assert logged["study"] == "tiny"
    assert [c["run_id"] for c in logged["cells"]] == [c["run_id"] for c in planned["cells"]]
    assert len(logged["cells"]) == 2
    assert [c["name"] for c in logged["cells"]] == [c["name"] for c in planned["cells"]]
    assert [c["axes"]["lr"] for c in logged["cells"]] == [1.0e-3, 2.0e-3]
    # The data hashes are keyed by YAML place (the files may move) and are the files' SHA-256.
    data = study_dir / "data"
    assert logged["data_sha256"] == {
        f"{role}[0]": hashlib.sha256((data / f"{role}.jsonl").read_bytes()).hexdigest() for role in ("train", "dev", "test")}
