"""The paper's proposal as one row: each test genre predicted by the model trained on that genre alone
(`data.train_genres: [g]`), scored as the official macro over genres, against the model trained on all genres."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import pandas as pd

from ablate.report.tables import Table

AXIS = "data.train_genres"


def _best(cells: pd.DataFrame, value: str, by: str) -> pd.Series | None:
    """The FINISHED cell trained on `value` with the highest `by` on dev (never test), ties by run_id."""
    pool = cells[(cells["status"] == "FINISHED") & (cells[AXIS] == value)]
    if by in pool.columns:
        pool = pool[pool[by].notna()]
    if pool.empty:
        return None
    key = by if by in pool.columns else "dev/macro_f1"
    return pool.sort_values([key, "run_id"], ascending=[False, True], kind="mergesort").iloc[0]


def genre_models_table(cells: pd.DataFrame, predictions: Callable[[str, str], Mapping] | None, split: str = "test",
                       samples: int = 1000, seed: int = 0) -> Table | None:
    """None unless the study varies data.train_genres with single-genre values and an all-genre value."""
    from ablate.report.stats import TEST_NAME, macro_f1, paired_bootstrap

    if predictions is None or AXIS not in cells.columns:
        return None
    values = [v for v in dict.fromkeys(cells[AXIS].dropna()) if isinstance(v, str)]
    singles = {v for v in values if "+" not in v}
    if not singles or len(values) < 2:
        return None
    whole = max(values, key=lambda v: (v.count("+"), v))  # the most genres: the all-genre model
    base = _best(cells, whole, "dev/macro_f1")
    if base is None or "+" not in whole:
        return None
    base_pairs = predictions(base["mlflow_run_id"], split)
    if not base_pairs:
        return None
    mixed, used = {}, {}
    for g in sorted(base_pairs):
        own = _best(cells, g, f"dev/f1/{g}") if g in singles else None  # chosen by its own genre's dev F1
        if own is None:
            return None  # a test genre without its own model: the proposal cannot be scored
        got = predictions(own["mlflow_run_id"], split)
        if g not in got:
            return None
        mixed[g], used[g] = got[g], own["name"]
    r = paired_bootstrap(base_pairs, mixed, samples, seed)
    pct = (lambda x, sign="": "–" if x is None or math.isnan(x) else f"{100 * x:{sign}.2f}")
    genre_f1 = {g: macro_f1({g: p}) for g, p in mixed.items()}
    base_f1 = {g: macro_f1({g: p}) for g, p in base_pairs.items()}
    disp = [{"Model": f"all genres ({whole})", "Cells": base["name"],
             **{f"{g.upper()} F1 (%)": pct(base_f1[g]) for g in sorted(base_pairs)}, "Macro F1 (%)": pct(r.a),
             "Δ (points)": "", "95% CI": "", "p": ""},
            {"Model": "per-genre models", "Cells": ", ".join(f"{g}: {n}" for g, n in used.items()),
             **{f"{g.upper()} F1 (%)": pct(genre_f1[g]) for g in sorted(mixed)}, "Macro F1 (%)": pct(r.b),
             "Δ (points)": pct(r.delta, "+"), "95% CI": f"[{pct(r.low, '+')}, {pct(r.high, '+')}]",
             "p": "< 0.001" if r.p_value < 0.001 else f"{r.p_value:.3f}"}]
    nums = pd.DataFrame([{"model": "all", "cells": base["run_id"], f"{split}/macro_f1": r.a},
                         {"model": "per-genre", "cells": " ".join(used.values()), f"{split}/macro_f1": r.b,
                          "delta": r.delta, "low": r.low, "high": r.high, "p": r.p_value}])
    caption = (f"Split: {split}. Each {split} genre predicted by the cell trained on that genre alone (the best by its "
               f"genre's dev F1), the genres' F1 averaged as the official macro; against the all-genre cell best by dev "
               f"macro F1. Test: {TEST_NAME.replace('test sentences', split + ' sentences')}; {samples} samples, "
               f"seed {seed}. Cells are chosen over every setting of the other axes (e.g. each data.train_fraction).")
    return Table("genre_models" + ("" if split == "test" else f"_{split}"),
                 f"Per-genre models (the paper's proposal) against one model for all genres, {split}", caption,
                 pd.DataFrame(disp), nums)
