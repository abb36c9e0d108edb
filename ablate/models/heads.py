"""Heads: what turns a model's output into a training loss and into tag ids (the `Head` seam).

The training loop knows only this interface: `loss(output, labels)` and `decode(output, mask)`, where
`output` is what the model's forward returns (its `.logits` are the per-token emissions).
`HEADS` names each head; `build_head` composes one for a cell (and may adapt the model, e.g. put an
LSTM between the encoder and its emission layer).
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch
from torch import nn

from ablate.losses import build_loss


class Head(Protocol):
    """What the loop asks of a head. `output.logits` (batch, seq, labels) are the emissions; labels (batch,
    seq) hold IGNORE_INDEX where nothing counts; mask (batch, seq) is True where a tag is predicted.
    `loss` is a scalar (fp32); `decode` gives tag ids (batch, seq), read only where mask is True."""

    def loss(self, output, labels: torch.Tensor) -> torch.Tensor: ...

    def decode(self, output, mask: torch.Tensor) -> torch.Tensor: ...

    def parameters(self): ...


class LinearHead(nn.Module):
    """A linear emission layer (the model's classifier), trained with a per-token loss, decoded by argmax."""

    def __init__(self, loss_fn: nn.Module):
        super().__init__()
        self.loss_fn = loss_fn

    def loss(self, output, labels: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(output.logits.float(), labels)  # (batch, seq, labels) -> scalar, fp32 under bf16 autocast

    def decode(self, output, mask: torch.Tensor) -> torch.Tensor:
        return output.logits.argmax(-1)


def _linear(model, spec, labels: Sequence[str], label_counts: Sequence[int]):
    return model, LinearHead(build_loss(spec.loss, len(labels), spec.train, label_counts))


# Name -> builder(model, run spec, labels, training label counts) -> (model, head).
HEADS: dict[str, Callable] = {
    "linear": _linear,
}


def build_head(name: str, model, spec, labels: Sequence[str], label_counts: Sequence[int]):
    """The model (possibly adapted) and the head called `name` (a key of HEADS) for one cell."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; known: {', '.join(HEADS)}")
    return HEADS[name](model, spec, labels, label_counts)
