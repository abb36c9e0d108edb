"""The `ablate` command line: thin typer wrappers; heavy imports happen inside each command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ablate.errors import UserError

app = typer.Typer(
    help="Ablation studies for transformer token classification: a YAML study -> tracked runs -> a paper's tables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Read, check, describe, generate and fetch corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")


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
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Read and validate corpora; list tag repairs and warnings. Exit 0 if readable, 2 on an error."""
    from ablate.data.stats import check, render_check

    result = check(paths, genre, "O" if unknown_to_o else "error")
    if as_json:
        _print_json(result.to_json())
    else:
        typer.echo(render_check(result))
    if result.errors:
        raise typer.Exit(2)


@data_app.command("stats")
def data_stats(
    paths: List[str] = typer.Argument(..., help="Files: .jsonl, or CoNLL `char TAG` as PATH[:GENRE]."),
    genre: Optional[str] = typer.Option(None, help="Genre for CoNLL files that name none."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Entities per genre and type (the paper's Table 2) and sentence lengths."""
    from ablate.data.stats import render_stats, stats

    st = stats(paths, genre)
    if as_json:
        _print_json(st)
    else:
        typer.echo(render_stats(st))


@data_app.command("demo")
def data_demo(
    out_dir: Path = typer.Argument(..., help="Folder to write the synthetic corpus into."),
    sentences: int = typer.Option(1200, min=30, help="Sentences in all (train/dev/test 70/15/15)."),
    seed: int = typer.Option(0),
) -> None:
    """Write the synthetic Traditional-Chinese healthcare NER corpus (the offline default)."""
    from ablate.data.demo import make_demo_corpus
    from ablate.data.stats import render_stats, stats

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
