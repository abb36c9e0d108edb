"""Injected faults, for tests of the failure policy only: `ABLATE_FAULT` wraps a cell's head so that its
loss fails the way a real run does (out of memory, NaN, an exception). The training loop knows nothing of it."""

from __future__ import annotations

import os

FAULT_ENV = "ABLATE_FAULT"


def fault_for(name: str, batch_size: int) -> str | None:
    """The injected fault for this cell, from ABLATE_FAULT.

    A comma-separated list of `KIND[@NAME-SUBSTRING]`; KIND is nan, error, or oom>N (out of
    memory while the batch is larger than N, so the halved-batch retry succeeds).
    """
    for item in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        kind, _, where = item.partition("@")
        if where and where not in name:
            continue
        if kind.startswith("oom>"):
            if batch_size > int(kind[4:]):
                return "oom"
            continue
        return kind
    return None


def with_fault(head, kind: str | None, batch_size: int):
    """`head` whose training loss fails as `kind` says: oom at the first batch, nan or error at the second."""
    if kind is None:
        return head
    calls = {"n": 0}
    loss = head.loss

    def faulty(output, batch):
        import torch

        i, calls["n"] = calls["n"], calls["n"] + 1
        if kind == "oom":
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected by {FAULT_ENV} at batch size {batch_size})")
        if kind == "error" and i == 1:
            raise RuntimeError(f"injected failure ({FAULT_ENV}=error)")
        out = loss(output, batch)
        return out * float("nan") if kind == "nan" and i == 1 else out

    head.loss = faulty  # an instance attribute: nn.Module's own methods and parameters stay as they are
    return head
