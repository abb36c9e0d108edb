"""Tables: seed grouping, bold best, failed and missing cells, the paper's tables, and a golden file."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from ablate.errors import UserError
from ablate.spec.report import ReportSpec, TableSpec
from ablate.report.tables import build_table, default_tables, genre_table, to_markdown, type_table, write_table

GOLDEN = Path(__file__).parent / "golden"
AXES = ["backbone", "finetune", "loss", "lr", "epochs", "seed"]


def cell(backbone="bert", finetune="lora", loss="ce", lr=1e-5, seed=0, status="FINISHED", **metrics) -> dict:
    name = f"{backbone}-{finetune}-{loss}-{lr:g}-s{seed}"
    return {"run_id": name, "name": name, "status": status, "error": "boom" if status == "FAILED" else None,
            "mlflow_run_id": None if status == "MISSING" else f"m-{name}", "backbone": backbone,
            "finetune": finetune, "loss": loss, "lr": lr, "epochs": 20, "seed": seed, **metrics}


def frame(rows: list[dict]) -> pd.DataFrame:
    cells = pd.DataFrame(rows)
    cells.attrs["axes"] = AXES
    return cells


def table4_cells() -> pd.DataFrame:
    """bert lora (3 seeds), bert full (2 finished + 1 failed), roberta lora (3), roberta full (all missing)."""
    def run(bb, ft, seed, f1, minutes, mem, trainable, total, status="FINISHED"):
        if status != "FINISHED":
            return cell(bb, ft, seed=seed, status=status)
        return cell(bb, ft, seed=seed, **{"test/f1": f1, "dev/macro_f1": f1 - 0.01, "epoch_seconds": minutes * 60,
                                         "peak_memory_mb": mem, "params/trainable": trainable,
                                         "params/total": total})
    return frame([
        run("bert", "lora", 0, 0.70, 25.0, 3000, 622_122, 102_890_000),
        run("bert", "lora", 1, 0.72, 26.0, 3000, 622_122, 102_890_000),
        run("bert", "lora", 2, 0.71, 24.0, 3000, 622_122, 102_890_000),
        run("bert", "full", 0, 0.74, 30.0, 6000, 102_299_178, 102_299_178),
        run("bert", "full", 1, 0.73, 31.0, 6100, 102_299_178, 102_299_178),
        run("bert", "full", 2, 0, 0, 0, 0, 0, status="FAILED"),
        run("roberta", "lora", 0, 0.75, 53.0, 7000, 1_615_914, 327_000_000),
        run("roberta", "lora", 1, 0.76, 54.0, 7000, 1_615_914, 327_000_000),
        run("roberta", "lora", 2, 0.77, 52.0, 7000, 1_615_914, 327_000_000),
        *[run("roberta", "full", s, 0, 0, 0, 0, 0, status="MISSING") for s in range(3)],
    ])


TABLE4 = TableSpec(name="table4", title="Table 4: LoRA vs full fine-tuning", rows=["backbone", "finetune"],
                   columns=["params/trainable", "params/total", "epoch_seconds", "peak_memory_mb", "f1"], paper=True)


def test_golden_table4(tmp_path):
    md, csv = write_table(build_table(table4_cells(), TABLE4), tmp_path)
    assert md.read_text(encoding="utf-8") == (GOLDEN / "table4.md").read_text(encoding="utf-8")
    numbers = pd.read_csv(csv)
    assert numbers["test/f1 mean"].tolist()[:2] == pytest.approx([0.71, 0.735])
    assert math.isnan(numbers["test/f1 mean"].iloc[3])  # all missing: no number, not 0


def test_seeds_form_one_row_with_mean_std_n():
    t = build_table(table4_cells(), TABLE4)
    assert len(t.display) == 4  # 12 cells, 4 arms
    row = t.display.iloc[0]
    # bert lora: F1 .70 .72 .71 -> 71.00 ± 1.00 (3); minutes 25 26 24 -> 25.00 ± 1.00 (3)
    assert row["F1 (%)"] == "71.00 ± 1.00 (3)"
    assert row["min/epoch"].strip("*") == "25.0 ± 1.0 (3)"
    assert row["Cells"] == "3/3"
    assert row["Trainable params"] == "622,122"  # identical across seeds: one exact value


def test_best_value_of_each_column_in_bold_and_params_not_ranked():
    d = build_table(table4_cells(), TABLE4).display
    bold = {c: [i for i, v in enumerate(d[c]) if str(v).startswith("**")] for c in d.columns}
    assert bold["F1 (%)"] == [2]            # roberta lora, highest mean F1 (76.00)
    assert bold["min/epoch"] == [0]         # bert lora, least minutes per epoch
    assert bold["Peak memory (MB)"] == [0]  # least memory
    assert bold["Trainable params"] == [] and bold["Total params"] == []


def test_failed_and_missing_cells_show_as_such():
    d = build_table(table4_cells(), TABLE4).display
    bert_full, roberta_full = d.iloc[1], d.iloc[3]
    assert bert_full["Cells"] == "2/3 (1 failed)"
    assert bert_full["F1 (%)"].strip("*") == "73.50 ± 0.71 (2)"  # the failed seed is not a zero in the mean
    assert roberta_full["Cells"] == "0/3 (3 missing)"
    assert all(roberta_full[c] == "missing (3/3)" for c in ["F1 (%)", "min/epoch", "Trainable params"])
    everything_failed = frame([cell(seed=s, status="FAILED") for s in range(2)] + [cell(seed=2, status="RUNNING")])
    t = build_table(everything_failed, TableSpec(name="t", rows=["backbone"]))
    assert t.display["F1 (%)"].iloc[0] == "failed (2/3), running (1/3)"


def test_finished_cell_without_the_metric_reads_na_not_blank():
    cells = frame([cell(seed=0, **{"test/f1": 0.5}), cell("roberta", seed=0, **{"test/f1": 0.6, "test/recall": 0.4})])
    d = build_table(cells, TableSpec(name="t", rows=["backbone"], columns=["recall", "f1"])).display
    assert d["Recall (%)"].tolist() == ["n/a", "40.00 (1)"]


def test_paper_columns_match_backbone_and_finetune():
    d = build_table(table4_cells(), TABLE4).display
    assert d["Paper Trainable params"].tolist() == ["622,122", "102,299,178", "1,615,914", "326,088,746"]
    assert d["Paper min/epoch"].tolist() == ["25.0", "30.0", "53.0", "67.0"]
    t3 = build_table(table4_cells(), TableSpec(name="t3", rows=["backbone"], split="test", paper=True,
                                               where={"finetune": "lora"}))
    assert t3.display["Paper dev F1 (%)"].tolist() == ["73.80", "74.00"]


def test_other_varying_axes_become_rows_or_the_best_setting():
    rows = [cell(lr=lr, seed=s, **{"test/f1": f1 + s / 100, "dev/macro_f1": f1})
            for lr, f1 in [(1e-5, 0.6), (3e-5, 0.7)] for s in range(2)]
    split = build_table(frame(rows), TableSpec(name="t", rows=["backbone"])).display
    assert split["lr"].tolist() == ["1e-05", "3e-05"]  # lr varies, so it is a row axis: never averaged over
    best = build_table(frame(rows), TableSpec(name="t", rows=["backbone"], others="best")).display
    assert best["Setting"].tolist() == ["lr=3e-05"]
    assert best["F1 (%)"].tolist() == ["70.50 ± 0.71 (2)"]


def test_where_filters_and_compares_numbers_as_numbers():
    rows = [cell(lr=lr, **{"test/f1": f1}) for lr, f1 in [(1e-5, 0.6), (3e-5, 0.7)]]
    t = build_table(frame(rows), TableSpec(name="t", rows=["backbone"], where={"lr": "1.0e-5"}))
    assert t.display["F1 (%)"].tolist() == ["60.00 (1)"]
    with pytest.raises(UserError, match="unknown axis 'size'"):
        build_table(frame(rows), TableSpec(name="t", rows=["size"]))


def test_unknown_metric_is_refused_by_the_spec():
    with pytest.raises(ValidationError, match="unknown metric 'f2'"):
        TableSpec(name="t", rows=["backbone"], columns=["f2"])
    ReportSpec(tables=[TableSpec(name="t", rows=["backbone"], columns=["dev/f1/type/BODY", "f1/sm", "best_epoch"])])


def test_default_tables_one_per_varying_axis_with_compare_for_two_values():
    rows = [cell(bb, ft, lr=lr, seed=s, **{"test/macro_f1": 0.5}) for bb in ("bert", "roberta", "albert")
            for ft in ("lora", "full") for lr in (1e-5,) for s in range(2)]
    specs = default_tables(frame(rows))
    assert [(s.rows, s.compare, s.split) for s in specs] == [(["backbone"], None, "test"),
                                                            (["finetune"], "finetune", "test")]


def test_per_genre_and_per_type_tables_use_the_best_cell_of_each_arm():
    def run(ft, seed, dev, ft_f1):
        return cell("bert", ft, seed=seed, **{"dev/macro_f1": dev, "test/macro_f1": ft_f1, "test/f1/ft": ft_f1,
                                             "test/f1/sm": 0.5, "test/macro_precision": 0.6,
                                             "test/macro_recall": 0.4, "test/f1/type/BODY": ft_f1})
    cells = frame([run("lora", 0, 0.60, 0.61), run("lora", 1, 0.65, 0.66), run("full", 0, 0.70, 0.71),
                   cell("bert", "full", seed=1, status="FAILED")])
    g = genre_table(cells, ["backbone", "finetune", "loss"])
    assert g.display["Cell"].tolist() == ["bert-lora-ce-1e-05-s1", "bert-full-ce-1e-05-s0"]
    assert g.display["FT F1 (%)"].tolist() == ["66.00", "**71.00**"]
    assert list(g.display.columns[-3:]) == ["Macro P (%)", "Macro R (%)", "Macro F1 (%)"]
    t = type_table(cells, ["backbone", "finetune", "loss"])
    assert t.display["BODY F1 (%)"].tolist() == ["66.00", "**71.00**"]


def test_markdown_escapes_pipes_and_aligns_numbers_right():
    text = to_markdown(pd.DataFrame({"a": ["x|y"], "F1": ["1.00"]}))
    assert text.splitlines() == ["| a | F1 |", "|:---|---:|", "| x\\|y | 1.00 |"]
