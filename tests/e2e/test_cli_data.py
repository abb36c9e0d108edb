"""The data and score commands through the real `ablate` executable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ABLATE = [str(Path(sys.executable).with_name("ablate"))]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(ABLATE + [str(a) for a in args], capture_output=True, text=True, timeout=120)


def test_score_reproduces_official_ft_line_and_json(rocling):
    r = run("score", "--genre", f"ft={rocling}/rocling23_truth_FT.txt,{rocling}/rocling23_baseline_pred_FT.txt")
    assert r.returncode == 0, r.stderr
    assert "accuracy:  90.05%; precision:  67.05%; recall:  56.09%; FB1:  61.08" in r.stdout
    assert "SUPP: precision:  15.46%; recall:  31.91%; FB1:  20.83  97" in r.stdout
    j = run("score", "--json", f"{rocling}/rocling23_truth_FT.txt", f"{rocling}/rocling23_baseline_pred_FT.txt")
    out = json.loads(j.stdout)
    ft = out["genres"]["ft"]
    assert (ft["phrases"], ft["found"], ft["correct"]) == (10849, 9075, 6085)
    assert round(100 * ft["f1"], 2) == 61.08 and set(ft["per_type"]["BODY"]) == {"precision", "recall", "f1", "found"}
    assert out["macro"]["f1"] == ft["f1"]


def test_score_several_genres_prints_macro(rocling, tmp_path):
    g = f"{rocling}/rocling23_truth_FT.txt"
    r = run("score", "--genre", f"ft={g},{rocling}/rocling23_baseline_pred_FT.txt", "--genre", f"sm={g},{g}")
    assert r.returncode == 0, r.stderr
    assert "== MACRO over 2 genres (FT, SM)" in r.stdout
    assert "FB1:  80.54" in r.stdout  # (61.08 + 100) / 2


def test_data_check_lists_repairs_with_lines(rocling):
    r = run("data", "check", "--json", f"{rocling}/rocling22_chner_truth.txt")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [(x["line"], x["from"], x["to"]) for x in out["repairs"]] == [(11988, "O-SYMP", "O"), (39801, "i-CHEM", "I-CHEM")]
    assert out["files"][0]["sentences"] == 3205 and out["errors"] == []


def test_data_stats_matches_the_data_readme(rocling):
    r = run("data", "stats", "--json", f"{rocling}/healthner_test.jsonl", f"{rocling}/rocling22_chner_truth.txt:wa")
    st = json.loads(r.stdout)
    assert {g: v["sentences"] for g, v in st["genres"].items()} == {"ft": 1690, "sm": 841, "wa": 3205}
    assert {g: v["characters"] for g, v in st["genres"].items()}["wa"] == 118116
    assert st["characters"] == 121284 + 118116
    assert set(st["entity_totals"]) == {"BODY", "SYMP", "INST", "EXAM", "CHEM", "DISE", "DRUG", "SUPP", "TREAT", "TIME"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["data", "check", "{tmp}/missing.txt"], "no such file"),
        (["data", "stats", "{tmp}/bad.txt:ft"], "bad.txt:2: expected a token and its tag"),
        (["data", "stats", "{tmp}/tags.txt:ft"], "tags.txt:1: invalid tag 'Q-BODY'"),
        (["data", "stats", "{tmp}/latin1.txt:ft"], "latin1.txt:1: invalid UTF-8"),
        (["score", "{tmp}/tags.txt", "{tmp}/other.txt"], "other.txt:1: character 'y' but gold line 1 has 'x'"),
        (["score", "--genre", "ft=a"], "no such file"),
        (["score", "--genre", "ft"], "expected NAME=GOLD,PRED"),
        (["data", "demo", "{tmp}/bad.txt"], "bad.txt: exists and is not a folder"),
        (["data", "demo", "/proc/x"], "/proc/x: cannot write the demo corpus there"),
    ],
)
def test_bad_input_is_one_message_and_exit_2(tmp_path, args, message):
    (tmp_path / "bad.txt").write_text("a O\nb\n", encoding="utf-8")
    (tmp_path / "tags.txt").write_text("x Q-BODY\n", encoding="utf-8")
    (tmp_path / "other.txt").write_text("y O\n", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("é O\n".encode("latin-1"))
    r = run(*[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stdout + r.stderr
    assert "Traceback" not in r.stderr


def test_help_does_not_import_torch():
    code = "import sys; sys.argv=['ablate','--help']\nfrom ablate import cli\ntry: cli.main()\nexcept SystemExit: pass\nprint('torch' in sys.modules, 'transformers' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip().endswith("False False")


def test_train_with_an_unknown_model_and_no_hub_is_one_message_exit_2(tmp_path):
    from ablate.data.demo import make_demo_corpus

    make_demo_corpus(tmp_path / "d", sentences=30, seed=1)
    r = subprocess.run(ABLATE + ["train", "--train", str(tmp_path / "d" / "train.jsonl"), "--backbone", "no-such-org/no-such-model",
                                 "--epochs", "1", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "no-such-org/no-such-model" in r.stderr and "scratch" in r.stderr
    assert "Traceback" not in r.stderr
