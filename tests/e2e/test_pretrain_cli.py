"""Pretraining through the real CLI: a backbone with `pretrain:` beside the same one without, as an axis; the
pretraining is its own MLflow run under the study, built once for all its cells; a missing text file is one message."""

from __future__ import annotations

import yaml

from tests.e2e.conftest import ablate, tiny_study


def _study(tmp_path, **pretrain):
    path = tiny_study(tmp_path, grid={"backbone": ["tb", "tb-mlm"], "lr": [2.0e-3, 3.0e-3]})
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["backbones"]["tb-mlm"] = {"scratch": "bert", "shape": "tiny",
                                  "pretrain": {"steps": 20, "batch_size": 8, **pretrain}}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_a_pretrained_backbone_is_an_axis_built_once_and_tracked_as_its_own_run(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "extra.txt").write_text("病人頭痛發燒\n醫師建議多喝水\n", encoding="utf-8")
    study = _study(tmp_path, text=["extra.txt"])
    r = ablate("run", study, "--no-display", "--workers", "2", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    pre = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'pretrain'")
    assert len(pre) == 1 and pre[0].info.status == "FINISHED"  # one build for the two tb-mlm cells
    parent = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'study'")[0]
    assert pre[0].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert "extra.txt" in pre[0].data.params["text"] and "train split" in pre[0].data.params["text"]
    assert {"pretrain/loss", "pretrain/tokens_per_second", "pretrain/seconds"} <= set(pre[0].data.metrics)
    cells = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'cell'")
    keys = {c.data.tags.get("ablate.ran.pretrained_backbone") for c in cells if "tb-mlm" in c.info.run_name}
    assert keys == {pre[0].data.tags["ablate.pretrain.key"]}
    assert not any("ablate.ran.pretrained_backbone" in c.data.tags for c in cells if "tb-mlm" not in c.info.run_name)

    r = ablate("report", study, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    page = (tmp_path / "reports" / "tiny" / "README.md").read_text(encoding="utf-8")
    assert "| tb |" in page and "| tb-mlm |" in page and "cells planned: 4 finished" in page.replace("**", "")

    (tmp_path / "data" / "extra.txt").write_text("新的文字\n", encoding="utf-8")  # new text: new cells, new build
    plan = ablate("plan", study, cwd=tmp_path)
    assert plan.returncode == 0 and "2 done" in plan.stdout and "2 pending" in plan.stdout, plan.stdout + plan.stderr


def test_a_missing_pretraining_text_file_is_one_message_before_anything_runs(tmp_path):
    study = _study(tmp_path, text=["nope.txt"])
    r = ablate("run", study, "--no-display", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "backbones.tb-mlm.pretrain.text" in r.stderr and "no such text file" in r.stderr, r.stderr
    assert not (tmp_path / "mlruns").exists()
