"""Entity-level scoring as the official ROCLING scorer (conlleval) does it, per genre and macro.

Entities are chunked as conlleval (and seqeval's default mode) chunk them: an `I-X` after `O`
or another type opens a new entity. The chunker is a direct port of conlleval's
startOfChunk/endOfChunk (seqeval's own functions import scikit-learn, 1 s and a heavy
dependency on every evaluation); tests/test_metrics.py checks it against seqeval tag for tag.
Counts, P/R/F1 and the per-type lines follow conlleval exactly; the ranking metric is the
mean of the genre F1s (ROCLING 2023).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ablate.schemes import IOB2, Scheme, end_of_chunk, start_of_chunk


@dataclass(frozen=True)
class TypeScore:
    precision: float
    recall: float
    f1: float
    found: int
    phrases: int
    correct: int


@dataclass(frozen=True)
class Score:
    """One genre (or one file): fractions in [0, 1], counts as conlleval prints them."""

    precision: float
    recall: float
    f1: float
    accuracy: float
    accuracy_non_o: float
    tokens: int
    phrases: int
    found: int
    correct: int
    per_type: dict[str, TypeScore] = field(default_factory=dict)


@dataclass(frozen=True)
class Macro:
    """Means over genres: f1 is the ROCLING 2023 ranking metric."""

    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class GenreScores:
    genres: dict[str, Score]
    macro: Macro

    def to_json(self) -> dict:
        return {"genres": {g: score_json(s) for g, s in self.genres.items()}, "macro": asdict(self.macro)}


def _prf(correct: int, found: int, phrases: int) -> tuple[float, float, float]:
    p = correct / found if found else 0.0
    r = correct / phrases if phrases else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def get_entities(seq: list[str]) -> list[tuple[str, int, int]]:
    """conlleval's chunks of one sentence as (type, first, last), like seqeval's `get_entities`."""
    out: list[tuple[str, int, int]] = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, chunk in enumerate([*seq, "O"]):
        tag, type_ = chunk[0], chunk[1:].split("-", maxsplit=1)[-1] or "_"
        if end_of_chunk(prev_tag, tag, prev_type, type_):
            out.append((prev_type, begin, i - 1))
        if start_of_chunk(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return out


def _entities(seqs: list[list[str]], scheme: Scheme | None = None) -> set[tuple[int, str, int, int]]:
    chunk = get_entities if scheme is None or scheme == IOB2 else scheme.chunks
    return {(k, t, s, e) for k, seq in enumerate(seqs) for t, s, e in chunk(list(seq))}


def score(gold: list[list[str]], pred: list[list[str]], scheme: Scheme | None = None) -> Score:
    """conlleval's numbers for one set of sentences (gold and predicted tags, aligned); entities chunked in
    `scheme` (default IOB2, as conlleval; IOBES / BILOU / BMES strictly, as seqeval's strict mode)."""
    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred)):
        raise ValueError("gold and predictions differ in shape")
    true, guess = _entities(gold, scheme), _entities(pred, scheme)
    hit = true & guess
    types = sorted({e[1] for e in true | guess})
    per_type = {}
    for t in types:
        n_true = sum(1 for e in true if e[1] == t)
        n_guess = sum(1 for e in guess if e[1] == t)
        n_hit = sum(1 for e in hit if e[1] == t)
        per_type[t] = TypeScore(*_prf(n_hit, n_guess, n_true), found=n_guess, phrases=n_true, correct=n_hit)
    chars = sum(len(g) for g in gold)
    same = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p))
    non_o = sum(1 for g in gold for a in g if a != "O")
    same_non_o = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p) if a != "O")
    # The official scorer feeds conlleval one boundary token per sentence (both "O"), so its
    # token count and accuracy include them: 149,276 FT characters + 2,035 sentences = 151,311.
    tokens = chars + len(gold)
    return Score(
        *_prf(len(hit), len(guess), len(true)),
        accuracy=(same + len(gold)) / tokens if tokens else 0.0,
        accuracy_non_o=same_non_o / non_o if non_o else 0.0,
        tokens=tokens,
        phrases=len(true),
        found=len(guess),
        correct=len(hit),
        per_type=per_type,
    )


def macro(scores: dict[str, Score]) -> Macro:
    n = len(scores)
    if not n:
        return Macro(0.0, 0.0, 0.0)
    return Macro(
        sum(s.precision for s in scores.values()) / n,
        sum(s.recall for s in scores.values()) / n,
        sum(s.f1 for s in scores.values()) / n,
    )


def score_genres(pairs: dict[str, tuple[list[list[str]], list[list[str]]]], scheme: Scheme | None = None) -> GenreScores:
    """Score each genre's (gold, pred) and average the genres as the official ranking does."""
    genres = {g: score(gold, pred, scheme) for g, (gold, pred) in pairs.items()}
    return GenreScores(genres, macro(genres))


def score_json(s: Score) -> dict:
    return {
        "precision": s.precision,
        "recall": s.recall,
        "f1": s.f1,
        "accuracy": s.accuracy,
        "phrases": s.phrases,
        "found": s.found,
        "correct": s.correct,
        "per_type": {
            t: {"precision": v.precision, "recall": v.recall, "f1": v.f1, "found": v.found}
            for t, v in s.per_type.items()
        },
    }


def _pct(x: float) -> str:
    return f"{100 * x:6.2f}%"


def format_conlleval(name: str, s: Score) -> str:
    """The official scorer's block for one genre, in conlleval's layout."""
    lines = [
        f"== {name}",
        f"processed {s.tokens} tokens with {s.phrases} phrases; found: {s.found} phrases; correct: {s.correct}.",
        f"accuracy: {_pct(s.accuracy_non_o)}; (non-O)",
        f"accuracy: {_pct(s.accuracy)}; precision: {_pct(s.precision)}; recall: {_pct(s.recall)}; FB1: {100 * s.f1:6.2f}",
    ]
    for t, v in s.per_type.items():
        lines.append(
            f"{t:>17}: precision: {_pct(v.precision)}; recall: {_pct(v.recall)}; FB1: {100 * v.f1:6.2f}  {v.found}"
        )
    return "\n".join(lines)


def format_scores(result: GenreScores) -> str:
    """Summary lines per genre, the conlleval blocks, and the macro line when there are several genres."""
    head = [
        f"{g.upper()}: accuracy: {_pct(s.accuracy)}; precision: {_pct(s.precision)}; "
        f"recall: {_pct(s.recall)}; FB1: {100 * s.f1:6.2f}"
        for g, s in result.genres.items()
    ]
    blocks = [format_conlleval(g.upper(), s) for g, s in result.genres.items()]
    out = "\n".join(head) + "\n\n\n" + "\n\n".join(blocks)
    if len(result.genres) > 1:
        m = result.macro
        out += (
            f"\n\n== MACRO over {len(result.genres)} genres ({', '.join(g.upper() for g in result.genres)})\n"
            f"precision: {_pct(m.precision)}; recall: {_pct(m.recall)}; FB1: {100 * m.f1:6.2f}"
        )
    return out
