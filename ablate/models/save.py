"""A cell's model as a Hugging Face folder: weights, tokenizer, labels, max length, a model card; and loading it back.

- full fine-tuning, linear head: loads with `AutoModelForTokenClassification` / `pipeline("token-classification")`
  and no ablate installed (the tokenizer, `id2label` and `model_max_length` travel with it);
- LoRA: the adapter folder (`adapter/`, loadable with peft given its base), and with `save_model: merged` a merged
  full model in the folder itself (`merge_and_unload`), loadable as above;
- CRF heads: the encoder and emission layer as above plus `ablate_head.pt` (transitions, LSTM): load it with
  `ablate predict` (`load_saved`); `config.ablate_head` names the head, and the card says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HEAD_FILE = "ablate_head.pt"


def save_cell_model(folder: Path, model, tokenizer, head, spec, labels: list[str], card: dict[str, Any]) -> Path:
    """Write the cell's (best-epoch) model to `folder`; `card` holds the study, cell, run_id, data hashes, scores."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lora = spec.finetune == "lora"
    sch = getattr(head, "scheme", None)
    scheme = f"{sch.name}{sch.sep}" if sch is not None else "IOB2-"  # how predictions are repaired after loading
    if lora:
        model.save_pretrained(str(folder / "adapter"))  # the adapter and the trained emission layer
    if not lora or spec.train.save_model == "merged":
        plain = model.merge_and_unload() if lora else model
        plain.config.ablate_head, plain.config.ablate_decode = spec.head, spec.train.decode
        plain.config.ablate_max_length, plain.config.ablate_scheme = spec.data.max_length, scheme
        plain.config.ablate_subtoken = spec.data.subtoken
        plain.save_pretrained(str(folder))
    else:  # adapter only: the folder still names its labels and head, for `ablate predict`
        cfg = model.base_model.model.config if hasattr(model, "base_model") else model.config
        cfg.ablate_head, cfg.ablate_decode, cfg.ablate_max_length = spec.head, spec.train.decode, spec.data.max_length
        cfg.ablate_scheme, cfg.ablate_subtoken = scheme, spec.data.subtoken
        cfg.save_pretrained(str(folder / "adapter"))
    tokenizer.model_max_length = spec.data.max_length  # windows of this many sub-tokens, as in training
    tokenizer.save_pretrained(str(folder))
    if any(True for _ in head.parameters()):  # a CRF's transitions, an LSTM, a learned focal alpha
        torch.save(head.state_dict(), folder / HEAD_FILE)
    (folder / "README.md").write_text(model_card(spec, labels, card), encoding="utf-8")
    return folder


def model_card(spec, labels: list[str], card: dict[str, Any]) -> str:
    """The README.md of a saved cell (huggingface_hub's ModelCard format: YAML metadata, then markdown)."""
    from huggingface_hub import ModelCard, ModelCardData

    final = card.get("final", {})
    scores = [f"| {k} | {100 * v:.2f} |" for k, v in sorted(final.items())
              if k.startswith(("dev/", "test/")) and "/type/" not in k and "f1" in k]
    files = [f"| {role} | `{name}` | `{sha}` |" for role, name, sha in card.get("data", [])]
    plain = spec.head == "linear" and spec.train.decode == "argmax" and (spec.finetune == "full" or spec.train.save_model == "merged")
    load = (["```python", "from transformers import pipeline", f'tagger = pipeline("token-classification", model="PATH")',
             "```"] if plain else
            ["This model needs ablate to run " + (f"its `{spec.head}` head (CRF decoding)" if spec.head != "linear"
                                                 else "its BIO-constrained decoding" if spec.train.decode != "argmax"
                                                 else "(a LoRA adapter: `adapter/` with peft on its base)") + ":",
             "```", "ablate predict PATH input.txt:ft --out predictions/", "```"])
    data = ModelCardData(library_name="transformers", pipeline_tag="token-classification", tags=["ablate", "ner"])
    text = "\n".join([
        "---", data.to_yaml(), "---", "",
        f"# {card.get('name', spec.backbone)}", "",
        f"A cell of the ablate study `{spec.study}`: run_id `{card.get('run_id', '?')}`, backbone `{spec.backbone}`, "
        f"{spec.finetune} fine-tuning, head `{spec.head}`, loss `{spec.loss}`. Weights of the best dev epoch "
        f"({int(final.get('best_epoch', 0))}).", "",
        "## How to load it", "", *load, "",
        "## Scores (best dev epoch; %)", "", "| metric | value |", "|---|---|", *scores, "",
        "## Data", "", "| role | file | sha256 |", "|---|---|---|", *files, "",
        "## Settings", "", "```json", json.dumps(spec.model_dump(mode="json", exclude={"axes"}), indent=1), "```",
        f"", f"Labels: {', '.join(labels)}", ""])
    ModelCard(text)  # parses its metadata: a card huggingface_hub cannot read fails here, not on the hub
    return text


