"""Linear-chain CRF for token classification, with optional BIO (IOB2) transition constraints.

Conventions: emissions are (batch, seq, num_tags) of any float dtype and are cast to fp32 with autocast
off, so log-sum-exp over long sequences never runs in bf16. `mask` (batch, seq) bool may be
non-contiguous (first sub-tokens only): the chain runs over its True positions, in order. A forbidden
transition scores FORBIDDEN (finite, so gradients stay finite), so no path through one has mass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ablate.schemes import IOB2, Scheme

FORBIDDEN = -1e4  # added to forbidden transition scores; exp(-1e4) is 0 in fp32, unlike -inf it keeps grads finite

Constraints = tuple[Tensor, Tensor, Tensor]  # (start (L,), trans (L, L) [from, to], end (L,)), True = allowed


def _parse(tag: str) -> tuple[str | None, str | None]:
    """('O', None), ('B', type), ('I', type), or (None, None) for a tag outside BIO."""
    if tag == "O":
        return "O", None
    if len(tag) > 2 and tag[0] in "BI" and tag[1] in "-_":
        return tag[0], tag[2:]
    return None, None


def allowed_transitions(labels: list[str], scheme: Scheme = IOB2) -> Constraints:
    """The scheme's constraints. IOB2: I-X may follow only B-X or I-X (or a tag outside BIO), never the start.
    IOB1: B-X may follow only B-X or I-X. IOBES / BILOU / BMES: an entity is S-X, or B-X I-X* E-X (roles as
    `Scheme.parse` gives them): after B-X or I-X only I-X or E-X; elsewhere only O, B-* or S-*; the start
    takes O, B or S; any tag may end (a window can stop inside an entity).

    Returns (start (L,), trans (L, L) indexed [from, to], end (L,)) bool tensors, True = allowed.
    """
    n = len(labels)
    if scheme.name == "IOB2":
        parsed = [_parse(tag) for tag in labels]
        start = torch.tensor([prefix != "I" for prefix, _ in parsed], dtype=torch.bool)
        trans = torch.ones(n, n, dtype=torch.bool)
        for j, (to_prefix, to_type) in enumerate(parsed):
            if to_prefix != "I":
                continue
            for i, (from_prefix, from_type) in enumerate(parsed):
                if from_prefix == "O" or (from_prefix in ("B", "I") and from_type != to_type):
                    trans[i, j] = False
        return start, trans, torch.ones(n, dtype=torch.bool)
    roles = [scheme.parse(tag) or ("?", "") for tag in labels]
    trans = torch.ones(n, n, dtype=torch.bool)
    if scheme.name == "IOB1":
        for j, (r, t) in enumerate(roles):
            if r == "B":
                for i, (fr, ft) in enumerate(roles):
                    trans[i, j] = fr in ("B", "I") and ft == t or fr == "?"
        return torch.tensor([r != "B" for r, _ in roles]), trans, torch.ones(n, dtype=torch.bool)
    for i, (fr, ft) in enumerate(roles):
        for j, (r, t) in enumerate(roles):
            if fr == "?" or r == "?":
                continue
            trans[i, j] = (r in ("I", "E") and t == ft) if fr in ("B", "I") else r in ("O", "B", "S")
    start = torch.tensor([r in ("O", "B", "S", "?") for r, _ in roles])
    # Any tag may end a chain: a window of a long sentence can stop inside an entity (the stitched and repaired
    # sentence closes it); the transitions keep every entity well-formed inside a window.
    return start, trans, torch.ones(n, dtype=torch.bool)


def begin_ids(labels: list[str], scheme: Scheme = IOB2) -> Tensor:
    """Each tag id -> the tag that opens an entity where it cannot continue one (I-X -> B-X; in the strict schemes
    also E-X -> S-X); the others map to themselves. `repair_gold` reads an impossible gold tag this way."""
    index = {t: i for i, t in enumerate(labels)}
    out = []
    for i, tag in enumerate(labels):
        parsed = scheme.parse(tag)
        opener = None
        if parsed and scheme.name != "IOB1":
            opener = {"I": "B", "E": "S"}.get(parsed[0]) if scheme.strict else ("B" if parsed[0] == "I" else None)
        out.append(index.get(scheme.tag(opener, parsed[1]), i) if opener else i)
    return torch.tensor(out)


def _penalties(num_tags: int, constraints: Constraints | None) -> list[Tensor]:
    """0 where allowed, FORBIDDEN where not, as fp32 (start, trans, end)."""
    shapes = [(num_tags,), (num_tags, num_tags), (num_tags,)]
    if constraints is None:
        return [torch.zeros(shape) for shape in shapes]
    for allowed, shape in zip(constraints, shapes):
        if tuple(allowed.shape) != shape:
            raise ValueError(f"constraint of shape {tuple(allowed.shape)}, expected {shape} for {num_tags} tags")
    return [torch.where(allowed.bool().cpu(), 0.0, FORBIDDEN) for allowed in constraints]


def _compact(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Where each row's True positions go once moved to the left, in order.

    Returns order (B, T) indices into the sequence (a permutation, True positions first), the compact
    mask (B, T) and the lengths (B,). The width stays T: cutting it to the longest row would need that
    length on the host, a sync per training step (sub-token masks keep nearly every position anyway).
    """
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices  # stable: keeps True positions in order
    lengths = mask.sum(dim=1)
    compact = torch.arange(mask.shape[1], device=mask.device) < lengths[:, None]
    return order, compact, lengths


