"""Study and run specs: a study YAML -> a typed, validated `StudySpec`; one `RunSpec` per grid cell.

`load_study` is the only place a raw dict exists: it parses the YAML, applies `--set` overrides,
and reports every problem at once, each with its YAML path (and line when the file has one).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Iterable, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from ablate.data.readers import JSONL_SUFFIXES
from ablate.data.tags import Unknown
from ablate.errors import UserError
from ablate.models import BackboneSpec
from ablate.report.config import ReportSpec

Finetune = Literal["lora", "full"]
Loss = Literal["ce", "focal"]
CELL_AXES = ("backbone", "finetune", "loss")  # axes that are RunSpec fields; every other axis is a TrainSpec field

_FROZEN = ConfigDict(frozen=True, extra="forbid")
Loc = tuple  # a YAML path: ("grid", "lr", 2) -> grid.lr[2]


class LoraSpec(BaseModel):
    model_config = _FROZEN
    r: int = Field(16, gt=0)  # paper: r=16
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] | None = None  # None: chosen per architecture (models.py)


class FocalSpec(BaseModel):
    model_config = _FROZEN
    gamma: float = Field(2.0, ge=0)
    alpha: Literal["none", "inverse_freq", "learned"] = "learned"  # paper: alpha_t trainable


class TrainSpec(BaseModel):
    """Fixed training settings; any field can also be a grid axis (dotted for lora.* / focal.*)."""

    model_config = _FROZEN
    lr: float = Field(1e-5, gt=0)  # paper: 1e-5
    epochs: int = Field(20, ge=1)  # paper: 20
    seed: int = 1
    batch_size: int = Field(16, ge=1)  # paper: 1; 16 keeps a GPU busy
    eval_batch_size: int = Field(64, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)  # paper: "warm-up", ratio not given
    warmup_steps: int | None = Field(None, ge=0)  # wins over warmup_ratio when set
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(5.0, gt=0)  # paper: 5
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    select_metric: str = "dev/macro_f1"
    early_stopping: int | None = Field(None, ge=1)  # patience in epochs; None trains every epoch
    save_model: bool = False
    lora: LoraSpec = LoraSpec()
    focal: FocalSpec = FocalSpec()

    @field_validator("select_metric")
    @classmethod
    def _dev_metric(cls, v: str) -> str:
        if not v.startswith("dev/"):
            raise ValueError(f"must be a dev/ metric such as dev/macro_f1 (selecting on {v!r} would leak test data)")
        return v


class FileSpec(BaseModel):
    """A corpus file: jsonl records carry their genre; a CoNLL file needs `genre`."""

    model_config = _FROZEN
    path: Path
    genre: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_path(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _genre_for_conll(self) -> "FileSpec":
        if self.genre is None and self.path.suffix.lower() not in JSONL_SUFFIXES:
            raise ValueError(f"{self.path} is a CoNLL file and names no genre; add one, e.g. {{path: {self.path}, genre: ft}}")
        return self


class DevSplit(BaseModel):
    """Dev data carved out of train (the paper's 80/20 split)."""

    model_config = _FROZEN
    split: float = Field(gt=0, lt=1)
    seed: int = 0


def _dev_kind(v: Any) -> str:
    return "<files>" if isinstance(v, (list, tuple)) else "<split>"


DevData = Annotated[
    Union[Annotated[DevSplit, Tag("<split>")], Annotated[list[FileSpec], Tag("<files>")]], Discriminator(_dev_kind)
]


class DataSpec(BaseModel):
    """Where the corpus is; `load_study` makes `root` absolute, file paths are relative to it."""

    model_config = _FROZEN
    root: Path = Path(".")
    train: list[FileSpec] = Field(min_length=1)
    dev: DevData
    test: list[FileSpec] = []
    unknown_tags: Unknown = "error"
    max_length: int = Field(128, ge=4)

    def resolve(self, path: Path) -> Path:
        """An absolute path for a file path of this spec (no symlink resolution, no disk access)."""
        return Path(os.path.abspath(self.root / path))

    def files(self) -> list[tuple[Loc, FileSpec]]:
        """(YAML path, file) for every train, dev (when files) and test file."""
        dev = self.dev if isinstance(self.dev, list) else []
        return [((role, i), f) for role, fs in (("train", self.train), ("dev", dev), ("test", self.test)) for i, f in enumerate(fs)]

    def resolved_files(self) -> list[Path]:
        """Absolute paths of all data files, train then dev then test."""
        return [self.resolve(f.path) for _, f in self.files()]

    @model_validator(mode="after")
    def _no_leak(self) -> "DataSpec":
        # The same file twice is a mistake; in train and test it would also leak test data into training.
        seen: dict[Path, Loc] = {}
        for loc, f in self.files():
            p = self.resolve(f.path)
            if p in seen:
                raise ValueError(f"{_dotted(('data', *loc))} is the same file as {_dotted(('data', *seen[p]))}: {p}")
            seen[p] = loc
        return self


class SpaceDim(BaseModel):
    """One searched axis: a range (`low`, `high`, optional `log` or `step`) or a list of `choices`."""

    model_config = _FROZEN
    low: Any = None
    high: Any = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> "SpaceDim":
        ranged = self.low is not None or self.high is not None
        if self.choices is not None:
            if ranged or self.log or self.step is not None:
                raise ValueError("give either `choices` or a range (`low`, `high`, `log`, `step`), not both")
            if not self.choices:
                raise ValueError("empty `choices`; give at least one value")
        elif self.low is None or self.high is None:
            raise ValueError("give `low` and `high` (a range) or `choices` (a list)")
        if self.log and self.step is not None:
            raise ValueError("`log` and `step` cannot be combined (Optuna samples one or the other)")
        return self


class SearchSpec(BaseModel):
    """Search mode: Optuna samples `n_trials` cells from `space`; the objective is `train.select_metric`.

    `startup_trials` are sampled at random before TPE models the space, and run before the median
    pruner stops anything; `warmup_epochs` are never pruned (hyperband: its minimum resource).
    """

    model_config = _FROZEN
    sampler: Literal["tpe", "random"] = "tpe"
    n_trials: int = Field(ge=1)
    seed: int = 0
    pruner: Literal["median", "hyperband", "none"] = "median"
    startup_trials: int = Field(5, ge=0)
    warmup_epochs: int = Field(0, ge=0)
    space: dict[str, SpaceDim] = Field(min_length=1)

    @field_validator("space", mode="before")
    @classmethod
    def _axes(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        problems = []
        for axis, dim in raw.items():
            if str(axis) not in _AXES:
                problems.append((("search", "space", str(axis)), f"unknown axis{_suggest(str(axis), _AXES)} (axes: {', '.join(_AXES)})"))
            elif isinstance(dim, dict):
                problems += _check_dim(str(axis), dim)
        if problems:
            raise _Problems(problems)
        return raw


class StudySpec(BaseModel):
    """A whole study: data, named backbones, the grid of axes, fixed train settings, the report."""

    model_config = _FROZEN
    name: str
    description: str = ""
    data: DataSpec
    backbones: dict[str, BackboneSpec] = Field(min_length=1)
    train: TrainSpec = TrainSpec()
    search: SearchSpec | None = None  # search mode: Optuna samples the cells (validated before the grid)
    # axis -> values in file order; backbone/finetune/loss always present (validate_default fills them),
    # except in a search study where the space varies them
    grid: dict[str, list[Any]] = Field(default_factory=dict, validate_default=True)
    report: ReportSpec = ReportSpec()

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError(f"{v!r}: use letters, digits, _ . - (it names a report folder and an MLflow experiment)")
        return v

    @field_validator("grid", mode="before")
    @classmethod
    def _grid(cls, raw: Any, info) -> Any:
        if not isinstance(raw, dict):
            return raw  # pydantic reports the type
        # Backbone names come from load_study's context when the backbones table itself failed validation.
        names = info.data.get("backbones") or (info.context or {}).get("backbones")
        searched = _searched(info.data.get("search"), (info.context or {}).get("search"))
        grid, problems = _check_grid(raw, names, searched)
        if problems:
            raise _Problems(problems)
        return grid

    @field_validator("report")
    @classmethod
    def _report_axes(cls, report: ReportSpec) -> ReportSpec:
        """Axis names in tables and figures are checked now, not when the report is drawn after the runs."""
        problems = [(("report", "arms", j), f"unknown axis {a!r}{_suggest(a, _AXES)}")
                    for j, a in enumerate(getattr(report, "arms", [])) if a not in _AXES]
        for kind, items in (("tables", report.tables), ("figures", report.figures)):
            for i, item in enumerate(items):
                named: list[tuple[Loc, str]] = [(("where", k), k) for k in item.where]
                for key in ("rows", "lines"):
                    named += [((key, j), a) for j, a in enumerate(getattr(item, key, []))]
                for key in ("compare", "x"):
                    if getattr(item, key, None) not in (None, "epoch"):
                        named.append(((key,), getattr(item, key)))
                problems += [(("report", kind, i, *loc), f"unknown axis {a!r}{_suggest(a, _AXES)}")
                             for loc, a in named if a not in _AXES]
        if problems:
            raise _Problems(problems)
        return report


class RunSpec(BaseModel):
    """One grid cell, fully resolved: everything a worker needs to train it, nothing else."""

    model_config = _FROZEN
    study: str
    backbone: str  # a key of the study's `backbones:` table
    backbone_spec: BackboneSpec
    finetune: Finetune
    loss: Loss
    train: TrainSpec
    data: DataSpec
    axes: dict[str, Any]  # this cell's value on every grid axis (derived; not part of the run's identity)

    def flat_params(self) -> dict[str, str]:
        """Dotted keys -> strings for MLflow: strings as they are, everything else as JSON (`1e-05`, `true`, `null`).

        Nested models become dotted keys, list items of models get their index (`data.train.0.path`);
        `axes` is left out: axis `k` is the param `param_key(k)`.
        """
        out: dict[str, str] = {}
        _flatten(self.model_dump(mode="json", exclude={"axes"}), "", out)
        return out


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


def param_key(axis: str) -> str:
    """The `flat_params` key of a grid axis: `backbone` -> `backbone`, `lora.r` -> `train.lora.r`."""
    return axis if axis in CELL_AXES else f"train.{axis}"


def load_study(path: str | Path, overrides: Iterable[str] = ()) -> StudySpec:
    """Read, override and validate a study; one `StudyError` lists every problem with its YAML path.

    `overrides` are `KEY=VALUE`: KEY a dotted path into the YAML (`train.lora.r`, `grid.lora.r`,
    `data.train.0.genre`), VALUE parsed as YAML. `train.X=v` where X is a grid axis sets `grid.X=[v]`.
    A relative `data.root` resolves against the study file's folder, or against the working
    directory when --set gave it.
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
        lines, dup = _key_lines(text)
    except yaml.YAMLError as e:
        raise StudyError(path, [_yaml_error(path, e)]) from None
    if not isinstance(raw, dict):
        raise StudyError(path, [f"{path}: expected a mapping of study settings (name, data, backbones, grid, ...)"])

    problems: list[tuple[Loc, str]] = [(loc, f"duplicate key (also on line {other})") for loc, other in dup]
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
    data_base = Path.cwd() if any(loc[:2] in {("data",), ("data", "root")} for loc in set_locs) else path.parent
    _absolute_paths(raw, data_base, path.parent)
    problems += _missing_files(raw) + _fixed_and_varied(raw)

    try:
        names = list(raw["backbones"]) if isinstance(raw.get("backbones"), dict) else None
        spec = StudySpec.model_validate(raw, context={"backbones": names, "search": raw.get("search")})
    except ValidationError as e:
        spec, problems = None, problems + _pydantic_problems(e)
    if problems:
        located = [(_where(path, loc, lines, set_locs), msg) for loc, msg in problems]
        located.sort(key=lambda wm: wm[0][0])  # by line; --set and unplaced problems after the file's
        raise StudyError(path, [w + msg for (_, w), msg in located])
    return spec


# ---------------------------------------------------------------- grid axes


def _leaf_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out += _leaf_fields(sub, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


_TRAIN_AXES = _leaf_fields(TrainSpec)
_AXES = [*CELL_AXES, *_TRAIN_AXES]
_CELL_TYPES = {"finetune": Finetune, "loss": Loss}
_ABSENT = object()


def _check_grid(raw: dict, backbones: dict | list | None, searched: dict | None = None) -> tuple[dict, list[tuple[Loc, str]]]:
    """Coerce and check every axis value; fill default axes; reject invalid combinations.

    `searched`: axis -> its choices (None for a range) of a search study's space: such an axis is
    not filled with a default, and its choices count as values for the lora./focal. checks.
    """
    search_study = searched is not None
    searched = searched or {}
    problems: list[tuple[Loc, str]] = []
    grid: dict[str, list] = {}
    for axis, values in raw.items():
        axis = str(axis)
        if axis not in _AXES:
            problems.append((("grid", axis), f"unknown axis{_suggest(axis, _AXES)} (axes: {', '.join(_AXES)})"))
            continue
        if not isinstance(values, list):
            problems.append((("grid", axis), f"expected a list of values, e.g. {axis}: [{json.dumps(values)}]"))
            continue
        if not values:
            problems.append((("grid", axis), "empty axis; give at least one value"))
            continue
        grid[axis], seen = [], {}
        for i, v in enumerate(values):
            value, msg = _axis_value(axis, v, backbones)
            key = json.dumps(value, sort_keys=True, default=str)
            if msg is None and key in seen:
                msg = f"duplicate value {v!r} (same as grid.{axis}[{seen[key]}])"
            if msg:
                problems.append((("grid", axis, i), msg))
            else:
                seen[key] = i
                grid[axis].append(value)
    if "backbone" not in raw and backbones and "backbone" not in searched:
        if len(backbones) == 1:
            grid["backbone"] = list(backbones)
        else:
            problems.append((("grid", "backbone"), f"required when several backbones are defined ({', '.join(backbones)})"))
    for axis, default in (("finetune", "full"), ("loss", "ce")):
        if axis not in searched:
            grid.setdefault(axis, [default])
    for prefix, axis, needed in (("lora.", "finetune", "lora"), ("focal.", "loss", "focal")):
        values = grid.get(axis) or list(searched.get(axis) or [])
        for loc, name in [(("grid", n), n) for n in grid] + [(("search", "space", n), n) for n in searched]:
            if name.startswith(prefix) and needed not in values:
                where = f"search.space.{axis}" if axis in searched else f"grid.{axis}"
                problems.append((loc, f"varies {prefix[:-1]} settings but {where} has no {needed}: "
                                 f"[{', '.join(map(str, values))}]"))
    if search_study:  # a search varies only its space: every grid axis is one fixed value, no axis in both
        problems += [(("grid", a), f"a search study takes one value per grid axis (search.space varies the rest); "
                      f"got {len(v)}: move {a} to search.space or keep one value") for a, v in grid.items() if len(v) > 1]
        problems += [(("search", "space", a), f"also a grid axis (grid.{a}); set it in one place") for a in searched if a in raw]
        for i, b in enumerate(searched.get("backbone") or []):
            if backbones is not None and b not in backbones:
                problems.append((("search", "space", "backbone", "choices", i),
                                 f"unknown backbone {b!r}{_suggest(str(b), list(backbones))} (defined: {', '.join(backbones)})"))
    return grid, problems


def _searched(search: Any, raw: Any) -> dict[str, list | None] | None:
    """Axis -> choices (None for a range) of the search space, from the validated spec or the raw YAML.

    None when the study has no `search:` block.
    """
    if isinstance(search, SearchSpec):
        return {a: d.choices for a, d in search.space.items()}
    if raw is None:
        return None
    space = raw.get("space") if isinstance(raw, dict) else None
    if not isinstance(space, dict):
        return {}
    return {str(a): d.get("choices") if isinstance(d, dict) and isinstance(d.get("choices"), list) else None
            for a, d in space.items()}


def axis_kind(axis: str) -> Literal["int", "float", "choice"]:
    """How a search samples an axis: an integer or float range, or only from a list of choices."""
    if axis in CELL_AXES:
        return "choice"
    t: Any = TrainSpec
    for part in axis.split("."):
        t = _step(t, part)
    kinds = {b for b in _branches(t)}
    if kinds == {int}:
        return "int"
    if kinds == {float}:
        return "float"
    return "choice"


def _check_dim(axis: str, dim: dict) -> list[tuple[Loc, str]]:
    """A searched axis's bounds or choices, each validated as a value of that axis."""
    loc = ("search", "space", axis)
    problems = []
    kind = axis_kind(axis)
    if kind == "choice" and ("low" in dim or "high" in dim):
        problems.append((loc, f"{axis} is not numeric: give `choices`, e.g. {axis}: {{choices: [...]}}"))
    for key in ("low", "high"):
        if dim.get(key) is not None and kind != "choice":
            value, msg = _axis_value(axis, dim[key], None)
            if msg is None and kind == "int" and not isinstance(dim[key], int):
                msg = f"not an integer: {dim[key]!r}"
            if msg:
                problems.append(((*loc, key), msg))
            else:
                dim[key] = value
    low, high = dim.get("low"), dim.get("high")
    if not problems and isinstance(low, (int, float)) and isinstance(high, (int, float)):
        if low >= high:
            problems.append((loc, f"low ({low}) must be below high ({high})"))
        elif dim.get("log") and low <= 0:
            problems.append(((*loc, "low"), f"a log range needs low > 0, got {low}"))
        elif dim.get("log") and kind == "int" and dim.get("step") not in (None, 1):
            problems.append(((*loc, "step"), "an integer log range takes no step"))
    choices = dim.get("choices")
    if isinstance(choices, list):
        seen: dict[str, int] = {}
        for i, v in enumerate(choices):
            if v is not None and not isinstance(v, (bool, int, float, str)):
                problems.append(((*loc, "choices", i), f"choices must be plain values (number, string, bool), got {v!r}"))
                continue
            value, msg = _axis_value(axis, v, None)  # backbone names: checked by StudySpec
            key = json.dumps(value, sort_keys=True, default=str)
            if msg is None and key in seen:
                msg = f"duplicate choice {v!r} (same as choices[{seen[key]}])"
            if msg:
                problems.append(((*loc, "choices", i), msg))
            else:
                seen[key] = i
                choices[i] = value
    return problems


def _axis_value(axis: str, v: Any, backbones: dict | None) -> tuple[Any, str | None]:
    """One axis value, validated and coerced as its field would be (\"1e-5\" -> 1e-05)."""
    if axis == "backbone":
        if backbones is not None and v not in backbones:
            return v, f"unknown backbone {v!r}{_suggest(str(v), list(backbones))} (defined: {', '.join(backbones)})"
        return v, None
    if axis in _CELL_TYPES:
        allowed = get_args(_CELL_TYPES[axis])
        return v, None if v in allowed else _not_one_of(v, allowed)
    parts = axis.split(".")
    nested: Any = v
    for part in reversed(parts):
        nested = {part: nested}
    try:
        value: Any = TrainSpec.model_validate(nested)
    except ValidationError as e:
        return v, _message(e.errors()[0])
    for part in parts:
        value = getattr(value, part)
    return value, None


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


# ---------------------------------------------------------------- raw dict: overrides, paths, files


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
    return problems


# ---------------------------------------------------------------- messages


def _pydantic_problems(e: ValidationError) -> list[tuple[Loc, str]]:
    out = []
    for err in e.errors():
        inner = err.get("ctx", {}).get("error")
        if isinstance(inner, _Problems):
            out += inner.problems
        else:
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("<")))  # union tags
            out.append((loc, _message(err, loc)))
    return out


