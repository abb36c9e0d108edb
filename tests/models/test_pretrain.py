"""Masked-LM pretraining: the loss falls, masking never touches specials, words mask together, and the cache builds
once (two processes at once), survives a SIGKILL mid-build, and rebuilds when the text or a setting changes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ablate.data.readers import read_jsonl
from ablate.models import prepare_backbone
from ablate.models.pretrain import (IGNORE, Text, cache_key, collate_masked, encode_text, pretrain, pretrained_backbone,
                                    text_digest)
from ablate.spec import BackboneSpec, PretrainSpec

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
WORDS = ["頭痛", "吃藥", "糖尿病", "患者", "需要", "控制", "血糖", "醫師", "建議", "多", "運動", "睡眠", "不足"]


def corpus(n: int = 200, seed: int = 0) -> list[Text]:
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ws = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        out.append(Text(tuple("".join(ws)), tuple(len(w) for w in ws)))
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    return prepare_backbone(BackboneSpec(scratch="bert", shape="tiny"), [t.chars for t in corpus()],
                            tmp_path_factory.mktemp("base"))


def test_masked_lm_loss_falls_and_held_out_accuracy_beats_chance(base, tmp_path):
    logged = []
    # Character masking: a masked character is given away by the rest of its word (whole-word masking would hide
    # the word, and words follow each other at random here). A tiny encoder plateaus for ~500 steps first.
    spec = PretrainSpec(steps=1500, batch_size=16, lr=5e-3, held_out=0.1, whole_word=False)
    final = pretrain(base, spec, corpus(), tmp_path / "out", torch.device("cpu"), lambda m, s: logged.append((s, m)))
    losses = [m["pretrain/loss"] for _, m in logged if "pretrain/loss" in m and "pretrain/steps" not in m]
    assert losses[-1] < 0.75 * losses[0], losses
    vocab = len(set("".join(WORDS)))
    assert final["pretrain/held_out_accuracy"] > 5 / vocab  # chance over the characters is 1/vocab
    assert final["pretrain/steps"] == 1500 and (tmp_path / "out" / "config.json").exists()


def test_masking_never_touches_cls_sep_or_padding_and_follows_80_10_10(base):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    rows = encode_text(corpus(64), tok, 32, whole_word=False)
    gen = torch.Generator().manual_seed(0)
    chosen = masked = kept = 0
    for _ in range(20):
        b = collate_masked(rows, list(range(len(rows))), tok, 0.3, gen)
        orig = collate_masked(rows, list(range(len(rows))), tok, 1e-9, torch.Generator().manual_seed(1))["input_ids"]
        special = torch.isin(orig, torch.tensor(tok.all_special_ids)) | (b["attention_mask"] == 0)
        assert not (b["labels"] != IGNORE)[special].any()  # [CLS], [SEP], [PAD]: never a target
        assert torch.equal(b["input_ids"][special], orig[special])  # ... and never changed
        sel = b["labels"] != IGNORE
        chosen += int(sel.sum())
        masked += int((b["input_ids"][sel] == tok.mask_token_id).sum())
        kept += int((b["input_ids"][sel] == orig[sel]).sum())
    assert 0.25 < chosen / int((~special).sum() * 20) < 0.35
    assert 0.76 < masked / chosen < 0.84 and 0.07 < kept / chosen < 0.14  # random swaps may hit the same token


def test_a_sentence_longer_than_max_length_is_cut_into_pieces_that_mask_and_train(base, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    long = Text(tuple("糖尿病患者需要控制血糖" * 30), (3, 2, 2, 2, 2) * 30)  # 330 characters, max_length 32
    rows = encode_text([long], tok, 32, whole_word=True)
    assert sum(len(r.input_ids) - 2 for r in rows) == 330 and all(len(r.input_ids) <= 32 for r in rows)
    b = collate_masked(rows, list(range(len(rows))), tok, 0.5, torch.Generator().manual_seed(0))
    assert (b["labels"] != IGNORE).any(dim=1).all()  # every piece has something masked at this rate
    final = pretrain(base, PretrainSpec(steps=3, batch_size=4, max_length=32), [long] * 4, tmp_path / "o", torch.device("cpu"))
    assert final["pretrain/steps"] == 3


def test_whole_word_masking_masks_every_character_of_a_chosen_word(base):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    texts = corpus(64)
    rows = encode_text(texts, tok, 64, whole_word=True)
    b = collate_masked(rows, list(range(len(rows))), tok, 0.3, torch.Generator().manual_seed(0))
    for r, t in enumerate(texts):
        sel = (b["labels"][r] != IGNORE).tolist()[1:1 + len(t.chars)]  # token i+1 is character i
        start = 0
        for n in t.words:
            assert len(set(sel[start:start + n])) == 1, (t, sel)  # a word is masked whole or not at all
            start += n


def test_the_rocling_jsonl_words_reach_the_sentences(rocling):
    sents = read_jsonl(rocling / "healthner_test.jsonl")
    with_words = [s for s in sents if s.words]
    assert len(with_words) > 0.9 * len(sents)
    assert all(sum(s.words) == len(s.chars) for s in with_words)


def test_a_new_text_or_setting_gives_a_new_key():
    b = BackboneSpec(scratch="bert", pretrain=PretrainSpec(steps=10))
    d = text_digest(corpus())
    key = cache_key(b, "/base", d)
    assert cache_key(b, "/base", text_digest(corpus(seed=1))) != key
    assert cache_key(BackboneSpec(scratch="bert", pretrain=PretrainSpec(steps=11)), "/base", d) != key
    assert cache_key(BackboneSpec(scratch="bert", pretrain=PretrainSpec(steps=10, mask_prob=0.2)), "/base", d) != key
    assert cache_key(BackboneSpec(scratch="bert", pretrain=PretrainSpec(steps=10)), "/base", d) == key


BUILD = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from models.test_pretrain import corpus
    from ablate.models.pretrain import pretrained_backbone
    from ablate.spec import BackboneSpec, PretrainSpec
    calls = []
    log = type("L", (), {{"start": lambda self, p: calls.append(p) or "h",
                         "log": lambda self, h, m, s: print("STEP", s, flush=True),
                         "end": lambda self, h, ok, f: None}})()
    b = BackboneSpec(scratch="bert", pretrain=PretrainSpec({spec}))
    folder, key = pretrained_backbone(b, {base!r}, corpus(), ["test"], Path({cache!r}), "cpu", log)
    print("BUILT" if calls else "WAITED", folder, flush=True)
""")
SPEC = "steps=None, seconds=4, batch_size=8"  # a time budget: the same key whatever the machine's speed


