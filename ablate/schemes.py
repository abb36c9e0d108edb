"""Tag schemes: IOB2 (BIO), IOB1, IOBES (BIOES), BILOU and BMES, with `-` or `_` between prefix and type.

One `Scheme` knows its prefixes, parses and writes tags, chunks a sequence into entities and writes entities back
as tags. Chunking: IOB1 and IOB2 as conlleval does (lenient: an I-X after O opens an entity, so the official
ROCLING numbers do not move); IOBES, BILOU and BMES as seqeval's strict mode (an entity is S-X alone or
B-X I-X* E-X; anything ill-formed is no entity). BMES is IOBES with M for I.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ablate.errors import DataError

# scheme -> its prefixes, in label-list order; the role of each: begin, inside, end, single
PREFIXES = {"IOB2": "BI", "IOB1": "IB", "IOBES": "BIES", "BILOU": "BILU", "BMES": "BMES"}
ROLES = {"IOB2": "BI", "IOB1": "IB", "IOBES": "BIES", "BILOU": "BIES", "BMES": "BIES"}  # position-wise
NAMES = tuple(PREFIXES)
SEPARATORS = ("-", "_")
ALIASES = {"BIO": "IOB2", "IOB": "IOB2", "BIOES": "IOBES", "IOBES": "IOBES", "BILOU": "BILOU", "BMES": "BMES",
           "IOB1": "IOB1", "IOB2": "IOB2", "BMEWO": None}


@dataclass(frozen=True)
class Scheme:
    name: str = "IOB2"
    sep: str = "-"

    # ---- tags
    def parse(self, tag: str) -> tuple[str, str] | None:
        """(role, type) with role one of B I E S (the scheme's letters mapped), ("O", "") for O, None if foreign."""
        if tag == "O":
            return "O", ""
        if len(tag) > 2 and tag[1] == self.sep and tag[0] in PREFIXES[self.name]:
            return ROLES[self.name][PREFIXES[self.name].index(tag[0])], tag[2:]
        return None

    def tag(self, role: str, type_: str) -> str:
        """The tag of `role` (B I E S, or O) for `type_` in this scheme."""
        if role == "O":
            return "O"
        return PREFIXES[self.name][ROLES[self.name].index(role)] + self.sep + type_

    def labels(self, types: Iterable[str]) -> list[str]:
        """`O`, then each type's tags in the scheme's prefix order, types sorted (stable ids)."""
        out = ["O"]
        for t in sorted(set(types)):
            out += [p + self.sep + t for p in PREFIXES[self.name]]
        return out

    @property
    def strict(self) -> bool:
        return self.name not in ("IOB1", "IOB2")

    def __str__(self) -> str:
        return f"{self.name} (separator {self.sep!r})"

    # ---- entities
    def chunks(self, seq: Sequence[str]) -> list[tuple[str, int, int]]:
        """The entities of one sentence as (type, first, last)."""
        return _strict(self, seq) if self.strict else _conlleval(self, seq)

    def write(self, entities: Iterable[tuple[str, int, int]], length: int) -> list[str]:
        """Tags for non-overlapping entities in this scheme, O elsewhere."""
        tags = ["O"] * length
        for type_, a, b in sorted(entities, key=lambda e: e[1]):
            if self.name == "IOB1":  # I everywhere, B only where an entity follows one of the same type
                tags[a:b + 1] = [self.tag("I", type_)] * (b - a + 1)
                if a and tags[a - 1] != "O" and self.parse(tags[a - 1])[1] == type_:
                    tags[a] = self.tag("B", type_)
            elif not self.strict:
                tags[a:b + 1] = [self.tag("B", type_)] + [self.tag("I", type_)] * (b - a)
            elif a == b:
                tags[a] = self.tag("S", type_)
            else:
                tags[a:b + 1] = [self.tag("B", type_)] + [self.tag("I", type_)] * (b - a - 1) + [self.tag("E", type_)]
        return tags

    def repair(self, seq: Sequence[str]) -> list[str]:
        """The same entities, written as valid tags (IOB2: an I-X that opens an entity becomes B-X)."""
        return self.write(self.chunks(seq), len(seq))


IOB2 = Scheme()


def _conlleval(scheme: Scheme, seq: Sequence[str]) -> list[tuple[str, int, int]]:
    """conlleval's chunks: any I/B/E/S logic of conlleval.pl over the scheme's roles (lenient)."""
    out: list[tuple[str, int, int]] = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, raw in enumerate([*seq, "O"]):
        parsed = scheme.parse(raw)
        if parsed is None:  # a foreign tag, as conlleval reads it: its first letter, the rest after a separator
            tag, type_ = raw[0], raw[2:] if len(raw) > 2 else "_"
        else:
            tag, type_ = parsed
        type_ = type_ or ("_" if tag != "O" else "")
        if end_of_chunk(prev_tag, tag, prev_type, type_):
            out.append((prev_type, begin, i - 1))
        if start_of_chunk(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return out


def end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval.pl's endOfChunk over role letters (B I E S O, `.`)."""
    return (
        prev_tag in ("E", "S")
        or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
        or (prev_tag not in ("O", ".") and prev_type != type_)
    )


def start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval.pl's startOfChunk over role letters."""
    return (
        tag in ("B", "S")
        or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
        or (tag not in ("O", ".") and prev_type != type_)
    )


def _strict(scheme: Scheme, seq: Sequence[str]) -> list[tuple[str, int, int]]:
    """seqeval's strict chunks: S-X, or B-X followed by I-X* and E-X of the same type."""
    out: list[tuple[str, int, int]] = []
    parsed = [scheme.parse(t) or ("?", "") for t in seq]
    i = 0
    while i < len(parsed):
        role, type_ = parsed[i]
        if role == "S":
            out.append((type_, i, i))
            i += 1
        elif role == "B":
            j = i + 1
            while j < len(parsed) and parsed[j] == ("I", type_):
                j += 1
            if j < len(parsed) and parsed[j] == ("E", type_):
                out.append((type_, i, j))
                i = j + 1
            else:
                i = j
        else:
            i += 1
    return out


# ---------------------------------------------------------------------------- detection
def detect(tag_lists: Iterable[Sequence[str]]) -> tuple[Scheme, Counter]:
    """The scheme and separator of a corpus's tags, and how often each prefix letter occurs.

    Separator: the one character after the prefix letter of every non-O tag (`-` or `_`; a mix is an error).
    Scheme: by the letters used: L or U -> BILOU; M -> BMES; E or S -> IOBES; only B and I -> IOB2, unless B
    occurs only right after an entity of its own type and I opens entities (IOB1).
    """
    letters: Counter = Counter()
    seps: Counter = Counter()
    opens_with_i = b_after_same = b_total = 0
    for tags in tag_lists:
        prev = "O"
        for t in tags:
            if t != "O" and len(t) > 2:
                letters[t[0]] += 1
                seps[t[1]] += 1
                if t[0] == "I" and (prev == "O" or prev[2:] != t[2:]):
                    opens_with_i += 1
                if t[0] == "B":
                    b_total += 1
                    b_after_same += prev != "O" and prev[2:] == t[2:]
            prev = t
    sep = "-"
    known = [s for s in seps if s in SEPARATORS]
    if len(known) > 1:
        raise DataError(f"the tags mix separators {' and '.join(repr(s) for s in sorted(known))} "
                        f"({seps['-']:,} with '-', {seps['_']:,} with '_'); a corpus uses one")
    if known:
        sep = known[0]
    # A letter counts when it is on at least 1% of the entity tags: one stray S-X typo in an IOB2 file stays an
    # invalid tag (an error naming its line), not a switch of the whole corpus to strict scoring.
    some = lambda *ls: sum(letters[x] for x in ls) >= max(1, 0.01 * sum(letters.values()))  # noqa: E731
    if some("L", "U"):
        name = "BILOU"
    elif some("M"):
        name = "BMES"
    elif some("E", "S"):
        name = "IOBES"
    elif opens_with_i and b_total == b_after_same:  # B only between two entities of one type: IOB1
        name = "IOB1"
    else:
        name = "IOB2"
    return Scheme(name, sep), letters


def resolve(declared: str, tag_lists: Iterable[Sequence[str]]) -> Scheme:
    """`data.scheme`: `auto` detects it; `NAME` or `NAME_SEP` (e.g. `BIOES`, `BMES_`) declares it."""
    if declared == "auto":
        return detect(tag_lists)[0]
    return parse_declared(declared)


def parse_declared(declared: str) -> Scheme:
    sep = "-"
    name = declared.upper()
    if name[-1:] in SEPARATORS:
        name, sep = name[:-1], name[-1]
    canonical = ALIASES.get(name)
    if canonical is None:
        raise DataError(f"data.scheme {declared!r}: expected auto or one of IOB2 (BIO), IOB1, IOBES (BIOES), "
                        "BILOU, BMES, optionally with the separator: BIO_, BMES-")
    return Scheme(canonical, sep)
