"""Backbones for token classification: a hub id, a local folder, or one built from a config.

Also the character tokenizer for scratch backbones, LoRA or full fine-tuning via peft, and
parameter counts. torch / transformers / peft are imported inside functions (CLI path).
"""

from __future__ import annotations

import os
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.data.readers import word_level
from ablate.errors import UserError
from ablate.spec.backbone import MAX_POSITIONS, BackboneSpec
from ablate.spec.schema import Finetune, LoraSpec

if TYPE_CHECKING:
    import torch

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# LoRA targets per config.model_type (the attention query and value projections, as in the
# LoRA paper and the study). peft has no default for ALBERT, so keep our own table.
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "electra": ("query", "value"),
    "albert": ("query", "value"),
    "deberta-v2": ("query_proj", "value_proj"),
}


@dataclass(frozen=True)
class ParamCounts:
    """Unique parameters that train, and all unique parameters (see `count_parameters`)."""

    trainable: int
    total: int


def _tokenizable(ch: str) -> bool:
    # BERT's normalizer drops whitespace, control and format characters (e.g. U+FEFF) and
    # U+FFFD: they never become tokens, so keeping them in the vocabulary is dead weight.
    return len(ch) == 1 and not ch.isspace() and not unicodedata.category(ch).startswith("C") and ch != "\ufffd"


def build_char_tokenizer(sentences_chars: Iterable[Iterable[str]], out_dir: Path, min_count: int = 1) -> Path:
    """Write a BERT WordPiece tokenizer whose vocabulary is the training characters; return its folder.

    Vocabulary: [PAD] [UNK] [CLS] [SEP] [MASK], then every character seen at least `min_count`
    times, sorted by code point (deterministic). Fed characters as words
    (`is_split_into_words=True`), each known character is exactly one token, any other
    one [UNK]; whitespace and control characters give no token (as with hub BERT tokenizers).
    """
    from transformers import BertTokenizerFast

    counts = Counter(ch for chars in sentences_chars for ch in chars)
    chars = sorted(ch for ch, n in counts.items() if n >= min_count and _tokenizable(ch) and ch not in SPECIAL_TOKENS)
    tokens = [*SPECIAL_TOKENS, *chars]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    # transformers 5 ignores `vocab_file=`; `vocab=` builds the WordPiece model directly.
    tokenizer = BertTokenizerFast(
        vocab={t: i for i, t in enumerate(tokens)},
        do_lower_case=False,
        tokenize_chinese_chars=True,
        strip_accents=False,
        model_max_length=MAX_POSITIONS,
    )
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


WORD_VOCAB = 8000  # a scratch backbone's WordPiece vocabulary on word-level data, unless `vocab_size` says


def build_wordpiece_tokenizer(sentences: Iterable[Iterable[str]], out_dir: Path, vocab_size: int = WORD_VOCAB) -> Path:
    """A BERT WordPiece tokenizer whose vocabulary is trained (`tokenizers`' WordPieceTrainer) on the training
    tokens; return its folder. The specials come first, in SPECIAL_TOKENS order, as for the character one."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False,
                                                lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), min_frequency=1,
                                        show_progress=False)
    tok.train_from_iterator((" ".join(s) for s in sentences), trainer)
    vocab = tok.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=False,
                                  tokenize_chinese_chars=True, strip_accents=False, model_max_length=MAX_POSITIONS)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def position_limit(config) -> int | None:
    """The most tokens one window may hold: absolute position embeddings cap it, relative ones
    (DeBERTa-v2 without `position_biased_input`) do not. RoBERTa's positions start after its pad id."""
    if getattr(config, "position_biased_input", True) is False:
        return None
    n = getattr(config, "max_position_embeddings", None)
    if n is None:
        return None
    if config.model_type in ("roberta", "xlm-roberta", "camembert"):
        n -= (config.pad_token_id if config.pad_token_id is not None else 1) + 1
    return n


def scratch_config(spec: BackboneSpec, vocab_size: int, pad_token_id: int = 0) -> Any:
    """The transformers config of a scratch backbone: the family's real architecture at `spec.dims`."""
    from transformers import AlbertConfig, BertConfig, DebertaV2Config, ElectraConfig, RobertaConfig

    d = spec.dims
    common = dict(
        vocab_size=vocab_size,
        hidden_size=d.hidden,
        num_hidden_layers=d.layers,
        num_attention_heads=d.heads,
        intermediate_size=d.intermediate,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=pad_token_id,
    )
    if spec.scratch == "bert":
        return BertConfig(**common)
    if spec.scratch == "roberta":
        # RoBERTa numbers positions from pad_token_id + 1 (hub configs: 514 with pad 1).
        return RobertaConfig(**{**common, "max_position_embeddings": MAX_POSITIONS + pad_token_id + 1})
    if spec.scratch == "electra":
        return ElectraConfig(**common, embedding_size=d.hidden)  # chinese-electra-base: embeddings = hidden
    if spec.scratch == "albert":
        # ALBERT factorises embeddings (128 wide) and shares one layer across all layers.
        return AlbertConfig(**common, embedding_size=min(128, d.hidden))
    if spec.scratch == "deberta-v2":
        # As Erlangshen-DeBERTa-v2: relative positions only, shared attention keys.
        return DebertaV2Config(
            **common,
            type_vocab_size=0,
            relative_attention=True,
            position_biased_input=False,
            pos_att_type=["c2p", "p2c"],
            max_relative_positions=-1,
            position_buckets=256,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            layer_norm_eps=1e-7,
        )
    raise ValueError(f"unknown scratch family {spec.scratch!r}")


