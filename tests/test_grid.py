"""The grid: size = product of axes, stable order, run ids stable, content-addressed and additive."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ablate.errors import DataError
from ablate.grid import data_hashes, expand, file_hashes, run_id, run_name
from ablate.spec import StudySpec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "train.jsonl").write_text(
        '{"character": ["頭", "痛"], "character_label": ["B-SYMP", "I-SYMP"], "genre": "ft"}\n', encoding="utf-8"
    )
    (root / "test.txt").write_text("痛 O\n", encoding="utf-8")
    return root


def study(root: Path, grid: dict, **over) -> StudySpec:
    raw = {
        "name": "s",
        "data": {"root": str(root), "train": ["train.jsonl"], "dev": {"split": 0.2},
                 "test": [{"path": "test.txt", "genre": "ft"}]},
        "backbones": {"bert": {"scratch": "bert"}, "roberta": {"scratch": "roberta"}},
        "grid": {"backbone": ["bert"], **grid},
        **over,
    }
    return StudySpec.model_validate(raw)


def ids(s: StudySpec) -> dict[str, str]:
    """run_name -> run_id (names are unique in these grids)."""
    hashes = data_hashes(s)
    return {run_name(r): run_id(r, hashes) for r in expand(s)}


GRID = {"backbone": ["bert", "roberta"], "finetune": ["lora", "full"], "loss": ["ce", "focal"],
        "lr": [1e-5, 5e-5, 1e-4], "seed": [1, 2]}


def test_size_is_the_product_of_the_axes(data: Path):
    s = study(data, GRID)
    runs = expand(s)
    assert len(runs) == math.prod(len(v) for v in GRID.values()) == 48
    assert len({run_id(r, data_hashes(s)) for r in runs}) == 48
    assert len({run_name(r) for r in runs}) == 48


def test_order_is_sorted_by_axis_name_with_values_in_file_order(data: Path):
    grid = {"seed": [2, 1], "lr": [5e-5, 1e-5], "backbone": ["roberta", "bert"]}
    runs = expand(study(data, grid))
    # Axes sorted: backbone, finetune, loss, lr, seed; the last varies fastest.
    expected = list(itertools.product(["roberta", "bert"], [5e-5, 1e-5], [2, 1]))
    assert [(r.backbone, r.train.lr, r.train.seed) for r in runs] == expected
    assert list(runs[0].axes) == ["backbone", "finetune", "head", "loss", "lr", "seed"]


def test_cells_carry_their_axis_values_in_the_resolved_spec(data: Path):
    s = study(data, {**GRID, "lora.r": [4, 8], "focal.gamma": [1.0]}, train={"epochs": 3})
    for r in expand(s):
        assert r.backbone_spec == s.backbones[r.backbone]
        assert (r.finetune, r.loss, r.train.lr, r.train.seed) == tuple(r.axes[k] for k in ("finetune", "loss", "lr", "seed"))
        assert r.train.epochs == 3 and r.data == s.data and r.study == "s"
        if r.finetune == "lora":
            assert r.train.lora.r == r.axes["lora.r"]


def test_settings_a_method_ignores_do_not_multiply_cells(data: Path):
    s = study(data, {"finetune": ["lora", "full"], "loss": ["ce", "focal"], "lora.r": [4, 8], "focal.gamma": [1.0, 3.0]})
    runs = expand(s)
    # lora cells: 2 ranks x (ce + 2 gammas); full cells: 1 x (ce + 2 gammas).
    assert len(runs) == 2 * 3 + 1 * 3
    full_ce = [r for r in runs if r.finetune == "full" and r.loss == "ce"]
    assert len(full_ce) == 1 and full_ce[0].axes["lora.r"] is None and full_ce[0].axes["focal.gamma"] is None
    assert len({run_id(r, data_hashes(s)) for r in runs}) == len(runs)


def test_run_ids_are_stable_across_calls_and_processes(data: Path):
    s = study(data, GRID)
    first = ids(s)
    assert ids(s) == first and ids(study(data, GRID)) == first
    code = (
        "import json, sys\n"
        "from ablate.spec import StudySpec\n"
        "from ablate.grid import expand, run_id, run_name, data_hashes\n"
        "s = StudySpec.model_validate_json(sys.stdin.read())\n"
        "h = data_hashes(s)\n"
        "print(json.dumps({run_name(r): run_id(r, h) for r in expand(s)}))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], input=s.model_dump_json(), capture_output=True, text=True,
                         env=env, check=True, cwd=REPO)
    assert json.loads(out.stdout) == first


def test_changing_data_content_changes_every_run_id(data: Path):
    s = study(data, GRID)
    before = ids(s)
    (data / "test.txt").write_text("痛 O\n頭 B-BODY\n", encoding="utf-8")
    after = ids(s)
    assert after.keys() == before.keys()
    assert all(after[k] != before[k] for k in before)


def test_adding_an_axis_value_adds_cells_and_keeps_old_ids(data: Path):
    old = ids(study(data, GRID))
    new = ids(study(data, {**GRID, "lr": [1e-5, 5e-5, 1e-4, 2e-4], "seed": [1, 2, 3]}))
    assert len(new) == 2 * 2 * 2 * 4 * 3
    assert {k: new[k] for k in old} == old


def test_identity_ignores_location_order_and_cosmetics(data: Path, tmp_path: Path):
    base = ids(study(data, GRID))
    # An axis with only the fixed value, a description, save_model, axis order: the same runs.
    assert ids(study(data, {**GRID, "epochs": [20]}, description="x", train={"save_model": True})) == base
    assert ids(study(data, dict(reversed(GRID.items())))) == base
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    assert ids(study(moved, GRID)) == base  # same content elsewhere: same ids (root is not hashed)
    # But a real setting changes them all.
    changed = ids(study(data, GRID, train={"batch_size": 8}))
    assert not set(changed.values()) & set(base.values())


def test_lora_settings_do_not_enter_a_full_run_identity(data: Path):
    a = {run_name(r): run_id(r, data_hashes(s)) for s in [study(data, {"finetune": ["lora", "full"]})] for r in expand(s)}
    s2 = study(data, {"finetune": ["lora", "full"]}, train={"lora": {"r": 4}})
    b = {run_name(r): run_id(r, data_hashes(s2)) for r in expand(s2)}
    assert a["bert-full-ce-lr1e-05-e20-s1"] == b["bert-full-ce-lr1e-05-e20-s1"]
    assert a["bert-lora-ce-lr1e-05-e20-s1"] != b["bert-lora-ce-lr1e-05-e20-s1"]


def test_run_id_needs_every_data_hash(data: Path):
    s = study(data, {})
    run = expand(s)[0]
    assert len(run_id(run, data_hashes(s))) == 12
    with pytest.raises(KeyError, match="no hash for data file"):
        run_id(run, {})


def test_run_names_read_like_the_cell(data: Path):
    s = study(data, {"finetune": ["lora"], "loss": ["focal"], "lr": [1e-5, 2.5e-5], "lora.r": [8], "batch_size": [4]})
    names = [run_name(r) for r in expand(s)]
    assert names == ["bert-lora-focal-lr1e-05-e20-s1-bs4-r8", "bert-lora-focal-lr2.5e-05-e20-s1-bs4-r8"]


def test_file_hashes_hash_content_and_notice_changes(data: Path):
    path = data / "test.txt"
    h1 = file_hashes([path])
    assert h1 == {str(path): hashlib.sha256(path.read_bytes()).hexdigest()}
    path.write_text("頭 O\n痛 O\n", encoding="utf-8")
    h2 = file_hashes([path])
    assert h2[str(path)] == hashlib.sha256(path.read_bytes()).hexdigest() != h1[str(path)]
    with pytest.raises(DataError, match="no such file"):
        file_hashes([data / "nope.txt"])


def test_ten_thousand_cells_are_unique(data: Path):
    grid = {"backbone": ["bert", "roberta"], "finetune": ["lora", "full"], "loss": ["ce", "focal"],
            "lr": [1e-5 * k for k in range(1, 26)], "seed": list(range(25)), "epochs": [1, 2]}
    s = study(data, grid)
    runs = expand(s)
    assert len(runs) == 10_000
    hashes = data_hashes(s)
    assert len({run_id(r, hashes) for r in runs}) == 10_000


def test_backbone_entries_serialise_as_they_always_have(data):
    """run_ids hash the backbone entry: its canonical form must not move (or finished cells run again)."""
    small = {"scratch": "bert", "hidden": 128, "layers": 4, "heads": 4, "intermediate": 512}
    runs = expand(study(data, {"backbone": ["bert", "small"]}, backbones={"bert": {"scratch": "bert"}, "small": small}))
    forms = {r.backbone: r.model_dump(mode="json")["backbone_spec"] for r in runs}
    none = dict.fromkeys(("hidden", "layers", "heads", "intermediate"))
    assert forms["bert"] == {"pretrained": None, "scratch": "bert", "shape": "tiny", "pretrain": None, "vocab_size": None, **none}
    assert forms["small"] == {"pretrained": None, "shape": None, "pretrain": None, "vocab_size": None, **small}  # run_id drops pretrain: None


def test_pretraining_is_hashed_into_run_ids_text_files_by_content(data, tmp_path):
    text = tmp_path / "extra.txt"
    text.write_text("頭痛吃藥\n", encoding="utf-8")
    entries = {"bert": {"scratch": "bert"}, "mlm": {"scratch": "bert", "pretrain": {"steps": 100}},
               "mlm200": {"scratch": "bert", "pretrain": {"steps": 200}},
               "mlmtext": {"scratch": "bert", "pretrain": {"steps": 100, "text": [str(text)]}}}
    s = study(data, {"backbone": list(entries)}, backbones=entries)
    by = {r.backbone: r for r in expand(s)}
    first = {b: run_id(r, data_hashes(s)) for b, r in by.items()}
    assert len(set(first.values())) == 4
    assert [first["bert"]] == list(ids(study(data, {})).values())  # no pretrain: the id it always had
    text.write_text("胃痛\n", encoding="utf-8")  # new text: a new id for that backbone only
    again = {b: run_id(r, data_hashes(s)) for b, r in by.items()}
    assert again["mlmtext"] != first["mlmtext"] and {b: again[b] for b in ("bert", "mlm", "mlm200")} == \
        {b: first[b] for b in ("bert", "mlm", "mlm200")}


# sha256 over the sorted run_ids of each shipped study's linear-head cells (all its cells before the head
# axis), with every data file's hash replaced by a stand-in (the file's name): computed on the code before
# the restructure. A change here re-runs finished cells.
PINNED = {
    "backbones": "644cb30651757454", "epoch_curve": "11b793aa7bdd9f7b", "focal_vs_ce": "7a800d51f5b6ced6",
    "lora_vs_full": "eae11c5b31714e6c", "lr_curve": "b0e1b9321918fee4", "quickstart": "d4706aa72bd536d9",
    "rocling_scratch": "ad9b4922963c8e40",
}


# The same over the cells of backbones with `pretrain:` (taken when it landed, 2026-12-02): the quickstart's
# backbones became pretrained then (all 16 of its cells changed on purpose), rocling_scratch gained bert-tiny-mlm.
PINNED_PRETRAINED = {"quickstart": "56108ff163433fa3", "rocling_scratch": "866ac34f62487b92"}


@pytest.mark.parametrize("name", sorted(PINNED_PRETRAINED))
def test_shipped_pretrained_cells_keep_their_run_ids(name):
    ids = shipped_run_ids(name, pretrained=True)
    assert hashlib.sha256(" ".join(ids).encode()).hexdigest()[:16] == PINNED_PRETRAINED[name]


def shipped_run_ids(name: str, pretrained: bool = False) -> list[str]:
    import yaml

    raw = yaml.safe_load((REPO / "studies" / f"{name}.yaml").read_text(encoding="utf-8"))
    raw["data"]["root"] = "/data"
    s = StudySpec.model_validate(raw)
    hashes = {str(p): hashlib.sha256(p.name.encode()).hexdigest() for p in s.data.resolved_files()}
    if pretrained:
        return sorted(run_id(r, hashes) for r in expand(s) if r.backbone_spec.pretrain is not None)
    # linear-head cells of backbones without `pretrain:` (what existed when the digests were taken)
    return sorted(run_id(r, hashes) for r in expand(s) if r.head == "linear" and r.backbone_spec.pretrain is None)


@pytest.mark.parametrize("name", sorted(set(PINNED) - {"quickstart"}))  # quickstart: all pretrained now (above)
def test_shipped_studies_keep_their_run_ids(name):
    digest = hashlib.sha256(" ".join(shipped_run_ids(name)).encode()).hexdigest()[:16]
    assert digest == PINNED[name], f"run_ids of studies/{name}.yaml changed: finished cells would run again"


def test_crf_heads_take_no_loss_axis_and_linear_cells_keep_their_ids(data):
    before = ids(study(data, {"loss": ["ce", "focal"]}))
    s = study(data, {"loss": ["ce", "focal"], "head": ["linear", "crf", "bilstm-crf"]})
    runs = expand(s)
    assert [(r.head, r.loss) for r in runs] == [("linear", "ce"), ("linear", "focal"), ("crf", "ce"), ("bilstm-crf", "ce")]
    after = {run_name(r): run_id(r, data_hashes(s)) for r in runs}
    assert {k: v for k, v in after.items() if k in before} == before  # the linear cells: same ids
    assert len(set(after.values())) == 4
    only_focal = expand(study(data, {"loss": ["focal"], "head": ["crf"]}))
    assert [(r.head, r.loss) for r in only_focal] == [("crf", "ce")]


def test_head_settings_multiply_only_the_heads_that_use_them(data):
    s = study(data, {"head": ["linear", "crf", "bilstm-crf"], "head.lstm.hidden": [64, 128], "decode": ["argmax", "constrained"]})
    cells = sorted((r.head, r.axes["head.lstm.hidden"], r.axes["decode"]) for r in expand(s))
    assert cells == [("bilstm-crf", 64, None), ("bilstm-crf", 128, None), ("crf", None, None),
                     ("linear", None, "argmax"), ("linear", None, "constrained")]


def test_varying_lstm_settings_without_a_bilstm_head_is_a_study_error(data):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="varies head.lstm settings but grid.head has no bilstm-crf"):
        study(data, {"head": ["linear", "crf"], "head.lstm.layers": [1, 2]})
