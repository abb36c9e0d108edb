"""The composition root: one RunSpec -> data, backbone, loss, trainer -> RunResult (and `run_cell`, a cell's process).

Only this module wires data, models, losses, the trainer and the tracker together.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ablate.data.readers import Sentence, read_corpus
from ablate.data.splits import split as split_dev
from ablate.data.tags import Note, Repair, entity_types, label_list, repair_tags, unseen_types
from ablate.errors import UserError

FAULT_ENV = "ABLATE_FAULT"  # a testing hook for the failure policy: see fault_for


@dataclass(frozen=True)
class Corpus:
    train: list[Sentence]
    dev: list[Sentence]
    test: list[Sentence]
    labels: list[str]
    repairs: list[Repair]
    warnings: list[Note]


def _read(files, data, repairs: list, warnings: list) -> list[Sentence]:
    out: list[Sentence] = []
    for f in files:
        path = data.resolve(f.path)
        r = repair_tags(read_corpus(path, f.genre), str(path), data.unknown_tags)
        repairs += r.repairs
        warnings += r.warnings
        out += r.sentences
    return out


def load_corpus(data) -> Corpus:
    """Read, repair and split the study's data as its DataSpec says; labels from training only."""
    repairs: list[Repair] = []
    warnings: list[Note] = []
    train = _read(data.train, data, repairs, warnings)
    if isinstance(data.dev, list):
        dev = _read(data.dev, data, repairs, warnings)
    else:
        train, dev = split_dev(train, data.dev.split, data.dev.seed)
    test = _read(data.test, data, repairs, warnings)
    types = entity_types(train)
    warnings += unseen_types(types, dev, "dev") + unseen_types(types, test, "test")
    if not dev:
        raise UserError("the dev set is empty: ablate selects the best epoch on dev")
    return Corpus(train, dev, test, label_list(types), repairs, warnings)


def _cache_root() -> Path:
    return Path(os.environ.get("ABLATE_CACHE", Path.cwd() / "mlruns" / ".cache"))


def resolve_backbone(spec, train: list[Sentence], cache: Path) -> str:
    """A hub id / folder as given, or a scratch backbone built once per (shape, training characters)."""
    from ablate.models import prepare_backbone

    b = spec.backbone_spec
    if b.pretrained is not None:
        return b.pretrained
    chars = sorted({c for s in train for c in s.chars})
    key = hashlib.sha256(json.dumps([b.model_dump(mode="json"), chars], ensure_ascii=False).encode()).hexdigest()[:16]
    folder = cache / "backbones" / key
    if (folder / "backbone" / "config.json").exists():
        return str(folder / "backbone")
    # Build aside, then rename: workers sharing the cache never see half a backbone.
    # The temporary folder sits beside the final one: a rename across file systems would fail.
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
    try:
        prepare_backbone(b, [s.chars for s in train], tmp, seed=0)
        try:
            os.rename(tmp, folder)
        except OSError:  # another worker won the race; use theirs
            if not (folder / "backbone" / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(folder / "backbone")


def _loss_settings(spec, train_windows, num_labels: int):
    from ablate.losses import LossSettings, inverse_frequency_alpha

    f = spec.train.focal
    if f.alpha == "inverse_freq":
        counts = [0] * num_labels
        for w in train_windows:
            for label in w.labels:
                if label >= 0:
                    counts[label] += 1
        alpha = tuple(float(a) for a in inverse_frequency_alpha(counts))
        return LossSettings(gamma=f.gamma, alpha_mode="fixed", alpha=alpha)
    return LossSettings(gamma=f.gamma, alpha_mode=f.alpha)


def loop_settings(spec):
    from ablate.trainer import LoopSettings

    t = spec.train
    return LoopSettings(
        lr=t.lr, epochs=t.epochs, seed=t.seed, batch_size=t.batch_size, eval_batch_size=t.eval_batch_size,
        grad_accum=t.grad_accum, warmup_ratio=t.warmup_ratio, warmup_steps=t.warmup_steps, weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm, precision=t.precision, select_metric=t.select_metric,
        early_stopping=t.early_stopping, save_model=t.save_model,
    )


def run_one(spec, out_dir: Path, on_epoch: Callable | None = None, fault: str | None = None, device: str | None = None):
    """Train one cell and return its RunResult; outputs (predictions, per-type scores) under out_dir."""
    import torch

    from ablate.data.encode import encode_cached
    from ablate.losses import build_loss
    from ablate.models import LoraSettings, count_parameters, load_model, position_limit
    from ablate.trainer import Split, train

    from transformers.utils import logging as hf_logging

    import warnings

    # peft calls a transformers method that transformers 5 deprecates: noise in every cell's log.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    hf_logging.set_verbosity_error()  # the per-load report (fresh head MISSING) is expected here
    hf_logging.disable_progress_bar()
    cache = _cache_root()
    corpus = load_corpus(spec.data)
    model_path = resolve_backbone(spec, corpus.train, cache)
    torch.manual_seed(spec.train.seed)
    lora = spec.train.lora
    lora_settings = LoraSettings(r=lora.r, alpha=lora.alpha, dropout=lora.dropout,
                                 target_modules=tuple(lora.target_modules) if lora.target_modules else None)
    model, tokenizer = load_model(model_path, corpus.labels, spec.finetune, lora_settings)
    label2id = {t: i for i, t in enumerate(corpus.labels)}
    max_length = spec.data.max_length
    limit = position_limit(model.config)
    if limit is not None and max_length > limit:
        raise UserError(f"data.max_length {max_length} is more than the {limit} positions of {model_path}; lower it "
                        "(longer sentences are windowed, so nothing is lost)")
    enc = lambda sents: encode_cached(sents, tokenizer, label2id, max_length, cache / "encodings")  # noqa: E731
    train_split = Split(enc(corpus.train), corpus.train)
    dev = Split(enc(corpus.dev), corpus.dev)
    test = Split(enc(corpus.test), corpus.test) if corpus.test else None
    loss_fn = build_loss(spec.loss, len(corpus.labels), _loss_settings(spec, train_split.windows, len(corpus.labels)))
    counts = count_parameters(model)
    loss_params = sum(p.numel() for p in loss_fn.parameters() if p.requires_grad)
    dev_name = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "data_repairs.json").write_text(json.dumps(
        {"repairs": [r.to_json() for r in corpus.repairs], "warnings": [w.to_json() for w in corpus.warnings],
         "labels": corpus.labels, "sentences": {"train": len(corpus.train), "dev": len(corpus.dev), "test": len(corpus.test)}},
        ensure_ascii=False, indent=2), encoding="utf-8")
    (out_dir / "run_spec.json").write_text(spec.model_dump_json(indent=2), encoding="utf-8")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return train(
        model, loss_fn, train_split, dev, test, corpus.labels, loop_settings(spec), dev_name, out_dir,
        pad_id=pad_id, on_epoch=on_epoch, fault=fault,
        extra_final={"params/trainable": float(counts.trainable + loss_params), "params/total": float(counts.total + loss_params)},
    )


