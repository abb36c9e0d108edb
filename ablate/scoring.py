"""`ablate score`: read gold and prediction files per genre and score them with `ablate.metrics`."""

from __future__ import annotations

from pathlib import Path

from ablate.data.readers import read_conll, read_predictions
from ablate.data.tags import repair_tags
from ablate.errors import UserError
from ablate.metrics import GenreScores, score_genres

# (genre, gold path or None for a 3-column file, prediction path)
FilePair = tuple[str, Path | None, Path]


def parse_genre_args(files: list[str], genres: list[str]) -> list[FilePair]:
    """`GOLD PRED`, `FILE3`, or `--genre NAME=GOLD,PRED` / `--genre NAME=FILE3` -> file pairs."""
    pairs: list[FilePair] = []
    if files:
        if genres:
            raise UserError("give either GOLD PRED or --genre NAME=GOLD,PRED options, not both")
        if len(files) > 2:
            raise UserError(f"expected GOLD PRED (or one 3-column file), got {len(files)} files")
        gold = Path(files[0]) if len(files) == 2 else None
        pairs.append((_genre_of(Path(files[-1])), gold, Path(files[-1])))
    for g in genres:
        name, eq, rest = g.partition("=")
        parts = rest.split(",") if eq else []
        if not name or not 1 <= len(parts) <= 2 or not all(parts):
            raise UserError(f"--genre {g!r}: expected NAME=GOLD,PRED or NAME=FILE")
        pairs.append((name.lower(), Path(parts[0]) if len(parts) == 2 else None, Path(parts[-1])))
    if not pairs:
        raise UserError("nothing to score: give GOLD PRED or --genre NAME=GOLD,PRED")
    names = [p[0] for p in pairs]
    if len(set(names)) != len(names):
        raise UserError(f"a genre is named twice: {', '.join(names)}")
    return pairs


def _genre_of(path: Path) -> str:
    stem = path.stem.lower()
    for g in ("ft", "sm", "wa"):
        if stem.endswith(f"_{g}") or stem.endswith(f"-{g}"):
            return g
    return stem


def score_files(pairs: list[FilePair]) -> tuple[GenreScores, list[str]]:
    """Score each genre; tag repairs in either file are applied and returned as notes, never silent."""
    from ablate.errors import DataError
    from ablate.schemes import IOB2, resolve

    tagged: dict[str, tuple[list[list[str]], list[list[str]]]] = {}
    notes: list[str] = []
    scheme = IOB2
    for genre, gold_path, pred_path in pairs:
        gold = read_conll(gold_path, genre) if gold_path else None
        gold, pred = read_predictions(pred_path, gold)
        try:  # the gold's scheme (IOB2 for the official files: conlleval, to the digit)
            scheme = resolve("auto", (s.tags for s in gold))
        except DataError as e:
            raise DataError(f"{gold_path or pred_path}: {e}") from None
        fixed_gold = repair_tags(gold, str(gold_path or pred_path), scheme=scheme)
        fixed_pred = repair_tags([s.with_tags(p) for s, p in zip(gold, pred)], str(pred_path), scheme=scheme)
        notes += [f"repaired {r}" for r in fixed_gold.repairs + fixed_pred.repairs]
        tagged[genre] = ([list(s.tags) for s in fixed_gold.sentences], [list(s.tags) for s in fixed_pred.sentences])
    return score_genres(tagged, scheme), notes
