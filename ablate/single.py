"""`ablate train`: one cell from command-line flags, without MLflow, printing a per-epoch table.

The flags are validated as a one-cell study by the same checks as `ablate run` (spec.load.validate_raw),
built as a dict, never written to a file; each problem names the flag it came from.
"""

from __future__ import annotations

import os
from pathlib import Path

from ablate.data.stats import parse_source
from ablate.errors import UserError

# A problem's YAML path (longest prefix first) -> the flag that filled it.
_FLAGS: list[tuple[tuple, str]] = [
    (("train", "lr"), "--lr"), (("train", "epochs"), "--epochs"), (("train", "seed"), "--seed"),
    (("train", "batch_size"), "--batch-size"), (("grid", "finetune"), "--finetune"), (("grid", "loss"), "--loss"),
    (("data", "max_length"), "--max-length"), (("data", "train"), "--train"), (("data", "dev"), "--dev"),
    (("data", "test"), "--test"), (("data",), "--train/--dev/--test"), (("backbones",), "--backbone"),
]


def _files(args: list[str]) -> list[dict]:
    out = []
    for a in args:
        path, genre = parse_source(a)
        out.append({"path": os.path.abspath(path), **({"genre": genre} if genre else {})})
    return out


def _backbone(arg: str) -> dict:
    if arg.startswith("scratch:"):
        parts = arg.split(":")
        return {"scratch": parts[1], **({"shape": parts[2]} if len(parts) > 2 else {})}
    if arg.startswith(("./", "../", "~", "/")):  # a folder of the user's, against the working directory
        return {"pretrained": os.path.abspath(Path(arg).expanduser())}
    return {"pretrained": arg}


def flag_of(loc: tuple, set_locs: dict[tuple, str]) -> str:
    """The flag a problem at this YAML path came from: `--set ITEM` when an override set it."""
    if loc[:1] == ("--set",):
        return f"--set {loc[1]}"
    for s, item in set_locs.items():
        if loc[: len(s)] == s or s[: len(loc)] == loc:
            return f"--set {item}"
    for prefix, flag in _FLAGS:
        if loc[: len(prefix)] == prefix:
            return flag
    return ".".join(map(str, loc)) or "the options"


def cell_from_flags(train, dev, test, backbone, finetune, loss, lr, epochs, batch_size, seed, max_length, overrides):
    """The flags -> the one RunSpec they describe; every problem in one UserError, each naming its flag."""
    from ablate.grid import expand
    from ablate.spec.load import apply_overrides, validate_raw

    raw = {
        "name": "train",
        "data": {"root": str(Path.cwd()), "train": _files(train),
                 "dev": _files(dev) if dev else {"split": 0.2, "seed": 0}, "test": _files(test), "max_length": max_length},
        "backbones": {"model": _backbone(backbone)},
        "grid": {"finetune": [finetune], "loss": [loss]},
        "train": {"lr": lr, "epochs": epochs, "seed": seed, "batch_size": batch_size},
    }
    problems, set_locs = apply_overrides(raw, overrides)
    study, more = validate_raw(raw) if not problems else (None, [])
    problems += more
    if problems:
        lines = [f"{flag_of(loc, set_locs)}: {msg}" for loc, msg in problems]
        if len(lines) == 1:
            raise UserError(lines[0])
        raise UserError("\n".join([f"invalid options ({len(lines)} problems)", *("  " + p for p in lines)]))
    [spec] = expand(study)
    return spec


def train_one(train, dev, test, backbone, finetune, loss, lr, epochs, batch_size, seed, max_length, out: Path, overrides) -> int:
    """Validate the flags (same checks as `ablate run`), train the cell, print the result."""
    from rich.console import Console

    from ablate.executor import run_one

    spec = cell_from_flags(train, dev, test, backbone, finetune, loss, lr, epochs, batch_size, seed, max_length, overrides)
    console = Console()
    head = ["epoch", "train loss", "dev P", "dev R", "dev F1", "dev macro F1", "seconds", "tokens/s"]
    console.print(f"training {spec.backbone} ({backbone}) {finetune} {loss} lr {spec.train.lr:g}, {spec.train.epochs} epochs, "
                  f"batch {spec.train.batch_size}")
    console.print("  ".join(head))

    def on_epoch(epoch: int, m: dict) -> None:
        row = [str(epoch), f"{m['train/loss']:.4f}", *(f"{100 * m[k]:.2f}" for k in ("dev/precision", "dev/recall", "dev/f1", "dev/macro_f1")),
               f"{m['epoch_seconds']:.1f}", f"{m['train_tokens_per_second']:.0f}"]
        console.print("  ".join(c.rjust(len(h)) for c, h in zip(row, head)))

    result = run_one(spec, out, on_epoch)
    f = result.final
    if result.settings.get("warning"):
        console.print(f"[bold yellow]warning:[/] {result.settings['warning']}")
    console.print(f"best epoch {result.best_epoch}: dev macro F1 {100 * f['dev/macro_f1']:.2f}; "
                  f"trainable params {int(f['params/trainable']):,} of {int(f['params/total']):,}")
    if "test/f1" in f:
        genres = sorted(k.split("/")[-1] for k in f if k.startswith("test/f1/") and "/type/" not in k)
        per = ", ".join(f"{g.upper()} {100 * f[f'test/f1/{g}']:.2f}" for g in genres)
        console.print(f"test: P {100 * f['test/precision']:.2f} R {100 * f['test/recall']:.2f} F1 {100 * f['test/f1']:.2f}; "
                      f"macro F1 {100 * f['test/macro_f1']:.2f} ({per})")
    console.print(f"predictions and per-type scores in {out}")
    return 0
