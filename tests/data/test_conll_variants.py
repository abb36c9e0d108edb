"""CoNLL as other corpora write it: tabs, runs of spaces, several columns with the tag last, -DOCSTART-, and the
character-level ROCLING files (a literal space, U+3000) read exactly as before."""

from __future__ import annotations

import pytest

from ablate.data.readers import read_conll
from ablate.errors import DataError
from ablate.spec import StudySpec


def _write(tmp_path, text: str, name: str = "c.conll"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_tabs_runs_of_spaces_and_trailing_blanks_are_separators(tmp_path):
    p = _write(tmp_path, "頭\tB-SYMP\n痛  I-SYMP \n吃 \tO\n\n藥\t\tB-DRUG\n")
    sents = read_conll(p, "ft")
    assert [s.chars for s in sents] == [("頭", "痛", "吃"), ("藥",)]  # "吃 \tO": no stray space on the token
    assert [s.tags for s in sents] == [("B-SYMP", "I-SYMP", "O"), ("B-DRUG",)]


def test_a_literal_space_and_full_width_blanks_stay_characters(tmp_path):
    p = _write(tmp_path, "A O\n  O\n\u3000 O\n\u00a0\tO\nB O\n")
    [s] = read_conll(p, "ft")
    assert s.chars == ("A", " ", "\u3000", "\u00a0", "B")


def test_conll2003_four_columns_docstart_and_the_tag_column(tmp_path):
    p = _write(tmp_path, "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n"
                         "-DOCSTART- -X- -X- O\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n")
    sents = read_conll(p, "news")
    assert [s.chars for s in sents] == [("EU", "rejects"), ("Peter", "Blackburn")]  # a DOCSTART also ends one
    assert [s.tags for s in sents] == [("B-ORG", "O"), ("B-PER", "I-PER")]
    chunks = read_conll(p, "news", tag_column=2)
    assert chunks[0].tags == ("B-NP", "B-VP")
    with pytest.raises(DataError, match="tag_column 7"):
        read_conll(p, "news", tag_column=7)


def test_lines_of_different_widths_name_the_line(tmp_path):
    p = _write(tmp_path, "EU NNP B-ORG\nrejects O\n")
    with pytest.raises(DataError, match=r"c.conll:2: 2 columns, but line 1 has 3"):
        read_conll(p, "news")
    p = _write(tmp_path, "EU\n", "one.conll")
    with pytest.raises(DataError, match=r"one.conll:1: expected a token and its tag"):
        read_conll(p, "news")


def test_the_rocling_files_read_as_before(rocling):
    ft = read_conll(rocling / "rocling23_truth_FT.txt", "ft")
    assert len(ft) == 2035 and sum(len(s) for s in ft) == 149276
    wa = read_conll(rocling / "rocling22_chner_truth.txt", "wa")
    assert all(len(s.chars) == len(s.tags) and all(len(c) == 1 for c in s.chars) for s in wa)


def test_the_tag_column_is_a_file_setting_hashed_only_when_set(tmp_path):
    from ablate.grid import data_hashes, expand, run_id

    (tmp_path / "t.conll").write_text("頭 x B-SYMP\n痛 x I-SYMP\n", encoding="utf-8")
    base = {"name": "s", "data": {"root": str(tmp_path), "train": [{"path": "t.conll", "genre": "ft"}],
                                  "dev": {"split": 0.5}}, "backbones": {"b": {"scratch": "bert"}}, "grid": {"backbone": ["b"]}}
    default = StudySpec.model_validate(base)
    last = StudySpec.model_validate({**base, "data": {**base["data"], "train": [{"path": "t.conll", "genre": "ft", "tag_column": -1}]}})
    other = StudySpec.model_validate({**base, "data": {**base["data"], "train": [{"path": "t.conll", "genre": "ft", "tag_column": 1}]}})
    ids = [run_id(expand(s)[0], data_hashes(s)) for s in (default, last, other)]
    assert ids[0] == ids[1] != ids[2]


def test_a_line_of_only_full_width_blanks_ends_a_sentence_and_bad_tag_columns_are_refused(tmp_path):
    p = _write(tmp_path, "頭 O\n\u3000\n痛 O\n")
    assert [s.chars for s in read_conll(p, "ft")] == [("頭",), ("痛",)]
    p = _write(tmp_path, "EU NNP B-ORG\n", "w.conll")
    for bad in (0, -3, 3):
        with pytest.raises(DataError, match=f"tag_column {bad}"):
            read_conll(p, "news", tag_column=bad)
