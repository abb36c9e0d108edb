"""Significance: the paired bootstrap on cases whose answer is known, Holm by hand, and the comparisons table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ablate.metrics import score
from ablate.spec.report import TableSpec
from ablate.report.stats import compare_table, holm, macro_f1, paired_bootstrap, sentence_counts

GENRES = ("ft", "sm", "wa")


def gold_sentences(n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        tags = ["O"] * 12
        for start in (1, 6):
            t = ("BODY", "SYMP", "DRUG")[int(rng.integers(3))]
            tags[start:start + 2] = [f"B-{t}", f"I-{t}"]
        out.append(tags)
    return out


def arm(gold: list[list[str]], keep) -> list[tuple[list[str], list[str]]]:
    """Predictions: sentence i keeps its gold tags where keep(i), else all O."""
    return [(g, list(g) if keep(i) else ["O"] * len(g)) for i, g in enumerate(gold)]


def by_genre(n: int, keep) -> dict:
    return {g: arm(gold_sentences(n, seed=k), keep) for k, g in enumerate(GENRES)}


def test_identical_arms_give_p_one():
    a = by_genre(50, lambda i: i % 3 != 0)
    r = paired_bootstrap(a, a, samples=500, seed=1)
    assert r.delta == 0.0 and r.p_value == 1.0
    assert r.low == r.high == 0.0


def test_perfect_against_all_o_gives_p_near_zero():
    perfect, nothing = by_genre(200, lambda i: True), by_genre(200, lambda i: False)
    r = paired_bootstrap(nothing, perfect, samples=999, seed=0)
    assert r.a == 0.0 and r.b == 1.0 and r.delta == 1.0
    assert r.p_value == pytest.approx(1 / 1000)  # no resample comes near 0: the smallest p B samples allow
    assert r.low == r.high == 1.0


def test_swapping_arms_negates_delta_and_keeps_p():
    a, b = by_genre(80, lambda i: i % 2 == 0), by_genre(80, lambda i: i % 3 != 0)
    ab, ba = paired_bootstrap(a, b, samples=400, seed=3), paired_bootstrap(b, a, samples=400, seed=3)
    assert ab.delta == pytest.approx(-ba.delta) and ab.p_value == pytest.approx(ba.p_value)
    assert 0 < ab.p_value < 1
    assert paired_bootstrap(a, b, samples=400, seed=3) == ab  # seeded: the same answer every time


def test_a_small_difference_on_few_sentences_is_not_significant():
    # b recovers one more sentence of 30 per genre than a: a real but tiny, noisy difference.
    a, b = by_genre(30, lambda i: i % 2 == 0), by_genre(30, lambda i: i % 2 == 0 or i == 1)
    r = paired_bootstrap(a, b, samples=1000, seed=0)
    assert r.delta > 0 and r.p_value > 0.05


def test_observed_delta_equals_ablate_metrics():
    a, b = by_genre(40, lambda i: i % 2 == 0), by_genre(40, lambda i: i % 5 != 0)
    r = paired_bootstrap(a, b, samples=50)
    assert r.a == pytest.approx(macro_f1(a)) and r.b == pytest.approx(macro_f1(b))


def test_sentence_counts_sum_to_the_official_scorer_counts(rocling):
    from ablate.data.readers import read_conll

    gold = read_conll(rocling / "rocling23_truth_FT.txt", "ft")
    pred = read_conll(rocling / "rocling23_baseline_pred_FT.txt", "ft")
    counts = sentence_counts([(g.tags, p.tags) for g, p in zip(gold, pred)])
    assert counts.sum(0).tolist() == [6085, 9075, 10849]  # correct, found, phrases (README, conlleval)
    one = score([list(gold[7].tags)], [list(pred[7].tags)])
    assert counts[7].tolist() == [one.correct, one.found, one.phrases]


def test_unpaired_predictions_are_refused():
    a = by_genre(10, lambda i: True)
    with pytest.raises(ValueError, match="not over the same sentences"):
        paired_bootstrap(a, {**a, "ft": a["ft"][:-1]}, samples=20)


def test_holm_against_a_hand_computation():
    # sorted: .005*4=.02, .01*3=.03, .03*2=.06, .04*1=.04 -> max(.06, .04) = .06 (step-down stays monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    out = holm([math.nan, 0.2, 0.01])
    assert math.isnan(out[0]) and out[1:] == pytest.approx([0.2, 0.02])  # NaN neither counts nor moves


def test_compare_table_pairs_arms_within_each_row_and_corrects_across_them():
    n = 60
    preds = {
        "bert-lora": by_genre(n, lambda i: i % 2 == 0), "bert-full": by_genre(n, lambda i: i % 2 == 0),
        "rob-lora": by_genre(n, lambda i: False), "rob-full": by_genre(n, lambda i: True),
    }
    calls = []

    def predictions(run, split):
        calls.append((run, split))
        if split != "test":
            raise KeyError(split)
        return preds[run]

    rows = []
    for bb in ("bert", "rob", "deb"):
        for ft in ("lora", "full"):
            for seed in (0, 1):
                status = "MISSING" if bb == "deb" and ft == "full" else "FINISHED"
                rows.append({"run_id": f"{bb}-{ft}-{seed}", "name": f"{bb}-{ft}-{seed}", "status": status,
                             "mlflow_run_id": f"{bb}-{ft}" if seed == 1 and status == "FINISHED" else None,
                             "backbone": bb, "finetune": ft, "seed": seed, "dev/macro_f1": 0.1 * seed})
    cells = pd.DataFrame(rows)
    cells.attrs["axes"] = ["backbone", "finetune", "seed"]
    spec = TableSpec(name="t4", rows=["backbone", "finetune"], compare="finetune")
    t = compare_table(cells, spec, predictions, samples=300, seed=0)
    d, num = t.display, t.numbers
    assert d["backbone"].tolist() == ["bert", "rob", "deb"]
    assert d["lora cell"].tolist()[:2] == ["bert-lora-1", "rob-lora-1"]  # best seed by dev macro F1
    assert num["p"].iloc[0] == 1.0 and num["delta"].iloc[0] == 0.0   # identical predictions
    assert num["p"].iloc[1] == pytest.approx(1 / 301)                 # all-O against perfect
    assert num["p_holm"].tolist()[:2] == pytest.approx([1.0, 2 / 301])  # two tests: Holm doubles the smaller
    assert d["full cell"].iloc[2] == "missing (2/2)" and d["p"].iloc[2] == "–"
    assert d["Split"].tolist() == ["test", "test", "–"]
    assert len(set(calls)) == len(calls)  # each run's predictions read once


def test_entities_equal_seqeval_on_any_tag_soup():
    # The bootstrap's vectorised chunker must be seqeval's default mode (conlleval), odd tags included.
    import random
    import warnings

    from seqeval.metrics.sequence_labeling import get_entities

    from ablate.report.stats import entities

    vocab = ["O", "B-A", "I-A", "B-B", "I-B", "E-A", "S-B", "I-C", ".", "X", "X-A", "B-", "E-B", "S-A", "BODY",
             "O-SYMP", "i-CHEM", "T-TIME"]
    rng = random.Random(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns about the odd tags it is fed on purpose
        for _ in range(2000):
            seqs = [[rng.choice(vocab) for _ in range(rng.randint(0, 8))] for _ in range(rng.randint(1, 4))]
            assert entities(seqs) == set(get_entities(seqs)), seqs
