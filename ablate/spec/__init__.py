"""Study and run specs, the root of ablate: a study YAML -> a typed, validated `StudySpec`; one `RunSpec` per cell.

`load_study` (load.py) is the only place a raw dict exists; schema.py (run-level specs and `METHODS`),
backbone.py, report.py, study.py and problems.py hold the rest. Imports nothing else of ablate but errors.
"""

from ablate.spec.backbone import MAX_POSITIONS, SHAPES, BackboneSpec, Family, PretrainSpec, ShapeDims
from ablate.spec.load import load_study
from ablate.spec.problems import StudyError
from ablate.spec.report import FigureSpec, ReportSpec, TableSpec
from ablate.spec.schema import (
    CELL_AXES,
    HASHED_UNLESS_DEFAULT,
    IGNORE_INDEX,
    METHODS,
    DataSpec,
    DevData,
    DevSplit,
    FileSpec,
    CrfSpec,
    Decode,
    Finetune,
    FocalSpec,
    Head,
    HeadSpec,
    LstmSpec,
    LoraSpec,
    Loss,
    RunSpec,
    SpaceDim,
    TrainSpec,
    group_of,
    param_key,
    unused_groups,
    uses,
)
from ablate.spec.study import SearchSpec, StudySpec, axis_kind

__all__ = [
    "CELL_AXES", "CrfSpec", "Decode", "HASHED_UNLESS_DEFAULT", "Head", "HeadSpec", "IGNORE_INDEX", "LstmSpec", "MAX_POSITIONS", "METHODS", "SHAPES", "BackboneSpec", "DataSpec", "DevData",
    "DevSplit", "Family", "FigureSpec", "FileSpec", "Finetune", "FocalSpec", "LoraSpec", "Loss", "PretrainSpec", "ReportSpec",
    "RunSpec", "SearchSpec", "ShapeDims", "SpaceDim", "StudyError", "StudySpec", "TableSpec", "TrainSpec",
    "axis_kind", "group_of", "load_study", "param_key", "unused_groups", "uses",
]
