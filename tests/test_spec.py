"""Study specs: every bad study fails with one UserError naming its YAML path; good ones load typed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from ablate.errors import UserError
from ablate.grid import expand
from ablate.spec import (
    CELL_AXES,
    BackboneSpec,
    DataSpec,
    Finetune,
    Loss,
    RunSpec,
    StudyError,
    StudySpec,
    TrainSpec,
    load_study,
    param_key,
)

BAD = Path(__file__).parent / "studies_bad"
BAD_STUDIES = sorted(BAD.glob("*.yaml"))


def write_data(folder: Path) -> Path:
    """Tiny valid corpus files: jsonl (genre inside) and CoNLL (genre named by the study)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text(
        '{"character": ["頭", "痛"], "character_label": ["B-SYMP", "I-SYMP"], "genre": "ft"}\n', encoding="utf-8"
    )
    (folder / "train_wa.txt").write_text("頭 B-BODY\n痛 O\n", encoding="utf-8")
    (folder / "dev.jsonl").write_text('{"character": ["痛"], "character_label": ["O"], "genre": "sm"}\n', encoding="utf-8")
    (folder / "test_ft.txt").write_text("痛 O\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("data"))


QUICKSTART = """\
name: quickstart
description: LoRA vs full x CE vs focal
data:
  root: ../demo_data
  train:
    - path: train.jsonl
    - {path: train_wa.txt, genre: wa}
  dev: {split: 0.2, seed: 0}
  test:
    - {path: test_ft.txt, genre: ft}
  unknown_tags: error
  max_length: 128
backbones:
  tiny-bert: {scratch: bert, shape: tiny}
  bert: {pretrained: hfl/chinese-bert-wwm-ext}
  big: {scratch: deberta-v2, hidden: 256, layers: 4, heads: 4, intermediate: 512}
grid:
  backbone: [tiny-bert]
  finetune: [lora, full]
  loss: [ce, focal]
  lr: [1e-4, 5.0e-4]
  epochs: [3]
  seed: [1, 2]
  lora.r: [8, 16]
train:
  batch_size: 16
  warmup_ratio: 5e-2
report:
  tables: [{name: main, rows: [backbone, finetune], compare: loss}]
  figures: [{name: lr, x: lr}]
"""


def write_study(tmp_path: Path, text: str = QUICKSTART) -> Path:
    write_data(tmp_path / "demo_data")
    (tmp_path / "studies").mkdir(exist_ok=True)
    path = tmp_path / "studies" / "study.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def minimal(**over) -> dict:
    """A raw study dict for StudySpec.model_validate (no files checked there)."""
    raw = {"name": "s", "data": {"root": "/d", "train": ["train.jsonl"], "dev": {"split": 0.2}},
           "backbones": {"tiny": {"scratch": "bert"}}}
    return {**raw, **over}


# ---------------------------------------------------------------- bad studies


def test_bad_studies_folder_is_populated():
    assert len(BAD_STUDIES) >= 10


@pytest.mark.parametrize("path", BAD_STUDIES, ids=lambda p: p.stem)
def test_bad_study_fails_with_one_error_naming_each_problem(path: Path, data_dir: Path):
    expected = [
        line.split("# expect:", 1)[1].strip().replace("{root}", str(data_dir))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("# expect:")
    ]
    assert expected, f"{path.name} lists no `# expect:` lines"
    with pytest.raises(UserError) as info:
        load_study(path, [f"data.root={data_dir}"])
    problems = info.value.problems
    assert len(problems) == len(expected), str(info.value)
    for text in expected:
        assert any(text in p for p in problems), f"{text!r} not in:\n{info.value}"
    # Every problem is located in the file (file:line:) and the whole message names the file once on top.
    assert all(p.startswith(f"{path}:") for p in problems)
    assert str(info.value).startswith(f"{path}: invalid study")


def test_many_problems_are_reported_together_in_file_order(data_dir: Path):
    with pytest.raises(StudyError) as info:
        load_study(BAD / "many_problems.yaml", [f"data.root={data_dir}"])
    lines = [int(re.match(r".*?\.yaml:(\d+):", p).group(1)) for p in info.value.problems]
    assert len(lines) == 5 and lines == sorted(lines)


def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\ngrid:\n  lr: [1, 2\n  seed: [1]\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"s\.yaml:4:\d+: YAML syntax error"):
        load_study(path)


def test_missing_study_file_and_non_mapping_are_user_errors(tmp_path: Path):
    with pytest.raises(UserError, match="no such study file"):
        load_study(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(UserError, match="expected a mapping"):
        load_study(tmp_path / "list.yaml")


# ---------------------------------------------------------------- good studies


def test_quickstart_loads_typed_and_resolved(tmp_path: Path):
    study = load_study(write_study(tmp_path))
    assert study.name == "quickstart"
    # "1e-4" and "5e-2" are strings to PyYAML; the float fields coerce them.
    assert study.grid["lr"] == [1e-4, 5e-4] and all(type(v) is float for v in study.grid["lr"])
    assert study.train.warmup_ratio == 0.05
    assert study.train.batch_size == 16 and study.train.lr == 1e-5  # unset fields keep the paper's defaults
    assert study.data.root == tmp_path / "demo_data"  # relative root: against the study file's folder
    assert study.data.resolved_files() == [
        tmp_path / "demo_data" / name for name in ("train.jsonl", "train_wa.txt", "test_ft.txt")
    ]
    assert study.backbones["tiny-bert"].shape == "tiny"
    assert study.backbones["big"].shape is None and study.backbones["big"].dims.hidden == 256
    assert study.backbones["bert"].pretrained == "hfl/chinese-bert-wwm-ext"  # a hub id stays as it is
    assert study.report.tables[0].compare == "loss"


def test_string_numbers_coerced_in_train_and_grid(tmp_path: Path):
    text = QUICKSTART.replace("  batch_size: 16\n", "  batch_size: 16\n  lr: 1e-5\n  focal: {gamma: 5e-1}\n")
    text = text.replace("lora.r: [8, 16]", "lora.dropout: [1e-1, 5e-2]")
    study = load_study(write_study(tmp_path, text.replace("  lr: [1e-4, 5.0e-4]\n", "")))
    assert study.train.lr == 1e-5 and study.train.focal.gamma == 0.5
    assert study.grid["lora.dropout"] == [0.1, 0.05]


def test_default_axes_filled(tmp_path: Path):
    study = StudySpec.model_validate(minimal())
    assert study.grid == {"backbone": ["tiny"], "finetune": ["full"], "loss": ["ce"], "head": ["linear"]}
    with pytest.raises(ValidationError, match="grid.backbone: required when several backbones"):
        StudySpec.model_validate(minimal(backbones={"a": {"scratch": "bert"}, "b": {"scratch": "albert"}}))


def test_every_finetune_and_loss_literal_is_a_valid_axis_value():
    finetunes, losses = get_args(Finetune), get_args(Loss)
    study = StudySpec.model_validate(minimal(grid={"finetune": list(finetunes), "loss": list(losses)}))
    cells = {(r.finetune, r.loss) for r in expand(study)}
    assert cells == {(f, l) for f in finetunes for l in losses}


def test_losses_table_has_every_loss_literal():
    losses = pytest.importorskip("ablate.losses", reason="ablate.losses not built yet")
    assert set(get_args(Loss)) <= set(losses.LOSSES)


def test_unknown_axis_and_typos_suggest_the_nearest_name():
    with pytest.raises(ValidationError, match=r"grid.lora.rr: unknown axis; did you mean lora.r\?"):
        StudySpec.model_validate(minimal(grid={"finetune": ["lora"], "lora.rr": [8]}))


def test_report_axis_typo_is_caught_at_load():
    report = {"tables": [{"name": "t", "rows": ["backbone", "finetun"]}], "figures": [{"name": "f", "x": "epoch"}]}
    with pytest.raises(ValidationError, match=r"report.tables\[0\].rows\[1\]: unknown axis 'finetun'; did you mean finetune"):
        StudySpec.model_validate(minimal(report=report))
    report["tables"][0]["rows"] = ["backbone", "lora.r"]
    assert StudySpec.model_validate(minimal(report=report)).report.figures[0].x == "epoch"


# ---------------------------------------------------------------- overrides


def test_overrides_set_dotted_paths_before_validation(tmp_path: Path):
    path = write_study(tmp_path)
    moved = write_data(tmp_path / "elsewhere")
    study = load_study(path, [f"data.root={moved}", "grid.lr=[1.0e-5,2e-5]", "train.epochs=2", "train.batch_size=8",
                              "grid.lora.r=[4]", "backbones.tiny-bert.shape=base", "data.train.1.genre=ft"])
    assert study.data.root == moved
    assert study.grid["lr"] == [1e-5, 2e-5] and study.grid["lora.r"] == [4]
    assert study.train.batch_size == 8 and study.backbones["tiny-bert"].shape == "base"
    assert study.data.train[1].genre == "ft"
    # train.X on a grid axis pins the axis (in the file, train.epochs beside grid.epochs is an error).
    assert study.grid["epochs"] == [2]


def test_override_relative_root_is_against_the_working_directory(tmp_path: Path, monkeypatch):
    path = write_study(tmp_path)
    write_data(tmp_path / "cwd" / "d")
    monkeypatch.chdir(tmp_path / "cwd")
    assert load_study(path, ["data.root=d"]).data.root == tmp_path / "cwd" / "d"


def test_override_unknown_key_is_reported_like_in_the_file(tmp_path: Path):
    path = write_study(tmp_path)
    with pytest.raises(UserError) as info:
        load_study(path, ["train.warmup_ratoi=0.2", "trian.epochs=2", "nonsense"])
    text = str(info.value)
    assert "train.warmup_ratoi (--set train.warmup_ratoi=0.2): unknown key; did you mean warmup_ratio?" in text
    assert "trian (--set trian.epochs=2): unknown key; did you mean train?" in text
    assert "--set nonsense: expected KEY=VALUE" in text
    assert len(info.value.problems) == 3


def test_override_values_are_validated(tmp_path: Path):
    with pytest.raises(UserError, match=r"grid.lr\[1\] \(--set grid.lr=\[1e-5, x\]\): not a number: 'x'"):
        load_study(write_study(tmp_path), ["grid.lr=[1e-5, x]"])


# ---------------------------------------------------------------- models


def test_backbone_needs_exactly_one_source():
    with pytest.raises(ValidationError, match="exactly one of"):
        BackboneSpec()
    with pytest.raises(ValidationError, match="exactly one of"):
        BackboneSpec(pretrained="x/y", scratch="bert")
    with pytest.raises(ValidationError, match="only apply to `scratch`"):
        BackboneSpec(pretrained="x/y", shape="tiny")
    with pytest.raises(ValidationError, match="multiple of heads"):
        BackboneSpec(scratch="bert", hidden=100, heads=3)
    assert BackboneSpec(scratch="electra").shape == "tiny"
    assert BackboneSpec(scratch="electra", layers=2).shape is None  # run_ids hash it as it was written


def test_local_checkpoint_paths_resolve_against_the_study(tmp_path: Path):
    (tmp_path / "studies" / "models" / "tiny").mkdir(parents=True)
    text = QUICKSTART.replace("hfl/chinese-bert-wwm-ext", "./models/tiny")
    study = load_study(write_study(tmp_path, text))
    assert study.backbones["bert"].pretrained == str(tmp_path / "studies" / "models" / "tiny")
    with pytest.raises(UserError, match=r"backbones.bert.pretrained: no such checkpoint folder: .*nothing"):
        load_study(write_study(tmp_path, QUICKSTART.replace("hfl/chinese-bert-wwm-ext", "./nothing")))


def test_train_constraints():
    assert TrainSpec(lr="1e-5").lr == 1e-5
    for bad in ({"warmup_ratio": 1.0}, {"warmup_ratio": -0.1}, {"lr": 0}, {"epochs": 0},
                {"select_metric": "test/f1"}, {"precision": "fp16"}, {"lora": {"r": 0}}):
        with pytest.raises(ValidationError):
            TrainSpec.model_validate(bad)


def test_data_files_bare_paths_and_leaks():
    data = DataSpec(root="/d", train=["a.jsonl", {"path": "b.txt", "genre": "wa"}], dev=[{"path": "c.jsonl"}])
    assert data.resolved_files() == [Path("/d/a.jsonl"), Path("/d/b.txt"), Path("/d/c.jsonl")]
    with pytest.raises(ValidationError, match=r"data.test\[0\] is the same file as data.train\[0\]"):
        DataSpec(root="/d", train=["a.jsonl"], dev={"split": 0.2}, test=["./a.jsonl"])
    with pytest.raises(ValidationError):
        DataSpec(root="/d", train=["a.jsonl"], dev={"split": 1.0})


def test_run_spec_round_trips_through_json(tmp_path: Path):
    run = expand(load_study(write_study(tmp_path)))[-1]
    again = RunSpec.model_validate_json(run.model_dump_json())
    assert again == run


def test_flat_params_are_dotted_strings_covering_every_axis(tmp_path: Path):
    study = load_study(write_study(tmp_path))
    run = next(r for r in expand(study) if r.finetune == "lora" and r.axes["lora.r"] == 8)
    params = run.flat_params()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())
    assert params["train.lora.r"] == "8" and params["train.lr"] == "0.0001" and params["train.save_model"] == "false"
    assert params["backbone"] == "tiny-bert" and params["backbone_spec.scratch"] == "bert"
    assert params["train.warmup_steps"] == "null" and params["data.train.1.genre"] == "wa"
    assert params["data.dev.split"] == "0.2" and params["data.root"] == str(tmp_path / "demo_data")
    assert "axes" not in params and not any(k.startswith("axes.") for k in params)
    for axis, value in run.axes.items():
        assert params[param_key(axis)] == (value if isinstance(value, str) else str(value))
    assert set(CELL_AXES) <= set(params)


def test_study_spec_round_trips_through_json(tmp_path: Path):
    study = load_study(write_study(tmp_path))
    assert StudySpec.model_validate_json(study.model_dump_json()) == study


def test_windows_must_fit_the_scratch_positions():
    table = {"name": "t", "rows": ["backbone"], "columns": ["f1"], "compare": "finetune"}
    # a grid narrowed to one arm still plans and runs; the report says there is nothing to compare
    assert StudySpec.model_validate(minimal(grid={"finetune": ["full"]}, report={"tables": [table]}))
    too_long = minimal(data={"root": "/d", "train": ["train.jsonl"], "dev": {"split": 0.2}, "max_length": 513})
    with pytest.raises(ValidationError, match="more than the 512 positions of the scratch backbones"):
        StudySpec.model_validate(too_long)
    too_long["backbones"] = {"hub": {"pretrained": "hfl/chinese-bert-wwm-ext"}}  # checked against its config when it loads
    assert StudySpec.model_validate(too_long).data.max_length == 513
    too_long["backbones"] = {"deb": {"scratch": "deberta-v2"}}  # relative positions
    assert StudySpec.model_validate(too_long).data.max_length == 513
