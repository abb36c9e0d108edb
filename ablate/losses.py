"""Token-classification losses: cross-entropy and focal loss, and the `LOSSES` table that names them.

Every loss takes logits (batch, seq, num_labels) and label ids (batch, seq), skips positions
labelled IGNORE_INDEX, and averages over the positions that count (0.0 when none do).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ablate.spec.schema import IGNORE_INDEX, Loss, TrainSpec

AlphaMode = Literal["none", "fixed", "learned"]


def _counted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Select the counted positions first, so ignored ones never enter the graph (their
    # logits can be anything, even inf, without touching the loss or its gradient).
    flat = labels.reshape(-1)
    keep = flat != IGNORE_INDEX
    return logits.reshape(-1, logits.size(-1))[keep], flat[keep]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over positions whose label is not IGNORE_INDEX."""
    logits, labels = _counted(logits, labels)
    if labels.numel() == 0:
        return logits.sum() * 0.0  # no counted position: zero, still attached to the graph
    return F.cross_entropy(logits.float(), labels)


def focal_loss(
    logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0, alpha: torch.Tensor | None = None
) -> torch.Tensor:
    """Focal loss FL = -alpha_t (1 - p_t)^gamma log p_t (Lin et al. 2017), mean over counted positions.

    `alpha` is a per-class weight (num_labels,) or None (all 1). Unlike
    `F.cross_entropy(weight=...)` the mean is a plain mean, not divided by the summed weights.
    gamma=0 and alpha=None is exactly cross-entropy.
    """
    logits, labels = _counted(logits, labels)
    if labels.numel() == 0:
        return logits.sum() * 0.0
    # log p_t from log_softmax: finite at any finite logits; 1 - p_t via expm1 keeps
    # precision when p_t is close to 1 (the confident tokens focal loss down-weights).
    log_pt = F.log_softmax(logits.float(), dim=-1).gather(-1, labels[:, None]).squeeze(-1)
    loss = -log_pt
    if gamma != 0:
        # clamp: (1 - p_t) can round to 0; x^gamma then has an infinite slope for gamma < 1.
        one_minus_pt = (-torch.expm1(log_pt)).clamp_min(torch.finfo(log_pt.dtype).tiny)
        loss = one_minus_pt.pow(gamma) * loss
    if alpha is not None:
        loss = alpha.to(loss.device, loss.dtype)[labels] * loss
    return loss.mean()


def inverse_frequency_alpha(label_counts: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Per-class weights N / (C * n_c): mean 1 over a balanced corpus, larger for rare labels.

    A label never seen (n_c = 0) gets the weight of a label seen once.
    """
    counts = torch.as_tensor(label_counts, dtype=torch.float32).clamp_min(1.0)
    return counts.sum() / (counts.numel() * counts)


class CrossEntropyLoss(nn.Module):
    """`cross_entropy` as a module, so every loss has the same shape."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, labels)


class FocalLoss(nn.Module):
    """Focal loss with no, fixed or learned per-class alpha.

    "learned": alpha = exp(log_alpha), one nn.Parameter per class, starting at 1 (or at the
    given `alpha`); exp keeps every alpha positive. The trainer must give `parameters()` to its
    optimiser. Caveat, kept as the paper has it: d(alpha_t * FL)/d(alpha) > 0 always, so
    training only ever lowers alpha (a per-class rescaling of the loss towards 0). Adam moves
    log alpha by about lr per step: ~0.9 over 20 epochs of 4,600 batch-1 steps at lr 1e-5 (the paper's setup).
    Log `alpha()` to see it.
    """

    def __init__(
        self,
        num_labels: int,
        gamma: float = 2.0,
        alpha_mode: AlphaMode = "none",
        alpha: Sequence[float] | torch.Tensor | None = None,
    ):
        super().__init__()
        self.gamma = gamma
        self.alpha_mode = alpha_mode
        start = torch.ones(num_labels) if alpha is None else torch.as_tensor(alpha, dtype=torch.float32).clone()
        if start.shape != (num_labels,):
            raise ValueError(f"alpha has shape {tuple(start.shape)}, expected ({num_labels},)")
        if alpha_mode == "fixed":
            if alpha is None:
                raise ValueError("alpha_mode 'fixed' needs alpha")
            self.register_buffer("fixed_alpha", start)
        elif alpha_mode == "learned":
            self.log_alpha = nn.Parameter(start.log())
        elif alpha_mode == "none":
            if alpha is not None:
                raise ValueError("alpha given but alpha_mode is 'none'")
        else:
            raise ValueError(f"alpha_mode must be none, fixed or learned, not {alpha_mode!r}")

    def alpha(self) -> torch.Tensor | None:
        """The per-class alpha in use (None for alpha_mode 'none')."""
        if self.alpha_mode == "learned":
            return self.log_alpha.exp()
        if self.alpha_mode == "fixed":
            return self.fixed_alpha
        return None

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, labels, gamma=self.gamma, alpha=self.alpha())


def _build_ce(num_labels: int, train: TrainSpec, label_counts: Sequence[int]) -> nn.Module:
    return CrossEntropyLoss()


def _build_focal(num_labels: int, train: TrainSpec, label_counts: Sequence[int]) -> nn.Module:
    f = train.focal
    if f.alpha == "inverse_freq":
        return FocalLoss(num_labels, gamma=f.gamma, alpha_mode="fixed", alpha=inverse_frequency_alpha(label_counts))
    return FocalLoss(num_labels, gamma=f.gamma, alpha_mode=f.alpha)


# Name -> builder(num_labels, the cell's TrainSpec, training label counts) -> module whose forward(logits, labels)
# is a scalar. A loss reads its own settings group (train.focal); a new one adds its group and METHODS entry in spec.
LOSSES: dict[str, Callable[[int, TrainSpec, Sequence[int]], nn.Module]] = {
    "ce": _build_ce,
    "focal": _build_focal,
}


def build_loss(name: Loss, num_labels: int, train: TrainSpec | None = None, label_counts: Sequence[int] = ()) -> nn.Module:
    """The loss module called `name` (a key of LOSSES) with the settings of `train` (default: TrainSpec())."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    counts = list(label_counts) or [1] * num_labels
    return LOSSES[name](num_labels, train or TrainSpec(), counts)
