"""Tables: cells (one DataFrame row per planned cell) -> rows of axis values, mean ± std (n) per metric.

Cells that differ only in seed form one row. Axes that vary but are not rows are, by default, shown
as extra row axes (TableSpec.others="split"), so no number silently averages over an ablated axis;
others="best" keeps each row's best setting by mean dev/macro_f1 and names it. Failed, killed,
running and missing cells are counted in a "Cells" column and never read as a value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ablate.errors import UserError
from ablate.report.config import SELECT, SPLIT_FREE, TableSpec, metric_key

STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING", "MISSING")
SEED = "seed"
RESERVED = ("run_id", "name", "status", "error", "mlflow_run_id", "history")
TYPES = ("BODY", "SYMP", "INST", "EXAM", "CHEM", "DISE", "DRUG", "SUPP", "TREAT", "TIME")
NA = "n/a"  # a finished cell that did not log this metric

# The paper's numbers (Lee et al., ROCLING 2023; DESIGN.md), keyed by metric then (backbone, finetune|None).
PAPER: dict[str, dict[tuple[str, str | None], float]] = {
    "f1": {  # Table 3: dev F1 per backbone
        ("albert", None): 0.699, ("electra", None): 0.719, ("bert", None): 0.738,
        ("roberta", None): 0.740, ("deberta", None): 0.745,
    },
    "params/trainable": {  # Table 4
        ("bert", "full"): 102_299_178, ("bert", "lora"): 622_122,
        ("roberta", "full"): 326_088_746, ("roberta", "lora"): 1_615_914,
        ("deberta", "full"): 714_992_682, ("deberta", "lora"): 2_423_850,
    },
    "epoch_seconds": {  # Table 4: minutes per epoch, stored in seconds like our metric
        ("bert", "full"): 30 * 60, ("bert", "lora"): 25 * 60,
        ("roberta", "full"): 67 * 60, ("roberta", "lora"): 53 * 60,
        ("deberta", "full"): 105 * 60, ("deberta", "lora"): 82 * 60,
    },
}
_PAPER_OF = {"f1": "f1", "macro_f1": "f1", "params/trainable": "params/trainable", "epoch_seconds": "epoch_seconds"}


@dataclass(frozen=True)
class Column:
    """How one metric shows: header with its unit, scale, decimals, and which way is best (None: no bold)."""

    key: str
    header: str
    scale: float = 1.0
    decimals: int | None = None  # None: from the column's magnitude
    best: Literal["max", "min"] | None = None
    thousands: bool = False
    exact: bool = False          # params: one value when all seeds agree, no ± 0 (n)


@dataclass(frozen=True)
class Table:
    """A built table: `display` holds the markdown strings, `numbers` the raw values for the CSV."""

    name: str
    title: str
    caption: str
    display: pd.DataFrame
    numbers: pd.DataFrame

    def markdown(self) -> str:
        head = f"### {self.title}\n\n" if self.title else ""
        return head + to_markdown(self.display) + (f"\n\n{self.caption}" if self.caption else "") + "\n"


_SCORE_NAMES = {"precision": "Precision", "recall": "Recall", "f1": "F1", "macro_f1": "Macro F1",
                "macro_precision": "Macro precision", "macro_recall": "Macro recall"}
_FIXED = {
    "epoch_seconds": Column("epoch_seconds", "min/epoch", scale=1 / 60, best="min"),
    "train_tokens_per_second": Column("train_tokens_per_second", "Tokens/s", decimals=0, best="max", thousands=True),
    "peak_memory_mb": Column("peak_memory_mb", "Peak memory (MB)", decimals=0, best="min", thousands=True),
    "params/trainable": Column("params/trainable", "Trainable params", decimals=0, thousands=True, exact=True),
    "params/total": Column("params/total", "Total params", decimals=0, thousands=True, exact=True),
    "best_epoch": Column("best_epoch", "Best epoch", decimals=1),
    "train/loss": Column("train/loss", "Train loss", decimals=4, best="min"),
}


def column(name: str, split: str) -> Column:
    """The display of one column: `f1` -> "F1 (%)" x100 with 2 decimals, best = max; times best = min."""
    key = metric_key(name, split)
    if key in _FIXED:
        return _FIXED[key]
    key_split, rest = key.split("/", 1)
    parts = rest.split("/")
    if len(parts) == 1:
        label = _SCORE_NAMES[parts[0]]
    elif parts[1] == "type":
        label = f"{parts[2]} {_SCORE_NAMES[parts[0]]}"
    else:
        label = f"{parts[1].upper()} {_SCORE_NAMES[parts[0]]}"
    if key_split != split:  # a dev column in a test table says so
        label = f"{key_split.capitalize()} {label}"
    return Column(key, f"{label} (%)", scale=100.0, decimals=2, best="max")


# -- cells --------------------------------------------------------------------------------------------------

def axes_of(cells: pd.DataFrame) -> list[str]:
    """The axis columns in study order: attrs["axes"], else every column that is not a metric or bookkeeping."""
    if "axes" in cells.attrs:
        return list(cells.attrs["axes"])
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

    def order(item):
        key = item[0]
        rank = []
        for axis, value in zip(keys, key):
            if pd.api.types.is_numeric_dtype(cells[axis]):
                rank.append(math.inf if pd.isna(value) else float(value))
            else:
                rank.append(_first_seen(cells[axis]).get(str(value), math.inf))
        return rank

    return sorted(out, key=order)


def _first_seen(col: pd.Series) -> dict[str, int]:
    return {v: i for i, v in reversed(list(enumerate(col.astype(str))))}


def finished(cells: pd.DataFrame) -> pd.DataFrame:
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
    """"3/3", or "2/3 (1 failed)": finished of planned, and what became of the rest."""
    total = sum(counts.values())
    rest = [f"{n} {s.lower()}" for s, n in counts.items() if s != "FINISHED" and n]
    return f"{counts['FINISHED']}/{total}" + (f" ({', '.join(rest)})" if rest else "")


def status_text(counts: dict[str, int]) -> str:
    """What a row without any value shows instead: "failed (3/3)", "missing (1/2), running (1/2)"."""
    total = sum(counts.values())
    if not total:
        return "no cells"
    return ", ".join(f"{s.lower()} ({n}/{total})" for s, n in counts.items() if s != "FINISHED" and n) or NA


# -- numbers and text ---------------------------------------------------------------------------------------

def _values(group: pd.DataFrame, key: str) -> np.ndarray:
    if key not in group:
        return np.empty(0)
    return finished(group)[key].dropna().to_numpy(dtype=float)


def _decimals(col: Column, means: list[float]) -> int:
    if col.decimals is not None:
        return col.decimals
    top = max((abs(m * col.scale) for m in means if not math.isnan(m)), default=0.0)
    return 0 if top >= 100 else 1 if top >= 10 else 2 if top >= 1 else 3


def _num(value: float, col: Column, decimals: int) -> str:
    return f"{value * col.scale:{',' if col.thousands else ''}.{decimals}f}"


def value_text(v: np.ndarray, col: Column, decimals: int, show_n: bool = True) -> str:
    """mean ± std (n), with the sample std (ddof=1); n = 1 shows "mean (1)"; exact columns one value."""
    mean = float(v.mean())
    if (col.exact and np.all(v == v[0])) or (len(v) == 1 and not show_n):
        return _num(mean, col, decimals)
    if len(v) == 1:
        return f"{_num(mean, col, decimals)} (1)"
    return f"{_num(mean, col, decimals)} ± {_num(float(v.std(ddof=1)), col, decimals)} ({len(v)})"


def metric_block(group_list: list[pd.DataFrame], col: Column, show_n: bool = True
                 ) -> tuple[list[str], list[float], list[float], list[int]]:
    """Texts (best in bold), means, stds and n of one column over the row groups."""
    vals = [_values(g, col.key) for g in group_list]
    means = [float(v.mean()) if len(v) else math.nan for v in vals]
    stds = [float(v.std(ddof=1)) if len(v) > 1 else math.nan for v in vals]
    d = _decimals(col, means)
    texts = []
    for v, g in zip(vals, group_list):
        if len(v):
            texts.append(value_text(v, col, d, show_n))
        else:
            counts = status_counts(g)
            texts.append(NA if counts["FINISHED"] else status_text(counts))
    shown = [round(m * col.scale, d) if not math.isnan(m) else math.nan for m in means]
    present = [s for s in shown if not math.isnan(s)]
    if col.best and len(present) >= 2 and len(set(present)) > 1:
        target = max(present) if col.best == "max" else min(present)
        texts = [f"**{t}**" if s == target else t for t, s in zip(texts, shown)]
    return texts, means, stds, [len(v) for v in vals]


def to_markdown(df: pd.DataFrame) -> str:
    """A pipe table: text columns left-aligned, the rest right-aligned."""
    def esc(x) -> str:
        return str(x).replace("|", "\\|")

    cols = [esc(c) for c in df.columns]
    right = [not _is_left(df[c]) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |",
             "|" + "|".join("---:" if r else ":---" for r in right) + "|"]
    lines += ["| " + " | ".join(esc(x) for x in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _is_left(col: pd.Series) -> bool:
    return col.name in ("Cells", "Setting", "Cell") or not any(re.match(r"^\**[-\d]", str(x)) for x in col)


def _paper_value(metric: str, key: dict) -> float:
    table = PAPER.get(_PAPER_OF.get(metric, ""), {})
    backbone = str(key.get("backbone", "")).lower()
    finetune = key.get("finetune") if "finetune" in key else None
    return table.get((backbone, finetune), math.nan)


# -- tables -------------------------------------------------------------------------------------------------

def build_table(cells: pd.DataFrame, spec: TableSpec) -> Table:
    """One TableSpec -> Table: rows, a Cells column, mean ± std (n) per column, bold best."""
    check_axes(cells, spec.rows, f"table {spec.name}: rows")
    sub = apply_where(cells, spec.where, f"table {spec.name}: where")
    keys, sub, chosen = resolve_rows(sub, spec.rows, spec.others)
    rows = groups(sub, keys)
    disp: dict[str, list] = {k: [axis_text(key[i]) for key, _ in rows] for i, k in enumerate(keys)}
    nums: dict[str, list] = {k: [key[i] for key, _ in rows] for i, k in enumerate(keys)}
    if chosen:
        disp["Setting"] = [chosen.get(key, "") for key, _ in rows]
        nums["setting"] = disp["Setting"]
    counts = [status_counts(g) for _, g in rows]
    disp["Cells"] = [cells_text(c) for c in counts]
    for s in STATUSES:
        nums[s.lower()] = [c[s] for c in counts]
    group_list = [g for _, g in rows]
    paper_cols = []
    for name in spec.columns:
        col = column(name, spec.split)
        texts, means, stds, ns = metric_block(group_list, col)
        disp[col.header] = texts
        nums[f"{col.key} mean"], nums[f"{col.key} std"], nums[f"{col.key} n"] = means, stds, ns
        base = col.key.split("/", 1)[1] if col.key not in SPLIT_FREE else col.key
        if spec.paper and "backbone" in keys and base in _PAPER_OF:
            paper_cols.append((col, base))
    for col, base in paper_cols:
        values = [_paper_value(base, dict(zip(keys, key))) for key, _ in rows]
        if all(math.isnan(v) for v in values):
            continue
        d = _decimals(col, values)
        header = "Paper dev F1 (%)" if _PAPER_OF[base] == "f1" else f"Paper {col.header}"
        disp[header] = ["–" if math.isnan(v) else _num(v, col, d) for v in values]
        nums[f"paper {col.key}"] = values
    caption = _caption(cells, sub, spec, keys, chosen)
    return Table(spec.name, spec.title or spec.name, caption, pd.DataFrame(disp), pd.DataFrame(nums))


def _caption(cells: pd.DataFrame, sub: pd.DataFrame, spec: TableSpec, keys: list[str], chosen: dict) -> str:
    bits = [f"Split: {spec.split}."]
    if spec.where:
        bits.append("Only cells with " + ", ".join(f"{a} = {axis_text(v)}" for a, v in spec.where.items()) + ".")
    extra = [k for k in keys if k not in spec.rows]
    if extra:
        bits.append(f"{', '.join(extra)} also vary, so they are shown as row axes.")
    if chosen:
        bits.append("Each row keeps the setting of the other axes with the best mean dev macro F1 (Setting).")
    if SEED in axes_of(cells) and sub[SEED].nunique() > 1:
        bits.append("Values are mean ± sample std (n finished seeds).")
    bits.append("Best value of each column in bold (highest score or tokens/s, least time or memory; "
                "parameter counts are not ranked).")
    return " ".join(bits)


def default_tables(cells: pd.DataFrame) -> list[TableSpec]:
    """No `report:` block: one table per axis that varies (rows = that axis, best setting of the others)."""
    split = "test" if "test/macro_f1" in cells and cells["test/macro_f1"].notna().any() else "dev"
    cols = ["macro_precision", "macro_recall", "macro_f1"]
    out = []
    for axis in varying(cells):
        if axis == SEED:
            continue
        two = cells[axis].nunique(dropna=False) == 2
        out.append(TableSpec(name=f"by_{_slug(axis)}", title=f"By {axis}", rows=[axis], columns=cols,
                             split=split, others="best", compare=axis if two else None))
    if not out:
        axes = [a for a in axes_of(cells) if a != SEED] or axes_of(cells)
        if axes:
            out.append(TableSpec(name="results", title="Results", rows=[axes[0]], columns=cols, split=split))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "axis"


def best_cells(cells: pd.DataFrame, keys: list[str]) -> list[tuple[tuple, pd.Series | None, pd.DataFrame]]:
    """Per group of `keys`: the finished cell with the highest dev macro F1 (None when none finished)."""
    out = []
    for key, group in groups(cells, keys):
        fin = finished(group)
        if SELECT in fin and fin[SELECT].notna().any():
            out.append((key, fin.loc[fin[SELECT].idxmax()], group))
        elif len(fin):
            out.append((key, fin.iloc[0], group))
        else:
            out.append((key, None, group))
    return out


def _detail_table(cells: pd.DataFrame, arms: list[str], name: str, title: str, split_keys) -> Table | None:
    keys = [a for a in arms if a in axes_of(cells) and a in varying(cells)]
    picked = best_cells(cells, keys)
    rows = [r for _, r, _ in picked if r is not None]
    split = "test" if any(pd.notna(r.get("test/macro_f1", math.nan)) for r in rows) else "dev"
    metrics = split_keys(cells, split, rows)
    if not metrics:
        return None
    disp: dict[str, list] = {k: [axis_text(key[i]) for key, _, _ in picked] for i, k in enumerate(keys)}
    if not keys:
        disp["Arm"] = ["all cells"]
    disp["Cell"] = [r["name"] if r is not None else "–" for _, r, _ in picked]
    nums: dict[str, list] = {k: [key[i] for key, _, _ in picked] for i, k in enumerate(keys)}
    nums["run_id"] = [r["run_id"] if r is not None else None for _, r, _ in picked]
    for key, header in metrics:
        col = Column(key, header, scale=100.0, decimals=2, best="max")
        one = [pd.DataFrame([r]) if r is not None else g for _, r, g in picked]
        disp[header], nums[key], _, _ = metric_block(one, col, show_n=False)
    caption = (f"Split: {split}. One cell per arm ({', '.join(keys) or 'all cells'}): the finished cell with the "
               "best dev macro F1 (a single seed, so no ± std). Best of each column in bold.")
    return Table(name, title, caption, pd.DataFrame(disp), pd.DataFrame(nums))


def _genre_keys(cells: pd.DataFrame, split: str, rows) -> list[tuple[str, str]]:
    genres = sorted({c.split("/")[2] for c in cells.columns
                     if re.fullmatch(rf"{split}/f1/[a-z0-9_]+", c) and cells[c].notna().any()})
    if not genres:
        return []
    return [(f"{split}/f1/{g}", f"{g.upper()} F1 (%)") for g in genres] + [
        (f"{split}/macro_precision", "Macro P (%)"), (f"{split}/macro_recall", "Macro R (%)"),
        (f"{split}/macro_f1", "Macro F1 (%)")]


def _type_keys(cells: pd.DataFrame, split: str, rows) -> list[tuple[str, str]]:
    found = {c.rsplit("/", 1)[1] for c in cells.columns
             if c.startswith(f"{split}/f1/type/") and cells[c].notna().any()}
    ordered = [t for t in TYPES if t in found] + sorted(found - set(TYPES))
    return [(f"{split}/f1/type/{t}", f"{t} F1 (%)") for t in ordered]


def genre_table(cells: pd.DataFrame, arms: list[str]) -> Table | None:
    """F1 per genre and the macro P/R/F1 of the best cell of each arm (None when no genre was logged)."""
    return _detail_table(cells, arms, "per_genre", "Per genre (best cell of each arm)", _genre_keys)


def type_table(cells: pd.DataFrame, arms: list[str]) -> Table | None:
    """F1 per entity type of the best cell of each arm (None when no type was logged)."""
    return _detail_table(cells, arms, "per_type", "Per entity type (best cell of each arm)", _type_keys)


def write_table(table: Table, out_dir: Path) -> tuple[Path, Path]:
    """tables/<name>.md (title, table, caption) and tables/<name>.csv (raw values, vocabulary keys)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv = out_dir / f"{table.name}.md", out_dir / f"{table.name}.csv"
    md.write_text(table.markdown(), encoding="utf-8")
    table.numbers.to_csv(csv, index=False)
    return md, csv
