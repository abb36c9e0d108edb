"""Significance: a paired bootstrap over test sentences on macro F1, and Holm's correction.

Entity-level P/R/F1 depend only on the summed (correct, found, phrases) counts, and an entity never
spans two sentences, so each sentence is scored once with `ablate.metrics.score` and a bootstrap
sample is a weighted sum of those counts: exact, and fast enough for thousands of samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ablate.errors import UserError
from ablate.metrics import macro, score
from ablate.report.config import TableSpec
from ablate.report.tables import (Table, apply_where, axis_text, best_cells, check_axes, groups, resolve_rows,
                                  status_counts, status_text)

Pairs = Sequence[tuple[Sequence[str], Sequence[str]]]  # per sentence: (gold tags, predicted tags)
TEST_NAME = "paired bootstrap over test sentences (resampled per genre), two-sided, Holm-corrected"


@dataclass(frozen=True)
class BootstrapResult:
    """delta = macro F1 of b minus macro F1 of a on the full set; p two-sided; low/high a 95% interval."""

    a: float
    b: float
    delta: float
    p_value: float
    low: float
    high: float
    samples: int
    sentences: int


def sentence_counts(pairs: Pairs) -> np.ndarray:
    """(sentences, 3) array of correct, found and gold entities per sentence, as conlleval counts them."""
    out = np.zeros((len(pairs), 3), dtype=np.float64)
    for i, (gold, pred) in enumerate(pairs):
        s = score([list(gold)], [list(pred)])
        out[i] = (s.correct, s.found, s.phrases)
    return out


def _f1(counts: np.ndarray) -> np.ndarray:
    # 2PR/(P+R) = 2 correct / (found + phrases); 0 where nothing was found or expected, as metrics.score does.
    correct, found, phrases = counts[..., 0], counts[..., 1], counts[..., 2]
    denom = found + phrases
    return np.divide(2 * correct, denom, out=np.zeros_like(correct), where=denom > 0)


def _check_paired(a: Mapping[str, Pairs], b: Mapping[str, Pairs]) -> None:
    if sorted(a) != sorted(b):
        raise ValueError(f"the two arms were scored on different genres: {sorted(a)} vs {sorted(b)}")
    for g in a:
        if len(a[g]) != len(b[g]) or any(list(x[0]) != list(y[0]) for x, y in zip(a[g], b[g])):
            raise ValueError(f"genre {g}: the two arms' predictions are not over the same sentences")


def paired_bootstrap(a: Mapping[str, Pairs], b: Mapping[str, Pairs], samples: int = 1000,
                     seed: int | Sequence[int] = 0) -> BootstrapResult:
    """Paired bootstrap of macro F1 (mean over genres) of arm b minus arm a.

    Sentences are resampled with replacement within each genre (the same indices for both arms);
    p = (1 + #{|d_b - d| >= |d|}) / (1 + samples): the shifted-null two-sided test, so identical
    arms give p = 1 and a difference no resample comes near gives p = 1 / (1 + samples).
    """
    _check_paired(a, b)
    rng = np.random.default_rng(seed)
    genres = sorted(a)
    f1a, f1b, boot = [], [], np.zeros((samples, len(genres)))
    for j, g in enumerate(genres):
        ca, cb = sentence_counts(a[g]), sentence_counts(b[g])
        n = len(ca)
        f1a.append(float(_f1(ca.sum(0))))
        f1b.append(float(_f1(cb.sum(0))))
        if n == 0:
            continue
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=samples).astype(np.float64)  # (samples, n)
        boot[:, j] = _f1(weights @ cb) - _f1(weights @ ca)
    a_f1, b_f1 = (float(np.mean(f1a)), float(np.mean(f1b))) if genres else (0.0, 0.0)
    delta = b_f1 - a_f1
    dist = boot.mean(axis=1) if genres else np.zeros(samples)
    # A tiny tolerance so that float noise in equal differences still counts as "as extreme".
    extreme = int(np.sum(np.abs(dist - delta) >= abs(delta) - 1e-12))
    low, high = np.percentile(dist, [2.5, 97.5])
    return BootstrapResult(a_f1, b_f1, delta, (1 + extreme) / (1 + samples), float(low), float(high), samples,
                           sum(len(a[g]) for g in genres))


def macro_f1(pairs_by_genre: Mapping[str, Pairs]) -> float:
    """Macro F1 over genres with `ablate.metrics` directly (the bootstrap's observed value must equal it)."""
    scores = {g: score([list(x[0]) for x in p], [list(x[1]) for x in p]) for g, p in pairs_by_genre.items()}
    return macro(scores).f1


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order; NaN entries stay NaN and do not count."""
    idx = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    m = len(idx)
    out = [math.nan] * len(p_values)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))  # monotone step-down
        out[i] = running
    return out


# -- a table's comparisons ----------------------------------------------------------------------------------

Predictions = Callable[[str, str], Mapping[str, Pairs]]  # (mlflow_run_id, split) -> genre -> sentences


def _load(predictions: Predictions, cell, split: str) -> Mapping[str, Pairs] | None:
    run = cell.get("mlflow_run_id")
    if not isinstance(run, str) or not run:
        return None
    try:
        got = predictions(run, split)
    except (LookupError, OSError):  # the tracking layer's "no such artifact"
        return None
    return got or None


def _p_text(p: float) -> str:
    return "–" if math.isnan(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def compare_table(cells: pd.DataFrame, spec: TableSpec, predictions: Predictions, samples: int = 1000,
                  seed: int = 0) -> Table:
    """The table's `compare:` pairs: rows that differ only in that axis, paired bootstrap + Holm across them.

    Each arm is its best finished cell by dev macro F1 (one seed). Test predictions are used; dev only
    where an arm has no test predictions (the Split column says which).
    """
    axis = spec.compare
    what = f"table {spec.name}: compare"
    check_axes(cells, [axis], what)
    sub = apply_where(cells, spec.where, f"table {spec.name}: where")
    values = [key[0] for key, _ in groups(sub, [axis])]
    if len(values) != 2:
        raise UserError(f"{what}: {axis} has {len(values)} values here ({', '.join(map(axis_text, values))}); "
                        "a comparison needs exactly two")
    first, second = values
    rows = list(spec.rows) + ([axis] if axis not in spec.rows else [])
    keys, sub, _ = resolve_rows(sub, rows, spec.others)
    pair_keys = [k for k in keys if k != axis]
    out: dict[str, list] = {k: [] for k in pair_keys}
    la, lb = axis_text(first), axis_text(second)
    cols = [f"{la} cell", f"{lb} cell", f"{la} macro F1 (%)", f"{lb} macro F1 (%)", f"Δ {lb} − {la} (points)",
            "95% CI", "Split", "p"]
    out.update({c: [] for c in cols})
    ps = []
    for i, (key, group) in enumerate(groups(sub, pair_keys)):
        for k, v in zip(pair_keys, key):
            out[k].append(axis_text(v))
        arms = {value_key[0]: g for value_key, g in groups(group, [axis])}
        picked = [best_cells(arms[v], [])[0] if v in arms else ((), None, group.iloc[:0]) for v in values]
        names = [r["name"] if r is not None else status_text(status_counts(g)) for _, r, g in picked]
        res, used = None, "–"
        if all(r is not None for _, r, _ in picked):
            for split in ("test", "dev"):
                pa, pb = (_load(predictions, r, split) for _, r, _ in picked)
                if pa is not None and pb is not None:
                    res, used = paired_bootstrap(pa, pb, samples, seed=[seed, i]), split
                    break
        if res is None:
            cells_note = "no predictions" if all(r is not None for _, r, _ in picked) else "–"
            row = [*names, cells_note, cells_note, "–", "–", used]
            ps.append(math.nan)
        else:
            row = [*names, f"{100 * res.a:.2f}", f"{100 * res.b:.2f}", f"{100 * res.delta:+.2f}",
                   f"[{100 * res.low:+.2f}, {100 * res.high:+.2f}]", used]
            ps.append(res.p_value)
        for c, v in zip(cols[:-1], row):
            out[c].append(v)
    out["p"] = [_p_text(p) for p in ps]
    out["p (Holm)"] = [_p_text(p) for p in holm(ps)]
    caption = (f"{axis}: {lb} against {la}, each arm its best finished cell by dev macro F1. Test: {TEST_NAME}, "
               f"{samples} samples, seed {seed}; Δ is the difference in macro F1 over genres.")
    display = pd.DataFrame(out)
    numbers = display.assign(p=ps, **{"p (Holm)": holm(ps)})
    return Table(f"{spec.name}_significance", f"{spec.title or spec.name}: {la} vs {lb}", caption, display, numbers)
