"""The per-genre-models row on constructed predictions whose answer is known: each genre's own model, chosen
by that genre's dev F1 (never test), scored as the official macro against the all-genre model."""

from __future__ import annotations

import pandas as pd

from ablate.report.genres import genre_models_table

GOLD = {"ft": [["B-X", "I-X", "O"], ["O", "B-Y"]], "sm": [["B-Y", "O"], ["B-X", "O"]]}
NONE = {g: [["O"] * len(s) for s in sents] for g, sents in GOLD.items()}


def _pairs(good: set[str]):
    return {g: [(gold, gold if g in good else none) for gold, none in zip(GOLD[g], NONE[g])] for g in GOLD}


def test_each_genre_scored_with_its_own_model_against_the_all_genre_model():
    cells = pd.DataFrame({
        "run_id": ["all", "ft", "ft2", "sm"], "name": ["c-all", "c-ft", "c-ft2", "c-sm"],
        "status": ["FINISHED"] * 4, "mlflow_run_id": ["m-all", "m-ft", "m-ft2", "m-sm"],
        "data.train_genres": ["ft+sm", "ft", "ft", "sm"],
        "dev/macro_f1": [0.9, 0.5, 0.1, 0.5], "dev/f1/ft": [0.9, 0.2, 0.8, 0.0], "dev/f1/sm": [0.9, 0.0, 0.0, 0.7],
    })
    preds = {"m-all": _pairs({"ft"}), "m-ft": _pairs(set()), "m-ft2": _pairs({"ft"}), "m-sm": _pairs({"sm"})}
    table = genre_models_table(cells, lambda run, split: preds[run], "test", samples=200)
    row_all, row_own = table.numbers.to_dict("records")
    assert row_all["test/macro_f1"] == 0.5  # ft perfect, sm nothing
    assert row_own["test/macro_f1"] == 1.0 and row_own["delta"] == 0.5
    assert "ft: c-ft2" in table.display.iloc[1]["Cells"]  # by ft's dev F1 (0.8), not dev macro F1 (c-ft: 0.5)


def test_no_row_without_single_genre_cells_for_every_test_genre():
    cells = pd.DataFrame({"run_id": ["all", "ft"], "name": ["a", "f"], "status": ["FINISHED"] * 2,
                          "mlflow_run_id": ["m-all", "m-ft"], "data.train_genres": ["ft+sm", "ft"],
                          "dev/macro_f1": [0.9, 0.5]})
    preds = {"m-all": _pairs({"ft"}), "m-ft": _pairs({"ft"})}
    assert genre_models_table(cells, lambda run, split: preds[run], "test") is None  # sm has no model of its own
    assert genre_models_table(cells.drop(columns="data.train_genres"), lambda r, s: preds[r]) is None
