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
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ablate.errors import UserError

if TYPE_CHECKING:
    import torch

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_POSITIONS = 512
Family = Literal["bert", "roberta", "deberta-v2", "albert", "electra"]
ShapeName = Literal["tiny", "base", "large", "xlarge"]
Finetune = Literal["full", "lora"]

# LoRA targets per config.model_type (the attention query and value projections, as in the
# LoRA paper and the study). peft has no default for ALBERT, so keep our own table.
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "electra": ("query", "value"),
    "albert": ("query", "value"),
    "deberta-v2": ("query_proj", "value_proj"),
}


class ShapeDims(BaseModel):
    """Explicit transformer dimensions for a scratch backbone."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    hidden: int = Field(gt=0)
    layers: int = Field(gt=0)
    heads: int = Field(gt=0)
    intermediate: int = Field(gt=0)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ShapeDims:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self


SHAPES: dict[str, ShapeDims] = {
    "tiny": ShapeDims(hidden=64, layers=2, heads=2, intermediate=128),  # tests and the demo
    "base": ShapeDims(hidden=768, layers=12, heads=12, intermediate=3072),  # hfl/chinese-bert-wwm-ext
    "large": ShapeDims(hidden=1024, layers=24, heads=16, intermediate=4096),  # chinese-roberta-wwm-ext-large
    # Erlangshen-DeBERTa-v2-710M (the paper's DeBERTa): 24 layers. Its Table 4 LoRA count
    # (2,423,850 = 24 x 2 x 2 x 1536 x 16 + head) rules out 48 layers (that is v2-xxlarge).
    "xlarge": ShapeDims(hidden=1536, layers=24, heads=24, intermediate=6144),
}


_DIMS = ("hidden", "layers", "heads", "intermediate")


class BackboneSpec(BaseModel):
    """Where a backbone comes from: `pretrained` (hub id or local folder) or `scratch` (a family).

    A scratch backbone has the real architecture of its family with random weights and a
    vocabulary built from the training characters. Its size is the `shape` preset (tiny / base /
    large / xlarge; default tiny, cheap on a CPU), with any of hidden / layers / heads / intermediate
    given explicitly overriding the preset's value. The same class is a study's `backbones:` entry
    and what `ablate train --backbone` builds; its fields are hashed into run_ids, as written.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    pretrained: str | None = None
    scratch: Family | None = None
    shape: ShapeName | None = None
    hidden: int | None = Field(None, gt=0)
    layers: int | None = Field(None, gt=0)
    heads: int | None = Field(None, gt=0)
    intermediate: int | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _default_shape(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("scratch") is not None and data.get("shape") is None:
            if all(data.get(k) is None for k in _DIMS):  # sizes given alone stay on the tiny preset, shape unset
                data = {**data, "shape": "tiny"}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> BackboneSpec:
        if (self.pretrained is None) == (self.scratch is None):
            raise ValueError("give exactly one of `pretrained` (hub id or folder) or `scratch` (an architecture)")
        if self.pretrained is not None:
            sized = [k for k in ("shape", *_DIMS) if getattr(self, k) is not None]
            if sized:
                raise ValueError(f"{', '.join(sized)} only apply to `scratch` backbones; a checkpoint has its own size")
            if not self.pretrained.strip():
                raise ValueError("`pretrained` is empty")
            return self
        d = self.dims
        if d.hidden % d.heads:
            raise ValueError(f"hidden ({d.hidden}) must be a multiple of heads ({d.heads})")
        return self

    @property
    def dims(self) -> ShapeDims:
        """The resolved dimensions of a scratch backbone: the preset, then the explicit sizes."""
        if self.scratch is None:
            raise ValueError("a pretrained backbone has no scratch dimensions")
        preset = SHAPES[self.shape or "tiny"]
        explicit = {k: getattr(self, k) for k in _DIMS if getattr(self, k) is not None}
        return preset.model_copy(update=explicit) if explicit else preset


class LoraSettings(BaseModel):
    """LoRA hyper-parameters; `target_modules=None` takes `LORA_TARGETS[model_type]`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    r: int = Field(default=16, gt=0)  # the paper's rank
    alpha: float = Field(default=32.0, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    target_modules: tuple[str, ...] | None = None


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
    tokenizer_dir = build_char_tokenizer(sentences_chars, Path(work_dir) / "tokenizer")
    return str(save_scratch_backbone(spec, tokenizer_dir, Path(work_dir) / "backbone", seed=seed))


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


def load_model(
    model_path_or_id: str | Path,
    labels: list[str],
    finetune: Finetune = "full",
    lora: LoraSettings | None = None,
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
        AutoConfig.from_pretrained(name)  # cheap: fail before touching weights
        tokenizer = AutoTokenizer.from_pretrained(name)
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
        model = apply_lora(model, lora or LoraSettings())
    elif finetune != "full":
        raise ValueError(f"finetune must be 'full' or 'lora', not {finetune!r}")
    return model, tokenizer


def apply_lora(model: Any, lora: LoraSettings) -> Any:
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
    if not any(p.requires_grad for n, p in peft_model.named_parameters() if "classifier" in n):
        raise RuntimeError("LoRA model has no trainable classifier head")  # a bug, not user input
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
