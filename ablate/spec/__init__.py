"""Study and run specs: a study YAML -> a typed, validated `StudySpec`; one `RunSpec` per grid cell.

`load_study` (load.py) is the only place a raw dict exists; schema.py, study.py and problems.py hold the rest.
"""

from ablate.models import BackboneSpec
from ablate.spec.load import load_study
from ablate.spec.problems import StudyError
from ablate.spec.schema import (
    CELL_AXES,
    DataSpec,
    DevData,
    DevSplit,
    FileSpec,
    Finetune,
    FocalSpec,
    LoraSpec,
    Loss,
    RunSpec,
    SpaceDim,
    TrainSpec,
    param_key,
)
from ablate.spec.study import SearchSpec, StudySpec, axis_kind

__all__ = [
    "CELL_AXES",
    "BackboneSpec",
    "DataSpec",
    "DevData",
    "DevSplit",
    "FileSpec",
    "Finetune",
    "FocalSpec",
    "LoraSpec",
    "Loss",
    "RunSpec",
    "SearchSpec",
    "SpaceDim",
    "StudyError",
    "StudySpec",
    "TrainSpec",
    "axis_kind",
    "load_study",
    "param_key",
]