def save_scratch_backbone(spec: BackboneSpec, tokenizer_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """Write a randomly initialised backbone (config, weights, tokenizer) to `out_dir`; return it.

    The folder loads like a hub checkpoint: `load_model(out_dir, ...)`. Weights depend only on
    (spec, vocabulary, seed); the global RNG state is left as it was.
    """
    import shutil

    import torch
    from transformers import AutoModel, AutoTokenizer

    if spec.scratch is None:
        raise ValueError("save_scratch_backbone needs a scratch spec")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = scratch_config(spec, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    if (Path(tokenizer_dir) / "vocab.txt").exists():
        shutil.copyfile(Path(tokenizer_dir) / "vocab.txt", out_dir / "vocab.txt")
    return out_dir


def prepare_backbone(
    spec: BackboneSpec, sentences_chars: Iterable[Iterable[str]], work_dir: Path, seed: int = 0
) -> str:
    """What to give `load_model`: the hub id / folder, or a scratch backbone built under `work_dir`."""
    if spec.pretrained is not None:
        return spec.pretrained
    sentences_chars = [list(s) for s in sentences_chars]
    if word_level(sentences_chars):  # words: a sub-word vocabulary, or nearly every word would be [UNK]
        tokenizer_dir = build_wordpiece_tokenizer(sentences_chars, Path(work_dir) / "tokenizer", spec.vocab_size or WORD_VOCAB)
    else:
        tokenizer_dir = build_char_tokenizer(sentences_chars, Path(work_dir) / "tokenizer")
    return str(save_scratch_backbone(spec, tokenizer_dir, Path(work_dir) / "backbone", seed=seed))


def resolve_backbone(b: BackboneSpec, sentences_chars: list[Iterable[str]], cache: Path) -> str:
    """A hub id / folder as given, or a scratch backbone built once per (shape, training characters) under `cache`."""
    import hashlib
    import json
    import shutil
    import tempfile

    if b.pretrained is not None:
        return b.pretrained
    sentences_chars = [list(c) for c in sentences_chars]
    chars = sorted({c for s in sentences_chars for c in s})
    unset = {k for k in ("pretrain", "vocab_size") if getattr(b, k) is None}  # as before these fields existed
    key = hashlib.sha256(json.dumps([b.model_dump(mode="json", exclude=unset), chars], ensure_ascii=False).encode()).hexdigest()[:16]
    folder = cache / "backbones" / key
    if (folder / "backbone" / "config.json").exists():
        return str(folder / "backbone")
    # Build aside, then rename: workers sharing the cache never see half a backbone.
    # The temporary folder sits beside the final one: a rename across file systems would fail.
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
    try:
        prepare_backbone(b, sentences_chars, tmp, seed=0)
        try:
            os.rename(tmp, folder)
        except OSError:  # another worker won the race; use theirs
            if not (folder / "backbone" / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(folder / "backbone")


def _unavailable(name: str, reason: str) -> UserError:
    detail = (reason.strip().splitlines() or ["no detail"])[0]
    if Path(name).expanduser().is_dir():
        return UserError(f"cannot load model from folder {name!r}: {detail}")
    offline = any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    why = "the hub is switched off (HF_HUB_OFFLINE)" if offline else "the hub could not be reached or refused it"
    cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return UserError(
        f"cannot load model {name!r}: it is not a local folder, not in the Hugging Face cache "
        f"(HF_HOME={cache}), and {why}. Ways out: give a local folder that holds it "
        f"(`pretrained: /path/to/model`), point HF_HOME at a cache that has it, or use a backbone "
        f"built from a config with random weights (`scratch: bert` in the study's backbones). [{detail}]"
    )


def _check_local(name: str) -> None:
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").exists():
            raise UserError(f"{name!r} is not a model folder: it has no config.json")
    elif name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        # Hub ids are `name` or `owner/name`; anything else was meant as a folder.
        raise UserError(f"model folder {name!r} does not exist")


# Byte-level BPE families whose tokenizers read pre-split words as running text only with a prefix space
# (as transformers' run_ner.py sets it).
PREFIX_SPACE_TYPES = {"bloom", "gpt2", "roberta", "deberta", "longformer"}


def load_tokenizer(name: str, model_type: str | None = None):
    """The tokenizer for pre-split tokens: `add_prefix_space=True` for PREFIX_SPACE_TYPES; a tokenizer that gives
    words no token at all is refused (it would train on empty windows)."""
    from transformers import AutoTokenizer

    kwargs = {"add_prefix_space": True} if model_type in PREFIX_SPACE_TYPES else {}
    tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    try:
        got = set(w for w in tokenizer([["patient", "fever"]], is_split_into_words=True).word_ids(0) if w is not None)
    except (ValueError, TypeError) as e:
        raise UserError(f"the tokenizer of {name!r} does not take pre-split tokens: {e}") from None
    if got != {0, 1}:
        raise UserError(f"the tokenizer of {name!r} gives pre-split words no token (word_ids {sorted(got)})")
    return tokenizer


def unknown_share(tokenizer, sentences) -> float:
    """The share of the sentences' tokens (characters or words) whose first sub-token is the unknown token."""
    texts = [list(s.chars) for s in sentences if s.chars]
    if not texts or tokenizer.unk_token_id is None:
        return 0.0
    enc = tokenizer(texts, is_split_into_words=True, add_special_tokens=False, verbose=False)
    unk = total = 0
    for k, text in enumerate(texts):
        first: dict[int, int] = {}
        for t, w in zip(enc["input_ids"][k], enc.word_ids(k)):
            if w is not None and w not in first:
                first[w] = t
        total += len(text)
        unk += sum(first.get(i) == tokenizer.unk_token_id for i in range(len(text)))  # no token at all counts too
    return unk / total


def load_model(
    model_path_or_id: str | Path,
    labels: list[str],
    finetune: Finetune = "full",
    lora: LoraSpec | None = None,
) -> tuple[Any, Any]:
    """A token-classification model with a fresh head for `labels`, and its tokenizer.

    `finetune="lora"` wraps the model with peft LoRA adapters on `lora.target_modules` (or
    `LORA_TARGETS[model_type]`); the classifier head trains in both modes (peft's TOKEN_CLS
    task puts `classifier` in modules_to_save itself). A head of another size in the
    checkpoint is replaced. A model that cannot be found raises UserError.
    """
    from huggingface_hub.errors import HFValidationError
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

    name = str(model_path_or_id)
    _check_local(name)
    try:
        config = AutoConfig.from_pretrained(name)  # cheap: fail before touching weights
        tokenizer = load_tokenizer(name, config.model_type)
        model = AutoModelForTokenClassification.from_pretrained(
            name,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={tag: i for i, tag in enumerate(labels)},
            ignore_mismatched_sizes=True,
        )
    except (OSError, HFValidationError) as e:
        raise _unavailable(name, str(e)) from None
    if finetune == "lora":
        model = apply_lora(model, lora or LoraSpec())
    elif finetune != "full":
        raise ValueError(f"finetune must be 'full' or 'lora', not {finetune!r}")
    return model, tokenizer


def apply_lora(model: Any, lora: LoraSpec) -> Any:
    """Wrap `model` with LoRA adapters; only adapters and the classifier head stay trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    model_type = model.config.model_type
    targets = lora.target_modules or LORA_TARGETS.get(model_type)
    if not targets:
        raise UserError(
            f"no LoRA target modules known for model type {model_type!r}: set `target_modules` in the "
            f"study's lora settings (known types: {', '.join(sorted(LORA_TARGETS))})"
        )
    config = LoraConfig(
        task_type=TaskType.TOKEN_CLS,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(targets),
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as e:
        if "not found" in str(e):
            raise UserError(f"LoRA target modules {list(targets)} not found in model type {model_type!r}") from None
        raise
    head = [p for n, p in peft_model.named_parameters() if "classifier" in n and ".original_module." not in n]
    if head and not all(p.requires_grad for p in head):  # (a bilstm-crf cell's classifier is the identity: no weights)
        raise RuntimeError("LoRA model has a frozen classifier head")  # a bug, not user input
    return peft_model


def count_parameters(model: torch.nn.Module) -> ParamCounts:
    """Count unique parameters (tied or shared weights once) as the model will train.

    `total` is every parameter the trained model uses: for LoRA the frozen base, the adapters
    and the classifier head. peft's `modules_to_save` also keeps a frozen `original_module`
    copy of the head that the forward pass never uses: it is left out, so the head counts once.
    `trainable` is those with requires_grad: full = total; LoRA = adapters + head.
    (The paper's Table 4 counts both head copies: its LoRA figure is ours + one head, and its
    "full" figure is the LoRA model's total + one head, e.g. BERT 102,299,178 / 622,122.)
    """
    trainable = total = 0
    for name, param in model.named_parameters():  # named_parameters() yields each tensor once
        if ".original_module." in name:
            continue
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return ParamCounts(trainable=trainable, total=total)
