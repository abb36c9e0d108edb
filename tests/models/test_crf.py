"""CRF: nll and Viterbi against brute-force enumeration of every tag path, BIO constraints, masks, bf16."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from ablate.models.crf import CRF, allowed_transitions, constrained_decode

BIO = ["O", "B-A", "I-A", "B-B", "I-B"]


def _valid_bio(tags: list[str]) -> bool:
    """Plain-string IOB2 check, independent of allowed_transitions: I-X only right after B-X or I-X."""
    prev = "O"
    for tag in tags:
        if tag[:2] in ("I-", "I_") and not (prev[0] in "BI" and prev[1:] == tag[1:]):
            return False
        prev = tag
    return True


def _masks(gen: torch.Generator, batch: int, seq_len: int) -> torch.Tensor:
    """Rows with 1-5 True positions: padding only, [CLS] + padding, and scattered (non-contiguous) sub-tokens."""
    mask = torch.zeros(batch, seq_len, dtype=torch.bool)
    for row in range(batch):
        n = int(torch.randint(1, 6, (1,), generator=gen))
        if row % 3 == 0:
            mask[row, :n] = True
        elif row % 3 == 1:
            mask[row, 1 : n + 1] = True
        else:
            mask[row, torch.randperm(seq_len, generator=gen)[:n]] = True
    return mask


def _random_crf(num_tags: int, constraints=None, seed: int = 0) -> CRF:
    crf = CRF(num_tags, constraints)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # far from the small init, so transitions matter in the comparison
        for p in (crf.start_transitions, crf.transitions, crf.end_transitions):
            p.copy_(torch.randn(p.shape, generator=gen))
    return crf


def _paths(num_tags: int, n: int, constraints):
    """Every tag path of length n (only the allowed ones when constrained)."""
    for path in itertools.product(range(num_tags), repeat=n):
        if constraints is None:
            yield path
            continue
        start, trans, end = constraints
        if start[path[0]] and end[path[-1]] and all(trans[a, b] for a, b in zip(path, path[1:])):
            yield path


def _score(em: torch.Tensor, path, start, trans, end) -> float:
    return float(start[path[0]] + sum(em[i, t] for i, t in enumerate(path)) + end[path[-1]]
                 + sum(trans[a, b] for a, b in zip(path, path[1:])))


def _brute(em_row: torch.Tensor, mask_row: torch.Tensor, params, constraints):
    """(log Z, {path: score}) over the True positions of one row, in float64."""
    em = em_row[mask_row].double()
    scores = {p: _score(em, p, *params) for p in _paths(em.shape[-1], len(em), constraints)}
    top = max(scores.values())
    return top + math.log(sum(math.exp(s - top) for s in scores.values())), scores


def _params(crf: CRF):
    return [p.detach().double() for p in (crf.start_transitions, crf.transitions, crf.end_transitions)]


CASES = [(3, None), (4, None), (5, None), (3, "bio"), (5, "bio")]


@pytest.mark.parametrize("num_tags,constrained", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_nll_and_decode_equal_brute_force(num_tags, constrained, seed):
    constraints = allowed_transitions(BIO[:num_tags]) if constrained else None
    crf = _random_crf(num_tags, constraints, seed)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    batch, seq_len = 6, 7
    emissions = torch.randn(batch, seq_len, num_tags, generator=gen)
    mask = _masks(gen, batch, seq_len)
    tags = torch.full((batch, seq_len), -100)
    expected_nll, expected_best = [], []
    for row in range(batch):
        log_z, scores = _brute(emissions[row], mask[row], _params(crf), constraints)
        gold = rng.choice(sorted(scores))  # a valid path when constrained
        tags[row, mask[row]] = torch.tensor(gold)
        expected_nll.append(log_z - scores[gold])
        expected_best.append(max(scores, key=scores.get))

    nll = crf.nll(emissions, tags, mask)
    assert nll.shape == (batch,) and nll.dtype == torch.float32
    assert torch.allclose(nll.double(), torch.tensor(expected_nll, dtype=torch.float64), rtol=1e-4, atol=1e-4)
    decoded = crf.decode(emissions, mask)
    for row in range(batch):
        assert tuple(decoded[row, mask[row]].tolist()) == expected_best[row]
        assert (decoded[row, ~mask[row]] == 0).all()


def test_scattered_mask_equals_the_same_positions_packed_left():
    """Long rows: the chain visits the True positions in order, whatever lies between them."""
    crf = _random_crf(len(BIO), allowed_transitions(BIO))
    gen = torch.Generator().manual_seed(0)
    emissions = torch.randn(8, 512, len(BIO), generator=gen)
    mask = torch.rand(8, 512, generator=gen) < 0.5
    tags = torch.where(mask, 0, -100)
    lengths = mask.sum(dim=1)
    packed = torch.zeros_like(emissions)
    packed_mask = torch.arange(512) < lengths[:, None]
    packed[packed_mask] = emissions[mask]
    assert torch.allclose(crf.nll(emissions, tags, mask), crf.nll(packed, torch.zeros_like(tags), packed_mask))
    assert torch.equal(crf.decode(emissions, mask)[mask], crf.decode(packed, packed_mask)[packed_mask])
    noise = torch.where(mask[:, :, None], emissions, 100 * torch.randn(emissions.shape, generator=gen))
    assert torch.equal(crf.nll(noise, tags, mask), crf.nll(emissions, tags, mask))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constrained_decode_equals_brute_force_over_log_softmax(seed):
    constraints = allowed_transitions(BIO)
    gen = torch.Generator().manual_seed(seed)
    emissions = 3 * torch.randn(6, 7, len(BIO), generator=gen)
    mask = _masks(gen, 6, 7)
    zeros = [torch.zeros(len(BIO)), torch.zeros(len(BIO), len(BIO)), torch.zeros(len(BIO))]
    decoded = constrained_decode(emissions, mask, constraints)
    for row in range(6):
        _, scores = _brute(torch.log_softmax(emissions[row], -1), mask[row], zeros, constraints)
        assert tuple(decoded[row, mask[row]].tolist()) == max(scores, key=scores.get)


@pytest.mark.parametrize("labels", [BIO, ["O", "B_disease", "I_disease", "B_drug", "I_drug", "B_x", "I_x"]])
def test_constrained_decoding_never_emits_invalid_bio(labels):
    constraints = allowed_transitions(labels)
    crf = _random_crf(len(labels), constraints)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        # Emissions that favour I- tags strongly, so an unconstrained decoder would break BIO often.
        emissions = 4 * torch.randn(4, 12, len(labels), generator=gen)
        mask = torch.rand(4, 12, generator=gen) < 0.7
        for decoded in (crf.decode(emissions, mask), constrained_decode(emissions, mask, constraints)):
            for row in range(4):
                assert _valid_bio([labels[i] for i in decoded[row, mask[row]].tolist()])


def test_unconstrained_decoding_does_break_bio():
    """The check above can fail: without constraints the same emissions do give invalid BIO."""
    gen = torch.Generator().manual_seed(0)
    emissions = 4 * torch.randn(50, 12, len(BIO), generator=gen)
    decoded = CRF(len(BIO)).decode(emissions, torch.ones(50, 12, dtype=torch.bool))
    assert not all(_valid_bio([BIO[i] for i in row]) for row in decoded.tolist())


def test_allowed_transitions_rules():
    start, trans, end = allowed_transitions(["O", "B-A", "I-A", "B-B", "I-B", "S-A"])
    assert start.tolist() == [True, True, False, True, False, True]
    assert end.all()
    i_a, i_b = 2, 4
    assert trans[:, i_a].tolist() == [False, True, True, False, False, True]  # O, B-B, I-B -> I-A forbidden
    assert trans[:, i_b].tolist() == [False, False, False, True, True, True]  # unknown S-A: no constraint
    assert trans[:, [0, 1, 3, 5]].all()  # O, B-X and unknown tags may follow anything


def test_forbidden_gold_transition_gives_huge_nll():
    crf = CRF(len(BIO), allowed_transitions(BIO))
    emissions = torch.randn(3, 3, len(BIO))
    mask = torch.ones(3, 3, dtype=torch.bool)
    tags = torch.tensor([[0, 2, 2], [1, 4, 0], [1, 2, 0]])  # O -> I-A, B-A -> I-B, and a valid one
    nll = crf.nll(emissions, tags, mask)
    assert torch.isfinite(nll).all()
    assert (nll[:2] > 1e3).all() and nll[2] < 50


def test_gradients_finite_and_training_lowers_nll():
    torch.manual_seed(0)
    crf = CRF(len(BIO), allowed_transitions(BIO))
    emissions = torch.randn(4, 10, len(BIO), requires_grad=True)
    mask = torch.rand(4, 10) < 0.8
    mask[3] = False  # an empty row too
    tags = torch.full((4, 10), -100)  # ignore labels off the mask
    gold = torch.tensor([1, 2, 2, 0, 3, 4, 0, 1, 2, 0])  # valid BIO, and so is every prefix of it
    for row in range(4):
        tags[row, mask[row]] = gold[: int(mask[row].sum())]
    before = crf.nll(emissions, tags, mask)
    before.sum().backward()
    for grad in (emissions.grad, crf.start_transitions.grad, crf.transitions.grad, crf.end_transitions.grad):
        assert torch.isfinite(grad).all()
    assert before[3] == 0 and (before[:3] < 1e3).all()

    # Plain gradient descent: torch.optim's first optimizer imports torch._dynamo (~2 s on this machine).
    for _ in range(30):
        crf.zero_grad()
        crf.nll(emissions.detach(), tags, mask).sum().backward()
        with torch.no_grad():
            for p in crf.parameters():
                p -= 0.1 * p.grad
    after = crf.nll(emissions.detach(), tags, mask)
    assert after[:3].sum() < 0.7 * before[:3].sum()


def test_bf16_under_autocast_matches_fp32():
    torch.manual_seed(0)
    crf = _random_crf(len(BIO), allowed_transitions(BIO))
    emissions = (5 * torch.randn(2, 300, len(BIO))).bfloat16()
    mask = torch.rand(2, 300) < 0.6
    tags = torch.zeros(2, 300, dtype=torch.long)  # all O: valid
    reference = crf.nll(emissions.float(), tags, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll = crf.nll(emissions, tags, mask)
        decoded = crf.decode(emissions, mask)
        plain = constrained_decode(emissions, mask, allowed_transitions(BIO))
    assert nll.dtype == torch.float32
    assert torch.allclose(nll, reference, rtol=1e-5)
    assert torch.equal(decoded, crf.decode(emissions.float(), mask))
    assert torch.equal(plain, constrained_decode(emissions.float(), mask, allowed_transitions(BIO)))


def test_empty_rows_give_zero_nll_and_zero_tags():
    crf = _random_crf(3)
    emissions = torch.randn(3, 5, 3)
    mask = torch.tensor([[False] * 5, [True, False, True, False, False], [False] * 5])
    tags = torch.full((3, 5), -100)
    tags[1, [0, 2]] = torch.tensor([1, 2])
    nll = crf.nll(emissions, tags, mask)
    assert nll[0] == 0 and nll[2] == 0 and nll[1] > 0
    decoded = crf.decode(emissions, mask)
    assert (decoded[[0, 2]] == 0).all()
    # A batch with no True position at all.
    none = torch.zeros(2, 5, dtype=torch.bool)
    assert (crf.nll(emissions[:2], tags[:2], none) == 0).all()
    assert (crf.decode(emissions[:2], none) == 0).all()
    assert (constrained_decode(emissions[:2], none, allowed_transitions(["O", "B-A", "I-A"])) == 0).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    crf = _random_crf(len(BIO), allowed_transitions(BIO))
    emissions = torch.randn(4, 20, len(BIO))
    mask = torch.rand(4, 20) < 0.7
    tags = torch.zeros(4, 20, dtype=torch.long)
    expected_nll, expected_tags = crf.nll(emissions, tags, mask), crf.decode(emissions, mask)
    crf.to("cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        nll = crf.nll(emissions.cuda(), tags.cuda(), mask.cuda())
    assert nll.dtype == torch.float32
    assert torch.allclose(nll.cpu(), expected_nll, rtol=1e-4, atol=1e-4)
    assert torch.equal(crf.decode(emissions.cuda(), mask.cuda()).cpu(), expected_tags)
    plain = constrained_decode(emissions.cuda(), mask.cuda(), allowed_transitions(BIO)).cpu()
    assert torch.equal(plain, constrained_decode(emissions, mask, allowed_transitions(BIO)))


def test_a_chain_that_starts_mid_sentence_may_open_with_i_and_bad_gold_reads_as_b():
    from ablate.models.crf import repair_gold

    labels = ["O", "B-X", "I-X"]
    cons = allowed_transitions(labels)
    crf = CRF(3, cons)
    em = torch.tensor([[[0.0, 0.0, 5.0], [0.0, 0.0, 5.0]]])
    mask = torch.tensor([[True, True]])
    free = torch.tensor([True])
    assert crf.decode(em, mask, free).tolist() == [[2, 2]]  # the entity began in the window before
    assert crf.decode(em, mask).tolist() == [[1, 2]]  # a sentence's start never opens with I-X
    assert crf.nll(em, torch.tensor([[2, 2]]), mask, free).item() < 100
    gold = repair_gold(torch.tensor([[0, 2, 2, -100]]), torch.tensor([[True, True, True, False]]), cons,
                       torch.tensor([0, 1, 1]))
    assert gold.tolist() == [[0, 1, 2, -100]]  # O I-X I-X (corpus noise) -> O B-X I-X, as conlleval reads it