class Log:
    def __init__(self):
        self.starts = []

    def start(self, params):
        self.starts.append(params)
        return "h"

    def log(self, handle, metrics, step):
        pass

    def end(self, handle, ok, final):
        pass


def _builder(base: str, cache: Path, spec: str = SPEC) -> subprocess.Popen:
    code = BUILD.format(tests=str(REPO / "tests"), base=base, cache=str(cache), spec=spec)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)


def test_two_processes_asking_at_once_build_the_backbone_once(base, tmp_path):
    procs = [_builder(base, tmp_path, "steps=60, batch_size=8") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    last = sorted(o[0].split("\n")[-2].split() for o in outs)
    assert [w[0] for w in last] == ["BUILT", "WAITED"], outs
    assert last[0][1] == last[1][1]  # the same folder
    assert len(list((tmp_path / "pretrained").glob("*/backbone/config.json"))) == 1


def test_a_sigkill_mid_pretraining_leaves_nothing_usable_and_the_next_run_rebuilds(base, tmp_path):
    p = _builder(base, tmp_path)
    for line in p.stdout:  # wait until it is training (a logged step), then kill it
        if line.startswith("STEP"):
            break
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert not list((tmp_path / "pretrained").glob("*/backbone/config.json"))  # nothing that looks finished
    log = Log()
    spec = BackboneSpec(scratch="bert", pretrain=PretrainSpec(steps=None, seconds=4, batch_size=8))
    folder, key = pretrained_backbone(spec, base, corpus(), ["test"], tmp_path, "cpu", log)
    assert len(log.starts) == 1 and Path(folder, "config.json").exists()  # the same key, built again
    assert key == cache_key(spec, base, text_digest(corpus()))
    assert not list((tmp_path / "pretrained").glob(".tmp-*"))
    again = Log()
    assert pretrained_backbone(spec, base, corpus(), ["test"], tmp_path, "cpu", again) == (folder, key)
    assert not again.starts  # cached: not built a second time


def test_pretraining_text_files_read_as_sentences_of_tokens(tmp_path):
    from ablate.models.pretrain import read_text_file

    conll = tmp_path / "c.txt"
    conll.write_text("頭 B-SYMP\n  O\n痛 I-SYMP\n\n胃 O\n", encoding="utf-8")
    assert [t.chars for t in read_text_file(conll)] == [("頭", " ", "痛"), ("胃",)]  # tokens only, never the tags
    words = tmp_path / "w.txt"
    words.write_text("The patient has fever\nAspirin helps\n", encoding="utf-8")
    assert [t.chars for t in read_text_file(words)] == [("The", "patient", "has", "fever"), ("Aspirin", "helps")]
    zh = tmp_path / "z.txt"
    zh.write_text("病人頭痛\n醫師建議多喝水\n", encoding="utf-8")
    assert [t.chars for t in read_text_file(zh)] == [tuple("病人頭痛"), tuple("醫師建議多喝水")]
