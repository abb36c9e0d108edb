"""Heads: what turns a model's output into a training loss and into tag ids (the `Head` seam).

The training loop knows only `loss(output, batch)` and `decode(output, batch)`: `output` is what the model's
forward returns (its `.logits` are per-token scores), `batch` the collated tensors (attention_mask, labels,
predict_mask). `HEADS` names each head; `build_head` composes one for a cell and may adapt the model first.

- `linear`: the model's classifier gives the emissions; cross-entropy or focal loss per token; argmax, or
  Viterbi under BIO's constraints with `train.decode: constrained`.
- `crf`: the same emissions into a linear-chain CRF (sequence NLL, Viterbi), BIO constraints always on; a window
  that starts mid-sentence may open with I-X (the entity began in the window before), and a gold I-X that BIO
  forbids (the corpus's own noise) is read as B-X, as conlleval reads it.
- `bilstm-crf`: the encoder's output through a bidirectional LSTM and a new emission layer, then the CRF
  (the organisers' BERT-BiLSTM-CRF baseline); the model's classifier becomes the identity.

The CRF runs over the positions whose label counts (training: the first sub-token of each character the
window owns) or that the window predicts (`predict_mask`), never over [CLS]/[SEP], continuations or padding;
its forward algorithm is fp32 under bf16 autocast (ablate.models.crf). Its loss is the summed sequence NLL
divided by the number of labelled positions, so its scale (and a good learning rate) is that of per-token CE.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch
from torch import nn

from ablate.losses import build_loss
from ablate.models.crf import CRF, allowed_transitions, begin_ids, constrained_decode, repair_gold
from ablate.schemes import IOB2, Scheme
from ablate.spec.schema import IGNORE_INDEX


class Head(Protocol):
    """What the loop asks of a head: a scalar fp32 loss, and tag ids (batch, seq) read where predict_mask is True.
    `lr_scale` maps a parameter-name prefix to a learning-rate multiplier (CRF transitions)."""

    lr_scale: dict[str, float]

    def loss(self, output, batch: dict) -> torch.Tensor: ...

    def decode(self, output, batch: dict) -> torch.Tensor: ...

    def parameters(self): ...


class LinearHead(nn.Module):
    """Per-token loss on the model's logits; argmax, or BIO-constrained Viterbi when `constraints` are given."""

    def __init__(self, loss_fn: nn.Module, constraints=None, scheme: Scheme = IOB2):
        super().__init__()
        self.loss_fn, self.constraints, self.lr_scale, self.scheme = loss_fn, constraints, {}, scheme
        self.valid_bio = constraints is not None  # predictions are repaired to valid tags of the scheme after stitching

    def loss(self, output, batch: dict) -> torch.Tensor:
        return self.loss_fn(output.logits.float(), batch["labels"])  # (batch, seq, labels) -> scalar, fp32

    def decode(self, output, batch: dict) -> torch.Tensor:
        if self.constraints is None:
            return output.logits.argmax(-1)
        return constrained_decode(output.logits, batch["predict_mask"], self.constraints, batch.get("free_start"))


