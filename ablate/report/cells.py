"""Cells: the contract with the tracking layer, one DataFrame row per planned cell, and how rows group.

Columns: run_id, name, status (STATUSES), error, mlflow_run_id, one column per axis (attrs["axes"]
lists them in study order), final metrics of the vocabulary (NaN when absent), history (dict of
per-epoch lists). Only FINISHED cells give values; the others are counted, never averaged.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ablate.errors import UserError
from ablate.spec.report import SELECT, SPLIT_FREE

STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING", "MISSING")
SEED = "seed"
RESERVED = ("run_id", "name", "status", "error", "mlflow_run_id", "history")
NA = "n/a"  # a finished cell that did not log this metric


def axes_of(cells: pd.DataFrame) -> list[str]:
    """The axis columns in study order: attrs["axes"], else every column that is not a metric or bookkeeping."""
    if "axes" in cells.attrs:
        return [a for a in cells.attrs["axes"] if a in cells.columns]
    return [c for c in cells.columns if c not in RESERVED and "/" not in c and c not in SPLIT_FREE]


def check_axes(cells: pd.DataFrame, names, what: str) -> None:
    axes = axes_of(cells)
    unknown = [n for n in names if n not in axes]
    if unknown:
        raise UserError(f"{what}: unknown axis {', '.join(map(repr, unknown))}; the study's axes are {', '.join(axes)}")


def apply_where(cells: pd.DataFrame, where: dict, what: str = "where") -> pd.DataFrame:
    """Keep the cells whose axes equal the given values (numbers compared as numbers: 1e-5 == "1.0e-5")."""
    check_axes(cells, where, what)
    keep = np.ones(len(cells), dtype=bool)
    for axis, value in where.items():
        col = cells[axis]
        if pd.api.types.is_numeric_dtype(col):
            try:
                keep &= np.isclose(col.to_numpy(float), float(value), rtol=1e-9, atol=0)
            except ValueError:
                raise UserError(f"{what}.{axis}: {value!r} is not a number") from None
        else:
            keep &= (col.astype(str) == str(value)).to_numpy()
    out = cells[keep]
    out.attrs = dict(cells.attrs)
    return out


def varying(cells: pd.DataFrame, axes=None) -> list[str]:
    """Axes with more than one value among these cells (a missing value counts as a value)."""
    axes = axes_of(cells) if axes is None else axes
    return [a for a in axes if cells[a].nunique(dropna=False) > 1]


def axis_text(value) -> str:
    """An axis value as people write it: 1e-05, 20, lora; an axis a cell does not have shows as "–"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() and abs(value) >= 1 else f"{value:g}"
    return str(value)


def groups(cells: pd.DataFrame, keys: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """Cells grouped by `keys`: numbers in numeric order, other values in order of first appearance."""
    if not keys:
        return [((), cells)] if len(cells) else []
    out = list(cells.groupby(keys, sort=False, dropna=False))
    numeric = [pd.api.types.is_numeric_dtype(cells[a]) for a in keys]
    seen = [None if num else {v: i for i, v in reversed(list(enumerate(cells[a].astype(str))))}
            for a, num in zip(keys, numeric)]

    def order(item):
        return [(math.inf if pd.isna(v) else float(v)) if num else first.get(str(v), math.inf)
                for v, num, first in zip(item[0], numeric, seen)]

    return sorted(out, key=order)


def finished(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells with results; every other status is counted, never averaged."""
    return cells[cells["status"] == "FINISHED"]


def _mean_select(group: pd.DataFrame) -> float:
    v = finished(group)[SELECT].dropna() if SELECT in group else pd.Series(dtype=float)
    return float(v.mean()) if len(v) else -math.inf


def resolve_rows(cells: pd.DataFrame, rows: list[str], others: str, fixed=()) -> tuple[list[str], pd.DataFrame, dict]:
    """The row keys and the cells behind them, after the `others` rule for axes that vary but are not rows.

    Returns (keys, cells, chosen) where chosen maps a row key to the setting text "best" picked.
    """
    rest = [a for a in varying(cells) if a not in rows and a != SEED and a not in fixed]
    if others == "split" or not rest:
        return list(rows) + rest, cells, {}
    kept, chosen = [], {}
    for key, group in groups(cells, list(rows)):
        settings = groups(group, rest)
        best_key, best = max(settings, key=lambda s: _mean_select(s[1]))
        if _mean_select(best) == -math.inf:  # nothing finished: keep every cell so the statuses all show
            kept.append(group)
            chosen[key] = "none finished"
        else:
            kept.append(best)
            chosen[key] = ", ".join(f"{a}={axis_text(v)}" for a, v in zip(rest, best_key))
    out = pd.concat(kept) if kept else cells.iloc[:0]
    out.attrs = dict(cells.attrs)
    return list(rows), out, chosen


def status_counts(cells: pd.DataFrame) -> dict[str, int]:
    counts = cells["status"].value_counts()
    return {s: int(counts.get(s, 0)) for s in STATUSES}


def cells_text(counts: dict[str, int]) -> str:
    """Finished of planned, and what became of the rest: "3/3", or "2/3 (1 failed)"."""
    total = sum(counts.values())
    rest = [f"{n} {s.lower()}" for s, n in counts.items() if s != "FINISHED" and n]
    return f"{counts['FINISHED']}/{total}" + (f" ({', '.join(rest)})" if rest else "")


def status_text(counts: dict[str, int]) -> str:
    """What a row without any value shows instead: "failed (3/3)", "missing (1/2), running (1/2)"."""
    total = sum(counts.values())
    if not total:
        return "no cells"
    return ", ".join(f"{s.lower()} ({n}/{total})" for s, n in counts.items() if s != "FINISHED" and n) or NA


def best_cells(cells: pd.DataFrame, keys: list[str]) -> list[tuple[tuple, pd.Series | None, pd.DataFrame]]:
    """Per group of `keys`: the finished cell with the highest dev macro F1 (None when none finished)."""
    out = []
    for key, group in groups(cells, keys):
        fin = finished(group)
        if SELECT in fin and fin[SELECT].notna().any():
            out.append((key, fin.iloc[int(np.nanargmax(fin[SELECT].to_numpy(float)))], group))  # first of ties
        elif len(fin):
            out.append((key, fin.iloc[0], group))
        else:
            out.append((key, None, group))
    return out
