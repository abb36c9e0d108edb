"""Splits are seeded, stratified by genre and independent of hash seeds and input order."""

from __future__ import annotations

import os
import subprocess
import sys

from ablate.data.readers import Sentence
from ablate.data.splits import split


def _corpus():
    return [Sentence(f"{g}{i}", g, ("a",), ("O",)) for g, n in (("ft", 100), ("sm", 50), ("wa", 30)) for i in range(n)]


def test_stratified_eighty_twenty():
    train, dev = split(_corpus(), 0.2, seed=1)
    count = lambda xs, g: sum(s.genre == g for s in xs)  # noqa: E731
    assert [count(dev, g) for g in ("ft", "sm", "wa")] == [20, 10, 6]
    assert len(train) + len(dev) == 180 and not {s.id for s in train} & {s.id for s in dev}


def test_seed_changes_split_and_same_seed_repeats():
    a = [s.id for s in split(_corpus(), 0.2, seed=1)[1]]
    assert a == [s.id for s in split(_corpus(), 0.2, seed=1)[1]]
    assert a != [s.id for s in split(_corpus(), 0.2, seed=2)[1]]


def test_identical_across_processes_with_different_hash_seeds():
    code = "from tests.data.test_splits import _corpus; from ablate.data.splits import split; print([s.id for s in split(_corpus(), 0.2, 3)[1]])"
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": h}).stdout
        for h in ("0", "1", "12345")
    }
    assert len(outs) == 1
