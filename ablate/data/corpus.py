"""`load_corpus`: a study's DataSpec -> train, dev and test sentences (read, repaired, split) and the label set."""

from __future__ import annotations

from dataclasses import dataclass

from ablate.data.readers import Sentence, read_corpus
from ablate.data.splits import split as split_dev
from ablate.data.tags import Note, Repair, entity_types, label_list, repair_tags, unseen_types
from ablate.errors import DataError, UserError
from ablate.schemes import IOB2, Scheme, resolve


@dataclass(frozen=True)
class Corpus:
    train: list[Sentence]
    dev: list[Sentence]
    test: list[Sentence]
    labels: list[str]
    repairs: list[Repair]
    warnings: list[Note]
    scheme: Scheme = IOB2


def _raw(files, data) -> list[tuple[str, list[Sentence]]]:
    return [(str(data.resolve(f.path)), read_corpus(data.resolve(f.path), f.genre, f.tag_column)) for f in files]


def _repair(raw, data, scheme: Scheme, repairs: list, warnings: list) -> list[Sentence]:
    out: list[Sentence] = []
    for path, sentences in raw:
        r = repair_tags(sentences, path, data.unknown_tags, scheme)
        repairs += r.repairs
        warnings += r.warnings
        out += r.sentences
    return out


def corpus_scheme(data, train_raw) -> Scheme:
    """The study's tag scheme: declared (`data.scheme`), or detected from the training tags."""
    try:
        return resolve(getattr(data, "scheme", "auto"), (s.tags for _, sents in train_raw for s in sents))
    except DataError as e:
        files = ", ".join(path for path, _ in train_raw)
        raise DataError(f"data.train ({files}): {e}") from None


def training_subset(train: list[Sentence], genres: list[str] | None, fraction: float = 1.0) -> list[Sentence]:
    """The training sentences of `genres` (all when None), then `fraction` of each genre's: a seeded permutation
    per genre (the same on every machine and process: string seeds do not depend on PYTHONHASHSEED), cut at
    ceil(fraction x n), so a smaller fraction's subset lies inside a larger one's and every genre keeps its
    share. Raises UserError for a genre the training data lacks or a subset with no sentence."""
    import math
    import random

    if genres is not None:
        have = sorted({s.genre for s in train})
        missing = [g for g in genres if g not in have]
        if missing:
            raise UserError(f"data.train_genres: {', '.join(missing)} is not a genre of the training data "
                            f"(its genres: {', '.join(have)})")
        train = [s for s in train if s.genre in set(genres)]
    if fraction < 1:
        by_genre: dict[str, list[int]] = {}
        for i, s in enumerate(train):
            by_genre.setdefault(s.genre, []).append(i)
        keep: set[int] = set()
        for g, idx in by_genre.items():
            order = list(idx)
            random.Random(f"ablate-train-fraction-{g}").shuffle(order)
            keep.update(order[: math.ceil(fraction * len(order))])
        train = [s for i, s in enumerate(train) if i in keep]
    if not train:
        raise UserError(f"data.train_genres {genres} / data.train_fraction {fraction:g} leave no training sentence")
    return train


def load_corpus(data) -> Corpus:
    """Read, repair and split the study's data as its DataSpec says; scheme and labels from training only."""
    repairs: list[Repair] = []
    warnings: list[Note] = []
    train_raw = _raw(data.train, data)
    scheme = corpus_scheme(data, train_raw)
    train = _repair(train_raw, data, scheme, repairs, warnings)
    if isinstance(data.dev, list):
        dev = _repair(_raw(data.dev, data), data, scheme, repairs, warnings)
    else:
        train, dev = split_dev(train, data.dev.split, data.dev.seed)
    test = _repair(_raw(data.test, data), data, scheme, repairs, warnings)
    train = training_subset(train, getattr(data, "train_genres", None), getattr(data, "train_fraction", 1.0))
    types = entity_types(train)
    warnings += unseen_types(types, dev, "dev") + unseen_types(types, test, "test")
    if not dev:
        raise UserError("the dev set is empty: ablate selects the best epoch on dev")
    return Corpus(train, dev, test, label_list(types, scheme), repairs, warnings, scheme)
