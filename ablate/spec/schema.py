"""Run-level specs: the frozen models a `RunSpec` is made of (train, LoRA, focal, data files), its MLflow params,
and `METHODS`, the one table of which axis value owns which settings group."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from ablate.spec.backbone import BackboneSpec
from ablate.spec.problems import Loc, _dotted

Finetune = Literal["lora", "full"]
Loss = Literal["ce", "focal"]
Head = Literal["linear", "crf", "bilstm-crf"]
Decode = Literal["argmax", "constrained"]
Unknown = Literal["error", "O"]  # what to do with a tag outside the scheme: fail, or repair it to O (reported)
JSONL_SUFFIXES = (".jsonl", ".json")  # ROCLING-style records; any other suffix is read as CoNLL
IGNORE_INDEX = -100  # the label id of positions no loss or score counts (continuations, specials, padding)
CELL_AXES = ("backbone", "finetune", "loss", "head")  # axes that are RunSpec fields; every other axis is a TrainSpec field
# Fields added after run_ids were first published: hashed only when they differ from these defaults, so
# every cell that existed before keeps its run_id (and stays FINISHED). Paths into RunSpec.model_dump().
HASHED_UNLESS_DEFAULT: dict[tuple[str, ...], Any] = {("head",): "linear", ("train", "decode"): "argmax",
                                                     ("data", "scheme"): "auto", ("data", "subtoken"): "first",
                                                     ("data", "train_genres"): None, ("data", "train_fraction"): 1.0}
DATA_AXES = ("data.train_genres", "data.train_fraction")  # grid axes over the training data

_FROZEN = ConfigDict(frozen=True, extra="forbid")

# ---------------------------------------------------------------- METHODS
# Which axis value owns which group of train settings (`lora.*` belongs to `finetune: lora`).
# Validation (a varied group needs its owner in the grid), grid expansion (a cell's unused groups do
# not multiply cells), run_ids (unused groups are not hashed) and search (unused groups are not sampled)
# all read this one table. A new method with settings: its group below, one entry here, its implementation.

# settings group (a dotted TrainSpec path) -> (the axis that chooses the method, the values that use the group)
METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "lora": ("finetune", ("lora",)),
    "focal": ("loss", ("focal",)),
    "decode": ("head", ("linear",)),  # a CRF head always decodes by constrained Viterbi
    "head.crf": ("head", ("crf", "bilstm-crf")),
    "head.lstm": ("head", ("bilstm-crf",)),
}


_LONGEST_FIRST = sorted(METHODS, key=len, reverse=True)


def group_of(axis: str) -> str | None:
    """The settings group an axis belongs to (`lora.r` -> `lora`), or None for a setting every cell uses."""
    return next((g for g in _LONGEST_FIRST if axis == g or axis.startswith(g + ".")), None)


def unused_groups(cell: Mapping[str, Any]) -> set[str]:
    """The settings groups this cell's methods do not use; `cell` maps axes (finetune, loss, ...) to its values."""
    return {g for g, (axis, users) in METHODS.items() if cell.get(axis) not in users}


def uses(cell: Mapping[str, Any], axis: str) -> bool:
    """Whether a cell with these method values uses the setting `axis` (always, outside every group)."""
    group = group_of(axis)
    return group is None or group not in unused_groups(cell)


def nested_exclude(groups: set[str]) -> dict:
    """Dotted groups -> a pydantic `exclude` under `train` ({"lora": True, "head": {"lstm": True}})."""
    out: dict = {}
    for g in groups:
        *outer, last = g.split(".")
        node = out
        for part in outer:
            node = node.setdefault(part, {})
        node[last] = True
    return out


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


class CrfSpec(BaseModel):
    model_config = _FROZEN
    # Transition scores start at ~0 and have one gradient per tag pair: they need a larger step than the
    # encoder's fine-tuning rate (BiLSTM-CRF NER code commonly trains them at 100x; T-NER, Flair alike).
    lr_multiplier: float = Field(100.0, gt=0)


class LstmSpec(BaseModel):
    model_config = _FROZEN
    hidden: int = Field(256, ge=1)  # per direction
    layers: int = Field(1, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)  # on the LSTM output (and between layers)


class HeadSpec(BaseModel):
    """Settings of the CRF heads (`head: crf`, `head: bilstm-crf`); the linear head has none."""

    model_config = _FROZEN
    crf: CrfSpec = CrfSpec()
    lstm: LstmSpec = LstmSpec()


class TrainSpec(BaseModel):
    """Fixed training settings; any field can also be a grid axis (dotted for lora.* / focal.* / head.*)."""

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
    save_model: bool | Literal["merged"] = False  # the best epoch's model as an artifact; merged: LoRA merged too
    decode: Decode = "argmax"  # linear head: argmax per token, or Viterbi with BIO's forbidden transitions
    lora: LoraSpec = LoraSpec()
    focal: FocalSpec = FocalSpec()
    head: HeadSpec = HeadSpec()

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
    tag_column: int = -1  # CoNLL: the column that holds the tag (default the last; the token is column 0)

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
    # The tag scheme: `auto` (from the training tags) or declared, with its separator if not `-` (`BMES_`).
    scheme: str = Field("auto", pattern=r"(?i)^(auto|(BIO|IOB|IOB1|IOB2|BIOES|IOBES|BILOU|BMES)[-_]?)$")
    # The sub-token of a word (or character) that carries its label and prediction (run_ner.py: the first).
    subtoken: Literal["first", "last"] = "first"
    # Training-data axes (dev and test stay whole): the genres trained on, and a nested, genre-stratified,
    # seeded share of the training sentences (the 10% subset is inside the 25% one, on every machine).
    train_genres: list[str] | None = None
    train_fraction: float = Field(1.0, gt=0, le=1)

    @field_validator("train_genres")
    @classmethod
    def _genres(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        if not v or not all(isinstance(g, str) and g.strip() for g in v):
            raise ValueError("a list of genre names, e.g. [ft, sm]")
        out = sorted({g.strip().lower() for g in v})
        if len(out) != len(v):
            raise ValueError(f"a genre named twice: {v}")
        return out

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


class RunSpec(BaseModel):
    """One grid cell, fully resolved: everything a worker needs to train it, nothing else."""

    model_config = _FROZEN
    study: str
    backbone: str  # a key of the study's `backbones:` table
    backbone_spec: BackboneSpec
    finetune: Finetune
    loss: Loss
    train: TrainSpec
    head: Head = "linear"
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


def param_key(axis: str) -> str:
    """The `flat_params` key of a grid axis: `backbone` -> `backbone`, `lora.r` -> `train.lora.r`,
    `data.train_fraction` as it is."""
    return axis if axis in CELL_AXES or axis in DATA_AXES else f"train.{axis}"


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}.{i}", out)
    else:
        out[prefix] = value if isinstance(value, str) else json.dumps(value)
