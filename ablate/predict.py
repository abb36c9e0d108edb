"""`ablate predict`: a saved model (a folder, a cell's run_id, or a study's top K by dev) -> the official 2-column
prediction files per genre for new text, and their scores with `--gold`.

Input: unlabeled text (one sentence per line), CoNLL (`char [TAG]`, tags ignored) or ROCLING jsonl, each as
FILE[:GENRE]. Sentences go through the same windows as training (every character predicted once), batched by
length, on the GPU when there is one. Output files are written aside and renamed into place.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ablate.data.readers import Sentence
from ablate.errors import DataError, UserError
from ablate.spec.schema import JSONL_SUFFIXES


_TAG_LIKE = ("O", "B-", "I-", "E-", "S-", "M-", "B_", "I_", "E_", "S_", "M_", "L-", "U-")


def _is_conll(lines: list[str]) -> bool:
    """A token per line (a character or a word) with the same number of columns on every line and a tag in the
    last one, or one bare token per line with blank lines between sentences; else text, a sentence a line."""
    from ablate.data.readers import DOCSTART, _split_columns

    rows = [_split_columns(ln) for ln in lines if ln.strip() and not ln.startswith(DOCSTART)]
    if not rows or len({len(r) for r in rows}) != 1 or len(rows[0]) > 6:
        return False
    tagged = len(rows[0]) >= 2 and all(r[-1].startswith(_TAG_LIKE) for r in rows)
    inner_blank = any(not ln.strip() for ln in lines[: max(i for i, ln in enumerate(lines) if ln.strip())])
    return tagged or (inner_blank and len(rows[0]) == 1)


def _by_words(lines: list[str]) -> bool:
    """Text whose lines are mostly not CJK (Latin-script words): a sentence is its whitespace-separated words."""
    chars = [c for ln in lines for c in ln if not c.isspace()]
    cjk = sum(1 for c in chars if "\u2e80" <= c <= "\u9fff" or "\uf900" <= c <= "\uffef")
    return bool(chars) and cjk < 0.5 * len(chars) and any(len(ln.split()) > 1 for ln in lines)


def read_input(arg: str) -> list[Sentence]:
    """FILE[:GENRE] -> sentences with placeholder tags (`O`). The genre: the one named, else a jsonl record's own,
    else the file's stem."""
    import json

    from ablate.data.readers import _read_text, read_columns
    from ablate.data.stats import parse_source

    path, named = parse_source(arg)
    text = _read_text(path)
    if path.suffix.lower() in JSONL_SUFFIXES:  # ROCLING records; labels, if any, are ignored
        out = []
        for n, raw in enumerate(text.split("\n"), start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                chars = rec["character"] if "character" in rec else list(rec["text"])
            except (ValueError, KeyError, TypeError):
                raise DataError(f"{path}:{n}: expected a JSON record with `character` (a list) or `text`") from None
            genre = named or str(rec.get("genre") or path.stem).lower()
            out.append(Sentence(f"{path.stem}-{n:05d}", genre, tuple(chars), ("O",) * len(chars), n))
        return out
    genre = named or path.stem.lower()
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    if _is_conll(lines):
        blocks = read_columns(path, None if any(len(ln.split()) > 1 for ln in lines if ln.strip()) else 1)
        return [Sentence(f"{path.stem}-{k:05d}", genre, tuple(r[0] for r in rows), ("O",) * len(rows), start)
                for k, (start, rows) in enumerate(blocks)]
    out = []
    words = _by_words(lines)
    for n, line in enumerate(lines, start=1):  # text: a sentence per line: its words, or its characters (no spaces)
        chars = tuple(line.split()) if words else tuple(c for c in line if not c.isspace())
        if chars:
            out.append(Sentence(f"{path.stem}-{n:05d}", genre, chars, ("O",) * len(chars), n))
    if not out:
        raise DataError(f"{path}: no sentence in it")
    return out


PRECISIONS = ("auto", "fp32", "bf16")


def predict_folder(folder: Path, sentences: list[Sentence], batch_size: int = 64, device: str | None = None,
                   precision: str = "auto") -> list[list[str]]:
    """Tags for every character of every sentence, from a folder `save_cell_model` (or transformers) wrote.

    precision: `auto` is bf16 autocast on a GPU that has it (as training there) and fp32 on a CPU, so the tags are
    the ones the cell wrote; `bf16` forces autocast (on a CPU with AVX512-BF16 or AMX about twice as fast, a few
    characters in a thousand may change on a trained model); `fp32` forces full precision.
    """
    import torch

    from ablate.data.encode import encode
    from ablate.models.save import load_saved
    from ablate.trainer import Split, predict

    model, head, tokenizer, labels, max_length = load_saved(folder)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev), head.to(dev)
    windows = encode(sentences, tokenizer, {t: i for i, t in enumerate(labels)}, max_length,
                     subtoken=getattr(head, "subtoken", "first"))
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    bf16 = precision == "bf16" or (precision == "auto" and dev.type == "cuda" and torch.cuda.is_bf16_supported())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return predict(model, head, Split(windows, sentences), labels, dev, batch_size, bf16, pad)