def _gather(emissions: Tensor, order: Tensor) -> Tensor:
    """Emissions (B, T, L) -> compacted fp32 emissions (B, T', L)."""
    index = order[:, :, None].expand(-1, -1, emissions.shape[-1])
    return emissions.float().gather(1, index)


def _viterbi(em: Tensor, mask: Tensor, start: Tensor, trans: Tensor, end: Tensor) -> Tensor:
    """Best path (B, T') over compacted fp32 emissions; entries past each row's length are arbitrary."""
    num_tags = em.shape[-1]
    identity = torch.arange(num_tags, device=em.device).expand(em.shape[0], num_tags)
    score = start + em[:, 0]  # (B, L)
    history = []
    for t in range(1, em.shape[1]):
        best, prev = (score[:, :, None] + trans + em[:, t, None, :]).max(dim=1)  # (B, L) over "from"
        step = mask[:, t, None]
        score = torch.where(step, best, score)
        history.append(torch.where(step, prev, identity))  # past the end: stay on the same tag
    tag = (score + end).argmax(dim=1)
    path = [tag]
    for prev in reversed(history):
        tag = prev.gather(1, tag[:, None]).squeeze(1)
        path.append(tag)
    return torch.stack(path[::-1], dim=1)


def _scatter(path: Tensor, order: Tensor, compact: Tensor, seq_len: int) -> Tensor:
    """Compact path (B, T') back to (B, seq_len) at the mask's True positions; 0 elsewhere."""
    out = torch.zeros(path.shape[0], seq_len, dtype=torch.long, device=path.device)
    return out.scatter_(1, order, torch.where(compact, path, 0))


