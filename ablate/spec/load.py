"""`load_study`: read the YAML, apply `--set` overrides, make paths absolute, check files, validate once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

from ablate.errors import UserError
from ablate.spec.problems import Loc, StudyError, _dotted, _key_lines, _where, _yaml_error
from ablate.spec.schema import CELL_AXES
from ablate.spec.study import StudySpec, _pydantic_problems


def load_study(path: str | Path, overrides: Iterable[str] = (), check_files: bool = True) -> StudySpec:
    """Read, override and validate a study; one `StudyError` lists every problem with its YAML path.

    `overrides` are `KEY=VALUE`: KEY a dotted path into the YAML (`train.lora.r`, `grid.lora.r`,
    `data.train.0.genre`), VALUE parsed as YAML. `train.X=v` where X is a grid axis sets `grid.X=[v]`.
    A relative `data.root` resolves against the study file's folder, or against the working
    directory when --set gave it. `check_files=False` (the report, which reads MLflow alone) skips the
    checks that data files and checkpoint folders exist.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        raise UserError(f"{path}: no such study file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the study ({e})") from None
    try:
        raw = yaml.safe_load(text)
        lines, dup, cycles = _key_lines(text)
    except yaml.YAMLError as e:
        raise StudyError(path, [_yaml_error(path, e)]) from None
    except RecursionError:
        raise StudyError(path, [f"{path}: YAML nested too deeply to read"]) from None
    if cycles:  # `a: &a [*a]`: validating or walking it would never end
        raise StudyError(path, [f"{path}:{line}: recursive YAML alias at {_dotted(loc) or 'the top level'}: "
                                "an anchor used inside itself" for loc, line in cycles])
    if not isinstance(raw, dict):
        raise StudyError(path, [f"{path}: expected a mapping of study settings (name, data, backbones, grid, ...)"])

    problems: list[tuple[Loc, str]] = [(loc, f"duplicate key (also on line {other})") for loc, other in dup]
    override_problems, set_locs = apply_overrides(raw, overrides)
    problems += override_problems
    data_base = Path.cwd() if any(loc[:2] in {("data",), ("data", "root")} for loc in set_locs) else path.parent
    _absolute_paths(raw, data_base, path.parent)
    spec, more = validate_raw(raw, check_files)
    problems += more
    if problems:
        located = [(_where(path, loc, lines, set_locs), msg) for loc, msg in problems]
        located.sort(key=lambda wm: wm[0][0])  # by line; --set and unplaced problems after the file's
        raise StudyError(path, [w + msg for (_, w), msg in located])
    return spec


def apply_overrides(raw: dict, overrides: Iterable[str]) -> tuple[list[tuple[Loc, str]], dict[Loc, str]]:
    """Apply `KEY=VALUE` overrides to the raw study in place; (problems, YAML path -> the override that set it)."""
    problems: list[tuple[Loc, str]] = []
    set_locs: dict[Loc, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        loc = _override_loc(key)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed, sep = None, ""
        grid = raw.get("grid")
        if loc[:1] == ("train",) and isinstance(grid, dict) and ".".join(map(str, loc[1:])) in grid:
            # --set train.epochs=2 on a study whose grid varies epochs pins that axis: grid.epochs=[2].
            loc, parsed = ("grid", ".".join(map(str, loc[1:]))), [parsed]
        problem = _set(raw, loc, parsed) if sep and key else f"expected KEY=VALUE with VALUE valid YAML, got {item!r}"
        if problem:
            problems.append((("--set", item), problem))
        set_locs[loc] = item
    return problems, set_locs


def validate_raw(raw: dict, check_files: bool = True) -> tuple[StudySpec | None, list[tuple[Loc, str]]]:
    """A raw study (paths absolute) -> (the StudySpec or None, every problem with its YAML path)."""
    problems = (_missing_files(raw) if check_files else []) + _fixed_and_varied(raw)
    try:
        names = list(raw["backbones"]) if isinstance(raw.get("backbones"), dict) else None
        spec = StudySpec.model_validate(raw, context={"backbones": names, "search": raw.get("search")})
    except ValidationError as e:
        spec, problems = None, problems + _pydantic_problems(e)
    return (spec if not problems else None), problems


# ---------------------------------------------------------------- raw dict: overrides, paths, files


_ABSENT = object()


def _fixed_and_varied(raw: dict) -> list[tuple[Loc, str]]:
    """A train setting written both as fixed and as an axis (or searched): the axis would silently win, so say so."""
    train, grid, search = raw.get("train"), raw.get("grid"), raw.get("search")
    space = search.get("space") if isinstance(search, dict) else None
    if not isinstance(train, dict):
        return []
    problems = []
    for where, axes in (("grid", grid), ("search.space", space)):
        for axis in map(str, axes if isinstance(axes, dict) else ()):
            node: Any = train
            for part in axis.split("."):
                node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
            if node is not _ABSENT and axis not in CELL_AXES:
                what = "an axis" if where == "grid" else "searched"
                problems.append((("train", *axis.split(".")), f"also {what} ({where}.{axis}); set it in one place"))
    return problems


def _override_loc(key: str) -> Loc:
    parts = key.split(".")
    if parts[0] == "grid" and len(parts) > 2:  # axes are dotted themselves: grid.lora.r -> ("grid", "lora.r")
        parts = ["grid", ".".join(parts[1:])]
    return tuple(int(p) if p.isdigit() else p for p in parts)


def _set(raw: dict, loc: Loc, value: Any) -> str | None:
    node: Any = raw
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, list) and isinstance(part, int) and part < len(node):
            if last:
                node[part] = value
            node = node[part]
        elif isinstance(node, dict) and not isinstance(part, int):
            if last:
                node[part] = value
            elif not isinstance(node.get(part), (dict, list)):
                node[part] = {}  # a new key: validation names it if it is unknown
            node = node[part]
        else:
            return f"{_dotted(loc[:i]) or 'the study'} has no item {part!r}"
    return None


