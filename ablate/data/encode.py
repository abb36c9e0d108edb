"""Characters -> model inputs (sub-tokens, labels, sliding windows, length-grouped batches) and back.

Each character is tokenized as its own pre-split word, so it owns its sub-tokens. A character the
tokenizer drops (space, U+3000, zero-width and control characters) gets the unknown token, so every
character has exactly one prediction. A sentence longer than `max_length` becomes overlapping windows;
each character is labelled and predicted in exactly one of them, the one where it sees most context.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import pickle
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.data.readers import Sentence
from ablate.errors import UserError
from ablate.spec.schema import IGNORE_INDEX
_CACHE_VERSION = 1  # bump when the encoding changes, so old cache entries miss


@dataclass(frozen=True)
class Window:
    """One model input: a slice of one sentence, whole characters only, with the specials around it.

    `word_ids[t]` is the sentence character index of token t (None for special tokens).
    `heads` are the token positions (first sub-token of a character) this window predicts;
    `labels` hold the character's label id there and IGNORE_INDEX everywhere else, so a
    character in the overlap of two windows counts once in the loss, in the window that
    `stitch` reads it from.
    """

    sentence: int  # index into the sentence list given to `encode`
    start: int  # first character covered
    input_ids: tuple[int, ...]
    word_ids: tuple[int | None, ...]
    labels: tuple[int, ...]
    heads: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(
    sentences: Sequence[Sentence],
    tokenizer: Any,
    label2id: Mapping[str, int],
    max_length: int = 128,
    overlap: int | None = None,
    subtoken: str = "first",
) -> list[Window]:
    """Tokenize sentences into windows of at most `max_length` sub-tokens (specials included).

    Each character (or word) is labelled and predicted on its `subtoken`: the first of its sub-tokens (as
    transformers' run_ner.py does) or the last.

    `overlap` is how many sub-tokens consecutive windows of one sentence share (default
    max_length // 4). A tag missing from `label2id` (e.g. a type seen only in dev/test) gets
    IGNORE_INDEX: it never counts in the loss, and scoring still reads the gold `Sentence.tags`.
    Sentences with no characters get no window.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"{type(tokenizer).__name__} is not a fast tokenizer; ablate needs one (word_ids)")
    prefix, suffix = _special_tokens(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    overlap = _resolve_overlap(max_length, overlap)
    if budget < 1:
        specials = len(prefix) + len(suffix)
        raise UserError(f"max_length {max_length} leaves no room for text next to {specials} special tokens")
    if not 0 <= overlap < budget:
        raise UserError(f"overlap {overlap} must be >= 0 and below {budget} (max_length minus special tokens)")
    placeholder = _placeholder_id(tokenizer)
    # One batched call: the Rust tokenizer does the work (~0.5 s for ROCLING's 240k characters).
    # verbose=False: whole sentences may exceed model_max_length; the windows below never do.
    texts = [list(s.chars) for s in sentences]
    enc = tokenizer(texts, is_split_into_words=True, add_special_tokens=False, verbose=False) if texts else None
    windows: list[Window] = []
    for k, s in enumerate(sentences):
        n = len(s.chars)
        if n == 0:
            continue
        labels = _label_ids(s, label2id)
        ids, wids = enc["input_ids"][k], enc.word_ids(k)
        if n <= budget and len(ids) == n and wids == list(range(n)):
            # The common case: one sub-token per character and one window.
            p = len(prefix)
            windows.append(Window(
                k, 0, (*prefix, *ids, *suffix), (None,) * p + tuple(range(n)) + (None,) * len(suffix),
                (IGNORE_INDEX,) * p + tuple(labels) + (IGNORE_INDEX,) * len(suffix), tuple(range(p, p + n)),
            ))
            continue
        pieces = _pieces(ids, wids, n, placeholder, budget)
        spans = _spans([len(p) for p in pieces], budget, overlap)
        owner = _owners(spans, [len(p) for p in pieces])
        for w, (a, b) in enumerate(spans):
            windows.append(_window(k, a, b, pieces, labels, [o == w for o in owner[a:b]], prefix, suffix, subtoken))
    return windows


def stitch(windows: Sequence[Window], outputs: Sequence[Sequence[Any]], lengths: Sequence[int]) -> list[list[Any]]:
    """One output per character: the one at its first sub-token in the window that predicts it.

    `outputs[k]` holds window k's per-token outputs, padded or not: argmax label ids
    (`logits.argmax(-1).tolist()`) give label ids per character; logit rows give rows.
    `lengths[i]` is the number of characters of sentence i.
    """
    missing = object()
    result: list[list[Any]] = [[missing] * n for n in lengths]
    for w, out in zip(windows, outputs, strict=True):
        row = result[w.sentence]
        for t in w.heads:
            row[w.word_ids[t]] = out[t]
    for i, row in enumerate(result):
        if any(x is missing for x in row):
            gaps = [j for j, x in enumerate(row) if x is missing]
            raise ValueError(f"sentence {i}: no prediction for characters {gaps[:10]}: windows and lengths disagree")
    return result


def batches(
    windows: Sequence[Window],
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    bucket_factor: int = 50,
    max_tokens: int | None = None,
) -> list[list[int]]:
    """Window indices in length-grouped batches; every window exactly once.

    Shuffled: a seeded permutation is cut into buckets of batch_size * bucket_factor, each
    sorted by length and cut into batches, and the batch order is shuffled (pass seed + epoch
    for a new order each epoch). Not shuffled: sorted by length, for evaluation. `max_tokens`
    also caps batch_size * longest window (a longer window still gets a batch of its own).
    """
    lengths = [len(w.input_ids) for w in windows]
    order = list(range(len(windows)))
    if not shuffle:
        order.sort(key=lengths.__getitem__)
        return _cut(order, lengths, batch_size, max_tokens)
    rng = random.Random(seed)
    rng.shuffle(order)
    size = batch_size * max(bucket_factor, 1)
    out: list[list[int]] = []
    for b in range(0, len(order), size):
        out += _cut(sorted(order[b : b + size], key=lengths.__getitem__), lengths, batch_size, max_tokens)
    rng.shuffle(out)
    return out


def padding_fraction(windows: Sequence[Window], batches: Sequence[Sequence[int]]) -> float:
    """Share of the padded batch tensors that is padding (0 when every batch is one length)."""
    total = pad = 0
    for b in batches:
        lens = [len(windows[i].input_ids) for i in b]
        if lens:
            total += max(lens) * len(lens)
            pad += max(lens) * len(lens) - sum(lens)
    return pad / total if total else 0.0


def collate(windows: Sequence[Window], idxs: Sequence[int], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors: input_ids (pad_id), attention_mask, labels (IGNORE_INDEX), and predict_mask (True at
    the positions this window predicts: `heads`, the first sub-token of each character it owns), and free_start
    (per window: its predictions begin mid-sentence, where a CRF may open with I-X)."""
    import torch

    rows = [windows[i] for i in idxs]
    width = max(len(w.input_ids) for w in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    predict_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    # A window whose first predicted character is not its sentence's first starts mid-sentence (maybe mid-entity).
    free_start = torch.tensor([bool(w.heads) and (w.word_ids[w.heads[0]] or 0) > 0 for w in rows], dtype=torch.bool)
    for r, w in enumerate(rows):
        n = len(w.input_ids)
        input_ids[r, :n] = torch.tensor(w.input_ids)
        labels[r, :n] = torch.tensor(w.labels)
        mask[r, :n] = 1
        predict_mask[r, list(w.heads)] = True
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels, "predict_mask": predict_mask,
            "free_start": free_start}


def encode_cached(
    sentences: Sequence[Sentence],
    tokenizer: Any,
    label2id: Mapping[str, int],
    max_length: int = 128,
    cache_dir: Path | None = None,
    overlap: int | None = None,
    subtoken: str = "first",
) -> list[Window]:
    """`encode`, read from / written to `cache_dir` (None: no cache).

    The key hashes the tokenizer (its full serialized form: vocab, normalizer, specials),
    label2id, max_length, overlap and every sentence's characters and tags. Entries are
    pickles: share a cache directory only with people you trust.
    """
    if cache_dir is None:
        return encode(sentences, tokenizer, label2id, max_length, overlap, subtoken)
    key = cache_key(sentences, tokenizer, label2id, max_length, overlap) + ("" if subtoken == "first" else "-last")
    path = Path(cache_dir) / f"encode-{key}.pkl"
    if path.exists():
        try:
            with path.open("rb") as f:
                windows = pickle.load(f)
            if isinstance(windows, list):
                return windows
        except Exception:  # a truncated or stale entry is recomputed, never trusted
            pass
    windows = encode(sentences, tokenizer, label2id, max_length, overlap, subtoken)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: workers sharing the cache never read half a file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        pickle.dump(windows, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return windows


def cache_key(
    sentences: Sequence[Sentence], tokenizer: Any, label2id: Mapping[str, int], max_length: int, overlap: int | None
) -> str:
    """Hex digest naming one encoding: same inputs, same key, on any machine."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    head = {
        "version": _CACHE_VERSION,
        "tokenizer": type(tokenizer).__name__,
        "label2id": sorted(label2id.items()),
        "max_length": max_length,
        "overlap": _resolve_overlap(max_length, overlap),
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    h.update(backend.to_str().encode() if backend is not None else repr(tokenizer).encode())
    h.update(json.dumps([[s.chars, s.tags] for s in sentences], ensure_ascii=False).encode())
    return h.hexdigest()[:24]


def _resolve_overlap(max_length: int, overlap: int | None) -> int:
    return max_length // 4 if overlap is None else overlap


def _special_tokens(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ids the tokenizer puts before and after one sequence ([CLS] / [SEP] for BERT)."""
    word = tokenizer.unk_token or "a"  # an added token: the tokenizer never drops it
    enc = tokenizer([[word]], is_split_into_words=True, add_special_tokens=True)
    ids, wids = enc["input_ids"][0], enc.word_ids(0)
    inside = [t for t, w in enumerate(wids) if w is not None]
    if not inside:
        raise UserError(f"{type(tokenizer).__name__} drops {word!r}: cannot find where its special tokens go")
    return tuple(ids[: inside[0]]), tuple(ids[inside[-1] + 1 :])


def _placeholder_id(tokenizer: Any) -> int:
    """The id a dropped character gets: the unknown token, or '?' for tokenizers without one."""
    if tokenizer.unk_token_id is not None:
        return tokenizer.unk_token_id
    return tokenizer([["?"]], is_split_into_words=True, add_special_tokens=False)["input_ids"][0][0]


def _label_ids(s: Sentence, label2id: Mapping[str, int]) -> list[int]:
    if not s.tags:  # unlabelled text (prediction only)
        return [IGNORE_INDEX] * len(s.chars)
    if len(s.tags) != len(s.chars):
        raise ValueError(f"sentence {s.id}: {len(s.chars)} characters but {len(s.tags)} tags")
    return [label2id.get(t, IGNORE_INDEX) for t in s.tags]


def _pieces(ids: list[int], wids: list[int | None], n: int, placeholder: int, budget: int) -> list[list[int]]:
    """Sub-token ids per character; a dropped character gets `placeholder`, a huge one is cut to `budget`."""
    pieces: list[list[int]] = [[] for _ in range(n)]
    for t, w in zip(ids, wids):
        if w is not None:
            pieces[w].append(t)
    for i, p in enumerate(pieces):
        if not p:
            p.append(placeholder)
        elif len(p) > budget:  # one "character" longer than a window (a whole word in a CoNLL file)
            pieces[i] = p[:budget]
    return pieces


def _spans(counts: list[int], budget: int, overlap: int) -> list[tuple[int, int]]:
    """Character spans [a, b) of the windows: each at most `budget` sub-tokens, sharing ~`overlap`."""
    cum = [0]
    for c in counts:
        cum.append(cum[-1] + c)
    n, spans, a = len(counts), [], 0
    while True:
        b = bisect.bisect_right(cum, cum[a] + budget) - 1  # the furthest end that fits (> a: counts <= budget)
        spans.append((a, b))
        if b == n:
            return spans
        # Start the next window `overlap` sub-tokens back, but late enough to reach past b.
        a = max(bisect.bisect_left(cum, cum[b] - overlap), bisect.bisect_left(cum, cum[b + 1] - budget), a + 1)


def _owners(spans: list[tuple[int, int]], counts: list[int]) -> list[int]:
    """For each character, the window where it is farthest (in sub-tokens) from a cut edge.

    A sentence's own start and end are not cuts: no context is missing there. Ties go to
    the earlier window.
    """
    cum = [0]
    for c in counts:
        cum.append(cum[-1] + c)
    n = len(counts)
    best = [-1.0] * n
    owner = [0] * n
    for w, (a, b) in enumerate(spans):
        for i in range(a, b):
            left = cum[i] - cum[a] if a > 0 else float("inf")
            right = cum[b] - cum[i + 1] if b < n else float("inf")
            if min(left, right) > best[i]:
                best[i], owner[i] = min(left, right), w
    return owner


def _window(
    k: int, a: int, b: int, pieces: list[list[int]], labels: list[int], own: list[bool],
    prefix: tuple[int, ...], suffix: tuple[int, ...], subtoken: str = "first",
) -> Window:
    ids, wids = list(prefix), [None] * len(prefix)
    labs, heads = [IGNORE_INDEX] * len(prefix), []
    for i, mine in zip(range(a, b), own):
        p = pieces[i]
        at = 0 if subtoken == "first" else len(p) - 1  # the sub-token that carries the label and the prediction
        if mine:
            heads.append(len(ids) + at)
        labs += [IGNORE_INDEX] * at + [labels[i] if mine else IGNORE_INDEX] + [IGNORE_INDEX] * (len(p) - 1 - at)
        ids += p
        wids += [i] * len(p)
    return Window(
        k, a, (*ids, *suffix), (*wids, *(None,) * len(suffix)), (*labs, *(IGNORE_INDEX,) * len(suffix)), tuple(heads)
    )


def _cut(order: list[int], lengths: list[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """Cut length-sorted indices into batches of at most batch_size (and max_tokens padded tokens)."""
    out: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        too_many = len(cur) >= batch_size
        too_big = max_tokens is not None and (len(cur) + 1) * max(longest, lengths[i]) > max_tokens
        if cur and (too_many or too_big):
            out.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, lengths[i])
    if cur:
        out.append(cur)
    return out
