"""Significance: a paired bootstrap over test sentences on macro F1, and Holm's correction.

Entity-level P/R/F1 depend only on the summed (correct, found, phrases) counts, and an entity never
spans two sentences, so each sentence is counted once (conlleval's chunking, as `ablate.metrics`
does it) and a bootstrap sample is a weighted sum of those counts: exact, and fast enough for
thousands of samples over a full test set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ablate.errors import UserError
from ablate.metrics import macro, score
from ablate.schemes import IOB2, Scheme, detect, parse_declared
from ablate.report.cells import (apply_where, axis_text, best_cells, check_axes, groups, resolve_rows,
                                 status_counts, status_text)
from ablate.spec.report import TableSpec
from ablate.report.tables import Table

Pairs = Sequence[tuple[Sequence[str], Sequence[str]]]  # per sentence: (gold tags, predicted tags)
_CHUNK = 200  # bootstrap samples drawn at a time
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


_LETTER = {"O": 0, "B": 1, "I": 2, "E": 3, "S": 4, ".": 5}  # any other first letter: 6



class NotComparable(UserError):
    """A `compare:` axis without exactly two values among the cells (e.g. a grid narrowed with --set)."""

def scheme_of(gold: Sequence[Sequence[str]]) -> Scheme:
    """The tag scheme of gold sentences (IOB2 for the ROCLING files): what the report chunks in."""
    return detect(gold)[0]


def entities(seqs: Sequence[Sequence[str]], scheme: Scheme | None = None) -> set[tuple[str, int, int]]:
    """`_conll_entities` for IOB2; in another scheme the same joined offsets from `Scheme.chunks` per sentence."""
    if scheme is None or scheme == IOB2:
        return _conll_entities(seqs)
    out, offset = set(), 0
    for s in seqs:
        out |= {(t, offset + a, offset + b) for t, a, b in scheme.chunks(list(s))}
        offset += len(s) + 1
    return out


def _conll_entities(seqs: Sequence[Sequence[str]]) -> set[tuple[str, int, int]]:
    """conlleval's entities (type, first, last) of sentences joined with one "O" after each.

    Exactly seqeval's `get_entities` in its default mode (the chunker `ablate.metrics.score` uses) on
    the same nested input, vectorised with numpy: a study's bootstrap chunks millions of tags, ~20x
    faster this way. tests/report/test_stats.py checks it against seqeval tag for tag.
    """
    flat = [t for s in seqs for t in (*s, "O")]
    flat.append("O")  # seqeval's closing sentinel
    codes, vocab = pd.factorize(pd.Series(flat, dtype=object), sort=False)
    type_names: dict[str, int] = {}
    letters = np.array([_LETTER.get(t[0], 6) for t in vocab], dtype=np.int8)
    types = np.array([type_names.setdefault(t[1:].split("-", maxsplit=1)[-1] or "_", len(type_names))
                      for t in vocab], dtype=np.int64)
    tag, typ = letters[codes], types[codes]
    prev_tag = np.concatenate([[0], tag[:-1]])
    prev_typ = np.concatenate([[-1], typ[:-1]])
    changed = prev_typ != typ
    # seqeval's end_of_chunk(prev, tag) and start_of_chunk(prev, tag), one boolean per position.
    end = (np.isin(prev_tag, (3, 4)) | (np.isin(prev_tag, (1, 2)) & np.isin(tag, (1, 4, 0)))
           | (~np.isin(prev_tag, (0, 5)) & changed))
    start = (np.isin(tag, (1, 4)) | (np.isin(prev_tag, (3, 4, 0)) & np.isin(tag, (3, 2)))
             | (~np.isin(tag, (0, 5)) & changed))
    last_start = np.maximum.accumulate(np.where(start, np.arange(len(tag)), 0))
    ends = np.nonzero(end)[0]
    names = list(type_names)
    return {(names[prev_typ[i]], int(last_start[i - 1]), int(i - 1)) for i in ends.tolist()}


def sentence_counts(pairs: Pairs, gold: set | None = None, scheme: Scheme | None = None) -> np.ndarray:
    """(sentences, 3) array of correct, found and gold entities per sentence, as conlleval counts them.

    gold: `entities` of the gold tags when already known (they are the same for every arm). scheme: the gold's
    (detected when not given).
    """
    lengths = np.array([len(g) + 1 for g, _ in pairs], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(pairs) else np.zeros(0, np.int64)
    scheme = scheme or scheme_of([g for g, _ in pairs])
    gold = entities([g for g, _ in pairs], scheme) if gold is None else gold
    pred = entities([p for _, p in pairs], scheme)
    out = np.zeros((len(pairs), 3), dtype=np.float64)
    for j, found in enumerate((gold & pred, pred, gold)):
        where = np.searchsorted(starts, np.array([e[1] for e in found], dtype=np.int64), side="right") - 1
        out[:, j] = np.bincount(where, minlength=len(pairs))
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
    """Paired bootstrap of macro F1 (mean over genres) of arm b minus arm a; see `bootstrap_counts`."""
    _check_paired(a, b)
    return bootstrap_counts({g: sentence_counts(a[g]) for g in a}, {g: sentence_counts(b[g]) for g in b},
                            samples, seed)


def bootstrap_counts(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], samples: int = 1000,
                     seed: int | Sequence[int] = 0) -> BootstrapResult:
    """The bootstrap on per-sentence counts (`sentence_counts`) of two arms over the same sentences.

    Sentences are resampled with replacement within each genre (the same indices for both arms);
    p = (1 + #{|d_b - d| >= |d|}) / (1 + samples): the shifted-null two-sided test, so identical
    arms give p = 1 and a difference no resample comes near gives p = 1 / (1 + samples).
    """
    rng = np.random.default_rng(seed)
    genres = sorted(a)
    f1a, f1b, boot = [], [], np.zeros((samples, len(genres)))
    for j, g in enumerate(genres):
        ca, cb = a[g], b[g]
        n = len(ca)
        f1a.append(float(_f1(ca.sum(0))))
        f1b.append(float(_f1(cb.sum(0))))
        if n == 0:
            continue
        both = np.concatenate([ca, cb], axis=1)  # (n, 6)
        for lo in range(0, samples, _CHUNK):  # chunks bound the (chunk, n) weights' memory
            k = min(_CHUNK, samples - lo)
            idx = rng.integers(0, n, size=(k, n)) + n * np.arange(k)[:, None]
            weights = np.bincount(idx.ravel(), minlength=k * n).reshape(k, n).astype(np.float64)  # times drawn
            sums = weights @ both
            boot[lo:lo + k, j] = _f1(sums[:, 3:]) - _f1(sums[:, :3])
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
    scheme = scheme_of([x[0] for p in pairs_by_genre.values() for x in p])
    scores = {g: score([list(x[0]) for x in p], [list(x[1]) for x in p], scheme) for g, p in pairs_by_genre.items()}
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


def _load(predictions: Predictions, cell, split: str, cache: dict):
    """(pairs by genre, counts by genre) of one cell's saved predictions, or None when it has none."""
    run = cell.get("mlflow_run_id")
    if not isinstance(run, str) or not run:
        return None
    if (run, split) not in cache:
        try:
            got = predictions(run, split)
        except (LookupError, OSError):  # the tracking layer's "no such artifact"
            got = None
        logged = cell.get("scheme")
        scheme = parse_declared(logged) if isinstance(logged, str) and logged else None
        cache[run, split] = (got, {g: sentence_counts(p, *_gold(cache, split, g, p, scheme)) for g, p in got.items()}
                             ) if got else None
    return cache[run, split]


def _gold(cache: dict, split: str, genre: str, pairs: Pairs, scheme: Scheme | None = None) -> tuple[set, Scheme]:
    # Every arm has the same gold tags: chunk them once per split and genre (and check they are the same).
    # The scheme: the one the cell logged (ablate.ran.scheme), else detected from these gold tags.
    tags = [list(g) for g, _ in pairs]
    known = cache.setdefault("gold", {}).get((split, genre))
    if known is None or known[0] != tags or (scheme is not None and known[2] != scheme):
        scheme = scheme or scheme_of(tags)
        known = cache["gold"][split, genre] = (tags, entities(tags, scheme), scheme)
    return known[1], known[2]


def _p_text(p: float) -> str:
    return "–" if math.isnan(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def _pair(group: pd.DataFrame, axis: str, values: list, predictions: Predictions, samples: int, seed,
          cache: dict) -> tuple[list, BootstrapResult | None, str]:
    """The best cell of each arm in one row pair, and their bootstrap (None without both arms' predictions)."""
    arms = {k[0]: g for k, g in groups(group, [axis])}
    picked = [best_cells(arms[v], [])[0] if v in arms else ((), None, group.iloc[:0]) for v in values]
    cells = [r for _, r, _ in picked]
    names = [r["name"] if r is not None else status_text(status_counts(g)) for _, r, g in picked]
    if any(r is None for r in cells):
        return names, None, "–"
    for split in ("test", "dev"):
        a, b = (_load(predictions, r, split, cache) for r in cells)
        if a is not None and b is not None:
            _check_paired(a[0], b[0])
            return names, bootstrap_counts(a[1], b[1], samples, seed), split
    return names, None, "no predictions"


def compare_table(cells: pd.DataFrame, spec: TableSpec, predictions: Predictions, samples: int = 1000,
                  seed: int = 0, cache: dict | None = None) -> Table:
    """The table's `compare:` pairs: rows that differ only in that axis, paired bootstrap + Holm across them.

    Each arm is its best finished cell by dev macro F1 (one seed). Test predictions are used; dev only
    where an arm has no test predictions (the Split column says which).
    """
    cache = {} if cache is None else cache  # (mlflow_run_id, split) -> loaded predictions and counts
    axis, what = spec.compare, f"table {spec.name}: compare"
    check_axes(cells, [axis], what)
    sub = apply_where(cells, spec.where, f"table {spec.name}: where")
    values = [key[0] for key, _ in groups(sub, [axis])]
    if len(values) != 2:
        raise NotComparable(f"{what}: {axis} has {len(values)} values here ({', '.join(map(axis_text, values))}); "
                        "a comparison needs exactly two")
    la, lb = axis_text(values[0]), axis_text(values[1])
    keys, sub, _ = resolve_rows(sub, list(spec.rows) + ([axis] if axis not in spec.rows else []), spec.others)
    pair_keys = [k for k in keys if k != axis]
    disp, nums = [], []
    for i, (key, group) in enumerate(groups(sub, pair_keys)):
        names, res, used = _pair(group, axis, values, predictions, samples, [seed, i], cache)
        axes_part = {k: axis_text(v) for k, v in zip(pair_keys, key)}
        r = res or BootstrapResult(*[math.nan] * 6, samples=samples, sentences=0)
        nums.append({**dict(zip(pair_keys, key)), f"{la} cell": names[0], f"{lb} cell": names[1],
                     f"{la} macro_f1": r.a, f"{lb} macro_f1": r.b, "delta": r.delta, "ci_low": r.low,
                     "ci_high": r.high, "split": used, "sentences": r.sentences, "p": r.p_value})
        pct = (lambda x, sign="": "–" if math.isnan(x) else f"{100 * x:{sign}.2f}")
        disp.append({**axes_part, f"{la} cell": names[0], f"{lb} cell": names[1],
                     f"{la} macro F1 (%)": pct(r.a), f"{lb} macro F1 (%)": pct(r.b),
                     f"Δ {lb} − {la} (points)": pct(r.delta, "+"),
                     "95% CI": "–" if res is None else f"[{pct(r.low, '+')}, {pct(r.high, '+')}]", "Split": used})
    adjusted = holm([n["p"] for n in nums])
    for d, n, h in zip(disp, nums, adjusted):
        d["p"], d["p (Holm)"], n["p_holm"] = _p_text(n["p"]), _p_text(h), h
    caption = (f"{axis}: {lb} against {la}, each arm its best finished cell by dev macro F1 (one seed). Test: "
               f"{TEST_NAME}; {samples} samples, seed {seed}; Δ is the difference in macro F1 over genres.")
    return Table(f"{spec.name}_significance", f"{spec.title or spec.name}: is {lb} different from {la}?", caption,
                 pd.DataFrame(disp), pd.DataFrame(nums))
