"""`ablate train`: one cell from command-line flags, without MLflow, printing a per-epoch table."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import yaml

from ablate.data.stats import parse_source
from ablate.errors import UserError
from ablate.spec.problems import StudyError


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
    if arg.startswith(("./", "../", "~")):  # a folder of the user's: against the working directory, not the temp study
        return {"pretrained": os.path.abspath(Path(arg).expanduser())}
    return {"pretrained": arg}


# Study paths that `train_one` fills from a flag (longest first): problems there name the flag, not the YAML.
_FLAGS = [("grid.finetune", "--finetune"), ("grid.loss", "--loss"), ("grid.lr", "--lr"), ("grid.epochs", "--epochs"),
          ("grid.seed", "--seed"), ("grid.batch_size", "--batch-size"), ("data.max_length", "--max-length"),
          ("data.train", "--train"), ("data.dev", "--dev"), ("data.test", "--test"), ("data", "--train/--dev/--test"),
          ("backbones", "--backbone")]


def _flag_problem(problem: str, study_path: Path, overrides: list[str]) -> str:
    """`/tmp/x/train.yaml:20: grid.finetune[0]: 'half' is not ...` -> `--finetune: 'half' is not ...`."""
    rest = problem[len(str(study_path)):] if problem.startswith(str(study_path)) else problem
    rest = re.sub(r"^:\d+(?::\d+)?: ", "", rest).removeprefix(": ")
    for item in overrides:  # `--set KEY=V: msg` or `a.b (--set KEY=V): msg`: the user's own words
        if rest.startswith(f"--set {item}: "):
            return rest
        m = re.match(r"^[^ ]+ \(--set " + re.escape(item) + r"\): ", rest)
        if m:
            return f"--set {item}: " + rest[m.end():]
    loc, sep, msg = rest.partition(": ")
    for prefix, flag in _FLAGS:
        if sep and (loc == prefix or loc.startswith((prefix + "[", prefix + "."))):
            return f"{flag}: {msg}"
    return rest


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
        try:
            [spec] = expand(load_study(path, overrides))
        except StudyError as e:  # name the flags; the temporary YAML is no file of the user's
            problems = [_flag_problem(p, path, overrides) for p in e.problems]
            if len(problems) == 1:
                raise UserError(problems[0]) from None
            raise UserError("\n".join([f"invalid options ({len(problems)} problems)", *("  " + p for p in problems)])) from None
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
