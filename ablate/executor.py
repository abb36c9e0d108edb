"""The composition root: one RunSpec -> corpus, backbone, head (with its loss), trainer -> RunResult.

Only this module wires data, models, losses, heads and the trainer together; it passes the specs
themselves down (no copies of their fields).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from ablate.errors import UserError


def _cache_root() -> Path:
    return Path(os.environ.get("ABLATE_CACHE", Path.cwd() / "mlruns" / ".cache"))


def _quiet_libraries() -> None:
    import warnings

    from transformers.utils import logging as hf_logging

    # peft calls a transformers method that transformers 5 deprecates: noise in every cell's log.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    hf_logging.set_verbosity_error()  # the per-load report (fresh head MISSING) is expected here
    hf_logging.disable_progress_bar()


def run_one(spec, out_dir: Path, on_epoch: Callable | None = None, fault: str | None = None, device: str | None = None,
            identity: dict | None = None, pretrain_log=None):
    """Train one cell and return its RunResult; outputs (predictions, per-type scores, model) under out_dir.

    `fault` (tests of the failure policy: see ablate.faults) makes the head's loss fail on purpose.
    `identity`: the cell's {name, run_id} for its model card (default: the grid's).
    `pretrain_log` (`ablate.models.pretrain.PretrainLog`): where a backbone's masked-LM pretraining, when this cell
    is the one that builds it, reports (the scheduler makes it an MLflow run).
    """
    import torch

    from ablate.data.corpus import load_corpus
    from ablate.data.encode import encode_cached
    from ablate.faults import with_fault
    from ablate.models.backbones import apply_lora, count_parameters, load_model, position_limit
    from ablate.models.pretrain import backbone_for
    from ablate.models.heads import build_head
    from ablate.trainer import Split, train

    _quiet_libraries()
    cache = _cache_root()
    corpus = load_corpus(spec.data)
    model_path, pretrained_key = backbone_for(spec.backbone_spec, corpus.train, cache, lambda p: spec.data.resolve(Path(p)),
                                              device, pretrain_log)
    torch.manual_seed(spec.train.seed)
    model, tokenizer = load_model(model_path, corpus.labels)
    label2id = {t: i for i, t in enumerate(corpus.labels)}
    max_length = spec.data.max_length
    limit = position_limit(model.config)
    if limit is not None and max_length > limit:
        raise UserError(f"data.max_length {max_length} is more than the {limit} positions of {model_path}; lower it "
                        "(longer sentences are windowed, so nothing is lost)")
    enc = lambda sents: encode_cached(sents, tokenizer, label2id, max_length, cache / "encodings",  # noqa: E731
                                      subtoken=spec.data.subtoken)
    train_split = Split(enc(corpus.train), corpus.train)
    dev = Split(enc(corpus.dev), corpus.dev)
    test = Split(enc(corpus.test), corpus.test) if corpus.test else None
    unk = unknown_shares(tokenizer, {"train": train_split, "dev": dev, **({"test": test} if test else {})})
    counts = [0] * len(corpus.labels)
    for w in train_split.windows:
        for label in w.labels:
            if label >= 0:
                counts[label] += 1
    model, head = build_head(spec.head, model, spec, corpus.labels, counts, corpus.scheme)  # before LoRA: a head may adapt the model
    if spec.finetune == "lora":
        model = apply_lora(model, spec.train.lora)  # adapters; the emission layer and the head's own weights train
    head = with_fault(head, fault, spec.train.batch_size)
    params = count_parameters(model)
    head_params = sum(p.numel() for p in head.parameters() if p.requires_grad)
    dev_name = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "data_repairs.json").write_text(json.dumps(
        {"repairs": [r.to_json() for r in corpus.repairs], "warnings": [w.to_json() for w in corpus.warnings],
         "labels": corpus.labels, "sentences": {"train": len(corpus.train), "dev": len(corpus.dev), "test": len(corpus.test)}},
        ensure_ascii=False, indent=2), encoding="utf-8")
    (out_dir / "run_spec.json").write_text(spec.model_dump_json(indent=2), encoding="utf-8")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    result = train(
        model, head, train_split, dev, test, corpus.labels, spec.train, dev_name, out_dir, pad_id=pad_id, on_epoch=on_epoch,
        extra_final={"params/trainable": float(params.trainable + head_params), "params/total": float(params.total + head_params),
                     **{f"data/unk_share/{k}": v for k, v in unk.items()}},
        scheme=corpus.scheme,
    )
    result.settings["scheme"] = f"{corpus.scheme.name}{corpus.scheme.sep}"
    lost = {k: v for k, v in unk.items() if v > UNK_WARNING}
    if lost:
        result.settings["warning"] = unknown_warning(lost, model_path)
    if pretrained_key is not None:
        result.settings["pretrained_backbone"] = pretrained_key  # which cached pretraining this cell fine-tuned
    if spec.train.save_model:  # the model is at its best dev epoch here (train restores it)
        _save(out_dir / "model", model, tokenizer, head, spec, corpus.labels, result.final, identity or {})
    return result


UNK_WARNING = 0.05  # a larger share of [UNK] tokens in a split is a warning: the tokenizer loses the text


def unknown_shares(tokenizer, splits: dict) -> dict[str, float]:
    """Per split, the share of its tokens (each character or word: its first sub-token) that are [UNK]."""
    unk = tokenizer.unk_token_id
    out = {}
    for name, split in splits.items():
        heads = [w.input_ids[t] for w in split.windows for t in w.heads]
        out[name] = sum(i == unk for i in heads) / len(heads) if heads and unk is not None else 0.0
    return out


def unknown_warning(lost: dict[str, float], model_path: str) -> str:
    shares = ", ".join(f"{100 * v:.1f}% of {k}" for k, v in lost.items())
    return (f"{shares} tokens are the tokenizer's unknown token ({model_path}): it loses that text; a scratch "
            "backbone builds its vocabulary from the training split, a checkpoint needs one that covers the corpus")


def _save(folder: Path, model, tokenizer, head, spec, labels, final, identity: dict) -> None:
    from ablate.grid import data_hashes_of, run_id, run_name
    from ablate.models.save import save_cell_model

    hashes = data_hashes_of(spec.data)
    data = [(f"{role}[{i}]", f.path.name, hashes[str(spec.data.resolve(f.path))]) for (role, i), f in spec.data.files()]
    save_cell_model(folder, model.to("cpu"), tokenizer, head.to("cpu"), spec, labels,
                    {"name": run_name(spec), "run_id": run_id(spec, hashes), **identity, "data": data, "final": final})
