"""Training data as an axis: genre subsets and fractions are nested, stratified by genre, identical across
processes and hash seeds; a cell trained on [ft] sees no SM or WA sentence; bad values are one message."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ablate.data.corpus import load_corpus, training_subset
from ablate.errors import UserError
from ablate.grid import data_hashes, expand, run_id
from ablate.spec import StudySpec

REPO = Path(__file__).resolve().parents[2]


def _study(rocling: Path, grid: dict) -> StudySpec:
    return StudySpec.model_validate({
        "name": "g", "backbones": {"b": {"scratch": "bert"}}, "grid": {"backbone": ["b"], **grid},
        "data": {"root": str(rocling), "train": ["healthner_test.jsonl", {"path": "rocling22_chner_truth.txt", "genre": "wa"}],
                 "dev": {"split": 0.2, "seed": 0}, "test": [{"path": "rocling23_truth_FT.txt", "genre": "ft"}]},
    })


def test_a_cell_trained_on_ft_sees_no_sm_or_wa_sentence_and_dev_stays_whole(rocling):
    s = _study(rocling, {"data.train_genres": [["ft"], ["ft", "sm", "wa"]]})
    ft, every = (load_corpus(r.data) for r in expand(s))
    assert {x.genre for x in ft.train} == {"ft"} and len(ft.train) == sum(x.genre == "ft" for x in every.train)
    assert [x.id for x in ft.dev] == [x.id for x in every.dev] and {x.genre for x in ft.dev} == {"ft", "sm", "wa"}
    assert [x.id for x in ft.test] == [x.id for x in every.test]


def test_fractions_are_nested_and_stratified_by_genre(rocling):
    train = load_corpus(_study(rocling, {}).data).train
    counts = {g: sum(s.genre == g for s in train) for g in ("ft", "sm", "wa")}
    previous: set[str] = set()
    for f in (0.1, 0.25, 0.5, 1.0):
        sub = training_subset(train, None, f)
        ids = {s.id + s.genre for s in sub}
        assert previous <= ids  # nested
        for g, n in counts.items():  # each genre keeps its share
            assert sum(s.genre == g for s in sub) == math.ceil(f * n)
        previous = ids
    assert {s.id for s in training_subset(train, ["ft"], 0.25)} <= {s.id for s in training_subset(train, None, 0.25)}


SUBSET = ("import json, sys; from pathlib import Path; sys.path.insert(0, {repo!r}); "
          "from ablate.data.corpus import load_corpus, training_subset; "
          "from tests.data.test_train_subsets import _study; "
          "t = load_corpus(_study(Path({root!r}), {{}}).data).train; "
          "print(json.dumps([s.id + s.genre for s in training_subset(t, ['ft', 'wa'], 0.1)]))")


def test_subsets_are_identical_across_processes_and_hash_seeds(rocling):
    outs = []
    for seed in ("0", "12345"):
        r = subprocess.run([sys.executable, "-c", SUBSET.format(repo=str(REPO), root=str(rocling))], capture_output=True,
                           text=True, env={**os.environ, "PYTHONHASHSEED": seed}, cwd=REPO, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(json.loads(r.stdout))
    assert outs[0] == outs[1] and len(outs[0]) > 100


def test_bad_values_are_one_message(rocling):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="fraction"):
        _study(rocling, {"data.train_fraction": [0.0]})
    with pytest.raises(ValidationError, match="fraction"):
        _study(rocling, {"data.train_fraction": [1.5]})
    with pytest.raises(ValidationError, match="genre names"):
        _study(rocling, {"data.train_genres": ["ft"]})  # a genre, not a list of them
    train = load_corpus(_study(rocling, {}).data).train
    with pytest.raises(UserError, match="xx is not a genre of the training data"):
        training_subset(train, ["xx"], 1.0)


def test_data_axes_leave_existing_run_ids_and_are_hashed_when_set(rocling):
    plain = _study(rocling, {})
    [before] = [run_id(r, data_hashes(plain)) for r in expand(plain)]
    s = _study(rocling, {"data.train_genres": [["ft"], ["ft", "sm", "wa"]], "data.train_fraction": [0.5, 1.0]})
    ids = {(tuple(r.data.train_genres), r.data.train_fraction): run_id(r, data_hashes(s)) for r in expand(s)}
    assert len(set(ids.values())) == 4 and before not in ids.values()  # all four are new cells ...
    default = _study(rocling, {"data.train_fraction": [1.0]})
    assert [run_id(r, data_hashes(default)) for r in expand(default)] == [before]  # ... but 1.0 is the old one
