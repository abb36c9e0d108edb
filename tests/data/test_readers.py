"""Readers: both file layouts, line endings, BOM, and errors that name file and line."""

from __future__ import annotations

import json

import pytest

from ablate.data.readers import read_conll, read_corpus, read_jsonl, read_predictions, write_conll, write_jsonl
from ablate.errors import DataError


def test_conll_crlf_bom_whitespace_separators_and_trailing_blanks(tmp_path):
    p = tmp_path / "x.txt"
    p.write_bytes("\ufeff頭 B-BODY\r\n痛 I-BODY\r\n \r\n吃 O\r\n  O\r\n藥 B-DRUG\r\n\r\n\r\n".encode("utf-8"))
    sents = read_conll(p, "FT")
    assert [s.chars for s in sents] == [("頭", "痛"), ("吃", " ", "藥")]
    assert [s.tags for s in sents] == [("B-BODY", "I-BODY"), ("O", "O", "B-DRUG")]
    assert sents[0].genre == "ft"
    assert (sents[1].line, sents[1].char_line(2)) == (4, 6)


def test_conll_errors_name_file_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("頭 B-BODY\n痛\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.txt:2: expected a token and its tag"):
        read_conll(p, "ft")
    p.write_bytes(b"\xe9\xa0\xad O\n\xff O\n")
    with pytest.raises(DataError, match=r"bad.txt:2: invalid UTF-8"):
        read_conll(p, "ft")
    p.write_text("\n \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty file"):
        read_conll(p, "ft")
    with pytest.raises(DataError, match="no such file"):
        read_conll(tmp_path / "missing.txt", "ft")


def test_jsonl_uses_character_fields_and_lowercases_genre(tmp_path):
    p = tmp_path / "x.jsonl"
    rec = {"id": "7", "genre": "SM", "sentence": "頭痛", "word": ["頭痛"], "word_label": ["SYMP"],
           "character": ["頭", "痛"], "character_label": ["B-SYMP", "I-SYMP"]}
    p.write_text(json.dumps(rec, ensure_ascii=False) + "\r\n", encoding="utf-8")
    [s] = read_jsonl(p)
    assert (s.id, s.genre, s.chars, s.tags, s.line) == ("7", "sm", ("頭", "痛"), ("B-SYMP", "I-SYMP"), 1)


def test_jsonl_length_mismatch_and_bad_json_name_the_record(tmp_path):
    p = tmp_path / "x.jsonl"
    good = {"genre": "ft", "character": ["a"], "character_label": ["O"]}
    bad = {"genre": "ft", "character": ["a", "b"], "character_label": ["O"]}
    p.write_text(json.dumps(good) + "\n{oops\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_jsonl(p)
    assert "x.jsonl:2: not valid JSON" in str(e.value)
    assert "x.jsonl:3: 2 characters but 1 labels" in str(e.value)


def test_read_corpus_requires_a_genre_for_conll(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("a O\n", encoding="utf-8")
    with pytest.raises(DataError, match="carries no genre"):
        read_corpus(p)


def test_write_then_read_round_trips_both_formats(tmp_path, rocling):
    sents = read_jsonl(rocling / "healthner_test.jsonl")[:50]
    write_jsonl(sents, tmp_path / "a.jsonl")
    write_conll(sents, tmp_path / "a.txt")
    again = read_jsonl(tmp_path / "a.jsonl")
    conll = read_conll(tmp_path / "a.txt", "x")
    assert [(s.chars, s.tags, s.genre) for s in again] == [(s.chars, s.tags, s.genre) for s in sents]
    assert [(s.chars, s.tags) for s in conll] == [(s.chars, s.tags) for s in sents]


def test_real_files_read_completely(rocling):
    assert len(read_jsonl(rocling / "healthner_test.jsonl")) == 2531
    wa = read_conll(rocling / "rocling22_chner_truth.txt", "wa")
    assert (len(wa), sum(len(s) for s in wa)) == (3205, 118116)
    ft = read_conll(rocling / "rocling23_truth_FT.txt", "ft")
    assert (len(ft), sum(len(s) for s in ft)) == (2035, 149276)


def test_predictions_two_column_against_gold_and_three_column(tmp_path):
    gold = tmp_path / "g.txt"
    gold.write_text("頭 B-BODY\n痛 I-BODY\n\n吃 O\n", encoding="utf-8")
    pred = tmp_path / "p.txt"
    pred.write_text("頭 B-BODY\n痛 O\n\n吃 O\n", encoding="utf-8")
    g, p = read_predictions(pred, read_conll(gold, "ft"))
    assert p == [["B-BODY", "O"], ["O"]]
    three = tmp_path / "3.txt"
    three.write_text("頭 B-BODY B-BODY\n痛 I-BODY O\n", encoding="utf-8")
    g, p = read_predictions(three)
    assert g[0].tags == ("B-BODY", "I-BODY") and p == [["B-BODY", "O"]]
    pred.write_text("頭 B-BODY\n疼 O\n\n吃 O\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"p.txt:2: character '疼' but gold line 2 has '痛'"):
        read_predictions(pred, read_conll(gold, "ft"))
