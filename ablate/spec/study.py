"""`StudySpec` and `SearchSpec`, the grid and search-space checks their validators run, and pydantic errors -> problems.

One module because the cycle is real: `StudySpec` checks axis values with `_message`, and `_message`
looks up `StudySpec`'s keys to suggest the nearest one.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from ablate.spec.backbone import MAX_POSITIONS, BackboneSpec
from ablate.spec.problems import Loc, _branches, _not_one_of, _Problems, _step, _suggest
from ablate.spec.report import ReportSpec
from ablate.spec.schema import CELL_AXES, DATA_AXES, _FROZEN, METHODS, DataSpec, Finetune, Head, Loss, SpaceDim, TrainSpec


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


    @model_validator(mode="after")
    def _windows_fit(self) -> "StudySpec":
        """Windows of max_length tokens must fit the scratch backbones' absolute positions (a
        checkpoint's are checked when it loads; DeBERTa-v2's positions are relative: no limit)."""
        used = self.grid.get("backbone", list(self.backbones))
        capped = [n for n in used if self.backbones[n].scratch not in (None, "deberta-v2")]
        if capped and self.data.max_length > MAX_POSITIONS:
            raise _Problems([(("data", "max_length"), f"{self.data.max_length} is more than the {MAX_POSITIONS} positions "
                              f"of the scratch backbones ({', '.join(capped)}); longer sentences are windowed, so nothing is lost")])
        return self


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
_AXES = [*CELL_AXES, *_TRAIN_AXES, *DATA_AXES]
_CELL_TYPES = {"finetune": Finetune, "loss": Loss, "head": Head}


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
    for axis, default in (("finetune", "full"), ("loss", "ce"), ("head", "linear")):
        if axis not in searched:
            grid.setdefault(axis, [default])
    for group, (axis, users) in METHODS.items():  # a varied settings group needs a cell that uses it
        values = grid.get(axis) or list(searched.get(axis) or [])
        for loc, name in [(("grid", n), n) for n in grid] + [(("search", "space", n), n) for n in searched]:
            if name.startswith(group + ".") and not set(users) & set(values):
                where = f"search.space.{axis}" if axis in searched else f"grid.{axis}"
                problems.append((loc, f"varies {group} settings but {where} has no {' or '.join(users)}: "
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
    if axis in CELL_AXES or axis == "data.train_genres":
        return "choice"
    if axis == "data.train_fraction":
        return "float"
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
    if axis == "data.train_genres":
        if not isinstance(v, list) or not v or not all(isinstance(g, str) and g.strip() for g in v):
            return v, f"expected a list of genre names, e.g. [ft, sm], got {v!r}"
        genres = sorted({g.strip().lower() for g in v})
        return genres, None if len(genres) == len(v) else f"a genre named twice: {v!r}"
    if axis == "data.train_fraction":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            return v, f"a fraction of the training sentences in (0, 1], got {v!r}"
        return float(v), None
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