def load_saved(folder: Path, device=None):
    """(model, head, tokenizer, labels, max_length) of a folder `save_cell_model` wrote (or any token-classification
    folder of transformers: a linear head). UserError when it is not one."""
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

    from ablate.errors import UserError

    folder = Path(folder)
    adapter = folder / "adapter"
    merged = (folder / "config.json").exists()
    if not merged and not (adapter / "adapter_config.json").exists():
        raise UserError(f"{folder} is not a saved model: it has no config.json (nor adapter/ with adapter_config.json)")
    config = AutoConfig.from_pretrained(str(folder if merged else adapter))
    labels = [config.id2label[i] for i in range(len(config.id2label))] if getattr(config, "id2label", None) else []
    if not labels or all(t == f"LABEL_{i}" for i, t in enumerate(labels)):  # transformers' placeholder names
        raise UserError(f"{folder} is not a token classifier: its config names no tags (id2label)")
    head_name = getattr(config, "ablate_head", "linear")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if merged:
        model = AutoModelForTokenClassification.from_pretrained(str(folder))
    else:
        from peft import PeftConfig, PeftModel

        import torch

        base = PeftConfig.from_pretrained(str(adapter)).base_model_name_or_path
        plain = AutoModelForTokenClassification.from_pretrained(
            base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={t: i for i, t in enumerate(labels)},
            ignore_mismatched_sizes=True)
        if head_name == "bilstm-crf":  # as in training: the LSTM head reads the encoder output itself
            plain.classifier = torch.nn.Identity()
        model = PeftModel.from_pretrained(plain, str(adapter))
    head = _saved_head(folder, head_name, model, config, labels)
    max_length = int(getattr(config, "ablate_max_length", 0) or min(tokenizer.model_max_length, 512))
    head.subtoken = getattr(config, "ablate_subtoken", "first")  # where `predict` reads each token's tag
    return model, head, tokenizer, labels, max_length


def _saved_head(folder: Path, name: str, model, config, labels: list[str]):
    import torch

    from ablate.losses import CrossEntropyLoss
    from ablate.models.crf import allowed_transitions
    from ablate.models.heads import BiLSTMCRFHead, CRFHead, LinearHead
    from ablate.spec.schema import LstmSpec

    from ablate.schemes import parse_declared

    scheme = parse_declared(getattr(config, "ablate_scheme", "IOB2-"))  # folders saved before schemes: IOB2
    if name == "linear":
        constrained = getattr(config, "ablate_decode", "argmax") == "constrained"
        return LinearHead(CrossEntropyLoss(), allowed_transitions(labels, scheme) if constrained else None, scheme)
    state = torch.load(folder / HEAD_FILE, map_location="cpu")
    if name == "crf":
        head = CRFHead(labels, 1.0, scheme)
    else:
        weight = state["lstm.weight_ih_l0"]  # (4 * hidden, input): the LSTM's size, read back from its weights
        layers = sum(1 for k in state if k.startswith("lstm.weight_ih_l") and not k.endswith("_reverse"))
        head = BiLSTMCRFHead(weight.shape[1], labels, LstmSpec(hidden=weight.shape[0] // 4, layers=layers), 1.0, scheme)
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        inner.classifier = torch.nn.Identity()
    head.load_state_dict(state, strict=False)  # focal alpha etc. of a linear head: not needed to predict
    return head


def saved_scheme(folder: Path):
    """The tag scheme a saved folder's labels are in (`config.ablate_scheme`; IOB2 for folders without it)."""
    import json

    from ablate.schemes import parse_declared

    folder = Path(folder)
    for config in (folder / "config.json", folder / "adapter" / "config.json"):
        if config.exists():
            return parse_declared(json.loads(config.read_text(encoding="utf-8")).get("ablate_scheme", "IOB2-"))
    return parse_declared("IOB2-")
