"""Tag repair is explicit and reported; anything else outside BIO is an error naming file:line."""

from __future__ import annotations

import pytest

from ablate.data.readers import Sentence, read_conll
from ablate.data.tags import entity_types, label_list, repair_tags, unseen_types
from ablate.metrics import get_entities
from ablate.errors import DataError


def _s(tags, line=1):
    return Sentence("s", "ft", tuple("x" * len(tags)), tuple(tags), line)


def test_known_noise_is_repaired_and_reported_with_lines():
    r = repair_tags([_s(["B-CHEM", "i-CHEM", "T-TIME", "O-SYMP"], line=10)], "f.txt")
    assert r.sentences[0].tags == ("B-CHEM", "I-CHEM", "B-TIME", "O")
    assert [(x.line, x.from_, x.to) for x in r.repairs] == [(11, "i-CHEM", "I-CHEM"), (12, "T-TIME", "B-TIME"), (13, "O-SYMP", "O")]


def test_other_invalid_tags_are_errors_unless_mapped_to_o():
    with pytest.raises(DataError, match=r"f.txt:2: invalid tag 'X-BODY'"):
        repair_tags([_s(["O", "X-BODY", "BODY"])], "f.txt")
    r = repair_tags([_s(["O", "X-BODY"])], "f.txt", unknown="O")
    assert r.sentences[0].tags == ("O", "O") and r.repairs[0].to == "O"


def test_i_after_o_or_other_type_warns_and_keeps_the_tag():
    r = repair_tags([_s(["O", "I-BODY", "I-SYMP", "B-DRUG", "I-DRUG"])], "f.txt")
    assert r.sentences[0].tags == ("O", "I-BODY", "I-SYMP", "B-DRUG", "I-DRUG")
    assert [w.line for w in r.warnings] == [2, 3]


def test_entities_follow_conlleval():
    assert get_entities(["O", "I-A", "I-A", "B-A", "I-B", "O"]) == [("A", 1, 2), ("A", 3, 3), ("B", 4, 4)]


def test_label_set_is_inferred_not_hard_coded():
    sents = [_s(["B-GENE", "I-GENE", "O", "B-CELL"])]
    assert label_list(entity_types(sents)) == ["O", "B-CELL", "I-CELL", "B-GENE", "I-GENE"]
    [note] = unseen_types(["GENE"], sents, "dev.txt")
    assert "CELL" in note.message


def test_real_2022_file_has_exactly_the_documented_noise(rocling):
    r = repair_tags(read_conll(rocling / "rocling22_chner_truth.txt", "wa"), "wa")
    assert sorted((x.from_, x.to) for x in r.repairs) == [("O-SYMP", "O"), ("i-CHEM", "I-CHEM")]
    assert len(entity_types(r.sentences)) == 10
