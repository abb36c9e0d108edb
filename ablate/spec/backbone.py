"""Backbone specs: where a backbone comes from (hub id, folder, or a family built from a config) and its size presets."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_POSITIONS = 512  # positions of a scratch backbone (as BERT's)
Family = Literal["bert", "roberta", "deberta-v2", "albert", "electra"]
ShapeName = Literal["tiny", "base", "large", "xlarge"]


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


class PretrainSpec(BaseModel):
    """Masked-LM training of a backbone before it is fine-tuned (from random weights, or continued from a checkpoint).

    Text: the study's training sentences (labels ignored; never dev or test) unless `train_text: false`, plus
    `text` files (a sentence per line, or a corpus file .jsonl / CoNLL), relative to `data.root`; a test file
    is used only when named here. Length: `steps` optimizer steps, or a `seconds` budget (machine-dependent: the
    same settings give another backbone on a faster machine), whichever ends first. Masking: `mask_prob` of the
    tokens (of the words with `whole_word`, where the corpus gives words), 80% [MASK] / 10% random / 10% kept.
    ELECTRA and ALBERT are trained with the same MLM objective on their encoder (no replaced-token detection,
    no sentence-order prediction).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    steps: int | None = Field(1000, gt=0)
    seconds: float | None = Field(None, gt=0)
    batch_size: int = Field(32, gt=0)
    lr: float = Field(1e-3, gt=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    mask_prob: float = Field(0.15, gt=0, lt=1)
    max_length: int = Field(128, ge=8, le=MAX_POSITIONS)
    whole_word: bool = True
    held_out: float = Field(0.05, ge=0, lt=0.5)  # share of the text kept for masked-token accuracy
    seed: int = 0
    train_text: bool = True
    text: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _some_text_and_length(self) -> PretrainSpec:
        if self.steps is None and self.seconds is None:
            raise ValueError("give `steps` or `seconds` (or both: whichever ends first)")
        if not self.train_text and not self.text:
            raise ValueError("no text to pretrain on: `train_text: false` and no `text` files")
        return self


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
    pretrain: PretrainSpec | None = None  # masked-LM training first (run_ids hash it only when set)
    # scratch on word-level data: the WordPiece vocabulary size (default 8,000; character corpora keep every character)
    vocab_size: int | None = Field(None, ge=16)

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
            sized = [k for k in ("shape", *_DIMS, "vocab_size") if getattr(self, k) is not None]
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
