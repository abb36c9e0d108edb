"""BIO tags: explicit, reported repair of known label noise, warnings, and the label set.

The ROCLING files carry real noise (`i-CHEM`, `O-SYMP`; the paper met `T-TIME`). Repairs
are returned as records so the CLI and the run logs can show every one; nothing is silent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from ablate.data.readers import Sentence
from ablate.errors import DataError
from ablate.spec.schema import Unknown

_BIO = re.compile(r"^(?:O|[BI]-\S+)$")
_PREFIXED = re.compile(r"^([A-Za-z])-(\S+)$")
# The paper's fixes (i-CHEM -> I-CHEM, T-TIME -> B-TIME) and the 2022 file's O-SYMP -> O.
_PREFIX_REPAIRS = {"i": "I-", "b": "B-", "T": "B-", "O": None}


@dataclass(frozen=True)
class Repair:
    path: str
    line: int
    from_: str
    to: str

    def to_json(self) -> dict:
        return {"path": self.path, "line": self.line, "from": self.from_, "to": self.to}

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.from_} -> {self.to}"


@dataclass(frozen=True)
class Note:
    """A warning: readable data that a user should know about."""

    path: str
    line: int
    message: str

    def to_json(self) -> dict:
        return {"path": self.path, "line": self.line, "message": self.message}

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" if self.line else f"{self.path}: {self.message}"


@dataclass(frozen=True)
class Repaired:
    sentences: list[Sentence]
    repairs: list[Repair]
    warnings: list[Note]


def repair_tags(sentences: list[Sentence], path: str, unknown: Unknown = "error") -> Repaired:
    """Fix known tag noise, warn on I- tags that open an entity, reject anything else.

    `unknown="O"` turns any other invalid tag into a reported repair to `O` instead of an error.
    """
    repairs: list[Repair] = []
    warnings: list[Note] = []
    problems: list[str] = []
    out: list[Sentence] = []
    for s in sentences:
        tags = list(s.tags)
        for i, tag in enumerate(tags):
            if _BIO.match(tag):
                continue
            fixed = _repair_one(tag)
            if fixed is None and unknown == "O":
                fixed = "O"
            if fixed is None:
                problems.append(
                    f"{path}:{s.char_line(i)}: invalid tag {tag!r} on {s.chars[i]!r} (expected O, B-TYPE or I-TYPE)"
                )
                continue
            repairs.append(Repair(path, s.char_line(i), tag, fixed))
            tags[i] = fixed
        prev = "O"
        for i, tag in enumerate(tags):
            if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
                warnings.append(
                    Note(path, s.char_line(i), f"{tag} follows {prev}; conlleval starts a new entity here (kept)")
                )
            prev = tag
        out.append(s.with_tags(tags) if tags != list(s.tags) else s)
    if problems:
        raise DataError(problems)
    return Repaired(out, repairs, warnings)


def _repair_one(tag: str) -> str | None:
    m = _PREFIXED.match(tag)
    if not m or m.group(1) not in _PREFIX_REPAIRS:
        return None
    prefix = _PREFIX_REPAIRS[m.group(1)]
    return "O" if prefix is None else prefix + m.group(2)


def entity_types(sentences: Iterable[Sentence]) -> list[str]:
    """The entity types present, sorted."""
    return sorted({t[2:] for s in sentences for t in s.tags if t != "O"})


def label_list(types: Iterable[str]) -> list[str]:
    """`O` then `B-X`, `I-X` for each type, sorted: label ids are stable across machines."""
    labels = ["O"]
    for t in sorted(set(types)):
        labels += [f"B-{t}", f"I-{t}"]
    return labels


def unseen_types(train_types: Iterable[str], sentences: Iterable[Sentence], path: str) -> list[Note]:
    """Types in dev/test that training never shows: the model cannot predict them."""
    known = set(train_types)
    missing = sorted(set(entity_types(sentences)) - known)
    return [Note(path, 0, f"entity type {t} does not occur in the training data") for t in missing]
