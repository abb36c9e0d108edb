"""Seeded train/dev splits, stratified by genre, identical on every machine and Python version."""

from __future__ import annotations

import hashlib

from ablate.data.readers import Sentence
from ablate.errors import UserError


def _key(seed: int, genre: str, k: int, sid: str) -> bytes:
    # A hash of the sentence's identity, not random.shuffle or hash(): no dependence on
    # PYTHONHASHSEED, set order or the Python version's RNG.
    return hashlib.sha256(f"{seed}\x1f{genre}\x1f{k}\x1f{sid}".encode()).digest()


def split(sentences: list[Sentence], dev_fraction: float = 0.2, seed: int = 0) -> tuple[list[Sentence], list[Sentence]]:
    """Hold out `dev_fraction` of each genre as dev (the paper: 80/20); both parts keep file order."""
    if not 0.0 < dev_fraction < 1.0:
        raise UserError(f"dev split must be a fraction between 0 and 1, got {dev_fraction}")
    by_genre: dict[str, list[int]] = {}
    for i, s in enumerate(sentences):
        by_genre.setdefault(s.genre, []).append(i)
    dev: set[int] = set()
    for genre in sorted(by_genre):
        idx = by_genre[genre]
        n_dev = round(len(idx) * dev_fraction)
        ranked = sorted(idx, key=lambda i: _key(seed, genre, i, sentences[i].id))
        dev.update(ranked[:n_dev])
    return [s for i, s in enumerate(sentences) if i not in dev], [s for i, s in enumerate(sentences) if i in dev]
