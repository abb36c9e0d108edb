"""Readers and writers: ROCLING jsonl, CoNLL character-per-line, prediction files -> `Sentence`.

Readers return tags exactly as the file has them; `ablate.data.tags.repair` fixes and
reports them. Every error names the file and the line (or jsonl record).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ablate.errors import DataError
from ablate.spec.schema import JSONL_SUFFIXES  # noqa: F401 - re-exported for readers of files


@dataclass(frozen=True)
class Sentence:
    """One sentence: its characters and one tag per character.

    `line` is where it starts in its file (1-based): for CoNLL files character i is on
    line `line + i`; for jsonl files `line` is the record's line and `line_per_char` is False.
    """

    id: str
    genre: str
    chars: tuple[str, ...]
    tags: tuple[str, ...]
    line: int = 0
    line_per_char: bool = True
    words: tuple[int, ...] = ()  # word lengths in characters, where the corpus segments it (jsonl `word`)

    def __len__(self) -> int:
        return len(self.chars)

    def char_line(self, i: int) -> int:
        """The file line of character i (CoNLL) or of the whole record (jsonl)."""
        return self.line + i if self.line_per_char else self.line

    def with_tags(self, tags: tuple[str, ...] | list[str]) -> "Sentence":
        return Sentence(self.id, self.genre, self.chars, tuple(tags), self.line, self.line_per_char, self.words)


def word_level(sentences: Iterable[Iterable[str]]) -> bool:
    """True when a corpus's tokens are mostly words (more than a fifth longer than one character), not characters."""
    n = multi = 0
    for s in sentences:
        for t in s:
            n, multi = n + 1, multi + (len(t) > 1)
    return n > 0 and multi > 0.2 * n


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a data file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: invalid UTF-8 (byte {data[e.start]:#04x} at offset {e.start})") from None
    if not text.strip():
        raise DataError(f"{path}: empty file")
    return text


_BLANKS = re.compile(r"[ \t]+")
DOCSTART = "-DOCSTART-"


def _split_columns(line: str) -> list[str]:
    """A CoNLL line's columns: separated by one space, tabs or runs of spaces and tabs (never by other
    whitespace: U+3000 and U+00A0 are characters of the ROCLING files). A line that opens with a space then a
    separator holds a literal space as its token (`"  O"`, `" \tO"`)."""
    if len(line) > 2 and line[0] == " " and line[1] in " \t" and line[2] not in " \t":
        return [" ", *_BLANKS.split(line[2:].strip(" \t"))]
    return _BLANKS.split(line.strip(" \t"))


def read_columns(path: str | Path, ncols: int | None) -> list[tuple[int, list[list[str]]]]:
    """Blocks of a column file: [(first line, [[col, ...] per token])], one per sentence.

    `ncols` None: any number of columns from 2 up (CoNLL-2003's `word POS chunk NER`), the same on every line of
    the file. `-DOCSTART-` lines (document breaks) end a sentence and are skipped.
    """
    path = Path(path)
    text = _read_text(path)
    blocks: list[tuple[int, list[list[str]]]] = []
    current: list[list[str]] = []
    start = 0
    problems: list[str] = []
    width: tuple[int, int] | None = None  # (columns, the line that set it), when ncols is None
    for n, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():  # blank (a line of only U+3000 too, as before): the sentence ends
            if current:
                blocks.append((start, current))
                current = []
            continue
        parts = _split_columns(line)
        if parts[0] == DOCSTART:
            if current:
                blocks.append((start, current))
                current = []
            continue
        if ncols is not None and len(parts) != ncols:
            problems.append(f"{path}:{n}: expected {ncols} columns separated by spaces or tabs, got {line!r}")
            continue
        if ncols is None:
            if len(parts) < 2:
                problems.append(f"{path}:{n}: expected a token and its tag separated by spaces or tabs, got {line!r}")
                continue
            if width is None:
                width = (len(parts), n)
            elif len(parts) != width[0]:
                problems.append(f"{path}:{n}: {len(parts)} columns, but line {width[1]} has {width[0]}: {line!r}")
                continue
        if not current:
            start = n
        current.append(parts)
        if len(problems) > 50:
            break
    if current:
        blocks.append((start, current))
    if problems:
        raise DataError(problems)
    return blocks


def read_conll(path: str | Path, genre: str, tag_column: int = -1) -> list[Sentence]:
    """Read a CoNLL file: the token in the first column, the tag in `tag_column` (default the last: `char TAG`,
    `word POS chunk NER`); sentences end at an empty line or a `-DOCSTART-` line."""
    path = Path(path)
    blocks = read_columns(path, None)
    width = len(blocks[0][1][0]) if blocks else 2
    if not -width < tag_column < width or tag_column % width == 0:
        raise DataError(f"{path}: tag_column {tag_column}, but its lines have {width} columns "
                        "(the token is column 0; the tag defaults to the last)")
    return [
        Sentence(f"{path.stem}-{k:05d}", genre.lower(), tuple(r[0] for r in rows), tuple(r[tag_column] for r in rows), start)
        for k, (start, rows) in enumerate(blocks)
    ]


def read_jsonl(path: str | Path, genre: str | None = None) -> list[Sentence]:
    """Read ROCLING jsonl records (`character` and `character_label`; `word`, when it spells the same
    characters, as the word boundaries that whole-word masking uses).

    The record's own `genre` is used, lower-cased, unless `genre` is given.
    """
    path = Path(path)
    text = _read_text(path)
    sentences: list[Sentence] = []
    problems: list[str] = []
    for n, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as e:
            problems.append(f"{where}: not valid JSON ({e.msg})")
            continue
        if not isinstance(rec, dict):
            problems.append(f"{where}: expected a JSON object, got {type(rec).__name__}")
            continue
        missing = [k for k in ("character", "character_label") if k not in rec]
        if genre is None and "genre" not in rec:
            missing.append("genre")
        if missing:
            problems.append(f"{where}: record lacks {', '.join(missing)}")
            continue
        chars, tags = rec["character"], rec["character_label"]
        if not (isinstance(chars, list) and isinstance(tags, list)) or not all(
            isinstance(x, str) for x in chars + tags
        ):
            problems.append(f"{where}: character and character_label must be lists of strings")
            continue
        if len(chars) != len(tags):
            problems.append(f"{where}: {len(chars)} characters but {len(tags)} labels")
            continue
        if not chars:
            continue
        rid = str(rec.get("id", f"{path.stem}-{len(sentences):05d}"))
        g = (genre or str(rec["genre"])).lower()
        words = rec.get("word")
        seg = (tuple(len(w) for w in words) if isinstance(words, list) and all(isinstance(w, str) and w for w in words)
               and "".join(words) == "".join(chars) else ())  # used only where it matches the characters exactly
        sentences.append(Sentence(rid, g, tuple(chars), tuple(tags), n, line_per_char=False, words=seg))
    if problems:
        raise DataError(problems)
    if not sentences:
        raise DataError(f"{path}: no sentences")
    return sentences


def read_corpus(path: str | Path, genre: str | None = None, tag_column: int = -1) -> list[Sentence]:
    """Read jsonl (by suffix) or CoNLL; a CoNLL file needs its genre named."""
    path = Path(path)
    if path.suffix.lower() in JSONL_SUFFIXES:
        return read_jsonl(path, genre)
    if not genre:
        raise DataError(f"{path}: a CoNLL file carries no genre; name it (e.g. {path}:ft or --genre ft)")
    return read_conll(path, genre, tag_column)


def read_predictions(path: str | Path, gold: list[Sentence] | None = None) -> tuple[list[Sentence], list[list[str]]]:
    """Read predictions: `char PRED` against `gold`, or `char GOLD PRED` when gold is None.

    Returns the gold sentences (raw tags) and the predicted tags per sentence.
    """
    path = Path(path)
    if gold is None:
        blocks = read_columns(path, 3)
        sents = [
            Sentence(f"{path.stem}-{k:05d}", "", tuple(r[0] for r in rows), tuple(r[1] for r in rows), start)
            for k, (start, rows) in enumerate(blocks)
        ]
        return sents, [[r[2] for r in rows] for _, rows in blocks]
    blocks = read_columns(path, 2)
    if len(blocks) != len(gold):
        raise DataError(f"{path}: {len(blocks)} sentences but the gold file has {len(gold)}")
    preds: list[list[str]] = []
    for (start, rows), g in zip(blocks, gold):
        if len(rows) != len(g.chars):
            raise DataError(
                f"{path}:{start}: sentence has {len(rows)} characters but gold line {g.line} has {len(g.chars)}"
            )
        for i, (r, ch) in enumerate(zip(rows, g.chars)):
            if r[0] != ch:
                raise DataError(f"{path}:{start + i}: character {r[0]!r} but gold line {g.char_line(i)} has {ch!r}")
        preds.append([r[1] for r in rows])
    return gold, preds


def write_conll(sentences: list[Sentence], path: str | Path, tags: list[list[str]] | None = None) -> None:
    """Write `char TAG` lines (or `char PRED` with `tags`), a blank line after each sentence."""
    out: list[str] = []
    for k, s in enumerate(sentences):
        for ch, t in zip(s.chars, tags[k] if tags is not None else s.tags):
            out.append(f"{ch} {t}")
        out.append("")
    Path(path).write_text("\n".join(out) + "\n", encoding="utf-8", newline="\n")


def write_jsonl(sentences: list[Sentence], path: str | Path) -> None:
    """Write ROCLING-style jsonl records (word fields left empty: ablate is character-level)."""
    with Path(path).open("w", encoding="utf-8", newline="\n") as f:
        for s in sentences:
            rec = {
                "id": s.id,
                "genre": s.genre,
                "sentence": "".join(s.chars),
                "word": [],
                "word_label": [],
                "character": list(s.chars),
                "character_label": list(s.tags),
            }
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