def fault_for(name: str, batch_size: int) -> str | None:
    """The injected fault for this cell, from ABLATE_FAULT (tests of the failure policy only).

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


def run_cell(spec_json: str, tracking_uri: str, mlflow_run_id: str, result_path: str, trial_json: str | None = None,
             worker_pid: int | None = None) -> None:
    """A cell's process: run one cell, log it into its MLflow run, exit with a code the worker reads.

    Exit codes: 0 finished, 1 failed, 3 out of memory (the worker retries with half the batch),
    4 pruned (a search trial stopped by its pruner: FINISHED in MLflow, tagged ablate.pruned),
    130 interrupted (the MLflow run is marked KILLED). `trial_json` (search mode) names the Optuna
    trial this cell reports its per-epoch selection metric to. `worker_pid`: the worker whose death
    ends this cell at once (kill -9 of a worker must not leave its cell training on).
    """
    _die_with_parent(worker_pid)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the fork server ignores SIGINT; a cell must not
    from ablate.search import EXIT_PRUNED, Pruned, finish_pruned, trial_reporter
    from ablate.spec import RunSpec
    from ablate.tracking import Tracker

    spec = RunSpec.model_validate_json(spec_json)
    tracker = Tracker(tracking_uri)
    name = tracker.client.get_run(mlflow_run_id).info.run_name or ""
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    result = {"value": None, "error": None}
    code = 0
    with tempfile.TemporaryDirectory(prefix="ablate-out-") as tmp:
        try:
            import torch

            report = trial_reporter(trial_json) if trial_json else None

            def on_epoch(epoch: int, metrics: dict) -> None:
                tracker.log_metrics(mlflow_run_id, metrics, step=epoch)
                if report is not None:
                    report(epoch, metrics)  # raises Pruned when the pruner stops this trial

            res = run_one(spec, Path(tmp), on_epoch, fault_for(name, spec.train.batch_size))
            tracker.finish_cell(mlflow_run_id, res.final, res.outputs, res.settings)
            result["value"] = res.final.get(spec.train.select_metric)
        except Pruned as p:
            try:
                finish_pruned(tracker, mlflow_run_id, p)
                code, result["value"] = EXIT_PRUNED, p.final.get(spec.train.select_metric)
            except Exception as e:  # noqa: BLE001 - the store refused the pruned result: a failed cell
                code, result["error"] = 1, f"{type(e).__name__}: {e}"
                _safe(tracker.fail_cell, mlflow_run_id, traceback.format_exc())
        except KeyboardInterrupt:
            code, result["error"] = 130, "interrupted"
            _safe(tracker.fail_cell, mlflow_run_id, "interrupted (Ctrl-C or SIGTERM)", "KILLED")
        except Exception as e:  # noqa: BLE001 - every failure is recorded in MLflow, then the study goes on
            oom = type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()
            code = 3 if oom else 1
            result["error"] = f"{type(e).__name__}: {e}"
            _safe(tracker.fail_cell, mlflow_run_id, traceback.format_exc())
    Path(result_path).write_text(json.dumps(result))
    sys.stdout.flush()
    os._exit(code)


def _safe(fn, *args) -> None:
    try:
        fn(*args)
    except Exception:  # the store is gone too: the worker records what it can
        pass


def _die_with_parent(worker_pid: int | None = None) -> None:
    """Die with the worker, so a killed worker leaves no orphan cell behind to finish a re-queued cell twice.

    PR_SET_PDEATHSIG (Linux) covers a cell whose parent is the worker. A cell forked from the
    worker's fork server has the fork server as parent, and the fork server outlives the worker
    while any cell it forked is alive (each holds its "alive" pipe), so the cell also watches the
    worker itself: a pidfd (Linux >= 5.3) wakes a thread the moment the worker exits, else polling.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
        except OSError:
            pass
    if worker_pid is None or worker_pid == os.getppid():
        return
    import select
    import threading
    import time

    try:
        fd = os.pidfd_open(worker_pid)
    except (AttributeError, OSError):  # not Linux, an old kernel, or the worker is gone already
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])
        else:
            while True:
                try:
                    os.kill(worker_pid, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-worker", daemon=True).start()
