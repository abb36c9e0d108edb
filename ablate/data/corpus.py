"""`load_corpus`: a study's DataSpec -> train, dev and test sentences (read, repaired, split) and the label set."""

from __future__ import annotations

from dataclasses import dataclass

from ablate.data.readers import Sentence, read_corpus
from ablate.data.splits import split as split_dev
from ablate.data.tags import Note, Repair, entity_types, label_list, repair_tags, unseen_types
from ablate.errors import UserError


@dataclass(frozen=True)
class Corpus:
    train: list[Sentence]
    dev: list[Sentence]
    test: list[Sentence]
    labels: list[str]
    repairs: list[Repair]
    warnings: list[Note]


def _read(files, data, repairs: list, warnings: list) -> list[Sentence]:
    out: list[Sentence] = []
    for f in files:
        path = data.resolve(f.path)
        r = repair_tags(read_corpus(path, f.genre, f.tag_column), str(path), data.unknown_tags)
        repairs += r.repairs
        warnings += r.warnings
        out += r.sentences
    return out


def load_corpus(data) -> Corpus:
    """Read, repair and split the study's data as its DataSpec says; labels from training only."""
    repairs: list[Repair] = []
    warnings: list[Note] = []
    train = _read(data.train, data, repairs, warnings)
    if isinstance(data.dev, list):
        dev = _read(data.dev, data, repairs, warnings)
    else:
        train, dev = split_dev(train, data.dev.split, data.dev.seed)
    test = _read(data.test, data, repairs, warnings)
    types = entity_types(train)
    warnings += unseen_types(types, dev, "dev") + unseen_types(types, test, "test")
    if not dev:
        raise UserError("the dev set is empty: ablate selects the best epoch on dev")
    return Corpus(train, dev, test, label_list(types), repairs, warnings)
