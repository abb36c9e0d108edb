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


def test_iob2_with_either_separator_gets_the_same_crf_constraints():
    from ablate.models.crf import allowed_transitions

    dash, under = Scheme("IOB2", "-"), Scheme("IOB2", "_")
    a = allowed_transitions(dash.labels(["X", "Y"]), dash)
    b = allowed_transitions(under.labels(["X", "Y"]), under)
    assert all((x == y).all() for x, y in zip(a, b))


def test_strict_constraints_allow_exactly_the_well_formed_sequences():
    import itertools

    from ablate.models.crf import allowed_transitions

    for name in ("IOBES", "BILOU", "BMES"):
        scheme = Scheme(name, "-")
        labels = scheme.labels(["X", "Y"])
        start, trans, _ = allowed_transitions(labels, scheme)
        for seq in itertools.product(range(len(labels)), repeat=3):
            ok = bool(start[seq[0]]) and all(bool(trans[a, b]) for a, b in zip(seq, seq[1:]))
            tags = [labels[i] for i in seq]
            closed = scheme.parse(tags[-1])[0] in ("O", "E", "S")  # ends are free (windows); judge closed ones
            if closed:
                assert ok == (scheme.repair(tags) == tags), (name, tags)


def test_ill_formed_strict_gold_is_repaired_and_reported(tmp_path):
    from ablate.data.readers import Sentence
    from ablate.data.tags import repair_tags

    s = Sentence("s", "ft", tuple("abcd"), ("B-X", "O", "S-Y", "I-Y"), 1)
    r = repair_tags([s], "f.txt", scheme=Scheme("IOBES", "-"))
    assert r.sentences[0].tags == ("O", "O", "S-Y", "O")
    assert [(x.from_, x.to) for x in r.repairs] == [("B-X", "O"), ("I-Y", "O")]


def test_a_stray_strict_letter_in_an_iob2_file_is_an_error_not_a_new_scheme(tmp_path):
    from ablate.data.stats import check

    p = tmp_path / "t.txt"
    p.write_text("".join(f"{c} {t}\n" for c, t in zip("abcdefghij" * 20, ["B-X", "I-X", "O", "O", "B-Y"] * 40)) +
                 "z S-X\n", encoding="utf-8")
    result = check([f"{p}:ft"])
    assert result.errors and "invalid tag 'S-X'" in result.errors[0] and "IOB2" in result.errors[0]


def test_the_scorer_reads_gold_in_its_own_scheme(tmp_path):
    from ablate.scoring import score_files

    gold = tmp_path / "g.txt"
    gold.write_text("a S-X\nb O\nc B-Y\nd E-Y\n", encoding="utf-8")
    pred = tmp_path / "p.txt"
    pred.write_text("a S-X\nb O\nc B-Y\nd I-Y\n", encoding="utf-8")  # the second entity is ill-formed: no entity
    result, _ = score_files([("ft", gold, pred)])
    assert (result.genres["ft"].correct, result.genres["ft"].found, result.genres["ft"].phrases) == (1, 1, 2)
