"""The report page: cells -> out_dir/README.md with tables/ (.md, .csv) and figures/ (.png, .svg).

`build_report` is the one entry point; reading MLflow into the cells DataFrame is the tracking
layer's job. Never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from ablate.spec.report import ReportSpec, TableSpec
from ablate.report.genres import genre_models_table
from ablate.report.ensemble import ensemble_table
from ablate.report.figures import colour_map, default_figures, draw, figure_data
from ablate.report.stats import TEST_NAME, NotComparable, compare_table
from ablate.report.cells import STATUSES, axes_of, axis_text, groups, status_counts
from ablate.report.tables import (Table, _slug, build_table, default_tables, genre_table, to_markdown, type_table,
                                  write_table)

REQUIRED = ("run_id", "name", "status")
LISTED = 30  # unfinished cells listed by name on the page


def _check_cells(cells: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED if c not in cells]
    if missing:
        raise ValueError(f"cells lack the columns {missing}")
    bad = set(cells["status"]) - set(STATUSES)
    if bad:
        raise ValueError(f"unknown cell status {sorted(bad)}; expected one of {STATUSES}")


def _clean(folder: Path, suffixes: tuple[str, ...], keep: set[Path]) -> None:
    # Files a previous report wrote for tables or figures that no longer exist would read as current.
    if folder.is_dir():
        for f in folder.iterdir():
            if f.suffix in suffixes and f not in keep:
                f.unlink()


def _one_line(text, limit: int = 160) -> str:
    if not isinstance(text, str) or not text.strip():
        return "–"
    lines = [x for x in text.strip().splitlines() if x.strip()]
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]  # a traceback ends with its message
    return line[:limit] + ("…" if len(line) > limit else "")


def _run_section(cells: pd.DataFrame) -> str:
    counts = status_counts(cells)
    total = len(cells)
    parts = [f"{counts['FINISHED']} finished", f"{counts['FAILED']} failed"]
    parts += [f"{counts[s]} {s.lower()}" for s in ("KILLED", "RUNNING") if counts[s]]
    parts.append(f"{counts['MISSING']} missing (never run)")
    axes = pd.DataFrame({"Axis": axes_of(cells),
                         "Values": [", ".join(axis_text(k[0]) for k, _ in groups(cells, [a])) for a in axes_of(cells)]})
    out = [f"**{total} cells planned: {', '.join(parts)}.**", "", to_markdown(axes, left=("Values",))]
    left = cells[cells["status"] != "FINISHED"]
    if len(left):
        shown = left.head(LISTED)
        listing = pd.DataFrame({"Cell": shown["name"].astype(str), "run_id": shown["run_id"].astype(str),
                                "Status": shown["status"].str.lower(),
                                "Error": [_one_line(e) for e in shown.get("error", pd.Series([None] * len(shown)))]})
        out += ["", "Cells without results (they count in the *Cells* column of every table, never as values):",
                "", to_markdown(listing)]
        if len(left) > LISTED:
            out.append(f"\n… and {len(left) - LISTED} more.")
    return "\n".join(out)


def _method_section(report: ReportSpec, compared: bool, predictions_given: bool) -> str:
    lines = [
        "- **Seeds**: cells that differ only in `seed` form one row: mean ± sample standard deviation "
        "(n finished seeds). One finished seed shows as `value (1)`.",
        "- **Other axes**: an axis that varies but is not a row of a table is shown as an extra row axis, unless "
        "the table asks for the best setting (then chosen by mean dev macro F1 and named in *Setting*).",
        "- **Failures**: failed, killed, running and missing cells never enter a mean; a row without any "
        "finished cell says `failed (k/n)`, `missing (k/n)`…; *Cells* counts finished of planned. "
        "`n/a`: the cell finished but did not log that metric.",
        "- **Bold**: the best value of each column (highest score or tokens/s; least minutes per epoch or memory); "
        "parameter counts are a property, not a result, and are not ranked.",
        "- **Units**: scores in %, time in minutes per training epoch, memory in MB (peak), parameters as counts.",
    ]
    if compared and predictions_given:
        lines.append(f"- **Significance**: {TEST_NAME}; {report.bootstrap_samples} bootstrap samples, seed "
                     f"{report.bootstrap_seed}. Statistic: difference in macro F1 (mean of the genre F1s). Each arm "
                     "is its best finished cell by dev macro F1, so the test is between single runs, not seeds. "
                     "p = (1 + #resamples at least as far from the observed difference as it is from 0) / (1 + B).")
    elif compared:
        lines.append("- **Significance**: not computed: no saved predictions were given to the report.")
    else:
        lines.append("- **Significance**: no table declares a `compare:` axis, so no test was run.")
    return "\n".join(lines)


def _table_block(table: Table, folder: str = "tables") -> str:
    return (table.markdown() + f"\n[{table.name}.md]({folder}/{table.name}.md) · "
            f"[{table.name}.csv]({folder}/{table.name}.csv)\n")


def _pairs(cells: pd.DataFrame, spec: TableSpec) -> list[tuple[pd.DataFrame, TableSpec]]:
    """A compare axis with two values is one comparison; with more (three heads), each value against the first."""
    axis = spec.compare
    values = [k[0] for k, _ in groups(cells, [axis])] if axis in cells else []
    if len(values) <= 2:
        return [(cells, spec)]
    base = spec.model_dump()
    return [(cells[cells[axis].isin([values[0], v])],
             TableSpec.model_validate({**base, "name": f"{spec.name}_{_slug(axis_text(v))}_vs_{_slug(axis_text(values[0]))}"}))
            for v in values[1:]]


def build_report(study_name: str, description: str, cells: pd.DataFrame, report: ReportSpec, out_dir: Path,
                 predictions: Callable[[str, str], Mapping] | None = None, ensembles: list[dict] | None = None) -> Path:
    """Write out_dir/README.md, out_dir/tables/<name>.md|.csv and out_dir/figures/<name>.png|.svg.

    cells: one row per planned cell (run_id, name, status, error, mlflow_run_id, axes, metrics, history);
    predictions(mlflow_run_id, split) -> {genre: [(gold tags, predicted tags), ...]} for significance.
    Returns the README path.
    """
    _check_cells(cells)
    out_dir = Path(out_dir)
    tables_dir, figures_dir = out_dir / "tables", out_dir / "figures"
    written: set[Path] = set()

    def save(table: Table) -> Table:
        written.update(write_table(table, tables_dir))
        return table

    specs = report.tables or default_tables(cells)
    blocks, loaded = [], {}  # loaded: predictions and their counts, shared by every comparison
    for spec in specs:
        blocks.append(_table_block(save(build_table(cells, spec))))
        for sub, pair in (_pairs(cells, spec) if spec.compare and predictions is not None else []):
            try:
                blocks.append(_table_block(save(compare_table(sub, pair, predictions, report.bootstrap_samples,
                                                              report.bootstrap_seed, loaded))))
            except NotComparable as e:  # the study's grid was narrowed: say so, keep the rest of the report
                blocks.append(f"*No significance test for {pair.name}: {e}.*\n")
    ens = ensemble_table(ensembles or [], report.bootstrap_samples, report.bootstrap_seed)
    if ens is not None:  # `ablate ensemble` logged some: a row each, against its best member
        blocks.append(_table_block(save(ens)))
    for split in ("test", "dev"):  # a study that varies data.train_genres: each genre's own model, as one system
        gm = genre_models_table(cells, predictions, split, report.bootstrap_samples, report.bootstrap_seed)
        if gm is not None:
            blocks.append(_table_block(save(gm)))
    details = [save(t) for t in (genre_table(cells, report.arms), type_table(cells, report.arms)) if t is not None]

    figs = [figure_data(cells, f) for f in (report.figures or default_figures(cells))]
    colours = colour_map(c.label for f in figs for c in f.curves)
    fig_blocks = []
    for f in figs:
        written.update(draw(f, colours, figures_dir))
        fig_blocks.append(f"### {f.title}\n\n![{f.title}](figures/{f.name}.png)\n\n*{f.caption}* "
                          f"([svg](figures/{f.name}.svg))\n")
    _clean(tables_dir, (".md", ".csv"), written)
    _clean(figures_dir, (".png", ".svg"), written)

    page = [f"# {study_name}", ""]
    if description:
        page += [description.strip(), ""]
    page += ["## What was run", "", _run_section(cells), "",
             "## How to read it", "", _method_section(report, any(s.compare for s in specs), predictions is not None),
             "", "## Tables", ""]
    page += blocks or ["No table: no axis varies and none was declared.\n"]
    if details:
        page += ["## Per genre and per entity type", ""] + [_table_block(t) for t in details]
    page += ["## Figures", ""] + (fig_blocks or ["No figure: no learning rate or epochs axis varies and no "
                                                 "per-epoch history was logged.\n"])
    path = out_dir / "README.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(page), encoding="utf-8")
    return path
