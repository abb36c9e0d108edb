"""User input that once ended in a traceback or a misleading message: one message naming the place, exit 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ablate.errors import UserError
from ablate.spec import StudyError, load_study

ABLATE = str(Path(sys.executable).with_name("ablate"))


def ablate(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ABLATE_CACHE": str(cwd / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([ABLATE, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


# ---- recursive YAML aliases ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, where",
    [
        ("a: &a [*a]\n", "rec.yaml:1: recursive YAML alias at a[0]"),
        ("name: x\nb: &b {c: *b}\n", "rec.yaml:2: recursive YAML alias at b.c"),
        ("name: x\ngrid: &g\n  lr: [1.0e-3, *g]\n", "rec.yaml:3: recursive YAML alias at grid.lr[1]"),
        ("&top [*top]\n", "rec.yaml:1: recursive YAML alias at [0]"),
    ],
)
def test_recursive_alias_is_one_study_error(tmp_path, text, where):
    path = tmp_path / "rec.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(StudyError) as e:
        load_study(path)
    assert len(e.value.problems) == 1
    assert where in str(e.value)


def test_yaml_nested_too_deeply_is_one_study_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(StudyError, match="nested too deeply"):
        load_study(path)


def test_shared_alias_is_not_recursion(tmp_path):
    """An anchor used twice (not inside itself) is fine: the walk visits it once and the study loads."""
    (tmp_path / "t.txt").write_text("頭 B-BODY\n痛 O\n", encoding="utf-8")
    path = tmp_path / "shared.yaml"
    path.write_text(
        "name: shared\n"
        "data: {root: ., train: [{path: t.txt, genre: wa}], dev: {split: 0.5, seed: 0}}\n"
        "backbones: {a: &bb {scratch: bert, shape: tiny}, b: *bb}\n"
        "grid: {backbone: [a, b], finetune: &ft [full]}\n"
        "search: null\n"
        "x: *ft\n",
        encoding="utf-8",
    )
    with pytest.raises(StudyError) as e:  # x is unknown: found on the alias's own line, after a full walk
        load_study(path)
    assert e.value.problems == [f"{path}:6: x: unknown key"]
    path.write_text(path.read_text(encoding="utf-8").replace("x: *ft\n", ""), encoding="utf-8")
    spec = load_study(path)
    assert spec.name == "shared" and set(spec.backbones) == {"a", "b"}


def test_plan_of_a_recursive_alias_exits_2_without_traceback(tmp_path):
    (tmp_path / "rec.yaml").write_text("a: &a [*a]\n", encoding="utf-8")
    r = ablate("plan", "rec.yaml", "--no-status", cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "rec.yaml:1: recursive YAML alias at a[0]" in r.stderr
    assert "Traceback" not in r.stderr


# ---- `ablate train`: problems name the flags, not a temporary YAML ------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from ablate.data.demo import make_demo_corpus

    folder = tmp_path_factory.mktemp("corpus")
    make_demo_corpus(folder, sentences=30, seed=0)
    return folder


@pytest.mark.parametrize(
    "flags, lines",
    [
        (["--finetune", "half"], ["Invalid value for '--finetune'", "'half' is not one of 'full', 'lora'"]),  # an enum: click's words
        (["--loss", "foc"], ["Invalid value for '--loss'", "'foc' is not one of 'ce', 'focal'"]),
        (["--lr", "-1", "--epochs", "0"], ["--lr: should be greater than 0", "--epochs: should be greater"]),
        (["--batch-size", "0", "--max-length", "2"], ["--batch-size: should be greater", "--max-length: should be greater"]),
        (["--backbone", "scratch:nope"], ["error: --backbone: 'nope' is not one of"]),
        (["--backbone", "./no-such-folder"], ["--backbone: no such checkpoint folder: {cwd}/no-such-folder"]),
        (["--test", "missing.txt:ft"], ["error: --test: no such file: {cwd}/missing.txt"]),
        (["--set", "train.lr=-2", "--set", "train.nope=1"],
         ["--set train.lr=-2: should be greater than 0", "--set train.nope=1: unknown key"]),
        (["--set", "oops"], ["error: --set oops: expected KEY=VALUE"]),
    ],
)
def test_train_flag_errors_name_the_flag_and_train_nothing(corpus, tmp_path, flags, lines):
    r = ablate("train", "--train", corpus / "train.jsonl", "--out", tmp_path / "out", *flags, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    flat = " ".join(re.sub("[│╭╮╰╯─]", " ", r.stderr).split())  # click's usage errors come in a wrapped box
    for line in lines:
        assert line.format(cwd=tmp_path) in r.stderr or " ".join(line.format(cwd=tmp_path).split()) in flat, r.stderr
    assert "train.yaml" not in r.stderr and not re.search(r"^(error: |  )?(grid|data|backbones|train)\.", r.stderr, re.M)
    assert "Traceback" not in r.stderr
    assert "training" not in r.stdout and not (tmp_path / "out").exists()  # failed before any training


def test_every_problem_location_names_its_flag():
    from ablate.single import flag_of

    sets = {("train", "x"): "train.x=a: b"}
    assert flag_of(("grid", "finetune", 0), {}) == "--finetune"
    assert flag_of(("data", "train", 1, "genre"), {}) == "--train"
    assert flag_of(("backbones", "model", "shape"), {}) == "--backbone"
    assert flag_of(("train", "lr"), {}) == "--lr"
    assert flag_of(("train", "x"), sets) == "--set train.x=a: b"
    assert flag_of(("--set", "grid.lora.r=[x]"), {}) == "--set grid.lora.r=[x]"


def test_cli_choices_are_the_spec_literals():
    from typing import get_args

    from ablate.cli import FinetuneChoice, LossChoice
    from ablate.spec import Finetune, Loss

    assert {c.value for c in FinetuneChoice} == set(get_args(Finetune))
    assert {c.value for c in LossChoice} == set(get_args(Loss))


def test_demo_corpus_into_a_file_is_a_user_error(tmp_path):
    from ablate.data.demo import make_demo_corpus

    (tmp_path / "f").write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match=r"f: exists and is not a folder"):
        make_demo_corpus(tmp_path / "f", sentences=30)
    with pytest.raises(UserError, match=r"f/sub: cannot write the demo corpus there"):
        make_demo_corpus(tmp_path / "f" / "sub", sentences=30)