class CRF(torch.nn.Module):
    """Linear-chain CRF over `num_tags` tags; `constraints` (from `allowed_transitions`) bind in nll and decode."""

    def __init__(self, num_tags: int, constraints: Constraints | None = None):
        super().__init__()
        self.num_tags = num_tags
        self.start_transitions = torch.nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.transitions = torch.nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))
        self.end_transitions = torch.nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        # Not persistent: constraints come from the label list at build time, so a checkpoint holds only
        # what was learned and loads into a CRF with or without them.
        for name, penalty in zip(("start_penalty", "trans_penalty", "end_penalty"), _penalties(num_tags, constraints)):
            self.register_buffer(name, penalty, persistent=False)

    def _scores(self, free_start: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(start, trans, end) scores with the constraints; `free_start` (B,) rows begin mid-sentence (a window
        after the first), where I-X may open the chain: their start is (B, L) without the start penalty."""
        start = self.start_transitions.float() + self.start_penalty
        if free_start is not None:
            start = torch.where(free_start[:, None], self.start_transitions.float(), start)
        return start, self.transitions.float() + self.trans_penalty, self.end_transitions.float() + self.end_penalty

    def nll(self, emissions: Tensor, tags: Tensor, mask: Tensor, free_start: Tensor | None = None) -> Tensor:
        """Negative log-likelihood per sequence (B,), fp32; a row with no True position has nll 0."""
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            order, compact, lengths = _compact(mask.bool())
            em = _gather(emissions, order)  # (B, T', L)
            gold = torch.where(compact, tags.gather(1, order), 0)  # masked-out tags (e.g. -100) -> 0
            start, trans, end = self._scores(free_start)
            return torch.where(lengths > 0, self._log_partition(em, compact, start, trans, end)
                               - self._gold_score(em, gold, compact, lengths, start, trans, end), 0.0)

    @staticmethod
    def _gold_score(em: Tensor, gold: Tensor, compact: Tensor, lengths: Tensor,
                    start: Tensor, trans: Tensor, end: Tensor) -> Tensor:
        emitted = em.gather(2, gold[:, :, None]).squeeze(2).masked_fill(~compact, 0.0).sum(dim=1)
        moved = trans[gold[:, :-1], gold[:, 1:]].masked_fill(~compact[:, 1:], 0.0).sum(dim=1)
        last = gold.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
        first = start.gather(-1, gold[:, 0:1]).squeeze(-1) if start.dim() == 2 else start[gold[:, 0]]
        return first + emitted + moved + end[last]

    @staticmethod
    def _log_partition(em: Tensor, compact: Tensor, start: Tensor, trans: Tensor, end: Tensor) -> Tensor:
        alpha = start + em[:, 0]  # (B, L): log-mass of all prefixes ending in each tag
        for t in range(1, em.shape[1]):
            step = torch.logsumexp(alpha[:, :, None] + trans + em[:, t, None, :], dim=1)  # (B, from, to) -> (B, to)
            alpha = torch.where(compact[:, t, None], step, alpha)
        return torch.logsumexp(alpha + end, dim=1)

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor, free_start: Tensor | None = None) -> Tensor:
        """Viterbi: best tag ids (B, T) at the True positions of mask, 0 elsewhere."""
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            order, compact, _ = _compact(mask.bool())
            path = _viterbi(_gather(emissions, order), compact, *self._scores(free_start))
            return _scatter(path, order, compact, emissions.shape[1])


@torch.no_grad()
def repair_gold(tags: Tensor, mask: Tensor, constraints: Constraints, begin: Tensor, free_start: Tensor | None = None) -> Tensor:
    """Gold tags with every I-X the constraints forbid (after O or another type, or opening a sentence) read as B-X,
    as conlleval reads it: real corpora carry a few such tags, and an impossible gold path has no likelihood.
    `begin` (L,) maps each tag id to its B- id (itself for others)."""
    order, compact, _ = _compact(mask.bool())
    gold = torch.where(compact, tags.gather(1, order), 0)
    start, trans, _ = (c.to(tags.device) for c in constraints)
    ok_first = start[gold[:, 0]] | (free_start if free_start is not None else False)
    ok = torch.cat([ok_first[:, None], trans[gold[:, :-1], gold[:, 1:]]], dim=1) | ~compact
    fixed = torch.where(ok, gold, begin.to(tags.device)[gold])  # one pass: B-X makes the next I-X valid again
    return tags.scatter(1, order, torch.where(compact, fixed, tags.gather(1, order)))


def constrained_decode(emissions: Tensor, mask: Tensor, constraints: Constraints, free_start: Tensor | None = None) -> Tensor:
    """BIO-constrained decoding for a head trained without a CRF: Viterbi over log_softmax(emissions),
    zero transition scores, forbidden transitions impossible. Same shapes as `CRF.decode`."""
    with torch.autocast(device_type=emissions.device.type, enabled=False):
        order, compact, _ = _compact(mask.bool())
        em = torch.log_softmax(_gather(emissions, order), dim=-1)
        start, trans, end = (p.to(emissions.device) for p in _penalties(emissions.shape[-1], constraints))
        if free_start is not None:
            start = torch.where(free_start[:, None], 0.0, start)
        return _scatter(_viterbi(em, compact, start, trans, end), order, compact, emissions.shape[1])
