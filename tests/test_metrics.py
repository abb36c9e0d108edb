"""The scorer reproduces the official ROCLING scorer and agrees with seqeval."""

from __future__ import annotations

import re

import pytest
from seqeval.metrics import f1_score, precision_score, recall_score

from ablate.data.readers import read_conll, read_predictions
from ablate.metrics import format_conlleval, score, score_genres


@pytest.fixture(scope="module")
def baseline_ft(rocling):
    gold, pred = read_predictions(rocling / "rocling23_baseline_pred_FT.txt", read_conll(rocling / "rocling23_truth_FT.txt", "ft"))
    return [list(s.tags) for s in gold], pred


def test_reproduces_every_line_of_the_official_ft_score_file(baseline_ft, rocling):
    official = (rocling / "rocling23_baseline_official_scores_FT.txt").read_text(encoding="utf-8")
    ours = format_conlleval("FT", score(*baseline_ft))
    norm = lambda s: [re.sub(r"\s+", " ", x).strip() for x in s.splitlines() if x.strip()]  # noqa: E731
    block = official[official.index("== FT"):]
    assert norm(ours) == norm(block)
    s = score(*baseline_ft)
    assert (s.phrases, s.found, s.correct) == (10849, 9075, 6085)


def test_agrees_with_seqeval_default_mode(baseline_ft):
    gold, pred = baseline_ft
    s = score(gold, pred)
    assert s.precision == pytest.approx(precision_score(gold, pred), abs=1e-12)
    assert s.recall == pytest.approx(recall_score(gold, pred), abs=1e-12)
    assert s.f1 == pytest.approx(f1_score(gold, pred), abs=1e-12)


def test_macro_is_the_mean_of_genre_scores():
    perfect = [["B-A", "I-A", "O"]]
    half = [["B-A", "O", "O", "B-B"]]
    res = score_genres({"ft": (perfect, perfect), "sm": (half, [["B-A", "O", "O", "O"]])})
    assert res.genres["ft"].f1 == 1.0
    assert res.genres["sm"].precision == 1.0 and res.genres["sm"].recall == 0.5
    assert res.macro.f1 == pytest.approx((1.0 + 2 / 3) / 2)
    assert res.macro.recall == pytest.approx(0.75)


def test_i_after_o_starts_an_entity_as_conlleval_does():
    s = score([["O", "I-A", "I-A"]], [["O", "B-A", "I-A"]])
    assert (s.phrases, s.found, s.correct) == (1, 1, 1)


def test_empty_predictions_score_zero_not_nan():
    s = score([["B-A", "O"]], [["O", "O"]])
    assert (s.precision, s.recall, s.f1) == (0.0, 0.0, 0.0)


def test_chunker_equals_seqeval_tag_for_tag():
    import random

    from seqeval.metrics.sequence_labeling import get_entities as seqeval_entities

    from ablate.metrics import get_entities

    rng = random.Random(0)
    tags = ["O", "B-A", "I-A", "B-B", "I-B", "E-A", "S-B", "I-C", "O"]
    for _ in range(3000):
        seq = [rng.choice(tags) for _ in range(rng.randint(0, 12))]
        assert get_entities(seq) == seqeval_entities(seq), seq
