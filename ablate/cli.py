"""The `ablate` command line: thin typer wrappers; heavy imports happen inside each command."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from ablate.errors import UserError

app = typer.Typer(
    help="Ablation studies for transformer token classification: a YAML study -> tracked runs -> a paper's tables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # typer's --install-completion / --show-completion
)
data_app = typer.Typer(help="Read, check, describe, generate and fetch corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")


class FinetuneChoice(str, Enum):  # the values of spec.Finetune (tests/test_cli.py checks they agree)
    full = "full"
    lora = "lora"


class LossChoice(str, Enum):  # the values of spec.Loss
    ce = "ce"
    focal = "focal"


class EnsembleChoice(str, Enum):  # the keys of report.ensemble.METHODS
    vote = "vote"
    entity = "entity"


class PrecisionChoice(str, Enum):  # ablate.predict.PRECISIONS
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"ablate {version('ablate')}")
        except PackageNotFoundError:
            from ablate import __version__

            typer.echo(f"ablate {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit.")) -> None:
    """Ablation studies for transformer token classification: a YAML study -> tracked runs -> a paper's tables."""


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2))


@app.command()
def score(
    files: List[str] = typer.Argument(None, help="GOLD PRED (2-column files) or one 3-column `char GOLD PRED` file."),
    genre: List[str] = typer.Option(None, "--genre", help="NAME=GOLD,PRED or NAME=FILE3, once per genre."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON with fractions in [0, 1]."),
) -> None:
    """Score predictions as the official ROCLING scorer (conlleval) does, per genre and macro."""
    from ablate.scoring import parse_genre_args, score_files
    from ablate.metrics import format_scores

    pairs = parse_genre_args(files or [], genre or [])
    result, notes = score_files(pairs)
    for n in notes:
        typer.echo(f"note: {n}", err=True)
    if as_json:
        _print_json(result.to_json())
    else:
        typer.echo(format_scores(result))


@data_app.command("check")
def data_check(
    paths: List[str] = typer.Argument(..., help="Files: .jsonl, or CoNLL `char TAG` as PATH[:GENRE]."),
    genre: Optional[str] = typer.Option(None, help="Genre for CoNLL files that name none."),
    unknown_to_o: bool = typer.Option(False, "--unknown-to-o", help="Repair unknown tags to O (reported) instead of failing."),
    scheme: str = typer.Option("auto", help="Tag scheme: auto (detected per file), BIO, IOB1, BIOES, BILOU, BMES; "
                               "a trailing _ for the `B_X` separator (BMES_)."),
    backbone: Optional[str] = typer.Option(None, help="A hub id or model folder: also say which share of each file's "
                                           "tokens its tokenizer maps to the unknown token."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Read and validate corpora; print each file's tag scheme, repairs and warnings. Exit 0 if readable, 2 on an error."""
    from ablate.data.stats import check, render_check

    result = check(paths, genre, "O" if unknown_to_o else "error", scheme)
    if backbone and result.files:
        _unknown_shares(result, paths, genre, backbone)
    if as_json:
        _print_json(result.to_json())
    else:
        typer.echo(render_check(result))
    if result.errors:
        raise typer.Exit(2)


def _unknown_shares(result, paths: list[str], genre: str | None, backbone: str) -> None:
    """Each readable file's share of tokens the backbone's tokenizer loses; above 5% a warning."""
    from transformers import AutoConfig

    from ablate.data.stats import load_source, parse_source
    from ablate.data.tags import Note
    from ablate.executor import UNK_WARNING
    from ablate.models.backbones import _check_local, _unavailable, load_tokenizer, unknown_share

    if backbone.startswith("scratch"):
        raise UserError("--backbone: a scratch backbone builds its vocabulary from the training split; name a hub id "
                        "or a model folder to check")
    _check_local(backbone)
    try:
        tokenizer = load_tokenizer(backbone, AutoConfig.from_pretrained(backbone).model_type)
    except OSError as e:
        raise _unavailable(backbone, str(e)) from None
    readable = {f["path"] for f in result.files}
    for arg in paths:
        path, g = parse_source(arg, genre)
        if str(path) not in readable:
            continue
        share = unknown_share(tokenizer, load_source(path, g)[0])
        next(f for f in result.files if f["path"] == str(path))["unk_share"] = share
        if share > UNK_WARNING:
            result.warnings.append(Note(str(path), 0, f"{100 * share:.1f}% of its tokens are {backbone}'s unknown "
                                                      "token: the model cannot read them"))


@data_app.command("stats")
def data_stats(
    paths: List[str] = typer.Argument(..., help="Files: .jsonl, or CoNLL `char TAG` as PATH[:GENRE]."),
    genre: Optional[str] = typer.Option(None, help="Genre for CoNLL files that name none."),
    scheme: str = typer.Option("auto", help="Tag scheme (as `data check`): auto, BIO, IOB1, BIOES, BILOU, BMES[_]."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Entities per genre and type (the paper's Table 2) and sentence lengths."""
    from ablate.data.stats import render_stats, stats

    st = stats(paths, genre, scheme)
    if as_json:
        _print_json(st)
    else:
        typer.echo(render_stats(st))


@data_app.command("demo")
def data_demo(
    out_dir: Path = typer.Argument(..., help="Folder to write the synthetic corpus into."),
    sentences: int = typer.Option(1200, min=30, help="Sentences in all (train/dev/test 70/15/15)."),
    seed: int = typer.Option(0),
    words: bool = typer.Option(False, "--words", help="Instead: an English-like word-level corpus, CoNLL "
                               "`word POS NER` with -DOCSTART- lines, tags in BIOES with `_` (B_disease)."),
) -> None:
    """Write the synthetic Traditional-Chinese healthcare NER corpus (the offline default), or a word-level one."""
    from ablate.data.stats import render_stats, stats

    if words:
        from ablate.data.demo_words import make_words_corpus

        paths = make_words_corpus(out_dir, sentences=sentences, seed=seed)
        typer.echo(f"wrote {len(paths)} files to {out_dir}")
        typer.echo(render_stats(stats([f"{paths['train.conll']}:med"])))
        return
    from ablate.data.demo import make_demo_corpus

    paths = make_demo_corpus(out_dir, sentences=sentences, seed=seed)
    typer.echo(f"wrote {len(paths)} files to {out_dir}")
    typer.echo(render_stats(stats([str(paths["train.jsonl"])])))


@data_app.command("fetch")
def data_fetch(
    corpus: str = typer.Argument(..., help="Corpus name: rocling."),
    dest: Path = typer.Argument(Path("data/rocling"), help="Folder to download into."),
    base_url: Optional[str] = typer.Option(None, help="Mirror of raw.githubusercontent.com (default: env ABLATE_ROCLING_BASE_URL or GitHub)."),
) -> None:
    """Download the public ROCLING files, check their SHA-256 and write a manifest."""
    from ablate.data.fetch import fetch_rocling, render_fetch

    if corpus != "rocling":
        raise UserError(f"unknown corpus {corpus!r}; known: rocling")
    kwargs = {"base_url": base_url} if base_url else {}
    typer.echo(render_fetch(fetch_rocling(dest, **kwargs)))



# ---- studies ---------------------------------------------------------------------------------------

STUDY_ARG = typer.Argument(..., help="A study YAML, e.g. studies/quickstart.yaml.")
SET_OPT = typer.Option(None, "--set", help="Override KEY=VALUE (dotted YAML path), e.g. --set train.epochs=2.")
URI_OPT = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow store (default: MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db).")
STORAGE_OPT = typer.Option(None, "--storage", envvar="ABLATE_STORAGE", help="Queue storage: postgresql://USER@HOST/DB (many machines), or a journal "
                           "file path (default: beside the MLflow store; on a shared NFSv3+ filesystem for several machines).")
HEARTBEAT_OPT = typer.Option(10.0, help="Seconds between a worker's heartbeats.")
GRACE_OPT = typer.Option(60.0, help="Seconds without a heartbeat before a cell is re-queued.")
ATTEMPTS_OPT = typer.Option(3, "--max-attempts", min=1, help="Trials per cell when workers are lost (kill -9, machine gone).")


def _place(study: Path, overrides, tracking_uri, storage, **kw):
    from ablate.scheduler.plan import resolve_place

    return resolve_place(study, list(overrides or []), tracking_uri, storage, **kw)


@app.command()
def plan(
    study: Path = STUDY_ARG,
    overrides: Optional[List[str]] = SET_OPT,
    tracking_uri: Optional[str] = URI_OPT,
    as_json: bool = typer.Option(False, "--json"),
    offline: bool = typer.Option(False, "--no-status", help="Do not read MLflow: every cell shows as pending."),
) -> None:
    """Every cell of the study: run_id, axis values, status (done / failed / pending)."""
    from ablate.scheduler.plan import plan as make_plan

    spec, cells = make_plan(_place(study, overrides, tracking_uri, None), read_mlflow=not offline)
    status = {"FINISHED": "done", "FAILED": "failed", "KILLED": "failed", "RUNNING": "running"}
    rows = [{"run_id": c.run_id, "name": c.name, "status": status.get(c.status, "pending"), **c.axes} for c in cells]
    summary = {k: sum(1 for r in rows if r["status"] == k) for k in ("done", "failed", "running", "pending")}
    if as_json:
        _print_json({"study": spec.name, "cells": rows, "summary": summary})
        return
    axes = list(spec.grid) + [a for a in (spec.search.space if getattr(spec, 'search', None) else {}) if a not in spec.grid]
    typer.echo(f"{spec.name}: {len(rows)} cells ({', '.join(f'{v} {k}' for k, v in summary.items())})")
    typer.echo("  ".join(["run_id".ljust(12), "status ".ljust(8), *axes]))
    for r in rows:
        typer.echo("  ".join([r["run_id"], r["status"].ljust(8), *(str(r.get(a)) for a in axes)]))


@app.command()
def run(
    study: Path = STUDY_ARG,
    overrides: Optional[List[str]] = SET_OPT,
    tracking_uri: Optional[str] = URI_OPT,
    storage: Optional[str] = STORAGE_OPT,
    workers: Optional[int] = typer.Option(None, min=1, help="Local workers (default: one per visible GPU, else 1)."),
    no_display: bool = typer.Option(False, "--no-display", help="Plain log lines instead of the live table."),
    heartbeat: float = HEARTBEAT_OPT,
    grace: float = GRACE_OPT,
    max_attempts: int = ATTEMPTS_OPT,
) -> None:
    """Plan, queue and train every cell not yet FINISHED in MLflow (a search: its trials); exit 0 only when all finished.

    Local workers join the queue beside any `ablate worker` started elsewhere on the same --storage.
    """
    from ablate.scheduler.local import run as run_study

    place = _place(study, overrides, tracking_uri, storage, heartbeat_seconds=heartbeat, grace_seconds=grace,
                   max_attempts=max_attempts)
    code = run_study(place, workers, display=not no_display and sys.stderr.isatty())
    raise typer.Exit(code)


@app.command()
def worker(
    study: Path = STUDY_ARG,
    overrides: Optional[List[str]] = SET_OPT,
    tracking_uri: Optional[str] = URI_OPT,
    storage: Optional[str] = STORAGE_OPT,
    gpus: Optional[str] = typer.Option(None, help="GPU ids for this machine, e.g. 0,1: one worker per GPU."),
    heartbeat: float = HEARTBEAT_OPT,
    grace: float = GRACE_OPT,
    max_attempts: int = ATTEMPTS_OPT,
    plan_first: bool = typer.Option(True, "--plan/--no-plan", help="Queue the cells MLflow has not finished before working."),
) -> None:
    """Join a study's queue from any machine and work until nothing is waiting or running (a search: until n_trials).

    Exit 0 when every cell this worker ran finished, 1 when one failed, 130 on Ctrl-C.
    """
    from ablate.scheduler.local import work_on_gpus, worker_exit
    from ablate.scheduler.worker import work

    place = _place(study, overrides, tracking_uri, storage, heartbeat_seconds=heartbeat, grace_seconds=grace,
                   max_attempts=max_attempts)
    ids = [g.strip() for g in (gpus or "").split(",") if g.strip()]
    if len(ids) > 1:
        raise typer.Exit(work_on_gpus(place, ids, plan_first))
    if ids:
        import os

        os.environ["CUDA_VISIBLE_DEVICES"] = ids[0]
    counts = work(place, gpu=ids[0] if ids else "", plan_first=plan_first)
    typer.echo(f"worker done: {counts}")
    raise typer.Exit(worker_exit(counts))


@app.command()
def status(
    study: Path = STUDY_ARG,
    overrides: Optional[List[str]] = SET_OPT,
    tracking_uri: Optional[str] = URI_OPT,
    storage: Optional[str] = STORAGE_OPT,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Cells by status, what each worker (host, pid, GPU) holds, and the failures with their cause."""
    from ablate.scheduler.plan import study_status

    st = study_status(_place(study, overrides, tracking_uri, storage))
    if as_json:
        _print_json(st)
        return
    typer.echo(f"{st['study']}: {st['cells']} cells: " + ", ".join(f"{k} {v}" for k, v in st["counts"].items()))
    for h in st["running"]:
        age = f", heartbeat {h['heartbeat_age_s']:.0f} s ago" if h.get("heartbeat_age_s") is not None else ""
        typer.echo(f"  running  {h['name']} ({h['run_id']}) on host {h['host']} pid {h['pid']} gpu {h['gpu']}, "
                   f"attempt {h['attempt']}{age}")
    for f in st["failed"]:
        typer.echo(f"  {f['status'].lower():<8} {f['name']} ({f['run_id']}): {f['error']}")


@app.command()
def ui(
    study: Optional[Path] = typer.Argument(None, help="Optional: a study, to print its experiment's URL."),
    tracking_uri: Optional[str] = URI_OPT,
    port: int = typer.Option(5000, help="Port on 127.0.0.1."),
) -> None:
    """Start the MLflow UI on the study's store (127.0.0.1, lean settings) and print its URL."""
    from ablate.ui import serve

    raise typer.Exit(serve(tracking_uri, port, study))


@app.command()
def train(
    train_files: List[str] = typer.Option(..., "--train", help="FILE[:GENRE], repeatable (.jsonl carry their genres)."),
    dev_files: Optional[List[str]] = typer.Option(None, "--dev", help="FILE[:GENRE]; default: a seeded 20% split of --train."),
    test_files: Optional[List[str]] = typer.Option(None, "--test", help="FILE[:GENRE], repeatable."),
    backbone: str = typer.Option("scratch:bert:tiny", help="Hub id, local folder, or scratch:FAMILY[:SHAPE]."),
    finetune: FinetuneChoice = typer.Option("full", help="Fine-tune every weight, or LoRA adapters and the head."),
    loss: LossChoice = typer.Option("ce", help="Cross-entropy or focal loss."),
    lr: float = typer.Option(1.0e-5),
    epochs: int = typer.Option(3),
    batch_size: int = typer.Option(16),
    seed: int = typer.Option(1),
    max_length: int = typer.Option(128),
    out: Path = typer.Option(Path("runs/train"), help="Where predictions and per-type scores go."),
    overrides: Optional[List[str]] = SET_OPT,
) -> None:
    """Train one cell without MLflow: a per-epoch table and the final test line (debugging, scripting)."""
    from ablate.single import train_one

    raise typer.Exit(train_one(train_files, dev_files or [], test_files or [], backbone, finetune.value, loss.value, lr, epochs,
                               batch_size, seed, max_length, out, list(overrides or [])))


@app.command()
def report(
    study: Path = STUDY_ARG,
    overrides: Optional[List[str]] = SET_OPT,
    tracking_uri: Optional[str] = URI_OPT,
    out: Optional[Path] = typer.Option(None, help="Output folder (default reports/<study>)."),
) -> None:
    """Tables and figures of a paper from the study's MLflow runs, under reports/<study>/."""
    from ablate.report.collect import make_report

    path = make_report(_place(study, overrides, tracking_uri, None), out)
    typer.echo(f"wrote {path}")


@app.command()
def predict(
    model: str = typer.Argument(..., help="A saved model folder, a cell's run_id, or a study YAML with --top K."),
    inputs: List[str] = typer.Argument(..., help="FILE[:GENRE]: text (a sentence per line), CoNLL (`char [TAG]`) or .jsonl."),
    out: Path = typer.Option(Path("predictions"), help="Folder for the official 2-column files, one per genre (<genre>.txt)."),
    top: Optional[int] = typer.Option(None, min=1, help="With a study: ensemble its K best cells by dev macro F1."),
    method: EnsembleChoice = typer.Option("vote", help="How K models combine: per-character vote or entity vote."),
    gold: Optional[List[str]] = typer.Option(None, "--gold", help="GENRE=GOLD_FILE: score the output as the official scorer."),
    precision: PrecisionChoice = typer.Option(
        "auto", help="auto: bf16 on a GPU that has it, fp32 on CPU (the tags the cell wrote); bf16 on a CPU with "
        "AVX512-BF16/AMX is about 2x faster, and may change a few tags."),
    tracking_uri: Optional[str] = URI_OPT,
    overrides: Optional[List[str]] = SET_OPT,
) -> None:
    """Tag new text with a saved model, or a study's top-K ensemble; write the shared task's submission files."""
    from ablate.predict import predict_main

    for line in predict_main(model, list(inputs), out, top, method.value, tracking_uri, list(overrides or []),
                             list(gold or []), precision.value):
        typer.echo(line)


@app.command()
def ensemble(
    study: Path = STUDY_ARG,
    top: int = typer.Option(3, min=1, help="Members: the K best finished cells by --by (the paper: 3)."),
    method: EnsembleChoice = typer.Option("vote", help="Per-character majority vote (then BIO repair) or entity vote."),
    by: str = typer.Option("dev/macro_f1", help="The dev metric that picks the members (never a test metric)."),
    out: Optional[Path] = typer.Option(None, help="Folder (default reports/<study>/ensemble/<method>-top<K>)."),
    overrides: Optional[List[str]] = SET_OPT,
    tracking_uri: Optional[str] = URI_OPT,
) -> None:
    """Combine the saved test predictions of a study's K best cells (no model loaded), score and log them."""
    from ablate.metrics import format_scores
    from ablate.report.collect import make_ensemble

    folder, scores, members = make_ensemble(_place(study, overrides, tracking_uri, None), top, method.value, by, out)
    typer.echo(f"members (best {by} first): {', '.join(members)}")
    typer.echo(format_scores(scores))
    typer.echo(f"wrote {folder}")


def main() -> None:
    try:
        app()
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
