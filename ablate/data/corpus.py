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
    types = entity_types(train)
    warnings += unseen_types(types, dev, "dev") + unseen_types(types, test, "test")
    if not dev:
        raise UserError("the dev set is empty: ablate selects the best epoch on dev")
    return Corpus(train, dev, test, label_list(types, scheme), repairs, warnings, scheme)
