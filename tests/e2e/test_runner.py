"""`ablate run` end to end: resume after kill -9, the failure policy, bad studies, exactly-once cells."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter

from tests.e2e.conftest import ABLATE, ablate, finished_runs, interrupt_mid_cell, tiny_study


def _by_cell(runs):
    out: dict[str, list[str]] = {}
    for r in runs:
        out.setdefault(r.data.tags["ablate.run_id"], []).append(r.info.status)
    return out


def test_run_then_rerun_skips_finished_cells(study_dir):
    study = tiny_study(study_dir)
    r = ablate("run", study, "--no-display", cwd=study_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = finished_runs(study_dir, "tiny")
    assert len(runs) == 4 and {x.info.status for x in runs} == {"FINISHED"}
    metrics = runs[0].data.metrics
    for key in ("dev/macro_f1", "test/f1", "params/trainable", "epoch_seconds", "best_epoch", "dev/f1/ft"):
        assert key in metrics
    again = ablate("run", study, "--no-display", cwd=study_dir)
    assert again.returncode == 0 and "4 finished, 0 queued" in again.stdout
    assert len(finished_runs(study_dir, "tiny")) == 4
    plan = json.loads(ablate("plan", study, "--json", cwd=study_dir).stdout)
    assert [c["status"] for c in plan["cells"]] == ["done"] * 4
    assert _parent_status(study_dir, "tiny") == "FINISHED"  # the study's own run, as the UI shows it


def _parent_status(folder, study: str) -> str:
    from ablate.tracking import Tracker

    tracker = Tracker(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    return tracker.client.get_run(tracker.parent_run(tracker.experiment_id(study, create=False), study)).info.status


def test_faults_fail_their_cell_and_the_study_goes_on(study_dir):
    study = tiny_study(study_dir, grid={"finetune": ["full"], "lr": [1.0e-3, 2.0e-3, 3.0e-3, 4.0e-3]})
    faults = "error@lr1e-03,nan@lr2e-03,oom>2@lr3e-03"
    r = ablate("run", study, "--no-display", cwd=study_dir, env={"ABLATE_FAULT": faults})
    assert r.returncode == 1, r.stdout + r.stderr
    cells = _by_cell(finished_runs(study_dir, "tiny"))
    by_name = {x.info.run_name: x for x in finished_runs(study_dir, "tiny")}
    statuses = Counter(tuple(v) for v in cells.values())
    # error and NaN: FAILED once; OOM at batch 8: FAILED, retried at 4 (FAILED), then FINISHED at 2; lr 4e-3 FINISHED.
    assert statuses == Counter({("FAILED",): 2, ("FAILED", "FAILED", "FINISHED"): 1, ("FINISHED",): 1})
    assert "injected failure" in by_name["tb-full-ce-lr1e-03-e1-s1"].data.tags["ablate.error"]
    failed_nan = [x for x in finished_runs(study_dir, "tiny") if x.info.run_name == "tb-full-ce-lr2e-03-e1-s1"][0]
    assert "diverged" in failed_nan.data.tags["ablate.error"]
    oom = [x for x in finished_runs(study_dir, "tiny") if x.info.run_name == "tb-full-ce-lr3e-03-e1-s1"]
    done = [x for x in oom if x.info.status == "FINISHED"][0]
    assert done.data.tags["ablate.ran.batch_size"] == "2" and done.data.tags["ablate.ran.grad_accum"] == "4"
    assert "out of memory" in "\n".join(x.data.tags.get("ablate.error", "") for x in oom).lower()
    # re-running retries the failed cells only (no faults now) and then every cell is FINISHED once
    again = ablate("run", study, "--no-display", cwd=study_dir)
    assert again.returncode == 0, again.stdout + again.stderr
    cells = _by_cell(finished_runs(study_dir, "tiny"))
    assert all(v.count("FINISHED") == 1 for v in cells.values()) and len(cells) == 4


def test_kill_9_mid_run_then_rerun_finishes_every_cell_exactly_once(study_dir):
    study = tiny_study(study_dir, grid={"finetune": ["full", "lora"], "lr": [1.0e-3, 2.0e-3]}, epochs=3)
    proc = subprocess.Popen([ABLATE, "run", str(study), "--no-display", "--heartbeat", "1", "--grace", "3"],
                            cwd=study_dir, env={**os.environ, "ABLATE_CACHE": str(study_dir / "cache")},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until one cell has finished and another is running
        line = proc.stdout.readline()
        if "FINISHED" in line:
            for line in proc.stdout:
                if "running" in line:
                    break
            break
    time.sleep(1.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process tree: run, worker, fork server, cell
    proc.wait()
    before = _by_cell(finished_runs(study_dir, "tiny"))
    assert any("RUNNING" in v for v in before.values()), before
    time.sleep(3.5)  # let the dead worker's heartbeat go stale
    r = ablate("run", study, "--no-display", "--heartbeat", "1", "--grace", "3", cwd=study_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    after = _by_cell(finished_runs(study_dir, "tiny"))
    assert len(after) == 4 and all(v.count("FINISHED") == 1 for v in after.values()), after
    assert "RUNNING" not in {s for v in after.values() for s in v}  # the killed attempt is marked KILLED


def test_bad_study_is_one_message_exit_2_and_writes_nothing(study_dir):
    study = tiny_study(study_dir)
    text = study.read_text().replace("epochs: 1", "epoch: 1")
    bad = study_dir / "bad.yaml"
    bad.write_text(text)
    r = ablate("run", bad, "--no-display", cwd=study_dir)
    assert r.returncode == 2 and "did you mean" in r.stderr and "epochs" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (study_dir / "mlruns").exists()


def test_bad_data_is_one_message_before_any_cell_runs(study_dir):
    """A bad tag in a training file stops `run` once (exit 2, file:line), not once per cell."""
    study = tiny_study(study_dir)
    train = study_dir / "data" / "train.jsonl"
    lines = train.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[2])
    row["character_label"][0] = "X-FOO"
    lines[2] = json.dumps(row, ensure_ascii=False)
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = ablate("run", study, "--no-display", cwd=study_dir)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "train.jsonl:3" in r.stderr and "X-FOO" in r.stderr and "Traceback" not in r.stderr
    assert "FAILED" not in r.stdout and not (study_dir / "mlruns" / "mlflow.db").exists()


def test_ctrl_c_gives_the_running_cell_back_at_once(study_dir):
    """After Ctrl-C the cell is KILLED in MLflow and queued again: a re-run does not wait out the grace."""
    from ablate.scheduler.queue import CellQueue

    study = tiny_study(study_dir, grid={"lr": [1.0e-3, 2.0e-3]}, epochs=40)
    code, out = interrupt_mid_cell(study, study_dir)
    assert code == 130, out
    statuses = [s for v in _by_cell(finished_runs(study_dir, "tiny")).values() for s in v]
    assert "KILLED" in statuses and "RUNNING" not in statuses and _parent_status(study_dir, "tiny") == "KILLED"
    queue = CellQueue(str(study_dir / "mlruns" / "queue.journal"), "tiny")
    states = Counter(t.state.name for t in queue.trials())
    assert states["RUNNING"] == 0 and states["WAITING"] >= 1, states
    # With a grace of 10 minutes a cell left RUNNING in the queue would hold the re-run past its timeout.
    r = ablate("run", study, "--no-display", "--grace", "600", cwd=study_dir, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr


def test_report_on_a_study_never_run_says_so_and_creates_nothing(study_dir):
    study = tiny_study(study_dir)
    r = ablate("report", study, cwd=study_dir)
    assert r.returncode == 2 and "nothing to report for tiny: no MLflow store" in r.stderr, r.stderr
    assert not (study_dir / "mlruns").exists() and not (study_dir / "reports").exists()
