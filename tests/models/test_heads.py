"""Heads: every name has a builder; CRF heads fit, keep BIO, respect windows and padding, and train under LoRA."""

from __future__ import annotations

import dataclasses
import random
from typing import get_args

import pytest
import torch

from ablate.data.encode import collate, encode
from ablate.data.readers import Sentence
from tests.sentences import FOUR, sentence
from ablate.data.tags import entity_types, label_list
from ablate.metrics import get_entities
from ablate.models import apply_lora, load_model, prepare_backbone
from ablate.models.heads import HEADS, build_head
from ablate.spec import BackboneSpec, Head, LoraSpec, RunSpec, TrainSpec
from ablate.trainer import Split, predict, train

torch.set_num_threads(1)


_s = sentence
LABELS = label_list(entity_types(FOUR))


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    chars = [s.chars for s in FOUR] + [tuple("這是一個很長的句子")]
    return prepare_backbone(BackboneSpec(scratch="bert", shape="tiny"), chars, tmp_path_factory.mktemp("bb"))


def _spec(head: str, **train) -> RunSpec:
    return RunSpec.model_validate({
        "study": "t", "backbone": "b", "backbone_spec": {"scratch": "bert"}, "finetune": "full", "loss": "ce",
        "head": head, "train": train, "data": {"train": [{"path": "x.jsonl"}], "dev": {"split": 0.2}}, "axes": {},
    })


def _cell(backbone, head: str, finetune: str = "full", seed: int = 1, **train):
    torch.manual_seed(seed)
    model, tok = load_model(backbone, LABELS)
    model, h = build_head(head, model, _spec(head, **train), LABELS, [1] * len(LABELS))
    if finetune == "lora":
        model = apply_lora(model, LoraSpec(r=4, alpha=8))
    split = Split(encode(FOUR, tok, {t: i for i, t in enumerate(LABELS)}, 32), FOUR)
    return model, h, tok, split


def test_every_head_name_has_a_builder():
    assert set(get_args(Head)) == set(HEADS)


@pytest.mark.parametrize("head", ["crf", "bilstm-crf"])
def test_a_crf_head_fits_four_sentences(backbone, tmp_path, head):
    model, h, tok, split = _cell(backbone, head)
    s = TrainSpec(lr=5e-3, epochs=30, batch_size=2, warmup_ratio=0.0)
    res = train(model, h, split, split, None, LABELS, s, torch.device("cpu"), tmp_path, pad_id=tok.pad_token_id)
    losses = [x["train/loss"] for x in res.history]
    assert losses[-1] < 0.2 * losses[0]
    assert res.final["dev/macro_f1"] > 0.9


def test_lora_with_a_crf_head_moves_only_adapters_emissions_and_crf(backbone, tmp_path):
    model, h, tok, split = _cell(backbone, "bilstm-crf", "lora")
    before = {n: p.detach().clone() for n, p in list(model.named_parameters()) + [("head." + n, p) for n, p in h.named_parameters()]}
    train(model, h, split, split, None, LABELS, TrainSpec(lr=1e-2, epochs=2, batch_size=2), torch.device("cpu"), tmp_path,
          pad_id=tok.pad_token_id)
    after = dict(list(model.named_parameters()) + [("head." + n, p) for n, p in h.named_parameters()])
    moved = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert moved and all("lora_" in n or n.startswith("head.") for n in moved), sorted(moved)[:10]
    assert any(n.startswith("head.chain.crf.") for n in moved) and any(n.startswith("head.lstm.") for n in moved)
    assert any("lora_" in n for n in moved)
    trainable = {n for n, p in after.items() if p.requires_grad}
    assert trainable >= {n for n in after if n.startswith("head.")}


