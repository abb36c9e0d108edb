"""Figures: a metric against a numeric axis (lr, epochs) or the per-epoch history, one line per arm.

Lines are the mean over seeds with a min-max (or ± std) band. Colours are keyed by the arm label
(the values of FigureSpec.lines), so one arm has one colour in every figure of a report; other axes
that vary get dash styles. matplotlib's object API with the Agg/SVG canvases: no pyplot state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.errors import UserError
from ablate.spec.report import SPLIT_FREE, FigureSpec, metric_key
from ablate.report.cells import apply_where, axes_of, axis_text, finished, groups, resolve_rows, varying

HISTORY = "epoch"  # FigureSpec.x naming the per-epoch history rather than an axis
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94")
_DASHES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_X_LABELS = {"lr": "Learning rate", "epochs": "Epochs (training length)", HISTORY: "Epoch"}


@dataclass(frozen=True)
class Curve:
    label: str         # arm label (values of FigureSpec.lines): keys the colour
    variant: str       # values of the other varying axes ("" when none): keys the dash style
    x: np.ndarray
    mean: np.ndarray   # already scaled for display (x100 for scores)
    low: np.ndarray
    high: np.ndarray
    n: np.ndarray      # finished cells behind each point


@dataclass(frozen=True)
class FigureData:
    name: str
    title: str
    caption: str
    xlabel: str
    ylabel: str
    log_x: bool
    legend_title: str
    curves: list[Curve]


def _ylabel(key: str) -> tuple[str, float]:
    if key in SPLIT_FREE:
        return {"train/loss": "Train loss", "epoch_seconds": "Seconds per epoch"}.get(key, key), 1.0
    split, rest = key.split("/", 1)
    words = rest.replace("macro_", "macro ").replace("/type/", " ").replace("/", " ").split()
    words = [w.upper() if len(w) <= 2 and w != "f1" else w for w in words]
    return f"{split.capitalize()} {' '.join(words).replace('f1', 'F1')} (%)", 100.0


def _stats(matrix: np.ndarray, band: str) -> tuple[np.ndarray, ...]:
    """Column-wise mean, band low/high and n over the non-NaN rows of (cells, points)."""
    n = np.sum(~np.isnan(matrix), axis=0)
    ok = n > 0
    mean, low, high = (np.full(matrix.shape[1], np.nan) for _ in range(3))
    if ok.any():
        sub = matrix[:, ok]
        mean[ok] = np.nanmean(sub, axis=0)
        if band == "std":
            std = np.where(n[ok] > 1, np.nanstd(sub, axis=0, ddof=min(1, matrix.shape[0] - 1)), 0.0)
            low[ok], high[ok] = mean[ok] - std, mean[ok] + std
        else:
            low[ok], high[ok] = np.nanmin(sub, axis=0), np.nanmax(sub, axis=0)
    return mean, low, high, n


def _history_matrix(cells: pd.DataFrame, key: str) -> np.ndarray:
    runs = [h.get(key, []) if isinstance(h, dict) else [] for h in cells.get("history", pd.Series(dtype=object))]
    width = max((len(r) for r in runs), default=0)
    out = np.full((len(runs), width), np.nan)
    for i, r in enumerate(runs):
        out[i, : len(r)] = np.asarray(r, dtype=float)
    return out


def figure_data(cells: pd.DataFrame, spec: FigureSpec) -> FigureData:
    """The curves of one figure, and a caption that says what the lines and bands are."""
    axes = axes_of(cells)
    if spec.x != HISTORY and spec.x not in axes:
        raise UserError(f"figure {spec.name}: x: {spec.x!r} is neither an axis ({', '.join(axes)}) nor "
                        f"{HISTORY!r} (the per-epoch history)")
    sub = apply_where(cells, spec.where, f"figure {spec.name}: where")
    lines = [a for a in spec.lines if a in axes and a != spec.x]
    fixed = () if spec.x == HISTORY else (spec.x,)
    keys, sub, chosen = resolve_rows(sub, lines, spec.others, fixed=fixed)
    key = metric_key(spec.metric, spec.split)
    ylabel, scale = _ylabel(key)
    xlabel = _X_LABELS.get(spec.x, spec.x)
    curves, drawn, blank = [], 0, 0
    for gkey, group in groups(sub, keys):
        label = " / ".join(axis_text(v) for v in gkey[: len(lines)]) or "all cells"
        variant = ", ".join(f"{a}={axis_text(v)}" for a, v in zip(keys[len(lines):], gkey[len(lines):]))
        fin = finished(group)
        if spec.x == HISTORY:
            matrix = _history_matrix(fin, key)
            x = np.arange(1, matrix.shape[1] + 1, dtype=float)
            has = ~np.all(np.isnan(matrix), axis=1) if matrix.size else np.zeros(len(fin), bool)
            drawn, blank = drawn + int(has.sum()), blank + len(group) - int(has.sum())
        else:
            xs = sorted(v for v in group[spec.x].dropna().unique())
            values = fin[key] if key in fin else pd.Series(np.nan, index=fin.index)
            matrix = np.full((max(len(fin), 1), len(xs)), np.nan)
            for j, xv in enumerate(xs):
                col = values[fin[spec.x] == xv].to_numpy(float)
                matrix[: len(col), j] = col
            x = np.asarray(xs, dtype=float)
            got = int(values.notna().sum())
            drawn, blank = drawn + got, blank + len(group) - got
        mean, low, high, n = _stats(matrix, spec.band)
        if np.any(n > 0):
            curves.append(Curve(label, variant, x, mean * scale, low * scale, high * scale, n))
    log_x = spec.log_x if spec.log_x is not None else spec.x == "lr"
    legend_title = " / ".join(lines) or ""
    return FigureData(spec.name, spec.title or f"{ylabel} against {xlabel.split(' (')[0].lower()}",
                      _caption(spec, lines, keys, chosen, ylabel, xlabel, drawn, blank),
                      xlabel, ylabel, log_x, legend_title, curves)


def _caption(spec, lines, keys, chosen, ylabel, xlabel, drawn, blank) -> str:
    band = "min-max over seeds" if spec.band == "minmax" else "± one sample std over seeds"
    bits = [f"{ylabel} against {xlabel.lower()}" + (" (log scale)" if spec.x == "lr" and spec.log_x is not False
                                                    else "") + "."]
    bits.append(f"One line per {' × '.join(lines)} (one colour per arm in every figure)." if lines
                else "One line for all cells.")
    extra = keys[len(lines):]
    if extra:
        bits.append(f"{', '.join(extra)} also {'vary' if len(extra) > 1 else 'varies'}: one dash style per value.")
    if chosen:
        bits.append("Each line keeps the setting of the other axes with the best mean dev macro F1: "
                    + "; ".join(f"{' / '.join(map(axis_text, k))}: {v}" for k, v in chosen.items()) + ".")
    bits.append(f"Line: mean over seeds; band: {band}. {drawn} finished cells drawn"
                + (f"; {blank} cells without a value (failed, killed, running or missing) are not drawn." if blank
                   else "."))
    return " ".join(bits)


def default_figures(cells: pd.DataFrame) -> list[FigureSpec]:
    """No figures declared: F1 against lr if lr varies, against an `epochs` axis if it varies, and
    against the per-epoch history (each line its best setting) whenever a history was logged."""
    axes, vary = axes_of(cells), varying(cells)
    lines = [a for a in ("backbone", "finetune") if a in axes]
    out = []
    if "lr" in vary:
        out.append(FigureSpec(name="f1_vs_lr", x="lr", lines=lines))
    if "epochs" in vary:
        out.append(FigureSpec(name="f1_vs_epochs", x="epochs", lines=lines))
    if "history" in cells and any(isinstance(h, dict) and h for h in cells["history"]):
        out.append(FigureSpec(name="f1_vs_epoch", x=HISTORY, lines=lines, others="best"))
    return out


def colour_map(labels) -> dict[str, str]:
    """A stable colour per arm label: sorted labels take the palette in order."""
    return {label: _PALETTE[i % len(_PALETTE)] for i, label in enumerate(sorted(set(labels)))}


def draw(data: FigureData, colours: dict[str, str], out_dir: Path) -> tuple[Path, Path]:
    """figures/<name>.png and .svg."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    variants = sorted({c.variant for c in data.curves})
    with rc_context({"svg.hashsalt": "ablate", "font.size": 10}):
        fig = Figure(figsize=(8, 4.8), dpi=120, layout="constrained")
        ax = fig.add_subplot()
        for c in data.curves:
            v = variants.index(c.variant)
            colour = colours.get(c.label, "#333333")
            ax.plot(c.x, c.mean, color=colour, linestyle=_DASHES[v % len(_DASHES)],
                    marker=_MARKERS[v % len(_MARKERS)], markersize=4, linewidth=1.8,
                    label=c.label + (f" ({c.variant})" if c.variant else ""))
            if np.any(c.n > 1):
                ok = ~np.isnan(c.mean)
                ax.fill_between(c.x[ok], c.low[ok], c.high[ok], color=colour, linewidth=0,
                                alpha=0.15 if len(data.curves) <= 6 else 0.07)
        if data.log_x:
            ax.set_xscale("log")
        xs = sorted({float(x) for c in data.curves for x in c.x})
        if 0 < len(xs) <= 12 and data.xlabel != _X_LABELS[HISTORY]:  # label the values that were run
            ax.set_xticks(xs, [axis_text(x) for x in xs])
            ax.minorticks_off()
        elif data.xlabel == _X_LABELS[HISTORY]:
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel(data.xlabel)
        ax.set_ylabel(data.ylabel)
        ax.set_title(data.title)
        ax.grid(alpha=0.3)
        if data.curves:
            many = len(data.curves) > 8
            ax.legend(title=data.legend_title or None, fontsize=8, title_fontsize=8,
                      **({"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} if many else {"loc": "best"}))
        else:
            ax.text(0.5, 0.5, "no finished cell has a value to draw", ha="center", va="center",
                    transform=ax.transAxes)
        png, svg = out_dir / f"{data.name}.png", out_dir / f"{data.name}.svg"
        fig.savefig(png, metadata={"Software": None})
        fig.savefig(svg, metadata={"Date": None})
    return png, svg
