"""The grid: a study's axes -> one `RunSpec` per cell, each with a stable `run_id` and a readable name.

Order: the cartesian product of the axes sorted by name, each axis's values in file order (the
last axis varies fastest). Order is for queueing and display only; identity is `run_id`.
Settings a cell's method ignores (lora.* under full fine-tuning, focal.* under cross-entropy)
do not multiply its cells: such a cell appears once, with None for those axes. A CRF head trains
with its own loss (the sequence negative log-likelihood), so the loss axis does not multiply CRF
cells either: each appears once, recorded as `loss: ce`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from ablate.errors import DataError
from ablate.spec.schema import CELL_AXES, DATA_AXES, HASHED_UNLESS_DEFAULT, RunSpec, TrainSpec, group_of, nested_exclude, unused_groups
from ablate.spec.study import StudySpec

# Fields that do not change what a run computes: `axes` restates the resolved values, `data.root`
# says where the files are (their content hashes say what they are), `save_model` only keeps a copy.
# Likewise the settings groups a cell's methods do not use (METHODS: train.lora under full fine-tuning).
_NOT_HASHED = {"axes": True, "data": {"root"}, "train": {"save_model"}}
_NAME_KEYS = {
    "lora.r": "r", "lora.alpha": "la", "lora.dropout": "ld", "lora.target_modules": "tm",
    "focal.gamma": "g", "focal.alpha": "fa", "batch_size": "bs", "eval_batch_size": "ebs",
    "grad_accum": "ga", "warmup_ratio": "wr", "warmup_steps": "ws", "weight_decay": "wd",
    "max_grad_norm": "gn", "precision": "", "early_stopping": "es", "select_metric": "", "decode": "",
    "head.crf.lr_multiplier": "crflr", "head.lstm.hidden": "lh", "head.lstm.layers": "ll", "head.lstm.dropout": "lsd",
    "data.train_genres": "tg", "data.train_fraction": "tf",
}


def expand(study: StudySpec) -> list[RunSpec]:
    """Every cell of the grid as a validated RunSpec, in the stable order described above."""
    names = sorted(study.grid)
    base = study.train.model_dump()
    runs, seen = [], set()
    for values in itertools.product(*(study.grid[n] for n in names)):
        cell = dict(zip(names, values))
        if cell.get("head", "linear") != "linear" and cell["loss"] != "ce":
            if "ce" in study.grid["loss"]:
                continue  # the same CRF cell as under ce
            cell["loss"] = "ce"
        train = dict(base)  # copied on write below: deep-copying every cell's settings cost ~2x in `ablate plan`
        unused = unused_groups(cell)
        data_updates = {}
        for name, value in cell.items():
            if name in CELL_AXES:
                continue
            if name in DATA_AXES:  # data.train_genres / data.train_fraction: this cell's training data
                data_updates[name.split(".", 1)[1]] = value
                continue
            *outer, last = name.split(".")
            if group_of(name) in unused:
                cell[name] = None
                continue
            node = train
            for part in outer:
                node[part] = dict(node[part])
                node = node[part]
            node[last] = value
        if any(cell[n] is None for n in names) or cell.get("head", "linear") != "linear":
            key = json.dumps(list(cell.values()), default=str)
            if key in seen:
                continue
            seen.add(key)
        runs.append(
            RunSpec(
                study=study.name,
                backbone=cell["backbone"],
                backbone_spec=study.backbones[cell["backbone"]],
                finetune=cell["finetune"],
                loss=cell["loss"],
                head=cell.get("head", "linear"),
                train=TrainSpec.model_validate(train),
                data=study.data.model_copy(update=data_updates) if data_updates else study.data,
                axes=cell,
            )
        )
    return runs


def run_id(spec: RunSpec, data_hashes: dict[str, str]) -> str:
    """First 12 hex of sha256 over the canonical JSON of the run plus its data files' SHA-256.

    `data_hashes` maps absolute paths (as `file_hashes` returns them) to content hashes. Data files
    enter by content and genre, not by path: moving the data or the checkout keeps every id.
    The code version is not hashed (a new commit keeps finished cells finished).
    """
    unused = nested_exclude(unused_groups({a: getattr(spec, a) for a in CELL_AXES}))
    exclude = {**_NOT_HASHED, "train": {k: True for k in _NOT_HASHED["train"]} | unused}
    payload = spec.model_dump(mode="json", exclude=exclude)
    for path, default in HASHED_UNLESS_DEFAULT.items():
        *outer, last = path
        node = payload
        for part in outer:
            node = node.get(part, {})
        if node.get(last, default) == default:
            node.pop(last, None)
    for group in list(payload["train"]):  # a settings group whose every part is unused (train.head under linear)
        if payload["train"][group] == {}:
            del payload["train"][group]
    bb = payload["backbone_spec"]
    if bb.get("vocab_size") is None:  # unset: hashed as before the field existed
        bb.pop("vocab_size", None)
    if bb.get("pretrain") is None:  # a backbone without pretraining hashes as before the field existed
        bb.pop("pretrain", None)
    else:  # its text files enter by content, as data files do
        bb["pretrain"]["text"] = [file_hashes([spec.data.resolve(Path(t))])[str(spec.data.resolve(Path(t)))]
                                  for t in bb["pretrain"]["text"]]
    for (role, i), f in spec.data.files():
        entry = payload["data"][role][i]
        path = str(spec.data.resolve(f.path))
        if path not in data_hashes:
            raise KeyError(f"no hash for data file {path}; pass file_hashes(study.data.resolved_files())")
        del entry["path"]
        if entry.get("tag_column") == -1:  # the default: files hash as before the setting existed
            del entry["tag_column"]
        entry["sha256"] = data_hashes[path]
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def run_name(spec: RunSpec) -> str:
    """A readable name such as `bert-lora-focal-lr1e-05-e20-s1-r8`: not unique by contract, `run_id` is."""
    t = spec.train
    method = spec.loss if spec.head == "linear" else spec.head  # a CRF head's loss is its own
    parts = [spec.backbone, spec.finetune, method, f"lr{_sci(t.lr)}", f"e{t.epochs}", f"s{t.seed}"]
    for axis in sorted(spec.axes):
        if axis not in (*CELL_AXES, "lr", "epochs", "seed") and spec.axes[axis] is not None:
            key = _NAME_KEYS.get(axis, axis.replace(".", "_"))
            parts.append(f"{key}{_short(spec.axes[axis])}")
    return "-".join(parts)


def file_hashes(paths: Iterable[str | Path]) -> dict[str, str]:
    """SHA-256 of each file's content, keyed by absolute path; cached in-process per path, mtime and size."""
    out = {}
    for p in paths:
        path = os.path.abspath(p)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise DataError(f"{path}: no such file") from None
        out[path] = _sha256(path, st.st_mtime_ns, st.st_size, st.st_ino)
    return out


def data_hashes(study: StudySpec) -> dict[str, str]:
    """`file_hashes` of every data file of a study: the second argument of `run_id`."""
    return data_hashes_of(study.data)


def data_hashes_of(data) -> dict[str, str]:
    """`file_hashes` of every file of a DataSpec."""
    return file_hashes(data.resolved_files())


@lru_cache(maxsize=4096)
def _sha256(path: str, mtime_ns: int, size: int, inode: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sci(x: float) -> str:
    """1e-05, 2.5e-05, 5e-04: scientific with no trailing zeros, so lr names line up."""
    mantissa, exp = f"{x:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{exp}"


def _short(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float) and value and abs(value) < 1e-3:
        return _sci(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "+".join(map(str, value))
    return str(value).replace("/", "_")