@pytest.mark.parametrize("head", ["crf", "bilstm-crf"])
def test_a_442_character_sentence_gets_442_predictions(backbone, head):
    model, h, tok, _ = _cell(backbone, head)
    long = _s(("這是一個很長的句子頭痛" * 41)[:442], ["O"] * 442)
    split = Split(encode([long, FOUR[0]], tok, {t: i for i, t in enumerate(LABELS)}, 64), [long, FOUR[0]])
    assert len(split.windows) > 8  # windows, not truncation
    pred = predict(model, h, split, LABELS, torch.device("cpu"), 4, False, tok.pad_token_id)
    assert [len(p) for p in pred] == [442, 4]


def _valid_bio(tags: list[str]) -> bool:
    prev = "O"
    for t in tags:
        if t.startswith("I-") and prev[2:] != t[2:]:
            return False
        prev = t
    return True


@pytest.mark.parametrize("head, train", [("crf", {}), ("bilstm-crf", {}), ("linear", {"decode": "constrained"})])
def test_decoding_never_breaks_bio_even_untrained(backbone, head, train):
    model, h, tok, _ = _cell(backbone, head, **train)
    rng = random.Random(0)
    chars = "".join(c for s in FOUR for c in s.chars)
    sents = [_s("".join(rng.choice(chars) for _ in range(rng.randint(1, 40))), [], "ft", i) for i in range(30)]
    sents = [Sentence(s.id, s.genre, s.chars, ("O",) * len(s.chars)) for s in sents]
    with torch.no_grad():  # random emissions: large logits make any unconstrained decoder emit I-X after O
        for p in h.parameters():
            p.normal_(0, 3)
    split = Split(encode(sents, tok, {t: i for i, t in enumerate(LABELS)}, 16), sents)
    for row in predict(model, h, split, LABELS, torch.device("cpu"), 8, False, tok.pad_token_id):
        assert _valid_bio(row), row


def test_unconstrained_linear_decoding_does_break_bio(backbone):
    """The control for the test above: with the same random scores argmax emits invalid sequences."""
    model, h, tok, _ = _cell(backbone, "linear")
    with torch.no_grad():
        model.classifier.weight.normal_(0, 3)
    rng = random.Random(0)
    chars = "".join(c for s in FOUR for c in s.chars)
    sents = [Sentence(str(i), "ft", tuple(rng.choice(chars) for _ in range(30)), ("O",) * 30) for i in range(30)]
    split = Split(encode(sents, tok, {t: i for i, t in enumerate(LABELS)}, 16), sents)
    rows = predict(model, h, split, LABELS, torch.device("cpu"), 8, False, tok.pad_token_id)
    assert not all(_valid_bio(r) for r in rows)


def test_bilstm_predictions_do_not_depend_on_the_padding_of_the_batch(backbone):
    model, h, tok, split = _cell(backbone, "bilstm-crf")
    model.eval(), h.eval()
    alone = [predict(model, h, Split([dataclasses.replace(w, sentence=0)], [FOUR[w.sentence]]), LABELS,
                     torch.device("cpu"), 1, False, tok.pad_token_id) for w in split.windows]
    together = predict(model, h, split, LABELS, torch.device("cpu"), 4, False, tok.pad_token_id)
    assert [a[0] for a in alone] == together


def test_crf_loss_ignores_positions_marked_ignore(backbone):
    model, h, tok, split = _cell(backbone, "crf")
    b = collate(split.windows, [0, 1], tok.pad_token_id)
    out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    noisy = out.logits.clone()
    noisy[b["labels"] == -100] = 1e4  # [CLS], [SEP], padding: must not move the loss
    assert torch.allclose(h.loss(out, b), h.loss(type(out)(logits=noisy), b))


def test_crf_entities_are_whole_after_decoding(backbone):
    model, h, tok, split = _cell(backbone, "crf")
    rows = predict(model, h, split, LABELS, torch.device("cpu"), 4, False, tok.pad_token_id)
    assert all(get_entities(r) is not None for r in rows) and all(_valid_bio(r) for r in rows)
