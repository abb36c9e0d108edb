"""`ablate data check` and `ablate data stats`: read, validate and describe corpora."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ablate.data.readers import JSONL_SUFFIXES, Sentence, read_corpus, word_level
from ablate.data.tags import Note, Repair, Unknown, repair_tags
from ablate.schemes import Scheme, resolve
from ablate.errors import DataError, UserError

LENGTH_LIMITS = (126, 254, 510)  # BERT's 128/256/512 positions less [CLS] and [SEP]


def parse_source(arg: str, genre: str | None = None) -> tuple[Path, str | None]:
    """`PATH[:GENRE]` -> (path, genre); `--genre` applies when the argument names none."""
    head, sep, tail = arg.rpartition(":")
    if sep and head and tail.isidentifier() and not Path(arg).exists():
        return Path(head), tail.lower()
    return Path(arg), genre.lower() if genre else None


def load_source(path: Path, genre: str | None, unknown: Unknown = "error",
                scheme: str = "auto") -> tuple[list[Sentence], list[Repair], list[Note], Scheme]:
    """Read and repair one file in its tag scheme (`auto`: detected from its tags). A CoNLL file with no genre
    named takes its file stem as genre."""
    if genre is None and path.suffix.lower() not in JSONL_SUFFIXES:
        genre = path.stem.lower()
    raw = read_corpus(path, genre)
    try:
        found = resolve(scheme, (s.tags for s in raw))
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    result = repair_tags(raw, str(path), unknown, found)
    return result.sentences, result.repairs, result.warnings, found


def unit(sentences: list[Sentence]) -> str:
    """`characters` for a character-level corpus (ROCLING), `tokens` when its tokens are mostly words."""
    return "tokens" if word_level(s.chars for s in sentences[:2000]) else "characters"


@dataclass
class CheckResult:
    files: list[dict] = field(default_factory=list)
    repairs: list[Repair] = field(default_factory=list)
    warnings: list[Note] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "files": self.files,
            "repairs": [r.to_json() for r in self.repairs],
            "warnings": [w.to_json() for w in self.warnings],
            "errors": self.errors,
        }


def check(args: list[str], genre: str | None = None, unknown: Unknown = "error", scheme: str = "auto") -> CheckResult:
    """Read every file; collect repairs, warnings and errors instead of stopping at the first."""
    result = CheckResult()
    for arg in args:
        path, g = parse_source(arg, genre)
        try:
            sents, repairs, warnings, found = load_source(path, g, unknown, scheme)
        except DataError as e:
            result.errors.extend(e.problems)
            continue
        result.files.append(
            {
                "path": str(path),
                "sentences": len(sents),
                "characters": sum(len(s) for s in sents),  # tokens, for a word-level file (see "unit")
                "unit": unit(sents),
                "entities": sum(len(found.chunks(s.tags)) for s in sents),
                "scheme": found.name,
                "separator": found.sep,
            }
        )
        result.repairs += repairs
        result.warnings += warnings
    return result


def render_check(result: CheckResult, max_warnings: int = 10) -> str:
    lines = [f"{f['path']}: {f['sentences']} sentences, {f['characters']} {f['unit']}, {f['entities']} entities; "
             f"tags {f['scheme']} with {f['separator']!r}"
             + (f"; {100 * f['unk_share']:.1f}% unknown to the tokenizer" if "unk_share" in f else "") for f in result.files]
    if result.repairs:
        lines.append(f"\n{len(result.repairs)} tag repairs:")
        lines += [f"  {r}" for r in result.repairs]
    if result.warnings:
        lines.append(f"\n{len(result.warnings)} warnings:")
        lines += [f"  {w}" for w in result.warnings[:max_warnings]]
        if len(result.warnings) > max_warnings:
            lines.append(f"  ... and {len(result.warnings) - max_warnings} more (--json lists them all)")
    if result.errors:
        lines.append(f"\n{len(result.errors)} errors:")
        lines += [f"  {e}" for e in result.errors]
    return "\n".join(lines)


def stats(args: list[str], genre: str | None = None, scheme: str = "auto") -> dict:
    """Entities per genre and type (the paper's Table 2) and sentence-length percentiles."""
    sentences: list[Sentence] = []
    chunks: dict[int, list] = {}  # id(sentence) -> its entities, each file in its own scheme
    for arg in args:
        path, g = parse_source(arg, genre)
        sents, _, _, found = load_source(path, g, scheme=scheme)
        sentences += sents
        chunks.update({id(s): found.chunks(s.tags) for s in sents})
    if not sentences:
        raise UserError("no sentences to describe")
    genres = sorted({s.genre for s in sentences})
    types = sorted({t for s in sentences for t, _, _ in chunks[id(s)]})
    table = {g: {t: 0 for t in types} for g in genres}
    per_genre = {g: {"sentences": 0, "characters": 0} for g in genres}
    for s in sentences:
        per_genre[s.genre]["sentences"] += 1
        per_genre[s.genre]["characters"] += len(s)
        for t, _, _ in chunks[id(s)]:
            table[s.genre][t] += 1
    lengths = sorted(len(s) for s in sentences)
    return {
        "sentences": len(sentences),
        "characters": sum(lengths),
        "unit": unit(sentences),
        "genres": per_genre,
        "entities": table,
        "entity_totals": {t: sum(table[g][t] for g in genres) for t in types},
        "lengths": {
            "mean": round(statistics.fmean(lengths), 2),
            "p50": _percentile(lengths, 50),
            "p95": _percentile(lengths, 95),
            "max": lengths[-1],
            **{f"over_{n}": sum(1 for x in lengths if x > n) for n in LENGTH_LIMITS},
        },
    }


def _percentile(sorted_values: list[int], q: float) -> int:
    # Nearest-rank percentile: a value that occurs in the data.
    k = max(0, min(len(sorted_values) - 1, int(-(-q * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


def render_stats(st: dict) -> str:
    genres = list(st["entities"])
    types = list(st["entity_totals"])
    width = max([6] + [len(t) for t in types])
    head = f"{'type':<{width}}" + "".join(f"{g.upper():>8}" for g in genres) + f"{'total':>8}"
    lines = [f"{st['sentences']} sentences, {st['characters']} {st['unit']}", "", head]
    for t in types:
        lines.append(f"{t:<{width}}" + "".join(f"{st['entities'][g][t]:>8}" for g in genres) + f"{st['entity_totals'][t]:>8}")
    totals = [sum(st["entities"][g].values()) for g in genres]
    lines.append(f"{'all':<{width}}" + "".join(f"{n:>8}" for n in totals) + f"{sum(totals):>8}")
    lines.append(f"{'sent.':<{width}}" + "".join(f"{st['genres'][g]['sentences']:>8}" for g in genres) + f"{st['sentences']:>8}")
    ln = st["lengths"]
    over = ", ".join(f"{ln[f'over_{n}']} > {n}" for n in LENGTH_LIMITS)
    lines += ["", f"sentence length ({st['unit']}): mean {ln['mean']}, p50 {ln['p50']}, p95 {ln['p95']}, max {ln['max']}; {over}"]
    return "\n".join(lines)
