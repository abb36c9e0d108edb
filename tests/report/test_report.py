"""Figures and the report page: curves are the seed means, files are written, links resolve, no torch."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ablate.spec.report import FigureSpec, ReportSpec, TableSpec
from ablate.report.figures import colour_map, default_figures, draw, figure_data
from ablate.report.page import build_report

AXES = ["backbone", "finetune", "lr", "seed"]


def study(failed: int = 1, missing: int = 1) -> pd.DataFrame:
    """bert/roberta x lora/full x 3 lrs x 2 seeds; dev F1 = base + lr effect + seed/100; a 3-epoch history."""
    rows, k = [], 0
    for bb, base in (("bert", 0.6), ("roberta", 0.7)):
        for ft in ("lora", "full"):
            for lr, bump in ((1e-5, 0.0), (3e-5, 0.05), (1e-4, -0.05)):
                for seed in (0, 1):
                    k += 1
                    status = "FAILED" if k <= failed else "MISSING" if k <= failed + missing else "FINISHED"
                    f1 = base + bump + seed / 100 + (0.02 if ft == "full" else 0)
                    row = {"run_id": f"r{k}", "name": f"{bb}-{ft}-{lr:g}-s{seed}", "status": status,
                           "error": "Traceback (most recent call last):\n  ...\nRuntimeError: out of memory"
                           if status == "FAILED" else None,
                           "mlflow_run_id": f"m{k}" if status == "FINISHED" else None,
                           "backbone": bb, "finetune": ft, "lr": lr, "seed": seed}
                    if status == "FINISHED":
                        row.update({"dev/macro_f1": f1, "test/macro_f1": f1 - 0.01, "test/f1": f1,
                                    "test/precision": f1, "test/recall": f1, "test/f1/ft": f1, "test/f1/sm": f1,
                                    "test/f1/type/BODY": f1, "epoch_seconds": 90.0,
                                    "history": {"dev/macro_f1": [f1 / 3, f1 / 2, f1]}})
                    rows.append(row)
    cells = pd.DataFrame(rows)
    cells.attrs["axes"] = AXES
    return cells


def test_lr_curve_is_the_mean_over_seeds_with_a_min_max_band():
    data = figure_data(study(failed=0, missing=0), FigureSpec(name="lr", x="lr"))
    assert [c.label for c in data.curves] == ["bert / lora", "bert / full", "roberta / lora", "roberta / full"]
    c = data.curves[0]  # bert lora: seeds .60/.61, .65/.66, .55/.56 at lr 1e-5, 3e-5, 1e-4
    assert c.x.tolist() == [1e-5, 3e-5, 1e-4]
    assert c.mean == pytest.approx([60.5, 65.5, 55.5])
    assert c.low == pytest.approx([60, 65, 55]) and c.high == pytest.approx([61, 66, 56])
    assert c.n.tolist() == [2, 2, 2] and data.log_x


def test_history_curve_and_failed_cells_counted_in_the_caption():
    data = figure_data(study(failed=1, missing=1), FigureSpec(name="ep", x="epoch", others="best"))
    bert_lora = data.curves[0]
    assert bert_lora.x.tolist() == [1, 2, 3]
    assert bert_lora.mean[-1] == pytest.approx(65.5)  # best lr (3e-5) by dev macro F1, mean of the 2 seeds
    assert "lr=3e-05" in data.caption
    failing = figure_data(study(failed=1, missing=1), FigureSpec(name="lr", x="lr"))
    assert "22 finished cells drawn; 2 cells without a value" in failing.caption
    assert failing.curves[0].n.tolist() == [0, 2, 2] and np.isnan(failing.curves[0].mean[0])  # a gap, not 0


def test_figures_are_written_with_one_colour_per_arm(tmp_path):
    cells = study()
    figs = [figure_data(cells, f) for f in default_figures(cells)]
    assert [f.name for f in figs] == ["f1_vs_lr", "f1_vs_epoch"]
    colours = colour_map(c.label for f in figs for c in f.curves)
    assert colour_map(reversed(list(colours))) == colours  # keyed by the label, not by drawing order
    assert len(set(colours.values())) == 4
    for f in figs:
        png, svg = draw(f, colours, tmp_path)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        text = svg.read_text()
        assert "<svg" in text and all(colours[c.label] in text for c in f.curves)


def test_build_report_writes_page_tables_and_figures(tmp_path):
    cells = study()
    gold = [["B-BODY", "I-BODY", "O", "B-SYMP"]] * 30

    def predictions(run, split):
        keep = int(run[1:]) % 2 == 0  # even runs perfect, odd runs all O
        return {"ft": [(g, g if keep else ["O"] * 4) for g in gold]}

    spec = ReportSpec(tables=[TableSpec(name="t4", title="LoRA vs full", rows=["backbone", "finetune"],
                                        columns=["f1", "epoch_seconds"], others="best", compare="finetune")],
                      bootstrap_samples=200)
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "old.md").write_text("stale")
    readme = build_report("quick", "A test study.", cells, spec, tmp_path, predictions=predictions)
    page = readme.read_text(encoding="utf-8")
    assert "**24 cells planned: 22 finished, 1 failed, 1 missing (never run).**" in page
    assert "RuntimeError: out of memory" in page  # a traceback's last line, not its first
    assert "paired bootstrap over test sentences" in page and "200 bootstrap samples" in page
    assert "### LoRA vs full: is full different from lora?" in page
    links = re.findall(r"\]\(((?:tables|figures)/[^)]+)\)", page)
    assert {"figures/f1_vs_lr.png", "figures/f1_vs_epoch.png", "tables/t4.csv", "tables/per_genre.md",
            "tables/per_type.md", "tables/t4_significance.csv"} <= set(links)
    assert all((tmp_path / link).stat().st_size > 0 for link in links)
    assert not (tmp_path / "tables" / "old.md").exists()  # a stale table would read as current


def test_default_report_without_predictions_says_no_test_was_run(tmp_path):
    page = build_report("quick", "", study(), ReportSpec(), tmp_path).read_text(encoding="utf-8")
    assert {p.name for p in (tmp_path / "tables").iterdir()} >= {"by_backbone.md", "by_finetune.csv", "by_lr.md"}
    assert "not computed: no saved predictions" in page


def test_report_never_imports_torch():
    code = ("import sys, ablate.report.page, ablate.report.stats, ablate.report.figures; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_epochs_axis_gets_its_own_curve():
    cells = study(failed=0, missing=0)
    later = cells.assign(epochs=20, **{"dev/macro_f1": cells["dev/macro_f1"] + 0.1})
    cells = pd.concat([cells.assign(epochs=10), later])
    cells.attrs["axes"] = AXES + ["epochs"]
    specs = default_figures(cells)
    assert [s.name for s in specs] == ["f1_vs_lr", "f1_vs_epochs", "f1_vs_epoch"]
    data = figure_data(cells, specs[1])
    assert data.xlabel.startswith("Epochs") and not data.log_x
    c = data.curves[0]
    assert c.x.tolist() == [10, 20] and c.mean[1] - c.mean[0] == pytest.approx(10)


def test_a_compare_axis_narrowed_to_one_value_skips_only_its_test(tmp_path):
    """`--set grid.finetune=[full]` leaves one arm: the report says so instead of failing whole."""
    cells = study(failed=0, missing=0)
    cells = cells[cells["finetune"] == "full"].reset_index(drop=True)
    cells.attrs["axes"] = AXES
    spec = ReportSpec(tables=[TableSpec(name="t4", title="LoRA vs full", rows=["backbone", "finetune"],
                                        columns=["f1"], others="best", compare="finetune")], bootstrap_samples=50)
    page = build_report("quick", "", cells, spec, tmp_path,
                        predictions=lambda run, split: {"ft": [(["O"], ["O"])]}).read_text(encoding="utf-8")
    assert "*No significance test for t4:" in page and "a comparison needs exactly two" in page
    assert "| bert | full |" in page.replace("  ", " ")
