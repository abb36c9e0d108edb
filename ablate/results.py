"""What one training run returns: the per-epoch history and the final numbers, in the one metric vocabulary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RunResult:
    """history[k] holds epoch k+1's metrics (`train/loss`, `dev/macro_f1`, `epoch_seconds`, ...);
    `final` holds dev and test at the best epoch plus `params/*`, `best_epoch` and mean speed."""

    history: list[dict[str, float]]
    final: dict[str, float]
    best_epoch: int
    outputs: Path | None = None              # predictions/, per_type.json, model/ (if saved)
    settings: dict[str, object] = field(default_factory=dict)  # what actually ran (batch after OOM, device, dtype)
