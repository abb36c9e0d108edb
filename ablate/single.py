"""`ablate train`: one cell from command-line flags, without MLflow, printing a per-epoch table."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from ablate.data.stats import parse_source


def _files(args: list[str]) -> list[dict]:
    out = []
    for a in args:
        path, genre = parse_source(a)
        out.append({"path": str(path.resolve()), **({"genre": genre} if genre else {})})
    return out


def _backbone(arg: str) -> dict:
    if arg.startswith("scratch:"):
        parts = arg.split(":")
        return {"scratch": parts[1], **({"shape": parts[2]} if len(parts) > 2 else {})}
    return {"pretrained": arg}


def train_one(train, dev, test, backbone, finetune, loss, lr, epochs, batch_size, seed, max_length, out: Path, overrides) -> int:
    """Validate the flags as a one-cell study (same checks as `ablate run`), train it, print the result."""
    from rich.console import Console

    from ablate.executor import run_one
    from ablate.grid import expand
    from ablate.spec import load_study

    study = {
        "name": "train",
        "data": {"root": str(Path.cwd()), "train": _files(train),
                 "dev": _files(dev) if dev else {"split": 0.2, "seed": 0},
                 "test": _files(test), "max_length": max_length},
        "backbones": {"model": _backbone(backbone)},
        "grid": {"finetune": [finetune], "loss": [loss], "lr": [lr], "epochs": [epochs], "seed": [seed], "batch_size": [batch_size]},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.yaml"
        path.write_text(yaml.safe_dump(study, allow_unicode=True), encoding="utf-8")
        [spec] = expand(load_study(path, overrides))
    console = Console()
    head = ["epoch", "train loss", "dev P", "dev R", "dev F1", "dev macro F1", "seconds", "tokens/s"]
    console.print(f"training {spec.backbone} ({backbone}) {finetune} {loss} lr {lr:g}, {epochs} epochs, batch {batch_size}")

    console.print("  ".join(head))

    def on_epoch(epoch: int, m: dict) -> None:
        row = [str(epoch), f"{m['train/loss']:.4f}", *(f"{100 * m[k]:.2f}" for k in ("dev/precision", "dev/recall", "dev/f1", "dev/macro_f1")),
               f"{m['epoch_seconds']:.1f}", f"{m['train_tokens_per_second']:.0f}"]
        console.print("  ".join(c.rjust(len(h)) for c, h in zip(row, head)))

    result = run_one(spec, out, on_epoch)
    f = result.final
    console.print(f"best epoch {result.best_epoch}: dev macro F1 {100 * f['dev/macro_f1']:.2f}; "
                  f"trainable params {int(f['params/trainable']):,} of {int(f['params/total']):,}")
    if "test/f1" in f:
        genres = sorted(k.split("/")[-1] for k in f if k.startswith("test/f1/") and "/type/" not in k)
        per = ", ".join(f"{g.upper()} {100 * f[f'test/f1/{g}']:.2f}" for g in genres)
        console.print(f"test: P {100 * f['test/precision']:.2f} R {100 * f['test/recall']:.2f} F1 {100 * f['test/f1']:.2f}; "
                      f"macro F1 {100 * f['test/macro_f1']:.2f} ({per})")
    console.print(f"predictions and per-type scores in {out}")
    return 0
