"""Saved models load anywhere: plain transformers pipelines (full, merged LoRA), peft on the base (adapter), ablate (CRF)."""

from __future__ import annotations

import json

import pytest
import torch

from ablate.data.encode import encode
from ablate.data.readers import Sentence
from ablate.models import apply_lora, load_model, prepare_backbone
from ablate.models.heads import build_head
from ablate.models.save import load_saved, save_cell_model
from ablate.predict import predict_folder, read_input, write_predictions
from ablate.spec import BackboneSpec, LoraSpec, RunSpec, TrainSpec
from ablate.trainer import Split, predict, train

torch.set_num_threads(1)

FOUR = [
    Sentence("a", "ft", tuple("頭痛吃藥"), ("B-SYMP", "I-SYMP", "O", "B-DRUG")),
    Sentence("b", "sm", tuple("胃痛看醫生"), ("B-BODY", "O", "O", "O", "O")),
    Sentence("c", "wa", tuple("糖尿病患者"), ("B-DISE", "I-DISE", "I-DISE", "O", "O")),
    Sentence("d", "ft", tuple("他說頭很痛"), ("O", "O", "B-BODY", "O", "B-SYMP")),
]
LABELS = ["O", "B-BODY", "I-BODY", "B-DISE", "I-DISE", "B-DRUG", "I-DRUG", "B-SYMP", "I-SYMP"]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    chars = [s.chars for s in FOUR] + [tuple("這是一個很長的句子")]
    return prepare_backbone(BackboneSpec(scratch="bert", shape="tiny"), chars, tmp_path_factory.mktemp("bb"))


def _spec(head="linear", finetune="full", save_model=True) -> RunSpec:
    return RunSpec.model_validate({
        "study": "t", "backbone": "b", "backbone_spec": {"scratch": "bert"}, "finetune": finetune, "loss": "ce",
        "head": head, "train": {"save_model": save_model},
        "data": {"train": [{"path": "x.jsonl"}], "dev": {"split": 0.2}, "max_length": 32}, "axes": {}})


def _trained(backbone, tmp_path, head="linear", finetune="full", save_model=True):
    """Train on FOUR, save, and return (folder, what ablate itself predicted for FOUR)."""
    torch.manual_seed(0)
    spec = _spec(head, finetune, save_model)
    model, tok = load_model(backbone, LABELS)
    model, h = build_head(head, model, spec, LABELS, [1] * len(LABELS))
    if finetune == "lora":
        model = apply_lora(model, LoraSpec(r=4, alpha=8))
    split = Split(encode(FOUR, tok, {t: i for i, t in enumerate(LABELS)}, 32), FOUR)
    res = train(model, h, split, split, None, LABELS, TrainSpec(lr=1e-2, epochs=8, batch_size=2, warmup_ratio=0.0),
                torch.device("cpu"), tmp_path / "run", pad_id=tok.pad_token_id)
    ours = predict(model, h, split, LABELS, torch.device("cpu"), 4, False, tok.pad_token_id)
    folder = save_cell_model(tmp_path / "model", model, tok, h, spec, LABELS,
                             {"name": "cell", "run_id": "abc123", "data": [("train[0]", "x.jsonl", "f" * 64)], "final": res.final})
    return folder, ours


def _pipeline_tags(folder) -> list[list[str]]:
    from transformers import pipeline

    tagger = pipeline("token-classification", model=str(folder), ignore_labels=[], device="cpu")
    out = []
    for s in FOUR:
        tokens = tagger("".join(s.chars))
        assert [t["word"] for t in tokens] == list(s.chars)  # one token per character, in order
        out.append([t["entity"] for t in tokens])
    return out


def test_a_full_model_loads_in_a_plain_pipeline_and_predicts_as_ablate_did(backbone, tmp_path):
    folder, ours = _trained(backbone, tmp_path)
    assert _pipeline_tags(folder) == ours
    assert sum(t != "O" for row in ours for t in row) > 0  # the comparison is not all O


