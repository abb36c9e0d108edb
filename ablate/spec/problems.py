"""Problem messages: YAML paths (`grid.lr[2]`), their lines in the file, nearest-key suggestions, `StudyError`."""

from __future__ import annotations

import difflib
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Iterable, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from ablate.errors import UserError

Loc = tuple  # a YAML path: ("grid", "lr", 2) -> grid.lr[2]


class _Problems(ValueError):
    """Several problems raised from one validator, each with its own YAML path."""

    def __init__(self, problems: list[tuple[Loc, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{_dotted(loc)}: {msg}" for loc, msg in problems))


class StudyError(UserError):
    """An invalid study; `problems` holds one `file:line: yaml.path: message` line per problem."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = problems
        head = f"{path}: invalid study ({len(problems)} problem{'s' * (len(problems) != 1)})"
        super().__init__("\n".join([head, *("  " + p for p in problems)]))


def _branches(t: Any) -> list[Any]:
    """The concrete types behind Annotated / Optional / Union."""
    if get_origin(t) is Annotated:
        return _branches(get_args(t)[0])
    if get_origin(t) in (Union, UnionType):
        return [b for a in get_args(t) for b in _branches(a)]
    return [] if t is type(None) or t is None else [t]


def _step(t: Any, part: str | int) -> Any:
    """The type one YAML path step below `t` (None when the path leaves the schema)."""
    for b in _branches(t):
        if isinstance(b, type) and issubclass(b, BaseModel) and isinstance(part, str):
            return b.model_fields[part].annotation if part in b.model_fields else None
        if get_origin(b) is list and isinstance(part, int):
            return get_args(b)[0]
        if get_origin(b) is dict and isinstance(part, str):
            return get_args(b)[1]
    return None


def _not_one_of(value: Any, allowed: Iterable[str]) -> str:
    allowed = list(allowed)
    return f"{value!r} is not one of {', '.join(allowed)}{_suggest(str(value), allowed)}"


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _dotted(loc: Loc) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _where(path: Path, loc: Loc, lines: dict[Loc, int], set_locs: dict[Loc, str]) -> tuple[float, str]:
    """(sort key, `file:line: yaml.path: `) for a problem; a --set value has no line, so the flag is named."""
    if loc[:1] == ("--set",):
        return float("inf"), f"{path}: --set {loc[1]}: "
    for s, item in set_locs.items():
        if loc[: len(s)] == s or s[: len(loc)] == loc:
            return float("inf"), f"{path}: {_dotted(loc)} (--set {item}): "
    line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
    return (line, f"{path}:{line}: {_dotted(loc)}: ") if line else (float("inf"), f"{path}: {_dotted(loc)}: ")


def _key_lines(text: str) -> tuple[dict[Loc, int], list[tuple[Loc, int]], list[tuple[Loc, int]]]:
    """1-based line of every key and list item by YAML path, keys given twice (PyYAML keeps the last silently),
    and recursive aliases (`a: &a [*a]`): the path and line where a node holds itself.

    Cycle-safe: an aliased node is walked once (a second use keeps its alias's key line), and a node met
    again inside itself is reported, not followed.
    """
    lines: dict[Loc, int] = {}
    dup: list[tuple[Loc, int]] = []
    cycles: list[tuple[Loc, int]] = []
    seen: set[int] = set()
    inside: set[int] = set()  # ids of the nodes on the path being walked

    def walk(node: yaml.Node, loc: Loc, line: int) -> None:
        if id(node) in inside:
            cycles.append((loc, line))
            return
        if id(node) in seen:
            return
        seen.add(id(node))
        inside.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = loc + (k.value,)
                if key in lines:
                    dup.append((key, lines[key]))
                lines[key] = k.start_mark.line + 1
                walk(v, key, lines[key])
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                lines[loc + (i,)] = alias_lines.get((id(node), i), v.start_mark.line + 1)
                walk(v, loc + (i,), lines[loc + (i,)])
        inside.discard(id(node))

    loader = _AliasLines(text)
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    alias_lines = loader.alias_lines
    if root is not None:
        walk(root, (), 1)
    return lines, dup, cycles


class _AliasLines(yaml.SafeLoader):
    """Composes as SafeLoader does, noting the line of each list item written as an alias (`- *a`): the node
    it resolves to starts at its anchor, elsewhere in the file."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.alias_lines: dict[tuple[int, int], int] = {}

    def compose_node(self, parent, index):
        if isinstance(index, int) and self.check_event(yaml.AliasEvent):
            self.alias_lines[(id(parent), index)] = self.peek_event().start_mark.line + 1
        return super().compose_node(parent, index)


def _yaml_error(path: Path, e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    what = " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
    return f"{where}: YAML syntax error: {what}"