def _absolute_paths(raw: dict, data_base: Path, study_dir: Path) -> None:
    """Make data.root absolute (against the study's folder, or the cwd when --set moved it) and local checkpoints too."""
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("root", "."), (str, Path)):
        data["root"] = os.path.abspath(data_base / Path(data.get("root", ".")).expanduser())
    backbones = raw.get("backbones")
    for bb in backbones.values() if isinstance(backbones, dict) else ():
        p = bb.get("pretrained") if isinstance(bb, dict) else None
        # "org/name" is a hub id; only an explicit path (./x, ../x, /x, ~/x) is a folder of the user's.
        if isinstance(p, str) and p.startswith(("./", "../", "/", "~")):
            bb["pretrained"] = os.path.abspath(study_dir / Path(p).expanduser())
        pre = bb.get("pretrain") if isinstance(bb, dict) else None
        root = data.get("root") if isinstance(data, dict) else None
        if isinstance(pre, dict) and isinstance(pre.get("text"), list) and isinstance(root, str):
            # pretraining text files sit beside the data files: relative to data.root
            pre["text"] = [os.path.abspath(Path(root) / Path(t).expanduser()) if isinstance(t, str) else t
                           for t in pre["text"]]


def _missing_files(raw: dict) -> list[tuple[Loc, str]]:
    data = raw.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("root"), str):
        return []
    problems = []
    for role in ("train", "dev", "test"):
        files = data.get(role)
        for i, f in enumerate(files if isinstance(files, list) else []):
            rel = f.get("path") if isinstance(f, dict) else f
            if isinstance(rel, str):
                p = Path(os.path.abspath(Path(data["root"]) / rel))
                if not p.is_file():
                    what = "is a folder, not a data file" if p.is_dir() else "no such file"
                    problems.append((("data", role, i, "path") if isinstance(f, dict) else ("data", role, i), f"{what}: {p}"))
    backbones = raw.get("backbones")
    for name, bb in backbones.items() if isinstance(backbones, dict) else ():
        p = bb.get("pretrained") if isinstance(bb, dict) else None
        if isinstance(p, str) and os.path.isabs(p) and not os.path.isdir(p):
            problems.append((("backbones", name, "pretrained"), f"no such checkpoint folder: {p}"))
        pre = bb.get("pretrain") if isinstance(bb, dict) else None
        for i, t in enumerate(pre.get("text") if isinstance(pre, dict) and isinstance(pre.get("text"), list) else []):
            if isinstance(t, str) and os.path.isabs(t) and not os.path.isfile(t):
                what = "is a folder, not a text file" if os.path.isdir(t) else "no such text file"
                problems.append((("backbones", name, "pretrain", "text", i), f"{what}: {t}"))
    return problems
