"""Ensembles of finished cells: the members chosen by a dev metric only, their test predictions combined
per character (a majority vote) or per entity (kept when more than half the members predict it).

Pure functions over tag sequences: one model's predictions are a list of sentences, each a list of tags,
all models aligned on the same sentences. Outputs are valid tags of the corpus's scheme (IOB2 by default).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from ablate.errors import UserError
from ablate.schemes import IOB2, Scheme


def repair_bio(tags: list[str], scheme: Scheme = IOB2) -> list[str]:
    """The repair the votes apply: the same entities written as valid tags of the scheme."""
    return scheme.repair(tags)

if TYPE_CHECKING:
    import pandas as pd

Predictions = list[list[str]]  # one model: per sentence, one tag per character


def check_aligned(models: list[Predictions], names: list[str]) -> None:
    """Raise UserError naming the model and sentence when sentence counts or sentence lengths differ."""
    if len(names) != len(models):
        raise ValueError(f"{len(models)} models but {len(names)} names")
    if not models:
        raise UserError("an ensemble needs at least one model")
    first, ref = names[0], models[0]
    for name, model in zip(names[1:], models[1:]):
        if len(model) != len(ref):
            raise UserError(f"ensemble: {name} has {len(model)} sentences, {first} has {len(ref)}")
        for i, (sent, ref_sent) in enumerate(zip(model, ref)):
            if len(sent) != len(ref_sent):
                raise UserError(f"ensemble: {name}, sentence {i + 1}: {len(sent)} tags, "
                                f"{first} has {len(ref_sent)}")


def _check(models: list[Predictions]) -> None:
    # zip() would silently truncate misaligned inputs; the caller with real names calls check_aligned first.
    check_aligned(models, [f"model {i + 1}" for i in range(len(models))])


def vote(models: list[Predictions], scheme: Scheme = IOB2) -> Predictions:
    """Per-character majority vote, ties broken by the order of `models` (the first, the best by dev, wins),
    then repair_bio.

    Each model's tags are repaired first, so an I-X that conlleval reads as opening an entity votes with
    the B-X tags at that character rather than against them.
    """
    _check(models)
    out: Predictions = []
    for sents in zip(*models):
        columns = zip(*(repair_bio(list(s), scheme) for s in sents))
        # Counter keeps first-seen order and max() returns the first maximum: the earliest model wins a tie.
        out.append(repair_bio([max(Counter(col).items(), key=lambda kv: kv[1])[0] for col in columns], scheme))
    return out


def entity_vote(models: list[Predictions], scheme: Scheme = IOB2) -> Predictions:
    """Entity-level vote: keep each (type, start, end) that more than half of the models predict, written
    back in the scheme's tags with O elsewhere.

    Kept entities never overlap: one model's chunks are disjoint, so no model votes for two overlapping
    entities and their votes sum to at most len(models); both above half would sum to more.
    """
    _check(models)
    n = len(models)
    out: Predictions = []
    for sents in zip(*models):
        votes = Counter(e for s in sents for e in set(scheme.chunks(list(s))))
        kept = sorted((e for e, c in votes.items() if 2 * c > n), key=lambda e: (e[1], e[2]))
        assert all(a[2] < b[1] for a, b in zip(kept, kept[1:])), "kept entities overlap (see the docstring's proof)"
        out.append(scheme.write(kept, len(sents[0])))
    return out


METHODS = {"vote": vote, "entity": entity_vote}


def top_k(cells: pd.DataFrame, k: int, by: str = "dev/macro_f1") -> pd.DataFrame:
    """The k FINISHED cells with the highest `by`, best first, ties broken by run_id.

    `by` must be a dev metric: choosing members by test would leak the test set into the ensemble.
    Finished cells that did not log `by` cannot be ranked and are left out, and so are pruned search trials (FINISHED
    in MLflow, but stopped early: their dev score is a partial epoch count's and they have no test predictions).
    """
    if not by.startswith("dev/"):
        raise UserError(f"ensemble members are chosen by a dev metric, not {by!r} (selecting by test would leak)")
    if by not in cells.columns:
        dev = sorted(c for c in cells.columns if str(c).startswith("dev/"))
        raise UserError(f"no metric {by!r} in the cells; dev metrics: {', '.join(dev) or 'none'}")
    finished = cells["status"] == "FINISHED"
    pruned = cells["pruned"].fillna(False).astype(bool) if "pruned" in cells.columns else finished & False
    ranked = cells[finished & ~pruned & cells[by].notna()]  # a pruned trial's dev is an early epoch's; no test files
    if k < 1 or k > len(ranked):
        missing = int((finished & ~pruned).sum()) - len(ranked)
        note = f" ({missing} more finished without {by})" if missing else ""
        if int((finished & pruned).sum()):
            note += f" ({int((finished & pruned).sum())} pruned search trials are never members)"
        limit = f"k must be between 1 and {len(ranked)}" if len(ranked) else "nothing to choose from"
        raise UserError(f"top_k: k={k}, but there are {len(ranked)} finished cells with {by}{note}; {limit}")
    return ranked.sort_values([by, "run_id"], ascending=[False, True], kind="mergesort").head(k)


def ensemble_table(ensembles: list[dict], samples: int = 1000, seed: int = 0):
    """The report's ensemble rows: each logged ensemble's test macro F1 beside its best member, paired bootstrap.

    `ensembles`: dicts with `scores` (its scores.json), `pairs` and `best_pairs` ({genre: [(gold, pred)]}: the
    ensemble's and its first member's test predictions). None when there is none.
    """
    import math

    import pandas as pd

    from ablate.report.stats import TEST_NAME, holm, paired_bootstrap
    from ablate.report.tables import Table

    if not ensembles:
        return None
    nums, disp = [], []
    for e in ensembles:
        sc = e["scores"]
        r = paired_bootstrap(e["best_pairs"], e["pairs"], samples, seed) if e.get("best_pairs") else None
        pct = (lambda x, sign="": "–" if x is None or math.isnan(x) else f"{100 * x:{sign}.2f}")
        name = f"{sc['method']}-top{sc['k']}" + ("" if sc["by"] == "dev/macro_f1" else f" by {sc['by']}")
        nums.append({"ensemble": name, "members": " ".join(sc["members"]), "by": sc["by"],
                     "test/macro_f1": sc["macro_f1"], "best member test/macro_f1": r.a if r else math.nan,
                     "delta": r.delta if r else math.nan, "p": r.p_value if r else math.nan})
        disp.append({"Ensemble": nums[-1]["ensemble"], "Members (best first)": ", ".join(sc["members"]),
                     "Chosen by": sc["by"], "Test macro F1 (%)": pct(sc["macro_f1"]),
                     "Best member (%)": pct(r.a if r else None), "Δ (points)": pct(r.delta if r else None, "+"),
                     "95% CI": f"[{pct(r.low, '+')}, {pct(r.high, '+')}]" if r else "–"})
    for d, n, h in zip(disp, nums, holm([n["p"] for n in nums])):
        d["p"] = "–" if math.isnan(n["p"]) else "< 0.001" if n["p"] < 0.001 else f"{n['p']:.3f}"
        d["p (Holm)"] = "–" if math.isnan(h) else "< 0.001" if h < 0.001 else f"{h:.3f}"
    caption = (f"Members picked by their dev metric only (never test); Δ is the ensemble's macro F1 minus its best "
               f"member's on test. Test: {TEST_NAME}; {samples} samples, seed {seed}.")
    return Table("ensembles", "Ensembles of the best cells (the paper's top-3 system)", caption,
                 pd.DataFrame(disp), pd.DataFrame(nums))