class _CRFLoss(nn.Module):
    """The CRF, its constraints, and the loss: summed sequence NLL over the labelled positions' count."""

    def __init__(self, labels: Sequence[str], scheme: Scheme = IOB2):
        super().__init__()
        self.constraints = allowed_transitions(list(labels), scheme)
        self.crf = CRF(len(labels), self.constraints)
        self.register_buffer("begin", begin_ids(list(labels), scheme), persistent=False)

    def loss(self, emissions: torch.Tensor, batch: dict) -> torch.Tensor:
        labels, free = batch["labels"], batch.get("free_start")
        mask = labels != IGNORE_INDEX
        gold = repair_gold(labels, mask, self.constraints, self.begin, free)  # I-X opening an entity: as B-X
        return self.crf.nll(emissions, gold, mask, free).sum() / mask.sum().clamp(min=1)

    def decode(self, emissions: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.crf.decode(emissions, batch["predict_mask"], batch.get("free_start"))


class CRFHead(nn.Module):
    """A linear-chain CRF over the model's logits (the classifier's emissions)."""

    def __init__(self, labels: Sequence[str], lr_multiplier: float, scheme: Scheme = IOB2):
        super().__init__()
        self.chain = _CRFLoss(labels, scheme)
        self.lr_scale, self.valid_bio, self.scheme = {"chain.crf.": lr_multiplier}, True, scheme

    def loss(self, output, batch: dict) -> torch.Tensor:
        return self.chain.loss(output.logits, batch)

    def decode(self, output, batch: dict) -> torch.Tensor:
        return self.chain.decode(output.logits, batch)


class BiLSTMCRFHead(nn.Module):
    """Encoder output (the model's logits with an identity classifier) -> BiLSTM -> emission layer -> CRF.

    The LSTM reads each window's real tokens only (packed by attention_mask): padding never reaches the
    backward direction, so a window's prediction does not depend on what it was batched with.
    """

    def __init__(self, hidden_size: int, labels: Sequence[str], lstm, lr_multiplier: float, scheme: Scheme = IOB2):
        super().__init__()
        self.lstm = nn.LSTM(hidden_size, lstm.hidden, num_layers=lstm.layers, bidirectional=True, batch_first=True,
                            dropout=lstm.dropout if lstm.layers > 1 else 0.0)
        self.dropout = nn.Dropout(lstm.dropout)
        self.emissions = nn.Linear(2 * lstm.hidden, len(labels))
        self.chain = _CRFLoss(labels, scheme)
        self.lr_scale, self.valid_bio, self.scheme = {"chain.crf.": lr_multiplier}, True, scheme

    def _emissions(self, output, batch: dict) -> torch.Tensor:
        x = output.logits  # (batch, seq, hidden): the encoder output after the model's dropout
        lengths = batch["attention_mask"].sum(dim=1).cpu()  # pack needs lengths on the CPU (one small copy)
        with torch.autocast(device_type=x.device.type, enabled=False):  # the LSTM in fp32 (cast here, once)
            packed = nn.utils.rnn.pack_padded_sequence(x.float(), lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return self.emissions(self.dropout(out))  # (batch, seq, labels)

    def loss(self, output, batch: dict) -> torch.Tensor:
        return self.chain.loss(self._emissions(output, batch), batch)

    def decode(self, output, batch: dict) -> torch.Tensor:
        return self.chain.decode(self._emissions(output, batch), batch)


def _linear(model, spec, labels: Sequence[str], label_counts: Sequence[int], scheme: Scheme):
    constraints = allowed_transitions(list(labels), scheme) if spec.train.decode == "constrained" else None
    return model, LinearHead(build_loss(spec.loss, len(labels), spec.train, label_counts), constraints, scheme)


def _crf(model, spec, labels: Sequence[str], label_counts: Sequence[int], scheme: Scheme):
    return model, CRFHead(labels, spec.train.head.crf.lr_multiplier, scheme)


def _bilstm_crf(model, spec, labels: Sequence[str], label_counts: Sequence[int], scheme: Scheme):
    model.classifier = nn.Identity()  # every token-classification model here names its emission layer `classifier`
    h = spec.train.head
    return model, BiLSTMCRFHead(model.config.hidden_size, labels, h.lstm, h.crf.lr_multiplier, scheme)


# Name -> builder(model, run spec, labels, training label counts, tag scheme) -> (model, head). Called before LoRA wraps
# the model, so a head that changes the model's last layer does so on the plain transformers model.
HEADS: dict[str, Callable] = {
    "linear": _linear,
    "crf": _crf,
    "bilstm-crf": _bilstm_crf,
}


def build_head(name: str, model, spec, labels: Sequence[str], label_counts: Sequence[int], scheme: Scheme = IOB2):
    """The model (possibly adapted) and the head called `name` (a key of HEADS) for one cell."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; known: {', '.join(HEADS)}")
    return HEADS[name](model, spec, labels, label_counts, scheme)
