"""Ensembles: votes on cases whose answer is known, IOB2 validity as a property, and top_k by dev only."""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest

from ablate.errors import UserError
from ablate.metrics import get_entities
from ablate.report.ensemble import METHODS, check_aligned, entity_vote, repair_bio, top_k, vote

TAGS = ["O", "B-A", "I-A", "B-B", "I-B"]


def is_iob2(tags: list[str]) -> bool:
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and prev not in ("B-" + tag[2:], tag):
            return False
        prev = tag
    return True


def random_triples(n: int, seed: int = 0):
    rng = random.Random(seed)
    for _ in range(n):
        length = rng.randint(0, 12)
        yield [[[rng.choice(TAGS) for _ in range(length)]] for _ in range(3)]


def test_repair_bio_makes_an_orphan_i_a_b():
    assert repair_bio(["I-A", "I-A", "O", "I-A", "B-B", "I-A", "I-B"]) == \
        ["B-A", "I-A", "O", "B-A", "B-B", "B-A", "B-B"]
    assert repair_bio(["B-A", "I-A", "I-A"]) == ["B-A", "I-A", "I-A"]


def test_repair_bio_keeps_conllevals_reading():
    for (seq,), _, _ in random_triples(500, seed=1):
        fixed = repair_bio(seq)
        assert is_iob2(fixed)
        assert get_entities(fixed) == get_entities(seq)


def test_two_of_three_agreeing_keep_their_entity():
    a = [["O", "B-A", "I-A", "O", "O"]]
    b = [["O", "O", "O", "B-B", "I-B"]]
    for method in (vote, entity_vote):
        assert method([a, b, a]) == a
        assert method([b, a, a]) == a


def test_vote_three_way_tie_goes_to_the_first_model():
    a, b, o = [["B-A", "O"]], [["B-B", "O"]], [["O", "O"]]
    assert vote([a, b, o]) == [["B-A", "O"]]
    assert vote([b, o, a]) == [["B-B", "O"]]
    assert vote([o, a, b]) == [["O", "O"]]


def test_vote_is_always_valid_iob2():
    for models in random_triples(500):
        (out,) = vote(models)
        assert len(out) == len(models[0][0])
        assert is_iob2(out), (models, out)


def test_vote_repairs_a_winner_that_would_dangle():
    # Character 1: I-A wins 2-1 but follows O (which won character 0): written as B-A.
    models = [[["O", "I-A"]], [["O", "I-A"]], [["B-A", "O"]]]
    assert vote(models) == [["O", "B-A"]]


def test_entity_vote_ignores_a_minority_overlapping_entity():
    agreed = [["O", "B-A", "I-A", "I-A", "O", "O"]]
    overlapping = [["O", "O", "O", "B-B", "I-B", "I-B"]]
    assert entity_vote([overlapping, agreed, agreed]) == agreed
    assert entity_vote([agreed, overlapping, agreed]) == agreed


def test_entity_vote_needs_exact_spans():
    # Three different spans of the same type: none has more than one vote.
    models = [[["B-A", "I-A", "O"]], [["O", "B-A", "I-A"]], [["B-A", "I-A", "I-A"]]]
    assert entity_vote(models) == [["O", "O", "O"]]


def test_entity_vote_on_two_models_needs_both():
    a = [["B-A", "I-A", "O", "B-B"]]
    b = [["B-A", "I-A", "O", "O"]]
    assert entity_vote([a, b]) == [["B-A", "I-A", "O", "O"]]
    assert entity_vote([b, a]) == [["B-A", "I-A", "O", "O"]]


def test_entity_vote_keeps_exactly_the_majority_entities():
    for models in random_triples(500, seed=2):
        (out,) = entity_vote(models)
        votes = [set(get_entities(m[0])) for m in models]
        majority = {e for e in set().union(*votes) if sum(e in v for v in votes) >= 2}
        assert is_iob2(out)
        assert set(get_entities(out)) == majority


def test_entity_vote_reads_an_orphan_i_as_conlleval_does():
    # I-A at the start is an entity to conlleval, so it agrees with the B-A of the other model.
    assert entity_vote([[["I-A", "I-A"]], [["B-A", "I-A"]]]) == [["B-A", "I-A"]]


def test_misaligned_inputs_name_the_model():
    good = [["O", "O"], ["O"]]
    with pytest.raises(UserError, match=r"lora-r8 has 1 sentences, full has 2"):
        check_aligned([good, good, [["O", "O"]]], ["full", "focal", "lora-r8"])
    with pytest.raises(UserError, match=r"focal, sentence 2: 2 tags, full has 1"):
        check_aligned([good, [["O", "O"], ["O", "O"]]], ["full", "focal"])
    check_aligned([good, good], ["full", "focal"])
    for method in METHODS.values():
        with pytest.raises(UserError, match=r"model 2, sentence 1"):
            method([good, [["O"], ["O"]]])


def cells_frame() -> pd.DataFrame:
    # r3 is the best by test and the worst finished by dev; r9 failed with the best dev score.
    return pd.DataFrame({
        "run_id": ["r1", "r2", "r3", "r4", "r9"],
        "name": ["full", "lora", "focal", "crf", "big"],
        "status": ["FINISHED", "FINISHED", "FINISHED", "FINISHED", "FAILED"],
        "dev/macro_f1": [0.80, 0.85, 0.60, 0.80, 0.99],
        "test/macro_f1": [0.70, 0.72, 0.95, 0.71, math.nan],
    })


def test_top_k_orders_by_dev_not_test():
    cells = cells_frame()
    assert list(top_k(cells, 4)["run_id"]) == ["r2", "r1", "r4", "r3"]  # r1, r4 tie: by run_id
    assert list(top_k(cells, 1)["run_id"]) == ["r2"]
    assert list(top_k(cells.iloc[::-1], 3)["run_id"]) == ["r2", "r1", "r4"]


def test_top_k_never_counts_failed_cells():
    cells = cells_frame()
    assert "r9" not in set(top_k(cells, 4)["run_id"])
    with pytest.raises(UserError, match=r"k=5.* 4 finished cells"):
        top_k(cells, 5)


def test_top_k_never_takes_a_pruned_search_trial():
    cells = cells_frame().assign(pruned=[False, True, False, False, False])  # r2: best dev, stopped early
    assert list(top_k(cells, 3)["run_id"]) == ["r1", "r4", "r3"]
    with pytest.raises(UserError, match="1 pruned"):
        top_k(cells, 4)


def test_top_k_refuses_test_metrics_and_bad_k():
    cells = cells_frame()
    with pytest.raises(UserError, match="leak"):
        top_k(cells, 1, by="test/macro_f1")
    with pytest.raises(UserError, match=r"k=0"):
        top_k(cells, 0)
    with pytest.raises(UserError, match="dev/nope"):
        top_k(cells, 1, by="dev/nope")
