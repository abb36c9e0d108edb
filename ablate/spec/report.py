"""The study's `report:` block: which tables and figures a study publishes, and the metric vocabulary."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Split = Literal["dev", "test"]
# What to do with axes that vary but are neither rows (lines) nor seed: "split" shows them as extra
# row axes (extra lines); "best" keeps, per row, only the setting with the best mean selection metric.
Others = Literal["split", "best"]

SELECT = "dev/macro_f1"  # the selection metric: best cell, best setting (never a test metric)
SPLIT_FREE = ("epoch_seconds", "train_tokens_per_second", "peak_memory_mb", "params/trainable", "params/total",
              "best_epoch", "train/loss")
# Scores under a split: precision|recall|f1 [/genre | /type/TYPE], macro_f1|macro_precision|macro_recall.
_SCORE = re.compile(r"^(?:(?:dev|test)/)?(?:(?:precision|recall|f1)(?:/type/[A-Za-z0-9_-]+|/[a-z0-9_]+)?"
                    r"|macro_(?:f1|precision|recall))$")


def metric_key(name: str, split: str) -> str:
    """The full vocabulary key of a column name: `f1` + test -> `test/f1`; split-free names stay."""
    if name in SPLIT_FREE or name.startswith(("dev/", "test/")):
        return name
    return f"{split}/{name}"


def _check_metric(name: str) -> str:
    if name in SPLIT_FREE or _SCORE.match(name):
        return name
    raise ValueError(f"unknown metric {name!r}: use f1, precision, recall, macro_f1, f1/<genre>, "
                     f"f1/type/<TYPE> (optionally under dev/ or test/) or one of {', '.join(SPLIT_FREE)}")


class TableSpec(BaseModel):
    """One table: rows are axis values (seeds aggregated), columns are metrics of the one vocabulary."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str                                  # file stem: tables/<name>.md and .csv
    title: str = ""
    rows: list[str] = Field(min_length=1)      # axes, e.g. [backbone, finetune]
    columns: list[str] = ["precision", "recall", "f1"]  # metric names, split prefix added: test/f1
    split: Split = "test"
    where: dict[str, str | int | float] = Field(default_factory=dict)  # axis -> value filter
    compare: str | None = None                 # an axis: paired bootstrap between its two values (more: each vs the first)
    others: Others = "split"                   # other varying axes: extra rows, or the best setting per row
    paper: bool = False                        # add the paper's numbers (PAPER) where rows name its backbones

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, value: list[str]) -> list[str]:
        return [_check_metric(c) for c in value]


class FigureSpec(BaseModel):
    """F1 against a numeric axis (lr, epochs) or against the per-epoch history (x: epoch)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    x: str                                     # "lr", "epochs" (an axis) or "epoch" (history)
    metric: str = "macro_f1"
    split: Split = "dev"
    lines: list[str] = ["backbone", "finetune"]  # one line per combination of these axes
    where: dict[str, str | int | float] = Field(default_factory=dict)
    log_x: bool | None = None                  # default: log for lr
    title: str = ""
    others: Others = "split"                   # other varying axes: extra lines (dashes), or the best setting
    band: Literal["minmax", "std"] = "minmax"  # the shaded band around the mean over seeds

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return _check_metric(value)


class ReportSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    tables: list[TableSpec] = Field(default_factory=list)
    figures: list[FigureSpec] = Field(default_factory=list)
    bootstrap_samples: int = Field(1000, ge=10)
    bootstrap_seed: int = 0
    arms: list[str] = ["backbone", "finetune", "loss"]  # per-genre / per-type tables: best cell of each arm
