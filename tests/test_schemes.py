"""Tag schemes: chunking agrees with conlleval (IOB1/IOB2, as seqeval's default mode) and with seqeval's strict
mode (IOBES, BILOU; BMES as IOBES) on 3,000 random sequences each; detection; writing entities back."""

from __future__ import annotations

import random

import pytest
from seqeval.metrics.sequence_labeling import get_entities as seqeval_default
from seqeval.scheme import BILOU, IOBES, Entities

from ablate.errors import DataError
from ablate.metrics import get_entities
from ablate.schemes import Scheme, detect, parse_declared

TYPES = ["DISE", "SYMP", "drug_name"]  # a type with the separator in it


def random_seq(rng: random.Random, scheme: Scheme, n: int) -> list[str]:
    letters = {"IOB2": "BI", "IOB1": "BI", "IOBES": "BIES", "BILOU": "BILU", "BMES": "BMES"}[scheme.name]
    return ["O" if rng.random() < 0.4 else f"{rng.choice(letters)}{scheme.sep}{rng.choice(TYPES)}" for _ in range(n)]


def _dash(seq: list[str], sep: str) -> list[str]:
    return [t if t == "O" else t[0] + "-" + t[2:] for t in seq] if sep != "-" else seq


@pytest.mark.parametrize("name,sep", [("IOB2", "-"), ("IOB2", "_"), ("IOB1", "-"), ("IOB1", "_")])
def test_bio_chunks_are_conllevals_on_random_sequences(name, sep):
    rng = random.Random(0)
    scheme = Scheme(name, sep)
    for _ in range(3000):
        seq = random_seq(rng, scheme, rng.randint(1, 12))
        assert scheme.chunks(seq) == get_entities(_dash(seq, sep)) == \
            [(t, a, b) for t, a, b in seqeval_default(_dash(seq, sep))], seq


@pytest.mark.parametrize("name,sep", [("IOBES", "-"), ("IOBES", "_"), ("BILOU", "-"), ("BILOU", "_"), ("BMES", "-"), ("BMES", "_")])
def test_strict_chunks_are_seqevals_strict_mode_on_random_sequences(name, sep):
    rng = random.Random(1)
    scheme = Scheme(name, sep)
    seqeval_scheme = BILOU if name == "BILOU" else IOBES
    for _ in range(3000):
        seq = random_seq(rng, scheme, rng.randint(1, 12))
        dashed = _dash(seq, sep)
        if name == "BMES":  # seqeval has no BMES: M is its I
            dashed = [("I" + t[1:]) if t[0] == "M" else t for t in dashed]
        theirs = sorted((e.tag, e.start, e.end - 1) for e in Entities([dashed], seqeval_scheme).entities[0])
        assert sorted(scheme.chunks(seq)) == theirs, seq


@pytest.mark.parametrize("name", ["IOB2", "IOB1", "IOBES", "BILOU", "BMES"])
def test_written_entities_chunk_back_to_themselves(name):
    rng = random.Random(2)
    scheme = Scheme(name, "_")
    for _ in range(500):
        seq = random_seq(rng, scheme, rng.randint(1, 15))
        ents = scheme.chunks(seq)
        written = scheme.write(ents, len(seq))
        assert scheme.chunks(written) == ents and scheme.repair(written) == written


def test_detection_by_letters_and_separator():
    assert detect([["B-X", "I-X", "O"]])[0] == Scheme("IOB2", "-")
    assert detect([["B_disease", "I_disease", "O"]])[0] == Scheme("IOB2", "_")
    assert detect([["S-X", "O", "B-Y", "E-Y"]])[0] == Scheme("IOBES", "-")
    assert detect([["B-X", "M-X", "E-X", "S-Y"]])[0] == Scheme("BMES", "-")
    assert detect([["U-X", "B-Y", "L-Y"]])[0] == Scheme("BILOU", "-")
    assert detect([["I-X", "I-X", "B-X", "O", "I-Y"]])[0] == Scheme("IOB1", "-")
    assert detect([["O", "I-X", "B-Y", "I-Y"]])[0] == Scheme("IOB2", "-")  # B opens after O: IOB2 (with noise)
    with pytest.raises(DataError, match="mix separators"):
        detect([["B-X", "I_X"]])


def test_declared_schemes_and_their_errors():
    assert parse_declared("BIOES") == Scheme("IOBES", "-") and parse_declared("bmes_") == Scheme("BMES", "_")
    assert parse_declared("BIO") == Scheme("IOB2", "-")
    with pytest.raises(DataError, match="expected auto or one of"):
        parse_declared("BMEWO")


def test_labels_follow_the_scheme():
    assert Scheme("IOB2", "-").labels(["B", "A"]) == ["O", "B-A", "I-A", "B-B", "I-B"]  # as ablate always had
    assert Scheme("BMES", "_").labels(["X"]) == ["O", "B_X", "M_X", "E_X", "S_X"]
