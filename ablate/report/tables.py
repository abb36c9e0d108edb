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

from ablate.report.cells import (
    NA, SEED, STATUSES, apply_where, axes_of, axis_text, best_cells, cells_text, check_axes, finished, groups,
    resolve_rows, status_counts, status_text, varying,
)
from ablate.spec.report import SPLIT_FREE, TableSpec, metric_key

TYPES = ("BODY", "SYMP", "INST", "EXAM", "CHEM", "DISE", "DRUG", "SUPP", "TREAT", "TIME")

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


# -- numbers and text ---------------------------------------------------------------------------------------

def _decimals(col: Column, means: list[float]) -> int:
    # Enough decimals for the smallest value of the column to keep three significant digits.
    if col.decimals is not None:
        return col.decimals
    least = min((abs(m * col.scale) for m in means if not math.isnan(m) and m != 0), default=1.0)
    return max(0, min(4, 2 - math.floor(math.log10(least))))


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


def metric_block(fins: list[pd.DataFrame], counts: list[dict[str, int]], col: Column, show_n: bool = True
                 ) -> tuple[list[str], list[float], list[float], list[int]]:
    """Texts (best in bold), means, stds and n of one column over the rows' finished cells."""
    vals = [f[col.key].dropna().to_numpy(dtype=float) if col.key in f else np.empty(0) for f in fins]
    means = [float(v.mean()) if len(v) else math.nan for v in vals]
    stds = [float(v.std(ddof=1)) if len(v) > 1 else math.nan for v in vals]
    d = _decimals(col, means)
    texts = []
    for v, c in zip(vals, counts):
        if len(v):
            texts.append(value_text(v, col, d, show_n))
        else:
            texts.append(NA if c["FINISHED"] else status_text(c))
    shown = [round(m * col.scale, d) if not math.isnan(m) else math.nan for m in means]
    present = [s for s in shown if not math.isnan(s)]
    if col.best and len(present) >= 2 and len(set(present)) > 1:
        target = max(present) if col.best == "max" else min(present)
        texts = [f"**{t}**" if s == target else t for t, s in zip(texts, shown)]
    return texts, means, stds, [len(v) for v in vals]


def to_markdown(df: pd.DataFrame, left=()) -> str:
    """A pipe table: text columns (and those named in `left`) left-aligned, numbers right-aligned."""
    def esc(x) -> str:
        return str(x).replace("|", "\\|")

    cols = [esc(c) for c in df.columns]
    right = [c not in left and not _is_left(df[c]) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |",
             "|" + "|".join("---:" if r else ":---" for r in right) + "|"]
    lines += ["| " + " | ".join(esc(x) for x in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


_NUMBERISH = re.compile(r"^\**[-+\[]?[\d.,+-]")
_NO_VALUE = re.compile(r"^(n/a|–|no cells|no predictions|(failed|killed|running|missing) \()")


def _is_left(col: pd.Series) -> bool:
    # Numbers right-aligned; a metric column that also shows "failed (1/3)" or "n/a" stays numeric.
    if col.name in ("Cells", "Setting", "Cell"):
        return True
    return not all(_NUMBERISH.match(str(x)) or _NO_VALUE.match(str(x)) for x in col)


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
    rows = list(spec.rows) + ([spec.compare] if spec.compare and spec.compare not in spec.rows else [])
    keys, sub, chosen = resolve_rows(sub, rows, spec.others)  # both compared arms are always rows
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
    fins = [finished(g) for _, g in rows]
    paper_cols = []
    for name in spec.columns:
        col = column(name, spec.split)
        texts, means, stds, ns = metric_block(fins, counts, col)
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
        two = cells[axis].nunique(dropna=False) == 2 or axis == "head"  # heads: each against linear
        out.append(TableSpec(name=f"by_{_slug(axis)}", title=f"By {axis}", rows=[axis], columns=cols,
                             split=split, others="best", compare=axis if two else None))
    if not out:
        axes = [a for a in axes_of(cells) if a != SEED] or axes_of(cells)
        if axes:
            out.append(TableSpec(name="results", title="Results", rows=[axes[0]], columns=cols, split=split))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "axis"


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
    fins = [pd.DataFrame([r]) if r is not None else g.iloc[:0] for _, r, g in picked]
    counts = [status_counts(g) for _, _, g in picked]
    for key, header in metrics:
        col = Column(key, header, scale=100.0, decimals=2, best="max")
        disp[header], nums[key], _, _ = metric_block(fins, counts, col, show_n=False)
    caption = (f"Split: {split}. One cell per arm ({', '.join(keys) or 'all cells'}): the finished cell with the "
               "best dev macro F1 (a single seed, so no ± std). Best of each column in bold.")
    return Table(name, title, caption, pd.DataFrame(disp), pd.DataFrame(nums))


def _genre_keys(cells: pd.DataFrame, split: str, rows) -> list[tuple[str, str]]:
    genres = sorted({c.split("/")[2] for c in cells.columns
                     if re.fullmatch(rf"{split}/f1/[a-z0-9_]+", c) and cells[c].notna().any()})
    if not genres:
        return []
    macro = [(f"{split}/macro_{m}", f"Macro {m[0].upper() if m != 'f1' else 'F1'} (%)")
             for m in ("precision", "recall", "f1")]
    return [(f"{split}/f1/{g}", f"{g.upper()} F1 (%)") for g in genres] + [
        (k, h) for k, h in macro if k in cells and cells[k].notna().any()]


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
