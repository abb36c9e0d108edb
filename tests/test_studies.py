"""The shipped studies: each loads and expands on real data, plans through the real CLI, and its report
block asks about axes that vary; the hub-name studies keep the paper's settings and fail offline clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ablate.errors import UserError
from ablate.grid import data_hashes, expand, run_id
from ablate.spec import load_study

STUDIES = Path(__file__).resolve().parents[1] / "studies"
ABLATE = str(Path(sys.executable).with_name("ablate"))

# Cells each shipped study is meant to have; a new study must be added here (test_every_study_is_counted).
CELLS = {
    "quickstart": 16,     # 2 backbones x full/lora x ce/focal x 2 lr
    "lora_vs_full": 18,   # Table 4: 3 backbones x full/lora x 3 seeds
    "backbones": 15,      # Table 3: 5 backbones x 3 seeds
    "focal_vs_ce": 18,    # Table 5: 3 backbones x ce/focal x 3 seeds
    "lr_curve": 30,       # Fig. 3: 3 backbones x full/lora x 5 lr
    "epoch_curve": 18,    # Fig. 4: 3 backbones x full/lora x 5/10/20 epochs
    "rocling_scratch": 64,  # 3 tiny scratch backbones + bert-tiny-mlm x full/lora x (linear x ce/focal + crf + bilstm-crf) x 2 lr
    "heads": 27,          # 3 backbones x linear/crf/bilstm-crf x 3 seeds
    "words_demo": 2,      # word-level BIOES_ corpus: linear vs crf head
    "genre_models": 12,   # BERT x 4 training-genre subsets x 3 seeds
    "rocling_genres": 12,  # tiny scratch BERT x 4 genre subsets x 3 fractions
}
HUB_STUDIES = ["lora_vs_full", "backbones", "focal_vs_ce", "lr_curve", "epoch_curve", "heads", "genre_models"]
PAPER_NAMES = {"hfl/chinese-bert-wwm-ext", "hfl/chinese-roberta-wwm-ext-large",
               "KoichiYasuoka/deberta-xlarge-chinese-erlangshen-ud-goeswith"}


def _raw(name: str) -> dict:
    return yaml.safe_load((STUDIES / f"{name}.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    """The synthetic corpus the quickstart reads, written to a temp folder (small: only files must exist)."""
    from ablate.data.demo import make_demo_corpus

    root = tmp_path_factory.mktemp("demo")
    make_demo_corpus(root, sentences=60, seed=0)
    return root


@pytest.fixture(scope="module")
def words_root(tmp_path_factory) -> Path:
    from ablate.data.demo_words import make_words_corpus

    root = tmp_path_factory.mktemp("words")
    make_words_corpus(root, sentences=60, seed=0)
    return root


@pytest.fixture
def root_for(request, demo_root, words_root):
    """The data folder of a study: the demo corpora for the quickstart and words_demo, the real ROCLING files otherwise."""
    local = {"quickstart": demo_root, "words_demo": words_root}
    return lambda name: local[name] if name in local else request.getfixturevalue("rocling")


def _load(name: str, root: Path):
    return load_study(STUDIES / f"{name}.yaml", [f"data.root={root}"])


def test_every_study_is_counted():
    assert sorted(p.stem for p in STUDIES.glob("*.yaml")) == sorted(CELLS)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_study_loads_and_expands_to_its_cells_with_unique_ids(name, root_for):
    study = _load(name, root_for(name))
    runs = expand(study)
    hashes = data_hashes(study)
    ids = [run_id(r, hashes) for r in runs]
    assert len(runs) == CELLS[name]
    assert len(set(ids)) == len(ids)
    # The grid is the full product of its axes, except that CRF heads take no loss axis (one cell for all losses).
    product = 1
    for axis, values in study.grid.items():
        if axis != "head":
            product *= len(values)
    linear = sum(1 for h in study.grid["head"] if h == "linear")
    crf = len(study.grid["head"]) - linear
    assert len(runs) == product * linear + product // len(study.grid["loss"]) * crf
    assert all(f.is_file() for f in study.data.resolved_files())


@pytest.mark.parametrize("name", sorted(CELLS))
def test_report_block_asks_about_axes_that_vary(name, root_for):
    study = _load(name, root_for(name))
    varies = {a for a, v in study.grid.items() if len(v) > 1}
    report = study.report
    assert report.tables or report.figures, f"{name} declares no report"
    for t in report.tables:
        assert set(t.rows) & varies, f"{name}: table {t.name} has no varying row axis"
        assert set(t.rows) <= set(study.grid), f"{name}: table {t.name} names an unknown axis"
        if t.compare:
            assert len(study.grid[t.compare]) >= 2, f"{name}: table {t.name} compares {t.compare} (needs two values)"
        for axis, value in t.where.items():
            assert value in study.grid[axis]
    for f in report.figures:
        assert f.x == "epoch" or f.x in varies, f"{name}: figure {f.name} has x={f.x} that does not vary"
        assert set(f.lines) <= varies, f"{name}: figure {f.name} draws lines over an axis that does not vary"
        for axis, value in f.where.items():
            assert value in study.grid[axis]


@pytest.mark.parametrize("name", sorted(CELLS))
def test_plan_cli_answers_with_the_cells(name, root_for, tmp_path):
    data_root = root_for(name)
    r = subprocess.run([ABLATE, "plan", str(STUDIES / f"{name}.yaml"), "--no-status", "--set", f"data.root={data_root}",
                        "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    study = _load(name, data_root)
    hashes = data_hashes(study)
    assert plan["study"] == study.name
    assert [c["run_id"] for c in plan["cells"]] == [run_id(x, hashes) for x in expand(study)]
    assert {c["status"] for c in plan["cells"]} == {"pending"}
    assert all(set(study.grid) <= set(c) for c in plan["cells"])
    assert not (tmp_path / "mlruns").exists(), "--no-status must not create an MLflow store"


def test_hub_studies_default_to_the_fetch_layout_and_say_so_when_absent(tmp_path):
    # data.root ../data/rocling is where `ablate data fetch rocling data/rocling` puts the files, by these names.
    from ablate.data.fetch import SOURCES

    fetched = {s.name for s in SOURCES}
    for name in HUB_STUDIES + ["rocling_scratch"]:
        data = _raw(name)["data"]
        assert data["root"] == "../data/rocling"
        used = {f["path"] if isinstance(f, dict) else f for role in ("train", "test") for f in data[role]}
        assert used <= fetched, used - fetched
    fake = tmp_path / "studies"
    fake.mkdir()
    (fake / "s.yaml").write_text((STUDIES / "lora_vs_full.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(UserError, match=r"no such file: .*data/rocling/healthner_test\.jsonl"):
        load_study(fake / "s.yaml")


@pytest.mark.parametrize("name", HUB_STUDIES)
def test_hub_studies_keep_the_papers_settings(name, rocling):
    study = _load(name, rocling)
    names = {b.pretrained for b in study.backbones.values()}
    assert None not in names and PAPER_NAMES & names
    t = study.train
    assert t.max_grad_norm == 5.0 and t.lora.r == 16 and t.focal.alpha == "learned" and t.warmup_ratio > 0
    epochs = study.grid.get("epochs", [t.epochs])
    assert 20 in epochs
    # batch 16 with the paper's 1e-5 at batch 1 scaled by sqrt(16) (lr_curve sweeps it, 4e-5 included)
    assert t.batch_size == 16 and 4.0e-5 in study.grid.get("lr", [t.lr])
    assert study.data.dev.split == 0.2 and study.data.dev.seed == 0
    train = {(f.path.name, f.genre) for f in study.data.train}
    assert train == {("healthner_test.jsonl", None), ("rocling22_chner_truth.txt", "wa")}
    assert [(f.path.name, f.genre) for f in study.data.test] == [("rocling23_truth_FT.txt", "ft")]


def test_table4_has_the_papers_columns(rocling):
    table = next(t for t in _load("lora_vs_full", rocling).report.tables if t.name == "table4")
    assert table.columns == ["params/trainable", "params/total", "epoch_seconds", "peak_memory_mb", "f1"]
    assert table.rows == ["backbone", "finetune"] and table.compare == "finetune" and table.paper


def test_backbones_study_names_the_papers_five(rocling):
    study = _load("backbones", rocling)
    # Row names match the paper's (ablate.report.tables.PAPER), so its Table 3 shows beside ours.
    assert set(study.grid["backbone"]) == {"albert", "electra", "bert", "roberta", "deberta"}


def test_hub_names_fail_offline_with_one_message_naming_the_model(monkeypatch):
    from ablate.models import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    names = sorted({bb["pretrained"] for n in HUB_STUDIES for bb in _raw(n)["backbones"].values()})
    assert len(names) == 5
    for name in names:
        with pytest.raises(UserError) as err:
            load_model(name, ["O", "B-BODY", "I-BODY"])
        message = str(err.value)
        assert f"'{name}'" in message and "HF_HUB_OFFLINE" in message and "\n" not in message