def write_predictions(out_dir: Path, sentences: list[Sentence], tags: list[list[str]]) -> list[Path]:
    """One official 2-column file per genre (`<genre>.txt`), each written aside and renamed in."""
    from ablate.data.readers import write_conll

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"--out {out_dir}: not a folder") from None
    written = []
    for g in sorted({s.genre for s in sentences}):
        idx = [i for i, s in enumerate(sentences) if s.genre == g]
        target = out_dir / f"{g}.txt"
        fd, tmp = tempfile.mkstemp(prefix=f".{g}.", suffix=".txt", dir=out_dir)
        os.close(fd)
        try:
            write_conll([sentences[i] for i in idx], tmp, tags=[tags[i] for i in idx])
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        written.append(target)
    return written


def predict_main(model: str, inputs: list[str], out: Path, top: int | None, method: str, tracking_uri: str | None,
                 overrides: list[str], gold: list[str], precision: str = "auto") -> list[str]:
    """The `ablate predict` command: returns the lines to print."""
    from ablate.models.save import saved_scheme
    from ablate.report.ensemble import METHODS, check_aligned

    sentences = [s for arg in inputs for s in read_input(arg)]
    with tempfile.TemporaryDirectory(prefix="ablate-models-") as cache:  # downloaded models go when it is done
        folders = _model_folders(model, top, tracking_uri, overrides, Path(cache))
        preds = [predict_folder(f, sentences, precision=precision) for f in folders]
        scheme = saved_scheme(folders[0])
    if len(preds) > 1:
        check_aligned(preds, [str(f) for f in folders])
        tags = METHODS[method](preds, scheme)
    else:
        tags = preds[0]
    lines = [f"wrote {p}" for p in write_predictions(out, sentences, tags)]
    if gold:  # GENRE=GOLD_FILE: the official scorer's numbers for what was just written
        from ablate.metrics import format_scores
        from ablate.scoring import score_files

        pairs = []
        for g in gold:
            genre, eq, file = g.partition("=")
            if not eq or not genre or not file:
                raise UserError(f"--gold {g!r}: expected GENRE=GOLD_FILE, e.g. ft=rocling23_truth_FT.txt")
            if not (out / f"{genre.lower()}.txt").exists():
                raise UserError(f"--gold {g!r}: no input had genre {genre.lower()!r}")
            pairs.append((genre.lower(), Path(file), out / f"{genre.lower()}.txt"))
        result, notes = score_files(pairs)
        lines += [f"note: {n}" for n in notes] + [format_scores(result)]
    return lines


def _model_folders(model: str, top: int | None, tracking_uri: str | None, overrides: list[str], cache: Path) -> list[Path]:
    """A saved folder as it is; a study file with --top K: its K best cells by dev macro F1 (downloaded)."""
    path = Path(model)
    if path.is_dir():
        if top:
            raise UserError(f"--top applies to a study, not to the model folder {model}")
        return [path]
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return _study_models(path, top or 1, tracking_uri, overrides, cache)
    if len(model) == 12 and all(c in "0123456789abcdef" for c in model):  # a cell's run_id
        if top:
            raise UserError(f"--top applies to a study, not to the cell {model}")
        return [_cell_model(model, tracking_uri, cache)]
    raise UserError(f"{model}: not a saved model folder, a cell's run_id (12 hex digits) nor a study file (.yaml)")


def _cell_model(run_id: str, tracking_uri: str | None, cache: Path) -> Path:
    """The saved model of the cell with this run_id (its FINISHED run), from any experiment of the store."""
    from ablate.tracking.client import Tracker
    from ablate.tracking.tags import RUN_ID
    from ablate.tracking.uri import default_tracking_uri

    tracker = Tracker(tracking_uri or default_tracking_uri(Path.cwd()))
    exps = [e.experiment_id for e in tracker.client.search_experiments()]
    runs = tracker.client.search_runs(exps, f"tags.`{RUN_ID}` = '{run_id}' and attributes.status = 'FINISHED'",
                                      max_results=1) if exps else []
    if not runs:
        raise UserError(f"no FINISHED cell with run_id {run_id} in {tracker.uri}")
    try:
        return Path(tracker.client.download_artifacts(runs[0].info.run_id, "model", str(cache)))
    except Exception:  # noqa: BLE001 - the cell ran without save_model
        raise UserError(f"cell {run_id} has no saved model: run it with --set train.save_model=true") from None


def _study_models(study_path: Path, k: int, tracking_uri: str | None, overrides: list[str], cache: Path) -> list[Path]:
    from ablate.report.collect import load_cells
    from ablate.report.ensemble import top_k
    from ablate.scheduler.plan import load_study_of, report_cells, resolve_place
    from ablate.tracking.client import Tracker

    place = resolve_place(study_path, overrides, tracking_uri, None)
    study = load_study_of(place, check_files=False)
    tracker = Tracker(place.tracking_uri)
    frame = load_cells(tracker, study.name, report_cells(tracker, study), history=False)
    chosen = top_k(frame, k)
    folders = []
    for _, cell in chosen.iterrows():
        try:
            target = cache / cell["run_id"]
            target.mkdir()
            folders.append(Path(tracker.client.download_artifacts(cell["mlflow_run_id"], "model", str(target))))
        except Exception:  # noqa: BLE001 - no model artifact: the study did not save models
            raise UserError(f"cell {cell['name']} ({cell['run_id']}) has no saved model: run the study with "
                            "--set train.save_model=true (models are saved only on request)") from None
    return folders
