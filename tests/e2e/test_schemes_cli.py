"""Corpora in other tag schemes through the real CLI: a BMES corpus with `_` separators and a `B_x` IOB2 corpus
(character-level, from the demo corpus) go through `data check`, `run` (linear and CRF heads) and `report`, and
their predictions are written in their own tags."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.e2e.conftest import ablate, tiny_study


def _convert(tags: list[str], scheme: str) -> list[str]:
    """IOB2 `B-X` tags -> BMES with `_` (B_X M_X E_X, S_X) or IOB2 with `_`."""
    if scheme == "IOB2_":
        return [t if t == "O" else t[0] + "_" + t[2:] for t in tags]
    out = []
    for i, t in enumerate(tags):
        if t == "O":
            out.append(t)
            continue
        nxt = tags[i + 1] if i + 1 < len(tags) else "O"
        ends = nxt != "I-" + t[2:]
        role = ("S" if ends else "B") if t[0] == "B" else ("E" if ends else "M")
        out.append(f"{role}_{t[2:]}")
    return out


@pytest.mark.parametrize("scheme,expected", [("BMES_", "BMES with '_'"), ("IOB2_", "IOB2 with '_'")])
def test_a_corpus_in_its_own_scheme_checks_trains_reports_and_predicts_in_its_tags(tmp_path, scheme, expected):
    study = tiny_study(tmp_path, grid={"head": ["linear", "crf"], "lr": [3.0e-3]}, epochs=2)
    for split in ("train", "dev", "test"):
        path = tmp_path / "data" / f"{split}.jsonl"
        recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for r in recs:
            r["character_label"] = _convert(r["character_label"], scheme)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")

    r = ablate("data", "check", tmp_path / "data" / "train.jsonl", cwd=tmp_path)
    assert r.returncode == 0 and expected in r.stdout, r.stdout + r.stderr
    r = ablate("run", study, "--no-display", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    r = ablate("report", study, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    cells = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'cell'")
    assert len(cells) == 2 and all(c.info.status == "FINISHED" for c in cells)
    assert {c.data.tags["ablate.ran.scheme"] for c in cells} == {scheme if scheme != "IOB2_" else "IOB2_"}
    for c in cells:
        folder = client.download_artifacts(c.info.run_id, "predictions", str(tmp_path / c.info.run_id))
        tags = {line.split(" ")[-1] for p in __import__("pathlib").Path(folder).glob("test_*.conll")
                for line in p.read_text(encoding="utf-8").splitlines() if line.strip()}
        assert tags <= {"O"} | {f"{p}_{t}" for p in "BMESI" for t in
                                 "BODY SYMP INST EXAM CHEM DISE DRUG SUPP TREAT TIME".split()}, tags
        assert not any("-" in t for t in tags)  # written in the corpus's own separator


def test_a_declared_scheme_the_tags_do_not_follow_is_one_message(tmp_path):
    study = tiny_study(tmp_path)
    raw = yaml.safe_load(study.read_text(encoding="utf-8"))
    raw["data"]["scheme"] = "BMES"
    study.write_text(yaml.safe_dump(raw), encoding="utf-8")
    r = ablate("run", study, "--no-display", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "invalid tag 'I-" in r.stderr and "BMES" in r.stderr, r.stderr


def test_the_word_level_example_study_runs_end_to_end_in_its_own_tags(tmp_path):
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "studies").mkdir()
    shutil.copy(repo / "studies" / "words_demo.yaml", tmp_path / "studies" / "words_demo.yaml")
    r = ablate("data", "demo", tmp_path / "demo_words", "--words", "--sentences", "200", cwd=tmp_path)
    assert r.returncode == 0 and "tokens" in r.stdout, r.stdout + r.stderr
    r = ablate("data", "check", tmp_path / "demo_words" / "train.conll:med", cwd=tmp_path)
    assert r.returncode == 0 and "IOBES with '_'" in r.stdout and "tokens" in r.stdout, r.stdout + r.stderr
    study = tmp_path / "studies" / "words_demo.yaml"
    r = ablate("run", study, "--no-display", "--set", "train.epochs=2", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    r = ablate("report", study, "--set", "train.epochs=2", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    page = (tmp_path / "reports" / "words_demo" / "README.md").read_text(encoding="utf-8")
    assert "2 finished" in page.replace("**", "")

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("words_demo")
    [cell, *_] = client.search_runs([exp.experiment_id], "tags.`ablate.role` = 'cell'")
    folder = Path(client.download_artifacts(cell.info.run_id, "predictions", str(tmp_path / "p")))
    [pred] = list(folder.glob("test_*.conll"))
    rows = [line.split(" ") for line in pred.read_text(encoding="utf-8").splitlines() if line.strip()]
    words = [line.split(" ")[0] for line in (tmp_path / "demo_words" / "test.conll").read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("-DOCSTART-")]
    assert [r[0] for r in rows] == words  # one prediction per word of the file, in order
    assert all(t == "O" or t[1] == "_" for r in rows for t in r[1:])
    assert cell.data.metrics["dev/macro_f1"] > 0.2  # a WordPiece vocabulary: the words are not [UNK]


def test_a_tokenizer_that_loses_the_text_is_a_warning_and_logged_per_split(tmp_path):
    tiny_study(tmp_path)  # writes the demo corpus (Chinese characters) under data/
    latin = tmp_path / "latin.txt"  # a test file in characters the training vocabulary never saw
    latin.write_text("".join(f"{c} O\n" for c in "patient has fever") + "\n", encoding="utf-8")
    r = ablate("train", "--train", tmp_path / "data" / "train.jsonl", "--dev", tmp_path / "data" / "dev.jsonl",
               "--test", f"{latin}:ft", "--epochs", "1", "--lr", "1e-3", "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning" in r.stdout and "% of test tokens are the tokenizer's unknown token" in r.stdout, r.stdout


def test_data_check_with_a_backbone_says_how_much_its_tokenizer_loses(tmp_path):
    from ablate.models import prepare_backbone
    from ablate.spec import BackboneSpec

    folder = prepare_backbone(BackboneSpec(scratch="bert"), [tuple("頭痛發燒")], tmp_path / "bb")
    zh, latin = tmp_path / "zh.txt", tmp_path / "latin.txt"
    zh.write_text("頭 B-SYMP\n痛 I-SYMP\n", encoding="utf-8")
    latin.write_text("f O\ne O\nv O\n", encoding="utf-8")
    r = ablate("data", "check", f"{zh}:ft", f"{latin}:ft", "--backbone", folder, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0.0% unknown to the tokenizer" in r.stdout and "100.0% unknown to the tokenizer" in r.stdout, r.stdout
    assert "100.0% of its tokens are" in r.stdout
    r = ablate("data", "check", f"{zh}:ft", "--backbone", "scratch:bert", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