def test_a_merged_lora_model_loads_in_a_plain_pipeline(backbone, tmp_path):
    folder, ours = _trained(backbone, tmp_path, finetune="lora", save_model="merged")
    assert (folder / "adapter" / "adapter_config.json").exists()
    assert _pipeline_tags(folder) == ours


def test_an_adapter_reattached_to_its_base_reproduces_the_predictions(backbone, tmp_path):
    folder, ours = _trained(backbone, tmp_path, finetune="lora", save_model=True)
    assert not (folder / "config.json").exists()  # adapter only: no full copy of the base
    assert predict_folder(folder, FOUR) == ours


@pytest.mark.parametrize("head", ["crf", "bilstm-crf"])
def test_crf_heads_load_through_ablate(backbone, tmp_path, head):
    folder, ours = _trained(backbone, tmp_path, head=head)
    assert (folder / "ablate_head.pt").exists()
    assert predict_folder(folder, FOUR) == ours
    assert "needs ablate" in (folder / "README.md").read_text(encoding="utf-8")


def test_the_model_card_names_the_scores_mlflow_holds(backbone, tmp_path):
    folder, _ = _trained(backbone, tmp_path)
    card = (folder / "README.md").read_text(encoding="utf-8")
    for key in ("dev/macro_f1", "dev/f1/ft", "dev/f1/sm", "dev/f1/wa", "abc123", "f" * 64, "pipeline_tag: token-classification"):
        assert key in card


def test_predict_writes_600_predictions_for_a_600_character_sentence(backbone, tmp_path):
    folder, _ = _trained(backbone, tmp_path)
    text = tmp_path / "in.txt"
    text.write_text(("這是一個很長的句子頭痛" * 60)[:600] + "\n胃痛\n", encoding="utf-8")
    sents = read_input(f"{text}:ft")
    tags = predict_folder(folder, sents)
    [path] = write_predictions(tmp_path / "out", sents, tags)
    blocks = path.read_text(encoding="utf-8").strip("\n").split("\n\n")
    assert [len(b.splitlines()) for b in blocks] == [600, 2]
    assert "".join(line.split(" ")[0] for line in blocks[0].splitlines()) == "".join(sents[0].chars)


def test_bf16_prediction_tags_every_character_and_fp32_is_what_the_cell_wrote(backbone, tmp_path):
    from ablate.errors import UserError

    folder, ours = _trained(backbone, tmp_path)
    assert predict_folder(folder, FOUR, precision="fp32") == ours == predict_folder(folder, FOUR)  # auto on CPU: fp32
    fast = predict_folder(folder, FOUR, precision="bf16")
    assert [len(t) for t in fast] == [len(s.chars) for s in FOUR]
    labels = set(json.loads((folder / "config.json").read_text(encoding="utf-8"))["id2label"].values())
    assert {t for row in fast for t in row} <= labels
    with pytest.raises(UserError, match="precision"):
        predict_folder(folder, FOUR, precision="fp16")


def test_a_folder_that_is_not_a_token_classifier_is_one_user_error(backbone, tmp_path):
    from ablate.errors import UserError

    with pytest.raises(UserError, match="is not a saved model"):
        load_saved(tmp_path)
    with pytest.raises(UserError, match="not a token classifier"):
        load_saved(backbone)  # a bare encoder folder: no id2label for our tags


def test_a_bilstm_crf_lora_adapter_reloads_and_predicts_as_trained(backbone, tmp_path):
    folder, ours = _trained(backbone, tmp_path, head="bilstm-crf", finetune="lora", save_model=True)
    assert predict_folder(folder, FOUR) == ours


def test_constrained_decoding_travels_with_the_saved_model(backbone, tmp_path):
    torch.manual_seed(0)
    spec = RunSpec.model_validate({**_spec().model_dump(mode="json"), "train": {"save_model": True, "decode": "constrained"}})
    model, tok = load_model(backbone, LABELS)
    model, h = build_head("linear", model, spec, LABELS, [1] * len(LABELS))
    folder = save_cell_model(tmp_path / "m", model, tok, h, spec, LABELS, {"final": {}})
    _, head, *_ = load_saved(folder)
    assert head.constraints is not None and "needs ablate" in (folder / "README.md").read_text(encoding="utf-8")
