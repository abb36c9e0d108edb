"""Losses: focal reduces to cross-entropy, ignored positions never count, extremes stay finite."""

from __future__ import annotations

import math
from typing import get_args

import pydantic
import pytest
import torch
import torch.nn.functional as F

from ablate.losses import LOSSES, FocalLoss, build_loss, cross_entropy, focal_loss, inverse_frequency_alpha
from ablate.spec import IGNORE_INDEX, Loss, TrainSpec


def _train(**focal) -> TrainSpec:
    return TrainSpec.model_validate({"focal": focal})

NUM_LABELS = 5


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 7, NUM_LABELS, generator=g) * 3
    labels = torch.randint(0, NUM_LABELS, (3, 7), generator=g)
    labels[0, :2] = IGNORE_INDEX  # [CLS] and a non-first sub-token
    labels[2, 4:] = IGNORE_INDEX  # padding
    return logits, labels


def _all_losses() -> list[torch.nn.Module]:
    alpha = (0.5, 1.0, 2.0, 3.0, 0.25)
    return [
        build_loss("ce", NUM_LABELS),
        build_loss("focal", NUM_LABELS, _train(alpha="none")),
        build_loss("focal", NUM_LABELS, _train(alpha="inverse_freq"), [10, 5, 1, 2, 40]),
        build_loss("focal", NUM_LABELS, _train(alpha="learned")),
        FocalLoss(NUM_LABELS, alpha_mode="fixed", alpha=alpha),
        FocalLoss(NUM_LABELS, alpha_mode="learned", alpha=alpha),
    ]


def test_every_loss_name_has_a_table_entry():
    assert set(get_args(Loss)) == set(LOSSES)


