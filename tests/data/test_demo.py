"""The synthetic demo corpus: deterministic, complete, consistent across formats, valid BIO."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate.data.demo import ENTITY_TYPES, GENRES, generate_demo, make_demo_corpus
from ablate.data.readers import read_conll, read_jsonl
from ablate.errors import UserError

SPLITS = ("train", "dev", "test")
AMBIGUOUS = ("頭", "糖", "心", "手")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_demo_corpus(tmp_path_factory.mktemp("demo"), sentences=1200, seed=0)


def _entities(tags: tuple[str, ...]) -> list[tuple[str, int, int]]:
    spans, start = [], None
    for i, t in enumerate(tags + ("O",)):
        if start is not None and not t.startswith("I-"):
            spans.append((tags[start][2:], start, i))
            start = None
        if t.startswith("B-"):
            start = i
    return spans


def test_writes_every_file_it_returns(corpus: dict[str, Path]) -> None:
    expected = {f"{s}.jsonl" for s in SPLITS} | {f"{s}_{g}.txt" for s in SPLITS for g in GENRES} | {"README.md"}
    assert set(corpus) == expected
    for name, path in corpus.items():
        assert path.name == name and path.stat().st_size > 0
    readme = corpus["README.md"].read_text(encoding="utf-8")
    assert "synthetic" in readme and "seed=0" in readme and "| train | 840 |" in readme


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, corpus: dict[str, Path]) -> None:
    again = make_demo_corpus(tmp_path / "a", sentences=1200, seed=0)
    for name, path in corpus.items():
        assert again[name].read_bytes() == path.read_bytes(), name
    other = make_demo_corpus(tmp_path / "b", sentences=1200, seed=1)
    assert other["train.jsonl"].read_bytes() != corpus["train.jsonl"].read_bytes()


def test_split_sizes_and_genres(corpus: dict[str, Path]) -> None:
    parts = {s: read_jsonl(corpus[f"{s}.jsonl"]) for s in SPLITS}
    assert [len(parts[s]) for s in SPLITS] == [840, 180, 180]
    for sents in parts.values():
        counts = [sum(x.genre == g for x in sents) for g in GENRES]
        assert max(counts) - min(counts) <= 1
    ids = [x.id for sents in parts.values() for x in sents]
    assert len(set(ids)) == len(ids)
    assert parts["train"][0].id.startswith("demo-ft-") and "demo-sm-00042" in ids


def test_train_has_all_types_and_genres(corpus: dict[str, Path]) -> None:
    train = read_jsonl(corpus["train.jsonl"])
    types = {t for s in train for t, _, _ in _entities(s.tags)}
    assert types == set(ENTITY_TYPES)
    assert {s.genre for s in train} == set(GENRES)


def test_jsonl_and_conll_hold_the_same_sentences(corpus: dict[str, Path]) -> None:
    for split in SPLITS:
        from_jsonl = read_jsonl(corpus[f"{split}.jsonl"])
        for genre in GENRES:
            from_conll = read_conll(corpus[f"{split}_{genre}.txt"], genre)
            want = [(s.chars, s.tags) for s in from_jsonl if s.genre == genre]
            assert [(s.chars, s.tags) for s in from_conll] == want


def test_tags_are_valid_bio() -> None:
    allowed = {"O"} | {f"{p}-{t}" for p in "BI" for t in ENTITY_TYPES}
    for s in generate_demo(1200, seed=3):
        assert len(s.chars) == len(s.tags) and all(len(c) == 1 and not c.isspace() for c in s.chars)
        prev = "O"
        for tag in s.tags:
            assert tag in allowed, (s.id, tag)
            if tag.startswith("I-"):
                assert prev != "O" and prev[2:] == tag[2:], (s.id, prev, tag)
            prev = tag


def test_about_ten_percent_without_entities() -> None:
    sents = generate_demo(1200, seed=0)
    empty = sum(all(t == "O" for t in s.tags) for s in sents) / len(sents)
    assert 0.06 <= empty <= 0.14


def test_ambiguous_characters_appear_inside_and_outside_entities() -> None:
    inside, outside = set(), set()
    for s in generate_demo(1200, seed=0):
        for ch, tag in zip(s.chars, s.tags):
            (outside if tag == "O" else inside).add(ch)
    assert all(ch in inside and ch in outside for ch in AMBIGUOUS), (inside & set(AMBIGUOUS), outside)


def test_entities_vary_in_length_and_script() -> None:
    sents = generate_demo(1200, seed=0)
    spans = [(s, t, a, b) for s in sents for t, a, b in _entities(s.tags)]
    lengths = {b - a for _, _, a, b in spans}
    assert 1 in lengths and max(lengths) >= 7
    texts = ["".join(s.chars[a:b]) for s, _, a, b in spans]
    assert any(any("A" <= c <= "Z" for c in x) for x in texts)  # half-width Latin: MRI, B12
    assert any(any("\uff01" <= c <= "\uff5e" for c in x) for x in texts)  # full-width: Ｃ型肝炎
    # Adjacent entities: an entity starts right where another ends.
    assert any(b < len(s.tags) and s.tags[b].startswith("B-") for s, _, _, b in spans)


def test_some_sentences_are_long() -> None:
    lengths = [len(s) for s in generate_demo(1200, seed=0)]
    assert sum(n > 150 for n in lengths) >= 5
    assert sorted(lengths)[len(lengths) // 2] < 60  # most stay short


def test_small_corpus_keeps_every_genre_in_every_split(tmp_path: Path) -> None:
    files = make_demo_corpus(tmp_path, sentences=20, seed=0)
    for split in SPLITS:
        for genre in GENRES:
            assert read_conll(files[f"{split}_{genre}.txt"], genre)


def test_too_few_sentences_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="at least"):
        make_demo_corpus(tmp_path, sentences=5)