def _message(err: dict, loc: Loc = ()) -> str:
    kind, got = err["type"], err.get("input")
    if kind == "extra_forbidden":
        return f"unknown key{_suggest(str(loc[-1]), _keys_at(loc[:-1]))}"
    if kind == "missing":
        return "required"
    if kind.startswith("float"):
        return f"not a number: {got!r}"
    if kind.startswith("int"):
        return f"not an integer: {got!r}"
    if kind == "literal_error":
        return _not_one_of(got, re.findall(r"'([^']*)'", err["ctx"]["expected"]))
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping, got {got!r}"
    msg = err["msg"].removeprefix("Value error, ").replace("Input should be", "should be")
    return msg if kind == "value_error" else f"{msg}, got {got!r}"


def _keys_at(loc: Loc) -> list[str]:
    """The keys the mapping at this YAML path accepts (for 'did you mean')."""
    t: Any = StudySpec
    for part in loc:
        t = _step(t, part)
    model = next((b for b in _branches(t) if isinstance(b, type) and issubclass(b, BaseModel)), None)
    return list(model.model_fields) if model else []


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


def _key_lines(text: str) -> tuple[dict[Loc, int], list[tuple[Loc, int]]]:
    """1-based line of every key and list item by YAML path, and keys given twice (PyYAML keeps the last silently)."""
    lines: dict[Loc, int] = {}
    dup: list[tuple[Loc, int]] = []

    def walk(node: yaml.Node, loc: Loc) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = loc + (k.value,)
                if key in lines:
                    dup.append((key, lines[key]))
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                lines[loc + (i,)] = v.start_mark.line + 1
                walk(v, loc + (i,))

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return lines, dup


def _yaml_error(path: Path, e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    what = " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
    return f"{where}: YAML syntax error: {what}"


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}.{i}", out)
    else:
        out[prefix] = value if isinstance(value, str) else json.dumps(value)