def test_cross_entropy_matches_torch_with_ignore_index():
    logits, labels = _batch()
    expected = F.cross_entropy(logits.reshape(-1, NUM_LABELS), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    assert torch.allclose(cross_entropy(logits, labels), expected)


def test_focal_with_gamma_0_and_no_alpha_is_cross_entropy():
    logits, labels = _batch(1)
    assert torch.allclose(focal_loss(logits, labels, gamma=0.0), cross_entropy(logits, labels), atol=1e-6)
    module = build_loss("focal", NUM_LABELS, _train(gamma=0.0, alpha="none"))
    assert torch.allclose(module(logits, labels), cross_entropy(logits, labels), atol=1e-6)


def test_focal_matches_the_formula_by_hand():
    probs = torch.tensor([0.7, 0.2, 0.1])
    logits = probs.log().reshape(1, 1, 3)
    labels = torch.tensor([[0]])
    assert focal_loss(logits, labels, gamma=2.0).item() == pytest.approx(-(0.3**2) * math.log(0.7), rel=1e-5)
    alpha = torch.tensor([0.25, 1.0, 1.0])
    got = focal_loss(logits, labels, gamma=2.0, alpha=alpha).item()
    assert got == pytest.approx(-0.25 * 0.3**2 * math.log(0.7), rel=1e-5)


@pytest.mark.parametrize("index", range(4), ids=["ce", "focal", "focal-fixed", "focal-learned"])
def test_ignored_positions_never_count(index):
    loss_fn = _all_losses()[index]
    logits, labels = _batch(2)
    ignored = labels == IGNORE_INDEX

    def loss_and_grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.clone().requires_grad_(True)
        loss = loss_fn(x, labels)
        loss.backward()
        return loss.detach(), x.grad

    loss_a, grad_a = loss_and_grad(logits)
    changed = logits.clone()
    changed[ignored] = torch.randn(int(ignored.sum()), NUM_LABELS) * 1e4
    changed[0, 0, 0] = float("inf")  # even a non-finite logit there is never read
    loss_b, grad_b = loss_and_grad(changed)
    assert torch.equal(loss_a, loss_b)
    assert torch.equal(grad_a, grad_b)
    assert torch.count_nonzero(grad_a[ignored]) == 0
    assert torch.count_nonzero(grad_a[~ignored]) > 0


def test_mean_is_over_counted_positions_only():
    logits, labels = _batch(3)
    per_token = F.cross_entropy(logits.reshape(-1, NUM_LABELS), labels.reshape(-1).clamp_min(0), reduction="none")
    counted = labels.reshape(-1) != IGNORE_INDEX
    assert torch.allclose(cross_entropy(logits, labels), per_token[counted].mean())


@pytest.mark.parametrize("index", range(4), ids=["ce", "focal", "focal-fixed", "focal-learned"])
def test_all_positions_ignored_gives_zero_and_backpropagates(index):
    logits = torch.randn(2, 3, NUM_LABELS, requires_grad=True)
    labels = torch.full((2, 3), IGNORE_INDEX)
    loss = _all_losses()[index](logits, labels)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(logits.grad) == 0


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_stable_at_extreme_logits(gamma):
    # Confidently right, confidently wrong, and a tie at +-1e4: loss and gradients finite.
    logits = torch.tensor([[[1e4, -1e4, 0.0], [1e4, -1e4, 0.0], [1e4, 1e4, -1e4]]], requires_grad=True)
    labels = torch.tensor([[0, 1, 1]])
    loss = focal_loss(logits, labels, gamma=gamma, alpha=torch.tensor([1.0, 2.0, 3.0]))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    # Confidently wrong costs about the logit gap (2e4) x alpha 2; the others nearly nothing.
    assert loss.item() == pytest.approx((2 * 2e4 + 2 * math.log(2) * 0.5**gamma) / 3, rel=1e-4)


def test_focal_is_below_cross_entropy_when_confident_and_correct():
    logits = torch.tensor([[[4.0, 0.0, 0.0], [0.0, 5.0, 1.0]]])
    labels = torch.tensor([[0, 1]])
    ce = cross_entropy(logits, labels).item()
    fl = focal_loss(logits, labels, gamma=2.0).item()
    assert 0 < fl < 0.01 * ce  # (1 - p_t)^2 with p_t ~ 0.96-0.98


def test_fixed_alpha_weights_each_class():
    logits, labels = _batch(4)
    alpha = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    weighted = focal_loss(logits, labels, gamma=2.0, alpha=alpha)
    only_class_1 = torch.where(labels == 1, labels, torch.full_like(labels, IGNORE_INDEX))
    assert (labels == 1).any()
    assert torch.allclose(
        focal_loss(logits, only_class_1, gamma=2.0, alpha=alpha), 2.0 * focal_loss(logits, only_class_1, gamma=2.0)
    )
    assert not torch.allclose(weighted, focal_loss(logits, labels, gamma=2.0))


def test_inverse_frequency_alpha():
    alpha = inverse_frequency_alpha([90, 10])
    assert torch.allclose(alpha, torch.tensor([100 / (2 * 90), 100 / (2 * 10)]))
    assert torch.isfinite(inverse_frequency_alpha([5, 0, 5])).all()


def test_learned_alpha_starts_at_one_gets_a_gradient_and_stays_positive():
    logits, labels = _batch(5)
    loss_fn = FocalLoss(NUM_LABELS, gamma=2.0, alpha_mode="learned")
    assert [name for name, _ in loss_fn.named_parameters()] == ["log_alpha"]
    assert torch.allclose(loss_fn(logits, labels), focal_loss(logits, labels, gamma=2.0))
    loss_fn(logits, labels).backward()
    grad = loss_fn.log_alpha.grad
    present = torch.bincount(labels[labels != IGNORE_INDEX], minlength=NUM_LABELS) > 0
    assert (grad[present] != 0).all() and (grad[~present] == 0).all()
    optimizer = torch.optim.SGD(loss_fn.parameters(), lr=20.0)  # a step that would make a raw alpha negative
    optimizer.step()
    assert (loss_fn.alpha() > 0).all()
    assert not torch.allclose(loss_fn.alpha(), torch.ones(NUM_LABELS))


def test_fixed_alpha_is_not_a_parameter():
    loss_fn = FocalLoss(NUM_LABELS, alpha_mode="fixed", alpha=[1.0] * NUM_LABELS)
    assert list(loss_fn.parameters()) == []
    assert "fixed_alpha" in loss_fn.state_dict()


def test_bad_settings_are_rejected():
    with pytest.raises(pydantic.ValidationError):
        _train(alpha="fixed")
    with pytest.raises(pydantic.ValidationError):
        _train(gamma=-1.0)
    with pytest.raises(ValueError):
        FocalLoss(NUM_LABELS, alpha_mode="fixed")
    with pytest.raises(ValueError):
        FocalLoss(NUM_LABELS, alpha_mode="learned", alpha=[1.0, 2.0])
    with pytest.raises(ValueError):
        build_loss("dice", NUM_LABELS)  # type: ignore[arg-type]


def test_inverse_frequency_focal_weighs_rare_labels_up():
    loss_fn = build_loss("focal", NUM_LABELS, _train(alpha="inverse_freq"), [100, 10, 1, 1, 1])
    alpha = loss_fn.alpha()
    assert alpha[2] > alpha[1] > alpha[0] and list(loss_fn.parameters()) == []
