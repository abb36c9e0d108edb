"""The head axis through the real CLI on the real ROCLING files: three heads run, and the report compares them."""

from __future__ import annotations

import json

import yaml

from tests.e2e.conftest import ablate


def test_three_heads_run_on_rocling_and_the_report_compares_each_with_linear(rocling, tmp_path):
    study = {
        "name": "heads-e2e",
        "data": {"root": str(rocling), "train": ["healthner_test.jsonl"], "dev": {"split": 0.2, "seed": 0},
                 "test": [{"path": "rocling23_truth_FT.txt", "genre": "ft"}], "max_length": 128},
        "backbones": {"bert-tiny": {"scratch": "bert", "shape": "tiny"}},
        "grid": {"head": ["linear", "crf", "bilstm-crf"]},
        "train": {"epochs": 1, "lr": 3.0e-3, "batch_size": 32, "eval_batch_size": 128, "head": {"lstm": {"hidden": 32}}},
        "report": {"tables": [{"name": "heads", "rows": ["head"], "columns": ["f1", "params/trainable"], "split": "dev",
                               "compare": "head"}], "bootstrap_samples": 50},
    }
    path = tmp_path / "heads.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    r = ablate("run", path, "--no-display", cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    plan = json.loads(ablate("plan", path, "--json", cwd=tmp_path).stdout)
    assert sorted(c["head"] for c in plan["cells"]) == ["bilstm-crf", "crf", "linear"]
    assert {c["status"] for c in plan["cells"]} == {"done"}

    r = ablate("report", path, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    tables = tmp_path / "reports" / "heads-e2e" / "tables"
    main = (tables / "heads.csv").read_text(encoding="utf-8")
    assert all(h in main for h in ("linear", "crf", "bilstm-crf"))
    for other in ("crf", "bilstm-crf"):
        sig = (tables / f"heads_{other}_vs_linear_significance.csv").read_text(encoding="utf-8").splitlines()
        header, row = sig[0].split(","), sig[1].split(",")
        p = float(row[header.index("p")])
        assert 0.0 <= p <= 1.0
    page = (tmp_path / "reports" / "heads-e2e" / "README.md").read_text(encoding="utf-8")
    assert "is crf different from linear?" in page and "is bilstm-crf different from linear?" in page
