"""Tags in the corpus's scheme (IOB2 and others: `ablate.schemes`): explicit, reported repair of known label noise, warnings, and the label set.

The ROCLING files carry real noise (`i-CHEM`, `O-SYMP`; the paper met `T-TIME`). Repairs
are returned as records so the CLI and the run logs can show every one; nothing is silent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from ablate.data.readers import Sentence
from ablate.errors import DataError
from ablate.schemes import IOB2, Scheme
from ablate.spec.schema import Unknown

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


MAX_DROPPED_SHARE = 0.02  # --unknown-to-o may drop at most this share of a file's entity tags


def repair_tags(sentences: list[Sentence], path: str, unknown: Unknown = "error", scheme: Scheme = IOB2) -> Repaired:
    """Fix known tag noise, warn on I- tags that open an entity (IOB2), reject anything outside `scheme`.

    `unknown="O"` turns any other invalid tag into a reported repair to `O` instead of an error, unless that
    would drop more than MAX_DROPPED_SHARE of the file's entity tags, and more than 10 (then the scheme is wrong,
    not a few tags).
    The known repairs (i-CHEM, T-TIME, O-SYMP) are the ROCLING files' noise, applied to IOB2 with `-` only.
    """
    repairs: list[Repair] = []
    warnings: list[Note] = []
    problems: list[str] = []
    out: list[Sentence] = []
    dropped = entity_tags = 0
    expected = ", ".join(scheme.labels(["TYPE"])[1:])
    for s in sentences:
        tags = list(s.tags)
        for i, tag in enumerate(tags):
            if tag != "O":
                entity_tags += 1
            if scheme.parse(tag) is not None:
                continue
            fixed = _repair_one(tag) if scheme == IOB2 else None
            if fixed is None and unknown == "O":
                fixed, dropped = "O", dropped + 1
            if fixed is None:
                if len(problems) < 1000:
                    problems.append(f"{path}:{s.char_line(i)}: invalid tag {tag!r} on {s.chars[i]!r} "
                                    f"(expected O or {expected}: scheme {scheme})")
                continue
            repairs.append(Repair(path, s.char_line(i), tag, fixed))
            tags[i] = fixed
        if scheme.strict and not problems:  # ill-formed entities (B-X O, a lone I-X) are no entity when scored
            fixed_tags = scheme.repair(tags)
            for i, (a, b) in enumerate(zip(tags, fixed_tags)):
                if a != b:
                    repairs.append(Repair(path, s.char_line(i), a, b))
            tags = fixed_tags
        prev = "O"
        for i, tag in enumerate(tags):
            if scheme == IOB2 and tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
                warnings.append(
                    Note(path, s.char_line(i), f"{tag} follows {prev}; conlleval starts a new entity here (kept)")
                )
            prev = tag
        out.append(s.with_tags(tags) if tags != list(s.tags) else s)
    if problems:
        raise DataError(problems)
    if dropped > max(10, MAX_DROPPED_SHARE * entity_tags):
        raise DataError(f"{path}: --unknown-to-o would turn {dropped:,} of its {entity_tags:,} entity tags "
                        f"({100 * dropped / entity_tags:.0f}%) into O: they are not {scheme} tags. Name the "
                        "scheme the file uses (data.scheme: BIOES, BMES_, ...) instead")
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


def label_list(types: Iterable[str], scheme: Scheme = IOB2) -> list[str]:
    """`O` then each type's tags in the scheme (IOB2: `B-X`, `I-X`), types sorted: ids stable across machines."""
    return scheme.labels(types)


def unseen_types(train_types: Iterable[str], sentences: Iterable[Sentence], path: str) -> list[Note]:
    """Types in dev/test that training never shows: the model cannot predict them."""
    known = set(train_types)
    missing = sorted(set(entity_types(sentences)) - known)
    return [Note(path, 0, f"entity type {t} does not occur in the training data") for t in missing]
