"""Backbones: char tokenizer, scratch families saved and reloaded by path, LoRA vs full, counts, errors."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pydantic
import pytest
import torch

from ablate.data.readers import read_corpus
from ablate.errors import UserError
from ablate.models import (
    LORA_TARGETS,
    SPECIAL_TOKENS,
    apply_lora,
    build_char_tokenizer,
    count_parameters,
    load_model,
    save_scratch_backbone,
    scratch_config,
)
from ablate.spec import SHAPES, BackboneSpec, LoraSpec, ShapeDims

FAMILIES = ["bert", "roberta", "deberta-v2", "albert", "electra"]
LABELS = ["O", "B-DISE", "I-DISE", "B-BODY", "I-BODY"]
TYPES = "BODY SYMP INST EXAM CHEM DISE DRUG SUPP TREAT TIME".split()
ROCLING_LABELS = ["O"] + [f"{prefix}-{t}" for t in TYPES for prefix in "BI"]  # 21 labels
SENTENCES = [list("糖尿病患者的血糖控制"), list("服用Ｐｒｅｄ與prednisolone"), list("頭痛 3 天")]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return build_char_tokenizer(SENTENCES, tmp_path_factory.mktemp("tok"))


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def _encode(tokenizer, sentences: list[list[str]]) -> dict[str, torch.Tensor]:
    return tokenizer(sentences, is_split_into_words=True, padding=True, return_tensors="pt")


# --- tokenizer -------------------------------------------------------------------------------


def test_char_tokenizer_gives_one_token_per_char(tokenizer_dir):
    tokenizer = _tokenizer(tokenizer_dir)
    vocab = (tokenizer_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert vocab[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert vocab[len(SPECIAL_TOKENS) :] == sorted(set("".join("".join(s) for s in SENTENCES)) - {" "})
    assert len(tokenizer) == len(vocab)
    for chars in SENTENCES:
        enc = tokenizer(chars, is_split_into_words=True)
        tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
        kept = [c for c in chars if c != " "]  # whitespace gives no token, as with hub BERT tokenizers
        assert tokens == ["[CLS]", *kept, "[SEP]"]
        assert enc["input_ids"][1:-1] == [vocab.index(c) for c in kept]


def test_char_tokenizer_maps_unseen_chars_to_unk(tokenizer_dir):
    tokenizer = _tokenizer(tokenizer_dir)
    ids = tokenizer(list("糖X癌"), is_split_into_words=True, add_special_tokens=False)["input_ids"]
    assert ids == [tokenizer.convert_tokens_to_ids("糖"), tokenizer.unk_token_id, tokenizer.unk_token_id]
    assert tokenizer.unk_token_id == SPECIAL_TOKENS.index("[UNK]")
    assert tokenizer.pad_token_id == 0


def test_char_tokenizer_is_deterministic_and_honours_min_count(tmp_path):
    a = build_char_tokenizer([list("甲乙乙"), list("丙")], tmp_path / "a")
    b = build_char_tokenizer([list("丙"), list("乙甲乙")], tmp_path / "b")
    assert (a / "vocab.txt").read_bytes() == (b / "vocab.txt").read_bytes()
    rare = build_char_tokenizer([list("甲乙乙"), list("丙")], tmp_path / "c", min_count=2)
    assert _tokenizer(rare).convert_ids_to_tokens(list(range(len(SPECIAL_TOKENS), 6))) == ["乙"]


def test_char_tokenizer_covers_the_real_rocling_characters(rocling, tmp_path):
    sentences = read_corpus(rocling / "rocling22_chner_truth.txt", "wa") + read_corpus(rocling / "healthner_test.jsonl")
    tokenizer = _tokenizer(build_char_tokenizer((s.chars for s in sentences), tmp_path))
    words = [list(s.chars) for s in sentences]
    enc = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    for i, chars in enumerate(words):
        word_ids = enc.word_ids(i)
        # whitespace and control/format characters (a U+FEFF) give no token, as with hub tokenizers
        producing = [c for c in chars if not c.isspace() and not unicodedata.category(c).startswith("C")]
        assert len(word_ids) == len(producing), chars  # one token per character, never split
        assert tokenizer.unk_token_id not in enc["input_ids"][i]


# --- scratch backbones -----------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_scratch_family_saves_reloads_by_path_and_classifies(family, tokenizer_dir, tmp_path):
    spec = BackboneSpec(scratch=family, shape="tiny")
    folder = save_scratch_backbone(spec, tokenizer_dir, tmp_path / family)
    assert (folder / "config.json").exists() and (folder / "tokenizer.json").exists()
    model, tokenizer = load_model(folder, LABELS, "full")
    assert model.config.model_type == family
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer) == len(_tokenizer(tokenizer_dir))
    assert model.config.id2label == dict(enumerate(LABELS))
    batch = _encode(tokenizer, SENTENCES)
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (len(SENTENCES), batch["input_ids"].shape[1], len(LABELS))
    assert torch.isfinite(logits).all()


def test_scratch_weights_depend_only_on_the_seed(tokenizer_dir, tmp_path):
    spec = BackboneSpec(scratch="bert", shape="tiny")
    torch.manual_seed(123)
    before = torch.rand(1)
    a = save_scratch_backbone(spec, tokenizer_dir, tmp_path / "a", seed=7)
    b = save_scratch_backbone(spec, tokenizer_dir, tmp_path / "b", seed=7)
    c = save_scratch_backbone(spec, tokenizer_dir, tmp_path / "c", seed=8)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), before)  # the global RNG is left alone
    weights = {p: (p / "model.safetensors").read_bytes() for p in (a, b, c)}
    assert weights[a] == weights[b] != weights[c]


def _train_a_few_steps(model, tokenizer, steps: int = 3) -> None:
    batch = _encode(tokenizer, SENTENCES)
    labels = torch.randint(0, len(LABELS), batch["input_ids"].shape, generator=torch.Generator().manual_seed(0))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-2)  # no weight decay: only gradients move weights
    model.train()
    for _ in range(steps):
        logits = model(**batch).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(LABELS)), labels.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def _moved(model, steps_fn) -> tuple[set[str], set[str]]:
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    steps_fn()
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    return moved, set(before) - moved


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_moves_only_adapters_and_head(family, tokenizer_dir, tmp_path):
    folder = save_scratch_backbone(BackboneSpec(scratch=family, shape="tiny"), tokenizer_dir, tmp_path)
    model, tokenizer = load_model(folder, LABELS, "lora", LoraSpec(r=4, alpha=8))
    moved, still = _moved(model, lambda: _train_a_few_steps(model, tokenizer))
    trained = {k for k in moved | still if "lora_" in k or ".modules_to_save." in k}
    assert any("lora_A" in k for k in trained) and any("modules_to_save" in k for k in trained)
    assert moved == trained  # every adapter and the head moved; nothing else did
    assert not any("original_module" in k for k in moved)
    targets = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in trained if "lora_" in k}
    assert targets == set(LORA_TARGETS[family])


def test_full_finetuning_moves_every_weight(tokenizer_dir, tmp_path):
    folder = save_scratch_backbone(BackboneSpec(scratch="bert", shape="tiny"), tokenizer_dir, tmp_path)
    model, tokenizer = load_model(folder, LABELS, "full")
    moved, still = _moved(model, lambda: _train_a_few_steps(model, tokenizer))
    assert {k for k, _ in model.named_parameters()} <= moved
    assert all(p.requires_grad for p in model.parameters())


def test_lora_target_modules_can_be_overridden(tokenizer_dir, tmp_path):
    folder = save_scratch_backbone(BackboneSpec(scratch="bert", shape="tiny"), tokenizer_dir, tmp_path)
    model, _ = load_model(folder, LABELS, "lora", LoraSpec(r=2, target_modules=("key",)))
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if "lora_" in n}
    assert adapted == {"key"}
    with pytest.raises(UserError, match="not found"):
        load_model(folder, LABELS, "lora", LoraSpec(target_modules=("no_such_proj",)))


def test_lora_on_an_unknown_model_type_needs_explicit_targets():
    from transformers import AutoModelForTokenClassification, DistilBertConfig

    config = DistilBertConfig(vocab_size=50, dim=32, n_layers=1, n_heads=2, hidden_dim=64, num_labels=3)
    with pytest.raises(UserError, match="distilbert"):
        apply_lora(AutoModelForTokenClassification.from_config(config), LoraSpec())
    model = apply_lora(AutoModelForTokenClassification.from_config(config), LoraSpec(target_modules=("q_lin",)))
    assert count_parameters(model).trainable == 32 * 16 + 16 * 32 + (32 * 3 + 3)


# --- parameter counts ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_bert(tokenizer_dir, tmp_path_factory):
    """A base-sized scratch BERT (768 x 12) with the ROCLING head, loaded by path once."""
    spec = BackboneSpec(scratch="bert", shape="base")
    folder = save_scratch_backbone(spec, tokenizer_dir, tmp_path_factory.mktemp("base"))
    model, tokenizer = load_model(folder, ROCLING_LABELS, "full")
    return model, len(tokenizer)


def test_base_bert_counts_full_then_lora(base_bert):
    model, vocab_size = base_bert
    head = 768 * 21 + 21
    embeddings = (vocab_size + 512 + 2) * 768 + 2 * 768  # words, positions, token types, LayerNorm
    layer = 4 * (768 * 768 + 768) + 2 * (768 * 3072) + 3072 + 768 + 2 * 2 * 768
    full = count_parameters(model)
    assert full.trainable == full.total == embeddings + 12 * layer + head

    lora = count_parameters(apply_lora(model, LoraSpec(r=16, target_modules=("query", "value"))))
    adapters = 12 * 2 * (768 * 16 + 16 * 768)
    assert adapters == 589_824
    assert lora.trainable == adapters + head  # the head's frozen peft copy is not counted
    assert lora.total == full.total + adapters


@pytest.mark.parametrize(
    ("family", "shape", "vocab_size", "paper_full", "paper_lora"),
    [
        ("bert", "base", 21128, 102_299_178, 622_122),  # hfl/chinese-bert-wwm-ext
        ("bert", "large", 21128, 326_088_746, 1_615_914),  # hfl/chinese-roberta-wwm-ext-large (a BERT)
        ("deberta-v2", "xlarge", 20716, 714_992_682, 2_423_850),  # Erlangshen 710M, extended vocab
    ],
)
def test_counts_reconcile_with_the_papers_table_4(family, shape, vocab_size, paper_full, paper_lora):
    """The paper counted the head twice (peft's frozen copy too) and reported the LoRA model's size as 'full'."""
    from transformers import AutoModelForTokenClassification

    config = scratch_config(BackboneSpec(scratch=family, shape=shape), vocab_size)
    config.num_labels = 21
    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForTokenClassification.from_config(config)
    head = config.hidden_size * 21 + 21
    lora = count_parameters(apply_lora(model, LoraSpec(r=16)))
    assert lora.trainable + head == paper_lora
    assert lora.total + head == paper_full


# --- specs and errors ------------------------------------------------------------------------


def test_backbone_spec_needs_exactly_one_source():
    assert BackboneSpec(scratch="bert").shape == "tiny"
    dims = {"hidden": 96, "layers": 1, "heads": 3, "intermediate": 64}
    assert BackboneSpec(scratch="albert", **dims).dims == ShapeDims(**dims)
    # explicit sizes override the preset's, the rest come from it
    assert BackboneSpec(scratch="bert", shape="tiny", layers=4).dims == ShapeDims(hidden=64, layers=4, heads=2, intermediate=128)
    assert BackboneSpec(scratch="bert", layers=1).dims == SHAPES["tiny"].model_copy(update={"layers": 1})
    assert BackboneSpec(scratch="bert", shape="base", layers=1).dims == SHAPES["base"].model_copy(update={"layers": 1})
    assert BackboneSpec(pretrained="hfl/chinese-bert-wwm-ext").shape is None
    for bad in [
        {},
        {"pretrained": "x", "scratch": "bert"},
        {"pretrained": "x", "shape": "tiny"},
        {"pretrained": "x", "layers": 2},
        {"scratch": "gpt2"},
        {"scratch": "bert", **dims, "heads": 5},  # 96 is not a multiple of 5
        {"scratch": "bert", "hidden": 65},  # nor 65 of tiny's 2 heads
        {"scratch": "bert", "shape": "base", "hidden": 100},  # nor 100 of base's 12
    ]:
        with pytest.raises(pydantic.ValidationError):
            BackboneSpec.model_validate(bad)


def test_unknown_model_offline_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(UserError) as caught:
        load_model("no-such-org/no-such-model", LABELS, "full")
    message = str(caught.value)
    assert "no-such-org/no-such-model" in message
    assert "HF_HOME" in message and "scratch: bert" in message


def test_bad_local_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model(str(tmp_path / "missing" / "model"), LABELS)
    with pytest.raises(UserError, match="no config.json"):
        load_model(tmp_path, LABELS)


@pytest.mark.parametrize("family", FAMILIES)
def test_position_limit_of_each_scratch_family(family):
    from ablate.models import position_limit
    from ablate.spec import MAX_POSITIONS

    config = scratch_config(BackboneSpec(scratch=family, shape="tiny"), vocab_size=50)
    assert position_limit(config) == (None if family == "deberta-v2" else MAX_POSITIONS)  # DeBERTa-v2: relative
