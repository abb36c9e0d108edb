"""The training loop: it learns, it is deterministic on CPU, it stops on divergence, it predicts every character."""

from __future__ import annotations

import pytest
import torch

from ablate.data.encode import encode
from ablate.data.readers import Sentence, read_conll
from tests.sentences import FOUR, sentence
from ablate.data.tags import entity_types, label_list
from ablate.faults import with_fault
from ablate.losses import build_loss
from ablate.models import load_model, prepare_backbone
from ablate.models.heads import LinearHead
from ablate.spec import BackboneSpec, TrainSpec
from ablate.trainer import DivergedError, Split, predict, train


def LoopSettings(**kw) -> TrainSpec:  # the loop takes the study's TrainSpec itself
    return TrainSpec.model_validate(kw)

torch.set_num_threads(1)


_s = sentence


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    chars = [s.chars for s in FOUR] + [tuple("這是一個很長的句子")]
    return prepare_backbone(BackboneSpec(scratch="bert", shape="tiny"), chars, tmp_path_factory.mktemp("bb"))


def _setup(backbone, finetune="full", loss="ce", seed=1):
    labels = label_list(entity_types(FOUR))
    torch.manual_seed(seed)
    model, tok = load_model(backbone, labels, finetune)
    l2i = {t: i for i, t in enumerate(labels)}
    split = Split(encode(FOUR, tok, l2i, 32), FOUR)
    return model, tok, labels, split, LinearHead(build_loss(loss, len(labels)))


def test_loss_falls_and_the_model_fits_four_sentences(backbone, tmp_path):
    model, tok, labels, split, loss = _setup(backbone)
    s = LoopSettings(lr=5e-3, epochs=30, batch_size=2, warmup_ratio=0.0)
    res = train(model, loss, split, split, split, labels, s, torch.device("cpu"), tmp_path, pad_id=tok.pad_token_id)
    losses = [h["train/loss"] for h in res.history]
    assert losses[-1] < 0.2 * losses[0]
    assert res.final["dev/macro_f1"] > 0.9 and res.final["test/macro_f1"] > 0.9
    assert set(res.final) >= {"dev/f1/ft", "dev/f1/sm", "dev/f1/wa", "test/precision", "best_epoch", "epoch_seconds"}
    # predictions at the best epoch, official 2-column and conlleval 3-column, per genre
    for g in ("ft", "sm", "wa"):
        two = read_conll(tmp_path / "predictions" / f"test_{g}.txt", g)
        assert [x.chars for x in two] == [x.chars for x in FOUR if x.genre == g]
        assert (tmp_path / "predictions" / f"test_{g}.conll").exists()


def test_deterministic_on_cpu(backbone, tmp_path):
    runs = []
    for k in range(2):
        model, tok, labels, split, loss = _setup(backbone, "lora", "focal")
        s = LoopSettings(lr=1e-2, epochs=2, batch_size=2)
        res = train(model, loss, split, split, None, labels, s, torch.device("cpu"), tmp_path / str(k), pad_id=tok.pad_token_id)
        runs.append([h["train/loss"] for h in res.history])
    assert runs[0] == runs[1]


def test_nan_loss_stops_with_a_diverged_error(backbone, tmp_path):
    model, tok, labels, split, loss = _setup(backbone)
    with pytest.raises(DivergedError, match="diverged"):
        train(model, with_fault(loss, "nan", 1), split, split, None, labels, LoopSettings(lr=1e-3, epochs=1, batch_size=1),
              torch.device("cpu"), tmp_path, pad_id=tok.pad_token_id)


def test_early_stopping_stops_after_patience(backbone, tmp_path):
    model, tok, labels, split, loss = _setup(backbone)
    s = LoopSettings(lr=1e-30, epochs=10, batch_size=2, early_stopping=2)  # lr ~0: dev never improves
    res = train(model, loss, split, split, None, labels, s, torch.device("cpu"), tmp_path, pad_id=tok.pad_token_id)
    assert len(res.history) == 3 and res.best_epoch == 1


def test_a_442_character_sentence_gets_one_prediction_per_character(backbone):
    model, tok, labels, _, head = _setup(backbone)
    long = _s(("這是一個很長的句子頭痛" * 41)[:442], ["O"] * 442)
    l2i = {t: i for i, t in enumerate(labels)}
    split = Split(encode([long, FOUR[0]], tok, l2i, 64), [long, FOUR[0]])
    assert len(split.windows) > 8  # windows, not truncation
    pred = predict(model, head, split, labels, torch.device("cpu"), 4, False, tok.pad_token_id)
    assert [len(p) for p in pred] == [442, 4]
